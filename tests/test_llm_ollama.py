"""OllamaProvider against the stand-in server: real sockets on 127.0.0.1, no mocked client."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from kaizen_async.llm import LLMChunk, LLMError, OllamaProvider
from kaizen_async.llm._ollama import resolve_ollama_url
from kaizen_async.testing import (
    BodyReply,
    ErrorReply,
    HangupReply,
    OllamaReply,
    RawReply,
    Reply,
    StandInLLMServer,
)

pytestmark = pytest.mark.anyio

MODEL = "llama3.1:8b"


def ollama(server: StandInLLMServer, **kwargs: Any) -> OllamaProvider:
    return OllamaProvider(MODEL, server.url, **kwargs)


@asynccontextmanager
async def serving(
    replies: Sequence[Reply] = (), *, models: Sequence[str] = (MODEL,), **kwargs: Any
) -> AsyncIterator[tuple[StandInLLMServer, OllamaProvider]]:
    """A stand-in server with ``replies`` and a provider pointed at it."""
    async with StandInLLMServer(replies, models=models) as server, ollama(server, **kwargs) as p:
        yield server, p


async def collect(provider: OllamaProvider, prompt: str = "hi", **kwargs: Any) -> list[LLMChunk]:
    async with aclosing(provider.stream(prompt, **kwargs)) as stream:  # type: ignore[type-var]
        return [chunk async for chunk in stream]


async def consume(stream: AsyncIterator[LLMChunk], seen: list[str]) -> None:
    """Iterate ``stream`` to its end (or error), noting each text in ``seen``."""
    async for chunk in stream:
        seen.append(chunk.text)


async def unused_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


# -- success paths ---------------------------------------------------------------------------


async def test_streams_each_piece_then_a_final_response() -> None:
    async with serving([OllamaReply(["Hel", "lo", " world"])]) as (_, provider):
        chunks = await collect(provider)
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo", " world"]
    assert not any(c.done for c in chunks[:-1])
    final = chunks[-1]
    assert final.done
    assert final.text == ""
    assert final.response is not None
    assert final.response.text == "Hello world"
    assert final.response.provider == "ollama"
    assert final.response.model == MODEL
    assert final.response.done_reason == "stop"
    assert not final.response.truncated
    assert final.response.duration_ms is not None
    assert final.response.duration_ms >= 0


async def test_request_body_defaults() -> None:
    async with serving([OllamaReply(["ok"])]) as (server, provider):
        await provider.complete("reverse 'abc'", system="Reply with JSON only.")
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/x-ndjson"
    assert request.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Reply with JSON only."},
            {"role": "user", "content": "reverse 'abc'"},
        ],
        "stream": True,
        "think": False,
        "keep_alive": "10m",
    }


async def test_request_body_format_options_think_keep_alive() -> None:
    schema = {"type": "object", "required": ["steps"], "properties": {"steps": {"type": "array"}}}
    replies = [OllamaReply(["{}"]) for _ in range(3)]
    async with serving(replies, think="high", keep_alive=0) as (server, provider):
        await provider.complete(
            [{"role": "user", "content": "plan"}],
            format=schema,
            options={"temperature": 0, "seed": 7, "max_tokens": 64, "stop": ["\n\n"]},
        )
        await provider.complete("x", format="json", options={})
        await provider.complete("y", options={"max_tokens": 10, "num_predict": 99, "top_k": 1})
    first, second, third = (r.json for r in server.requests)
    assert first["format"] == schema
    assert first["options"] == {"temperature": 0, "seed": 7, "num_predict": 64, "stop": ["\n\n"]}
    assert first["think"] == "high"
    assert first["keep_alive"] == 0
    assert first["messages"] == [{"role": "user", "content": "plan"}]
    assert second["format"] == "json"
    assert "options" not in second  # empty options are not sent
    assert third["options"] == {"num_predict": 99, "top_k": 1}  # num_predict wins over alias
    assert "format" not in third


async def test_keep_alive_none_is_omitted() -> None:
    async with serving([OllamaReply(["ok"])], keep_alive=None, think=True) as (server, provider):
        await provider.complete("x")
    body = server.requests[0].json
    assert "keep_alive" not in body
    assert body["think"] is True


async def test_invalid_format_is_refused_before_any_request() -> None:
    async with serving() as (server, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x", format="yaml")
    assert info.value.provider == "ollama"
    assert info.value.details["kind"] == "request"
    assert server.requests == []


async def test_usage_maps_counts_and_keeps_nanosecond_durations() -> None:
    metrics = {
        "total_duration": 900,
        "load_duration": 100,
        "prompt_eval_count": 169,
        "prompt_eval_duration": 200,
        "eval_count": 15,
        "eval_duration": 500,
    }
    async with serving([OllamaReply(["a"], metrics=metrics)]) as (_, provider):
        response = await provider.complete("x")
    assert response.usage == {
        "input_tokens": 169,
        "output_tokens": 15,
        "total_tokens": 184,
        "total_duration_ns": 900,
        "load_duration_ns": 100,
        "prompt_eval_duration_ns": 200,
        "eval_duration_ns": 500,
    }
    assert (response.input_tokens, response.output_tokens) == (169, 15)


async def test_absent_metrics_give_empty_usage() -> None:
    async with serving([OllamaReply(["a"], metrics={})]) as (_, provider):
        response = await provider.complete("x")
    assert response.usage == {}
    assert response.input_tokens is None


async def test_content_in_the_done_line_is_kept() -> None:
    async with serving([OllamaReply(["Hello"], done_content="!")]) as (_, provider):
        chunks = await collect(provider)
    assert [c.text for c in chunks] == ["Hello", "!", ""]
    assert chunks[-1].response is not None
    assert chunks[-1].response.text == "Hello!"


async def test_done_reason_length_marks_truncation() -> None:
    reply = OllamaReply(['{"steps": [{"capab'], done_reason="length")
    async with serving([reply]) as (_, provider):
        response = await provider.complete("x")
    assert response.done_reason == "length"
    assert response.truncated
    assert response.text == '{"steps": [{"capab'


async def test_thinking_is_not_part_of_the_text() -> None:
    reply = OllamaReply(["ok"], thinking=["Let me think", " about it"])
    async with serving([reply]) as (server, provider):
        chunks = await collect(provider)
    assert [c.text for c in chunks] == ["ok", ""]
    assert "thinking:1" in server.exchanges[0].sent_at


async def test_utf8_characters_split_across_chunks() -> None:
    pieces = ["caf", "é ", "🌍", " 中文", ' "q" \\ <b>&']
    async with serving([OllamaReply(pieces, chunks=1)]) as (server, provider):
        chunks = await collect(provider)
    assert [c.text for c in chunks[:-1]] == pieces
    exchange = server.exchanges[0]
    assert set(exchange.chunk_sizes) == {1}  # every byte was its own HTTP chunk


async def test_lines_split_across_chunks_and_many_lines_per_chunk() -> None:
    pieces = [f"piece {i} " for i in range(6)]
    replies = [OllamaReply(pieces, chunks=[5, 150, 3, 300, 7]), OllamaReply(pieces, chunks="all")]
    async with serving(replies) as (server, provider):
        split = await collect(provider)
        together = await collect(provider)
    assert [c.text for c in split[:-1]] == pieces
    assert [c.text for c in together[:-1]] == pieces
    assert len(server.exchanges[0].chunk_sizes) > 5
    assert len(server.exchanges[1].chunk_sizes) == 1


async def test_line_separator_characters_inside_json_strings_do_not_split_lines() -> None:
    # U+0085 is left raw by Go's encoder; a Python server leaves U+2028 raw too
    raw = '{"model":"m","message":{"role":"assistant","content":"a\u0085b \u2028c"},"done":false}'
    done = '{"model":"m","message":{"role":"assistant","content":""},"done":true}'
    async with serving([OllamaReply(lines=[raw, "", done])]) as (_, provider):
        response = await provider.complete("x")
    assert response.text == "a\u0085b \u2028c"


async def test_crlf_line_endings_and_blank_lines_are_tolerated() -> None:
    lines = [
        b'{"message":{"role":"assistant","content":"x"},"done":false}\r',
        b"",
        b'{"message":{"role":"assistant","content":"y"},"done":true,"done_reason":"stop"}\r',
    ]
    async with serving([OllamaReply(lines=lines, chunks=3)]) as (_, provider):
        response = await provider.complete("x")
    assert response.text == "xy"
    assert response.model == MODEL  # absent from the lines: the requested one


async def test_slow_tokens_arrive_as_they_are_sent() -> None:
    pieces = ["a", "b", "c", "d"]
    async with serving([OllamaReply(pieces, delay=0.15)]) as (server, provider):
        arrivals: list[float] = []
        async with aclosing(provider.stream("x")) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                arrivals.append(time.perf_counter())
                assert chunk.text in (*pieces, "")
    sent = server.exchanges[0].sent_at
    assert arrivals[0] < sent["content:3"]  # the first token was seen before the last was sent
    assert arrivals[3] - arrivals[0] >= 0.3


# -- stand-in observability (the planner benchmark relies on it) -----------------------------


async def test_send_timestamps_and_waiting_for_a_piece() -> None:
    pieces = ['{"steps": [{"capability": "a", "params": {}}', ", ", '{"capability": "b"}]}']
    async with (
        serving([OllamaReply(pieces, delay=0.1)]) as (server, provider),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(provider.complete, "x")
        exchange = await server.exchange(0)
        first = await exchange.wait_sent("content:0")
        assert "content:2" not in exchange.sent_at
        await exchange.finished.wait()
    assert exchange.completed
    assert first == exchange.sent_at["content:0"] < exchange.sent_at["content:2"]
    assert exchange.text_sent_at('"params": {}}') == first
    assert exchange.text_sent_at('"b"}]}') == exchange.sent_at["content:2"]
    assert exchange.text_sent_at("never sent") is None


# -- failures ---------------------------------------------------------------------------------


async def test_missing_model_404_says_ollama_pull() -> None:
    reply = ErrorReply(404, {"error": f"model '{MODEL}' not found"})
    async with serving([reply]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    error = info.value
    assert error.provider == "ollama"
    assert error.status == 404
    assert f"ollama pull {MODEL}" in error.message
    assert f"model '{MODEL}' not found" in error.message
    assert error.details["kind"] == "model_not_found"


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (400, '"llama3.1:8b" does not support thinking'),
        (503, "server busy, please try again.  maximum pending requests exceeded"),
        (500, "an error was encountered while running the model"),
    ],
)
async def test_other_http_errors_carry_status_and_server_text(status: int, text: str) -> None:
    async with serving([ErrorReply(status, {"error": text})]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.status == status
    assert text in info.value.message
    assert "ollama pull" not in info.value.message
    assert info.value.details["kind"] == "http_status"


async def test_404_from_something_that_is_not_ollama() -> None:
    async with serving([ErrorReply(404, "404 page not found")]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.status == 404
    assert "is this an Ollama server?" in info.value.message


async def test_error_line_mid_stream() -> None:
    reply = OllamaReply(["partial "], error="an error was encountered while running the model")
    async with serving([reply]) as (_, provider):
        seen: list[str] = []
        with pytest.raises(LLMError) as info:
            await consume(provider.stream("x"), seen)
    assert seen == ["partial "]
    assert "an error was encountered while running the model" in info.value.message
    assert info.value.details["kind"] == "stream_error"
    assert info.value.status is None


async def test_stream_ending_without_done_line_is_truncated() -> None:
    line = '{"model":"m","message":{"role":"assistant","content":"half"},"done":false}'
    async with serving([OllamaReply(lines=[line])]) as (server, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert server.exchanges[0].completed  # a clean HTTP end: only the done line is missing
    assert info.value.details["kind"] == "truncated"
    assert "done:true" in info.value.message


async def test_dropped_connection_mid_chunk() -> None:
    async with serving([OllamaReply(["a", "b"], drop=True)]) as (server, provider):
        seen: list[str] = []
        with pytest.raises(LLMError) as info:
            await consume(provider.stream("x"), seen)
    assert seen == ["a", "b"]
    assert server.exchanges[0].dropped
    assert info.value.details["kind"] == "dropped"
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_hangup_before_any_response() -> None:
    async with serving([HangupReply()]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.details["kind"] == "dropped"


async def test_a_long_line_in_many_small_chunks() -> None:
    piece = "x" * 20_000 + "é"
    async with serving([OllamaReply([piece], chunks=7)]) as (_, provider):
        response = await provider.complete("x")
    assert response.text == piece


async def test_a_request_that_is_not_json_is_refused() -> None:
    async with serving() as (server, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x", options={"stop": {1, 2}})
    assert info.value.details["kind"] == "request"
    assert server.requests == []


async def test_invalid_json_line_is_a_protocol_error() -> None:
    async with serving([OllamaReply(lines=["{not json"])]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.details["kind"] == "protocol"
    assert "{not json" in info.value.message


async def test_wrongly_shaped_message_is_a_protocol_error() -> None:
    async with serving([OllamaReply(lines=['{"message": "text", "done": true}'])]) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert info.value.details["kind"] == "protocol"


async def test_connect_failure_says_is_ollama_running() -> None:
    port = await unused_port()
    async with OllamaProvider(MODEL, f"http://127.0.0.1:{port}") as provider:
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
        assert not await provider.is_available()
    expected = f"Cannot connect to Ollama at http://127.0.0.1:{port}. Is Ollama running?"
    assert info.value.message.startswith(expected)
    assert info.value.details["kind"] == "connect"


async def test_read_timeout_waiting_for_the_first_byte() -> None:
    async with serving([OllamaReply(["late"], first_byte_delay=2.0)], timeout=0.2) as (_, provider):
        started = time.perf_counter()
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert time.perf_counter() - started < 1.5
    assert info.value.details["kind"] == "timeout"
    assert "read timeout" in info.value.message


async def test_read_timeout_between_tokens() -> None:
    async with serving([OllamaReply(["fast", "slow"], delay=2.0)], timeout=0.2) as (_, provider):
        seen: list[str] = []
        with pytest.raises(LLMError) as info:
            await consume(provider.stream("x"), seen)
    assert seen == ["fast"]
    assert info.value.details["kind"] == "timeout"


async def test_total_timeout_bounds_a_stream_of_steady_tokens() -> None:
    reply = OllamaReply([str(i) for i in range(20)], delay=0.1)
    async with serving([reply], timeout=5.0, total_timeout=0.45) as (_, provider):
        started = time.perf_counter()
        seen: list[str] = []
        with pytest.raises(LLMError) as info:
            await consume(provider.stream("x"), seen)
        elapsed = time.perf_counter() - started
    assert 0.4 <= elapsed < 1.5
    assert 2 <= len(seen) < 20
    assert "overall timeout of 0.45s" in info.value.message
    assert info.value.details["kind"] == "timeout"


async def test_total_timeout_also_covers_the_first_byte() -> None:
    reply = OllamaReply(["x"], first_byte_delay=2.0)
    async with serving([reply], total_timeout=0.2) as (_, provider):
        with pytest.raises(LLMError) as info:
            await provider.complete("x")
    assert "overall timeout" in info.value.message


# -- closing the stream early aborts the request ---------------------------------------------


async def test_closing_the_stream_early_closes_the_connection() -> None:
    reply = OllamaReply([f"t{i}" for i in range(30)], delay=0.05)
    async with serving([reply]) as (server, provider):
        async with aclosing(provider.stream("x")) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                assert chunk.text == "t0"
                break
        exchange = server.exchanges[0]
        with anyio.fail_after(2):
            await exchange.finished.wait()
    assert exchange.client_disconnected
    assert not exchange.completed
    assert "content:29" not in exchange.sent_at
    with pytest.raises(LookupError):
        await exchange.wait_sent("content:29")  # never sent: does not wait forever


async def test_cancelling_the_consumer_closes_the_connection() -> None:
    reply = OllamaReply([f"t{i}" for i in range(30)], delay=0.05)
    async with serving([reply]) as (server, provider):
        seen: list[str] = []
        with anyio.move_on_after(0.2):
            async for chunk in provider.stream("x"):
                seen.append(chunk.text)
        exchange = server.exchanges[0]
        with anyio.fail_after(2):
            await exchange.finished.wait()
    assert 1 <= len(seen) < 30
    assert exchange.client_disconnected
    assert "done" not in exchange.sent_at


async def test_abandoned_stream_is_closed_when_collected() -> None:
    reply = OllamaReply([f"t{i}" for i in range(30)], delay=0.05)
    async with serving([reply]) as (server, provider):
        async for _ in provider.stream("x"):
            break  # no aclose: the generator finalizer must close the response
        gc.collect()
        exchange = server.exchanges[0]
        with anyio.fail_after(3):
            await exchange.finished.wait()
    assert exchange.client_disconnected


async def test_complete_streams_reuse_one_connection() -> None:
    async with serving([OllamaReply(["a"]), OllamaReply(["b"])]) as (server, provider):
        assert (await provider.complete("x")).text == "a"
        assert (await provider.complete("y")).text == "b"
    assert server.connections == 1


# -- other endpoints, configuration ------------------------------------------------------------


async def test_is_available_and_list_models() -> None:
    async with serving(models=["llama3.1:8b", "qwen3:8b"]) as (server, provider):
        assert await provider.is_available()
        assert await provider.list_models() == ["llama3.1:8b", "qwen3:8b"]
    assert [r.path for r in server.requests] == ["/api/version", "/api/tags"]


async def test_unhealthy_server_is_not_available_and_list_models_raises() -> None:
    async with StandInLLMServer() as server:
        server.route("/api/version", ErrorReply(500, {"error": "boom"}))
        server.route("/api/tags", ErrorReply(503, {"error": "server busy"}))
        async with ollama(server) as provider:
            assert not await provider.is_available()
            with pytest.raises(LLMError) as info:
                await provider.list_models()
    assert info.value.status == 503
    assert "server busy" in info.value.message


async def test_list_models_rejects_a_malformed_answer() -> None:
    async with StandInLLMServer() as server:
        server.route("/api/tags", BodyReply(200, {"tags": []}))
        async with ollama(server) as provider:
            with pytest.raises(LLMError, match="unexpected /api/tags"):
                await provider.list_models()


async def test_base_url_from_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    async with StandInLLMServer([OllamaReply(["env"])]) as server:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.port}")
        async with OllamaProvider(MODEL) as provider:
            assert provider.base_url == server.url
            assert (await provider.complete("x")).text == "env"


def test_resolve_ollama_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_ollama_url() == "http://localhost:11434"
    assert resolve_ollama_url("0.0.0.0") == "http://0.0.0.0:11434"
    assert resolve_ollama_url("127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert resolve_ollama_url("https://ollama.example/") == "https://ollama.example"
    monkeypatch.setenv("OLLAMA_HOST", "10.1.2.3")
    assert resolve_ollama_url() == "http://10.1.2.3:11434"
    assert resolve_ollama_url("http://explicit:1") == "http://explicit:1"


async def test_a_given_client_is_used_and_left_open() -> None:
    async with (
        StandInLLMServer([OllamaReply(["mine"])]) as server,
        httpx.AsyncClient(headers={"X-Test": "1"}) as client,
    ):
        async with OllamaProvider(MODEL, server.url, client=client) as provider:
            assert (await provider.complete("x")).text == "mine"
        assert not client.is_closed
    assert server.requests[0].headers["x-test"] == "1"


async def test_an_owned_client_is_closed_and_recreated() -> None:
    async with StandInLLMServer([OllamaReply(["1"]), OllamaReply(["2"])]) as server:
        provider = ollama(server)
        assert (await provider.complete("x")).text == "1"
        await provider.aclose()
        assert (await provider.complete("x")).text == "2"  # a fresh client after aclose
        await provider.aclose()
    assert server.connections == 2


async def test_raw_reply_body_is_written_exactly() -> None:
    body = [b'{"message":{"content":"r', b'aw"},"done":true,"done_reason":"stop"}\n']
    async with serving([RawReply(body)]) as (server, provider):
        response = await provider.complete("x")
    assert response.text == "raw"
    assert server.exchanges[0].chunk_sizes == [len(b) for b in body]
