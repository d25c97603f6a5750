"""``kaizen inspect``: the command that serves the inspector (a click command, added to
the ``kaizen`` group; ``python -m kaizen_async.inspect`` runs it on its own)."""

from __future__ import annotations

import click

from ._serve import DEFAULT_HOST, DEFAULT_PORT, TargetError, parse_target, serve

__all__ = ["inspect"]

_HELP = """Serve a read-only web page over sessions: a store URL or .kaizen file(s).

\b
  kaizen inspect sqlite:///sessions.db            every session in the store
  kaizen inspect sqlite:///sessions.db order-42   the same, opening at order-42
  kaizen inspect run.kaizen [other.kaizen ...]    files, as they are

The page follows a store live while other processes write to it; reading never writes.
It binds 127.0.0.1. Binding another --host prints a warning, requires a random token
(printed once, in the URL) and hides model text unless --show-llm-content is given.
"""


@click.command("inspect", help=_HELP)
@click.argument("target", nargs=-1, required=True, metavar="URL [ID] | FILE...")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind (0: any free port).",
)
@click.option(
    "--show-llm-content/--hide-llm-content",
    default=None,
    help="Show model and user message text (default: shown on 127.0.0.1, hidden beyond).",
)
def inspect(target: tuple[str, ...], host: str, port: int, show_llm_content: bool | None) -> None:
    """Serve the inspector until Ctrl-C."""
    try:
        parsed = parse_target(target)
    except TargetError as exc:
        raise click.BadParameter(str(exc), param_hint="URL/FILE") from None
    serve(
        parsed,
        host=host,
        port=port,
        show_llm_content=show_llm_content,
        echo=click.echo,
        warn=lambda text: click.echo(text, err=True),
    )
