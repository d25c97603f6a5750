"""The ``kaizen`` command line: inspect, verify, compare, move and replay sessions.

``kaizen --help`` lists the subcommands; :func:`main` is the console script's entry point.
"""

from __future__ import annotations

from ._app import cli as cli
from ._app import main as main

__all__ = ["cli", "main"]
