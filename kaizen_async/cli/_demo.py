"""``kaizen demo``: run the py_to_go demo (``demo.py_to_go.main(argv)``) with the given args."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from ._errors import Unavailable

__all__ = ["demo"]

DEMO_MODULE = "demo.py_to_go"


def _load_demo() -> Callable[[list[str]], int]:
    try:
        module = importlib.import_module(DEMO_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name in ("demo", DEMO_MODULE):
            raise Unavailable(
                f"the py_to_go demo is not installed (no module named {DEMO_MODULE!r} on "
                "this Python's path)"
            ) from None
        raise Unavailable(f"the py_to_go demo cannot run: it needs {exc.name!r}: {exc}") from None
    entry = getattr(module, "main", None)
    if not callable(entry):
        raise Unavailable(f"{DEMO_MODULE} has no main(argv) function")
    return entry  # type: ignore[no-any-return]


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo(args: tuple[str, ...]) -> int:
    """Run the py_to_go demo: converts a Python package to Go with agents (ARGS go to it;
    kaizen demo --help shows its own options)."""
    code = _load_demo()(list(args))
    return code if isinstance(code, int) else 0
