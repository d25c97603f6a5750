"""OllamaProvider against a real Ollama at ``OLLAMA_HOST`` (default ``127.0.0.1:11434``),
skipped when none answers.

The model is env ``KAIZEN_TEST_MODEL``, else the first local model that is not an
embedding model. Run with ``pytest -m integration``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson
import pytest

from kaizen_async import Session
from kaizen_async.llm import LLMError, OllamaProvider, ReplayProvider

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DETERMINISTIC = {"temperature": 0, "seed": 7}


@pytest.fixture
async def provider() -> AsyncIterator[OllamaProvider]:
    host = os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    async with OllamaProvider(base_url=host) as probe:
        if not await probe.is_available():
            pytest.skip(f"no Ollama answers at {probe.base_url}")
        model = os.environ.get("KAIZEN_TEST_MODEL")
        if not model:
            chat_models = [m for m in await probe.list_models() if "embed" not in m]
            if not chat_models:
                pytest.skip("Ollama has no chat model (ollama pull one, or set KAIZEN_TEST_MODEL)")
            model = chat_models[0]
    async with OllamaProvider(model, host, timeout=600.0, keep_alive="5m") as real:
        yield real


async def test_complete_reports_text_reason_and_usage(provider: OllamaProvider) -> None:
    response = await provider.complete(
        "Say hello in one short sentence.", options={**DETERMINISTIC, "num_predict": 32}
    )
    assert response.text.strip()
    assert response.done_reason in ("stop", "length")
    assert response.input_tokens is not None
    assert response.input_tokens > 0
    assert response.output_tokens is not None
    assert response.output_tokens > 0
    assert response.usage["total_duration_ns"] > 0


async def test_stream_chunks_add_up_to_the_response(provider: OllamaProvider) -> None:
    texts: list[str] = []
    final = None
    async for chunk in provider.stream(
        "Name three colours, comma separated.", options={**DETERMINISTIC, "num_predict": 48}
    ):
        if chunk.done:
            final = chunk.response
        else:
            texts.append(chunk.text)
    assert final is not None
    assert len(texts) > 1  # really streamed, not one blob
    assert "".join(texts) == final.text


async def test_num_predict_limit_is_reported_as_length(provider: OllamaProvider) -> None:
    response = await provider.complete(
        "Count from 1 to 100, separated by spaces.", options={**DETERMINISTIC, "num_predict": 2}
    )
    assert response.done_reason == "length"
    assert response.truncated


async def test_json_schema_format_constrains_the_output(provider: OllamaProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    response = await provider.complete(
        'Reply with JSON like {"answer": "..."}: what is the capital of France?',
        format=schema,
        options={**DETERMINISTIC, "num_predict": 128},
    )
    if response.done_reason == "stop":
        assert isinstance(orjson.loads(response.text)["answer"], str)
    else:
        assert response.truncated


async def test_missing_model_says_ollama_pull(provider: OllamaProvider) -> None:
    missing = "kaizen-no-such-model:0b"
    async with OllamaProvider(missing, provider.base_url) as absent:
        with pytest.raises(LLMError) as info:
            await absent.complete("hi")
    assert info.value.status == 404
    assert f"ollama pull {missing}" in info.value.message


async def test_closing_early_then_the_server_still_answers(provider: OllamaProvider) -> None:
    async with aclosing(  # type: ignore[type-var]
        provider.stream("Write a long story about a lighthouse.", options=DETERMINISTIC)
    ) as stream:
        async for chunk in stream:
            assert not chunk.done
            break
    response = await provider.complete("Say OK.", options={**DETERMINISTIC, "num_predict": 8})
    assert response.text.strip()


async def test_recorded_exchange_replays_identically(provider: OllamaProvider) -> None:
    options = {**DETERMINISTIC, "num_predict": 24}
    async with Session() as session:
        original = await provider.complete("Say a random word.", options=options, session=session)
        replay = await ReplayProvider.from_session(session)
    assert await replay.complete("Say a random word.", options=options) == original
    with pytest.raises(LLMError):
        await replay.complete("Say a random word.", options=options)


async def test_plan_and_dispatch_against_the_real_model(provider: OllamaProvider) -> None:
    from agents import ReverseAgent, UppercaseAgent
    from kaizen_async import Dispatcher, EntryType, Planner

    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "hello world")
        planner = Planner(provider, dispatcher.capability_specs(), options=DETERMINISTIC)
        stream = planner.stream(
            "Reverse the string stored under the state key 'text', then make it uppercase.",
            session,
        )
        result = await dispatcher.dispatch_stream(stream, session)
        plan = stream.result
        assert plan is not None and plan.success, plan
        assert {c.capability for c in plan.calls} <= {"reverse", "uppercase"}
        assert result.success and result.executed_count == len(plan.calls)
        expected = "hello world"  # the state follows whatever the model planned, step by step
        for call in plan.calls:
            expected = expected[::-1] if call.capability == "reverse" else expected.upper()
        assert await session.get("text") == expected
        kinds = [e.entry_type for e in await session.get_trajectory()]
        assert kinds.count(EntryType.LLM_EXCHANGE) == 1
        assert kinds.count(EntryType.PLAN_CREATED) == 1
