"""``OllamaProvider``: Ollama's native ``POST /api/chat`` with NDJSON streaming."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from .._exceptions import LLMError
from ._base import LLMChunk, LLMResponse, Message

if TYPE_CHECKING:
    pass

from ._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPProvider,
    LineReader,
    body_error_text,
    error_text,
)

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaProvider", "resolve_ollama_url"]

DEFAULT_OLLAMA_URL = "http://localhost:11434"
_OLLAMA_PORT = 11434


def resolve_ollama_url(base_url: str | None = None) -> str:
    """``base_url``, else env ``OLLAMA_HOST``, else the default; ``http://`` and port 11434
    are added when the value has no scheme (``OLLAMA_HOST=0.0.0.0`` is common)."""
    raw = (base_url if base_url is not None else os.environ.get("OLLAMA_HOST", "")).strip()
    if not raw:
        return DEFAULT_OLLAMA_URL
    if "://" not in raw:
        url = httpx.URL("http://" + raw)
        if url.port is None:
            url = url.copy_with(port=_OLLAMA_PORT)
        raw = str(url)
    return raw.rstrip("/")


class OllamaProvider(HTTPProvider):
    """A model served by Ollama, streamed over the native ``/api/chat`` NDJSON API.

    Args:
        model: the model tag (``ollama pull <model>`` must have fetched it).
        base_url: the server; defaults to env ``OLLAMA_HOST``, else ``http://localhost:11434``.
        timeout: the longest silence (s) between bytes; the first byte comes only after model
            load and prompt evaluation, so keep it generous.
        connect_timeout: the longest wait (s) for the TCP connection.
        total_timeout: an optional bound (s) on a whole exchange.
        keep_alive: how long Ollama keeps the model loaded after the call (None: its default).
        think: ``False`` (sent explicitly: no thinking phase, lower latency), ``True`` or a
            level (``"low"|"medium"|"high"``).
        client: an ``httpx.AsyncClient`` to use (left open); by default the provider owns one,
            closed by :meth:`aclose` or ``async with``.
        max_response_bytes: the most bytes one response body may have (so also one line or
            event of it); past it the call fails with an :class:`LLMError` of kind
            ``"too_large"`` and the connection is closed. Default 4 MiB.
    """

    name = "ollama"
    label = "Ollama"

    def __init__(
        self,
        model: str = "llama3.1:8b",
        base_url: str | None = None,
        *,
        timeout: float | None = 300.0,
        connect_timeout: float | None = 5.0,
        total_timeout: float | None = None,
        keep_alive: str | float | None = "10m",
        think: bool | str = False,
        client: httpx.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            base_url=resolve_ollama_url(base_url),
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            total_timeout=total_timeout,
            client=client,
            max_response_bytes=max_response_bytes,
        )
        self._keep_alive = keep_alive
        self._think = think

    # -- requests ------------------------------------------------------------------------

    def request_body(
        self,
        messages: list[Message],
        format: dict[str, Any] | str | None,
        options: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON body of ``POST /api/chat`` for this call."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "stream": True,
            "think": self._think,
        }
        if self._keep_alive is not None:
            body["keep_alive"] = self._keep_alive
        if format is not None:
            if not (format == "json" or isinstance(format, dict)):
                raise self.error(
                    f'format must be "json" or a JSON-schema dict, not {format!r}',
                    kind="request",
                )
            body["format"] = format
        opts = dict(options or {})
        if "max_tokens" in opts:
            max_tokens = opts.pop("max_tokens")
            opts.setdefault("num_predict", max_tokens)
        if opts:
            body["options"] = opts
        return body

    def _exchange(self, request: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        return self._chat(request["messages"], request["format"], request["options"])

    async def _chat(
        self,
        messages: list[Message],
        format: dict[str, Any] | str | None,
        options: Mapping[str, Any] | None,
    ) -> AsyncGenerator[LLMChunk, None]:
        started = time.perf_counter()
        body = self.request_body(messages, format, options)
        deadline = self.deadline()
        parts: list[str] = []
        final: dict[str, Any] | None = None
        try:
            async with self.open_stream(
                "/api/chat", body, deadline, accept="application/x-ndjson"
            ) as response:
                reader = LineReader(response, self, deadline)
                while final is None:
                    line = await reader.next_line()
                    if line is None:
                        break
                    if not line.strip():
                        continue
                    obj = self.parse_json(line, "stream line")
                    if obj.get("error") is not None:
                        raise self.error(
                            f"Ollama reported an error mid-stream: {error_text(obj['error'])}",
                            kind="stream_error",
                        )
                    content = _content_of(obj)
                    if content is None:
                        raise self.error(
                            f"Ollama sent a line without a valid message: {line[:200]!r}",
                            kind="protocol",
                        )
                    if obj.get("done") is True:
                        final = obj
                    if content:
                        parts.append(content)
                        yield LLMChunk(text=content)
                if final is not None:
                    await reader.drain()
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise self.transport_error(exc) from exc
        if final is None:
            raise self.error(
                "Ollama's stream ended without its final done:true line "
                f"(truncated after {sum(map(len, parts))} characters)",
                kind="truncated",
            )
        yield LLMChunk(done=True, response=self._response(final, "".join(parts), started))

    def _response(self, final: dict[str, Any], text: str, started: float) -> LLMResponse:
        usage: dict[str, Any] = {}
        for source, target in _USAGE_FIELDS:
            value = final.get(source)
            if isinstance(value, int | float) and not isinstance(value, bool):
                usage[target] = value
        if "input_tokens" in usage and "output_tokens" in usage:
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        model = final.get("model")
        reason = final.get("done_reason")
        return LLMResponse(
            text=text,
            model=model if isinstance(model, str) and model else self._model,
            provider=self.name,
            done_reason=reason if isinstance(reason, str) else None,
            usage=usage,
            duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )

    def status_error(self, status: int, body: bytes) -> LLMError:
        message, is_json = body_error_text(body)
        if status == 404 and is_json:
            return self.error(
                f"Model '{self._model}' is not available on Ollama at {self._base_url}: "
                f"{message}. Run `ollama pull {self._model}` and try again.",
                kind="model_not_found",
                status=status,
            )
        hint = " (is this an Ollama server?)" if status == 404 else ""
        return self.error(
            f"Ollama at {self._base_url} answered HTTP {status}: {message}{hint}",
            kind="http_status",
            status=status,
        )

    # -- other endpoints -----------------------------------------------------------------

    async def is_available(self) -> bool:
        """Whether an Ollama server answers ``GET /api/version`` (never raises)."""
        try:
            with anyio.fail_after(self.probe_timeout + 1.0):
                await self.get_json("/api/version", probe=True)
        except Exception:  # any failure means "not available"
            return False
        return True

    async def list_models(self) -> list[str]:
        """The names of the models Ollama has locally (``GET /api/tags``)."""
        data = await self.get_json("/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise self.error(f"unexpected /api/tags answer: {str(data)[:200]}", kind="protocol")
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]


#: final-line metrics of Ollama (durations in nanoseconds) -> usage keys
_USAGE_FIELDS = (
    ("prompt_eval_count", "input_tokens"),
    ("eval_count", "output_tokens"),
    ("total_duration", "total_duration_ns"),
    ("load_duration", "load_duration_ns"),
    ("prompt_eval_duration", "prompt_eval_duration_ns"),
    ("eval_duration", "eval_duration_ns"),
)


def _content_of(obj: dict[str, Any]) -> str | None:
    """``message.content`` of a chat line ("" when absent); None if the shape is wrong."""
    message = obj.get("message")
    if message is None:
        return ""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if content is None:
        return ""
    return content if isinstance(content, str) else None
