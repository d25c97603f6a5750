"""The planner and the dispatcher together: early dispatch, gating, and replay."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agents import ReverseAgent, UppercaseAgent
from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    ErrorCode,
    LLMError,
    Planner,
    Session,
    capability,
)
from kaizen_async.llm import OllamaProvider, ReplayProvider, ScriptedProvider
from kaizen_async.testing import OllamaReply, StandInLLMServer

pytestmark = pytest.mark.anyio


def _pieces(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


PLAN = {
    "steps": [
        {"capability": "reverse", "params": {"key": "text"}},
        {"capability": "uppercase", "params": {"key": "text"}},
        {"capability": "reverse", "params": {"key": "text"}},
    ]
}


class Clock(Agent):
    """Notes (perf_counter) when each call finished."""

    agent_id = "clock"

    def __init__(self) -> None:
        self.done_at: list[float] = []

    @capability("tick", description="Note the time.")
    async def tick(self, session: Session, params: dict[str, Any]) -> int:
        self.done_at.append(time.perf_counter())
        return len(self.done_at)


async def test_step_0_completes_before_the_model_sends_the_last_step() -> None:
    text = json.dumps({"steps": [{"capability": "tick", "params": {}}] * 3})
    pieces = _pieces(text)
    clock = Clock()
    async with (
        StandInLLMServer([OllamaReply(pieces, delay=0.02)]) as server,
        OllamaProvider("m", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(clock)
        planner = Planner(llm, dispatcher.capability_specs())
        result = await dispatcher.dispatch_stream(planner.stream("tick thrice", session), session)
        exchange = await server.exchange(0)
    assert result.success and result.executed_count == 3
    last_step_sent = exchange.sent_at[f"content:{len(pieces) - 1}"]
    first_step_closed = exchange.text_sent_at('{"capability": "tick", "params": {}}')
    assert first_step_closed is not None
    assert clock.done_at[0] < last_step_sent  # step 0 ran while the model was still writing
    assert clock.done_at[0] - first_step_closed < 0.5


async def test_step_0_is_recorded_before_the_plan_is_complete() -> None:
    text = json.dumps({"steps": [{"capability": "tick", "params": {}}] * 3})
    async with (
        StandInLLMServer([OllamaReply(_pieces(text), delay=0.01)]) as server,
        OllamaProvider("m", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(Clock())
        planner = Planner(llm, dispatcher.capability_specs())
        assert (await dispatcher.dispatch_stream(planner.stream("go", session), session)).success
        kinds = [e.entry_type for e in await session.get_trajectory()]
    assert kinds.index(EntryType.PLAN_STEP_COMPLETED) < kinds.index(EntryType.LLM_EXCHANGE)
    assert kinds.index(EntryType.PLAN_STEP_COMPLETED) < kinds.index(EntryType.PLAN_CREATED)


async def test_streamed_plan_runs_and_records_everything() -> None:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "hello")
        llm = ScriptedProvider([json.dumps(PLAN)], chunk_size=5)
        planner = Planner(llm, dispatcher.capability_specs())
        stream = planner.stream("reverse, shout, reverse", session)
        result = await dispatcher.dispatch_stream(stream, session)
        assert result.success
        assert result.plan_id == stream.plan_id
        assert await session.get("text") == "HELLO"
        kinds = [e.entry_type for e in await session.get_trajectory()]
        assert kinds.count(EntryType.PLAN_STEP_COMPLETED) == 3
        assert kinds.count(EntryType.LLM_EXCHANGE) == 1
        assert kinds.count(EntryType.PLAN_CREATED) == 1
        created = (await session.get_trajectory(entry_types=[EntryType.PLAN_CREATED]))[0]
        assert created.content["plan_id"] == stream.plan_id
        assert created.content["calls"] == PLAN["steps"]
        started = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_STARTED])
        assert {e.content["plan_id"] for e in started} == {stream.plan_id}
        # the kept plan can be resumed by its id: everything is already done
        again = await dispatcher.resume_sequence(
            created.content["calls"], session, plan_id=stream.plan_id
        )
        assert all(
            r.result == {"resumed": True, "step_index": i} for i, r in enumerate(again.results)
        )


@pytest.mark.parametrize(
    "failure",
    [{"done_reason": "length"}, {"error": "the model crashed"}, {"drop": True}],
    ids=["length", "error-line", "dropped"],
)
async def test_cut_off_plan_dispatches_only_complete_steps(failure: dict[str, Any]) -> None:
    text = json.dumps(PLAN)
    cut = text[: text.index('{"capability": "reverse"', 60) + 30]  # inside step 2
    async with (
        StandInLLMServer([OllamaReply(_pieces(cut, 7), **failure)]) as server,
        OllamaProvider("m", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "hello")
        planner = Planner(llm, dispatcher.capability_specs())
        result = await dispatcher.dispatch_stream(planner.stream("go", session), session)
        assert not result.success
        assert result.executed_count == 2 and result.completed_indices == [0, 1]
        assert result.failed_at == 2
        assert result.error["error_code"] == ErrorCode.PLAN_TRUNCATED.value  # type: ignore[index]
        assert await session.get("text") == "OLLEH"
        started = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_STARTED])
        completed = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_COMPLETED])
        assert len(started) == len(completed) == 2  # nothing half-dispatched
        assert len(await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])) == 1


async def test_scripted_cut_off_keeps_dispatched_steps() -> None:
    text = json.dumps(PLAN)
    first = text[: text.index("}}") + 2]
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "abc")
        llm = ScriptedProvider([first + ", " + '{"capab'], chunk_size=8, done_reason="length")
        planner = Planner(llm, dispatcher.capability_specs())
        result = await dispatcher.dispatch_stream(planner.stream("go", session), session)
        assert result.executed_count == 1 and result.results[0].success
        assert not result.success
        assert await session.get("text") == "cba"


async def test_a_streamed_plan_followed_by_a_second_plan_fails_at_its_end() -> None:
    reply = json.dumps(PLAN) + "\n" + json.dumps({"steps": [PLAN["steps"][0]]})
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "abc")
        planner = Planner(ScriptedProvider([reply], chunk_size=8), dispatcher.capability_specs())
        stream = planner.stream("go", session)
        result = await dispatcher.dispatch_stream(stream, session)
        assert result.executed_count == 3 and all(r.success for r in result.results)
        assert await session.get("text") == "ABC"  # the steps ran as they arrived
        assert not result.success and result.failed_at == 3
        assert result.error is not None
        assert result.error["error_code"] == ErrorCode.PLAN_INVALID_FORMAT.value
        assert stream.result is not None and stream.result.error == result.error
        assert len(await session.get_trajectory(entry_types=[EntryType.PLAN_FAILED])) == 1


class Commit(Agent):
    """Irreversible: may only run once the whole plan is known to be valid."""

    agent_id = "committer"

    def __init__(self) -> None:
        self.runs = 0

    @capability("commit", description="Publish the text.", streamable=False)
    async def commit(self, session: Session, params: dict[str, Any]) -> str:
        self.runs += 1
        return "published"


async def test_non_streamable_step_waits_for_a_valid_plan() -> None:
    commit = Commit()
    good = json.dumps(
        {
            "steps": [
                {"capability": "reverse", "params": {"key": "text"}},
                {"capability": "commit", "params": {}},
                {"capability": "uppercase", "params": {"key": "text"}},
            ]
        }
    )
    bad = good.replace('"uppercase"', '"explode"')
    async with Session() as session, Dispatcher() as dispatcher:
        for agent in (ReverseAgent(), UppercaseAgent(), commit):
            dispatcher.register(agent)
        await session.set("text", "abc")
        planner = Planner(
            ScriptedProvider([good, bad], chunk_size=6), dispatcher.capability_specs()
        )
        ok = await dispatcher.dispatch_stream(planner.stream("publish", session), session)
        assert ok.success and commit.runs == 1
        assert await session.get("text") == "CBA"
        failed = await dispatcher.dispatch_stream(planner.stream("publish", session), session)
        assert commit.runs == 1  # the plan was invalid: commit never ran
        assert failed.executed_count == 1 and failed.failed_at == 1
        assert failed.error["error_code"] == ErrorCode.PLAN_INVALID_FORMAT.value  # type: ignore[index]
        assert await session.get("text") == "ABC"  # step 0 (streamable) did run


async def test_replay_reproduces_plan_and_state_without_a_model(tmp_path: Path) -> None:
    path = tmp_path / "run.kaizen"
    async with (
        StandInLLMServer([OllamaReply(_pieces(json.dumps(PLAN), 9))]) as server,
        OllamaProvider("m", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "Kaizen")
        planner = Planner(llm, dispatcher.capability_specs())
        first = await planner.plan("reverse, shout, reverse", session)
        await dispatcher.dispatch_sequence(first.calls, session, plan_id=first.plan_id)
        original_state = await session.get_all_state()
        await session.save(path)
    async with Session.load(path) as saved:
        replay = await ReplayProvider.from_session(saved)
    async with Session() as rerun, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await rerun.set("text", "Kaizen")
        planner = Planner(replay, dispatcher.capability_specs())
        second = await planner.plan("reverse, shout, reverse", rerun)
        assert second.success and second.calls == first.calls
        await dispatcher.dispatch_sequence(second.calls, rerun, plan_id=second.plan_id)
        assert await rerun.get_all_state() == original_state == {"text": "KAIZEN"}
        # a request the recording never saw is refused, not answered wrongly
        with pytest.raises(LLMError):
            await replay.complete("something else entirely")


async def test_a_failed_streamed_plan_is_kept_and_resumable() -> None:
    plan = {
        "steps": [
            {"capability": "reverse", "params": {"key": "text"}},
            {"capability": "uppercase", "params": {"key": "other"}},
            {"capability": "reverse", "params": {"key": "text"}},
        ]
    }
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", "abc")
        planner = Planner(
            ScriptedProvider([json.dumps(plan)], chunk_size=7), dispatcher.capability_specs()
        )
        stream = planner.stream("go", session)
        first = await dispatcher.dispatch_stream(stream, session)
        assert first.failed_at == 1 and first.executed_count == 2
        assert await session.get("text") == "cba"  # step 2 did not run
        created = await session.get_trajectory(entry_types=[EntryType.PLAN_CREATED])
        assert len(created) == 1 and created[0].content["plan_id"] == stream.plan_id
        await session.set("other", "xyz")  # fix what step 1 needed
        resumed = await dispatcher.resume_sequence(
            created[0].content["calls"], session, plan_id=stream.plan_id
        )
        assert resumed.success
        assert resumed.results[0].result == {"resumed": True, "step_index": 0}
        assert await session.get("other") == "XYZ"
        assert await session.get("text") == "abc"


async def test_step_0_is_completed_in_the_session_before_the_last_step_is_sent() -> None:
    text = json.dumps({"steps": [{"capability": "probe", "params": {}}] * 3})
    pieces = _pieces(text)
    last = f"content:{len(pieces) - 1}"
    seen: list[tuple[bool, bool]] = []

    class Probe(Agent):
        agent_id = "probe"

        def __init__(self, server: StandInLLMServer) -> None:
            self.server = server

        @capability("probe", description="Look at the session and the model's progress.")
        async def probe(self, session: Session, params: dict[str, Any]) -> int:
            completed = await session.get_trajectory(entry_types=[EntryType.PLAN_STEP_COMPLETED])
            step_0_done = any(e.content["step_index"] == 0 for e in completed)
            last_sent = last in self.server.exchanges[0].sent_at
            seen.append((step_0_done, last_sent))
            return len(seen)

    async with (
        StandInLLMServer([OllamaReply(pieces, delay=0.01)]) as server,
        OllamaProvider("m", server.url) as llm,
        Session() as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(Probe(server))
        planner = Planner(llm, dispatcher.capability_specs())
        result = await dispatcher.dispatch_stream(planner.stream("go", session), session)
    assert result.success
    # when step 1 ran, step 0 was already completed in the session and the model had not
    # yet sent the last step
    assert seen[1] == (True, False)
