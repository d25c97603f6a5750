"""The child process of the hub crash test (``tests/test_hub_crash.py``).

``python crash_hub_child.py DB BACKEND ROUND SEED`` writes through
``SessionHub(SQLiteStore(DB))`` until it is killed. It prints ``opening`` just before the
hub opens the store, then one line per **acknowledged** write, printed only after the
awaited call returned (for posted writes: after ``await session.flush()``)::

    ack SID created -              a session this run created (hub.create)
    ack SID set TOKEN VERSION      session.set(key, {"token": TOKEN, ...}) -> VERSION
    ack SID append TOKEN SEQ       session.append(...{"token": TOKEN}) -> SEQ
    ack SID posted TOKEN -         append_nowait(...{"token": TOKEN}), then flush()
    ack SID artifact TOKEN SEQ     write_artifact(f"a-{TOKEN}", artifact_data(TOKEN)) -> SEQ
    ack SID step TOKEN -           dispatch_single(..., plan_id=f"plan-{TOKEN}"), then flush()

Tokens are ``ROUND.N``, unique across the runs that share a database. Steps of the
``slow`` capability commit a write inside the step and then sleep, so a kill often finds a
step started (durably) and never completed: the next open must close it as interrupted.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

import kaizen_async
from agents import ReverseAgent, UppercaseAgent
from kaizen_async import Agent, Dispatcher, EntryType, Session, SessionHub, capability
from kaizen_async.stores import SQLiteStore

#: sessions every run opens (created by the first run that gets that far)
FIXED = [f"s{i}" for i in range(6)]


def artifact_data(token: str) -> bytes:
    """An artifact's bytes, derived from its token (so the parent can check them)."""
    seed = hashlib.sha256(token.encode()).digest()
    return seed * (1 + seed[0] % 64)  # 32 B .. 2 KiB


class SlowParams(BaseModel):
    key: str
    sleep: float


class SlowAgent(Agent):
    """A step that writes (durably: the step's start is committed with it) and then takes
    a while, so kills land inside steps."""

    agent_id = "slow_v1"

    @capability("slow", params=SlowParams)
    async def slow(self, session: Session, params: SlowParams) -> dict[str, Any]:
        await session.set(params.key, "in a slow step")
        await anyio.sleep(params.sleep)
        return {"slept": params.sleep}


class Run:
    """One child run: a counter for tokens and the shared hub and dispatcher."""

    def __init__(self, hub: SessionHub, dispatcher: Dispatcher, round_: str) -> None:
        self.hub = hub
        self.dispatcher = dispatcher
        self.round = round_
        self.count = 0

    def token(self) -> str:
        self.count += 1
        return f"{self.round}.{self.count}"


def ack(*fields: object) -> None:
    print("ack", *fields, flush=True)


async def one_write(run: Run, session: Session, rng: random.Random) -> None:
    """One acknowledged write of a random kind."""
    sid = session.session_id
    kind = rng.random()
    token = run.token()
    if kind < 0.25:
        key = f"k{rng.randint(0, 4)}"
        version = await session.set(key, {"token": token, "pad": "x" * rng.randint(0, 200)})
        ack(sid, "set", token, version)
    elif kind < 0.45:
        seq = await session.append("writer", EntryType.SYSTEM_NOTE, {"token": token})
        ack(sid, "append", token, seq)
    elif kind < 0.55:
        tokens = [token] + [run.token() for _ in range(rng.randint(0, 3))]
        for each in tokens:
            session.append_nowait("writer", EntryType.USER_INPUT, {"token": each})
        await session.flush()
        for each in tokens:
            ack(sid, "posted", each, "-")
    elif kind < 0.65:
        seq = await session.write_artifact(f"a-{token}", artifact_data(token))
        ack(sid, "artifact", token, seq)
    else:
        if rng.random() < 0.5:
            capability_name, params = "slow", {"key": "slow", "sleep": rng.uniform(0.005, 0.05)}
        else:
            capability_name, params = rng.choice(["reverse", "uppercase"]), {"key": "text"}
        result = await run.dispatcher.dispatch_single(
            capability_name, session, params, plan_id=f"plan-{token}"
        )
        assert result.success, result.error
        await session.flush()
        ack(sid, "step", token, "-")


async def new_session(run: Run, rng: random.Random) -> None:
    """Create a session (acknowledged), open it and write to it a little."""
    new = await run.hub.create(metadata={"round": run.round})
    ack(new, "created", "-")
    async with run.hub.open(new) as fresh:
        await fresh.set("text", "a new session")
        for _ in range(rng.randint(1, 4)):
            await one_write(run, fresh, rng)


async def worker(run: Run, sid: str, rng: random.Random) -> None:
    """Writes to ``sid`` forever; now and then creates a new session and writes to it
    (the first worker does so first thing)."""
    async with run.hub.open(sid, create=True) as session:
        if await session.get("text") is None:
            await session.set("text", "hello world")
        if sid == FIXED[0]:
            await new_session(run, rng)
        while True:
            await one_write(run, session, rng)
            if rng.random() < 0.03:
                await new_session(run, rng)


async def main(path: str, round_: str, seed: str) -> None:
    rng = random.Random(seed)
    print("opening", flush=True)
    async with SessionHub(SQLiteStore(path)) as hub, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        dispatcher.register(UppercaseAgent())
        dispatcher.register(SlowAgent())
        run = Run(hub, dispatcher, round_)
        async with anyio.create_task_group() as group:
            for sid in FIXED:
                group.start_soon(worker, run, sid, random.Random(rng.random()))


if __name__ == "__main__":
    checkout = Path(__file__).resolve().parent.parent
    imported = Path(kaizen_async.__file__).resolve()
    assert imported.is_relative_to(checkout), f"{imported} is not this checkout's ({checkout})"
    db, backend, round_arg, seed_arg = sys.argv[1:5]
    anyio.run(main, db, round_arg, seed_arg, backend=backend)
