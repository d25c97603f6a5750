"""Bounded model output: a response longer than ``max_response_bytes`` (a line that never
ends, a huge piece, an endless stream) is an LLMError of kind "too_large", the connection
is closed, and a plan made from it fails; memory never grows with what the server sends."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from contextlib import aclosing
from typing import Any

import anyio
import httpx
import pytest

from kaizen_async import ErrorCode, KaizenValidationError, Planner, Session
from kaizen_async.llm import LLMChunk, LLMError, LLMProvider, OllamaProvider, OpenAICompatProvider
from kaizen_async.llm._http import DEFAULT_MAX_RESPONSE_BYTES
from kaizen_async.testing import (
    BodyReply,
    ErrorReply,
    Exchange,
    OllamaReply,
    OpenAIReply,
    RawReply,
    Reply,
    StandInLLMServer,
)

pytestmark = pytest.mark.anyio

CAP = 64 * 1024
PROVIDERS = {"ollama": OllamaProvider, "openai": OpenAICompatProvider}


def make(
    kind: str, server: StandInLLMServer, **kwargs: Any
) -> OllamaProvider | OpenAICompatProvider:
    if kind == "ollama":
        return OllamaProvider("m", server.url, **kwargs)
    return OpenAICompatProvider(server.url, "m", **kwargs)


def huge(kind: str, pieces: list[str], **kwargs: Any) -> Reply:
    return OllamaReply(pieces, **kwargs) if kind == "ollama" else OpenAIReply(pieces, **kwargs)


async def drain(provider: LLMProvider) -> list[str]:
    seen: list[str] = []
    async with aclosing(provider.stream("x")) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            assert isinstance(chunk, LLMChunk)
            seen.append(chunk.text)
    return seen


async def finished(exchange: Exchange) -> Exchange:
    with anyio.fail_after(5):
        await exchange.finished.wait()
    return exchange


def assert_too_large(error: LLMError, cap: int = CAP) -> None:
    assert error.details["kind"] == "too_large"
    assert error.details["max_response_bytes"] == cap
    assert f"max_response_bytes={cap}" in str(error)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_line_that_never_ends_is_cut_off_and_the_connection_closed(kind: str) -> None:
    # 64 chunks of 16 KiB with no newline (the small form of a 200 MB body without one)
    content_type = "application/x-ndjson" if kind == "ollama" else "text/event-stream"
    reply = RawReply([b"x" * 16384] * 64, content_type=content_type, delay=0.01)
    async with StandInLLMServer([reply]) as server, make(kind, server, max_response_bytes=CAP) as p:
        with pytest.raises(LLMError) as caught:
            await drain(p)
        exchange = await finished(server.exchanges[0])
    assert_too_large(caught.value)
    assert exchange.client_disconnected and not exchange.completed
    assert len(exchange.chunk_sizes) < 64  # the rest was never sent: nobody read it


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_huge_piece_fails_after_the_pieces_before_it(kind: str) -> None:
    replies = [huge(kind, ["ok", "x" * 100_000, "never"]), huge(kind, ["fine"])]
    async with StandInLLMServer(replies) as server, make(kind, server, max_response_bytes=CAP) as p:
        seen: list[str] = []
        with pytest.raises(LLMError) as caught:
            async with aclosing(p.stream("x")) as stream:  # type: ignore[type-var]
                async for chunk in stream:
                    seen.append(chunk.text)
        assert seen == ["ok"]
        assert_too_large(caught.value)
        # the cut-off connection was closed, not put back in the pool: a new one is made
        assert (await p.complete("y")).text == "fine"
        await finished(server.exchanges[0])
    assert server.connections == 2


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_the_bound_is_the_whole_body_exactly(kind: str) -> None:
    reply = huge(kind, [f"piece {i} " for i in range(200)])
    async with StandInLLMServer([reply, reply, reply]) as server:
        async with make(kind, server) as p:
            text = (await p.complete("x")).text
        body = sum(server.exchanges[0].chunk_sizes)
        assert body > len(text)  # every line or event counts, not only the text
        async with make(kind, server, max_response_bytes=body) as p:
            assert (await p.complete("x")).text == text
        async with make(kind, server, max_response_bytes=body - 1) as p:
            with pytest.raises(LLMError) as caught:
                await p.complete("x")
    assert_too_large(caught.value, body - 1)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_other_bodies_are_bounded_too(kind: str) -> None:
    path = "/api/tags" if kind == "ollama" else "/v1/models"
    async with StandInLLMServer() as server, make(kind, server, max_response_bytes=CAP) as p:
        server.route(path, BodyReply(200, {"models": [], "data": [], "pad": "x" * 100_000}))
        with pytest.raises(LLMError) as caught:
            await p.list_models()
        assert_too_large(caught.value)
        # an HTTP error body is read only as far as its message needs
        server.script(ErrorReply(500, {"error": "overloaded " + "x" * 1_000_000}))
        with pytest.raises(LLMError) as status:
            await p.complete("x")
    assert status.value.status == 500 and status.value.details["kind"] == "http_status"
    assert "answered HTTP 500" in str(status.value) and len(str(status.value)) < 3000


def test_the_default_bound_and_bad_bounds() -> None:
    assert DEFAULT_MAX_RESPONSE_BYTES == 4 * 1024 * 1024
    for provider_class in PROVIDERS.values():
        assert provider_class("http://127.0.0.1:1").max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    assert OllamaProvider(max_response_bytes=10).max_response_bytes == 10
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(KaizenValidationError):
            OllamaProvider(max_response_bytes=bad)  # type: ignore[arg-type]
        with pytest.raises(KaizenValidationError):
            OpenAICompatProvider("http://x", max_response_bytes=bad)  # type: ignore[arg-type]


def plan_text(*keys: str) -> str:
    return json.dumps({"steps": [{"capability": "reverse", "params": {"key": k}} for k in keys]})


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_plan_past_the_bound_fails(kind: str) -> None:
    whole = plan_text("a", "b")
    first_step = whole[: whole.index("}") + 2]  # step 0 closed, then ", "
    flood = "x" * 100_000
    replies = [
        huge(kind, [first_step, flood], delay=0.01),  # some of the plan came: truncated
        huge(kind, [flood, whole], delay=0.01),  # nothing of it came: an LLM error
    ]
    async with (
        StandInLLMServer(replies) as server,
        make(kind, server, max_response_bytes=CAP) as llm,
        Session() as session,
    ):
        planner = Planner(llm, ["reverse"])
        stream = planner.stream("go", session)
        async with stream:
            calls = [call async for call in stream]
        assert [c.params for c in calls] == [{"key": "a"}]  # the step that closed in time
        cut = stream.result
        nothing = await planner.plan("go", session)
        for exchange in server.exchanges:
            await finished(exchange)
    assert cut is not None and not cut.success
    assert cut.error_code is ErrorCode.PLAN_TRUNCATED
    assert not nothing.success and nothing.error_code is ErrorCode.PLAN_LLM_ERROR
    for result in (cut, nothing):
        assert result.error is not None
        assert result.error["details"]["llm_details"]["kind"] == "too_large"
    assert all(e.client_disconnected and not e.completed for e in server.exchanges)


# -- compressed bodies: bounded by what they inflate to -----------------------------------------

CHAT = {
    "ollama": ("/api/chat", "application/x-ndjson"),
    "openai": ("/v1/chat/completions", "text/event-stream"),
}


def compress(data: bytes, coding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw deflate": -15}[coding]
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return encoder.compress(data) + encoder.flush()


def compressed(data: bytes, coding: str, **kwargs: Any) -> RawReply:
    """A server that compresses whatever the request asked for (4 KiB chunks)."""
    body = compress(data, coding)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    header = "deflate" if coding == "raw deflate" else coding
    return RawReply(chunks, headers={"Content-Encoding": header}, **kwargs)


async def plain_body(kind: str, reply: Reply) -> bytes:
    """The uncompressed body the stand-in server sends for ``reply``."""
    path, _ = CHAT[kind]
    async with StandInLLMServer([reply]) as server, httpx.AsyncClient() as client:
        response = await client.post(server.url + path, json={"model": "m", "stream": True})
        return response.content


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_compressed_body_is_bounded_by_what_it_inflates_to(kind: str) -> None:
    # 32 MiB of one line, gzip-compressed to ~32 KiB: httpx inflated each network read whole
    # before the bytes were counted (a 200 MB body peaked at ~178 MiB); now at most one
    # 64 KiB step is inflated past the bound
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"x" * (1024 * 1024)
    body = b"".join(encoder.compress(block) for _ in range(32)) + encoder.flush()
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    _, content_type = CHAT[kind]
    reply = RawReply(chunks, content_type=content_type, headers={"Content-Encoding": "gzip"})
    replies = [huge(kind, ["warm-up"]), reply]  # first use imports and caches what it needs
    async with StandInLLMServer(replies) as server, make(kind, server, max_response_bytes=CAP) as p:
        assert (await p.complete("x")).text == "warm-up"
        tracemalloc.start()
        try:
            with pytest.raises(LLMError) as caught:
                await drain(p)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        exchange = await finished(server.exchanges[1])
    assert_too_large(caught.value)
    assert peak < 2 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a {CAP} byte bound"
    assert exchange.request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw deflate"])
@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_server_that_compresses_anyway_is_decoded(kind: str, coding: str) -> None:
    pieces = [f"piece {i} " for i in range(300)]
    plain = await plain_body(kind, huge(kind, pieces))
    _, content_type = CHAT[kind]
    replies = [
        compressed(plain, coding, content_type=content_type),
        compressed(plain, coding, content_type=content_type),
    ]
    async with StandInLLMServer(replies) as server:
        async with make(kind, server, max_response_bytes=len(plain)) as p:
            assert (await p.complete("x")).text == "".join(pieces)
        async with make(kind, server, max_response_bytes=len(plain) - 1) as p:
            with pytest.raises(LLMError) as caught:  # the bound counts the inflated bytes
                await p.complete("x")
    assert_too_large(caught.value, len(plain) - 1)
    assert all(r.headers["accept-encoding"] == "identity" for r in server.requests)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_other_compressed_bodies_are_bounded_too(kind: str) -> None:
    path = "/api/tags" if kind == "ollama" else "/v1/models"
    listing = json.dumps({"models": [], "data": [], "pad": "x" * 100_000}).encode()
    async with StandInLLMServer() as server, make(kind, server, max_response_bytes=CAP) as p:
        server.route(path, compressed(listing, "gzip", content_type="application/json"))
        with pytest.raises(LLMError) as caught:
            await p.list_models()
    assert_too_large(caught.value)
    assert server.requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_a_coding_that_is_not_decoded_here_is_refused(kind: str) -> None:
    plain = await plain_body(kind, huge(kind, ["hello"]))
    _, content_type = CHAT[kind]
    replies: list[Reply] = [
        RawReply([plain], content_type=content_type, headers={"Content-Encoding": coding})
        for coding in ("br", "zstd", "gzip, gzip")
    ]
    replies.append(  # not gzip at all: says so instead of parsing garbage
        RawReply([plain], content_type=content_type, headers={"Content-Encoding": "gzip"})
    )
    async with StandInLLMServer(replies) as server, make(kind, server) as p:
        for _ in replies:
            with pytest.raises(LLMError) as caught:
                await p.complete("x")
            assert caught.value.details["kind"] == "protocol"
            assert "decode" in str(caught.value)
        # an error status says what matters, its body decoded if it can be
        overloaded = b'{"error": "overloaded"}'
        server.script(
            compressed(overloaded, "gzip", status=500, content_type="application/json"),
            RawReply([overloaded], status=503, headers={"Content-Encoding": "br"}),
        )
        for status, message in ((500, "answered HTTP 500: overloaded"), (503, "HTTP 503")):
            with pytest.raises(LLMError) as caught:
                await p.complete("x")
            assert caught.value.details["kind"] == "http_status"
            assert caught.value.status == status and message in str(caught.value)
