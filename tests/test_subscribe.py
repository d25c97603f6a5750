"""Live subscriptions: every committed entry after ``since_seq``, history then live, in
order, without gaps or duplicates; filtered; pulled, so a slow subscriber holds nothing."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from storefakes import ControlledStore

from kaizen_async import (
    EntryType,
    KaizenValidationError,
    Session,
    SessionHub,
    TrajectoryEntry,
)
from kaizen_async._storage import SessionStore
from kaizen_async._trajectory import HASH

pytestmark = pytest.mark.anyio

TAIL = 16  # a small in-memory tail, so a few dozen entries reach back into the store


def small_hub(store: SessionStore, **options: Any) -> SessionHub:
    """A hub whose sessions keep only ``TAIL`` entries in memory."""
    hub = SessionHub(store, **options)
    hub._tail = TAIL
    return hub


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a bound only against hanging, not a timing test)."""
    with anyio.fail_after(10):
        while not predicate():
            await anyio.sleep(0.001)


async def _collect(
    source: object, until_seq: int, into: list[TrajectoryEntry], slow: bool = False
) -> None:
    with anyio.fail_after(30):  # a bound against hanging, not a timing test
        async for entry in source:  # type: ignore[attr-defined]
            into.append(entry)
            if slow:
                await anyio.lowlevel.checkpoint()
            if entry.seq >= until_seq:
                return


async def test_history_then_live_without_gaps_with_concurrent_writers(
    store: ControlledStore,
) -> None:
    writers, per_writer = 4, 150
    async with small_hub(store) as hub:
        async with hub.open("s", create=True) as session:
            for n in range(TAIL * 2):  # history older than the tail
                await session.set("k", n)
        history = TAIL * 2 + 1
        total = history + writers * per_writer
        seen: list[TrajectoryEntry] = []

        async def write(w: int) -> None:
            async with hub.open("s") as session:
                for n in range(per_writer):
                    if n % 2:
                        session.append_nowait(f"w{w}", EntryType.USER_INPUT, {"n": n})
                    else:
                        await session.append(f"w{w}", EntryType.USER_INPUT, {"n": n})
                await session.flush()

        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, hub.subscribe("s", since_seq=0), total, seen)
            for w in range(writers):
                tg.start_soon(write, w)
        assert [e.seq for e in seen] == list(range(1, total + 1))
        stored = await store.inner.read("s")
        assert [e.hash for e in seen] == [r[HASH] for r in stored]


async def test_since_seq_and_entry_types_filter(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        for n in range(TAIL * 2):
            await session.set("k", n)
            await session.append("me", EntryType.USER_INPUT, {"n": n})
        head = await session.get_trajectory_length()
        seen: list[TrajectoryEntry] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                _collect,
                session.subscribe(since_seq=10, entry_types=[EntryType.USER_INPUT]),
                head + 4,
                seen,
            )
            await session.set("k", "live")
            await session.append("me", EntryType.USER_INPUT, {"n": "live"})
            await session.set("k", "live2")
            await session.append("me", EntryType.USER_INPUT, {"n": "live2"})
        assert all(e.entry_type is EntryType.USER_INPUT for e in seen)
        assert seen[0].seq == 11
        expected = await session.get_trajectory(since_seq=10, entry_types=["user_input"])
        assert [e.seq for e in seen] == [e.seq for e in expected]
        assert seen[-1].content == {"n": "live2"}


async def test_subscriber_never_sees_an_uncommitted_entry(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        seen: list[TrajectoryEntry] = []
        store.fail_commits = 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, session.subscribe(since_seq=1), 2, seen)
            await anyio.sleep(0.01)
            session.append_nowait("me", EntryType.USER_INPUT, {"lost": True})
            with pytest.raises(Exception):  # noqa: B017 - the PersistError of the flush
                await session.flush()
            await session.append("me", EntryType.USER_INPUT, {"kept": True})
        assert [(e.seq, e.content) for e in seen] == [(2, {"kept": True})]


async def test_a_slow_subscriber_holds_no_backlog(store: ControlledStore) -> None:
    writes = 2000

    async def run(with_subscriber: bool) -> int:
        async with small_hub(store) as hub, hub.open(f"s{with_subscriber}", create=True) as s:
            stalled = anyio.Event()
            got: list[int] = []

            async def subscriber() -> None:
                async for entry in s.subscribe():
                    got.append(entry.seq)
                    if entry.seq == 2:
                        await stalled.wait()  # a consumer that stops reading for a while
                    if entry.seq == writes + 1:
                        return

            tracemalloc.start()
            try:
                async with anyio.create_task_group() as tg:
                    if with_subscriber:
                        tg.start_soon(subscriber)
                    for n in range(writes):
                        s.append_nowait("me", EntryType.USER_INPUT, {"n": n})
                        if n % 50 == 49:
                            await s.flush()  # committed in batches: the store holds them
                    grown = tracemalloc.get_traced_memory()[0]
                    stalled.set()
            finally:
                tracemalloc.stop()
            if with_subscriber:
                assert got == list(range(1, writes + 2))  # caught up from the store
            return grown

    without = await run(False)
    with_one = await run(True)
    assert with_one - without < 256 * 1024


async def test_subscription_ends_on_cancel_and_releases_its_lease(
    store: ControlledStore,
) -> None:
    async with small_hub(store) as hub:
        await hub.create("s")
        seen: list[TrajectoryEntry] = []
        with anyio.move_on_after(0.05):
            async for entry in hub.subscribe("s"):
                seen.append(entry)
        assert [e.seq for e in seen] == [1]
        await wait_until(lambda: hub.statistics().leased == 0)


async def test_subscription_ends_when_the_hub_closes(store: ControlledStore) -> None:
    seen: list[TrajectoryEntry] = []
    ended = anyio.Event()

    async def follow(hub: SessionHub) -> None:
        async for entry in hub.subscribe("s"):
            seen.append(entry)
        ended.set()

    async with anyio.create_task_group() as tg:
        async with small_hub(store) as hub:
            await hub.create("s")
            tg.start_soon(follow, hub)
            await wait_until(lambda: len(seen) == 1)
            async with hub.open("s") as session:
                session.append_nowait("me", EntryType.USER_INPUT, {"last": True})
        await ended.wait()
    assert [e.seq for e in seen] == [1, 2]  # what was committed before closing, then the end


async def test_in_memory_session_subscription() -> None:
    async with Session() as session:
        seen: list[TrajectoryEntry] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_collect, session.subscribe(), 4, seen, True)
            await session.set("a", 1)
            session.append_nowait("me", EntryType.USER_INPUT, {})
            await session.set("b", 2)
        assert [e.seq for e in seen] == [1, 2, 3, 4]
        with pytest.raises(KaizenValidationError):
            session.subscribe(since_seq="0")  # type: ignore[arg-type]
        with pytest.raises(KaizenValidationError):
            session.subscribe(entry_types=["nope"])


async def test_in_memory_subscription_ends_when_the_session_closes() -> None:
    seen: list[TrajectoryEntry] = []
    async with anyio.create_task_group() as tg, Session() as session:

        async def follow() -> None:
            async for entry in session.subscribe():
                seen.append(entry)

        tg.start_soon(follow)
        await session.set("a", 1)
    assert [e.seq for e in seen] == [1, 2]
