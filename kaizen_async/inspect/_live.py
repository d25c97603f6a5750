"""Following a session live: server-sent events of its committed entries.

Each entry becomes ``id: <seq>`` + ``event: entry`` + ``data: <row html>``, rendered by
the same template as the page's rows, so a browser that reconnects sends the last seq it
saw as ``Last-Event-ID`` and the stream resumes right after it: no loss, no duplicates.

Where the entries come from: when the session is open in this process's hub, its
subscription (``hub.subscribe``: in order, no gaps, woken by each commit). Otherwise,
when another process writes the store (``kaizen inspect`` while a run goes on) or nobody
does, the store is polled: opening the session in the hub to subscribe would make the
inspector a second writer (it closes steps it finds open as interrupted). The stream ends
with ``event: end`` when the session closes (the hub's subscription ends), when it is
deleted, or at once after the history for a snapshot that cannot grow (a ``.kaizen``
file).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.types import Receive, Scope, Send

from .._exceptions import KaizenError, SessionClosedError, SessionNotFoundError
from .._hub import SessionHub
from .._trajectory import SEQ, EntryType, Record
from ._reader import PAGE, STEP_REACH, Reader, step_key
from ._timeline import Row, StepTracker

__all__ = ["EventStream", "entries_after", "held_open", "sse_event"]

#: seconds between keep-alive comments on an idle stream
HEARTBEAT = 15.0
#: milliseconds a browser waits before reconnecting
RETRY_MS = 1000

Emit = Callable[[bytes], Awaitable[None]]
Render = Callable[[str, Row, Record], str]


def sse_event(event: str, data: str, event_id: int | None = None) -> bytes:
    """One server-sent event; every line of ``data`` gets its own ``data:`` field."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    for line in data.split("\n"):
        lines.append(f"data: {line.rstrip(chr(13))}")
    return ("\n".join(lines) + "\n\n").encode()


def held_open(hub: SessionHub, session_id: str) -> bool:
    """Whether ``session_id`` is open (loaded and running) in ``hub`` right now, so a
    subscription takes a lease without loading it (a load may write).

    The hub has no public way to ask this; it reads the hub's own bookkeeping and answers
    False (poll the store instead) if that ever changes shape.
    """
    slots = getattr(hub, "_slots", None)
    slot = slots.get(session_id) if isinstance(slots, dict) else None
    session = getattr(slot, "session", None)
    if session is None or getattr(slot, "state", None) != 1:
        return False
    usable = getattr(session, "_is_usable", None)
    return bool(usable()) if callable(usable) else False


async def entries_after(
    reader: Reader,
    session_id: str,
    since: int,
    *,
    follow: bool,
    poll_interval: float,
) -> AsyncIterator[Record]:
    """Every committed entry with ``seq > since``, in order, then live ones (see module)."""
    hub = reader.hub
    if follow and held_open(hub, session_id):
        # no checkpoint between the check and the lease the first step takes
        subscription = hub.subscribe(session_id, since_seq=since)
        try:
            async for entry in subscription:
                yield reader.view(entry.to_record())
        except SessionClosedError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await subscription.aclose()
        return
    pos = since
    while True:
        try:
            page = await reader.read(session_id, since=pos, limit=PAGE)
        except SessionNotFoundError:
            return  # deleted: nothing more will come
        except KaizenError:
            return  # the store closed under us: the server is stopping
        for record in page:
            yield record
        if page:
            pos = page[-1][SEQ]
            if len(page) == PAGE:
                continue
        if not follow:
            return
        await anyio.sleep(poll_interval)


async def open_steps_before(reader: Reader, session_id: str, seq: int) -> list[Record]:
    """Started entries of steps still running at ``seq`` (from the last page of step
    entries before it), so entries after it nest under them."""
    if seq <= 0:
        return []
    records = await reader.read(
        session_id,
        since=max(seq - STEP_REACH, 0),
        until=seq,
        types=[EntryType.PLAN_STEP_STARTED.value, EntryType.PLAN_STEP_COMPLETED.value],
        limit=PAGE,
        newest=True,
    )
    tracker = StepTracker()
    for record in records:
        tracker.place(record)
    return sorted((row.record for row in tracker.running()), key=lambda r: r[SEQ])


class EventStream:
    """An ASGI response that streams events while watching for the client to leave.

    ``produce(emit)`` sends the events; a heartbeat comment goes out every
    :data:`HEARTBEAT` seconds; a disconnect cancels both. Sends are serialised.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Callable[[Emit], Awaitable[None]],
        headers: dict[str, str] | None = None,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.produce = produce
        self.headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-store",
            "x-accel-buffering": "no",
            **(headers or {}),
        }
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lock = anyio.Lock()
        gone = False

        async def emit(data: bytes) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in self.headers.items()],
            }
        )
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal gone
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        gone = True
                        group.cancel_scope.cancel()
                        return

            async def beat() -> None:
                while True:
                    await anyio.sleep(self.heartbeat)
                    await emit(b": ping\n\n")

            group.start_soon(watch)
            group.start_soon(beat)
            try:
                await emit(f"retry: {RETRY_MS}\n\n".encode())
                await self.produce(emit)
            except OSError:
                gone = True
            group.cancel_scope.cancel()
        if not gone:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_rows(
    reader: Reader,
    session_id: str,
    since: int,
    emit: Emit,
    render: Render,
    *,
    follow: bool,
    poll_interval: float,
) -> None:
    """Emit one event per entry after ``since``: ``entry`` events carrying the row html
    (a new row, an entry nested under its running step, or a step's end), then ``end``."""
    tracker = StepTracker()
    for started in await open_steps_before(reader, session_id, since):
        key = step_key(started)
        if key is not None:
            tracker.open.setdefault(key, []).append(Row(started, is_step=True))
    async for record in entries_after(
        reader, session_id, since, follow=follow, poll_interval=poll_interval
    ):
        where, row = tracker.place(record)
        await emit(sse_event("entry", render(where, row, record), record[SEQ]))
    await emit(sse_event("end", "the session is closed: no more entries will come"))
