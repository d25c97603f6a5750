"""A store-backed session: writes acknowledged once committed, reads of committed data only,
reload after a failed commit, flush, a bounded tail and history read from the store."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from storefakes import ControlledStore

from agents import ReverseAgent
from kaizen_async import (
    Dispatcher,
    EntryType,
    ErrorCode,
    PersistError,
    Session,
    SessionClosedError,
    SessionCorruptedError,
    SessionExistsError,
    SessionHub,
    TrajectoryEntry,
)
from kaizen_async._canonical import decode, encode, entry_hash
from kaizen_async._durable import DurableSession
from kaizen_async._state import SessionCore
from kaizen_async._storage import Batch, SessionStore
from kaizen_async._stored import DEFAULT_TAIL, load_core
from kaizen_async._trajectory import CONTENT, ENTRY_TYPE, HASH, PREV_HASH, SEQ, TIMESTAMP, Record
from kaizen_async.stores import MemoryStore, SQLiteStore

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


def durable(session: Session) -> DurableSession:
    assert isinstance(session, DurableSession)
    return session


async def test_awaited_write_returns_only_after_its_commit(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        store.commit_gate = anyio.Event()
        done: list[str] = []

        async def write() -> None:
            await session.set("k", 1)
            done.append("set")

        async def read() -> None:
            done.append(f"get={await session.get('k')}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await wait_until(lambda: store.commits_waiting == 1)
            tg.start_soon(read)  # queued behind the write: must not see it uncommitted
            await anyio.sleep(0.01)
            assert done == []
            assert await store.inner.info("s") is not None
            assert (await store.inner.info("s")).state_version == 0
            store.commit_gate.set()
        assert sorted(done) == ["get=1", "set"]
        assert (await store.inner.info("s")).state_version == 1


async def test_read_while_commit_in_flight_sees_only_committed_data(
    store: ControlledStore,
) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        await session.set("k", "old")
        store.commit_gate = anyio.Event()
        store.fail_commits = 1
        seen: list[object] = []
        async with anyio.create_task_group() as tg:

            async def write() -> None:
                with pytest.raises(PersistError):
                    await session.set("k", "new")

            tg.start_soon(write)
            await wait_until(lambda: store.commits_waiting == 1)

            async def read() -> None:
                seen.append(await session.get("k"))
                seen.append(await session.get_trajectory_length())

            tg.start_soon(read)
            await anyio.sleep(0.01)
            assert seen == []  # the write is applied in memory but not durable yet
            store.commit_gate.set()
        assert seen == ["old", 2]  # the failed write was never visible


async def test_failed_commit_raises_reloads_and_the_chain_continues(
    store: ControlledStore,
) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        await session.set("a", 1)
        store.fail_commits = 1
        with pytest.raises(PersistError) as caught:
            await session.set("b", 2)
        assert caught.value.code is ErrorCode.PERSIST_COMMIT_FAILED
        # reloaded from the store: no run-ahead in memory
        assert await session.get("b") is None
        assert await session.get_state_version() == 1
        assert await session.get_trajectory_length() == 2
        assert durable(session)._core.length == 2
        # a later write continues the chain from the durable head
        assert await session.set("c", 3) == 2
        assert await session.get_all_state() == {"a": 1, "c": 3}
        assert [e.seq for e in await session.get_trajectory()] == [1, 2, 3]
        assert await session.verify() == 3
        stored = await store.inner.read("s")
        assert [r[SEQ] for r in stored] == [1, 2, 3]
        assert stored[2][PREV_HASH] == stored[1][HASH]


async def test_failed_commit_answers_every_write_of_the_batch(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        store.commit_gate = anyio.Event()
        store.fail_commits = 1
        errors: list[BaseException] = []

        async def write(key: str) -> None:
            try:
                await session.set(key, 1)
            except PersistError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "first")
            await wait_until(lambda: store.commits_waiting == 1)
            for key in ("x", "y", "z"):  # these queue up as the next batch
                tg.start_soon(write, key)
            await anyio.sleep(0.01)
            store.commit_gate.set()
        assert len(errors) == 1  # only the failed batch; the next batch committed
        assert await session.get_all_state() == {"x": 1, "y": 1, "z": 1}


async def test_posted_writes_are_durable_after_flush(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        store.commit_gate = anyio.Event()
        session.append_nowait("me", EntryType.USER_INPUT, {"n": 1})
        flushed = False

        async def flush() -> None:
            nonlocal flushed
            await session.flush()
            flushed = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(flush)
            await wait_until(lambda: store.commits_waiting == 1)
            await anyio.sleep(0.01)
            assert not flushed
            store.commit_gate.set()
        stored = await store.inner.read("s")
        assert [r[ENTRY_TYPE] for r in stored] == ["session_created", "user_input"]


async def test_failed_posted_write_makes_the_next_flush_raise(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        store.fail_commits = 1
        session.append_nowait("me", EntryType.USER_INPUT, {"n": 1})
        async with session.transaction(wait=False) as tx:
            tx.set("k", 1)
        with pytest.raises(PersistError):
            await session.flush()
        await session.flush()  # reported once
        assert await session.get_trajectory_length() == 1
        assert await session.get("k") is None


async def test_flush_on_an_in_memory_session_waits_for_posted_writes() -> None:
    async with Session() as session:
        session.append_nowait("me", EntryType.USER_INPUT, {"n": 1})
        await session.flush()
        assert session._core.length == 2


async def test_a_read_batched_with_a_write_that_cannot_be_reloaded_sees_nothing(
    store: ControlledStore,
) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        store.fail_commits = 1
        store.fail_loads = 1
        async with session.transaction(wait=False) as tx:  # posted: the read joins its batch
            tx.set("b", 2)
        with pytest.raises(SessionClosedError):
            await session.get("b")
        with pytest.raises(SessionClosedError, match="store failed"):
            await session.flush()


async def test_store_that_cannot_reload_closes_the_session_and_the_hub_reopens_it(
    store: ControlledStore,
) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        await session.set("a", 1)
        store.fail_commits = 1
        store.fail_loads = 1
        with pytest.raises(PersistError):
            await session.set("b", 2)
        # the memory could not be reloaded: the session stops, and nothing reads what the
        # store does not hold (a read in the same batch as the failed write included)
        with pytest.raises(SessionClosedError, match="store failed"):
            await session.set("c", 3)
        async with hub.open("s") as again:  # a fresh load from the store
            assert again is not session
            assert await again.get_all_state() == {"a": 1}


async def test_evicted_session_commits_what_was_posted(store: ControlledStore) -> None:
    async with small_hub(store, idle_timeout=0) as hub:
        async with hub.open("s", create=True) as session:
            for n in range(50):
                session.append_nowait("me", EntryType.USER_INPUT, {"n": n})
        await wait_until(lambda: hub.statistics().evicted == 1)
        async with hub.open("s") as again:  # waits until the eviction is over
            assert again is not session
            assert (await store.inner.info("s")).trajectory_length == 51


# -- memory: a bounded tail ----------------------------------------------------------------


MILLION = 1_000_000


@functools.cache
def _million() -> list[Record]:
    """A million entries, cheaply: seq-numbered placeholder hashes except for the newest
    thousand, which are properly chained (an open checks the tail it reads; this test is
    about what an open holds in memory, not about the whole chain, which it never replays)."""
    first = SessionCore("big").records[0]
    content = encode({"note": "x" * 20})
    ts = first[TIMESTAMP]
    chained = MILLION - 1000
    records = [(1, ts, "system", "session_created", first[CONTENT], "0" * 64, _h(1))]
    records += [
        (seq, ts, "me", "system_note", content, _h(seq - 1), _h(seq))
        for seq in range(2, chained + 1)
    ]
    prev = _h(chained)
    for seq in range(chained + 1, MILLION + 1):
        digest = entry_hash(seq, ts, "me", "system_note", content, prev)
        records.append((seq, ts, "me", "system_note", content, prev, digest))
        prev = digest
    return records


def _h(seq: int) -> str:
    return f"{seq:064x}"


async def _create_big(store: SessionStore) -> None:
    await store.create(
        Batch("big", 0, _million(), 0, state={"k": encode("v")}),
        max_artifact_size=1024,
        workspace_path=None,
    )


@pytest.fixture(scope="module")
def million_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite store holding one 1,000,000-entry session, built once for the module."""
    path = tmp_path_factory.mktemp("million") / "sessions.db"

    async def build() -> None:
        async with SQLiteStore(path) as store:
            await _create_big(store)

    anyio.run(build)
    return path


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_million_entry_session_opens_with_a_bounded_tail(
    kind: str, million_db: Path
) -> None:
    store: SessionStore = MemoryStore() if kind == "memory" else SQLiteStore(million_db)
    async with SessionHub(store) as hub:
        if kind == "memory":
            await _create_big(store)
        length = (await store.info("big")).trajectory_length  # the other backend appended
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            async with hub.open("big") as session:
                held = tracemalloc.get_traced_memory()[0] - before
                core = durable(session)._core
                assert core.length == length >= MILLION
                assert len(core.records) <= DEFAULT_TAIL
                assert held < 10 * 1024 * 1024
                assert await session.get("k") == "v"
                newest = await session.get_trajectory(3)
                assert [e.seq for e in newest] == [length - 2, length - 1, length]
                seq = await session.append("me", EntryType.USER_INPUT, {"more": True})
                assert seq == length + 1
        finally:
            tracemalloc.stop()


async def test_the_tail_stays_bounded_while_writing(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        core = durable(session)._core
        most = 0
        for n in range(3 * TAIL):
            await session.set("k", n)
            most = max(most, len(core.records))
        assert most <= 2 * TAIL
        assert core.length == 3 * TAIL + 1
        assert await session.get_trajectory_length() == 3 * TAIL + 1


# -- history from the store ------------------------------------------------------------------


async def _fill(session: Session, mirror: Session, count: int) -> None:
    """The same writes to a store-backed session and to an in-memory mirror."""
    for n in range(count):
        for target in (session, mirror):
            if n % 3 == 0:
                await target.set(f"k{n % 7}", n)
            elif n % 3 == 1:
                await target.append("agent-a" if n % 2 else "agent-b", "user_input", {"n": n})
            else:
                await target.write_artifact(f"f{n % 5}", f"data {n}".encode())


def _same(entries: list[TrajectoryEntry], expected: list[TrajectoryEntry]) -> None:
    assert [(e.seq, e.entry_type, e.content) for e in entries] == [
        (e.seq, e.entry_type, e.content) for e in expected
    ]


async def test_history_reads_come_from_the_store(store: ControlledStore) -> None:
    count = TAIL * 3
    async with (
        small_hub(store) as hub,
        Session("s") as mirror,
        hub.open("s", create=True) as session,
    ):
        await _fill(session, mirror, count)
        core = durable(session)._core
        assert core.base > 0
        reads = store.read_calls
        _same(await session.get_trajectory(5), await mirror.get_trajectory(5))
        assert store.read_calls == reads  # the newest entries come from memory
        cases: list[dict[str, Any]] = [
            {},
            {"entry_types": ["state_set"]},
            {"agent_id": "agent-a"},
            {"since_seq": 10},
            {"since_seq": 10, "entry_types": ["artifact_written"], "limit": 20},
            {"limit": 2 * TAIL, "agent_id": "system"},
            {"entry_types": []},
            {"limit": 0},
        ]
        for kwargs in cases:
            _same(await session.get_trajectory(**kwargs), await mirror.get_trajectory(**kwargs))
        assert store.read_calls > reads
        version = await session.get_state_version()
        for at in (0, 1, version // 2, version):
            assert await session.state_at(at) == await mirror.state_at(at)
        assert await session.get_all_state() == await mirror.get_all_state()
        assert await session.verify() == count + 1
        assert await session.list_artifacts() == await mirror.list_artifacts()
        for name in await mirror.list_artifacts():
            assert await session.read_artifact(name) == await mirror.read_artifact(name)
            assert await session.get_artifact_size(name) == len(await mirror.read_artifact(name))
        snap = await session.snapshot_for_agent("a", depth=TAIL * 2)
        expected = await mirror.snapshot_for_agent("a", depth=TAIL * 2)
        for key in ("state", "state_version", "artifacts"):
            assert snap[key] == expected[key]
        assert [(e["seq"], e["content"]) for e in snap["trajectory"]] == [
            (e["seq"], e["content"]) for e in expected["trajectory"]
        ]
        assert snap["trajectory_total_length"] == count + 1


async def test_fork_of_a_stored_session_replays_from_the_store(store: ControlledStore) -> None:
    async with (
        small_hub(store) as hub,
        Session("s") as mirror,
        hub.open("s", create=True) as session,
    ):
        await _fill(session, mirror, TAIL * 3)
        at = 40
        child = await session.fork(at_seq=at, session_id="child")
        expected = await mirror.fork(at_seq=at, session_id="child")
        async with child, expected:
            assert await child.get_all_state() == await expected.get_all_state()
            assert await child.list_artifacts() == await expected.list_artifacts()
            for name in await child.list_artifacts():
                assert await child.read_artifact(name) == await expected.read_artifact(name)
            assert await child.verify() == at + 1
            forked = (await child.get_trajectory(1))[0]
            assert forked.content["parent_hash"] == (await session.get_trajectory())[at - 1].hash


async def test_verify_finds_a_tampered_stored_entry(store: ControlledStore) -> None:
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        for n in range(TAIL * 3):
            await session.set("k", n)
        assert await session.verify() == TAIL * 3 + 1
        forged = encode({"key": "k", "new_value": -1, "old_value": 7, "state_version": 9})
        inner = store.inner
        if isinstance(inner, MemoryStore):
            records = inner._sessions["s"].records
            records[9] = (*records[9][:4], forged, *records[9][5:])
        else:
            assert isinstance(inner, SQLiteStore)
            with contextlib.closing(sqlite3.connect(inner.path, timeout=10)) as db, db:
                db.execute(
                    "UPDATE entries SET content = ? WHERE session_id = 's' AND seq = 10",
                    (forged,),
                )
        with pytest.raises(SessionCorruptedError) as caught:
            await session.verify()
        assert caught.value.seq == 10


async def test_save_exports_and_import_file_round_trips(
    store: ControlledStore, tmp_path: Path
) -> None:
    path = tmp_path / "export.kaizen"
    async with small_hub(store) as hub, Session("s") as mirror:
        async with hub.open("s", create=True) as session:
            await _fill(session, mirror, TAIL * 3)
            saved = await session.save(path)
            assert saved == TAIL * 3 + 2
            assert (await session.get_trajectory(1))[0].entry_type is EntryType.SESSION_SAVED
            again = await session.save(path)  # incremental onto the same file
            assert again == saved + 1
        async with Session.load(path) as loaded:
            assert await loaded.verify() == again + 1
            assert await loaded.get_all_state() == await mirror.get_all_state()
            for name in await mirror.list_artifacts():
                assert await loaded.read_artifact(name) == await mirror.read_artifact(name)
        with pytest.raises(SessionExistsError):
            await hub.import_file(path)
        assert await hub.delete_session("s")
        assert await hub.import_file(path) == "s"
        async with hub.open("s") as imported:
            assert await imported.get_all_state() == await mirror.get_all_state()
            last = (await imported.get_trajectory(1))[0]
            assert last.entry_type is EntryType.SESSION_LOADED
            assert await imported.verify() == again + 1


async def test_artifacts_replaced_and_deleted_after_a_reopen_record_their_size(
    store: ControlledStore,
) -> None:
    async with small_hub(store, idle_timeout=0) as hub:
        async with hub.open("s", create=True) as session:
            await session.write_artifact("a", b"12345")
            await session.write_artifact("b", b"123")
        await wait_until(lambda: hub.statistics().evicted == 1)
        async with hub.open("s") as session:
            await session.write_artifact("a", b"x")
            async with session.transaction() as tx:
                tx.delete_artifact("b")
            entries = await session.get_trajectory(2)
            assert entries[0].content["old_size"] == 5
            assert entries[1].content["size"] == 3
            assert await session.verify() == 5


async def test_resume_sequence_reads_the_plan_from_the_store(store: ControlledStore) -> None:
    plan = [{"capability": "reverse", "params": {"key": "text"}}] * 10
    async with small_hub(store) as hub, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        async with hub.open("s", create=True) as session:
            await session.set("text", "abc")
            first = await dispatcher.dispatch_sequence(plan, session, plan_id="p")
            assert first.success
            await session.flush()
            assert durable(session)._core.base > 0  # the plan's start is no longer in memory
            length, reads = await session.get_trajectory_length(), store.read_calls
            again = await dispatcher.resume_sequence(plan, session, plan_id="p")
            assert again.success
            assert [r.result for r in again.results] == [
                {"resumed": True, "step_index": i} for i in range(10)
            ]
            assert await session.get_trajectory_length() == length  # nothing ran again
            assert store.read_calls > reads
            assert await session.get("text") == "abc"  # reversed ten times


async def test_a_read_of_another_key_does_not_wait_for_an_uncommitted_write(
    store: ControlledStore,
) -> None:
    """A read of key "b" answers at once (its committed value) while a write of "a" is
    committing, and while one of "a" is posted; a read of "a" waits for the commit."""
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        await session.set("a", "old")
        await session.set("b", "kept")
        store.commit_gate = anyio.Event()
        seen: list[object] = []
        async with anyio.create_task_group() as tg:

            async def write() -> None:
                await session.set("a", "new")

            tg.start_soon(write)
            await wait_until(lambda: store.commits_waiting == 1)  # "a" is committing
            async with session.transaction(wait=False) as tx:
                tx.set("a", "newer")  # and one more queued behind it
            try:
                with anyio.fail_after(5):
                    assert await session.get("b") == "kept"
                    assert await session.get("missing", 0) == 0
            except BaseException:
                store.commit_gate.set()
                raise

            async def read_a() -> None:
                seen.append(await session.get("a"))

            tg.start_soon(read_a)
            await anyio.sleep(0.01)
            assert seen == []  # "a" is not durable yet: its read waits
            store.commit_gate.set()
        assert seen == ["newer"]  # the read of "a" came after both writes of it


async def test_state_read_does_not_wait_for_uncommitted_appends(store: ControlledStore) -> None:
    """A state read answers at once while only appends (which change no state) are queued
    or committing; a history read still waits for them, and a queued set makes it wait."""
    async with small_hub(store) as hub, hub.open("s", create=True) as session:
        await session.set("k", "old")
        store.commit_gate = anyio.Event()
        session.append_nowait("agent", EntryType.SYSTEM_NOTE, {"n": 1})
        await wait_until(lambda: store.commits_waiting == 1)  # the append is committing
        session.append_nowait("agent", EntryType.SYSTEM_NOTE, {"n": 2})  # and one queued
        try:
            with anyio.fail_after(5):
                assert await session.get("k") == "old"
                assert await session.get_all_state() == {"k": "old"}
                assert await session.get_state_version() == 1
        except BaseException:
            store.commit_gate.set()  # let the hub close
            raise
        seen: list[object] = []
        async with anyio.create_task_group() as tg:

            async def history() -> None:
                seen.append(await session.get_trajectory_length())

            async def state_after_set() -> None:
                async with session.transaction(wait=False) as tx:
                    tx.set("k", "new")
                seen.append(await session.get("k"))

            tg.start_soon(history)
            tg.start_soon(state_after_set)
            await anyio.sleep(0.01)
            assert seen == []  # both wait for the commits in flight and queued
            store.commit_gate.set()
        assert len(seen) == 2 and "new" in seen  # the history read saw both appends:
        assert ({4, 5} & set(seen)) and await session.get_trajectory_length() == 5


async def test_an_actor_cancelled_while_its_batch_commits_answers_with_the_outcome(
    tmp_path: Path,
) -> None:
    """The actor waits for its commit without a cancel scope: cancelled meanwhile, it still
    learns the outcome, marks the batch committed and answers its caller, then stops."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        store._writer_hook = None
        entered.set()
        release.wait(10)

    async with SessionHub(SQLiteStore(tmp_path / "s.db")) as hub:
        await hub.create("s")
    async with SQLiteStore(tmp_path / "s.db") as store:
        core = await load_core(store, "s")
        session = DurableSession._open(store, core)
        answers: list[Any] = []

        async def write() -> None:
            try:
                answers.append(await session.set("k", 1))
            except Exception as exc:  # pragma: no cover - the failure the test looks for
                answers.append(exc)

        store._writer_hook = hold
        async with anyio.create_task_group() as callers, anyio.create_task_group() as actors:
            session._start(actors)
            callers.start_soon(write)
            await anyio.to_thread.run_sync(entered.wait, 10)  # the batch is committing
            actors.cancel_scope.cancel()  # reaches the actor while it waits
            release.set()
        assert answers == [1]
        assert core.committed == core.length == 2
        assert (await store.load("s")).state == {"k": b"1"}


async def test_reads_queued_during_a_commit_are_answered_in_its_pass(tmp_path: Path) -> None:
    """A read that arrives while the batch before it commits (nothing queued in between)
    is answered right after that commit, with the committed value, in the same pass of
    the actor (not one more pass with nothing to commit)."""
    entered, release = threading.Event(), threading.Event()
    store = SQLiteStore(tmp_path / "s.db")

    def hold(conn: sqlite3.Connection) -> None:
        store._writer_hook = None
        entered.set()
        release.wait(10)

    async with SessionHub(store) as hub, hub.open("s", create=True) as session:
        actor = durable(session)._running()
        reads: list[Any] = []

        async def read() -> None:
            reads.append(await session.get("k"))

        store._writer_hook = hold
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.set, "k", 1)
            await anyio.to_thread.run_sync(entered.wait, 10)  # the set is committing
            tg.start_soon(read)
            await wait_until(lambda: len(actor.queue) == 1)  # the read waits for it
            passes = actor.batches
            release.set()
        assert reads == [1]
        assert actor.batches == passes


async def test_open_steps_are_sent_only_when_they_change() -> None:
    """A batch carries the session's open steps only when they differ from what the store
    holds: a whole step in one batch (started and completed) leaves them as they were."""
    store = ControlledStore(MemoryStore())
    step = {"plan_id": "p", "step_index": 0, "capability": "c", "agent_id": "a"}
    async with SessionHub(store) as hub, hub.open("s", create=True) as session:
        async with session.transaction() as tx:
            tx.append("system", EntryType.PLAN_STEP_STARTED, step)
            tx.append("system", EntryType.PLAN_STEP_COMPLETED, {**step, "status": "success"})
        assert store.batches[-1].open_steps is None
        await session.append("system", EntryType.PLAN_STEP_STARTED, step)
        started = await session.get_trajectory_length()
        assert store.batches[-1].open_steps == (started,)
        await session.append("system", EntryType.PLAN_STEP_COMPLETED, {**step, "status": "ok"})
        assert store.batches[-1].open_steps == ()
    async with SessionHub(store) as hub, hub.open("s") as session:
        kinds = [e.entry_type for e in await session.get_trajectory()]
        assert EntryType.PLAN_STEP_COMPLETED in kinds
        assert (await store.load("s")).open_steps == ()


async def test_a_step_started_in_a_transaction_is_an_open_step() -> None:
    """A ``plan_step_started`` appended in a transaction (awaited or posted) opens a step
    in the store, as one appended alone does; a state write in the same transaction is
    committed with it."""
    store = ControlledStore(MemoryStore())
    step = {"plan_id": "p", "step_index": 0, "capability": "c", "agent_id": "a"}
    async with SessionHub(store) as hub, hub.open("s", create=True) as session:
        async with session.transaction() as tx:
            tx.set("k", 1)
            tx.append("system", EntryType.PLAN_STEP_STARTED, step)
        assert tx.results is not None
        first = tx.results[1]
        assert store.batches[-1].open_steps == (first,)
        async with session.transaction(wait=False) as tx:
            tx.append("system", EntryType.PLAN_STEP_STARTED, {**step, "step_index": 1})
            tx.set("k", 2)
        await session.flush()
        second = await session.get_trajectory_length() - 1
        assert store.batches[-1].open_steps == (first, second)
        loaded = await store.load("s")
        assert loaded.open_steps == (first, second)
        assert decode(loaded.state["k"]) == 2


async def test_a_dispatched_step_is_answered_once_it_is_durable(store: ControlledStore) -> None:
    """A step on a store-backed session is acknowledged after its entries commit; a step
    whose commit fails fails its caller with PersistError and leaves nothing of it."""
    async with (
        small_hub(store) as hub,
        hub.open("s", create=True) as session,
        Dispatcher() as dispatcher,
    ):
        dispatcher.register(ReverseAgent())
        await session.set("text", "abc")
        gate = store.commit_gate = anyio.Event()
        results: list[Any] = []
        async with anyio.create_task_group() as tg:
            tg.cancel_scope.deadline = anyio.current_time() + 10

            async def call() -> None:
                results.append(
                    await dispatcher.dispatch_single("reverse", session, {"key": "text"})
                )

            tg.start_soon(call)
            try:
                with anyio.fail_after(5):
                    while not store.commits_waiting:  # the step's commit is under way
                        await anyio.sleep(0.001)
                await anyio.sleep(0.02)
                answered_early = list(results)
            finally:
                gate.set()  # a failed assertion must not leave the commit hanging
        assert answered_early == []  # not answered while its entries were not durable
        assert results[0].success
        stored = await store.inner.read("s")
        assert [r[ENTRY_TYPE] for r in stored[-5:]][::4] == [
            "plan_step_started",
            "plan_step_completed",
        ]
        store.commit_gate = None
        store.fail_commits = 1
        with pytest.raises(PersistError):
            await dispatcher.dispatch_single("reverse", session, {"key": "text"})
        assert await session.get("text") == "cba"  # reloaded: the failed step left nothing
        assert len(await store.inner.read("s")) == len(stored)
