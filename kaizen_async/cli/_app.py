"""The ``kaizen`` command: its group of subcommands and the entry point that maps every
failure to a one-line message and a documented exit code."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from ._common import SESSION_HELP
from ._errors import BAD_INPUT, EXIT_CODES_HELP, INTERNAL, INTERRUPTED, describe

__all__ = ["cli", "main"]

#: exit code when stdout is closed early (``kaizen log big.kaizen | head``): 128 + SIGPIPE
BROKEN_PIPE = 141


class _Ordered(click.Group):
    """Lists subcommands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


_HELP = f"""Inspect, verify, compare, move and replay kaizen_async sessions.

Reading never writes: a file is opened read-only and nothing is appended to it. Add --json
after a subcommand for output to parse (one JSON object per line for listings).

{SESSION_HELP}"""


@click.group(
    cls=_Ordered,
    help=_HELP,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="kaizen-async", prog_name="kaizen")
def cli() -> None:
    """The ``kaizen`` group (its help is ``_HELP``)."""


def _register() -> None:
    from ._compare import diff, replay
    from ._demo import demo
    from ._inspect import inspect
    from ._keygen import keygen
    from ._live import tail
    from ._read import artifacts, log, show, state, verify
    from ._transfer import export, import_

    for command in (show, log, state, verify, artifacts, diff, tail, export, import_, replay, demo):
        cli.add_command(command)
    cli.add_command(keygen)
    cli.add_command(inspect)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kaizen`` with ``argv`` (default: the process's arguments); returns the exit code."""
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="kaizen",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        click.echo("kaizen: interrupted", err=True)
        return INTERRUPTED
    except KeyboardInterrupt:
        click.echo("\nkaizen: interrupted", err=True)
        return INTERRUPTED
    except click.UsageError as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except Exception as exc:
        known = describe(exc)
        if known is None:
            traceback.print_exc()
            click.echo(f"kaizen: internal error: {exc!r} (please report it)", err=True)
            return INTERNAL
        message, code = known
        click.echo(f"kaizen: {message}", err=True)
        return code
    if isinstance(result, int):
        return result
    return 0 if result is None else BAD_INPUT


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:  # pragma: no cover - nothing more to do
        pass
