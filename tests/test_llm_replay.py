"""Recording llm_exchange entries into a real Session, ScriptedProvider, ReplayProvider."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from kaizen_async import EntryType, Session
from kaizen_async.llm import (
    LLMError,
    LLMProvider,
    LLMResponse,
    OllamaProvider,
    OpenAICompatProvider,
    ReplayProvider,
    ScriptedProvider,
)
from kaizen_async.llm._base import LLMChunk
from kaizen_async.testing import ErrorReply, OllamaReply, OpenAIReply, Reply, StandInLLMServer

pytestmark = pytest.mark.anyio

SCHEMA = {"type": "object", "properties": {"steps": {"type": "array"}}}


@asynccontextmanager
async def recording(
    replies: Sequence[Reply], *, openai: bool = False, model: str = "m"
) -> AsyncIterator[tuple[StandInLLMServer, Session, LLMProvider]]:
    """A stand-in server, a fresh session, and a provider pointed at the server."""
    async with StandInLLMServer(replies) as server, Session() as session:
        provider: OllamaProvider | OpenAICompatProvider
        if openai:
            provider = OpenAICompatProvider(server.url, model)
        else:
            provider = OllamaProvider(model, server.url)
        async with provider:
            yield server, session, provider


async def consume(stream: AsyncIterator[LLMChunk], seen: list[str]) -> None:
    """Iterate ``stream`` to its end (or error), noting each text in ``seen``."""
    async for chunk in stream:
        seen.append(chunk.text)


async def exchanges(session: Session) -> list[dict[str, Any]]:
    entries = await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE])
    assert all(e.agent_id == "llm" for e in entries)
    return [e.content for e in entries]


# -- recording --------------------------------------------------------------------------------


async def test_complete_records_one_exchange_before_returning() -> None:
    metrics = {"prompt_eval_count": 12, "eval_count": 3}
    reply = OllamaReply(["Hel", "lo"], metrics=metrics)
    async with recording([reply]) as (_, session, provider):
        response = await provider.complete(
            "hi", system="sys", format=SCHEMA, options={"temperature": 0}, session=session
        )
        (record,) = await exchanges(session)
    duration = record.pop("duration_ms")
    assert duration == response.duration_ms
    assert record == {
        "provider": "ollama",
        "model": "m",
        "request": {
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "format": SCHEMA,
            "options": {"temperature": 0},
        },
        "response": "Hello",
        "done_reason": "stop",
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        "error": None,
        "status": None,
        "aborted": False,
    }


async def test_no_session_records_nothing_and_streams_the_same() -> None:
    async with Session() as session:
        provider = ScriptedProvider(["abc"], chunk_size=1)
        chunks = [c.text async for c in provider.stream("x")]
        assert chunks == ["a", "b", "c", ""]
        assert await exchanges(session) == []


async def test_stream_records_once_even_if_the_final_chunk_is_not_consumed() -> None:
    async with Session() as session:
        provider = ScriptedProvider(["abcdef"], chunk_size=2)
        async with aclosing(provider.stream("x", session=session)) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                if chunk.done:
                    break
        await anyio.sleep(0.01)
        records = await exchanges(session)
    assert len(records) == 1
    assert records[0]["response"] == "abcdef"
    assert records[0]["error"] is None


@pytest.mark.parametrize(
    ("reply", "status", "partial"),
    [
        (OllamaReply(["par", "tial"], error="model crashed"), None, "partial"),
        (ErrorReply(404, {"error": "model 'm' not found"}), 404, ""),
        (OllamaReply(["cut"], drop=True), None, "cut"),
    ],
)
async def test_failed_exchange_is_recorded_with_its_error(
    reply: Any, status: int | None, partial: str
) -> None:
    async with recording([reply]) as (_, session, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("hi", session=session)
        (record,) = await exchanges(session)
    assert record["error"] == info.value.message
    assert record["status"] == status
    assert record["response"] == partial
    assert record["done_reason"] is None
    assert record["aborted"] is False
    assert record["duration_ms"] >= 0


async def test_abandoned_and_cancelled_streams_are_recorded_as_aborted() -> None:
    reply = OllamaReply([f"t{i}" for i in range(40)], delay=0.05)
    async with recording([reply, reply]) as (_, session, provider):
        async with aclosing(provider.stream("a", session=session)) as stream:  # type: ignore[type-var]
            async for _ in stream:
                break
        with anyio.move_on_after(0.2):
            async for _ in provider.stream("b", session=session):
                pass
        closed, cancelled = await exchanges(session)
    assert closed["aborted"]
    assert cancelled["aborted"]
    assert closed["response"] == "t0"
    assert "closed by the consumer" in closed["error"]
    assert "cancelled" in cancelled["error"]
    assert cancelled["response"].startswith("t0t1")
    assert cancelled["request"]["messages"] == [{"role": "user", "content": "b"}]


async def test_openai_exchanges_are_recorded_too() -> None:
    reply = OpenAIReply(["o", "k"])
    async with recording([reply], openai=True, model="gm") as (_, session, provider):
        await provider.complete("x", format="json", session=session)
        (record,) = await exchanges(session)
    assert record["provider"] == "openai_compat"
    assert (record["model"], record["response"]) == ("gm", "ok")
    assert record["request"]["format"] == "json"
    assert record["usage"]["output_tokens"] == 2


# -- ScriptedProvider -------------------------------------------------------------------------


async def test_scripted_chunks_requests_and_exhaustion() -> None:
    provider = ScriptedProvider(["hello world", "second"], chunk_size=4, model="fake")
    chunks = [c async for c in provider.stream("q1", system="s", options={"seed": 1})]
    assert [c.text for c in chunks] == ["hell", "o wo", "rld", ""]
    assert chunks[-1].response == LLMResponse(
        text="hello world",
        model="fake",
        provider="scripted",
        done_reason="stop",
        duration_ms=chunks[-1].response.duration_ms if chunks[-1].response else None,
    )
    assert (await provider.complete("q2", format="json")).text == "second"
    assert provider.remaining == 0
    with pytest.raises(LLMError, match="no scripted response left") as info:
        await provider.complete("q3")
    assert info.value.provider == "scripted"
    assert provider.requests == [
        {
            "model": "fake",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}],
            "format": None,
            "options": {"seed": 1},
        },
        {
            "model": "fake",
            "messages": [{"role": "user", "content": "q2"}],
            "format": "json",
            "options": {},
        },
        {
            "model": "fake",
            "messages": [{"role": "user", "content": "q3"}],
            "format": None,
            "options": {},
        },
    ]


async def test_scripted_single_string_error_item_delay_and_done_reason() -> None:
    failure = LLMError("scripted failure", provider="scripted", status=503)
    provider = ScriptedProvider(
        ["abcdef", failure], chunk_size=2, delay_per_chunk=0.05, done_reason="length"
    )
    started = time.perf_counter()
    response = await provider.complete("x")
    assert time.perf_counter() - started >= 0.09  # two sleeps between three chunks
    assert response.truncated
    with pytest.raises(LLMError) as info:
        await provider.complete("y")
    assert info.value is failure
    single = ScriptedProvider("only")
    assert (await single.complete("z")).text == "only"
    with pytest.raises(ValueError, match="chunk_size"):
        ScriptedProvider("x", chunk_size=0)


# -- ReplayProvider ---------------------------------------------------------------------------


async def record_session(session: Session) -> list[LLMResponse]:
    """Two Ollama exchanges (the same request twice) and a different one, recorded."""
    replies = [
        OllamaReply(['{"steps": []}'], metrics={"prompt_eval_count": 5, "eval_count": 2}),
        OllamaReply(["second answer"], done_reason="length"),
        OllamaReply(["other"]),
    ]
    async with StandInLLMServer(replies) as server, OllamaProvider("m", server.url) as provider:
        opts = {"temperature": 0, "seed": 3}
        return [
            await provider.complete("plan", format=SCHEMA, options=opts, session=session),
            await provider.complete("plan", format=SCHEMA, options=opts, session=session),
            await provider.complete("something else", session=session),
        ]


async def test_replay_answers_identically_in_recorded_order() -> None:
    async with Session() as session:
        originals = await record_session(session)
        replay = await ReplayProvider.from_session(session)
    assert replay.model_name == "m"
    same = {"seed": 3, "temperature": 0}  # key order differs: compared canonically
    other = await replay.complete([{"role": "user", "content": "something else"}])
    first = await replay.complete("plan", format=SCHEMA, options=same)
    second = await replay.complete("plan", format=SCHEMA, options=same)
    assert [first, second, other] == originals
    assert second.truncated
    assert replay.remaining == 0
    with pytest.raises(LLMError) as info:
        await replay.complete("plan", format=SCHEMA, options=same)
    assert info.value.provider == "replay"
    assert "already replayed" in info.value.message


async def test_replay_streams_text_in_chunks() -> None:
    record = {
        "provider": "ollama",
        "model": "m",
        "request": {"messages": [{"role": "user", "content": "x"}], "format": None, "options": {}},
        "response": "abcdefghij",
        "done_reason": "stop",
        "usage": {"output_tokens": 4},
        "duration_ms": 12.5,
        "error": None,
    }
    replay = ReplayProvider([record], chunk_size=4)
    chunks = [c async for c in replay.stream("x")]
    assert [c.text for c in chunks] == ["abcd", "efgh", "ij", ""]
    assert chunks[-1].response == LLMResponse(
        text="abcdefghij",
        model="m",
        provider="ollama",
        done_reason="stop",
        usage={"output_tokens": 4},
        duration_ms=12.5,
    )


@pytest.mark.parametrize(
    "call",
    [
        {"prompt": "plan", "format": SCHEMA, "options": {"temperature": 0, "seed": 4}},
        {"prompt": "plan", "format": "json", "options": {"temperature": 0, "seed": 3}},
        {"prompt": "plan", "options": {"temperature": 0, "seed": 3}},
        {"prompt": "plan!", "format": SCHEMA, "options": {"temperature": 0, "seed": 3}},
        {
            "prompt": "plan",
            "system": "s",
            "format": SCHEMA,
            "options": {"seed": 3, "temperature": 0},
        },
    ],
)
async def test_replay_refuses_any_request_that_was_not_recorded(call: dict[str, Any]) -> None:
    async with Session() as session:
        await record_session(session)
        replay = await ReplayProvider.from_session(session)
    call = dict(call)  # the parameter is shared by both backends' runs
    prompt = call.pop("prompt")
    with pytest.raises(LLMError) as info:
        await replay.complete(prompt, **call)
    assert info.value.provider == "replay"
    assert "no recorded exchange" in info.value.message
    assert replay.remaining == 3  # nothing was consumed by the failed lookup


async def test_recorded_failure_replays_as_the_same_error() -> None:
    replies: list[Reply] = [
        ErrorReply(503, {"error": "server busy"}),
        OllamaReply(["so"], error="crashed"),
    ]
    async with recording(replies) as (_, session, provider):
        with pytest.raises(LLMError) as busy:
            await provider.complete("a", session=session)
        with pytest.raises(LLMError) as crashed:
            await provider.complete("b", session=session)
        replay = await ReplayProvider.from_session(session)
    with pytest.raises(LLMError) as replayed_busy:
        await replay.complete("a")
    seen: list[str] = []
    with pytest.raises(LLMError) as replayed_crash:
        await consume(replay.stream("b"), seen)
    for original, again in ((busy, replayed_busy), (crashed, replayed_crash)):
        assert (again.value.message, again.value.provider, again.value.status) == (
            original.value.message,
            original.value.provider,
            original.value.status,
        )
    assert replayed_busy.value.status == 503
    assert "".join(seen) == "so"


async def test_aborted_record_replays_the_partial_text_then_fails() -> None:
    async with Session() as session:
        provider = ScriptedProvider(["abcdef"], chunk_size=2)
        async with aclosing(provider.stream("x", session=session)) as stream:  # type: ignore[type-var]
            async for _ in stream:
                break
        replay = await ReplayProvider.from_session(session)
    seen: list[str] = []
    with pytest.raises(LLMError, match="abandoned") as info:
        await consume(replay.stream("x"), seen)
    assert seen == ["ab"]
    assert info.value.provider == "replay"


async def test_replay_records_into_a_new_session() -> None:
    async with Session() as first:
        originals = await record_session(first)
        replay = await ReplayProvider.from_session(first)
    async with Session() as second:
        await replay.complete("something else", session=second)
        (record,) = await exchanges(second)
    assert record["provider"] == "replay"
    assert record["response"] == originals[2].text
    assert record["model"] == "m"


async def test_replay_from_a_saved_and_loaded_session(tmp_path: Path) -> None:
    path = tmp_path / "recorded.kaizen"
    async with Session() as session:
        originals = await record_session(session)
        await session.save(path)
    async with Session.load(path) as loaded:
        replay = await ReplayProvider.from_session(loaded)
    assert await replay.complete("something else") == originals[2]


async def test_replay_recorded_scripted_run_drives_the_same_consumer() -> None:
    async def consumer(provider: LLMProvider, session: Session | None = None) -> list[str]:
        answers = []
        for question in ("one", "two"):
            response = await provider.complete(question, session=session)
            answers.append(response.text)
        return answers

    async with Session() as session:
        live = await consumer(ScriptedProvider(["1", "2"]), session)
        replayed = await consumer(await ReplayProvider.from_session(session))
    assert live == replayed == ["1", "2"]


def test_replay_rejects_records_that_are_not_exchanges() -> None:
    with pytest.raises(ValueError, match="not an llm_exchange record"):
        ReplayProvider([{"response": "no request"}])
    with pytest.raises(ValueError, match="chunk_size"):
        ReplayProvider([], chunk_size=0)
    assert ReplayProvider([]).model_name == "replay"


async def test_options_may_be_given_as_keywords() -> None:
    llm = ScriptedProvider(["a", "b"])
    await llm.complete("hi", options={"seed": 1}, temperature=0, seed=7)
    assert llm.requests[-1]["options"] == {"seed": 7, "temperature": 0}
    chunks = [c async for c in llm.stream("again", num_predict=5)]
    assert chunks[-1].done
    assert llm.requests[-1]["options"] == {"num_predict": 5}
