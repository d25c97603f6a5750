"""HTTP plumbing shared by the network providers (Ollama and OpenAI-compatible).

The owned ``httpx.AsyncClient``, the overall deadline, a byte-level line reader, the bound
on what one response may hold, and the mapping of every transport failure to one
:class:`LLMError` (``details["kind"]`` says which).

Every body is read with a bound (``max_response_bytes``): a server that sends more, or one
line that never ends, is an :class:`LLMError` of kind ``"too_large"`` and the connection is
closed, instead of memory growing with whatever the server sends.

Bodies are read raw and decoded here (:class:`BodyReader`), not by ``httpx``: its decoders
inflate a whole network read at once, so a few KiB of gzip become hundreds of MiB in memory
before any bound is checked. Requests ask for ``identity``; a server that compresses anyway
(gzip or deflate) is decoded in bounded pieces, any other coding is refused.

Lines are split on ``\\n`` in the raw bytes, not with ``httpx``'s ``aiter_lines``: that one
splits like ``str.splitlines`` (also on U+0085, U+2028, U+2029), characters that JSON allows
unescaped inside strings (Go's encoder leaves U+0085 as is), so it would cut a valid line.
"""

from __future__ import annotations

import functools
import re
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
import orjson

from .._exceptions import KaizenValidationError, LLMError
from ._base import LLMProvider

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "BodyReader",
    "HTTPProvider",
    "LineReader",
    "body_error_text",
    "error_text",
]

#: default bound of one response body, so also of one line or event of it: 4 MiB is
#: some 30,000 tokens of Ollama's NDJSON (about 130 bytes a token), far more than a plan
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024

_USER_AGENT = "kaizen-async"
_MAX_ERROR_TEXT = 2000
#: how much of an HTTP error body is read for its message (the rest is not read)
_MAX_ERROR_BODY = 64 * 1024
_DRAIN_SECONDS = 0.25
_SSE_BREAK = re.compile(rb"\r\n|\r|\n")
#: content codings decoded here, with their zlib ``wbits``
_DECODABLE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: the most bytes one decompression step produces (so the most a body piece holds)
_DECODE_STEP = 64 * 1024
_T = TypeVar("_T")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying SSL context per process (building one costs ~100 ms per client)."""
    return httpx.create_ssl_context()


def error_text(value: Any) -> str:
    """A readable message from an ``error`` value (string, or an OpenAI-style dict)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        message = value.get("message")
        if isinstance(message, str) and message:
            return message
    return orjson.dumps(value).decode()


def body_error_text(body: bytes) -> tuple[str, bool]:
    """The error message in an HTTP error body, and whether it was a JSON error object."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return (text[:_MAX_ERROR_TEXT] or "(empty body)"), False
    if isinstance(parsed, dict):
        if "error" in parsed:
            return error_text(parsed["error"])[:_MAX_ERROR_TEXT], True
        for key in ("message", "detail"):
            if isinstance(parsed.get(key), str):
                return str(parsed[key])[:_MAX_ERROR_TEXT], True
    return text[:_MAX_ERROR_TEXT], False


class BodyReader:
    """The body of a response as it arrives, decoded here in pieces of at most 64 KiB.

    ``httpx`` would inflate each network read whole (its decoders have no output bound), so
    a compressed body could take any amount of memory before a caller counts its bytes.
    This reads the raw bytes and inflates gzip or deflate step by step with zlib's
    ``max_length``, so whoever counts the pieces (``max_response_bytes``) stops it within
    one step. A ``Content-Encoding`` other than identity, gzip or deflate (``br``, ``zstd``,
    several codings), or a body that does not inflate, is an :class:`LLMError` of kind
    ``"protocol"``.
    """

    def __init__(self, response: httpx.Response, provider: HTTPProvider) -> None:
        self._response = response
        self._raw = response.aiter_raw()
        self._provider = provider
        self._decoder: Any = None  # zlib's decompress object, once the coding is known
        self._coding = ""
        self._started = False
        self._done = False
        self._tail = b""  # input zlib has not consumed yet (its last step was full)
        self._full = False  # the last step filled its output: more may be pending
        self._inflated = False  # a step succeeded (the coding is settled)

    async def read(self) -> bytes | None:
        """The next piece of the body (at most 64 KiB once decoded), or None at its end."""
        if not self._started:
            self._start()
        while not self._done:
            decoder = self._decoder
            if not self._tail and not self._full:
                try:
                    data = await self._raw.__anext__()
                except StopAsyncIteration:
                    self._done = True
                    return None if decoder is None else (self._flush() or None)
                if decoder is None:
                    return data
                self._tail = data
            out = self._inflate(self._tail)
            if out:
                return out
        return None

    def _start(self) -> None:
        self._started = True
        codings = [
            c.strip().lower()
            for c in self._response.headers.get_list("content-encoding", split_commas=True)
        ]
        codings = [c for c in codings if c and c != "identity"]
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in _DECODABLE:
            provider = self._provider
            raise provider.error(
                f"{provider.label} at {provider.base_url} sent a body with Content-Encoding "
                f"{', '.join(codings)!r}, which this client does not decode (it asks for "
                "identity; gzip and deflate are decoded)",
                kind="protocol",
            )
        self._coding = codings[0]
        self._decoder = zlib.decompressobj(_DECODABLE[self._coding])

    def _inflate(self, data: bytes) -> bytes:
        """One bounded step: at most ``_DECODE_STEP`` bytes out, the rest kept for later."""
        try:
            out: bytes = self._decoder.decompress(data, _DECODE_STEP)
        except zlib.error as exc:
            if self._coding != "deflate" or self._inflated:
                raise self._undecodable(exc) from None
            # "deflate" sent raw, without its zlib header (as some servers do): retry so
            self._coding = "raw deflate"
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inflate(data)
        self._inflated = True
        self._full = len(out) == _DECODE_STEP
        self._tail = self._decoder.unconsumed_tail
        return out

    def _flush(self) -> bytes:
        try:
            rest: bytes = self._decoder.flush()
        except zlib.error as exc:
            raise self._undecodable(exc) from None
        return rest  # empty or short: every step before drained what zlib held

    def _undecodable(self, exc: zlib.error) -> LLMError:
        provider = self._provider
        return provider.error(
            f"{provider.label} at {provider.base_url} sent a {self._coding} body that does not "
            f"decode: {exc}",
            kind="protocol",
        )


class LineReader:
    """Lines of a streamed body, split on the raw bytes, each bounded by the deadline.

    ``sse=True`` also ends lines at a lone ``\\r`` (the SSE rule); otherwise lines end at
    ``\\n`` with a trailing ``\\r`` dropped. A last line without a newline is returned too.
    A body longer than the provider's ``max_response_bytes`` is an :class:`LLMError`
    (kind ``"too_large"``) as soon as the bytes past it arrive; since a line or an event is
    part of the body, that bounds them too (a line that never ends included).
    """

    def __init__(
        self,
        response: httpx.Response,
        provider: HTTPProvider,
        deadline: float | None,
        *,
        sse: bool = False,
    ) -> None:
        self._body = BodyReader(response, provider)
        self._provider = provider
        self._deadline = deadline
        self._sse = sse
        self._buffer = b""
        self._pending: list[bytes] = []
        self._lines: deque[bytes] = deque()
        self._eof = False
        self._received = 0
        self._limit = provider.max_response_bytes

    async def next_line(self) -> str | None:
        """The next line (without its ending), or None at the end of the body."""
        while not self._lines:
            if self._eof:
                return None
            data = await self._provider.within(self._deadline, self._body.read())
            if data is None:
                self._eof = True
                self._buffer += b"".join(self._pending)
                if self._buffer.endswith(b"\r"):
                    self._buffer = self._buffer[:-1]
                if self._buffer:
                    self._lines.append(self._buffer)
                self._buffer = b""
            else:
                self._received += len(data)
                if self._received > self._limit:
                    raise self._provider.too_large()
                self._split(data)
        return self._lines.popleft().decode("utf-8", errors="replace")

    async def drain(self) -> None:
        """Read what is left of the body (normally just the final 0-chunk), so the
        connection goes back to the pool instead of being closed; bounded, never raises."""
        with anyio.move_on_after(_DRAIN_SECONDS):
            try:
                while await self.next_line() is not None:
                    pass
            except (httpx.HTTPError, LLMError, OSError):
                pass

    def _split(self, data: bytes) -> None:
        if b"\n" not in data and not (self._sse and b"\r" in data):
            self._pending.append(data)  # no line end yet: keep it, join once it comes
            return
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
        buffer = self._buffer + data
        if self._sse:
            # a trailing \r may be the first half of \r\n: keep it for the next read
            keep_cr = buffer.endswith(b"\r")
            parts = _SSE_BREAK.split(buffer[:-1] if keep_cr else buffer)
            self._buffer = parts.pop() + (b"\r" if keep_cr else b"")
            self._lines.extend(parts)
        else:
            parts = buffer.split(b"\n")
            self._buffer = parts.pop()
            self._lines.extend(p[:-1] if p.endswith(b"\r") else p for p in parts)


class HTTPProvider(LLMProvider):
    """Shared HTTP machinery of the streaming providers (not used directly)."""

    #: how errors name the server ("Ollama", "the OpenAI-compatible server")
    label = "server"
    #: seconds a health check (``is_available``) may take
    probe_timeout = 2.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self._model!r}, base_url={self._base_url!r})"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        timeout: float | None,
        connect_timeout: float | None,
        total_timeout: float | None,
        client: httpx.AsyncClient | None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if (
            not isinstance(max_response_bytes, int)
            or isinstance(max_response_bytes, bool)
            or max_response_bytes < 1
        ):
            raise KaizenValidationError(
                f"max_response_bytes must be a positive int, got {max_response_bytes!r}"
            )
        #: the most bytes one response body may have (so also one line or event of it)
        self.max_response_bytes = max_response_bytes
        self._base_url = base_url.rstrip("/")
        self._model = model
        self._read_timeout = timeout
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = client
        self._owns_client = client is None
        # identity: model output is small, and a compressor holds streamed tokens back; a
        # server that compresses anyway is decoded with a bound (see BodyReader)
        self._headers = {
            "User-Agent": _USER_AGENT,
            "Accept-Encoding": "identity",
            **dict(headers or {}),
        }

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def base_url(self) -> str:
        return self._base_url

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=_ssl_context())
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it (a given client is left open)."""
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- plumbing ------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """The moment the current exchange must be over (None: no overall bound)."""
        if self._total_timeout is None:
            return None
        return anyio.current_time() + self._total_timeout

    async def within(self, deadline: float | None, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable``, or raise a timeout :class:`LLMError` at ``deadline``."""
        if deadline is None:
            return await awaitable
        with anyio.move_on_after(deadline - anyio.current_time()):
            return await awaitable
        raise self.error(
            f"{self.label} did not finish within the overall timeout of {self._total_timeout}s",
            kind="timeout",
        )

    def error(self, message: str, *, kind: str, status: int | None = None) -> LLMError:
        """An :class:`LLMError` of this provider; ``kind`` goes into ``details``."""
        details = {"kind": kind, "url": self._base_url, "model": self._model}
        return LLMError(message, provider=self.name, status=status, details=details)

    def too_large(self) -> LLMError:
        """The :class:`LLMError` for a body longer than ``max_response_bytes``."""
        error = self.error(
            f"{self.label} at {self._base_url} sent more than max_response_bytes="
            f"{self.max_response_bytes} bytes in one response; the rest was not read",
            kind="too_large",
        )
        error.details["max_response_bytes"] = self.max_response_bytes
        return error

    async def read_body(self, response: httpx.Response, *, error_body: bool = False) -> bytes:
        """The body of ``response``, read with a bound: past ``max_response_bytes`` it is a
        ``too_large`` :class:`LLMError`; an error body (``error_body``) is cut short instead,
        since only its message is wanted."""
        limit = _MAX_ERROR_BODY if error_body else self.max_response_bytes
        parts: list[bytes] = []
        size = 0
        body = BodyReader(response, self)
        try:
            while (data := await body.read()) is not None:
                size += len(data)
                if size > limit:
                    if not error_body:
                        raise self.too_large()
                    parts.append(data[: len(data) - (size - limit)])
                    break
                parts.append(data)
        except LLMError:  # a coding not decoded here: the status says what matters
            if not error_body:
                raise
        return b"".join(parts)

    def transport_error(self, exc: httpx.HTTPError | httpx.InvalidURL | OSError) -> LLMError:
        """The :class:`LLMError` for a failure below HTTP (connect, drop, timeout)."""
        where = self._base_url
        if isinstance(exc, httpx.ConnectTimeout):
            return self.error(
                f"Cannot connect to {self.label} at {where} (no answer within "
                f"{self._connect_timeout}s). Is {self.label} running?",
                kind="connect",
            )
        if isinstance(exc, httpx.ConnectError):
            return self.error(
                f"Cannot connect to {self.label} at {where}. Is {self.label} running? ({exc})",
                kind="connect",
            )
        if isinstance(exc, httpx.ReadTimeout):
            return self.error(
                f"{self.label} at {where} sent nothing for {self._read_timeout}s (read timeout)",
                kind="timeout",
            )
        if isinstance(exc, httpx.TimeoutException):
            return self.error(
                f"Timed out talking to {self.label} at {where}: {exc}", kind="timeout"
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.NetworkError | OSError):
            return self.error(
                f"The connection to {self.label} at {where} dropped before the response "
                f"was complete: {exc}",
                kind="dropped",
            )
        return self.error(f"HTTP request to {self.label} at {where} failed: {exc}", kind="http")

    def status_error(self, status: int, body: bytes) -> LLMError:
        """The :class:`LLMError` for an HTTP error status answered before streaming."""
        message, _ = body_error_text(body)
        return self.error(
            f"{self.label} at {self._base_url} answered HTTP {status}: {message}",
            kind="http_status",
            status=status,
        )

    @asynccontextmanager
    async def open_stream(
        self, path: str, body: dict[str, Any], deadline: float | None, *, accept: str
    ) -> AsyncIterator[httpx.Response]:
        """POST ``body`` and yield the streaming response; closing it aborts the request."""
        try:
            content = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:
            raise self.error(
                f"the request is not JSON-serializable: {exc}", kind="request"
            ) from None
        client = self._http()
        headers = {**self._headers, "Content-Type": "application/json", "Accept": accept}
        request = client.build_request(
            "POST",
            self._base_url + path,
            content=content,
            headers=headers,
            timeout=self._timeout,
        )
        response = await self.within(deadline, client.send(request, stream=True))
        try:
            if not response.is_success:
                raw = await self.within(deadline, self.read_body(response, error_body=True))
                raise self.status_error(response.status_code, raw)
            yield response
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def get_json(self, path: str, *, probe: bool = False) -> Any:
        """GET ``path`` and decode its JSON; :class:`LLMError` on any failure.

        ``probe``: a health check, bounded by :attr:`probe_timeout` instead of the usual
        timeouts.
        """
        client = self._http()
        request_timeout = httpx.Timeout(self.probe_timeout) if probe else self._timeout
        deadline = self.deadline()
        try:
            request = client.build_request(
                "GET", self._base_url + path, headers=self._headers, timeout=request_timeout
            )
            response = await self.within(deadline, client.send(request, stream=True))
            try:
                failed = response.status_code >= 400
                body = await self.within(deadline, self.read_body(response, error_body=failed))
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise self.transport_error(exc) from exc
        if failed:
            raise self.status_error(response.status_code, body)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            text = body[:200].decode("utf-8", errors="replace")
            raise self.error(
                f"{self.label} at {self._base_url} answered {path} with non-JSON: {text!r}",
                kind="protocol",
            ) from None

    def parse_json(self, line: str, what: str) -> dict[str, Any]:
        """One JSON object of the stream, or a protocol :class:`LLMError`."""
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise self.error(
                f"{self.label} sent a {what} that is not JSON ({exc}): {line[:200]!r}",
                kind="protocol",
            ) from None
        if not isinstance(value, dict):
            raise self.error(
                f"{self.label} sent a {what} that is not a JSON object: {line[:200]!r}",
                kind="protocol",
            )
        return value
