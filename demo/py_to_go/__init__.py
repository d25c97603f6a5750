"""py_to_go: a real multi-agent job on kaizen_async that converts a Python package to Go.

A mapper orders the package's files by their imports, a converter translates one file per
model call (independent files in parallel), a Go toolchain agent builds, vets and tests
the result, and a fixer repairs what the compiler blames (deterministic rules first, then
the model) for at most ``--max-rounds`` rounds. Everything is a capability call through
the dispatcher, recorded in one durable session that a killed run resumes from.

Run it with ``python -m demo.py_to_go`` (``--help`` for the options); :func:`main` is the
same from Python (the ``kaizen demo`` command calls it).
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
