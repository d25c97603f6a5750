"""``ScriptedProvider``: a deterministic model for tests and demos.

Each call takes the next scripted response and streams it in ``chunk_size`` pieces. A
scripted :class:`LLMError` is raised instead, to exercise failure paths. What each call asked
for is kept in :attr:`ScriptedProvider.requests`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._exceptions import KaizenValidationError, LLMError
from ._base import LLMChunk, LLMProvider, LLMResponse

if TYPE_CHECKING:
    pass

__all__ = ["ScriptedProvider"]


class ScriptedProvider(LLMProvider):
    """Replies with scripted texts, one per call, in order.

    Args:
        responses: the replies (a single string means one reply); an :class:`LLMError`
            item is raised by the call that takes it.
        chunk_size: characters per streamed chunk.
        delay_per_chunk: seconds slept between chunks (simulates token latency).
        model: the model name reported in responses.
        done_reason: the ``done_reason`` of every successful response.
    """

    name = "scripted"

    def __init__(
        self,
        responses: Sequence[str | LLMError] | str,
        *,
        chunk_size: int = 8,
        delay_per_chunk: float = 0.0,
        model: str = "scripted",
        done_reason: str = "stop",
    ) -> None:
        if chunk_size < 1:
            raise KaizenValidationError("chunk_size must be >= 1")
        items = [responses] if isinstance(responses, str) else list(responses)
        self._responses: deque[str | LLMError] = deque(items)
        self._chunk_size = chunk_size
        self._delay = delay_per_chunk
        self._model = model
        self._done_reason = done_reason
        #: every request received, oldest first: ``{"model", "messages", "format", "options"}``
        self.requests: list[dict[str, Any]] = []

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def remaining(self) -> int:
        """Scripted responses not taken yet."""
        return len(self._responses)

    def _exchange(self, request: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        """Take the next scripted response (when ``stream()`` is called) and play it."""
        self.requests.append({"model": self._model, **request})
        reply = self._responses.popleft() if self._responses else None
        return self._play(reply)

    async def _play(self, reply: str | LLMError | None) -> AsyncGenerator[LLMChunk, None]:
        started = time.perf_counter()
        if reply is None:
            raise LLMError(
                f"no scripted response left (call #{len(self.requests)})", provider=self.name
            )
        if isinstance(reply, LLMError):
            raise reply
        size = self._chunk_size
        for start in range(0, len(reply), size):
            if start and self._delay > 0:
                await anyio.sleep(self._delay)
            else:
                await anyio.lowlevel.checkpoint()
            yield LLMChunk(text=reply[start : start + size])
        response = LLMResponse(
            text=reply,
            model=self._model,
            provider=self.name,
            done_reason=self._done_reason,
            duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )
        yield LLMChunk(done=True, response=response)
