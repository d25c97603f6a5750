"""``OpenAICompatProvider``: ``/v1/chat/completions`` with ``stream: true`` (SSE).

One parser serves Ollama's OpenAI layer, llama.cpp's ``llama-server`` and vLLM: events are
blank-line separated, ``:`` comments and fields other than ``data`` are ignored, multi-line
``data`` is joined with ``\\n``, ``[DONE]`` ends the stream, and every payload is checked for
an error (top-level ``error``, a dict or a string, or ``object == "error"``). A stream that
ends with neither a ``finish_reason`` nor ``[DONE]`` was cut off and is an :class:`LLMError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._exceptions import LLMError
from ._base import LLMChunk, LLMResponse, Message
from ._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPProvider,
    LineReader,
    body_error_text,
    error_text,
)

if TYPE_CHECKING:
    pass

__all__ = ["OpenAICompatProvider"]

#: request fields the provider sets itself; options may not override them
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "response_format"})


class OpenAICompatProvider(HTTPProvider):
    """A model behind an OpenAI-compatible chat completions endpoint, streamed over SSE.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080`` (a trailing ``/v1`` is fine).
        model: the model name sent in requests.
        api_key: sent as ``Authorization: Bearer <api_key>`` when given.
        timeout: the longest silence (s) between bytes.
        endpoint: the path of the chat completions endpoint.
        max_tokens: default ``max_tokens`` when the call's options set none.
        connect_timeout: the longest wait (s) for the TCP connection.
        total_timeout: an optional bound (s) on a whole exchange.
        client: an ``httpx.AsyncClient`` to use (left open); by default the provider owns one.
        max_response_bytes: the most bytes one response body may have (so also one line or
            event of it); past it the call fails with an :class:`LLMError` of kind
            ``"too_large"`` and the connection is closed. Default 4 MiB.
    """

    name = "openai_compat"
    label = "the OpenAI-compatible server"

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        *,
        timeout: float | None = 300.0,
        endpoint: str = "/v1/chat/completions",
        max_tokens: int | None = None,
        connect_timeout: float | None = 5.0,
        total_timeout: float | None = None,
        client: httpx.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if "://" not in base:
            base = "http://" + base
        if base.endswith("/v1") and endpoint.startswith("/v1/"):
            base = base[: -len("/v1")]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(
            base_url=base,
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            total_timeout=total_timeout,
            client=client,
            max_response_bytes=max_response_bytes,
            headers=headers,
        )
        self._endpoint = endpoint if endpoint.startswith("/") else "/" + endpoint
        self._max_tokens = max_tokens

    # -- requests ------------------------------------------------------------------------

    def request_body(
        self,
        messages: list[Message],
        format: dict[str, Any] | str | None,
        options: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The JSON body of the chat completions request for this call."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if format == "json":
            body["response_format"] = {"type": "json_object"}
        elif isinstance(format, dict):
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "plan", "schema": format},
            }
        elif format is not None:
            raise self.error(
                f'format must be "json" or a JSON-schema dict, not {format!r}', kind="request"
            )
        opts = dict(options or {})
        if "num_predict" in opts:  # Ollama's name for it
            num_predict = opts.pop("num_predict")
            opts.setdefault("max_tokens", num_predict)
        if self._max_tokens is not None:
            opts.setdefault("max_tokens", self._max_tokens)
        clash = sorted(_RESERVED.intersection(opts))
        if clash:
            raise self.error(f"options may not set {', '.join(clash)}", kind="request")
        body.update(opts)
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
        state = _StreamState()
        try:
            async with self.open_stream(
                self._endpoint, body, deadline, accept="text/event-stream"
            ) as response:
                reader = LineReader(response, self, deadline, sse=True)
                data: list[str] = []
                while not state.done_marker:
                    line = await reader.next_line()
                    if line is None:
                        break  # an event not closed by a blank line is dropped (SSE rule)
                    if line:
                        if not line.startswith(":"):
                            field, _, value = line.partition(":")
                            if field == "data":
                                data.append(value[1:] if value.startswith(" ") else value)
                        continue
                    if not data:
                        continue
                    payload, data = "\n".join(data), []
                    text = self._event(payload, state)
                    if text:
                        yield LLMChunk(text=text)
                if state.done_marker:
                    await reader.drain()
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise self.transport_error(exc) from exc
        if not state.done_marker and state.finish_reason is None:
            raise self.error(
                f"{self.label}'s stream ended without a finish_reason or [DONE] "
                f"(truncated after {len(state.text())} characters)",
                kind="truncated",
            )
        final = LLMResponse(
            text=state.text(),
            model=state.model or self._model,
            provider=self.name,
            done_reason=state.finish_reason,
            usage=state.usage,
            duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )
        yield LLMChunk(done=True, response=final)

    def _event(self, payload: str, state: _StreamState) -> str:
        """Apply one ``data`` payload to ``state``; returns its content text."""
        if payload.strip() == "[DONE]":
            state.done_marker = True
            return ""
        obj = self.parse_json(payload, "stream event")
        if obj.get("error") is not None or obj.get("object") == "error":
            raw = obj.get("error", obj)
            code = raw.get("code") if isinstance(raw, dict) else None
            raise LLMError(
                f"{self.label} reported an error mid-stream: {error_text(raw)}",
                provider=self.name,
                details={"kind": "stream_error", "url": self._base_url, "code": code},
            )
        if isinstance(obj.get("model"), str):
            state.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            state.usage = _usage(usage, obj.get("timings"))
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            state.finish_reason = reason
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise self.error(f"delta.content is not a string: {payload[:200]!r}", kind="protocol")
        state.parts.append(content)
        return content

    def status_error(self, status: int, body: bytes) -> LLMError:
        message, _ = body_error_text(body)
        hint = ""
        if status == 404:
            hint = f" (is model '{self._model}' served there, and is {self._endpoint} right?)"
        elif status in (401, 403):
            hint = " (check api_key)"
        return self.error(
            f"{self.label} at {self._base_url} answered HTTP {status}: {message}{hint}",
            kind="model_not_found" if status == 404 else "http_status",
            status=status,
        )

    # -- other endpoints -----------------------------------------------------------------

    async def is_available(self) -> bool:
        """Whether the server answers ``GET /v1/models`` (never raises)."""
        try:
            await self.get_json("/v1/models", probe=True)
        except Exception:  # any failure means "not available"
            return False
        return True

    async def list_models(self) -> list[str]:
        """The model ids the server lists (``GET /v1/models``)."""
        data = await self.get_json("/v1/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self.error(f"unexpected /v1/models answer: {str(data)[:200]}", kind="protocol")
        return [str(m.get("id")) for m in items if isinstance(m, dict)]


class _StreamState:
    """What the events of one stream have said so far."""

    __slots__ = ("done_marker", "finish_reason", "model", "parts", "usage")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.model: str | None = None
        self.done_marker = False

    def text(self) -> str:
        return "".join(self.parts)


def _usage(usage: dict[str, Any], timings: Any) -> dict[str, Any]:
    """OpenAI usage in this library's keys (the original keys are kept too)."""
    result: dict[str, Any] = dict(usage)
    for source, target in (
        ("prompt_tokens", "input_tokens"),
        ("completion_tokens", "output_tokens"),
    ):
        if isinstance(usage.get(source), int):
            result[target] = usage[source]
    if isinstance(timings, dict):
        result["timings"] = timings
    return result
