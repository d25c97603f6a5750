"""An idle open in-memory session is small: its actor runs as a task of its own (no task
group, cancel scope or AnyIO task handle per session), and leaving the ``async with`` still
behaves as leaving a task group: drained on the way out, cancelled with the caller."""

from __future__ import annotations

import gc
import tracemalloc

import anyio
import anyio.lowlevel
import pytest

from kaizen_async import EntryType, Session, SessionClosedError

pytestmark = pytest.mark.anyio

_SESSIONS = 1000
_BOUND = 6 * 1024  # bytes per idle session (about 4.6 KiB on asyncio, 5.7 KiB on Trio)


async def _open(count: int) -> list[Session]:
    sessions = []
    for _ in range(count):
        session = Session()
        await session.__aenter__()
        await session.set("k", "v")
        sessions.append(session)
    return sessions


async def _close(sessions: list[Session]) -> None:
    for session in reversed(sessions):
        await session.__aexit__(None, None, None)


async def test_an_idle_open_session_holds_at_most_6_kib() -> None:
    warm = await _open(10)  # imports, caches, interned strings
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        sessions = await _open(_SESSIONS)
        await anyio.lowlevel.checkpoint()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    try:
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        assert held / _SESSIONS <= _BOUND, f"{held / _SESSIONS:,.0f} B per idle session"
    finally:
        await _close(warm + sessions)
    assert all(s._actor is not None and s._actor.closed for s in sessions)


async def test_leaving_with_an_error_drains_posted_writes_and_raises_it_as_itself() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):  # the body's own exception, not an exception group
        async with Session() as session:
            for i in range(50):
                session.append_nowait("a", EntryType.SYSTEM_NOTE, {"i": i})
            raise Boom
    assert session._actor is not None and session._actor.closed  # its loop has ended
    assert session._core.length == 51  # every posted write was applied on the way out


async def test_leaving_by_cancellation_ends_the_actor() -> None:
    with anyio.CancelScope() as scope:
        async with Session() as session:
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert session._actor is not None and session._actor.closed


async def test_a_cancelled_exit_wait_still_ends_the_actor() -> None:
    release = anyio.Event()

    async def stuck() -> None:  # keeps the actor busy while the exit waits for it
        await release.wait()

    session = Session()
    with anyio.move_on_after(0.05) as scope:
        async with session:
            actor = session._actor
            assert actor is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(actor.call_async, stuck)
                while actor.applied < 1:
                    await anyio.sleep(0.001)
                tg.cancel_scope.cancel()
    assert scope.cancelled_caught  # the exit's wait was cancelled: the actor with it
    assert session._actor is not None and session._actor.closed
    release.set()


async def test_an_error_of_the_actor_itself_is_raised_on_exit() -> None:
    def broken() -> None:  # stands in for a bug in the actor's loop
        raise RuntimeError("actor bug")

    with pytest.raises(RuntimeError, match="actor bug"):
        async with Session() as session:
            assert session._actor is not None
            session._actor.on_settled = broken
            await session.set("k", 1)  # answered, then the loop fails after the batch
            with anyio.fail_after(5):
                while not session._actor.closed:
                    await anyio.sleep(0.001)
    assert session._actor is not None and session._actor.closed
    with pytest.raises(SessionClosedError):
        await session.set("k", 2)


async def test_the_actor_holds_nothing_of_a_batch_once_it_is_applied() -> None:
    """After a batch of 5,000 posted writes the session actor, asleep again, holds none of
    the batch's answers: what it allocated and still holds is a few KiB (its queue's
    blocks), not an entry per write (it held about 360 KiB here)."""
    async with Session() as session:
        await session.set("warm", 1)
        gc.collect()
        tracemalloc.start()
        try:
            for n in range(5000):
                session.append_nowait("a", EntryType.SYSTEM_NOTE, {"n": n})
            await session.flush()
            gc.collect()
            held = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, "*kaizen_async/_actor.py")]
            )
        finally:
            tracemalloc.stop()
        assert sum(stat.size for stat in held.statistics("filename")) < 16 * 1024
        assert await session.get_trajectory_length() == 5002
