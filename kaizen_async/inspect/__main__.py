"""``python -m kaizen_async.inspect ARGS``: the same as ``kaizen inspect ARGS``."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":  # pragma: no cover - a console entry
    sys.exit(main(["inspect", *sys.argv[1:]]))
