"""``python -m kaizen_async.inspect``: the same as ``kaizen inspect``."""

from __future__ import annotations

from ._command import inspect

if __name__ == "__main__":  # pragma: no cover - a console entry
    inspect(prog_name="kaizen inspect")
