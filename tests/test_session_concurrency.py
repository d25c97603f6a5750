from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from kaizen_async import EntryType, Session, SessionClosedError
from kaizen_async._actor import Actor

pytestmark = pytest.mark.anyio


async def test_1000_concurrent_sets_get_a_permutation(session: Session) -> None:
    versions: list[int] = []

    async def setter(i: int) -> None:
        versions.append(await session.set(f"k{i % 7}", i))

    async with anyio.create_task_group() as tg:
        for i in range(1000):
            tg.start_soon(setter, i)
    assert sorted(versions) == list(range(1, 1001))
    entries = await session.get_trajectory(entry_types=[EntryType.STATE_SET])
    assert [e.content["state_version"] for e in entries] == list(range(1, 1001))
    assert [e.seq for e in entries] == list(range(2, 1002))
    assert session.statistics().batches < 1000  # drained in batches
    assert await session.verify() == 1001


async def test_concurrent_appends_and_artifacts_lose_nothing(session: Session) -> None:
    async def appender(worker: int) -> None:
        for i in range(50):
            await session.append(f"w{worker}", EntryType.SYSTEM_NOTE, {"i": i})

    async def writer(worker: int) -> None:
        for i in range(20):
            await session.write_artifact(f"w{worker}/{i}", f"{worker}-{i}".encode())

    async with anyio.create_task_group() as tg:
        for w in range(8):
            tg.start_soon(appender, w)
            tg.start_soon(writer, w)
    entries = await session.get_trajectory()
    assert [e.seq for e in entries] == list(range(1, 1 + 1 + 8 * 50 + 8 * 20))
    for w in range(8):
        mine = [e.content["i"] for e in entries if e.agent_id == f"w{w}"]
        assert mine == list(range(50))  # per caller, in order
    assert len(await session.list_artifacts()) == 160
    assert await session.read_artifact("w3/7") == b"3-7"
    await session.verify()


async def test_cancelled_caller_leaves_session_usable(session: Session) -> None:
    # cancel callers at every point: before their write is applied, and while waiting
    results: list[int] = []

    async def setter(i: int) -> None:
        results.append(await session.set("k", i))

    for round_ in range(20):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(setter, i)
            if round_ % 2:
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    version = await session.get_state_version()
    assert version >= len(results)  # a write may stand even if its caller stopped waiting
    entries = await session.get_trajectory(entry_types=[EntryType.STATE_SET])
    assert [e.content["state_version"] for e in entries] == list(range(1, version + 1))
    assert await session.set("after", 1) == version + 1
    await session.verify()


async def test_a_write_cancelled_before_it_is_applied_is_withdrawn(session: Session) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await session.set("k", 1)  # queued, then cancelled before the actor ran
    assert scope.cancelled_caught
    assert await session.get_state_version() == 0  # withdrawn, not applied
    assert await session.get_trajectory_length() == 1
    assert await session.set("k", 2) == 1
    await session.verify()


async def test_closing_drains_queued_writes() -> None:
    done: list[int] = []
    async with Session() as s:

        async def setter(i: int) -> None:
            done.append(await s.set("k", i))

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(setter, i)
    assert sorted(done) == list(range(1, 101))


async def test_pending_callers_fail_when_the_actor_dies() -> None:
    # a caller waiting while the session's actor is cancelled gets SessionClosedError
    outcome: list[BaseException] = []
    release = anyio.Event()

    async def stuck() -> None:  # keeps the actor busy (like a long save)
        await release.wait()

    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as scope:
            async with Session() as s:
                actor = s._actor
                assert isinstance(actor, Actor)

                async def stuck_caller() -> None:
                    try:
                        await actor.call_async(stuck)
                    except BaseException as exc:
                        outcome.append(exc)

                async def waiting_caller() -> None:
                    try:
                        await s.set("k", 1)
                    except BaseException as exc:
                        outcome.append(exc)

                try:
                    with anyio.fail_after(5):
                        outer.start_soon(stuck_caller)
                        while actor.applied < 1:  # the stuck step is running
                            await anyio.sleep(0.001)
                        outer.start_soon(waiting_caller)
                        while len(actor.queue) < 1:  # and the set is queued behind it
                            await anyio.sleep(0.001)
                except BaseException:
                    release.set()  # never leave the actor stuck when the test fails
                    raise
                scope.cancel()  # the session's block is cancelled: its actor dies
        release.set()
        outer.cancel_scope.cancel()
    assert len(outcome) == 2  # the step in progress and the one queued behind it
    assert all(isinstance(exc, SessionClosedError) for exc in outcome)


async def test_writes_posted_while_a_save_runs_are_applied_after_it(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor runs an async step (a save) alone: a write posted meanwhile waits for it,
    even though a post to an idle actor is applied without waking its task."""
    in_thread, release = threading.Event(), threading.Event()
    write = session._sign_and_write

    def held_write(*args: Any) -> Any:
        in_thread.set()
        release.wait(10)
        return write(*args)

    monkeypatch.setattr(session, "_sign_and_write", held_write)
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.save, tmp_path / "s.kaizen")
        await anyio.to_thread.run_sync(in_thread.wait, 10)
        async with session.transaction(wait=False) as tx:  # posted while the save runs
            tx.set("during", 1)
        session.append_nowait("w", EntryType.SYSTEM_NOTE, {"during": True})
        release.set()
    kinds = [e.entry_type for e in await session.get_trajectory(since_seq=1)]
    assert kinds == [EntryType.SESSION_SAVED, EntryType.STATE_SET, EntryType.SYSTEM_NOTE]
    assert await session.get("during") == 1


async def test_an_async_step_queued_before_a_scheduled_batch_runs_keeps_fifo(
    session: Session,
) -> None:
    """A post to an idle actor schedules its batch; an async step and another post queued
    before that batch runs are served in arrival order (by the actor's task, which the
    async step wakes: the scheduled batch must not apply past it)."""
    actor = session._actor
    assert isinstance(actor, Actor)
    order: list[str] = []
    late_post = anyio.Event()

    async def step() -> None:
        order.append("async step")

    async def poster() -> None:
        await late_post.wait()  # woken in the next tick, before the scheduled batch
        actor.post(order.append, "last post")

    async with anyio.create_task_group() as tg:
        tg.start_soon(poster)
        await anyio.sleep(0.01)  # the poster waits
        late_post.set()
        actor.post(order.append, "first post")  # the actor was idle: a batch is scheduled
        await actor.call_async(step)  # queued in the same tick
    assert order == ["first post", "async step", "last post"]
