"""``python -m demo.server [--db sessions.db] [--host 127.0.0.1] [--port 8000]``: serve the
demo with uvicorn. ``KAIZEN_DEMO_MODEL=qwen3:8b`` plans with Ollama (``OLLAMA_HOST``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import socket

import uvicorn
from starlette.applications import Starlette

from .app import create_app, stop_streams
from .settings import Settings

#: seconds uvicorn waits for open connections when it stops before it cuts them (event
#: streams end at once, see ``_Server``; this bounds a request still running)
GRACE = 5


class _Server(uvicorn.Server):
    """uvicorn waits for open connections to finish before the app's lifespan shutdown;
    event streams follow their sessions until then, so they are told to end first."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_streams(self.app)
        await super().shutdown(sockets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.server", description=__doc__)
    defaults = Settings.from_env()
    parser.add_argument("--db", default=defaults.database, help="the SQLite session store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    app = create_app(dataclasses.replace(defaults, database=args.db))
    config = uvicorn.Config(
        app, host=args.host, port=args.port, timeout_graceful_shutdown=GRACE, log_level="info"
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        _Server(config, app).run()


if __name__ == "__main__":
    main()
