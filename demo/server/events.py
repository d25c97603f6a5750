"""Server-sent events of a session's committed entries, over ``hub.subscribe``.

Each entry is one event: ``id: <seq>``, ``event: entry``, ``data: <the entry as JSON>``.
A client that reconnects sends the last id it saw as ``Last-Event-ID`` and the stream
resumes right after it (the subscription yields ``seq > since_seq``): nothing is lost or
repeated. The stream ends with ``event: end`` when the server stops (``stopping`` is set,
or the hub closes the session) or, for a finite stream, once it has sent what was committed
when it began.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kaizen_async import SessionClosedError, SessionHub, TrajectoryEntry

#: milliseconds a browser waits before it reconnects
RETRY_MS = 1000


def sse_event(event: str, data: bytes, event_id: int | None = None) -> bytes:
    """One event; ``data`` is a single line of JSON (orjson writes no newlines)."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


async def committed_entries(
    hub: SessionHub, session_id: str, since: int, until: int | None
) -> AsyncGenerator[TrajectoryEntry, None]:
    """The session's committed entries after ``since``: up to ``until`` (then stop), or
    live until the session closes when ``until`` is None."""
    if until is not None and since >= until:
        return
    subscription = hub.subscribe(session_id, since_seq=since)
    try:
        async for entry in subscription:
            yield entry
            if until is not None and entry.seq >= until:
                return
    except SessionClosedError:
        return  # the hub closed while a page was being read: the server is stopping
    finally:
        with anyio.CancelScope(shield=True):
            await subscription.aclose()


class EventStream(Response):
    """A response streaming ``entries`` as events, with a keep-alive comment every
    ``heartbeat`` seconds; a client that leaves cancels it (its subscription ends)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        entries: AsyncGenerator[TrajectoryEntry, None],
        heartbeat: float,
        stopping: anyio.Event | None = None,
    ) -> None:
        # as Starlette's StreamingResponse: no body, so no content-length
        self.entries = entries
        self.heartbeat = heartbeat
        self.stopping = stopping
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        gone = False
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async with anyio.create_task_group() as group:

                async def emit(data: bytes) -> None:
                    nonlocal gone
                    async with lock:  # events and heartbeats never interleave
                        if gone:
                            return
                        try:
                            await send(
                                {"type": "http.response.body", "body": data, "more_body": True}
                            )
                        except OSError:  # the client went away while we were sending
                            gone = True
                            group.cancel_scope.cancel()

                async def watch() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    group.cancel_scope.cancel()

                async def beat() -> None:
                    while True:
                        await anyio.sleep(self.heartbeat)
                        await emit(b": keep-alive\n\n")

                async def stop_on(event: anyio.Event, pump: anyio.CancelScope) -> None:
                    await event.wait()
                    pump.cancel()

                group.start_soon(watch)
                group.start_soon(beat)
                await emit(b"retry: %d\n\n" % RETRY_MS)
                with anyio.CancelScope() as pump:
                    if self.stopping is not None:
                        group.start_soon(stop_on, self.stopping, pump)
                    async for entry in self.entries:
                        await emit(sse_event("entry", orjson.dumps(entry.to_dict()), entry.seq))
                await emit(sse_event("end", b'"no more entries"'))
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.entries.aclose()
        if not gone:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
