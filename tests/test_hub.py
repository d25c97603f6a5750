"""SessionHub: leases shared across tasks, one load per id, idle and LRU eviction that
never races an open, create/list/delete, statistics, and many sessions in O(N)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from storefakes import ControlledStore

from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    KaizenNotFoundError,
    KaizenValidationError,
    Session,
    SessionClosedError,
    SessionExistsError,
    SessionHub,
    SessionInUseError,
    SessionNotFoundError,
    capability,
)
from kaizen_async._durable import DurableSession
from kaizen_async._trajectory import AGENT_ID
from kaizen_async.stores import MemoryStore

pytestmark = pytest.mark.anyio


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a bound only against hanging, not a timing test)."""
    with anyio.fail_after(10):
        while not predicate():
            await anyio.sleep(0.001)


async def test_open_unknown_id_raises_and_create_makes_it(store: ControlledStore) -> None:
    async with SessionHub(store) as hub:
        with pytest.raises(SessionNotFoundError) as caught:
            async with hub.open("nope"):
                pass
        assert isinstance(caught.value, KaizenNotFoundError)
        assert isinstance(caught.value, KeyError)
        async with hub.open("nope", create=True) as session:
            assert session.session_id == "nope"
            assert await session.get_trajectory_length() == 1
        new_id = await hub.create()
        assert new_id != "nope"
        assert await hub.create("named", {"owner": "me"}) == "named"
        with pytest.raises(SessionExistsError):
            await hub.create("named")
        with pytest.raises(KaizenValidationError):
            await hub.create("bad", {"x": object()})
        with pytest.raises(KaizenValidationError):
            hub.open("")
        listed = await hub.list_sessions()
        assert [info.session_id for info in listed] == sorted(["nope", new_id, "named"])
        named = next(info for info in listed if info.session_id == "named")
        assert named.metadata == {"owner": "me"}
        assert named.trajectory_length == 1


async def test_concurrent_opens_share_one_actor_and_one_load(store: ControlledStore) -> None:
    async with SessionHub(store) as hub:
        await hub.create("s")
        store.load_gate = anyio.Event()
        sessions: list[Session] = []

        async def open_and_write(n: int) -> None:
            async with hub.open("s") as session:
                sessions.append(session)
                await session.set(f"k{n}", n)

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(open_and_write, n)
            await wait_until(lambda: store.loads_waiting == 1)
            await anyio.sleep(0.01)
            assert store.load_calls == 1  # every other open waits for this load
            store.load_gate.set()
        assert len({id(s) for s in sessions}) == 1
        assert hub.statistics().loads == 1
        async with hub.open("s") as session:
            assert await session.get_all_state() == {f"k{n}": n for n in range(5)}


async def test_a_lease_taken_in_one_task_is_used_and_released_in_another(
    store: ControlledStore,
) -> None:
    async with SessionHub(store, idle_timeout=0) as hub:
        lease = hub.open("s", create=True)
        session = await lease.acquire()
        assert hub.statistics().leased == 1

        async def elsewhere() -> None:
            await session.set("k", "from another task")
            lease.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(elsewhere)
        lease.release()  # idempotent
        await wait_until(lambda: hub.statistics().evicted == 1)
        with pytest.raises(SessionClosedError):
            _ = lease.session
        async with hub.open("s") as again:
            assert await again.get("k") == "from another task"


async def test_idle_session_is_evicted_and_reloaded(store: ControlledStore) -> None:
    async with SessionHub(store, idle_timeout=0.05) as hub:
        async with hub.open("s", create=True) as session:
            await session.set("k", 1)
        assert hub.statistics().open == 1  # warm
        await wait_until(lambda: hub.statistics().evicted == 1)
        assert hub.statistics().open == 0
        assert isinstance(session, DurableSession) and not session._is_usable()
        async with hub.open("s") as again:
            assert again is not session
            assert await again.get("k") == 1
        assert hub.statistics().loads == 2


async def test_a_warm_session_is_reused_until_its_timeout(store: ControlledStore) -> None:
    async with SessionHub(store, idle_timeout=3600) as hub:
        async with hub.open("s", create=True) as first:
            pass
        async with hub.open("s") as second:
            assert second is first
        assert hub.statistics().loads == 1
        assert hub.statistics().evicted == 0


async def test_max_open_evicts_the_least_recently_used(store: ControlledStore) -> None:
    async with SessionHub(store, max_open=2) as hub:
        for sid in ("a", "b"):
            async with hub.open(sid, create=True) as session:
                await session.set("id", sid)
        async with hub.open("a"):  # a is now more recently used than b
            pass
        async with hub.open("c", create=True):
            await wait_until(lambda: hub.statistics().evicted == 1)
            assert hub.statistics().open == 2
        async with hub.open("a"):  # still warm: no load
            pass
        assert hub.statistics().loads == 3
        async with hub.open("b") as b:  # evicted: loaded again
            assert await b.get("id") == "b"
        assert hub.statistics().loads == 4


async def test_leased_sessions_are_never_evicted(store: ControlledStore) -> None:
    async with SessionHub(store, max_open=1, idle_timeout=0) as hub:
        async with hub.open("a", create=True) as a, hub.open("b", create=True) as b:
            await anyio.sleep(0.02)
            await a.set("k", 1)
            await b.set("k", 2)
            assert hub.statistics().open == 2
            assert hub.statistics().leased == 2
        await wait_until(lambda: hub.statistics().open == 0)


async def test_an_open_during_eviction_waits_then_reloads(store: ControlledStore) -> None:
    async with SessionHub(store, idle_timeout=0) as hub:
        async with hub.open("s", create=True) as session:
            await session.set("k", 1)
            store.commit_gate = anyio.Event()
            session.append_nowait("me", EntryType.USER_INPUT, {"late": True})
        # the eviction is now stuck committing the posted write
        await wait_until(lambda: store.commits_waiting == 1)
        assert hub.statistics().evicted == 1
        loads = store.load_calls
        opened: list[Session] = []

        async def reopen() -> None:
            async with hub.open("s") as again:
                opened.append(again)
                entries = await again.get_trajectory(1)
                assert entries[0].content == {"late": True}

        async with anyio.create_task_group() as tg:
            tg.start_soon(reopen)
            await anyio.sleep(0.02)
            waiting = (len(opened), store.load_calls)
            store.commit_gate.set()
        assert waiting == (0, loads)  # the open waited for the eviction
        assert opened[0] is not session
        assert store.load_calls == loads + 1


async def test_delete_refuses_a_leased_session_and_removes_an_idle_one(
    store: ControlledStore,
) -> None:
    async with SessionHub(store) as hub:
        async with hub.open("s", create=True) as session:
            await session.set("k", 1)
            with pytest.raises(SessionInUseError) as caught:
                await hub.delete_session("s")
            assert caught.value.code.value == "session_in_use"
            assert await session.get("k") == 1  # untouched
        assert await hub.delete_session("s") is True  # warm: closed, then deleted
        assert await hub.delete_session("s") is False
        with pytest.raises(SessionNotFoundError):
            async with hub.open("s"):
                pass
        assert await hub.list_sessions() == []


async def test_list_sessions_pages_by_id(store: ControlledStore) -> None:
    async with SessionHub(store) as hub:
        for n in range(5):
            await hub.create(f"s{n}")
        first = await hub.list_sessions(limit=2)
        rest = await hub.list_sessions(after=first[-1].session_id)
        assert [i.session_id for i in first + rest] == [f"s{n}" for n in range(5)]


async def test_statistics(store: ControlledStore) -> None:
    async with SessionHub(store, idle_timeout=3600) as hub:
        async with hub.open("a", create=True) as a:
            await a.set("k", 1)
            async with hub.open("b", create=True):
                stats = hub.statistics()
                assert (stats.open, stats.leased, stats.evicted, stats.loads) == (2, 2, 0, 2)
                assert stats.commits >= 1
                assert stats.batches >= stats.commits
                assert stats.mean_batch_size >= 1
                assert stats.queued_writes == 0
        assert hub.statistics().leased == 0
        assert hub.statistics().open == 2


async def test_leaving_the_hub_closes_sessions_after_committing(store: ControlledStore) -> None:
    async with SessionHub(store) as hub:
        lease = hub.open("s", create=True)
        session = await lease.acquire()
        for n in range(20):
            session.append_nowait("me", EntryType.USER_INPUT, {"n": n})
    with pytest.raises(SessionClosedError):
        await session.set("k", 1)
    async with store.inner:
        assert (await store.inner.info("s")).trajectory_length == 21
    with pytest.raises(SessionClosedError):
        async with hub.open("s"):
            pass


async def test_ten_thousand_sessions_open_and_close_through_the_hub() -> None:
    # the hub's own cost: on the memory store (each of these creates is a durable
    # transaction on SQLite, which the store's own tests and benchmark cover)
    count = 10_000
    store = MemoryStore()
    async with SessionHub(store) as hub:
        for n in range(count):
            async with hub.open(f"s{n:05d}", create=True) as session:
                session.append_nowait("me", EntryType.USER_INPUT, {"n": n})
        assert hub.statistics().open == count
    async with store:
        assert len(await store.list_sessions()) == count
        assert (await store.info("s09999")).trajectory_length == 2


async def test_bad_arguments(store: ControlledStore) -> None:
    with pytest.raises(KaizenValidationError):
        SessionHub(store, idle_timeout=-1)
    with pytest.raises(KaizenValidationError):
        SessionHub(store, max_open=0)
    with pytest.raises(KaizenValidationError):
        SessionHub(object())  # type: ignore[arg-type]
    hub = SessionHub(store)
    with pytest.raises(SessionClosedError):
        async with hub.open("s"):
            pass


class _Probe(Agent):
    """Records how a capability sees the session it is handed."""

    agent_id = "probe"

    def __init__(self) -> None:
        self.seen: list[bool] = []

    @capability("probe")
    async def probe(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(isinstance(session, DurableSession))
        await session.set("by", "probe")
        return {"read_back": await session.get("by")}


async def test_a_capability_sees_the_store_backed_session_as_itself(
    store: ControlledStore,
) -> None:
    probe = _Probe()
    async with SessionHub(store) as hub, Dispatcher() as dispatcher:
        dispatcher.register(probe)
        async with hub.open("s", create=True) as session:
            result = await dispatcher.dispatch_single("probe", session, {})
            assert result.result == {"read_back": "probe"}
            assert probe.seen == [True]
            await session.flush()
            entries = await store.read("s", entry_types=["state_set"])
            assert [e[AGENT_ID] for e in entries] == ["probe"]  # attributed and durable


async def test_idle_open_session_holds_little_beyond_its_state(tmp_path: Any) -> None:
    """Memory bounded by state: a warm (unleased) session of 1,000 entries holds at most
    10 KiB plus its state; its history stays in the store, and reads still see all of it."""
    import gc
    import tracemalloc

    import orjson

    from kaizen_async.stores import SQLiteStore

    path = str(tmp_path / "idle.db")
    ids = [f"m{i}" for i in range(17)]
    async with SessionHub(SQLiteStore(path)) as hub:
        for sid in ids:
            async with hub.open(sid, create=True) as session:
                await session.set("text", "hello world")
                for first in range(2, 1000, 100):
                    async with session.transaction() as tx:
                        for i in range(first, min(first + 100, 1000)):
                            tx.append("bench", EntryType.SYSTEM_NOTE, {"i": i})
    async with SessionHub(SQLiteStore(path), idle_timeout=3600) as hub:
        async with hub.open(ids[0]) as session:  # warm up: imports, caches, threads
            state = await session.get_all_state()
            assert await session.get_trajectory_length() == 1000
        state_bytes = sum(len(k) + len(orjson.dumps(v)) for k, v in state.items())
        gc.collect()
        tracemalloc.start()
        try:
            # the slope between 8 and 16 open sessions: what a store read leaves behind for
            # a while (a worker thread's last rows) is in both snapshots and cancels out
            snapshots = []
            for group in (ids[1:9], ids[9:]):
                for sid in group:
                    async with hub.open(sid):
                        pass
                gc.collect()
                snapshots.append(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        assert hub.statistics().open == len(ids) and hub.statistics().leased == 0
        per_session = sum(s.size_diff for s in snapshots[1].compare_to(snapshots[0], "filename"))
        assert per_session / 8 <= 10 * 1024 + state_bytes, per_session / 8
        async with hub.open(ids[1]) as session:  # history is still all there
            entries = await session.get_trajectory()
            assert [e.seq for e in entries] == list(range(1, 1001))
            assert [e.seq for e in await session.get_trajectory(limit=3)] == [998, 999, 1000]
            await session.set("more", 1)
            assert (await session.get_trajectory(limit=1))[0].seq == 1001
