"""``kaizen inspect``: serve the session inspector (``kaizen_async.inspect``) over a store
URL or ``.kaizen`` files, named as in the other subcommands."""

from __future__ import annotations

import os

import click

from ._errors import OK, BadInput, Unavailable
from ._naming import is_url, parse_store_url

__all__ = ["inspect"]

_HELP = """Serve a read-only web page over sessions: a store, or .kaizen files.

\b
  kaizen inspect sqlite:///sessions.db            every session in the store
  kaizen inspect sqlite:///sessions.db order-42   the same, opening at order-42
  kaizen inspect run.kaizen [other.kaizen ...]    files, as they are (compare them)

The page follows a store live while other processes write to it, and reading never
writes. It binds 127.0.0.1; another --host prints a warning, requires a random token
(printed once, in the URL) and hides model text unless --show-llm-content is given.
Stop it with Ctrl-C.
"""


@click.command("inspect", help=_HELP)
@click.argument("target", nargs=-1, required=True, metavar="URL [ID] | FILE...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind (0: any free port).",
)
@click.option(
    "--show-llm-content/--hide-llm-content",
    default=None,
    help="Show model and user message text (default: shown on 127.0.0.1, hidden beyond).",
)
def inspect(target: tuple[str, ...], host: str, port: int, show_llm_content: bool | None) -> int:
    """Serve the inspector until Ctrl-C (its help is ``_HELP``)."""
    try:
        from ..inspect._serve import InspectTarget, serve
    except ImportError as exc:
        raise Unavailable(
            "kaizen inspect needs the inspect extra: pip install 'kaizen-async[inspect]' "
            f"({exc.name or exc} is missing)"
        ) from None
    first = target[0]
    if is_url(first):
        url = parse_store_url(first)
        if len(target) > 2:
            raise BadInput(f"{first} takes at most one session id after it")
        if not os.path.isfile(url.path):
            raise BadInput(f"no such database file: {url.path} (from {url})")
        if os.path.getsize(url.path) == 0:  # opening would write a store's schema into it
            raise BadInput(f"{url.path} is empty, not a session store (from {url})")
        chosen = InspectTarget(
            store_path=url.path, session_id=target[1] if len(target) == 2 else None
        )
    else:
        for path in target:
            if is_url(path):
                raise BadInput("give one store URL, or .kaizen files: not both")
            if not os.path.isfile(path):
                raise BadInput(f"no such file: {path}")
        chosen = InspectTarget(files=target)
    serve(
        chosen,
        host=host,
        port=port,
        show_llm_content=show_llm_content,
        echo=click.echo,
        warn=lambda text: click.echo(text, err=True),
    )
    return OK
