"""A small HTTP server on kaizen_async: durable sessions by id, plans run by agents, state,
and each session's progress as server-sent events.

Run it with ``python -m demo.server`` (needs the ``server`` extra: Starlette and uvicorn);
``create_app()`` is the ASGI app, to serve with any ASGI server or drive in tests.
"""

from __future__ import annotations

from .app import create_app as create_app
from .settings import Settings as Settings

__all__ = ["Settings", "create_app"]
