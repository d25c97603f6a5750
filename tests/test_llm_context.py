"""Every provider is an async context manager, so one can be swapped for another; what
``Planner.plan`` makes of a replay that has no answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from kaizen_async import EntryType, ErrorCode, LLMError, Planner, Session
from kaizen_async.llm import (
    LLMProvider,
    OllamaProvider,
    OpenAICompatProvider,
    ReplayProvider,
    ScriptedProvider,
)
from kaizen_async.testing import OllamaReply, OpenAIReply, StandInLLMServer

pytestmark = pytest.mark.anyio

PLAN = '{"steps": [{"capability": "reverse", "params": {"key": "text"}}]}'


async def plan_with(provider: LLMProvider) -> str | None:
    """What an application does with whatever provider it is given: ``async with`` it."""
    async with provider as llm:
        assert llm is provider
        result = await Planner(llm, ["reverse"]).plan("reverse the text")
    assert result.success, result.error
    return result.raw_response


async def recorded_exchanges() -> list[Any]:
    async with Session() as session:
        await ScriptedProvider([PLAN]).complete(
            "reverse the text",
            system=Planner(ScriptedProvider([]), ["reverse"]).system_prompt,
            format=Planner(ScriptedProvider([]), ["reverse"]).format_schema,
            options={"temperature": 0},
            session=session,
        )
        return await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE])


@asynccontextmanager
async def ollama() -> AsyncIterator[LLMProvider]:
    async with StandInLLMServer([OllamaReply([PLAN])]) as server:
        yield OllamaProvider("m", server.url)


@asynccontextmanager
async def openai() -> AsyncIterator[LLMProvider]:
    async with StandInLLMServer([OpenAIReply([PLAN])]) as server:
        yield OpenAICompatProvider(server.url, "m")


@asynccontextmanager
async def scripted() -> AsyncIterator[LLMProvider]:
    yield ScriptedProvider([PLAN])


@asynccontextmanager
async def replay() -> AsyncIterator[LLMProvider]:
    yield ReplayProvider(await recorded_exchanges())


@pytest.mark.parametrize("source", [scripted, replay, ollama, openai])
async def test_every_provider_is_an_async_context_manager(
    source: Callable[[], AbstractAsyncContextManager[LLMProvider]],
) -> None:
    async with source() as provider:
        assert await plan_with(provider) == PLAN


async def test_leaving_the_block_closes_an_owned_http_client() -> None:
    async with StandInLLMServer([OllamaReply(["a"]), OllamaReply(["b"])]) as server:
        provider = OllamaProvider("m", server.url)
        async with provider:
            assert (await provider.complete("x")).text == "a"
            client = provider._client
            assert client is not None and not client.is_closed
        assert client.is_closed and provider._client is None
        # closed is not broken: the next call makes a new client
        assert (await provider.complete("y")).text == "b"
        await provider.aclose()


async def test_a_subclass_closes_what_it_holds_on_exit() -> None:
    class Holding(ScriptedProvider):
        closed = 0

        async def aclose(self) -> None:
            Holding.closed += 1

    with pytest.raises(RuntimeError):
        async with Holding([PLAN]):
            raise RuntimeError("the block failed")
    assert Holding.closed == 1  # closed on the way out of a failing block too
    await ScriptedProvider([]).aclose()  # the base close is a no-op, and repeatable
    await ReplayProvider([]).aclose()


async def test_an_unrecorded_request_is_a_failed_plan_not_an_exception() -> None:
    replayed = ReplayProvider(await recorded_exchanges())
    async with replayed, Session() as session:
        with pytest.raises(LLMError):  # the provider itself raises
            await replayed.complete("something never asked")
        result = await Planner(replayed, ["reverse"]).plan("something never asked", session)
        assert not result.success
        assert result.error_code is ErrorCode.PLAN_LLM_ERROR
        assert result.error is not None
        assert "replay has no answer for this request" in result.error["message"]
        assert result.raw_response == ""
        failed = await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])
        assert [e.content["error"] for e in failed] == [result.error]
