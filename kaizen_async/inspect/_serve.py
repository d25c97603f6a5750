"""Serving the inspector: what ``kaizen inspect`` runs.

A store URL (``sqlite:///sessions.db``) is opened as a store and every session in it is
shown, while other processes may go on writing to it; ``.kaizen`` files are read, verified
and shown as they are. The server binds 127.0.0.1 unless told otherwise; binding another
address prints a warning, requires a random token (printed once, in the URL) and hides
model text unless ``show_llm_content`` says otherwise.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio

from .._hub import SessionHub
from .._storage import SessionStore
from ._app import create_app
from ._files import load_files
from ._security import LOOPBACK_HOSTS, is_loopback

__all__ = ["InspectTarget", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class InspectTarget:
    """What to show: one SQLite store (``store_path``, optionally opening at session
    ``session_id``) or some ``.kaizen`` files."""

    store_path: str | None = None
    session_id: str | None = None
    files: tuple[str, ...] = ()


def _store_for(target: InspectTarget) -> SessionStore:
    from ..stores import MemoryStore, SQLiteStore

    if target.store_path is not None:
        return SQLiteStore(target.store_path)
    return MemoryStore()


def serve(
    target: InspectTarget,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    show_llm_content: bool | None = None,
    token: str | None = None,
    echo: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Serve the inspector until interrupted (Ctrl-C). Blocks; runs its own event loop."""
    import uvicorn

    say = echo or (lambda text: print(text, flush=True))
    caution = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    loopback = is_loopback(host)
    if not loopback:
        token = token or secrets.token_urlsafe(24)
        caution(
            f"kaizen inspect: WARNING: serving on {host}, beyond this machine. Anyone who can "
            "reach it and has the token below can read these sessions"
            + ("" if show_llm_content else " (model text is hidden; --show-llm-content shows it)")
            + "."
        )
    shown = loopback if show_llm_content is None else show_llm_content
    allowed: tuple[str, ...] = LOOPBACK_HOSTS if loopback else ("*",)

    async def main() -> None:
        store = _store_for(target)
        async with SessionHub(store) as hub:
            first: str | None = target.session_id
            if target.files:
                ids = await load_files(store, target.files)
                first = ids[0] if len(ids) == 1 else None
            elif first is not None:
                await store.info(first)  # SessionNotFoundError: say so before serving
            app = create_app(
                hub,
                show_llm_content=shown,
                allowed_hosts=allowed,
                token=token,
                follow=not target.files,
            )
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=2,
                access_log=False,
            )
            server = uvicorn.Server(config)
            async with anyio.create_task_group() as group:

                async def announce() -> None:
                    while not server.started:
                        if server.should_exit:
                            return
                        await anyio.sleep(0.05)
                    bound = _bound_port(server) or port
                    shown_host = f"[{host}]" if ":" in host else host
                    path = "/" if first is None else f"/session?id={quote(first, safe='')}"
                    query = f"token={token}" if token else ""
                    if query:
                        path += ("&" if "?" in path else "?") + query
                    say(f"kaizen inspect: serving on http://{shown_host}:{bound}{path}")
                    say("Press Ctrl-C to stop.")

                group.start_soon(announce)
                await server.serve()
                group.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")


def _bound_port(server: Any) -> int | None:
    for listener in getattr(server, "servers", []) or []:
        for sock in getattr(listener, "sockets", []) or []:
            name = sock.getsockname()
            if isinstance(name, tuple) and len(name) >= 2:
                return int(name[1])
    return None
