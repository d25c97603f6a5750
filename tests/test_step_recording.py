"""How a dispatched step is recorded: one message per step from the agent's runner.

The runner collects ``plan_step_started``, the agent's posted writes and
``plan_step_completed`` and posts them as one message (one timestamp); a capability that
suspends has what it collected posted first; the caller records the end only when no
runner will (it gave up, or no runner took the call). Every started step ends once.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from agents import ReverseAgent
from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    ErrorCode,
    InvokeResult,
    Session,
    SessionClosedError,
    capability,
)
from kaizen_async._agent import _cacheable
from kaizen_async._canonical import check_json
from kaizen_async._steps import completed_content

pytestmark = pytest.mark.anyio

STARTED, COMPLETED = EntryType.PLAN_STEP_STARTED, EntryType.PLAN_STEP_COMPLETED


async def _kinds(session: Session, since: int = 0) -> list[EntryType]:
    return [e.entry_type for e in await session.get_trajectory(since_seq=since)]


def _ends(entries: list[Any]) -> int:
    return sum(e.entry_type is COMPLETED for e in entries)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int
    note: str | None = None


class Probe(Agent):
    """Capabilities that show how and when a step's writes reach the session."""

    agent_id = "probe"

    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.seen: list[Any] = []
        self.args: list[Any] = []

    @capability("write")
    async def write(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        session.append_nowait(self.agent_id, EntryType.SYSTEM_NOTE, {"n": 1})
        async with session.transaction(wait=False) as tx:
            tx.set("k", params.get("v", 1))
        # read-your-writes inside the step: the buffered set is applied first
        self.seen.append(await session.get("k"))
        return {"done": True}

    @capability("wait")
    async def wait(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        session.append_nowait(self.agent_id, EntryType.SYSTEM_NOTE, {"before": True})
        self.entered.set()
        await self.gate.wait()
        session.append_nowait(self.agent_id, EntryType.SYSTEM_NOTE, {"after": True})
        return {"waited": True}

    @capability("frozen", params=Frozen)
    async def frozen(self, session: Session, params: Frozen) -> dict[str, Any]:
        self.args.append(params)
        return {"n": params.n}


@pytest.fixture
async def probe() -> Probe:
    return Probe()


async def test_a_step_is_one_message_with_one_timestamp(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        await session.set("text", "abc")
        before = session.statistics()
        for _ in range(20):
            assert (await d.dispatch_single("reverse", session, {"key": "text"})).success
        await session.flush()  # (on Trio the last step may still be queued: +1 message)
        after = session.statistics()
        assert after.applied - before.applied in (20, 21)  # one session message per step
        steps = (await session.get_trajectory())[-5:]
        assert [e.entry_type for e in steps] == [
            STARTED,
            EntryType.AGENT_INVOKED,
            EntryType.STATE_SET,
            EntryType.AGENT_COMPLETED,
            COMPLETED,
        ]
        assert len({e.timestamp for e in steps}) == 1
    assert await session.verify() == 2 + 20 * 5


async def test_posted_writes_are_collected_in_order_and_read_back(
    session: Session, probe: Probe
) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        result = await d.dispatch_single("write", session, {"v": 42})
        assert result.success and probe.seen == [42]
        assert await session.get("k") == 42  # the caller reads the step's writes
        kinds = await _kinds(session, 1)
        assert kinds == [STARTED, EntryType.SYSTEM_NOTE, EntryType.STATE_SET, COMPLETED]
        entries = await session.get_trajectory(since_seq=1)
        assert entries[1].agent_id == entries[2].agent_id == "probe"
    await session.verify()


async def test_a_suspended_capability_is_seen_to_start_while_it_runs(
    session: Session, probe: Probe
) -> None:
    async with Dispatcher() as d, anyio.create_task_group() as tg:
        d.register(probe)
        results: list[InvokeResult] = []

        async def call() -> None:
            results.append(await d.dispatch_single("wait", session))

        tg.start_soon(call)
        await probe.entered.wait()
        # the step is under way: its start and what it wrote so far are in the session
        assert await _kinds(session, 1) == [STARTED, EntryType.SYSTEM_NOTE]
        probe.gate.set()
    assert results[0].success
    assert await _kinds(session, 1) == [
        STARTED,
        EntryType.SYSTEM_NOTE,
        EntryType.SYSTEM_NOTE,
        COMPLETED,
    ]
    await session.verify()


async def test_a_timeout_while_taken_ends_the_step_once(session: Session, probe: Probe) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        result = await d.dispatch_single("wait", session, timeout=0.05)
        assert result.error_code is ErrorCode.AGENT_TIMEOUT
        entries = await session.get_trajectory(since_seq=1)
        assert [e.entry_type for e in entries] == [STARTED, EntryType.SYSTEM_NOTE, COMPLETED]
        assert "agent_timeout" in entries[-1].content["result_summary"]
        probe.gate.set()  # the next call runs normally after the cancelled one
        assert (await d.dispatch_single("write", session, {"v": 1})).success
        assert _ends(await session.get_trajectory()) == 2
    await session.verify()


async def test_a_timeout_while_queued_is_recorded_by_the_caller(
    session: Session, probe: Probe
) -> None:
    async with Dispatcher() as d, anyio.create_task_group() as tg:
        d.register(probe)
        tg.start_soon(d.dispatch_single, "wait", session)
        await probe.entered.wait()  # the agent is busy: the next call waits in the mailbox
        result = await d.dispatch_single("frozen", session, {"n": 1}, timeout=0.05)
        assert result.error_code is ErrorCode.AGENT_TIMEOUT
        probe.gate.set()
    assert probe.args == []  # the runner never ran the call its caller gave up on
    entries = await session.get_trajectory(since_seq=1)
    frozen = [e for e in entries if e.content.get("capability") == "frozen"]
    assert [e.entry_type for e in frozen] == [STARTED, COMPLETED]
    assert _ends(entries) == 2
    await session.verify()


async def test_a_cancelled_caller_ends_the_step_once(session: Session, probe: Probe) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(d.dispatch_single, "wait", session)
                await probe.entered.wait()
                scope.cancel()
        entries = await session.get_trajectory(since_seq=1)
        assert [e.entry_type for e in entries] == [STARTED, EntryType.SYSTEM_NOTE, COMPLETED]
        assert "agent_cancelled" in entries[-1].content["result_summary"]
    await session.verify()


async def test_a_runner_stopped_mid_step_ends_the_step(session: Session, probe: Probe) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        async with anyio.create_task_group() as tg:
            results: list[InvokeResult] = []

            async def call() -> None:
                results.append(await d.dispatch_single("wait", session))

            tg.start_soon(call)
            await probe.entered.wait()
            d.unregister("probe")  # closes the mailbox: the step in progress finishes
            probe.gate.set()
        assert results[0].success
    async with Dispatcher() as d:
        d.register(probe)
        probe.gate = anyio.Event()
        probe.entered = anyio.Event()
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(d.dispatch_single, "wait", session)
                await probe.entered.wait()
                outer.cancel()  # the runner and its caller stop together
    entries = await session.get_trajectory()
    assert _ends(entries) == sum(e.entry_type is STARTED for e in entries) == 2
    await session.verify()


async def test_a_session_closed_before_the_step_ends_fails_the_caller(probe: Probe) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        errors: list[BaseException] = []
        async with Session() as session, anyio.create_task_group() as tg:

            async def call() -> None:
                try:
                    await d.dispatch_single("wait", session)
                except SessionClosedError as exc:
                    errors.append(exc)

            tg.start_soon(call)
            await probe.entered.wait()
            session._actor.close()  # type: ignore[union-attr]
            probe.gate.set()
        assert len(errors) == 1


class Outer(Agent):
    """Writes, then dispatches another capability on its own session mid-step."""

    agent_id = "outer"

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    @capability("outer")
    async def outer(self, session: Session, params: dict[str, Any]) -> Any:
        async with session.transaction(wait=False) as tx:
            tx.set("text", "nested")
        inner = await self.dispatcher.dispatch_single("reverse", session, {"key": "text"})
        return {"inner": inner.result, "now": await session.get("text")}


async def test_a_nested_dispatch_reads_the_outer_step_s_writes(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        d.register(Outer(d))
        result = await d.dispatch_single("outer", session)
        assert result.success
        assert result.result == {
            "inner": {"original": "nested", "reversed": "detsen"},
            "now": "detsen",
        }
        kinds = await _kinds(session, 1)
        assert kinds == [
            STARTED,
            EntryType.STATE_SET,
            STARTED,
            EntryType.AGENT_INVOKED,
            EntryType.STATE_SET,
            EntryType.AGENT_COMPLETED,
            COMPLETED,
            COMPLETED,
        ]
    await session.verify()


async def test_a_state_read_waits_for_posted_state_writes_only(session: Session) -> None:
    async with session.transaction(wait=False) as tx:
        tx.set("a", 1)
    assert await session.get("a") == 1  # read-your-writes: waited for the posted set
    batches = session.statistics().batches
    session.append_nowait("me", EntryType.SYSTEM_NOTE, {"x": 1})
    assert await session.get("a") == 1
    # the queued append was not waited for: no round trip to the session actor
    stats = session.statistics()
    assert stats.batches == batches and stats.queued == 1
    assert (await session.get_trajectory(1))[0].entry_type is EntryType.SYSTEM_NOTE


async def test_a_state_read_waits_only_for_posted_writes_of_its_key(session: Session) -> None:
    await session.set("b", 0)
    async with session.transaction(wait=False) as tx:  # another task's posted writes, say
        tx.set("a", 1)
    batches = session.statistics().batches
    assert await session.get("b") == 0  # another key: read at once, nothing waited for
    assert await session.get("missing", "d") == "d"
    stats = session.statistics()
    assert stats.batches == batches and stats.queued == 1
    assert await session.get("a") == 1  # its key: waits for the posted set
    assert session.statistics().queued == 0
    async with session.transaction(wait=False) as tx:
        tx.set("b", 2)
        tx.set("a", 3)
    assert await session.get("a") == 3  # a key written anywhere in a queued batch
    assert await session.get("b") == 2


async def test_an_agent_s_read_of_another_key_leaves_its_step_collecting(
    session: Session,
) -> None:
    seen: list[Any] = []

    class Reader(Agent):
        agent_id = "reader"

        @capability("rw")
        async def rw(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
            async with session.transaction(wait=False) as tx:
                tx.set("mine", 1)
            batches = session.statistics().batches
            seen.append((await session.get("other"), session.statistics().batches - batches))
            seen.append((await session.get("mine"), None))  # its own write: posted first
            return {}

    await session.set("other", "x")
    async with Dispatcher() as d:
        d.register(Reader())
        assert (await d.dispatch_single("rw", session)).success
        # the read of "other" posted nothing and waited for nothing; the read of "mine"
        # posted the step so far and waited for it
        assert seen == [("x", 0), (1, None)]
    kinds = await _kinds(session, 2)
    assert kinds == [STARTED, EntryType.STATE_SET, COMPLETED]


def test_only_frozen_flat_models_are_cached() -> None:
    class Loose(BaseModel):
        n: int

    class Nested(BaseModel):
        model_config = ConfigDict(frozen=True)
        items: list[int]

    class Validated(BaseModel):
        model_config = ConfigDict(frozen=True)
        n: int

        @field_validator("n")
        @classmethod
        def _n(cls, value: int) -> int:
            return value

    assert _cacheable(Frozen)
    assert not _cacheable(Loose)
    assert not _cacheable(Nested)
    assert not _cacheable(Validated)


async def test_validated_params_are_shared_for_equal_params_only(
    session: Session, probe: Probe
) -> None:
    async with Dispatcher() as d:
        d.register(probe)
        for params in ({"n": 1}, {"n": 1}, {"n": 2}, {"n": 1, "note": None}):
            assert (await d.dispatch_single("frozen", session, params)).success
        assert probe.args[0] is probe.args[1]  # the cached instance
        assert probe.args[2].n == 2 and probe.args[3] == Frozen(n=1, note=None)
        for _ in range(2):  # a failure is never remembered: strict, every time
            bad = await d.dispatch_single("frozen", session, {"n": "1"})
            assert bad.error_code is ErrorCode.AGENT_INVALID_PARAMS
        assert len(probe.args) == 4


@pytest.mark.parametrize(
    "value",
    [
        {"quote": 'a"b', "slash": "c\\d", "ctl": "\n\t\x01", "uni": "世界🌍"},
        "plain",
        [1, 2.5, None, True],
        {"long": "x" * 300},
        "é" * 150,  # 300 bytes, 150 characters: the slow path, not truncated
    ],
)
def test_the_result_summary_shortcut_matches_the_summary(value: Any) -> None:
    result = InvokeResult.ok(value)
    fast = completed_content(b'"c"', b'"p"', 0, result, check_json(value))
    assert fast == completed_content(b'"c"', b'"p"', 0, result)
