"""Planner and PlanStream: streamed, validated plans; failures are results."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel, ValidationError

from kaizen_async import EntryType, ErrorCode, LLMError, Session
from kaizen_async._planner import Planner, PlanResult, PlanStream
from kaizen_async._types import CapabilityCall, CapabilitySpec
from kaizen_async.llm import OllamaProvider, ScriptedProvider
from kaizen_async.llm._base import LLMChunk, LLMProvider, LLMResponse, Message
from kaizen_async.testing import OllamaReply, StandInLLMServer

pytestmark = pytest.mark.anyio


class KeyParams(BaseModel):
    key: str


class CountParams(BaseModel):
    key: str
    times: int = 1


REVERSE = CapabilitySpec(
    name="reverse",
    description="Reverse the text stored under a state key.",
    params_schema=KeyParams.model_json_schema(),
    params_model=KeyParams,
)
REPEAT = CapabilitySpec(
    name="repeat", description="Repeat the text a number of times.", params_model=CountParams
)
SPECS: list[CapabilitySpec | str] = [REVERSE, REPEAT, "uppercase"]


def plan_json(*steps: tuple[str, dict[str, Any]], indent: int | None = None) -> str:
    return json.dumps({"steps": [{"capability": c, "params": p} for c, p in steps]}, indent=indent)


TWO_STEPS = plan_json(("reverse", {"key": "text"}), ("uppercase", {"key": "text"}))


class ChunkProvider(LLMProvider):
    """Streams the given chunks, then a final chunk, an error, or nothing (a drop).

    Records how many chunks it has handed out and whether its stream was closed.
    """

    name = "chunky"

    def __init__(
        self,
        chunks: list[str],
        *,
        end: str = "done",
        done_reason: str = "stop",
        error: LLMError | None = None,
    ) -> None:
        self.chunks = chunks
        self.end = end
        self.done_reason = done_reason
        self.error = error or LLMError("connection reset", provider="chunky", status=502)
        self.sent = 0
        self.closed = False
        self.calls = 0

    @property
    def model_name(self) -> str:
        return "chunky-1"

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
        self.calls += 1
        return self._gen()

    async def _gen(self) -> AsyncGenerator[LLMChunk, None]:
        try:
            for text in self.chunks:
                await anyio.lowlevel.checkpoint()
                self.sent += 1
                yield LLMChunk(text=text)
            if self.end == "error":
                raise self.error
            if self.end == "done":
                response = LLMResponse(
                    text="".join(self.chunks),
                    model=self.model_name,
                    provider=self.name,
                    done_reason=self.done_reason,
                )
                yield LLMChunk(done=True, response=response)
        finally:
            self.closed = True


async def collect(stream: PlanStream) -> list[CapabilityCall]:
    return [call async for call in stream]


# -- PlanResult ---------------------------------------------------------------------------


def test_plan_result_constructors() -> None:
    calls = [CapabilityCall(capability="reverse", params={"key": "t"})]
    ok = PlanResult.ok(calls, "raw", plan_id="p1")
    assert ok.success and ok.calls == calls and ok.error is None
    assert ok.raw_response == "raw" and ok.plan_id == "p1" and ok.error_code is None
    fail = PlanResult.fail(ErrorCode.PLAN_TRUNCATED, "cut", details={"a": 1}, raw_response="x")
    assert not fail.success and fail.calls == []
    assert fail.error == {"error_code": "plan_truncated", "message": "cut", "details": {"a": 1}}
    assert fail.error_code is ErrorCode.PLAN_TRUNCATED
    assert len(fail.plan_id) == 32 and int(fail.plan_id, 16) >= 0
    assert PlanResult.fail("plan_llm_error", "m").error == {
        "error_code": "plan_llm_error",
        "message": "m",
    }
    with pytest.raises(ValidationError):
        PlanResult(success=True, error={"error_code": "x", "message": "y"})
    with pytest.raises(ValidationError):
        PlanResult(success=False)
    with pytest.raises(ValidationError):
        ok.success = False


# -- configuration ----------------------------------------------------------------------------


def test_capabilities_from_specs_and_names() -> None:
    planner = Planner(ScriptedProvider([]), [REVERSE, "uppercase", "reverse", "uppercase"])
    assert [s.name for s in planner.capabilities] == ["reverse", "uppercase"]
    assert planner.capabilities[0] is REVERSE
    assert planner.capabilities[1] == CapabilitySpec(name="uppercase")
    planner.capabilities.clear()  # a copy
    assert len(planner.capabilities) == 2
    planner.add_capability("uppercase")
    planner.add_capability(CapabilitySpec(name="reverse", description="other"))
    assert [s.name for s in planner.capabilities] == ["reverse", "uppercase"]
    assert planner.capabilities[0] is REVERSE
    planner.add_capability(REPEAT)
    assert [s.name for s in planner.capabilities] == ["reverse", "uppercase", "repeat"]
    planner.set_capabilities(["a", "b", "a"])
    assert [s.name for s in planner.capabilities] == ["a", "b"]
    assert Planner(ScriptedProvider([])).capabilities == []
    with pytest.raises(TypeError):
        planner.add_capability(3)  # type: ignore[arg-type]


async def test_request_carries_prompt_format_and_options() -> None:
    provider = ScriptedProvider([TWO_STEPS])
    planner = Planner(provider, SPECS)
    result = await planner.plan("reverse it, then shout")
    assert result.success
    [request] = provider.requests
    system, user = request["messages"]
    assert user == {"role": "user", "content": "reverse it, then shout"}
    assert system["role"] == "system"
    prompt = system["content"]
    assert prompt == planner.system_prompt
    for spec in planner.capabilities:
        assert f"- {spec.name}: " in prompt
    assert "Reverse the text stored under a state key." in prompt
    assert "Repeat the text a number of times." in prompt
    assert json.dumps(KeyParams.model_json_schema(), separators=(",", ":")) in prompt
    assert json.dumps(CountParams.model_json_schema(), separators=(",", ":")) in prompt
    assert '{"type":"object"}' in prompt  # uppercase: a name only
    assert "ONLY a JSON object" in prompt and '{"steps": []}' in prompt
    assert request["format"] == planner.format_schema
    step_schema = request["format"]["properties"]["steps"]["items"]
    assert step_schema["properties"]["capability"]["enum"] == ["reverse", "repeat", "uppercase"]
    assert step_schema["required"] == ["capability", "params"]
    assert request["format"]["required"] == ["steps"]
    assert request["options"] == {"temperature": 0}


async def test_options_override_and_custom_prompt() -> None:
    provider = ScriptedProvider([TWO_STEPS])
    planner = Planner(
        provider,
        ["reverse", "uppercase"],
        options={"temperature": 0.3, "num_predict": 256},
        system_prompt="Plan with:\n{capabilities}\nJSON only.",
    )
    assert (await planner.plan("x")).success
    [request] = provider.requests
    assert request["options"] == {"temperature": 0.3, "num_predict": 256}
    system = request["messages"][0]["content"]
    assert system.startswith("Plan with:\n- reverse: (no description)")
    assert system.endswith("JSON only.")
    assert planner.options == {"temperature": 0.3, "num_predict": 256}


# -- success ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 1000])
async def test_plan_two_steps(chunk_size: int) -> None:
    planner = Planner(ScriptedProvider([TWO_STEPS], chunk_size=chunk_size), SPECS)
    result = await planner.plan("reverse then upper")
    assert result.success, result.error
    assert result.calls == [
        CapabilityCall(capability="reverse", params={"key": "text"}),
        CapabilityCall(capability="uppercase", params={"key": "text"}),
    ]
    assert result.raw_response == TWO_STEPS
    assert len(result.plan_id) == 32


async def test_prose_and_fence_around_the_plan() -> None:
    reply = "Sure, here is the plan:\n```json\n" + plan_json(("reverse", {"key": "t"}), indent=2)
    reply += "\n```\n"
    result = await Planner(ScriptedProvider([reply]), SPECS).plan("x")
    assert result.success
    assert result.calls == [CapabilityCall(capability="reverse", params={"key": "t"})]
    assert result.raw_response == reply


@pytest.mark.parametrize(
    "after",
    [
        "\n```\nAnything else?",
        "\n" + plan_json(("uppercase", {"key": "t"})),  # a second plan
        '[{"capability": "uppercase", "params": {}}]',
        "\nDone.",
    ],
)
async def test_a_reply_is_one_plan(after: str) -> None:
    fence = "```json\n" if after.startswith("\n```") else ""
    reply = fence + plan_json(("reverse", {"key": "t"})) + after
    result = await Planner(ScriptedProvider([reply], chunk_size=4), SPECS).plan("x")
    assert not result.success and result.calls == []
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert result.error is not None
    assert "a reply holds one plan, but text follows it" in result.error["message"]
    # the raw response, up to where it went wrong (the model is stopped there)
    assert result.raw_response is not None
    assert reply.startswith(result.raw_response)
    assert len(result.raw_response) > len(reply) - len(after)


async def test_a_streamed_plan_with_text_after_it_fails_at_its_end(session: Session) -> None:
    reply = plan_json(("reverse", {"key": "a"}), ("uppercase", {"key": "b"}))
    reply += plan_json(("uppercase", {"key": "c"}))
    provider = ChunkProvider(pieces_of(reply, 6))
    async with Planner(provider, SPECS).stream("x", session) as stream:
        calls = await collect(stream)  # the steps came as they closed
        assert [c.capability for c in calls] == ["reverse", "uppercase"]
        result = stream.result
    assert result is not None and not result.success
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert provider.closed and provider.sent < len(pieces_of(reply, 6))  # stopped early
    [failed] = await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])
    assert failed.content["error"] == result.error
    assert await session.get_trajectory(entry_types=[EntryType.PLAN_CREATED]) == []


@pytest.mark.parametrize("reply", ['{"steps": []}', '{"steps":[ ]}\n', "[]"])
async def test_empty_steps_list_is_an_empty_plan(reply: str) -> None:
    result = await Planner(ScriptedProvider([reply]), SPECS).plan("say hi")
    assert result.success
    assert result.calls == []


async def test_params_may_be_omitted_and_defaults_stay_out() -> None:
    reply = (
        '{"steps": [{"capability": "uppercase"}, {"capability": "repeat", "params": {"key": "k"}}]}'
    )
    result = await Planner(ScriptedProvider([reply]), SPECS).plan("x")
    assert result.success
    assert [c.params for c in result.calls] == [{}, {"key": "k"}]


async def test_length_stop_after_a_complete_plan_is_still_a_plan() -> None:
    provider = ScriptedProvider([TWO_STEPS], done_reason="length")
    result = await Planner(provider, SPECS).plan("x")
    assert result.success
    assert len(result.calls) == 2


async def test_plan_id_given() -> None:
    planner = Planner(ScriptedProvider([TWO_STEPS, "none"]), SPECS)
    assert (await planner.plan("x", plan_id="plan-7")).plan_id == "plan-7"
    async with planner.stream("y", plan_id="plan-8") as stream:
        assert stream.plan_id == "plan-8"
        assert (await stream.complete()).plan_id == "plan-8"


# -- failures are results ----------------------------------------------------------------------


async def test_no_capabilities_does_not_call_the_model(session: Session) -> None:
    provider = ScriptedProvider([TWO_STEPS])
    planner = Planner(provider)
    result = await planner.plan("reverse", session)
    assert not result.success
    assert result.error_code is ErrorCode.PLAN_GENERATION_FAILED
    assert result.raw_response is None
    assert provider.requests == [] and provider.remaining == 1
    async with planner.stream("again") as stream:
        assert await collect(stream) == []
        assert stream.result is not None and not stream.result.success
    assert provider.requests == []
    entries = await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])
    assert [e.content["error"]["error_code"] for e in entries] == ["plan_generation_failed"]
    assert await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE]) == []


@pytest.mark.parametrize(
    "reply", ["none", "No.", "There is nothing to do, so no steps are needed.", "", "  \n"]
)
async def test_prose_is_not_an_empty_plan(reply: str) -> None:
    result = await Planner(ScriptedProvider([reply]), SPECS).plan("do nothing")
    assert not result.success
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert result.raw_response == reply


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ('{"plan": []}', 'no "steps"'),
        ('{"steps": {"capability": "reverse"}}', "must be an array"),
        ('{"steps": ["reverse"]}', "not a JSON object"),
        ('{"steps": [{"capability": "reverse", "params": {"key": "t"}} {"x": 1}]}', "expected ','"),
        ('{"steps": [{"params": {}}]}', 'no "capability"'),
        ('{"steps": [{"capability": 7, "params": {}}]}', 'no "capability"'),
        ('{"steps": [{"capability": "uppercase", "params": null}]}', "not an object (null)"),
        ('{"steps": [{"capability": "uppercase", "params": [1]}]}', "not an object (list)"),
        ('{"steps": [{"capability": "uppercase", "params": {}, "why": "x"}]}', "unexpected keys"),
        ('{"steps": [{"capability": "uppercase", "params": {"n": NaN}}]}', "not valid JSON"),
        ('{"steps": [{"capability": "uppercase", "params": {"n": 1e999}}]}', "storable JSON"),
        (
            '{"steps": [{"capability": "uppercase", "params": {"n": 123456789012345678901}}]}',
            "storable",
        ),
        ('{"steps": [], "extra": tru}', "malformed JSON"),
        ('{"steps": [{"capability": "uppercase", "params": {}}', "incomplete"),
    ],
)
async def test_invalid_output_is_plan_invalid_format(reply: str, fragment: str) -> None:
    result = await Planner(ScriptedProvider([reply], chunk_size=5), SPECS).plan("x")
    assert not result.success
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT, result.error
    assert fragment in result.error["message"], result.error  # type: ignore[index]
    assert result.raw_response is not None and reply.startswith(result.raw_response[:5])


async def test_unknown_capability_fails_with_the_raw_response() -> None:
    reply = plan_json(
        ("reverse", {"key": "text"}), ("delete_everything", {}), ("uppercase", {"key": "text"})
    )
    provider = ScriptedProvider([reply], chunk_size=4)
    async with Planner(provider, SPECS).stream("x") as stream:
        calls = await collect(stream)
    assert [c.capability for c in calls] == ["reverse"]  # nothing after the bad step
    result = stream.result
    assert result is not None and not result.success
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert result.error is not None
    assert result.error["message"].startswith("Unknown capability 'delete_everything'")
    assert result.error["details"]["available"] == ["reverse", "repeat", "uppercase"]
    assert result.error["details"]["step_index"] == 1
    assert result.raw_response is not None and "delete_everything" in result.raw_response


async def test_invalid_params_fail_with_pydantic_details() -> None:
    reply = plan_json(("reverse", {"key": 5}))
    result = await Planner(ScriptedProvider([reply]), SPECS).plan("x")
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert result.error is not None
    assert "Input should be a valid string" in result.error["message"]
    [error] = result.error["details"]["errors"]
    assert error == {"loc": ["key"], "msg": "Input should be a valid string", "type": "string_type"}
    assert result.raw_response == reply


@pytest.mark.parametrize(
    "params",
    [{"key": "k", "times": "3"}, {"key": "k", "times": 2.0}, {"times": 1}, {"key": None}],
)
async def test_params_are_validated_strictly(params: dict[str, Any]) -> None:
    result = await Planner(ScriptedProvider([plan_json(("repeat", params))]), SPECS).plan("x")
    assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert result.error is not None and result.error["details"]["errors"]


async def test_an_invalid_step_stops_the_stream_at_once() -> None:
    bad = plan_json(("reverse", {"key": "a"}), ("reverse", {"nope": 1}), ("uppercase", {}))
    provider = ChunkProvider([bad[:60], bad[60:]], end="done")
    async with Planner(provider, SPECS).stream("x") as stream:
        assert [c.params for c in await collect(stream)] == [{"key": "a"}]
        assert stream.result is not None and not stream.result.success
    assert provider.closed


async def test_llm_error_before_any_output(session: Session) -> None:
    error = LLMError("model 'm' not found", provider="ollama", status=404)
    provider = ScriptedProvider([error])
    result = await Planner(provider, SPECS).plan("x", session)
    assert result.error_code is ErrorCode.PLAN_LLM_ERROR
    assert result.error is not None
    assert result.error["message"] == "LLM error: [ollama] model 'm' not found"
    assert result.error["details"] == {"provider": "ollama", "status": 404}
    assert result.raw_response == ""
    types = [e.entry_type for e in await session.get_trajectory()]
    assert types[-2:] == [EntryType.LLM_EXCHANGE, EntryType.PLAN_FAILED]


async def test_llm_error_mid_stream_after_one_step() -> None:
    text = plan_json(("reverse", {"key": "a"}), ("uppercase", {"key": "b"}))
    cut = text.index("uppercase")
    provider = ChunkProvider([text[:20], text[20:cut]], end="error")
    async with Planner(provider, SPECS).stream("x") as stream:
        calls = await collect(stream)
    assert calls == [CapabilityCall(capability="reverse", params={"key": "a"})]
    result = stream.result
    assert result is not None and not result.success
    assert result.error_code is ErrorCode.PLAN_TRUNCATED
    assert result.error is not None
    assert "[chunky] connection reset" in result.error["message"]
    assert result.error["details"]["provider"] == "chunky"
    assert result.error["details"]["status"] == 502
    assert result.error["details"]["steps_received"] == 1
    assert result.raw_response == text[:cut]


async def test_truncated_at_length_yields_the_closed_steps_only(session: Session) -> None:
    text = plan_json(("reverse", {"key": "a"}), ("uppercase", {"key": "b"}))
    cut = text.index('"b"') + 2  # inside the second step
    provider = ScriptedProvider([text[:cut]], chunk_size=3, done_reason="length")
    async with Planner(provider, SPECS).stream("x", session) as stream:
        calls = await collect(stream)
    assert calls == [CapabilityCall(capability="reverse", params={"key": "a"})]
    result = stream.result
    assert result is not None
    assert result.error_code is ErrorCode.PLAN_TRUNCATED
    assert result.raw_response == text[:cut]
    assert result.error is not None and result.error["details"]["done_reason"] == "length"
    [failed] = await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])
    assert failed.content["error"]["error_code"] == "plan_truncated"
    assert failed.content["raw_response"] == text[:cut]


@pytest.mark.parametrize(("chunks", "code"), [(["{"], "plan_truncated"), ([], "plan_llm_error")])
async def test_stream_dropped_without_a_final_response(chunks: list[str], code: str) -> None:
    provider = ChunkProvider(chunks, end="drop")
    result = await Planner(provider, SPECS).plan("x")
    assert result.error is not None and result.error["error_code"] == code


async def test_other_exceptions_propagate() -> None:
    class Broken(ChunkProvider):
        def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[LLMChunk]:
            raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await Planner(Broken([]), SPECS).plan("x")


# -- streaming -----------------------------------------------------------------------------------


async def test_each_step_is_yielded_when_its_object_closes() -> None:
    text = plan_json(
        ("reverse", {"key": "a"}), ("uppercase", {"key": "}b{"}), ("reverse", {"key": "c"})
    )
    pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
    provider = ChunkProvider(pieces)
    planner = Planner(provider, SPECS)
    seen: list[tuple[str, int]] = []
    async with planner.stream("x") as stream:
        async for call in stream:
            seen.append((call.params["key"], provider.sent))
            assert stream.result is None  # the model is still writing
    # the chunk holding each step's closing brace (after the key's value and the params'
    # brace): no sooner, no later
    closes = [text.index(key) + len(key) + 1 for key in ('"a"', '"}b{"', '"c"')]
    assert seen == [(k, pos // 5 + 1) for k, pos in zip(["a", "}b{", "c"], closes, strict=True)]
    assert stream.result is not None and stream.result.success


async def test_complete_buffers_the_steps_not_yet_yielded() -> None:
    text = plan_json(
        ("reverse", {"key": "a"}), ("uppercase", {"key": "b"}), ("repeat", {"key": "c"})
    )
    provider = ChunkProvider([text[i : i + 7] for i in range(0, len(text), 7)])
    async with Planner(provider, SPECS).stream("x") as stream:
        first = await stream.__anext__()
        assert first.capability == "reverse"
        assert stream.result is None
        result = await stream.complete()
        assert result.success and stream.result is result
        assert provider.sent == len(provider.chunks)  # the whole output was read
        assert [c.capability for c in result.calls] == ["reverse", "uppercase", "repeat"]
        assert [c.capability async for c in stream] == ["uppercase", "repeat"]
        assert await stream.complete() is result  # idempotent
        assert [c.capability async for c in stream] == []


async def test_complete_before_iterating_then_iterate_all() -> None:
    provider = ScriptedProvider([TWO_STEPS])
    async with Planner(provider, SPECS).stream("x") as stream:
        result = await stream.complete()
        assert result.success
        assert [c.capability for c in await collect(stream)] == ["reverse", "uppercase"]
        assert stream.calls == result.calls


async def test_complete_reports_a_failure_found_later() -> None:
    text = plan_json(("reverse", {"key": "a"}), ("nope", {}))
    async with Planner(ChunkProvider([text[:45], text[45:]]), SPECS).stream("x") as stream:
        result = await stream.complete()
        assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
        # the step validated before the failure is still handed out, in order
        assert [c.capability for c in await collect(stream)] == ["reverse"]


async def test_closing_early_closes_the_model_stream(session: Session) -> None:
    text = plan_json(("reverse", {"key": "a"}), ("uppercase", {"key": "b"}))
    provider = ChunkProvider([text[i : i + 4] for i in range(0, len(text), 4)])
    stream = Planner(provider, SPECS).stream("x", session)
    async for _ in stream:
        break
    await stream.aclose()
    assert provider.closed
    assert provider.sent < len(provider.chunks)
    result = stream.result
    assert result is not None and result.error_code is ErrorCode.PLAN_GENERATION_FAILED
    assert [c async for c in stream] == []
    assert await stream.complete() is result
    await stream.aclose()  # again: nothing happens
    [failed] = await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])
    assert failed.content["plan_id"] == stream.plan_id


async def test_async_with_closes_on_exit_and_on_error() -> None:
    provider = ChunkProvider([TWO_STEPS[:30], TWO_STEPS[30:]])
    stream = Planner(provider, SPECS).stream("x")

    async def consume() -> None:
        async with stream:
            await stream.__anext__()
            raise KeyError("consumer failed")

    with pytest.raises(KeyError):
        await consume()
    assert provider.closed
    assert stream.result is not None and not stream.result.success


async def test_cancelled_consumer_closes_the_model(session: Session) -> None:
    provider = ScriptedProvider([TWO_STEPS], chunk_size=1, delay_per_chunk=0.01)
    planner = Planner(provider, SPECS)
    with anyio.move_on_after(0.1):
        async with planner.stream("x", session) as stream:
            await stream.complete()
    result = stream.result
    assert result is not None
    assert result.error_code is ErrorCode.PLAN_GENERATION_FAILED
    entries = await session.get_trajectory()
    assert [e.entry_type for e in entries][-2:] == [EntryType.LLM_EXCHANGE, EntryType.PLAN_FAILED]
    assert entries[-2].content["aborted"] is True


async def test_one_task_iterates_while_another_awaits_complete() -> None:
    steps = [("reverse", {"key": f"k{i}"}) for i in range(5)]
    provider = ScriptedProvider([plan_json(*steps)], chunk_size=3, delay_per_chunk=0.001)
    received: list[str] = []
    results: list[PlanResult] = []
    async with Planner(provider, SPECS).stream("x") as stream:

        async def iterate() -> None:
            async for call in stream:
                received.append(call.params["key"])
                await anyio.sleep(0.005)

        async def wait_for_all() -> None:
            results.append(await stream.complete())

        async with anyio.create_task_group() as tg:
            tg.start_soon(iterate)
            tg.start_soon(wait_for_all)
    assert received == [f"k{i}" for i in range(5)]
    assert results[0].success
    assert len(results[0].calls) == 5


async def test_capabilities_are_fixed_when_the_stream_starts() -> None:
    planner = Planner(ScriptedProvider([TWO_STEPS]), SPECS)
    stream = planner.stream("x")
    planner.set_capabilities(["other"])
    async with stream:
        assert (await stream.complete()).success


async def test_steps_are_yielded_once_across_many_plans() -> None:
    replies = [plan_json(*[("reverse", {"key": f"k{i}-{j}"}) for j in range(i)]) for i in range(6)]
    planner = Planner(ScriptedProvider(replies, chunk_size=2), SPECS)
    for i in range(6):
        async with planner.stream(f"plan {i}") as stream:
            keys = [c.params["key"] async for c in stream]
        assert keys == [f"k{i}-{j}" for j in range(i)]
        assert stream.result is not None and stream.result.success


# -- recording -----------------------------------------------------------------------------------


async def test_plan_created_is_recorded_after_the_exchange() -> None:
    async with Session() as session:
        planner = Planner(ScriptedProvider([TWO_STEPS], model="m-1"), SPECS)
        result = await planner.plan("reverse then upper", session, plan_id="p-1")
        entries = await session.get_trajectory()
        assert [e.entry_type for e in entries] == [
            EntryType.SESSION_CREATED,
            EntryType.LLM_EXCHANGE,
            EntryType.PLAN_CREATED,
        ]
        exchange, created = entries[1], entries[2]
        assert exchange.content["response"] == TWO_STEPS
        assert exchange.content["request"]["format"] == planner.format_schema
        assert created.agent_id == "planner"
        assert created.content == {
            "plan_id": "p-1",
            "user_input": "reverse then upper",
            "calls": [
                {"capability": "reverse", "params": {"key": "text"}},
                {"capability": "uppercase", "params": {"key": "text"}},
            ],
            "model": "m-1",
        }
        assert result.plan_id == "p-1"


async def test_plan_failed_is_recorded() -> None:
    async with Session() as session:
        planner = Planner(ScriptedProvider(["none"]), SPECS)
        result = await planner.plan("do it", session, plan_id="p-2")
        entries = await session.get_trajectory()
        assert [e.entry_type for e in entries][-2:] == [
            EntryType.LLM_EXCHANGE,
            EntryType.PLAN_FAILED,
        ]
        failed = entries[-1]
        assert failed.agent_id == "planner"
        assert failed.content == {
            "plan_id": "p-2",
            "user_input": "do it",
            "error": result.error,
            "raw_response": "none",
        }


async def test_an_aborted_exchange_is_recorded_too() -> None:
    async with Session() as session:
        text = plan_json(("reverse", {"key": "a"}), ("nope", {}), ("uppercase", {"key": "b"}))
        planner = Planner(ScriptedProvider([text], chunk_size=4), SPECS)
        result = await planner.plan("x", session)
        assert result.error_code is ErrorCode.PLAN_INVALID_FORMAT
        exchanges = await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE])
        assert len(exchanges) == 1
        assert exchanges[0].content["aborted"] is True
        assert await session.verify() >= 3


# -- over the wire: OllamaProvider against the stand-in server ----------------------------------


def pieces_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize(
    ("reply_kwargs", "code"),
    [
        ({}, None),
        ({"error": "an error was encountered while running the model"}, "plan_truncated"),
        ({"drop": True}, "plan_truncated"),
        ({"done_reason": "length", "cut": True}, "plan_truncated"),
    ],
)
async def test_planner_over_ollama(reply_kwargs: dict[str, Any], code: str | None) -> None:
    text = plan_json(("reverse", {"key": 'te"x}t'}), ("uppercase", {"key": "b"}))
    reply_kwargs = dict(reply_kwargs)
    if reply_kwargs.pop("cut", False) or "error" in reply_kwargs or "drop" in reply_kwargs:
        text = text[: text.index('"b"')]  # the second step never closes
    reply = OllamaReply(pieces_of(text, 4), **reply_kwargs)
    async with (
        Session() as session,
        StandInLLMServer([reply], models=["m:1"]) as server,
        OllamaProvider("m:1", server.url) as provider,
    ):
        async with Planner(provider, SPECS).stream("x", session) as stream:
            calls = [c.params["key"] async for c in stream]
        result = stream.result
        assert result is not None
        [request] = server.requests
        assert request.json["format"]["properties"]["steps"]["items"]["properties"]["capability"][
            "enum"
        ] == ["reverse", "repeat", "uppercase"]
        assert request.json["options"]["temperature"] == 0
        types = [e.entry_type for e in await session.get_trajectory()]
    if code is None:
        assert result.success
        assert calls == ['te"x}t', "b"]
        assert types[-2:] == [EntryType.LLM_EXCHANGE, EntryType.PLAN_CREATED]
    else:
        assert calls == ['te"x}t']
        assert result.error is not None
        assert result.error["error_code"] == code
        assert result.raw_response == text
        assert types[-2:] == [EntryType.LLM_EXCHANGE, EntryType.PLAN_FAILED]
