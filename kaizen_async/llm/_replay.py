"""Recording LLM exchanges into a session, and answering them again without the model.

Every provider routes its stream through :func:`recorded`: when a ``session`` is given, one
``llm_exchange`` entry (agent ``"llm"``) is appended per exchange, also when it fails or the
consumer stops early, so the trajectory is a complete audit of what was asked and answered.
A successful exchange is recorded *before* its final chunk is handed out, so the entry is in
the session by the time ``complete()`` returns.

:class:`ReplayProvider` answers requests from those entries: a request (messages, format,
options, compared canonically) gets the next unused recorded exchange with the same request;
anything else is an :class:`LLMError`, never a silently wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._canonical import decode, encode
from .._exceptions import KaizenValidationError, LLMError
from .._trajectory import EntryType, TrajectoryEntry
from ._base import LLMChunk, LLMProvider, LLMResponse

if TYPE_CHECKING:
    from .._session import Session

__all__ = ["RECORD_AGENT_ID", "ReplayProvider", "recorded", "request_key"]

#: agent id of recorded ``llm_exchange`` entries
RECORD_AGENT_ID = "llm"
#: longest time spent closing the model stream and writing the record after a failure
_CLEANUP_SECONDS = 10.0


def request_key(request: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a request (sorted keys), so equal requests compare equal."""
    try:
        return encode(
            {
                "messages": request.get("messages"),
                "format": request.get("format"),
                "options": dict(request.get("options") or {}),
            },
            "llm request",
        )
    except KaizenValidationError as exc:
        raise LLMError(str(exc), provider="replay") from None


def recorded(
    provider: LLMProvider,
    chunks: AsyncIterator[LLMChunk],
    *,
    session: Session | None,
    request: dict[str, Any],
) -> AsyncIterator[LLMChunk]:
    """``chunks`` unchanged without a session; with one, also record the exchange."""
    if session is None:
        return chunks
    return _recording(provider, chunks, session, request)


async def _recording(
    provider: LLMProvider,
    chunks: AsyncIterator[LLMChunk],
    session: Session,
    request: dict[str, Any],
) -> AsyncGenerator[LLMChunk, None]:
    started = time.perf_counter()
    parts: list[str] = []
    done = False
    try:
        async for chunk in chunks:
            if chunk.text:
                parts.append(chunk.text)
            if chunk.done and not done:
                done = True
                content = _entry(provider, request, parts, started, response=chunk.response)
                await session.append(RECORD_AGENT_ID, EntryType.LLM_EXCHANGE, content)
            yield chunk
    except BaseException as exc:
        if not done:  # failed, cancelled or abandoned: record it all the same
            with anyio.move_on_after(_CLEANUP_SECONDS, shield=True):
                await _aclose(chunks)
                content = _entry(provider, request, parts, started, failure=exc)
                try:
                    await session.append(RECORD_AGENT_ID, EntryType.LLM_EXCHANGE, content)
                except Exception as record_exc:  # never hide the original failure
                    exc.add_note(f"recording the llm_exchange failed: {record_exc!r}")
        raise
    finally:
        with anyio.move_on_after(_CLEANUP_SECONDS, shield=True):
            await _aclose(chunks)


def _entry(
    provider: LLMProvider,
    request: dict[str, Any],
    parts: list[str],
    started: float,
    *,
    response: LLMResponse | None = None,
    failure: BaseException | None = None,
) -> dict[str, Any]:
    """The ``llm_exchange`` entry content for one finished (or failed) exchange."""
    measured = round((time.perf_counter() - started) * 1000.0, 3)
    error: str | None = None
    status: int | None = None
    aborted = False
    if failure is not None:
        if isinstance(failure, LLMError):
            error, status = failure.message, failure.status
        elif isinstance(failure, GeneratorExit):
            error, aborted = "stream closed by the consumer before it finished", True
        elif isinstance(failure, anyio.get_cancelled_exc_class()):
            error, aborted = "cancelled before the stream finished", True
        else:
            error = f"{type(failure).__name__}: {failure}"
    return {
        "provider": provider.name,
        "model": response.model if response is not None else provider.model_name,
        "request": request,
        "response": response.text if response is not None else "".join(parts),
        "done_reason": response.done_reason if response is not None else None,
        "usage": dict(response.usage) if response is not None else {},
        "duration_ms": (
            response.duration_ms
            if response is not None and response.duration_ms is not None
            else measured
        ),
        "error": error,
        "status": status,
        "aborted": aborted,
    }


async def _aclose(chunks: AsyncIterator[LLMChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class ReplayProvider(LLMProvider):
    """Answers requests from recorded ``llm_exchange`` entries, without a model.

    Args:
        exchanges: entry contents (dicts) or :class:`TrajectoryEntry` values, oldest first.
        chunk_size: characters per streamed chunk.
        model: the name :attr:`model_name` reports (default: the first recorded model).
    """

    name = "replay"

    def __init__(
        self,
        exchanges: Iterable[Mapping[str, Any] | TrajectoryEntry],
        *,
        chunk_size: int = 16,
        model: str | None = None,
    ) -> None:
        if chunk_size < 1:
            raise KaizenValidationError("chunk_size must be >= 1")
        self._exchanges: list[dict[str, Any]] = []
        for item in exchanges:
            content = item.content if isinstance(item, TrajectoryEntry) else item
            if not isinstance(content, Mapping) or "request" not in content:
                raise KaizenValidationError(f"not an llm_exchange record: {content!r:.200}")
            self._exchanges.append(decode(encode(dict(content), "llm_exchange record")))
        self._keys = [request_key(e["request"]) for e in self._exchanges]
        self._used = [False] * len(self._exchanges)
        self._chunk_size = chunk_size
        first = self._exchanges[0].get("model") if self._exchanges else None
        self._model = model if model is not None else str(first or "replay")

    @classmethod
    async def from_session(cls, session: Session, *, chunk_size: int = 16) -> ReplayProvider:
        """A replay of every ``llm_exchange`` entry recorded in ``session``."""
        entries = await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE])
        return cls(entries, chunk_size=chunk_size)

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def remaining(self) -> int:
        """How many recorded exchanges have not been replayed yet."""
        return self._used.count(False)

    def _exchange(self, request: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        """The recorded reply to this exact request; :class:`LLMError` if there is none."""
        return self._replay(request)

    def _take(self, request: dict[str, Any]) -> dict[str, Any]:
        key = request_key(request)
        for index, recorded_key in enumerate(self._keys):
            if not self._used[index] and recorded_key == key:
                self._used[index] = True
                return self._exchanges[index]
        same = sum(1 for k in self._keys if k == key)
        hint = (
            f"all {same} recorded exchange(s) with this request were already replayed"
            if same
            else "no recorded exchange has these messages, format and options"
        )
        last = request["messages"][-1].get("content") if request["messages"] else None
        raise LLMError(
            f"replay has no answer for this request ({hint}; "
            f"{len(self._keys)} recorded, {self.remaining} unused); "
            f"last message: {str(last)[:120]!r}",
            provider="replay",
            details={"request": request},
        )

    async def _replay(self, request: dict[str, Any]) -> AsyncGenerator[LLMChunk, None]:
        exchange = self._take(request)
        text = str(exchange.get("response") or "")
        size = self._chunk_size
        for start in range(0, len(text), size):
            yield LLMChunk(text=text[start : start + size])
            await anyio.lowlevel.checkpoint()
        provider = str(exchange.get("provider") or "replay")
        if exchange.get("error") is not None:
            if exchange.get("aborted"):
                raise LLMError(
                    f"the recorded exchange was abandoned here: {exchange['error']}",
                    provider="replay",
                    details={"aborted": True},
                )
            raise LLMError(str(exchange["error"]), provider=provider, status=exchange.get("status"))
        response = LLMResponse(
            text=text,
            model=str(exchange.get("model") or self._model),
            provider=provider,
            done_reason=exchange.get("done_reason"),
            usage=dict(exchange.get("usage") or {}),
            duration_ms=exchange.get("duration_ms"),
        )
        yield LLMChunk(done=True, response=response)
