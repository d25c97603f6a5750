"""``create_app``: the inspector's pages, as a read-only Starlette application.

Every page is rendered on the server by Jinja2 with autoescaping on (nothing from a
session is ever marked safe), and a small static script adds collapse/expand, deep links
and the live tail. Session ids travel in query strings (``/session?id=...``) so that any
id, slashes included, names exactly one page.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from .._canonical import decode
from .._exceptions import KaizenError, SessionNotFoundError
from .._hub import SessionHub
from .._trajectory import (
    AGENT_ID,
    CONTENT,
    ENTRY_TYPE,
    HASH,
    PREV_HASH,
    SEQ,
    TIMESTAMP,
    EntryType,
    Record,
    TrajectoryEntry,
)
from . import _render
from ._live import EventStream, open_steps_before, stream_rows
from ._reader import WINDOW, Filters, Reader, Summary, VerifyResult, step_key
from ._redact import is_hidden
from ._security import DOWNLOAD_CSP, LOOPBACK_HOSTS, Guard
from ._timeline import TYPE_LABELS, Axis, Row, build_rows, duration_text, parse_time

__all__ = ["create_app"]

_HERE = os.path.dirname(os.path.abspath(__file__))
#: sessions at most this long get their counts and verification on the page itself;
#: longer ones load them after the page (counts) or on request (verification)
INLINE_SUMMARY = 50_000
INLINE_VERIFY = 20_000
_ENTRY_TYPES = [t.value for t in EntryType]
_STARTED = EntryType.PLAN_STEP_STARTED.value
_COMPLETED = EntryType.PLAN_STEP_COMPLETED.value


class BadRequest(Exception):
    """A query parameter the page cannot use."""


@dataclass(frozen=True)
class Settings:
    show_llm_content: bool
    follow: bool
    poll_interval: float
    heartbeat: float


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(_HERE, "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _render.pretty
    env.filters["one_line"] = _render.one_line
    env.filters["duration"] = duration_text
    env.filters["short"] = lambda h: str(h)[:12]
    env.filters["time"] = _short_time
    env.filters["type_label"] = lambda t: TYPE_LABELS.get(str(t), str(t))
    env.filters["summary_line"] = _render.summary_line
    env.filters["hidden_text"] = _render.hidden_text
    env.filters["number"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    env.tests["hidden"] = is_hidden
    env.globals["content_of"] = _content
    env.globals["clip"] = _render.clip
    env.globals["tokens_text"] = _render.tokens_text
    env.globals["entry_types"] = _ENTRY_TYPES
    env.globals["offset"] = _offset
    env.globals["entry_status"] = lambda record: Row(record).status
    # a record is a plain tuple: templates read its fields as rec[SEQ], rec[HASH], ...
    env.globals.update(
        SEQ=SEQ,
        TIMESTAMP=TIMESTAMP,
        AGENT_ID=AGENT_ID,
        ENTRY_TYPE=ENTRY_TYPE,
        CONTENT=CONTENT,
        PREV_HASH=PREV_HASH,
        HASH=HASH,
    )
    return env


def _short_time(timestamp: str) -> str:
    text = str(timestamp).replace("T", " ")
    head, _, rest = text.partition(".")
    return f"{head}.{rest[:3]}" if rest else head.removesuffix("+00:00")


def _offset(timestamp: str, origin: float) -> str:
    """Time since the session's first entry, as ``+3.41 s``."""
    if not origin:
        return ""
    return "+" + duration_text(max(parse_time(timestamp) - origin, 0.0) * 1000.0)


def _content(record: Record) -> Any:
    try:
        return decode(record[CONTENT])
    except ValueError:
        return record[CONTENT].decode("utf-8", "replace")


def _int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw[:40]!r}") from None


def _text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    return raw if raw else None


def _filters(request: Request) -> Filters:
    types = tuple(t for t in request.query_params.getlist("type") if t)
    unknown = [t for t in types if t not in _ENTRY_TYPES]
    if unknown:
        raise BadRequest(f"unknown entry type {unknown[0][:40]!r}")
    around = _int(request, "around")
    since = _int(request, "since_seq")
    until = _int(request, "until_seq")
    if around is not None and since is None and until is None:
        since = max(around - WINDOW // 2, 0)
    return Filters(
        types=types or None,
        agent=_text(request, "agent"),
        text=_text(request, "q"),
        since=since,
        until=until,
    )


def _download_name(name: str) -> str:
    """An artifact name made safe for a ``filename=`` parameter: ASCII, no path, no quotes."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1] or "artifact"
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._") or "artifact"
    return ascii_name[:120]


class _Pages:
    """The route handlers, sharing one reader, template environment and settings."""

    def __init__(self, hub: SessionHub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.reader = Reader(hub, show_llm_content=settings.show_llm_content)
        self.env = _environment()

    # -- helpers -----------------------------------------------------------------------------

    def url(self, request: Request, path: str, **params: Any) -> str:
        """A link inside the app (mounted or not); None and "" parameters are left out."""
        root = request.scope.get("root_path", "")
        pairs: list[tuple[str, str]] = []
        for key, value in params.items():
            if value is None or value == "":
                continue
            if isinstance(value, list | tuple):
                pairs.extend((key, str(v)) for v in value)
            else:
                pairs.append((key, str(value)))
        query = urlencode(pairs, quote_via=quote)
        return f"{root}{path}" + (f"?{query}" if query else "")

    def page(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            url=lambda path, **params: self.url(request, path, **params),
            static=lambda name: self.url(request, f"/static/{name}"),
            show_llm_content=self.settings.show_llm_content,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def fragment(self, request: Request, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(
            url=lambda path, **params: self.url(request, path, **params),
            show_llm_content=self.settings.show_llm_content,
            **context,
        )

    def session_id(self, request: Request, name: str = "id") -> str:
        value = request.query_params.get(name)
        if not value or not value.strip():
            raise BadRequest(f"which session? add ?{name}=SESSION_ID")
        return value

    async def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, BadRequest):
            return self.page(request, "error.html", 400, title="Bad request", message=str(exc))
        if isinstance(exc, SessionNotFoundError):
            return self.page(
                request, "error.html", 404, title="No such session", message=exc.message
            )
        if isinstance(exc, KaizenError):
            return self.page(
                request, "error.html", 400, title="Cannot show this", message=exc.message
            )
        raise exc

    # -- sessions ----------------------------------------------------------------------------

    async def sessions(self, request: Request) -> Response:
        text = _text(request, "q")
        after = _text(request, "after")
        found, next_after = await self.reader.sessions_page(text=text, after=after)
        return self.page(
            request,
            "sessions.html",
            title="Sessions",
            sessions=found,
            q=text or "",
            after=after,
            next_after=next_after,
        )

    # -- one session -------------------------------------------------------------------------

    async def _header(self, request: Request, session_id: str) -> dict[str, Any]:
        info = await self.reader.info(session_id)
        length, head_hash = await self.reader.head(session_id)
        first, last = await self.reader.first_and_last(session_id)
        total_ms = None
        if first is not None and last is not None:
            total_ms = (parse_time(last[TIMESTAMP]) - parse_time(first[TIMESTAMP])) * 1000.0
        summary: Summary | None = self.reader.cached_summary(session_id)
        if length - (0 if summary is None else summary.upto) <= INLINE_SUMMARY:
            summary = await self.reader.summary(session_id)
        summary_ready = summary is not None and summary.upto >= length
        verified = self.reader.cached_verify(session_id, length, head_hash)
        if verified is None and length <= INLINE_VERIFY:
            verified = await self.reader.verify(session_id)
        return {
            "info": info,
            "length": length,
            "head_hash": head_hash,
            "first": first,
            "last": last,
            "total_ms": total_ms,
            "summary": summary,
            "summary_ready": summary_ready,
            "verified": verified,
        }

    async def session(self, request: Request) -> Response:
        session_id = self.session_id(request)
        filters = _filters(request)
        header = await self._header(request, session_id)
        window = await self.reader.window(session_id, filters)
        rows, axis = await self._rows(
            session_id, window.records, window.lower, window.upper, filters
        )
        live = self.settings.follow and window.at_head and not filters.narrowing
        agents = sorted({r[AGENT_ID] for r in window.records})
        first = header["first"]
        origin = parse_time(first[TIMESTAMP]) if first is not None else 0.0
        return self.page(
            request,
            "session.html",
            title=f"Session {session_id}",
            session_id=session_id,
            filters=filters,
            window=window,
            rows=rows,
            axis=axis,
            origin=origin,
            live=live,
            agents=agents,
            selected_types=list(filters.types or ()),
            **header,
        )

    async def _rows(
        self, session_id: str, records: list[Record], lower: int, upper: int, filters: Filters
    ) -> tuple[list[Row], Axis]:
        if filters.narrowing:
            rows = [Row(r, is_step=r[ENTRY_TYPE] in (_STARTED, _COMPLETED)) for r in records]
            return rows, Axis.of(rows)
        ends_wanted = [
            k for k in (step_key(r) for r in records if r[ENTRY_TYPE] == _COMPLETED) if k
        ]
        starts = (
            await self.reader.step_starts(session_id, ends_wanted, lower) if ends_wanted else {}
        )
        running_before = await open_steps_before(self.reader, session_id, lower)
        open_keys = [
            k
            for k in (
                step_key(r.record)
                for r in build_rows(records)
                if r.is_step and r.end is None and r.record[ENTRY_TYPE] == _STARTED
            )
            if k
        ]
        ends = {}
        if open_keys and upper < (await self.reader.info(session_id)).trajectory_length:
            ends = await self.reader.step_ends(session_id, open_keys, upper)
        rows = build_rows(records, starts, ends, running_before=running_before)
        return rows, Axis.of(rows)

    async def summary(self, request: Request) -> Response:
        session_id = self.session_id(request)
        summary = await self.reader.summary(session_id)
        html = self.fragment(request, "_summary.html", summary=summary, session_id=session_id)
        return HTMLResponse(html)

    # -- one entry ---------------------------------------------------------------------------

    async def entry(self, request: Request) -> Response:
        session_id = self.session_id(request)
        seq = _int(request, "seq")
        if seq is None or seq < 1:
            raise BadRequest("which entry? add &seq=N (N >= 1)")
        info = await self.reader.info(session_id)
        record = await self.reader.entry(session_id, seq)
        if record is None:
            return self.page(
                request,
                "error.html",
                404,
                title="No such entry",
                message=f"session {session_id} has {info.trajectory_length} entries; "
                f"there is no entry {seq}",
            )
        content = _content(record)
        partner: Record | None = None
        key = step_key(record)
        if key is not None and record[ENTRY_TYPE] == _STARTED:
            partner = (await self.reader.step_ends(session_id, [key], seq)).get(key)
        elif key is not None and record[ENTRY_TYPE] == _COMPLETED:
            partner = (await self.reader.step_starts(session_id, [key], seq - 1)).get(key)
        diff = None
        if record[ENTRY_TYPE] in ("state_set", "state_deleted") and isinstance(content, dict):
            old = content.get("old_value")
            new = content.get("new_value")
            if record[ENTRY_TYPE] == "state_deleted":
                diff = _render.diff_values(old, _render.ABSENT)
            else:
                diff = _render.diff_values(old, new)
        return self.page(
            request,
            "entry.html",
            title=f"Entry {seq} of {session_id}",
            session_id=session_id,
            record=record,
            content=content,
            partner=partner,
            diff=diff,
            length=info.trajectory_length,
            raw=_render.pretty(TrajectoryEntry.from_record(record).to_dict()),
        )

    # -- state -------------------------------------------------------------------------------

    async def state(self, request: Request) -> Response:
        session_id = self.session_id(request)
        info = await self.reader.info(session_id)
        at = _int(request, "at", info.state_version)
        assert at is not None
        if at < 0 or at > info.state_version:
            raise BadRequest(f"version {at} is out of range 0..{info.state_version}")
        state, seq = await self.reader.state_at(session_id, at)
        return self.page(
            request,
            "state.html",
            title=f"State of {session_id} at version {at}",
            session_id=session_id,
            at=at,
            seq=seq,
            latest=info.state_version,
            state=dict(sorted(state.items())),
        )

    async def state_diff(self, request: Request) -> Response:
        session_id = self.session_id(request)
        info = await self.reader.info(session_id)
        latest = info.state_version
        to = _int(request, "to", latest)
        assert to is not None
        start = _int(request, "from", max(to - 1, 0))
        assert start is not None
        for name, value in (("from", start), ("to", to)):
            if value < 0 or value > latest:
                raise BadRequest(f"{name} version {value} is out of range 0..{latest}")
        old, old_seq = await self.reader.state_at(session_id, start)
        new, new_seq = await self.reader.state_at(session_id, to)
        return self.page(
            request,
            "state_diff.html",
            title=f"State of {session_id}: version {start} against {to}",
            session_id=session_id,
            start=start,
            to=to,
            latest=latest,
            old_seq=old_seq,
            new_seq=new_seq,
            diffs=_render.diff_states(old, new),
        )

    # -- artifacts ---------------------------------------------------------------------------

    async def artifacts(self, request: Request) -> Response:
        session_id = self.session_id(request)
        await self.reader.info(session_id)
        return self.page(
            request,
            "artifacts.html",
            title=f"Artifacts of {session_id}",
            session_id=session_id,
            artifacts=await self.reader.artifacts(session_id),
        )

    async def artifact(self, request: Request) -> Response:
        session_id = self.session_id(request)
        name = request.query_params.get("name")
        if not name:
            raise BadRequest("which artifact? add &name=NAME")
        data = await self.reader.artifact(session_id, name)
        if data is None:
            return self.page(
                request,
                "error.html",
                404,
                title="No such artifact",
                message=f"no artifact {name!r} in session {session_id}",
            )
        safe = _download_name(name)
        utf8_name = quote(name.replace("\\", "/").rsplit("/", 1)[-1] or safe, safe="")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "content-disposition": f'attachment; filename="{safe}"; '
                f"filename*=UTF-8''{utf8_name}",
                "content-security-policy": DOWNLOAD_CSP,
                "cache-control": "no-store",
            },
        )

    # -- verify, export ----------------------------------------------------------------------

    async def verify(self, request: Request) -> Response:
        session_id = self.session_id(request)
        result: VerifyResult = await self.reader.verify(session_id)
        status = 200
        return self.page(
            request,
            "verify.html",
            status,
            title=f"Verify {session_id}",
            session_id=session_id,
            result=result,
        )

    async def export(self, request: Request) -> Response:
        session_id = self.session_id(request)
        head = (await self.reader.info(session_id)).trajectory_length
        reader = self.reader

        async def lines() -> Any:
            async for page in reader.pages(session_id, until=head):
                yield b"".join(_export_line(record) for record in page)

        safe = _download_name(session_id)
        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={
                "content-disposition": f'attachment; filename="{safe}.jsonl"',
                "cache-control": "no-store",
            },
        )

    # -- live --------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        session_id = self.session_id(request)
        last_id = request.headers.get("last-event-id")
        since: int | None = None
        if last_id:
            try:
                since = int(last_id)
            except ValueError:
                raise BadRequest("Last-Event-ID must be an entry seq") from None
        if since is None:
            since = _int(request, "since_seq", 0)
        assert since is not None
        await self.reader.info(session_id)
        # the page's time axis and origin, so live rows draw on the same scale
        axis = Axis(_float(request, "axis_start"), _float(request, "axis_end"))
        origin = _float(request, "origin")

        def render(where: str, row: Row, record: Record) -> str:
            return self.fragment(
                request,
                "_event.html",
                where=where,
                row=row,
                record=record,
                session_id=session_id,
                axis=axis,
                origin=origin,
            ).strip()

        reader = self.reader
        settings = self.settings
        start = since

        async def produce(emit: Any) -> None:
            await stream_rows(
                reader,
                session_id,
                start,
                emit,
                render,
                follow=settings.follow,
                poll_interval=settings.poll_interval,
            )

        return EventStream(produce, heartbeat=settings.heartbeat)  # type: ignore[return-value]

    # -- compare -----------------------------------------------------------------------------

    async def compare(self, request: Request) -> Response:
        a = _text(request, "a")
        b = _text(request, "b")
        if not a or not b:
            choices, _ = await self.reader.sessions_page()
            return self.page(
                request,
                "compare.html",
                title="Compare two sessions",
                a=a or "",
                b=b or "",
                result=None,
                choices=choices,
            )
        result = await self._compare(a, b)
        return self.page(
            request,
            "compare.html",
            title=f"Compare {a} and {b}",
            a=a,
            b=b,
            result=result,
            choices=[],
        )

    async def _compare(self, a: str, b: str) -> dict[str, Any]:
        reader = self.reader
        info_a, info_b = await reader.info(a), await reader.info(b)
        shared = await reader.common_prefix(a, b)
        len_a, len_b = info_a.trajectory_length, info_b.trajectory_length
        if shared == len_a == len_b:
            relation = "same"
        elif shared == 0:
            relation = "unrelated"
        elif shared == len_a:
            relation = "b_continues_a"
        elif shared == len_b:
            relation = "a_continues_b"
        else:
            relation = "diverged"
        tail_a = await reader.read(a, since=shared, limit=WINDOW)
        tail_b = await reader.read(b, since=shared, limit=WINDOW)
        state_a, _ = await reader.state_at(a, info_a.state_version)
        state_b, _ = await reader.state_at(b, info_b.state_version)
        steps_a = await self._steps(a, shared)
        steps_b = await self._steps(b, shared)
        deltas = []
        for index in range(max(len(steps_a), len(steps_b))):
            sa = steps_a[index] if index < len(steps_a) else None
            sb = steps_b[index] if index < len(steps_b) else None
            delta = None
            if (
                sa is not None
                and sb is not None
                and sa.duration_ms is not None
                and sb.duration_ms is not None
            ):
                delta = sb.duration_ms - sa.duration_ms
            deltas.append({"index": index + 1, "a": sa, "b": sb, "delta": delta})
        head_a = (await reader.head(a))[1]
        head_b = (await reader.head(b))[1]
        return {
            "relation": relation,
            "shared": shared,
            "diverged_at": shared + 1 if relation in ("diverged", "unrelated") else None,
            "info_a": info_a,
            "info_b": info_b,
            "head_a": head_a,
            "head_b": head_b,
            "tail_a": tail_a,
            "tail_b": tail_b,
            "state_diff": _render.diff_states(state_a, state_b),
            "deltas": deltas,
        }

    async def _steps(self, session_id: str, after: int) -> list[Row]:
        """The steps that started after seq ``after`` (a window's worth), paired."""
        records = await self.reader.read(
            session_id, since=after, types=[_STARTED, _COMPLETED], limit=WINDOW * 2
        )
        rows = build_rows(records)
        return [row for row in rows if row.is_step and row.record[ENTRY_TYPE] == _STARTED]


def _float(request: Request, name: str) -> float:
    """A number from the query string; 0.0 when absent or not a finite number."""
    try:
        value = float(request.query_params.get(name) or 0.0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _export_line(record: Record) -> bytes:
    """One line of ``kaizen log --json``: the entry as ``TrajectoryEntry.to_dict()``."""
    import orjson

    return orjson.dumps(TrajectoryEntry.from_record(record).to_dict(), default=str) + b"\n"


def create_app(
    hub: SessionHub,
    *,
    show_llm_content: bool = True,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    token: str | None = None,
    follow: bool = True,
    poll_interval: float = 0.25,
    heartbeat: float = 15.0,
) -> ASGIApp:
    """A read-only ASGI app showing ``hub``'s sessions; mount it or serve it.

    It reads through ``hub.store`` and never opens a session for writing, so it can watch
    sessions another process is writing to the same store.

    Args:
        hub: a running :class:`~kaizen_async.SessionHub` (entered with ``async with``).
        show_llm_content: False shows no model or user message text anywhere: bodies
            become their length and SHA-256 (model, tokens, duration and error stay).
        allowed_hosts: the ``Host`` header names served (others get 400; DNS rebinding).
            Add your server's name when you mount the app beyond this machine.
        token: when set, every request must carry it (``?token=`` once, then a cookie).
        follow: False when the store cannot grow (a ``.kaizen`` file): live streams end
            after the history.
        poll_interval: seconds between store reads while following a session that this
            process's hub does not hold open.
        heartbeat: seconds between keep-alive comments on an idle event stream.
    """
    if not isinstance(hub, SessionHub):
        raise TypeError(f"create_app needs a SessionHub, got {type(hub).__name__}")
    pages = _Pages(
        hub,
        Settings(
            show_llm_content=bool(show_llm_content),
            follow=bool(follow),
            poll_interval=float(poll_interval),
            heartbeat=float(heartbeat),
        ),
    )

    def handle(method: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await method(request)  # type: ignore[no-any-return]
            except (BadRequest, KaizenError) as exc:
                return await pages.error(request, exc)

        return endpoint

    routes = [
        Route("/", handle(pages.sessions), methods=["GET"]),
        Route("/session", handle(pages.session), methods=["GET"]),
        Route("/summary", handle(pages.summary), methods=["GET"]),
        Route("/entry", handle(pages.entry), methods=["GET"]),
        Route("/state", handle(pages.state), methods=["GET"]),
        Route("/state/diff", handle(pages.state_diff), methods=["GET"]),
        Route("/artifacts", handle(pages.artifacts), methods=["GET"]),
        Route("/artifact", handle(pages.artifact), methods=["GET"]),
        Route("/verify", handle(pages.verify), methods=["GET"]),
        Route("/export.jsonl", handle(pages.export), methods=["GET"]),
        Route("/events", handle(pages.events), methods=["GET"]),
        Route("/compare", handle(pages.compare), methods=["GET"]),
        Mount("/static", StaticFiles(directory=os.path.join(_HERE, "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.pages = pages
    return Guard(app, allowed_hosts=allowed_hosts, token=token)
