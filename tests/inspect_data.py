"""Sessions for the inspector tests: a planned run with model exchanges, dispatched steps
(one failing), state, artifacts and hostile strings; a fork of it; an unrelated one."""

from __future__ import annotations

import json
from typing import Any

from agents import ReverseAgent, UppercaseAgent
from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    InvokeResult,
    Planner,
    Session,
    SessionHub,
    capability,
)
from kaizen_async._state import SessionCore
from kaizen_async.inspect._files import store_core
from kaizen_async.llm import ScriptedProvider

#: strings that must render as text: none may open a dialog or run
XSS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=\"alert('xss-img')\">",
    "javascript:alert('xss-js')",
    "</script><script>alert('xss-close')</script>",
]
#: a word that appears only inside model and user message text
SECRET = "ZEBRA-MESSAGE-TEXT-7731"

PLAN = {
    "steps": [
        {"capability": "reverse", "params": {"key": "text"}},
        {"capability": "uppercase", "params": {"key": "text"}},
        {"capability": "explode", "params": {}},
    ]
}


class ExplodingAgent(Agent):
    """Fails every call (a failed step for the timeline)."""

    agent_id = "exploder"

    @capability("explode", description="always fails")
    async def explode(self, session: Session, params: dict[str, Any]) -> InvokeResult:
        raise RuntimeError("boom <b>bold</b>")


async def planned_run(session: Session) -> None:
    """Plan with a scripted model, dispatch the plan, write state and artifacts."""
    await session.set("text", f"hello world {SECRET[:0]}")
    for index, payload in enumerate(XSS):
        await session.set(f"payload-{index}", payload)
    await session.set(XSS[1], {"nested": XSS[3]})
    await session.write_artifact("report.txt", b"plain report\n")
    await session.write_artifact(XSS[1], b"<html><script>alert('artifact')</script></html>")
    await session.append(XSS[0], EntryType.SYSTEM_NOTE, {"note": XSS[2], "more": XSS[3]})
    await session.append("system", EntryType.USER_INPUT, {"text": f"please {SECRET}"})
    async with Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        dispatcher.register(ExplodingAgent())
        reply = json.dumps(PLAN)
        llm = ScriptedProvider([reply], chunk_size=16, model="scripted-model")
        planner = Planner(
            llm,
            dispatcher.capability_specs(),
            system_prompt=f"system {SECRET}\nline two {{capabilities}}",
        )
        plan = await planner.plan(f"do it {SECRET}\nsecond line", session)
        assert plan.success, plan.error
        await dispatcher.dispatch_sequence(plan.calls, session, plan_id=plan.plan_id)
        llm2 = ScriptedProvider(["not a plan at all " + SECRET], model="scripted-model")
        failed = await Planner(llm2, dispatcher.capability_specs()).plan("again " + SECRET, session)
        assert not failed.success


async def tidy_run(session: Session) -> None:
    """A plain planned run (no hostile strings): the README's picture."""
    await session.set("text", "hello world")
    async with Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        dispatcher.register(ExplodingAgent())
        reply = json.dumps(PLAN)
        llm = ScriptedProvider([reply], chunk_size=16, delay_per_chunk=0.01, model="qwen3:8b")
        planner = Planner(llm, dispatcher.capability_specs())
        plan = await planner.plan("reverse the text, shout it, then blow up", session)
        assert plan.success, plan.error
        await dispatcher.dispatch_sequence(plan.calls, session, plan_id=plan.plan_id)
    await session.write_artifact("report.txt", b"text: DLROW OLLEH\n")


async def populate(hub: SessionHub) -> dict[str, str]:
    """Create ``run``, ``run-fork`` (run's first entries, then its own) and ``other``."""
    ids = {"run": "run-1", "fork": "run-1-fork", "other": "other"}
    await hub.create(ids["run"], metadata={"job": "demo", "note": XSS[0]})
    async with hub.open(ids["run"]) as session:
        await planned_run(session)
        length = await session.get_trajectory_length()
        fork = await session.fork(at_seq=length - 6, session_id=ids["fork"])
    async with fork:
        await fork.set("forked", True)
        await fork.set("text", "changed in the fork")
        await store_core(hub.store, fork._core)
    await hub.create(ids["other"])
    async with hub.open(ids["other"]) as session:
        await session.set("x", 1)
    return ids


def fresh_core(session_id: str, entries: int) -> SessionCore:
    """A core with ``entries`` state writes (for long sessions)."""
    core = SessionCore(session_id)
    for index in range(entries - 1):
        core.set("counter", index)
    return core
