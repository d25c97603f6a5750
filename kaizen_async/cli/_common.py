"""What every command shares: the SESSION argument, ``--json``, and running async code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

__all__ = ["SESSION_HELP", "json_option", "run", "session_argument", "wide_option"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

SESSION_HELP = (
    "SESSION is a .kaizen file, or a store URL and a session id: "
    "sqlite:///sessions.db order-42 (a path relative to the working directory) or "
    "sqlite:////abs/path/sessions.db order-42 (absolute)."
)


def session_argument(name: str = "session", metavar: str = "SESSION") -> Callable[[F], F]:
    """The session(s) a command reads: one or more words (a path, or a URL and an id)."""
    return click.argument(name, nargs=-1, required=True, metavar=metavar)


def json_option(
    help_text: str = "Print JSON (one object per line for listings).",
) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def wide_option() -> Callable[[F], F]:
    return click.option(
        "-w", "--wide", is_flag=True, help="Do not clip long values to the terminal's width."
    )


def run(function: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body to completion on a fresh event loop."""
    return anyio.run(function)
