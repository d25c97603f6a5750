from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel, field_validator

from agents import ReverseAgent, UppercaseAgent
from kaizen_async import (
    Agent,
    AgentInfo,
    CapabilityCall,
    Dispatcher,
    DispatchError,
    DispatchResult,
    EntryType,
    ErrorCode,
    Session,
    SessionClosedError,
    capability,
)

pytestmark = pytest.mark.anyio

STEP = [EntryType.PLAN_STEP_STARTED, EntryType.PLAN_STEP_COMPLETED]


async def _types(session: Session, since: int = 0) -> list[EntryType]:
    return [e.entry_type for e in await session.get_trajectory(since_seq=since)]


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        d.register(UppercaseAgent())
        yield d


class Recorder(Agent):
    """Records the order it is called in; can be slow, fail, or return junk."""

    agent_id = "recorder"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[Any] = []
        self.active = 0
        self.max_active = 0

    @capability("record")
    async def record(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await anyio.sleep(self.delay)
            self.calls.append(params.get("n"))
            return {"n": params.get("n")}
        finally:
            self.active -= 1

    @capability("boom")
    async def boom(self, session: Session, params: dict[str, Any]) -> None:
        await session.set("partial", "written before the crash")
        raise RuntimeError("kaboom")

    @capability("sleep")
    async def sleep(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        await session.append(self.agent_id, EntryType.SYSTEM_NOTE, {"sleeping": True})
        await anyio.sleep(params.get("seconds", 10))
        return {"slept": True}


class JunkAgent:
    """A protocol agent (no base class) whose invoke returns the wrong type."""

    def info(self) -> AgentInfo:
        return AgentInfo(agent_id="junk", name="Junk", version="0", capabilities=["junk"])

    async def invoke(self, capability: str, session: Session, params: dict[str, Any]) -> Any:
        return {"not": "an InvokeResult"}


async def test_quick_start_flow(dispatcher: Dispatcher, session: Session) -> None:
    await session.set("text", "hello world")
    first = await dispatcher.dispatch_single("reverse", session, {"key": "text"})
    assert first.success and first.result == {"original": "hello world", "reversed": "dlrow olleh"}
    await dispatcher.dispatch_single("uppercase", session, {"key": "text"})
    assert await session.get("text") == "DLROW OLLEH"


async def test_successful_step_footprint(dispatcher: Dispatcher, session: Session) -> None:
    await session.set("text", "abc")
    await dispatcher.dispatch_single("reverse", session, {"key": "text"}, plan_id="p1")
    entries = await session.get_trajectory(since_seq=2)
    assert [e.entry_type for e in entries] == [
        EntryType.PLAN_STEP_STARTED,
        EntryType.AGENT_INVOKED,
        EntryType.STATE_SET,
        EntryType.AGENT_COMPLETED,
        EntryType.PLAN_STEP_COMPLETED,
    ]
    assert entries[0].agent_id == "dispatcher"
    assert entries[0].content == {
        "plan_id": "p1",
        "step_index": 0,
        "capability": "reverse",
        "params": {"key": "text"},
    }
    completed = entries[-1].content
    assert completed["plan_id"] == "p1" and completed["step_index"] == 0
    assert completed["success"] is True
    assert completed["capability"] == "reverse"
    assert "cba" in completed["result_summary"]
    assert len(completed["result_summary"]) <= 200
    assert await session.verify() == 7


async def test_invalid_params_footprint(dispatcher: Dispatcher, session: Session) -> None:
    result = await dispatcher.dispatch_single("reverse", session, {"key": "missing"})
    assert result.error_code is ErrorCode.AGENT_INVALID_PARAMS
    assert await _types(session, 1) == STEP
    assert (await session.get_trajectory(1))[0].content["success"] is False


async def test_none_params_reach_agent_as_empty_dict(session: Session) -> None:
    agent = Recorder()
    async with Dispatcher() as d:
        d.register(agent)
        result = await d.dispatch_single("record", session)
    assert result.success and result.result == {"n": None}


async def test_unknown_capability_is_recorded_not_raised(
    dispatcher: Dispatcher, session: Session
) -> None:
    result = await dispatcher.dispatch_single("fly", session, {})
    assert not result.success
    assert result.agent_id == "dispatcher"
    assert result.error_code is ErrorCode.DISPATCH_NO_AGENT_FOR_CAPABILITY
    assert result.error["details"] == {  # type: ignore[index]
        "available_capabilities": ["reverse", "uppercase"],
        "step_index": 0,
    }
    assert await _types(session, 1) == STEP


@pytest.mark.parametrize("capability_name", ["", "   ", None, 5])
async def test_bad_capability_raises_before_recording(
    dispatcher: Dispatcher, session: Session, capability_name: Any
) -> None:
    with pytest.raises(DispatchError):
        await dispatcher.dispatch_single(capability_name, session, {})
    with pytest.raises(DispatchError):
        await dispatcher.dispatch_single("reverse", session, {"key": object()})
    assert await session.get_trajectory_length() == 1


async def test_registry(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    async with Dispatcher() as d:
        assert d.get_capabilities() == []
        d.register(UppercaseAgent())
        d.register(ReverseAgent())
        assert d.get_capabilities() == ["reverse", "uppercase"]
        assert d.has_capability("reverse") and not d.has_capability("x")
        assert [i.agent_id for i in d.get_registered_agents()] == [
            "uppercase_agent_v1",
            "reverse_agent_v1",
        ]
        specs = d.capability_specs()
        assert [s.name for s in specs] == ["reverse", "uppercase"]
        assert specs[0].params_schema["required"] == ["key"]

        class Other(Agent):
            agent_id = "other"

            @capability("reverse")
            async def rev(self, session: Session, params: dict[str, Any]) -> str:
                return "other"

        other = Other()
        with caplog.at_level(logging.WARNING, logger="kaizen_async"):
            d.register(other)
        assert any("capability_replaced" in r.getMessage() for r in caplog.records)
        assert d.get_agent_for_capability("reverse") is other
        result = await d.dispatch_single("reverse", session, {})
        assert result.result == "other"
        assert d.unregister("other") is True
        assert d.unregister("other") is False
        assert d.get_capabilities() == ["uppercase"]
        assert d.get_agent_for_capability("reverse") is None


async def test_register_before_entering_and_closed_dispatcher(session: Session) -> None:
    d = Dispatcher()
    d.register(ReverseAgent())
    with pytest.raises(SessionClosedError):
        await d.dispatch_single("reverse", session, {"key": "k"})
    async with d:
        await session.set("k", "ab")
        assert (await d.dispatch_single("reverse", session, {"key": "k"})).success
    with pytest.raises(SessionClosedError):
        await d.dispatch_single("reverse", session, {"key": "k"})
    with pytest.raises(SessionClosedError):
        d.register(UppercaseAgent())


async def test_dispatch_sequence(dispatcher: Dispatcher, session: Session) -> None:
    await session.set("text", "hello")
    result = await dispatcher.dispatch_sequence(
        [
            CapabilityCall(capability="reverse", params={"key": "text"}),
            {"capability": "uppercase", "params": {"key": "text"}},
        ],
        session,
        plan_id="plan",
    )
    assert isinstance(result, DispatchResult)
    assert result.success and result.failed_at is None and result.error is None
    assert result.executed_count == 2 and result.completed_indices == [0, 1]
    assert result.plan_id == "plan"
    assert await session.get("text") == "OLLEH"
    started = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_STARTED])
    assert [(e.content["plan_id"], e.content["step_index"]) for e in started] == [
        ("plan", 0),
        ("plan", 1),
    ]
    assert repr(result) == "DispatchResult(success=True, executed=2)"
    empty = await dispatcher.dispatch_sequence([], session)
    assert empty.success and empty.executed_count == 0


async def test_sequence_is_fail_fast(dispatcher: Dispatcher, session: Session) -> None:
    await session.set("text", "abc")
    result = await dispatcher.dispatch_sequence(
        [
            {"capability": "reverse", "params": {"key": "text"}},
            {"capability": "reverse", "params": {"key": "nope"}},
            {"capability": "uppercase", "params": {"key": "text"}},
        ],
        session,
    )
    assert not result.success
    assert result.failed_at == 1 and result.executed_count == 2
    assert result.error["error_code"] == "agent_invalid_params"  # type: ignore[index]
    assert result.completed_indices == [0]
    assert await session.get("text") == "cba"
    assert "failed_at=1" in repr(result)


@pytest.mark.parametrize(
    "bad",
    [
        {"params": {}},
        {"capability": ""},
        "reverse",
        {"capability": "reverse", "params": [1]},
        {"capability": "reverse", "params": {"x": object()}},
    ],
)
async def test_malformed_sequence_has_no_side_effects(
    dispatcher: Dispatcher, session: Session, bad: Any
) -> None:
    await session.set("text", "abc")
    length = await session.get_trajectory_length()
    with pytest.raises(DispatchError, match="call 1"):
        await dispatcher.dispatch_sequence(
            [{"capability": "reverse", "params": {"key": "text"}}, bad], session
        )
    assert await session.get_trajectory_length() == length
    assert await session.get("text") == "abc"


class CountParams(BaseModel):
    n: int


class Counter(Agent):
    agent_id = "counter"

    @capability("count", params=CountParams)
    async def count(self, session: Session, params: CountParams) -> int:
        await session.set("count", params.n)
        return params.n


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"capability": "fly", "params": {}}, ErrorCode.DISPATCH_NO_AGENT_FOR_CAPABILITY),
        ({"capability": "uppercase", "params": {}}, ErrorCode.AGENT_INVALID_PARAMS),
        ({"capability": "uppercase", "params": {"key": 5}}, ErrorCode.AGENT_INVALID_PARAMS),
        (
            {"capability": "uppercase", "params": {"key": "text", "extra": 1}},
            ErrorCode.AGENT_INVALID_PARAMS,
        ),
        ({"capability": "count", "params": {"n": "3"}}, ErrorCode.AGENT_INVALID_PARAMS),  # strict
    ],
)
async def test_sequence_that_cannot_run_is_refused_before_anything_runs(
    dispatcher: Dispatcher, session: Session, bad: dict[str, Any], code: ErrorCode
) -> None:
    dispatcher.register(Counter())
    await session.set("text", "abc")
    length = await session.get_trajectory_length()
    calls = [{"capability": "reverse", "params": {"key": "text"}}, bad]
    for run in (dispatcher.dispatch_sequence, dispatcher.resume_sequence):
        result = await run(calls, session, plan_id="P")
        assert not result.success
        assert result.failed_at == 1 and result.executed_count == 0 and result.results == []
        assert result.completed_indices == []
        assert result.plan_id == "P"
        assert result.error is not None and result.error["error_code"] == code.value
        assert result.error["details"]["step_index"] == 1
        assert result.to_dict()["failed_at"] == 1
        assert DispatchResult.from_dict(result.to_dict()).to_dict() == result.to_dict()
        assert f"error_code={code.value}" in repr(result)
        assert await session.get_trajectory_length() == length  # nothing recorded
        assert await session.get("text") == "abc"  # step 0 did not run


async def test_refusal_says_what_the_agent_would_say(
    dispatcher: Dispatcher, session: Session
) -> None:
    dispatcher.register(Counter())
    at_run_time = await dispatcher.dispatch_single("count", session, {"n": "3"})
    refused = await dispatcher.dispatch_sequence(
        [
            {"capability": "count", "params": {"n": 1}},
            {"capability": "count", "params": {"n": "3"}},
        ],
        session,
    )
    assert refused.error is not None and at_run_time.error is not None
    assert refused.error["message"] == at_run_time.error["message"]
    assert refused.error["details"] == {**at_run_time.error["details"], "step_index": 1}
    unknown = await dispatcher.dispatch_sequence([{"capability": "fly"}], session)
    assert unknown.error == {
        "error_code": "dispatch_no_agent_for_capability",
        "message": "No agent registered for capability 'fly'",
        "details": {"available_capabilities": ["count", "reverse", "uppercase"], "step_index": 0},
    }
    assert await session.get("count") is None


class Touchy(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def _crash(cls, value: int) -> int:
        if value < 0:
            raise TypeError("negative numbers upset this validator")
        return value


class TouchyAgent(Agent):
    agent_id = "touchy"

    @capability("touch", params=Touchy)
    async def touch(self, session: Session, params: Touchy) -> int:
        return params.n


async def test_a_params_model_that_crashes_refuses_the_plan(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(TouchyAgent())
        ok = await d.dispatch_sequence([{"capability": "touch", "params": {"n": 1}}], session)
        assert ok.success
        length = await session.get_trajectory_length()
        result = await d.dispatch_sequence(
            [
                {"capability": "touch", "params": {"n": 1}},
                {"capability": "touch", "params": {"n": -1}},
            ],
            session,
        )
    assert result.failed_at == 1 and result.executed_count == 0
    assert result.error is not None
    assert result.error["error_code"] == "agent_invalid_params"
    assert "TypeError: negative numbers upset this validator" in result.error["message"]
    assert await session.get_trajectory_length() == length


async def test_what_depends_on_the_session_is_checked_when_the_step_runs(
    dispatcher: Dispatcher, session: Session
) -> None:
    await session.set("text", "abc")
    result = await dispatcher.dispatch_sequence(
        [
            {"capability": "reverse", "params": {"key": "text"}},
            {"capability": "reverse", "params": {"key": "no such key"}},  # valid params
        ],
        session,
    )
    assert result.failed_at == 1 and result.executed_count == 2
    assert result.error is not None
    assert result.error["message"] == "No value found at key 'no such key'"
    assert await session.get("text") == "cba"


async def test_resume_does_not_check_the_steps_it_skips(session: Session) -> None:
    await session.set("a", "abc")
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        d.register(UppercaseAgent())
        calls = [
            {"capability": "uppercase", "params": {"key": "a"}},
            {"capability": "reverse", "params": {"key": "b"}},
        ]
        first = await d.dispatch_sequence(calls, session, plan_id="P")
        assert first.failed_at == 1 and first.executed_count == 2  # no value at "b" yet
        d.unregister("uppercase_agent_v1")  # step 0 is done: it needs no agent any more
        await session.set("b", "xyz")
        resumed = await d.resume_sequence(calls, session, plan_id="P")
        assert resumed.success, resumed.error
        assert resumed.results[0].result == {"resumed": True, "step_index": 0}
        assert await session.get("b") == "zyx"
        # a step that would run again (other params) needs its agent
        other = [{"capability": "uppercase", "params": {"key": "b"}}, calls[1]]
        refused = await d.resume_sequence(other, session, plan_id="P")
        assert refused.failed_at == 0 and refused.executed_count == 0
        assert refused.error is not None
        assert refused.error["error_code"] == "dispatch_no_agent_for_capability"
        assert await session.get("b") == "zyx"


async def test_agent_exception_then_agent_keeps_serving(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Recorder())
        failed = await d.dispatch_single("boom", session, {})
        assert failed.error_code is ErrorCode.AGENT_INVOCATION_FAILED
        assert failed.error["details"] == {  # type: ignore[index]
            "exception_type": "RuntimeError",
            "exception_message": "kaboom",
        }
        assert "RuntimeError: kaboom" in failed.error["message"]  # type: ignore[index]
        assert await session.get("partial") == "written before the crash"  # no rollback
        types = await _types(session, 1)
        assert types == [
            EntryType.PLAN_STEP_STARTED,
            EntryType.STATE_SET,
            EntryType.AGENT_FAILED,
            EntryType.PLAN_STEP_COMPLETED,
        ]
        failed_entry = (await session.get_trajectory(entry_types=[EntryType.AGENT_FAILED]))[0]
        assert failed_entry.agent_id == "recorder"
        assert failed_entry.content["exception_type"] == "RuntimeError"
        ok = await d.dispatch_single("record", session, {"n": 1})
        assert ok.success and ok.result == {"n": 1}


class Raiser(Agent):
    """Raises, at once or after suspending once."""

    agent_id = "raiser"

    @capability("raise")
    async def raise_(self, session: Session, params: dict[str, Any]) -> None:
        if params["after_a_wait"]:
            await anyio.lowlevel.checkpoint()  # the runner finishes the step in a coroutine
        raise _ERRORS[params["error"]]()


_ERRORS: dict[str, type[BaseException]] = {
    "value": ValueError,
    "cancelled": asyncio.CancelledError,
}


@pytest.mark.parametrize("error", ["value", "cancelled"])
@pytest.mark.parametrize("after_a_wait", [False, True])
async def test_a_capability_that_raises_at_once_or_after_a_wait_fails_its_step(
    session: Session, after_a_wait: bool, error: str, anyio_backend: str
) -> None:
    """A capability's exception is its step's failure, whether it was raised at the first
    step of its coroutine or after it suspended; on asyncio so is a CancelledError nobody
    asked for (the capability awaited a task that was cancelled, say): not a cancellation
    of the runner, which goes on serving."""
    if error == "cancelled" and anyio_backend != "asyncio":
        pytest.skip("only asyncio lets a capability raise a cancellation nobody asked for")
    async with Dispatcher() as d:
        d.register(Raiser())
        failed = await d.dispatch_single(
            "raise", session, {"after_a_wait": after_a_wait, "error": error}
        )
        assert failed.error_code is ErrorCode.AGENT_INVOCATION_FAILED
        assert failed.error["details"]["exception_type"] == _ERRORS[error].__name__  # type: ignore[index]
        assert await _types(session, 1) == [
            EntryType.PLAN_STEP_STARTED,
            EntryType.AGENT_FAILED,
            EntryType.PLAN_STEP_COMPLETED,
        ]
        again = await d.dispatch_single("raise", session, {"after_a_wait": True, "error": "value"})
        assert again.error_code is ErrorCode.AGENT_INVOCATION_FAILED  # the agent still serves


async def test_non_invoke_result_is_a_clear_failure(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(JunkAgent())
        result = await d.dispatch_single("junk", session, {})
    assert result.error_code is ErrorCode.AGENT_INVALID_RESULT
    assert "dict" in result.error["message"]  # type: ignore[index]


async def test_fifo_per_agent_under_64_callers(session: Session) -> None:
    agent = Recorder()
    async with Dispatcher(mailbox_size=8) as d:
        d.register(agent)
        order: list[int] = []

        async def caller(n: int) -> None:
            order.append(n)  # the order callers reach the mailbox
            await d.dispatch_single("record", session, {"n": n})

        async with anyio.create_task_group() as tg:
            for n in range(64):
                tg.start_soon(caller, n)
    assert agent.calls == order
    assert sorted(agent.calls) == list(range(64))
    assert agent.max_active == 1  # actor semantics
    await session.verify()


async def test_max_concurrency(session: Session) -> None:
    agent = Recorder(delay=0.05)
    async with Dispatcher() as d:
        d.register(agent, max_concurrency=4)
        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(d.dispatch_single, "record", session, {"n": n})
    assert agent.max_active == 4


async def test_backpressure_with_a_slow_agent(session: Session) -> None:
    # 30 callers, a mailbox of 2: the mailbox (what an actor would otherwise let grow
    # without bound) never holds more than 2 messages; the rest of the senders wait
    agent = Recorder(delay=0.01)
    async with Dispatcher() as d:
        d.register(agent, mailbox_size=2)
        peak = 0
        waiting_seen = 0

        async def watch() -> None:
            nonlocal peak, waiting_seen
            while True:
                stats = d.statistics("recorder")
                peak = max(peak, stats.current_buffer_used)
                waiting_seen = max(waiting_seen, stats.tasks_waiting_send)
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(d.dispatch_single, "record", session, {"n": n})
            outer.cancel_scope.cancel()
    assert peak == 2  # full, and never more than its bound
    assert waiting_seen >= 20  # senders waited instead of queueing without bound
    assert sorted(agent.calls) == list(range(30))  # and nothing was lost


async def test_timeout_footprint_and_agent_stays_usable(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Recorder())
        result = await d.dispatch_single("sleep", session, {"seconds": 5}, timeout=0.05)
        assert result.error_code is ErrorCode.AGENT_TIMEOUT
        assert result.agent_id == "recorder"
        completed = (await session.get_trajectory(1))[0]
        assert completed.entry_type is EntryType.PLAN_STEP_COMPLETED
        assert completed.content["success"] is False
        assert "agent_timeout" in completed.content["result_summary"]
        ok = await d.dispatch_single("record", session, {"n": 7}, timeout=5)
        assert ok.success


async def test_cancelled_caller_footprint_and_agent_stays_usable(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Recorder())
        with anyio.move_on_after(0.05):
            await d.dispatch_single("sleep", session, {"seconds": 5})
        entries = await session.get_trajectory()
        assert [e.entry_type for e in entries[1:]] == [
            EntryType.PLAN_STEP_STARTED,
            EntryType.SYSTEM_NOTE,
            EntryType.PLAN_STEP_COMPLETED,
        ]
        assert entries[-1].content["success"] is False
        assert "agent_cancelled" in entries[-1].content["result_summary"]
        ok = await d.dispatch_single("record", session, {"n": 1})
        assert ok.success
    await session.verify()


async def test_resume_is_scoped_to_plan_and_params(
    dispatcher: Dispatcher, session: Session
) -> None:
    await session.set("a", "abc")
    await session.set("b", "xyz")
    calls = [
        {"capability": "reverse", "params": {"key": "a"}},
        {"capability": "reverse", "params": {"key": "nope"}},
        {"capability": "uppercase", "params": {"key": "b"}},
    ]
    first = await dispatcher.dispatch_sequence(calls, session, plan_id="P")
    assert first.failed_at == 1
    await dispatcher.dispatch_single("uppercase", session, {"key": "b"}, plan_id="other")
    assert await session.get("b") == "XYZ"
    await session.set("b", "xyz")
    fixed = [calls[0], {"capability": "reverse", "params": {"key": "b"}}, calls[2]]
    resumed = await dispatcher.resume_sequence(fixed, session, plan_id="P")
    assert resumed.success
    assert resumed.results[0].result == {"resumed": True, "step_index": 0}
    assert resumed.results[0].agent_id == "dispatcher"
    assert resumed.results[1].result == {"original": "xyz", "reversed": "zyx"}
    assert resumed.results[2].success and resumed.results[2].result["original"] == "zyx"
    assert await session.get("a") == "cba"  # step 0 did not run twice
    # another plan id: nothing skipped; other params: not skipped
    again = await dispatcher.resume_sequence(fixed[:1], session, plan_id="Q")
    assert again.results[0].result["original"] == "cba"
    changed = await dispatcher.resume_sequence(
        [{"capability": "reverse", "params": {"key": "b"}}], session, plan_id="P"
    )
    assert changed.results[0].result != {"resumed": True, "step_index": 0}
    done = await dispatcher.resume_sequence(fixed, session, plan_id="P")
    assert all(r.result == {"resumed": True, "step_index": i} for i, r in enumerate(done.results))


async def test_dispatch_parallel_keeps_order_and_runs_everything(session: Session) -> None:
    agent = Recorder(delay=0.01)
    async with Dispatcher() as d:
        d.register(agent, max_concurrency=8)
        calls = [{"capability": "record", "params": {"n": n}} for n in range(10)]
        calls.insert(3, {"capability": "nope", "params": {}})
        result = await d.dispatch_parallel(calls, session, max_concurrency=4)
    assert [r.result for r in result.results if r.success] == [{"n": n} for n in range(10)]
    assert result.failed_at == 3 and not result.success
    assert result.executed_count == 11
    assert agent.max_active == 4
    started = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_STARTED])
    assert sorted(e.content["step_index"] for e in started) == list(range(11))


async def test_dispatch_stream_starts_before_the_next_call_exists(session: Session) -> None:
    agent = Recorder()
    produced_second = anyio.Event()
    seen_before_second: list[Any] = []

    async def calls() -> AsyncIterator[dict[str, Any]]:
        yield {"capability": "record", "params": {"n": 0}}
        await anyio.sleep(0.05)
        seen_before_second.extend(agent.calls)
        produced_second.set()
        yield {"capability": "record", "params": {"n": 1}}

    async with Dispatcher() as d:
        d.register(agent)
        result = await d.dispatch_stream(calls(), session, plan_id="s")
    assert seen_before_second == [0]
    assert result.success and [r.result for r in result.results] == [{"n": 0}, {"n": 1}]
    assert result.plan_id == "s"


async def test_dispatch_stream_is_fail_fast_and_closes_the_source(session: Session) -> None:
    closed = []

    async def calls() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"capability": "record", "params": {"n": 0}}
            yield {"capability": "boom", "params": {}}
            yield {"capability": "record", "params": {"n": 2}}
        finally:
            closed.append(True)

    agent = Recorder()
    async with Dispatcher() as d:
        d.register(agent)
        result = await d.dispatch_stream(calls(), session)
    assert result.failed_at == 1 and result.executed_count == 2
    assert agent.calls == [0]
    assert closed == [True]


class _PlanLike:
    """A source like Planner.stream: iterable, with complete() and result."""

    def __init__(self, calls: list[dict[str, Any]], success: bool, delay: float) -> None:
        self._calls = calls
        self._success = success
        self._delay = delay
        self.plan_id = "plan-like"
        self.result: Any = None
        self.completed_at: float | None = None

    def __aiter__(self) -> _PlanLike:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self._calls:
            await self.complete()
            raise StopAsyncIteration
        await anyio.sleep(self._delay)
        return self._calls.pop(0)

    async def complete(self) -> Any:
        if self.result is not None:
            return self.result
        await anyio.sleep(self._delay)
        self.completed_at = anyio.current_time()

        class Outcome:
            success = self._success
            error = None if self._success else {"error_code": "plan_truncated", "message": "cut"}

        self.result = Outcome()
        return self.result


class Gate(Agent):
    agent_id = "gate"

    def __init__(self) -> None:
        self.ran_at: list[float] = []

    @capability("commit", streamable=False)
    async def commit(self, session: Session, params: dict[str, Any]) -> str:
        self.ran_at.append(anyio.current_time())
        return "committed"


async def test_non_streamable_waits_for_the_whole_plan(session: Session) -> None:
    gate = Gate()
    async with Dispatcher() as d:
        d.register(gate)
        d.register(Recorder())
        source = _PlanLike(
            [{"capability": "record", "params": {"n": 0}}, {"capability": "commit", "params": {}}],
            True,
            0.01,
        )
        result = await d.dispatch_stream(source, session)
        assert result.success and result.plan_id == "plan-like"
        assert source.completed_at is not None and gate.ran_at[0] >= source.completed_at
        broken = _PlanLike(
            [{"capability": "record", "params": {"n": 0}}, {"capability": "commit", "params": {}}],
            False,
            0.01,
        )
        failed = await d.dispatch_stream(broken, session)
    assert len(gate.ran_at) == 1  # did not run for the broken plan
    assert not failed.success and failed.failed_at == 1
    assert failed.error == {"error_code": "plan_truncated", "message": "cut"}


async def test_one_log_event_per_step(
    dispatcher: Dispatcher, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    await session.set("text", "abc")
    with caplog.at_level(logging.INFO, logger="kaizen_async"):
        await dispatcher.dispatch_single("reverse", session, {"key": "text"}, plan_id="p")
        await dispatcher.dispatch_single("fly", session, {}, plan_id="p")
    steps = [r for r in caplog.records if r.getMessage() == "dispatch.step"]
    assert len(steps) == 2
    first = steps[0].__dict__
    assert first["session_id"] == session.session_id
    assert first["plan_id"] == "p" and first["step_index"] == 0
    assert first["capability"] == "reverse" and first["agent_id"] == "reverse_agent_v1"
    assert first["outcome"] == "success" and first["duration_ms"] >= 0
    assert steps[1].__dict__["outcome"] == "dispatch_no_agent_for_capability"


async def test_silent_when_logging_is_not_configured(
    dispatcher: Dispatcher, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    await session.set("text", "abc")
    await dispatcher.dispatch_single("reverse", session, {"key": "text"})
    await dispatcher.dispatch_single("fly", session, {})

    class Again(ReverseAgent):
        agent_id = "again"

    dispatcher.register(Again())  # a warning: "reverse" is taken over
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


async def test_64_callers_on_64_sessions(dispatcher: Dispatcher) -> None:
    async def caller(n: int) -> None:
        async with Session() as s:
            await s.set("text", f"text{n}")
            for _ in range(3):
                assert (await dispatcher.dispatch_single("reverse", s, {"key": "text"})).success
            assert await s.get("text") == f"text{n}"[::-1]
            assert await s.get_trajectory_length() == 2 + 3 * 5
            await s.verify()

    async with anyio.create_task_group() as tg:
        for n in range(64):
            tg.start_soon(caller, n)


class Stubborn(Agent):
    """Finishes its work even when its caller gives up (a shielded cleanup)."""

    agent_id = "stubborn"

    @capability("slow")
    async def slow(self, session: Session, params: dict[str, Any]) -> str:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.1)
        return "done anyway"

    @capability("quick")
    async def quick(self, session: Session, params: dict[str, Any]) -> str:
        await anyio.lowlevel.checkpoint()
        return "quick"


async def test_message_after_a_timed_out_call_is_still_served(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Stubborn())
        results: dict[str, Any] = {}

        async def slow() -> None:
            results["slow"] = await d.dispatch_single("slow", session, {}, timeout=0.02)

        async def quick() -> None:
            await anyio.sleep(0.005)  # queued behind the slow call
            results["quick"] = await d.dispatch_single("quick", session, {})

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                tg.start_soon(quick)
    assert results["slow"].error_code is ErrorCode.AGENT_TIMEOUT
    assert results["quick"].success and results["quick"].result == "quick"


class Odd(Agent):
    agent_id = "odd"

    @capability("odd")
    async def odd(self, session: Session, params: dict[str, Any]) -> Any:
        return {1: "int key", "big": 2**70}


async def test_non_json_result_fails_the_step(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Odd())
        result = await d.dispatch_single("odd", session, {})
    assert result.error_code is ErrorCode.AGENT_INVALID_RESULT
    completed = (await session.get_trajectory(1))[0]
    assert completed.entry_type is EntryType.PLAN_STEP_COMPLETED
    assert "agent_invalid_result" in completed.content["result_summary"]
    await session.verify()


async def test_body_exceptions_propagate_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with Session() as s, Dispatcher() as d:
            d.register(ReverseAgent())
            await s.set("text", "abc")
            raise KeyError("mine")


async def test_parallel_on_a_closed_session_raises_a_typed_error(dispatcher: Dispatcher) -> None:
    async with Session() as closed:
        pass
    with pytest.raises(SessionClosedError):
        await dispatcher.dispatch_parallel(
            [{"capability": "reverse", "params": {"key": "k"}}] * 3, closed
        )


@pytest.mark.parametrize("kwargs", [{"mailbox_size": 0}, {"max_concurrency": 0}])
def test_bad_dispatcher_configuration_is_typed(kwargs: dict[str, int]) -> None:
    with pytest.raises(DispatchError):
        Dispatcher(**kwargs)
