"""A stand-in LLM server for tests: real HTTP/1.1 on 127.0.0.1, scripted replies.

``StandInLLMServer`` listens on a free port of 127.0.0.1 (AnyIO, so asyncio and Trio) and
answers each ``POST`` with the next scripted reply, written as raw chunked transfer-encoding
bytes, so a test decides exactly where HTTP chunks split the body (inside a line, inside a
UTF-8 character, several lines per chunk), how slow the first byte and each chunk are, and
whether the stream ends cleanly, with an error line, or by a dropped connection.

Replies are small dataclasses:

- :class:`OllamaReply`: Ollama's ``/api/chat`` NDJSON stream (``message.content`` pieces,
  ``thinking`` pieces, the ``done:true`` line with ``done_reason`` and metrics), written
  the way Ollama's Go server writes JSON; to a request saying ``"stream": false``, one JSON
  object instead (``done:true``, the content and thinking accumulated, metrics).
- :class:`OpenAIReply`: the OpenAI-compatible SSE stream (role chunk with
  ``content:null``, content deltas, finish chunk, usage chunk, ``[DONE]``, error events)
  when the request says ``"stream": true``; otherwise one ``chat.completion`` object
  (``choices[0].message``, ``finish_reason``, ``usage``).

Raw ``lines`` / ``events`` are always sent as scripted, streamed.
- :class:`ErrorReply`: an HTTP error before any streaming (``404 {"error": ...}``).
- :class:`RawReply`: arbitrary chunked body bytes; :class:`HangupReply`: no answer at all.

Every request becomes an :class:`Exchange`: the parsed request, and when each labelled part
of the reply was handed to the socket (``time.perf_counter()``), e.g. ``"content:0"``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import anyio
import orjson
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener

__all__ = [
    "BodyReply",
    "Chunking",
    "ErrorReply",
    "Exchange",
    "HangupReply",
    "OllamaReply",
    "OpenAIReply",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "StandInLLMServer",
]

#: how a streamed body is cut into HTTP chunks: ``"lines"`` one chunk per line/event,
#: ``"all"`` one chunk, ``n`` every n bytes, ``[a, b, ...]`` these sizes (the rest last)
Chunking: TypeAlias = Literal["lines", "all"] | int | Sequence[int]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_MAX_HEAD = 64 * 1024
_AUTO: Any = object()


# -- replies ---------------------------------------------------------------------------------


@dataclass
class OllamaReply:
    """An Ollama ``/api/chat`` stream: one NDJSON line per piece, then ``done:true``.

    Labels of the parts: ``thinking:i``, ``content:i``, ``done``, ``error``, ``line:i``
    (for raw ``lines``), ``drop``.
    """

    #: ``message.content`` fragments, one line each
    pieces: Sequence[str] = ()
    #: ``message.thinking`` fragments, sent before the content
    thinking: Sequence[str] = ()
    #: ``message.content`` of the final ``done:true`` line
    done_content: str = ""
    done_reason: str = "stop"
    #: metrics of the final line; None: plausible values, ``{}``: none (they are omitempty)
    metrics: Mapping[str, int] | None = None
    #: after the pieces send ``{"error": error}`` and end (status stays 200, no done line)
    error: str | None = None
    #: after the pieces cut the connection inside a chunk (no done line, no 0-chunk)
    drop: bool = False
    #: raw NDJSON lines (str, bytes or dicts) sent instead of pieces and the done line
    lines: Sequence[str | bytes | Mapping[str, Any]] | None = None
    #: ``model`` of each line; None: the requested model
    model: str | None = None
    #: seconds before every HTTP chunk after the first
    delay: float = 0.0
    #: seconds before the status line (model load + prompt evaluation)
    first_byte_delay: float = 0.0
    chunks: Chunking = "lines"


@dataclass
class OpenAIReply:
    """An OpenAI-compatible ``chat.completion.chunk`` SSE stream.

    Labels: ``role``, ``content:i``, ``finish``, ``usage``, ``error``, ``done``, ``event:i``
    (for raw ``events``), ``drop``.
    """

    pieces: Sequence[str] = ()
    #: first event ``delta: {"role": "assistant", "content": null}`` (llama.cpp style)
    role_chunk: bool = True
    #: finish event with an empty delta; None: no finish event
    finish_reason: str | None = "stop"
    #: usage event (``choices: []``); None: none; default: plausible counts
    usage: Mapping[str, int] | None = _AUTO
    #: put the usage into the finish event instead (llama.cpp style)
    usage_in_finish: bool = False
    #: end with ``data: [DONE]``
    done_marker: bool = True
    #: after the pieces send ``data: {"error": error}`` and end
    error: str | Mapping[str, Any] | None = None
    #: send ``[DONE]`` after the error event too (vLLM style)
    done_after_error: bool = False
    #: a ``: keep-alive`` comment before every event
    comments: bool = False
    #: raw events (without the blank line) sent instead of the generated ones
    events: Sequence[str] | None = None
    #: after the events cut the connection inside a chunk
    drop: bool = False
    #: line ending of the SSE stream (``"\n"`` or ``"\r\n"``)
    newline: str = "\n"
    model: str | None = None
    delay: float = 0.0
    first_byte_delay: float = 0.0
    chunks: Chunking = "lines"


@dataclass
class BodyReply:
    """A plain (not streamed) answer: a dict body is sent as JSON, a str as text."""

    status: int = 200
    body: Mapping[str, Any] | str = field(default_factory=dict)
    #: seconds before the answer
    delay: float = 0.0


@dataclass
class ErrorReply(BodyReply):
    """An HTTP error answered before any streaming, e.g. ``404 {"error": ...}``."""

    status: int = 404
    body: Mapping[str, Any] | str = field(
        default_factory=lambda: {"error": "model 'missing' not found"}
    )


@dataclass
class RawReply:
    """Exactly these body chunks (chunked transfer encoding); labels ``chunk:i``."""

    chunks: Sequence[bytes | str] = ()
    status: int = 200
    content_type: str = "application/x-ndjson"
    #: end without the terminating 0-chunk (the connection is closed)
    drop: bool = False
    delay: float = 0.0
    first_byte_delay: float = 0.0
    #: more response headers, e.g. ``{"Content-Encoding": "gzip"}`` for chunks the test
    #: compressed (a server that compresses whatever the request asked for)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class HangupReply:
    """Read the request, wait ``delay`` seconds, close the connection without answering."""

    delay: float = 0.0


Reply: TypeAlias = OllamaReply | OpenAIReply | BodyReply | RawReply | HangupReply


# -- what the server saw and did ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: method, path, headers (lower-case names) and body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when empty or not JSON)."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


class Exchange:
    """One request and what the server did about it.

    ``sent_at[label]`` is the ``time.perf_counter()`` moment the HTTP chunk completing that
    labelled part was handed to the socket; ``await wait_sent(label)`` waits for it.
    """

    def __init__(self, request: RecordedRequest) -> None:
        self.request = request
        self.received_at = time.perf_counter()
        self.sent_at: dict[str, float] = {}
        #: content pieces of the reply in order, as ``(label, text)``
        self.content: list[tuple[str, str]] = []
        #: sizes of the HTTP chunks written (body bytes of each)
        self.chunk_sizes: list[int] = []
        #: the whole scripted reply was written (terminating 0-chunk included)
        self.completed = False
        #: the reply ended with a deliberately dropped connection
        self.dropped = False
        #: the client closed the connection before the reply was complete
        self.client_disconnected = False
        self.disconnected_at: float | None = None
        #: set when the server is done with this request, however it ended
        self.finished = anyio.Event()
        self._waiters: dict[str, anyio.Event] = {}
        self._final_in_flight = False

    def __repr__(self) -> str:
        r = self.request
        return f"<Exchange {r.method} {r.path} sent={list(self.sent_at)} done={self.completed}>"

    def _mark(self, labels: Iterable[str], at: float) -> None:
        for label in labels:
            self.sent_at[label] = at
            waiter = self._waiters.pop(label, None)
            if waiter is not None:
                waiter.set()

    async def wait_sent(self, label: str) -> float:
        """Wait until the part ``label`` (e.g. ``"content:2"``) was sent; its timestamp.

        Raises ``LookupError`` when the exchange ends without sending it.
        """
        if label not in self.sent_at and not self.finished.is_set():
            waiter = self._waiters.setdefault(label, anyio.Event())
            await waiter.wait()
        if label not in self.sent_at:
            raise LookupError(f"{label!r} was not sent: the exchange ended ({self!r})")
        return self.sent_at[label]

    def _finish(self) -> None:
        self.finished.set()
        for waiter in self._waiters.values():
            waiter.set()
        self._waiters.clear()

    def text_sent_at(self, text: str) -> float | None:
        """When the content sent so far first contained ``text`` (None: not yet, or never)."""
        sent = ""
        for label, piece in self.content:
            if label not in self.sent_at:
                return None
            sent += piece
            if text in sent:
                return self.sent_at[label]
        return None


# -- compiling a reply into bytes ---------------------------------------------------------------


@dataclass
class _Plan:
    status: int
    content_type: str
    units: list[tuple[bytes, str | None]]
    content: list[tuple[str, str]] = field(default_factory=list)
    chunks: Chunking = "lines"
    delay: float = 0.0
    first_byte_delay: float = 0.0
    chunked: bool = True
    drop: bytes | None = None  # a line of which only the first half is sent
    headers: list[tuple[str, str]] = field(default_factory=list)  # more response headers


def _go_json(value: Any) -> bytes:
    """JSON as Go's ``json.Marshal`` writes it (HTML characters and U+2028/9 escaped)."""
    data = orjson.dumps(value)
    for raw, escaped in _GO_ESCAPES:
        data = data.replace(raw, escaped)
    return data


_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _requested_model(request: RecordedRequest) -> str:
    body = request.json
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else "stand-in"


def _wants_stream(request: RecordedRequest, *, default: bool) -> bool:
    """The request's ``stream`` flag (Ollama streams unless told not to; OpenAI only when
    asked to)."""
    body = request.json
    stream = body.get("stream", default) if isinstance(body, dict) else default
    return stream if isinstance(stream, bool) else default


def _single(
    status: int, body: bytes, streamed: _Plan, reply_drop: bool, first_byte_delay: float
) -> _Plan:
    """One JSON body answering a request that said ``"stream": false``.

    The body completes every label the streamed reply would have sent (``content:i``,
    ``done``, ...) plus ``body``; a dropped reply sends half of it and closes.
    """
    labels = [(b"", label) for _, label in streamed.units if label]
    return _Plan(
        status,
        "application/json; charset=utf-8",
        [(body, "body"), *labels],
        streamed.content,
        first_byte_delay=first_byte_delay,
        chunked=False,
        drop=body if reply_drop else None,
    )


def _ollama_single(reply: OllamaReply, model: str, streamed: _Plan) -> _Plan:
    """Ollama's ``"stream": false`` answer: the ``done:true`` object with everything
    accumulated (content, thinking), or a status 500 ``{"error": ...}``."""
    if reply.error is not None:
        body = _go_json({"error": reply.error})
        return _single(500, body, streamed, False, reply.first_byte_delay)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(reply.pieces) + reply.done_content,
    }
    if reply.thinking:
        message["thinking"] = "".join(reply.thinking)
    metrics = dict(reply.metrics) if reply.metrics is not None else _ollama_metrics(reply)
    obj = {
        "model": model,
        "created_at": _now_rfc3339(),
        "message": message,
        "done": True,
        "done_reason": reply.done_reason,
        **metrics,
    }
    return _single(200, _go_json(obj), streamed, reply.drop, reply.first_byte_delay)


def _ollama_plan(reply: OllamaReply, request: RecordedRequest) -> _Plan:
    streamed = _ollama_stream_plan(reply, request)
    if reply.lines is None and not _wants_stream(request, default=True):
        return _ollama_single(reply, reply.model or _requested_model(request), streamed)
    return streamed


def _ollama_stream_plan(reply: OllamaReply, request: RecordedRequest) -> _Plan:
    model = reply.model or _requested_model(request)
    units: list[tuple[bytes, str | None]] = []
    content: list[tuple[str, str]] = []

    def line(message: dict[str, Any], **extra: Any) -> bytes:
        obj = {"model": model, "created_at": _now_rfc3339(), "message": message, **extra}
        return _go_json(obj) + b"\n"

    if reply.lines is not None:
        for i, raw in enumerate(reply.lines):
            if isinstance(raw, bytes | str):
                data = raw if isinstance(raw, bytes) else raw.encode()
            else:
                data = _go_json(dict(raw))
            units.append((data + b"\n", f"line:{i}"))
    else:
        for i, text in enumerate(reply.thinking):
            msg = {"role": "assistant", "content": "", "thinking": text}
            units.append((line(msg, done=False), f"thinking:{i}"))
        for i, text in enumerate(reply.pieces):
            msg = {"role": "assistant", "content": text}
            units.append((line(msg, done=False), f"content:{i}"))
            content.append((f"content:{i}", text))
    drop = None
    if reply.error is not None:
        units.append((_go_json({"error": reply.error}) + b"\n", "error"))
    elif reply.drop:
        drop = line({"role": "assistant", "content": "never complete"}, done=False)
    elif reply.lines is None:
        metrics = dict(reply.metrics) if reply.metrics is not None else _ollama_metrics(reply)
        done = line(
            {"role": "assistant", "content": reply.done_content},
            done=True,
            done_reason=reply.done_reason,
            **metrics,
        )
        units.append((done, "done"))
        if reply.done_content:
            content.append(("done", reply.done_content))
    return _Plan(
        200,
        "application/x-ndjson",
        units,
        content,
        reply.chunks,
        reply.delay,
        reply.first_byte_delay,
        drop=drop,
    )


def _ollama_metrics(reply: OllamaReply) -> dict[str, int]:
    return {
        "total_duration": 182242375,
        "load_duration": 41295167,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 24573166,
        "eval_count": len(reply.pieces) + (1 if reply.done_content else 0),
        "eval_duration": 115959084,
    }


def _openai_usage(reply: OpenAIReply) -> Mapping[str, int] | None:
    if reply.usage is _AUTO:
        return {
            "prompt_tokens": 9,
            "completion_tokens": len(reply.pieces),
            "total_tokens": 9 + len(reply.pieces),
        }
    return reply.usage


def _openai_single(reply: OpenAIReply, model: str, streamed: _Plan) -> _Plan:
    """An OpenAI-compatible answer without ``"stream": true``: one ``chat.completion``
    object, or a status 500 ``{"error": {...}}``."""
    if reply.error is not None:
        error = (
            dict(reply.error)
            if isinstance(reply.error, Mapping)
            else {"message": reply.error, "type": "api_error", "param": None, "code": None}
        )
        return _single(500, _go_json({"error": error}), streamed, False, reply.first_byte_delay)
    obj: dict[str, Any] = {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(reply.pieces)},
                "finish_reason": reply.finish_reason,
            }
        ],
    }
    usage = _openai_usage(reply)
    if usage is not None:
        obj["usage"] = dict(usage)
    return _single(200, _go_json(obj), streamed, reply.drop, reply.first_byte_delay)


def _openai_plan(reply: OpenAIReply, request: RecordedRequest) -> _Plan:
    streamed = _openai_stream_plan(reply, request)
    if reply.events is None and not _wants_stream(request, default=False):
        return _openai_single(reply, reply.model or _requested_model(request), streamed)
    return streamed


def _openai_stream_plan(reply: OpenAIReply, request: RecordedRequest) -> _Plan:
    model = reply.model or _requested_model(request)
    nl = reply.newline.encode()
    units: list[tuple[bytes, str | None]] = []
    content: list[tuple[str, str]] = []

    def event(payload: bytes, label: str) -> None:
        if reply.comments:
            units.append((b": keep-alive" + nl + nl, None))
        units.append((b"data: " + payload + nl + nl, label))

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
            **extra,
        }
        return _go_json(obj)

    def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": d, "finish_reason": finish}]

    usage = _openai_usage(reply)
    drop = None
    if reply.events is not None:
        for i, raw in enumerate(reply.events):
            units.append((raw.encode() + nl + nl, f"event:{i}"))
    else:
        if reply.role_chunk:
            event(chunk(delta({"role": "assistant", "content": None})), "role")
        for i, text in enumerate(reply.pieces):
            d: dict[str, Any] = {"content": text}
            if not reply.role_chunk and i == 0:
                d = {"role": "assistant", "content": text}
            event(chunk(delta(d)), f"content:{i}")
            content.append((f"content:{i}", text))
        if reply.error is not None:
            event(_go_json({"error": reply.error}), "error")
            if reply.done_after_error:
                event(b"[DONE]", "done")
        elif not reply.drop:
            if reply.finish_reason is not None:
                extra = {"usage": dict(usage)} if reply.usage_in_finish and usage else {}
                event(chunk(delta({}, reply.finish_reason), **extra), "finish")
            if usage is not None and not reply.usage_in_finish:
                event(chunk([], usage=dict(usage)), "usage")
            if reply.done_marker:
                event(b"[DONE]", "done")
    if reply.drop:
        drop = b"data: " + chunk(delta({"content": "never complete"})) + nl + nl
    return _Plan(
        200,
        "text/event-stream",
        units,
        content,
        reply.chunks,
        reply.delay,
        reply.first_byte_delay,
        drop=drop,
    )


def _plan(reply: Reply, request: RecordedRequest) -> _Plan:
    if isinstance(reply, OllamaReply):
        return _ollama_plan(reply, request)
    if isinstance(reply, OpenAIReply):
        return _openai_plan(reply, request)
    if isinstance(reply, BodyReply):
        if isinstance(reply.body, str):
            body, ctype = reply.body.encode(), "text/plain; charset=utf-8"
        else:
            body, ctype = _go_json(dict(reply.body)), "application/json; charset=utf-8"
        return _Plan(
            reply.status, ctype, [(body, "body")], first_byte_delay=reply.delay, chunked=False
        )
    if isinstance(reply, RawReply):
        units: list[tuple[bytes, str | None]] = [
            (c.encode() if isinstance(c, str) else bytes(c), f"chunk:{i}")
            for i, c in enumerate(reply.chunks)
        ]
        plan = _Plan(reply.status, reply.content_type, units, [], "lines", reply.delay)
        plan.first_byte_delay = reply.first_byte_delay
        plan.drop = b"" if reply.drop else None
        plan.headers = list(reply.headers.items())
        return plan
    raise TypeError(f"not a reply: {reply!r}")


def _frames(plan: _Plan) -> list[tuple[bytes, list[str]]]:
    """The HTTP chunks of a plan's body, each with the labels it completes."""
    units = [(data, label) for data, label in plan.units if data]
    if plan.chunks == "lines":
        return [(data, [label] if label else []) for data, label in units]
    body = b"".join(data for data, _ in units)
    if plan.chunks == "all":
        sizes = [len(body)]
    elif isinstance(plan.chunks, int):
        if plan.chunks < 1:
            raise ValueError("chunks must be >= 1")
        sizes = [plan.chunks] * -(-len(body) // plan.chunks)
    else:
        sizes = [s for s in plan.chunks if s > 0]
        rest = len(body) - sum(sizes)
        if rest > 0:
            sizes.append(rest)
    ends: deque[tuple[int, str | None]] = deque()
    offset = 0
    for data, label in units:
        offset += len(data)
        ends.append((offset, label))
    frames: list[tuple[bytes, list[str]]] = []
    start = 0
    for size in sizes:
        stop = min(start + size, len(body))
        if stop <= start:
            break
        labels = []
        while ends and ends[0][0] <= stop:
            label = ends.popleft()[1]
            if label:
                labels.append(label)
        frames.append((body[start:stop], labels))
        start = stop
    return frames


# -- the server ---------------------------------------------------------------------------------


class _Closed(Exception):
    """The peer went away (or sent something that is not HTTP) mid-request."""


class _Connection:
    """One accepted TCP connection: a buffered HTTP/1.1 request reader and a raw writer."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        self.buffer += data
        return True

    async def _read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._fill():
                raise _Closed("connection closed inside a request body")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD or not await self._fill():
                raise _Closed("connection closed inside a request")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def read_request(self) -> RecordedRequest | None:
        """The next request, or None when the client closed the connection between requests."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD:
                raise _Closed("request head too large")
            if not await self._fill():
                if self.buffer.strip():
                    raise _Closed("connection closed inside a request head")
                return None
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise _Closed(f"bad request line {request_line!r}")
        headers: dict[str, str] = {}
        for header in header_lines:
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self._read_line()).split(b";")[0], 16)
                if size == 0:
                    await self._read_line()
                    break
                body += await self._read_exact(size)
                await self._read_exact(2)
        else:
            body = await self._read_exact(int(headers.get("content-length", "0")))
        return RecordedRequest(parts[0], parts[1], headers, body)

    async def watch(self, exchange: Exchange, scope: anyio.CancelScope) -> None:
        """While a reply is written: notice the client closing the connection."""
        while await self._fill():
            pass
        if not exchange._final_in_flight:
            exchange.client_disconnected = True
            exchange.disconnected_at = time.perf_counter()
        scope.cancel()


class StandInLLMServer:
    """A scripted Ollama / OpenAI-compatible server on 127.0.0.1 for tests.

    Use as ``async with StandInLLMServer([OllamaReply(["Hel", "lo"])]) as server:`` and point
    a provider at ``server.url``. Each ``POST`` takes the next scripted reply (a ``500`` with
    an ``{"error": ...}`` body when none is left); ``GET /api/version``, ``/api/tags``,
    ``/v1/models`` and ``/`` answer like Ollama. :meth:`route` sets a fixed reply for a path.

    Args:
        replies: the scripted replies, in the order requests will get them.
        models: the model names ``/api/tags`` and ``/v1/models`` list.
        version: what ``/api/version`` reports.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        models: Sequence[str] = ("llama3.1:8b",),
        version: str = "0.12.6",
    ) -> None:
        self._replies: deque[Reply] = deque(replies)
        self._routes: dict[tuple[str, str], Reply] = {}
        self.models = list(models)
        self.version = version
        #: every request received, in arrival order
        self.exchanges: list[Exchange] = []
        #: connections accepted so far
        self.connections = 0
        #: unexpected failures inside the server (re-raised when the server exits)
        self.errors: list[BaseException] = []
        self._listener: MultiListener[SocketStream] | None = None
        self._task_group: TaskGroup | None = None
        self._port: int | None = None
        self._arrived: anyio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._port = self._listener.extra(SocketAttribute.local_port)
        self._arrived = anyio.Event()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._listener.serve, self._handle)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        assert self._listener is not None
        self._task_group.cancel_scope.cancel()
        try:
            await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            await self._listener.aclose()
        if exc_type is None and self.errors:
            first = self.errors[0]
            raise RuntimeError(f"the stand-in server failed: {first!r}") from first

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not running (use `async with`)")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting and observing -----------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue more replies for the coming ``POST`` requests."""
        self._replies.extend(replies)

    def route(self, path: str, reply: Reply, *, method: str = "GET") -> None:
        """Answer every ``method path`` request with ``reply`` (not taken from the queue)."""
        self._routes[(method.upper(), path)] = reply

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        return [e.request for e in self.exchanges]

    def posts(self, path: str | None = None) -> list[Exchange]:
        """The ``POST`` exchanges (to ``path`` when given)."""
        return [
            e
            for e in self.exchanges
            if e.request.method == "POST" and (path is None or e.request.path == path)
        ]

    async def exchange(self, index: int) -> Exchange:
        """The ``index``-th exchange (0-based), waiting for its request to arrive."""
        while len(self.exchanges) <= index:
            assert self._arrived is not None
            await self._arrived.wait()
        return self.exchanges[index]

    # -- serving ---------------------------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        self.connections += 1
        conn = _Connection(stream)
        try:
            async with stream:
                while True:
                    request = await conn.read_request()
                    if request is None or not await self._answer(conn, request):
                        return
        except (_Closed, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        except Exception as exc:  # a bug of the stand-in: report it when the server exits
            self.errors.append(exc)

    def _reply_for(self, request: RecordedRequest) -> Reply:
        method, path = request.method, request.path.split("?", 1)[0]
        fixed = self._routes.get((method, path))
        if fixed is not None:
            return fixed
        if method == "GET":
            return self._builtin_get(path)
        if self._replies:
            return self._replies.popleft()
        return ErrorReply(500, {"error": f"stand-in: no scripted reply left for {method} {path}"})

    def _builtin_get(self, path: str) -> Reply:
        if path == "/api/version":
            return _json_reply({"version": self.version})
        if path == "/api/tags":
            return _json_reply({"models": [_tag(name) for name in self.models]})
        if path == "/v1/models":
            data = [{"id": n, "object": "model", "owned_by": "library"} for n in self.models]
            return _json_reply({"object": "list", "data": data})
        if path == "/":
            return BodyReply(200, "Ollama is running")
        return ErrorReply(404, "404 page not found")

    async def _answer(self, conn: _Connection, request: RecordedRequest) -> bool:
        """Serve one request; False when the connection must be closed afterwards."""
        exchange = Exchange(request)
        self.exchanges.append(exchange)
        assert self._arrived is not None
        self._arrived.set()
        self._arrived = anyio.Event()
        try:
            reply = self._reply_for(request)
            if isinstance(reply, HangupReply):
                await anyio.sleep(reply.delay)
                return False
            plan = _plan(reply, request)
            exchange.content = list(plan.content)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(conn.watch, exchange, task_group.cancel_scope)
                try:
                    await self._write(conn, exchange, plan)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    exchange.client_disconnected = True
                    exchange.disconnected_at = time.perf_counter()
                task_group.cancel_scope.cancel()
            keep_alive = request.headers.get("connection", "").lower() != "close"
            return exchange.completed and keep_alive and not exchange.client_disconnected
        finally:
            exchange._finish()

    async def _write(self, conn: _Connection, exchange: Exchange, plan: _Plan) -> None:
        reason = _REASONS.get(plan.status, "Status")
        head = [
            f"HTTP/1.1 {plan.status} {reason}",
            f"Content-Type: {plan.content_type}",
            f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S GMT')}",
        ]
        head.extend(f"{name}: {value}" for name, value in plan.headers)
        if plan.first_byte_delay > 0:
            await anyio.sleep(plan.first_byte_delay)
        send = conn.stream.send
        if not plan.chunked:
            body = b"".join(data for data, _ in plan.units)
            head.append(f"Content-Length: {len(body)}")
            if plan.drop is not None:  # announce the whole body, send half of it, hang up
                await send(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
                exchange.dropped = True
                exchange._mark(["drop"], time.perf_counter())
                return
            exchange._final_in_flight = True
            await send(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            exchange.chunk_sizes.append(len(body))
            exchange._mark([label for _, label in plan.units if label], time.perf_counter())
            exchange.completed = True
            return
        head.append("Transfer-Encoding: chunked")
        pending = ("\r\n".join(head) + "\r\n\r\n").encode()
        for index, (data, labels) in enumerate(_frames(plan)):
            if index and plan.delay > 0:
                await anyio.sleep(plan.delay)
            await send(pending + b"%x\r\n%b\r\n" % (len(data), data))
            pending = b""
            exchange.chunk_sizes.append(len(data))
            exchange._mark(labels, time.perf_counter())
        if plan.drop is not None:
            if plan.delay > 0:
                await anyio.sleep(plan.delay)
            half = plan.drop[: len(plan.drop) // 2]
            header = b"%x\r\n" % len(plan.drop) if plan.drop else b""
            await send(pending + header + half)
            exchange.dropped = True
            exchange._mark(["drop"], time.perf_counter())
            return
        exchange._final_in_flight = True
        await send(pending + b"0\r\n\r\n")
        exchange.completed = True


def _json_reply(value: Any) -> BodyReply:
    return BodyReply(200, value)


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-07-07T20:22:19.184789Z",
        "size": 4920753328,
        "digest": "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
        "details": {
            "format": "gguf",
            "family": "llama",
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        },
    }
