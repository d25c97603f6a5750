"""The provider interface every model backend implements.

``complete()`` returns one :class:`LLMResponse`; ``stream()`` yields :class:`LLMChunk`
values as text arrives, the last one with ``done=True`` and the final ``response``
(full text, ``done_reason``, usage and timing). Every failure is an :class:`LLMError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import LLMError

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["LLMChunk", "LLMError", "LLMProvider", "LLMResponse", "Message", "normalize_messages"]

#: a chat message: ``{"role": "system"|"user"|"assistant"|"tool", "content": str}``
Message = dict[str, Any]


class LLMResponse(BaseModel):
    """A finished exchange: the whole text and what the server said about it."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    provider: str
    done_reason: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)
    duration_ms: float | None = None

    @property
    def input_tokens(self) -> int | None:
        value = self.usage.get("input_tokens")
        return None if value is None else int(value)

    @property
    def output_tokens(self) -> int | None:
        value = self.usage.get("output_tokens")
        return None if value is None else int(value)

    @property
    def truncated(self) -> bool:
        """True when the model stopped at a length limit, not at its own end."""
        return self.done_reason == "length"


class LLMChunk(BaseModel):
    """One piece of a streamed reply; the last has ``done=True`` and the ``response``."""

    model_config = ConfigDict(frozen=True)

    text: str = ""
    done: bool = False
    response: LLMResponse | None = None


def normalize_messages(prompt: str | list[Message], system: str | None = None) -> list[Message]:
    """A prompt string or message list as a message list, ``system`` first when given."""
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    return messages


class LLMProvider(ABC):
    """Base of all providers. Subclasses implement :meth:`stream`; ``complete`` collects it.

    Every provider is an async context manager (``async with provider:`` closes it on exit),
    so one can stand in for another: a provider holding nothing closes as a no-op.
    """

    #: short provider name used in errors and records ("ollama", "openai_compat", ...)
    name: str = "llm"

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    async def aclose(self) -> None:
        """Release what the provider holds (an HTTP client, say); by default nothing."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stream(
        self,
        prompt: str | list[Message],
        *,
        system: str | None = None,
        format: dict[str, Any] | str | None = None,
        options: dict[str, Any] | None = None,
        session: Session | None = None,
        **more_options: Any,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply; records an ``llm_exchange`` entry in ``session`` when given.

        The last chunk has ``done=True`` and the :class:`LLMResponse`.
        """
        from ._replay import recorded  # the recorder builds on these types

        request = {
            "messages": normalize_messages(prompt, system),
            "format": format,
            "options": {**(options or {}), **more_options},
        }
        return recorded(self, self._exchange(request), session=session, request=request)

    def _exchange(self, request: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        """The reply to ``request`` (``messages``, ``format``, ``options``) as chunks.

        What a provider implements (or it overrides :meth:`stream` as a whole).
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither _exchange nor stream")

    async def complete(
        self,
        prompt: str | list[Message],
        *,
        system: str | None = None,
        format: dict[str, Any] | str | None = None,
        options: dict[str, Any] | None = None,
        session: Session | None = None,
        **more_options: Any,
    ) -> LLMResponse:
        """The whole reply at once (the stream, collected).

        Options go in ``options`` or as keywords (``temperature=0``, ``seed=7``, ...).
        """
        merged = {**(options or {}), **more_options}
        chunks = self.stream(prompt, system=system, format=format, options=merged, session=session)
        async with aclosing(chunks) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                if chunk.done and chunk.response is not None:
                    return chunk.response
        raise LLMError("stream ended without a final response", provider=self.name)
