"""The demo server: a Starlette app whose lifespan holds one ``SessionHub`` and one
``Dispatcher``.

===========================  ========================================================
``POST /sessions``           create a session; body ``{"id"?, "metadata"?, "state"?}``
                             (all optional) -> 201 ``{"id", "state_version"}``
``GET /sessions``            list them: ``?limit=50&after=ID`` (keyset paging by id)
``GET /sessions/{id}/state`` ``{"id", "state", "state_version", "entries"}``
``POST /sessions/{id}/plan`` body ``{"request": "reverse the text, then shout it"}``:
                             plan with the model, dispatch each step as it arrives;
                             -> the ``DispatchResult`` as JSON (once every entry of it
                             is durable)
``GET /sessions/{id}/events`` the session's entries as server-sent events: history,
                             then live (``?follow=0``: only what is committed now);
                             ``Last-Event-ID`` or ``?since=SEQ`` resumes after a seq
===========================  ========================================================

Errors are JSON ``{"error": {"code", "message"}}``: 400 bad input, 404 unknown session,
409 an id that is taken, 413 a body over the limit, 503 the store failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents import ReverseAgent, UppercaseAgent
from kaizen_async import (
    Dispatcher,
    KaizenError,
    KaizenNotFoundError,
    KaizenValidationError,
    PersistError,
    Planner,
    SessionExistsError,
    SessionHub,
    SessionInUseError,
    SessionNotFoundError,
)
from kaizen_async.stores import SessionStore, SQLiteStore

from .events import EventStream, committed_entries
from .planning import Models, plan_models
from .settings import Settings

#: longest plan request accepted, in characters
MAX_REQUEST_CHARS = 10_000
#: sessions a list page holds at most
MAX_PAGE = 500


@dataclass(frozen=True)
class Server:
    """What the routes share while the app runs (made by its lifespan)."""

    hub: SessionHub
    dispatcher: Dispatcher
    models: Models
    settings: Settings
    #: set when the server starts stopping: open event streams end at once
    stopping: anyio.Event


def stop_streams(app: Starlette) -> None:
    """End the app's open event streams (each sends ``event: end``): for a server that
    waits for open connections before it runs the lifespan's shutdown (uvicorn does)."""
    server: Server | None = getattr(app.state, "server", None)
    if server is not None:
        server.stopping.set()


def create_app(settings: Settings | None = None, *, store: SessionStore | None = None) -> Starlette:
    """The demo server as an ASGI app.

    Args:
        settings: what to serve; :meth:`Settings.from_env` by default.
        store: where sessions live; ``SQLiteStore(settings.database)`` by default (a
            ``MemoryStore`` in tests). Entered and closed by the app's lifespan.
    """
    settings = Settings.from_env() if settings is None else settings

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions = SQLiteStore(settings.database) if store is None else store
        # left in reverse order: the models, then the dispatcher (running steps end and
        # are recorded), then the hub (every queued write is committed)
        async with (
            SessionHub(sessions) as hub,
            Dispatcher() as dispatcher,
            plan_models(settings) as models,
        ):
            dispatcher.register(ReverseAgent())
            dispatcher.register(UppercaseAgent())
            app.state.server = Server(hub, dispatcher, models, settings, anyio.Event())
            yield

    return Starlette(
        routes=[
            Route("/sessions", list_sessions, methods=["GET"]),
            Route("/sessions", create_session, methods=["POST"]),
            Route("/sessions/{id}/state", read_state, methods=["GET"]),
            Route("/sessions/{id}/plan", run_plan, methods=["POST"]),
            Route("/sessions/{id}/events", stream_events, methods=["GET"]),
        ],
        exception_handlers={KaizenError: kaizen_error, HTTPException: http_error},
        lifespan=lifespan,
    )


# -- routes ----------------------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    server = _server(request)
    body = await _json_body(request, server.settings.max_body)
    session_id = _optional(body, "id", str)
    metadata = _optional(body, "metadata", dict)
    state = _optional(body, "state", dict) or {}
    hub = server.hub
    new_id = await hub.create(session_id, metadata)
    try:
        async with hub.open(new_id) as session:
            async with session.transaction() as tx:  # all of the state in one write
                for key, value in state.items():
                    tx.set(key, value)
            version = await session.get_state_version()
    except KaizenError:
        await hub.delete_session(new_id)  # a refused state leaves no session behind
        raise
    return JSONResponse(
        {"id": new_id, "state_version": version},
        status_code=201,
        headers={"location": f"/sessions/{new_id}/state"},
    )


async def list_sessions(request: Request) -> Response:
    server = _server(request)
    limit = _int_query(request, "limit", 50, low=1, high=MAX_PAGE)
    after = request.query_params.get("after") or None
    infos = await server.hub.list_sessions(limit=limit, after=after)
    return JSONResponse(
        {
            "sessions": [
                {
                    "id": info.session_id,
                    "created": info.created_at,
                    "updated": info.updated_at,
                    "entries": info.trajectory_length,
                    "state_version": info.state_version,
                    "metadata": info.metadata,
                }
                for info in infos
            ],
            "next": infos[-1].session_id if len(infos) == limit else None,
        }
    )


async def read_state(request: Request) -> Response:
    server = _server(request)
    session_id = request.path_params["id"]
    async with server.hub.open(session_id) as session:
        snapshot = await session.snapshot_for_agent("server", depth=0)  # one consistent read
    return JSONResponse(
        {
            "id": session_id,
            "state": snapshot["state"],
            "state_version": snapshot["state_version"],
            "entries": snapshot["trajectory_total_length"],
        }
    )


async def run_plan(request: Request) -> Response:
    server = _server(request)
    session_id = request.path_params["id"]
    body = await _json_body(request, server.settings.max_body)
    text = body.get("request")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_REQUEST_CHARS:
        raise KaizenValidationError(
            f'"request" must be a non-empty string of at most {MAX_REQUEST_CHARS} characters'
        )
    dispatcher = server.dispatcher
    async with server.hub.open(session_id) as session, server.models(text) as model:
        planner = Planner(model, dispatcher.capability_specs())
        async with planner.stream(text, session) as plan:
            result = await dispatcher.dispatch_stream(plan, session)
        await session.flush()  # the steps' posted entries are durable before we answer
    return JSONResponse({"session_id": session_id, **result.to_dict()})


async def stream_events(request: Request) -> Response:
    server = _server(request)
    session_id = request.path_params["id"]
    since = _since(request)
    follow = request.query_params.get("follow", "1").lower() not in ("0", "false", "no")
    async with server.hub.open(session_id) as session:  # 404 for an unknown id
        head = await session.get_trajectory_length()
    entries = committed_entries(server.hub, session_id, since, None if follow else head)
    return EventStream(entries, server.settings.heartbeat, server.stopping)


# -- errors ----------------------------------------------------------------------------------


def _status(exc: KaizenError) -> int:
    if isinstance(exc, SessionNotFoundError):
        return 404
    if isinstance(exc, SessionExistsError | SessionInUseError):
        return 409
    if isinstance(exc, KaizenValidationError | KaizenNotFoundError):
        return 400
    if isinstance(exc, PersistError):
        return 503
    return 500


async def kaizen_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KaizenError)
    return _error(_status(exc), str(exc.code), str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "too_large" if exc.status_code == 413 else "bad_request"
    return _error(exc.status_code, code, exc.detail)


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# -- input -----------------------------------------------------------------------------------


def _server(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


async def _json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty), read up to ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return value


def _optional(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise HTTPException(400, f'"{name}" must be a {"string" if kind is str else "JSON object"}')
    return value


def _int_query(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be in {low}..{high}")
    return value


def _since(request: Request) -> int:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnecting browser), else after
    ``?since=``, else from the first entry."""
    raw = request.headers.get("last-event-id") or request.query_params.get("since") or "0"
    try:
        since = int(raw)
    except ValueError:
        raise HTTPException(400, "Last-Event-ID and since must be an entry seq") from None
    if since < 0:
        raise HTTPException(400, "Last-Event-ID and since must be >= 0")
    return since
