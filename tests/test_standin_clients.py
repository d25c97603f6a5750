"""The stand-in server as the official ``ollama`` and ``openai`` clients see it: streaming and
non-streaming chat, and model listings (test-only dependencies of the ``dev`` extra)."""

from __future__ import annotations

import ollama
import openai
import pytest

from kaizen_async.testing import OllamaReply, OpenAIReply, StandInLLMServer

pytestmark = pytest.mark.anyio

MODEL = "llama3.1:8b"
MESSAGES = [{"role": "user", "content": "hi"}]


def _openai(server: StandInLLMServer) -> openai.AsyncOpenAI:
    """A client of the stand-in (use it in ``async with``: its connections belong to this
    test's event loop)."""
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


# -- Ollama -------------------------------------------------------------------------------------


async def test_ollama_client_non_streaming_chat() -> None:
    reply = OllamaReply(["Hel", "lo"], thinking=["hm", "m"], done_content="!")
    async with StandInLLMServer([reply]) as server, ollama.AsyncClient(host=server.url) as client:
        response = await client.chat(model=MODEL, messages=MESSAGES, stream=False)
        (exchange,) = server.posts("/api/chat")
    assert exchange.request.json["stream"] is False
    assert exchange.completed and len(exchange.chunk_sizes) == 1  # one body, not a stream
    assert response.done is True and response.done_reason == "stop"
    assert response.model == MODEL
    assert response.message.role == "assistant"
    assert response.message.content == "Hello!"
    assert response.message.thinking == "hmm"
    assert response.eval_count == 3 and response.prompt_eval_count == 26
    assert response.total_duration is not None and response.total_duration > 0
    assert exchange.text_sent_at("Hello!") is not None


async def test_ollama_client_streaming_chat() -> None:
    async with (
        StandInLLMServer([OllamaReply(["Hel", "lo"])]) as server,
        ollama.AsyncClient(host=server.url) as client,
    ):
        stream = await client.chat(model=MODEL, messages=MESSAGES, stream=True)
        parts = [part async for part in stream]
    assert "".join(p.message.content or "" for p in parts) == "Hello"
    assert [p.done for p in parts] == [False, False, True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 2


async def test_ollama_client_non_streaming_error() -> None:
    async with (
        StandInLLMServer([OllamaReply(["x"], error="the model crashed")]) as server,
        ollama.AsyncClient(host=server.url) as client,
    ):
        with pytest.raises(ollama.ResponseError) as info:
            await client.chat(model=MODEL, messages=MESSAGES, stream=False)
    assert info.value.error == "the model crashed" and info.value.status_code == 500


async def test_ollama_client_lists_models() -> None:
    async with (
        StandInLLMServer(models=["llama3.1:8b", "qwen3:8b"]) as server,
        ollama.AsyncClient(host=server.url) as client,
    ):
        listed = await client.list()
    assert [m.model for m in listed.models] == ["llama3.1:8b", "qwen3:8b"]
    assert listed.models[0].details is not None
    assert listed.models[0].details.family == "llama"


# -- OpenAI-compatible ----------------------------------------------------------------------------


async def test_openai_client_non_streaming_chat() -> None:
    async with StandInLLMServer([OpenAIReply(["Hel", "lo"])]) as server, _openai(server) as client:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
        )
        (exchange,) = server.posts("/v1/chat/completions")
    assert "stream" not in exchange.request.json or exchange.request.json["stream"] is False
    assert completion.object == "chat.completion" and completion.model == MODEL
    (choice,) = completion.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == "Hello"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 2)
    assert completion.usage.total_tokens == 11


async def test_openai_client_streaming_chat() -> None:
    async with StandInLLMServer([OpenAIReply(["Hel", "lo"])]) as server, _openai(server) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11


async def test_openai_client_non_streaming_error() -> None:
    async with (
        StandInLLMServer([OpenAIReply(error="overloaded")]) as server,
        _openai(server) as client,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert info.value.status_code == 500 and "overloaded" in str(info.value)


async def test_openai_client_lists_models() -> None:
    async with (
        StandInLLMServer(models=["llama3.1:8b", "qwen3:8b"]) as server,
        _openai(server) as client,
    ):
        page = await client.models.list()
    assert [m.id for m in page.data] == ["llama3.1:8b", "qwen3:8b"]
    assert {m.object for m in page.data} == {"model"}


# -- what the stand-in records ----------------------------------------------------------------


async def test_a_dropped_non_streaming_reply_is_cut_short() -> None:
    async with (
        StandInLLMServer([OllamaReply(["Hel", "lo"], drop=True)]) as server,
        ollama.AsyncClient(host=server.url) as client,
    ):
        with pytest.raises(Exception) as info:
            await client.chat(model=MODEL, messages=MESSAGES, stream=False)
        (exchange,) = server.posts()
        await exchange.finished.wait()
    assert exchange.dropped and not exchange.completed
    assert info.value is not None
