"""Interrupted steps: a step whose start is durable but whose end never came is closed as
``step_interrupted`` when the session is opened again, and ``resume_sequence`` re-runs it
only for idempotent capabilities or when the caller says so."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from storefakes import ControlledStore

from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    ErrorCode,
    Session,
    SessionHub,
    capability,
)

pytestmark = pytest.mark.anyio


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a bound only against hanging, not a timing test)."""
    with anyio.fail_after(10):
        while not predicate():
            await anyio.sleep(0.001)


class Amount(BaseModel):
    amount: int


class PaymentAgent(Agent):
    """``charge`` has an effect that must not happen twice; ``lookup`` may repeat."""

    agent_id = "payments"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hold: anyio.Event | None = None
        self.declined = False

    @capability("charge", params=Amount)
    async def charge(self, session: Session, params: Amount) -> Any:
        self.calls.append("charge")
        if self.hold is not None:
            await self.hold.wait()
        if self.declined:
            return self.fail(ErrorCode.AGENT_INVOCATION_FAILED, "card declined", "charge")
        await session.set("charged", params.amount)
        return {"charged": params.amount}

    @capability("lookup", params=Amount, idempotent=True)
    async def lookup(self, session: Session, params: Amount) -> dict[str, Any]:
        self.calls.append("lookup")
        return {"found": params.amount}


def _started(plan_id: str, index: int, capability_name: str, amount: int) -> dict[str, Any]:
    return {
        "capability": capability_name,
        "params": {"amount": amount},
        "plan_id": plan_id,
        "step_index": index,
    }


def _completed(plan_id: str, index: int, capability_name: str) -> dict[str, Any]:
    return {
        "capability": capability_name,
        "plan_id": plan_id,
        "result_summary": "{}",
        "step_index": index,
        "success": True,
    }


async def _crashed_plan(store: ControlledStore, second: str) -> None:
    """Session ``s`` as a process left it that died during step 1 of plan ``p``."""
    async with SessionHub(store) as hub, hub.open("s", create=True) as session:
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_STARTED, _started("p", 0, "lookup", 1)
        )
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_COMPLETED, _completed("p", 0, "lookup")
        )
        await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, _started("p", 1, second, 2))
    async with store.inner:
        assert (await store.inner.load("s")).open_steps == (4,)


PLAN = [
    {"capability": "lookup", "params": {"amount": 1}},
    {"capability": "charge", "params": {"amount": 2}},
]


async def test_a_step_cut_off_by_a_crash_is_closed_at_the_next_open(
    store: ControlledStore,
) -> None:
    agent = PaymentAgent()
    agent.hold = anyio.Event()
    async with SessionHub(store) as hub, Dispatcher() as dispatcher:
        dispatcher.register(agent)
        async with hub.open("s", create=True) as session, anyio.create_task_group() as tg:

            async def run() -> None:
                with contextlib.suppress(Exception):  # the "dead" process's own errors
                    await dispatcher.dispatch_single("charge", session, {"amount": 5})

            tg.start_soon(run)
            await wait_until(lambda: agent.calls == ["charge"])
            await session.flush()  # plan_step_started is durable
            store.fail_commits = store.fail_loads = 10**9  # the process dies: nothing more
            agent.hold.set()
    store.fail_commits = store.fail_loads = 0
    async with store.inner:
        assert len((await store.inner.load("s")).open_steps) == 1
    async with SessionHub(store) as hub, hub.open("s") as session:
        last = (await session.get_trajectory(1))[0]
        assert last.entry_type is EntryType.PLAN_STEP_COMPLETED
        assert last.agent_id == "system"
        assert last.content["success"] is False
        assert last.content["error_code"] == "step_interrupted"
        assert last.content["capability"] == "charge"
        assert last.content["step_index"] == 0
        assert "step_interrupted" in last.content["result_summary"]
        assert set(last.content) == {
            "capability",
            "error_code",
            "plan_id",
            "result_summary",
            "step_index",
            "success",
        }
        assert await session.get("charged") is None
        assert await session.verify() == last.seq
    async with store.inner:
        assert (await store.inner.load("s")).open_steps == ()


async def test_resume_stops_at_an_interrupted_step_that_is_not_idempotent(
    store: ControlledStore,
) -> None:
    await _crashed_plan(store, "charge")
    agent = PaymentAgent()
    async with SessionHub(store) as hub, Dispatcher() as dispatcher, hub.open("s") as session:
        dispatcher.register(agent)
        length = await session.get_trajectory_length()
        result = await dispatcher.resume_sequence(PLAN, session, plan_id="p")
        assert not result.success
        assert result.failed_at == 1
        assert result.results[0].result == {"resumed": True, "step_index": 0}
        error = result.error
        assert error is not None
        assert error["error_code"] == ErrorCode.STEP_INTERRUPTED.value
        assert "Step 1 ('charge')" in error["message"]
        assert result.results[1].error_code is ErrorCode.STEP_INTERRUPTED
        assert agent.calls == []
        assert await session.get_trajectory_length() == length  # nothing ran or was recorded
        again = await dispatcher.resume_sequence(PLAN, session, plan_id="p", rerun_interrupted=True)
        assert again.success
        assert agent.calls == ["charge"]
        assert await session.get("charged") == 2
        third = await dispatcher.resume_sequence(PLAN, session, plan_id="p")
        assert third.success
        assert agent.calls == ["charge"]  # both steps now done


async def test_resume_reruns_an_interrupted_idempotent_step(store: ControlledStore) -> None:
    await _crashed_plan(store, "lookup")
    agent = PaymentAgent()
    plan = [PLAN[0], {"capability": "lookup", "params": {"amount": 2}}]
    async with SessionHub(store) as hub, Dispatcher() as dispatcher, hub.open("s") as session:
        dispatcher.register(agent)
        result = await dispatcher.resume_sequence(plan, session, plan_id="p")
        assert result.success
        assert agent.calls == ["lookup"]


async def test_a_failed_retry_after_an_interruption_is_an_ordinary_failure(
    store: ControlledStore,
) -> None:
    await _crashed_plan(store, "charge")
    agent = PaymentAgent()
    agent.declined = True
    async with SessionHub(store) as hub, Dispatcher() as dispatcher, hub.open("s") as session:
        dispatcher.register(agent)
        # the forced re-run runs and fails normally, which ends the doubt about the step
        result = await dispatcher.resume_sequence(
            PLAN, session, plan_id="p", rerun_interrupted=True
        )
        assert result.results[1].error_code is ErrorCode.AGENT_INVOCATION_FAILED
        agent.declined = False
        result = await dispatcher.resume_sequence(PLAN, session, plan_id="p")
        assert result.success
        assert agent.calls == ["charge", "charge"]


async def test_a_loaded_file_closes_its_interrupted_steps(tmp_path: Path) -> None:
    path = tmp_path / "crashed.kaizen"
    async with Session() as session:
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_STARTED, _started("p", 0, "lookup", 1)
        )
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_COMPLETED, _completed("p", 0, "lookup")
        )
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_STARTED, _started("p", 1, "charge", 2)
        )
        await session.save(path)
    async with Session.load(path) as loaded, Dispatcher() as dispatcher:
        loaded_entry, closed = await loaded.get_trajectory(2)
        assert loaded_entry.entry_type is EntryType.SESSION_LOADED
        assert closed.entry_type is EntryType.PLAN_STEP_COMPLETED
        assert closed.content["error_code"] == "step_interrupted"
        assert closed.content["step_index"] == 1
        assert await loaded.verify() == closed.seq
        agent = PaymentAgent()
        dispatcher.register(agent)
        result = await dispatcher.resume_sequence(PLAN, loaded, plan_id="p")
        assert result.results[1].error_code is ErrorCode.STEP_INTERRUPTED
        assert agent.calls == []
        await loaded.save(path)  # incremental onto the same file still works
    async with Session.load(path) as again:
        assert [e.entry_type for e in await again.get_trajectory(2)] == [
            EntryType.SESSION_SAVED,
            EntryType.SESSION_LOADED,
        ]


async def test_a_file_whose_steps_all_ended_gets_no_extra_entry(tmp_path: Path) -> None:
    path = tmp_path / "ok.kaizen"
    async with Session() as session:
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_STARTED, _started("p", 0, "lookup", 1)
        )
        await session.append(
            "dispatcher", EntryType.PLAN_STEP_COMPLETED, _completed("p", 0, "lookup")
        )
        await session.save(path)
    async with Session.load(path) as loaded:
        assert (await loaded.get_trajectory(1))[0].entry_type is EntryType.SESSION_LOADED


def test_capability_declares_idempotent() -> None:
    info = PaymentAgent().info()
    assert info.spec("lookup").idempotent is True
    assert info.spec("charge").idempotent is False
