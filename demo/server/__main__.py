"""``python -m demo.server [--db sessions.db] [--host 127.0.0.1] [--port 8000]``: serve the
demo with uvicorn. ``KAIZEN_DEMO_MODEL=qwen3:8b`` plans with Ollama (``OLLAMA_HOST``)."""

from __future__ import annotations

import argparse
import dataclasses

import uvicorn

from .app import create_app
from .settings import Settings

#: seconds open event streams get to end when the server stops (they follow sessions
#: until then); past it they are cut and the hub closes
GRACE = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.server", description=__doc__)
    defaults = Settings.from_env()
    parser.add_argument("--db", default=defaults.database, help="the SQLite session store")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = dataclasses.replace(defaults, database=args.db)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        timeout_graceful_shutdown=GRACE,
        log_level="info",
    )


if __name__ == "__main__":
    main()
