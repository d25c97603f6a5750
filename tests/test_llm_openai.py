"""OpenAICompatProvider against the stand-in server's SSE streams (real sockets)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import pytest

from kaizen_async.llm import LLMChunk, LLMError, OpenAICompatProvider
from kaizen_async.testing import (
    BodyReply,
    ErrorReply,
    OpenAIReply,
    RawReply,
    Reply,
    StandInLLMServer,
)

pytestmark = pytest.mark.anyio

MODEL = "qwen3:8b"


def compat(server: StandInLLMServer, **kwargs: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider(server.url, MODEL, **kwargs)


@asynccontextmanager
async def serving(
    replies: Sequence[Reply] = (), *, models: Sequence[str] = (MODEL,), **kwargs: Any
) -> AsyncIterator[tuple[StandInLLMServer, OpenAICompatProvider]]:
    """A stand-in server with ``replies`` and a provider pointed at it."""
    async with StandInLLMServer(replies, models=models) as server, compat(server, **kwargs) as p:
        yield server, p


async def consume(stream: AsyncIterator[LLMChunk], seen: list[str]) -> None:
    """Iterate ``stream`` to its end (or error), noting each text in ``seen``."""
    async for chunk in stream:
        seen.append(chunk.text)


async def collect(provider: OpenAICompatProvider, prompt: str = "hi", **kw: Any) -> list[LLMChunk]:
    async with aclosing(provider.stream(prompt, **kw)) as stream:  # type: ignore[type-var]
        return [chunk async for chunk in stream]


def texts(chunks: list[LLMChunk]) -> list[str]:
    return [c.text for c in chunks if not c.done]


# -- success paths ---------------------------------------------------------------------------


async def test_streams_deltas_then_finish_usage_and_done() -> None:
    async with serving([OpenAIReply(["[{", '"a"', "}]"])]) as (server, provider):
        chunks = await collect(provider)
    assert texts(chunks) == ["[{", '"a"', "}]"]  # the role chunk (content null) yields nothing
    final = chunks[-1]
    assert final.done
    assert final.response is not None
    assert final.response.text == '[{"a"}]'
    assert final.response.done_reason == "stop"
    assert final.response.provider == "openai_compat"
    assert final.response.model == MODEL
    assert final.response.input_tokens == 9
    assert final.response.output_tokens == 3
    assert final.response.usage["total_tokens"] == 12
    assert server.exchanges[0].sent_at.keys() >= {"role", "finish", "usage", "done"}


async def test_request_body_and_headers() -> None:
    async with serving([OpenAIReply(["ok"])], api_key="sk-test") as (server, provider):
        await provider.complete("plan it", system="JSON only")
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["accept"] == "text/event-stream"
    assert request.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "JSON only"},
            {"role": "user", "content": "plan it"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_no_authorization_header_without_api_key() -> None:
    async with serving([OpenAIReply(["ok"])]) as (server, provider):
        await provider.complete("x")
    assert "authorization" not in server.requests[0].headers


async def test_format_maps_to_response_format_and_options_pass_through() -> None:
    schema = {"type": "object", "properties": {"steps": {"type": "array"}}}
    replies = [OpenAIReply(["{}"]) for _ in range(3)]
    async with serving(replies, max_tokens=256) as (server, provider):
        await provider.complete(
            "a", format=schema, options={"temperature": 0, "seed": 1, "stop": ["\n"]}
        )
        await provider.complete("b", format="json", options={"top_p": 0.5, "max_tokens": 8})
        await provider.complete("c", options={"num_predict": 32})
    first, second, third = (r.json for r in server.requests)
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "plan", "schema": schema},
    }
    assert (first["temperature"], first["seed"], first["stop"]) == (0, 1, ["\n"])
    assert first["max_tokens"] == 256  # the provider's default
    assert second["response_format"] == {"type": "json_object"}
    assert (second["top_p"], second["max_tokens"]) == (0.5, 8)
    assert "response_format" not in third
    assert third["max_tokens"] == 32
    assert "num_predict" not in third


async def test_options_may_not_override_the_request_shape() -> None:
    async with serving() as (server, provider):
        with pytest.raises(LLMError, match="stream"):
            await provider.complete("x", options={"stream": False})
        with pytest.raises(LLMError, match="format must be"):
            await provider.complete("x", format="xml")
    assert server.requests == []


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_base_url_with_or_without_v1(suffix: str) -> None:
    async with (
        StandInLLMServer([OpenAIReply(["ok"])]) as server,
        OpenAICompatProvider(server.url + suffix, MODEL) as provider,
    ):
        assert (await provider.complete("x")).text == "ok"
    assert server.requests[0].path == "/v1/chat/completions"


async def test_custom_endpoint() -> None:
    async with serving([OpenAIReply(["ok"])], endpoint="/openai/chat") as (server, provider):
        await provider.complete("x")
    assert server.requests[0].path == "/openai/chat"


async def test_comments_crlf_and_byte_level_chunking() -> None:
    pieces = ["ça ", "va 🌍", " ok"]
    reply = OpenAIReply(pieces, comments=True, newline="\r\n", chunks=1)
    async with serving([reply]) as (server, provider):
        chunks = await collect(provider)
    assert texts(chunks) == pieces
    assert set(server.exchanges[0].chunk_sizes) == {1}


async def test_multiline_data_other_fields_and_no_space_after_colon() -> None:
    events = [
        "event: message\nid: 1\nretry: 10",  # no data: not an event for us
        'data: {"choices":[{"index":0,\ndata: "delta":{"content":"multi"},"finish_reason":null}]}',
        'id: 2\ndata:{"choices":[{"index":0,"delta":{"content":"-line"}}]}',
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        "data: [DONE]",
    ]
    async with serving([OpenAIReply(events=events, chunks=[11, 40, 7])]) as (_, provider):
        response = await provider.complete("x")
    assert response.text == "multi-line"
    assert response.done_reason == "stop"
    assert response.usage == {}


async def test_usage_in_the_finish_chunk() -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    reply = OpenAIReply(["a", "b"], usage=usage, usage_in_finish=True)
    async with serving([reply]) as (s, provider):
        response = await provider.complete("x")
    assert (response.input_tokens, response.output_tokens) == (4, 2)
    assert "usage" not in s.exchanges[0].sent_at  # there was no separate usage event


async def test_finish_without_done_marker_and_done_without_finish_both_succeed() -> None:
    replies = [
        OpenAIReply(["a"], done_marker=False, usage=None),  # ik_llama.cpp without --send-done
        OpenAIReply(["b"], finish_reason=None),
    ]
    async with serving(replies) as (_, provider):
        first = await provider.complete("x")
        second = await provider.complete("y")
    assert (first.text, first.done_reason, first.usage) == ("a", "stop", {})
    assert (second.text, second.done_reason) == ("b", None)


async def test_finish_reason_length() -> None:
    async with serving([OpenAIReply(['{"st'], finish_reason="length")]) as (_, provider):
        response = await provider.complete("x")
    assert response.truncated


async def test_first_content_chunk_carrying_the_role() -> None:
    async with serving([OpenAIReply(["x", "y"], role_chunk=False)]) as (_, provider):
        chunks = await collect(provider)
    assert texts(chunks) == ["x", "y"]


async def test_anything_after_done_is_ignored() -> None:
    events = [
        'data: {"choices":[{"index":0,"delta":{"content":"fine"},"finish_reason":"stop"}]}',
        "data: [DONE]",
        "data: {this is not json",
    ]
    async with serving([OpenAIReply(events=events)]) as (_, provider):
        assert (await provider.complete("x")).text == "fine"


# -- failures ---------------------------------------------------------------------------------


async def test_eof_without_finish_or_done_is_truncated() -> None:
    reply = OpenAIReply(["par", "tial"], finish_reason=None, usage=None, done_marker=False)
    async with serving([reply]) as (server, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert server.exchanges[0].completed
    assert info.value.provider == "openai_compat"
    assert info.value.details["kind"] == "truncated"
    assert "7 characters" in info.value.message


async def test_unterminated_last_event_is_dropped_and_reported_truncated() -> None:
    chunks = [
        'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',  # no blank line
    ]
    async with serving([RawReply(chunks, content_type="text/event-stream")]) as (_, provider):
        with pytest.raises(LLMError, match="truncated"):
            await provider.complete("x")


@pytest.mark.parametrize(
    ("error", "done_after"),
    [
        ({"code": 500, "message": "context shift failed", "type": "server_error"}, False),
        ({"message": "context shift failed", "type": "api_error"}, True),  # vLLM adds [DONE]
        ("context shift failed", False),
    ],
)
async def test_error_event_mid_stream(error: Any, done_after: bool) -> None:
    reply = OpenAIReply(["so far"], error=error, done_after_error=done_after)
    async with serving([reply]) as (_, provider):
        seen: list[str] = []
        with pytest.raises(LLMError) as info:
            await consume(provider.stream("x"), seen)
    assert seen == ["so far"]
    assert "context shift failed" in info.value.message
    assert info.value.details["kind"] == "stream_error"


async def test_object_error_payload() -> None:
    events = ['data: {"object":"error","message":"bad things","type":"x","code":400}']
    async with serving([OpenAIReply(events=events)]) as (_, provider):
        with pytest.raises(LLMError, match="bad things"):
            await provider.complete("x")


async def test_not_json_event_is_a_protocol_error() -> None:
    async with serving([OpenAIReply(events=["data: {oops"])]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.details["kind"] == "protocol"


async def test_404_error_object_before_streaming() -> None:
    body = {
        "error": {
            "message": f'model "{MODEL}" not found, try pulling it first',
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }
    async with serving([ErrorReply(404, body)]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.status == 404
    assert "try pulling it first" in info.value.message
    assert f"model '{MODEL}'" in info.value.message
    assert info.value.details["kind"] == "model_not_found"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"error": {"message": "invalid api key"}}, "check api_key"),
        (400, {"object": "error", "message": "bad temperature", "type": "x"}, "bad temperature"),
        (422, {"detail": "validation failed"}, "validation failed"),
        (500, "Internal Server Error", "Internal Server Error"),
    ],
)
async def test_http_errors_before_streaming(status: int, body: Any, expected: str) -> None:
    async with serving([ErrorReply(status, body)]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.status == status
    assert expected in info.value.message


async def test_dropped_connection() -> None:
    async with serving([OpenAIReply(["a"], drop=True)]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.details["kind"] == "dropped"


async def test_connect_failure() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with OpenAICompatProvider(f"http://127.0.0.1:{port}", MODEL) as provider:
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
        assert not await provider.is_available()
    assert info.value.message.startswith(
        f"Cannot connect to the OpenAI-compatible server at http://127.0.0.1:{port}."
    )
    assert info.value.details["kind"] == "connect"


async def test_read_timeout_between_events() -> None:
    async with serving([OpenAIReply(["a", "b"], delay=2.0)], timeout=0.2) as (_, provider):
        started = time.perf_counter()
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert time.perf_counter() - started < 1.5
    assert info.value.details["kind"] == "timeout"


async def test_total_timeout() -> None:
    reply = OpenAIReply(list("abcdefghij"), delay=0.1)
    async with serving([reply], total_timeout=0.3) as (_, provider):
        with pytest.raises(LLMError, match="overall timeout"):
            await provider.complete("x")


async def test_cancelling_the_consumer_closes_the_connection() -> None:
    reply = OpenAIReply([f"t{i}" for i in range(30)], delay=0.05)
    async with serving([reply]) as (server, provider):
        with anyio.move_on_after(0.2):
            async for _ in provider.stream("x"):
                pass
        exchange = server.exchanges[0]
        with anyio.fail_after(2):
            await exchange.finished.wait()
    assert exchange.client_disconnected
    assert "done" not in exchange.sent_at


async def test_is_available_and_list_models() -> None:
    async with StandInLLMServer(models=["a", "b"]) as server:
        async with OpenAICompatProvider(server.url + "/v1", MODEL) as provider:
            assert await provider.is_available()
            assert await provider.list_models() == ["a", "b"]
        server.route("/v1/models", BodyReply(200, {"models": []}))
        async with compat(server) as provider:
            with pytest.raises(LLMError, match="unexpected /v1/models"):
                await provider.list_models()
    assert server.requests[0].path == "/v1/models"
