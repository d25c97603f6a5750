"""The session stores: one contract suite run on every store, then SQLite's own rules.

The contract tests take the ``store`` (an entered store) or ``make_store`` (a factory of
unentered stores over the same data, for reopening) fixtures and nothing else, so a new
store joins the suite by adding one entry to ``STORES``. Batches are cut from a real
:class:`SessionCore`, as a store-backed session would cut them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from kaizen_async import (
    ArtifactNotFoundError,
    EntryType,
    ErrorCode,
    KaizenTypeError,
    KaizenValidationError,
    PersistError,
    SchemaMismatchError,
    Session,
    SessionBusyError,
    SessionCorruptedError,
    SessionExistsError,
    SessionFencedError,
    SessionNotFoundError,
)
from kaizen_async._canonical import sha256_hex
from kaizen_async._state import SessionCore
from kaizen_async._trajectory import AGENT_ID, ENTRY_TYPE, SEQ, Record
from kaizen_async.stores import (
    Batch,
    MemoryStore,
    PostgresStore,
    SessionInfo,
    SessionStore,
    SQLiteStore,
    StoredSession,
    _sqlite_schema,
)

pytestmark = pytest.mark.anyio


# -- building batches from a real session core -------------------------------------------------


class Driver:
    """Writes through a :class:`SessionCore` and cuts what it wrote since the last cut into
    a :class:`Batch` (records, changed state keys and artifacts, new blobs)."""

    def __init__(self, session_id: str, *, agent: str = "agent") -> None:
        self.core = SessionCore(session_id)
        self.agent = agent
        self.cut = 0
        self._reset()
        self.open_steps: tuple[int, ...] | None = None

    def _reset(self) -> None:
        self.state: dict[str, bytes | None] = {}
        self.artifacts: dict[str, str | None] = {}
        self.blobs: dict[str, bytes] = {}
        self.open_steps = None

    @property
    def session_id(self) -> str:
        return self.core.session_id

    @property
    def records(self) -> list[Record]:
        return self.core.records

    def set(self, key: str, value: Any) -> Driver:
        self.core.set(key, value)
        self.state[key] = self.core.state[key]
        return self

    def delete(self, key: str) -> Driver:
        self.core.delete(key)
        self.state[key] = None
        return self

    def write(self, name: str, data: bytes) -> Driver:
        self.core.write_artifact(name, data)
        digest = self.core.artifacts[name]
        self.artifacts[name] = digest
        self.blobs[digest] = data
        return self

    def remove(self, name: str) -> Driver:
        self.core.delete_artifact(name)
        self.artifacts[name] = None
        return self

    def note(self, kind: EntryType = EntryType.SYSTEM_NOTE, agent: str | None = None) -> Driver:
        self.core.append(agent or self.agent, kind, {"n": len(self.core.records) + 1})
        return self

    def batch(self) -> Batch:
        records = self.core.records[self.cut :]
        batch = Batch(
            self.session_id,
            self.cut,
            records,
            self.core.version,
            state=self.state,
            artifacts=self.artifacts,
            blobs=self.blobs,
            open_steps=self.open_steps,
        )
        self.cut = len(self.core.records)
        self._reset()
        return batch

    async def create(self, store: SessionStore, **metadata: Any) -> SessionInfo:
        return await store.create(
            self.batch(),
            max_artifact_size=self.core.max_artifact_size,
            workspace_path=self.core.workspace_path,
            metadata=metadata,
        )

    async def commit(self, store: SessionStore) -> None:
        await store.commit(self.batch())


async def created(store: SessionStore, session_id: str, **metadata: Any) -> Driver:
    driver = Driver(session_id)
    await driver.create(store, **metadata)
    return driver


async def assert_matches(store: SessionStore, driver: Driver, tail: int = 256) -> StoredSession:
    """The store holds exactly what the driver's core holds, and replaying the stored
    history (hash chain verified) gives the stored state."""
    core = driver.core
    loaded = await store.load(driver.session_id, tail=tail)
    assert loaded.info.session_id == driver.session_id
    assert loaded.info.trajectory_length == len(core.records)
    assert loaded.info.state_version == core.version
    assert loaded.head_hash == core.head
    assert loaded.state == core.state
    assert loaded.artifacts == core.artifacts
    assert loaded.tail == core.records[-tail:]
    history = await store.read(driver.session_id)
    assert history == core.records
    replayed = SessionCore.replay(history, session_id=driver.session_id)
    assert replayed.state == loaded.state
    assert replayed.artifacts == loaded.artifacts
    return loaded


# -- the stores under test ----------------------------------------------------------------------

StoreFactory = Callable[[], SessionStore]


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    store = MemoryStore()  # its data lives in the object: "reopening" re-enters it
    return lambda: store


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return lambda: SQLiteStore(tmp_path / "sessions.db")


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A schema of its own on the test server (started only when a test needs it)."""
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema)


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], StoreFactory]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
        for name in STORES
    ]
)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Unentered stores over one backing (a new one per call, same data)."""
    return STORES[request.param](request, tmp_path)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[SessionStore]:
    async with make_store() as entered:
        yield entered


# -- the contract ---------------------------------------------------------------------------------


async def test_stores_satisfy_the_protocol(store: SessionStore) -> None:
    assert isinstance(store, SessionStore)


async def test_create_then_load(store: SessionStore) -> None:
    driver = Driver("s1")
    driver.core.max_artifact_size = 1234
    driver.core.workspace_path = "/ws"
    info = await driver.create(store, owner="ann", tags=["a", "b"])
    assert info.session_id == "s1"
    assert info.trajectory_length == 1
    assert info.state_version == 0
    assert info.metadata == {"owner": "ann", "tags": ["a", "b"]}
    assert info.created_at == info.updated_at
    assert datetime.fromisoformat(info.created_at).utcoffset() is not None  # RFC 3339, UTC
    loaded = await assert_matches(store, driver)
    assert loaded.max_artifact_size == 1234
    assert loaded.workspace_path == "/ws"
    assert loaded.open_steps == ()
    assert await store.info("s1") == info


async def test_commits_append_and_materialize(store: SessionStore) -> None:
    driver = await created(store, "s")
    driver.set("a", 1).set("b", {"x": [1, 2]}).note()
    await driver.commit(store)
    driver.set("a", 2).delete("b").write("out/x.txt", b"hello")
    await driver.commit(store)
    driver.write("out/x.txt", b"hello again").write("y", b"").note(agent="other")
    await driver.commit(store)
    driver.remove("y")
    await driver.commit(store)
    loaded = await assert_matches(store, driver)
    assert loaded.state == {"a": b"2"}
    assert loaded.artifacts == {"out/x.txt": sha256_hex(b"hello again")}
    assert loaded.info.updated_at >= loaded.info.created_at
    # every version of an artifact stays readable while the session exists
    assert await store.read_blob(sha256_hex(b"hello")) == b"hello"
    assert await store.read_blob(sha256_hex(b"hello again")) == b"hello again"


async def test_tail_is_the_newest_records(store: SessionStore) -> None:
    driver = await created(store, "s")
    for i in range(20):
        driver.set("k", i)
    await driver.commit(store)
    assert (await store.load("s", tail=5)).tail == driver.records[-5:]
    assert (await store.load("s", tail=0)).tail == []
    assert (await store.load("s", tail=1000)).tail == driver.records
    with pytest.raises(KaizenValidationError):
        await store.load("s", tail=-1)


async def test_create_existing_id_is_refused_and_changes_nothing(store: SessionStore) -> None:
    driver = await created(store, "dup", v=1)
    driver.set("k", 1)
    await driver.commit(store)
    with pytest.raises(SessionExistsError) as caught:
        await Driver("dup").create(store, v=2)
    assert caught.value.code is ErrorCode.SESSION_EXISTS
    assert isinstance(caught.value, ValueError)
    loaded = await assert_matches(store, driver)
    assert loaded.info.metadata == {"v": 1}


async def test_unknown_session_is_not_found_everywhere(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError) as caught:
        await store.load("nope")
    assert caught.value.code is ErrorCode.SESSION_NOT_FOUND
    assert isinstance(caught.value, KeyError)
    with pytest.raises(SessionNotFoundError):
        await store.info("nope")
    with pytest.raises(SessionNotFoundError):
        await store.read("nope")
    with pytest.raises(SessionNotFoundError):
        await store.read("nope", entry_types=[])
    orphan = Driver("nope")
    orphan.cut = 1  # pretend entry 1 is stored
    orphan.set("k", 1)
    with pytest.raises(SessionNotFoundError):
        await orphan.commit(store)
    assert await store.list_sessions() == []


async def test_a_batch_that_does_not_continue_the_head_conflicts(store: SessionStore) -> None:
    driver = await created(store, "s")
    driver.set("k", 1)
    first = driver.batch()
    await store.commit(first)
    with pytest.raises(PersistError) as caught:  # the same batch again: stale base_seq
        await store.commit(first)
    assert caught.value.code is ErrorCode.PERSIST_CONFLICT
    assert caught.value.details["head_seq"] == 2
    await assert_matches(store, driver)


async def test_same_seqs_of_another_history_conflict(store: SessionStore) -> None:
    """Two writers of one session from the same entry 1: the second one's batch has the
    right seqs but does not chain onto the stored head, so it is refused by hash."""
    driver = await created(store, "s")
    rival = Driver("s")
    rival.core = SessionCore.replay(driver.records[:1], session_id="s")
    rival.cut = 1
    driver.set("k", "mine")
    rival.set("k", "theirs")
    await driver.commit(store)  # stored: entries 1, 2 (mine)
    rival.set("k", "theirs again")
    rival.cut = 2  # the rival believes its own entry 2 is the stored head
    with pytest.raises(PersistError) as caught:
        await rival.commit(store)  # entry 3 chained on the rival's entry 2
    assert caught.value.code is ErrorCode.PERSIST_CONFLICT
    loaded = await assert_matches(store, driver)
    assert loaded.state == {"k": b'"mine"'}


async def test_bad_batches_are_refused_before_anything_is_written(
    store: SessionStore,
) -> None:
    driver = await created(store, "s")
    driver.set("k", 1)
    good = driver.batch()
    with pytest.raises(KaizenTypeError):
        await store.commit("not a batch")  # type: ignore[arg-type]
    with pytest.raises(KaizenValidationError):  # records do not start after base_seq
        await store.commit(Batch("s", 0, good.records, 1))
    with pytest.raises(KaizenValidationError):
        await store.commit(Batch(" ", 1, good.records, 1))
    with pytest.raises(KaizenValidationError):
        await store.commit(Batch("s", -1, [], 1))
    with pytest.raises(KaizenValidationError):  # create needs base 0 and records
        await store.create(good, max_artifact_size=1, workspace_path=None)
    with pytest.raises(KaizenValidationError):
        await store.create(Batch("t", 0, [], 0), max_artifact_size=1, workspace_path=None)
    with pytest.raises(KaizenValidationError):
        await Driver("t").create(store, bad=object())
    with pytest.raises(KaizenValidationError):
        await store.create(Driver("t").batch(), max_artifact_size=-1, workspace_path=None)
    with pytest.raises(KaizenValidationError):
        await store.load("")
    with pytest.raises(KaizenValidationError):  # a lone surrogate: not valid UTF-8
        await store.commit(Batch("s\ud800", 1, good.records, 1))
    with pytest.raises(KaizenValidationError):
        await store.read("s", agent_id="a\ud800")
    with pytest.raises(KaizenValidationError):
        await store.list_sessions(after="\ud800")
    with pytest.raises(KaizenValidationError):
        await store.create(Driver("t").batch(), max_artifact_size=1, workspace_path="\ud800")
    with pytest.raises(KaizenValidationError):
        await store.read("s", since_seq=-1)
    with pytest.raises(KaizenValidationError):
        await store.read("s", limit=-2)
    with pytest.raises(KaizenValidationError):
        await store.read("s", entry_types=["no_such_type"])
    with pytest.raises(KaizenValidationError):
        await store.delete(None)  # type: ignore[arg-type]
    assert [i.session_id for i in await store.list_sessions()] == ["s"]
    await store.commit(good)  # nothing of the refused calls was written
    await assert_matches(store, driver)


async def test_read_ranges_and_filters(store: SessionStore) -> None:
    driver = await created(store, "s")
    for i in range(10):
        driver.set("k", i)
        driver.note(EntryType.USER_INPUT, agent="alice" if i % 2 else "bob")
    await driver.commit(store)
    records = driver.records  # 1 created + 20
    assert await store.read("s") == records
    assert await store.read("s", since_seq=5) == records[5:]
    assert await store.read("s", since_seq=5, until_seq=8) == records[5:8]
    assert await store.read("s", until_seq=1000) == records
    assert await store.read("s", since_seq=21) == []
    kinds = await store.read("s", entry_types=[EntryType.USER_INPUT])
    assert kinds == [r for r in records if r[ENTRY_TYPE] == "user_input"]
    assert await store.read("s", entry_types={"state_set", "session_created"}) == [
        r for r in records if r[ENTRY_TYPE] in ("state_set", "session_created")
    ]
    assert await store.read("s", entry_types=[]) == []
    alice = await store.read("s", agent_id="alice")
    assert alice == [r for r in records if r[AGENT_ID] == "alice"] and len(alice) == 5
    assert await store.read("s", agent_id="alice", entry_types=["state_set"]) == []
    assert await store.read("s", limit=3) == records[:3]
    assert await store.read("s", limit=3, newest=True) == records[-3:]
    assert await store.read("s", limit=0) == []
    assert (
        await store.read("s", since_seq=2, until_seq=12, limit=2, newest=True) == (records[10:12])
    )
    assert (
        await store.read("s", entry_types=["user_input"], agent_id="bob", limit=2, newest=True)
        == [r for r in records if r[AGENT_ID] == "bob"][-2:]
    )


async def test_blobs_are_shared_and_dropped_with_their_last_session(
    store: SessionStore,
) -> None:
    shared, own_a, own_b = b"shared data", b"only a", b"only b"
    a = await created(store, "a")
    a.write("x", shared).write("y", own_a)
    await a.commit(store)
    b = await created(store, "b")
    b.write("copy", shared).write("z", own_b)
    await b.commit(store)
    digests = {data: sha256_hex(data) for data in (shared, own_a, own_b)}
    assert await store.delete("a") is True
    assert await store.read_blob(digests[shared]) == shared
    assert await store.read_blob(digests[own_b]) == own_b
    with pytest.raises(ArtifactNotFoundError):
        await store.read_blob(digests[own_a])
    assert await store.delete("b") is True
    for data in (shared, own_b):
        with pytest.raises(ArtifactNotFoundError):
            await store.read_blob(digests[data])
    with pytest.raises(ArtifactNotFoundError):
        await store.read_blob("not a digest")


async def test_blob_kept_by_an_artifact_reference_alone(store: SessionStore) -> None:
    """A fork refers to its parent's blob without carrying the data: the blob must stay
    while the fork exists, even once the parent is deleted."""
    parent = await created(store, "parent")
    parent.write("x", b"data")
    await parent.commit(store)
    records = Driver("child").batch().records
    await store.create(
        Batch("child", 0, records, 0, artifacts={"x": sha256_hex(b"data")}),
        max_artifact_size=10,
        workspace_path=None,
    )
    await store.delete("parent")
    assert await store.read_blob(sha256_hex(b"data")) == b"data"
    assert (await store.load("child")).artifacts == {"x": sha256_hex(b"data")}


async def test_delete(store: SessionStore) -> None:
    driver = await created(store, "s")
    driver.set("k", 1)
    await driver.commit(store)
    await created(store, "keep")
    assert await store.delete("s") is True
    assert await store.delete("s") is False
    with pytest.raises(SessionNotFoundError):
        await store.load("s")
    assert [i.session_id for i in await store.list_sessions()] == ["keep"]
    again = await created(store, "s")  # the id is free again, with a new history
    await assert_matches(store, again)


async def test_list_sessions_pages_by_id(store: SessionStore) -> None:
    ids = [f"s{i:03d}" for i in range(25)] + ["Z", "ä"]
    async with anyio.create_task_group() as tg:
        for sid in ids:
            tg.start_soon(created, store, sid)
    expected = sorted(ids)
    everything = await store.list_sessions()
    assert [i.session_id for i in everything] == expected
    pages: list[str] = []
    after: str | None = None
    while True:
        page = await store.list_sessions(limit=10, after=after)
        if not page:
            break
        assert len(page) <= 10
        pages += [i.session_id for i in page]
        after = page[-1].session_id
    assert pages == expected
    assert await store.list_sessions(limit=0) == []
    assert [i.session_id for i in await store.list_sessions(after="s023")] == [
        "s024",
        "ä",
    ]
    with pytest.raises(KaizenValidationError):
        await store.list_sessions(limit=-1)


async def test_open_steps(store: SessionStore) -> None:
    driver = await created(store, "s")
    driver.note(EntryType.PLAN_STEP_STARTED)
    driver.note(EntryType.PLAN_STEP_STARTED)
    driver.open_steps = (2, 3)
    await driver.commit(store)
    assert (await store.load("s")).open_steps == (2, 3)
    driver.set("k", 1)  # open_steps None: unchanged
    await driver.commit(store)
    assert (await store.load("s")).open_steps == (2, 3)
    driver.note(EntryType.PLAN_STEP_COMPLETED)
    driver.open_steps = (3,)
    await driver.commit(store)
    assert (await store.load("s")).open_steps == (3,)


async def test_a_batch_without_records_updates_open_steps(store: SessionStore) -> None:
    driver = await created(store, "s")
    await store.commit(Batch("s", 1, [], 0, open_steps=(1,)))
    assert (await store.load("s")).open_steps == (1,)
    with pytest.raises(PersistError) as caught:
        await store.commit(Batch("s", 5, [], 0, open_steps=()))
    assert caught.value.code is ErrorCode.PERSIST_CONFLICT
    await assert_matches(store, driver)


async def test_many_sessions_committing_concurrently(store: SessionStore) -> None:
    drivers = [Driver(f"s{i}") for i in range(32)]

    async def work(driver: Driver) -> None:
        await driver.create(store)
        for i in range(5):
            driver.set("k", i).set(f"k{i}", driver.session_id)
            if i == 2:
                driver.write(f"a{i}", driver.session_id.encode())
            await driver.commit(store)

    async with anyio.create_task_group() as tg:
        for driver in drivers:
            tg.start_soon(work, driver)
    for driver in drivers:
        await assert_matches(store, driver)
    statistics = store.statistics()
    assert statistics.batches == 32 * 6
    assert statistics.queued == 0


async def test_pipelined_batches_of_one_session_apply_in_order(store: SessionStore) -> None:
    """Batches of one session committed without waiting for each other: a key set, then
    deleted, then set again, ends as the last batch left it (even in one transaction)."""
    driver = await created(store, "s")
    batches = []
    for i in range(6):
        driver.set("k", i)
        if i % 2:
            driver.delete("k")
        driver.write("a", bytes([i]))
        if i == 4:
            driver.remove("a")
        batches.append(driver.batch())
    done = []

    async def commit(batch: Batch) -> None:
        await store.commit(batch)
        done.append(batch.base_seq)

    async with anyio.create_task_group() as tg:
        for batch in batches:
            tg.start_soon(commit, batch)
            await anyio.wait_all_tasks_blocked()  # its commit is queued (or done): in order
    assert sorted(done) == [b.base_seq for b in batches]
    await assert_matches(store, driver)


async def test_reopening_keeps_everything(make_store: StoreFactory) -> None:
    async with make_store() as store:
        driver = await created(store, "s", m=1)
        driver.set("k", [1, "二"]).write("f", b"\x00\x01")
        driver.open_steps = (2,)
        await driver.commit(store)
        first = await store.load("s")
    async with make_store() as store:
        again = await assert_matches(store, driver)
        assert again == first
        assert await store.read_blob(sha256_hex(b"\x00\x01")) == b"\x00\x01"
        driver.set("k", 2)
        await driver.commit(store)
        await assert_matches(store, driver)


async def test_a_closed_store_refuses_calls(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(PersistError) as caught:
        await store.load("s")
    assert caught.value.code is ErrorCode.PERSIST_LOAD_FAILED
    with pytest.raises(PersistError) as caught:
        await Driver("s").create(store)
    assert caught.value.code is ErrorCode.PERSIST_COMMIT_FAILED
    async with store:
        await created(store, "s")
        with pytest.raises(PersistError):  # entered twice at once
            async with store:
                pass
        assert (await store.info("s")).session_id == "s"
    with pytest.raises(PersistError):
        await store.info("s")
    with pytest.raises(PersistError):
        await store.delete("s")


# -- ownership (several hubs on one store) ----------------------------------------------------


async def test_acquire_takes_ownership_and_fences_the_previous_owner(
    store: SessionStore,
) -> None:
    driver = await created(store, "s")
    first = await store.acquire("s", "hub-a", lease_seconds=60)
    assert (first.session_id, first.owner) == ("s", "hub-a")
    assert first.lease_until > time.time() + 50
    with pytest.raises(SessionBusyError) as caught:  # hub-a's lease runs
        await store.acquire("s", "hub-b", lease_seconds=60)
    assert caught.value.code is ErrorCode.SESSION_BUSY
    assert caught.value.details["owner"] == "hub-a"
    assert "hub-a" in str(caught.value)
    driver.set("k", "a")
    await store.commit(_with_epoch(driver.batch(), first.epoch))  # the owner writes
    second = await store.acquire("s", "hub-b", lease_seconds=60, take_over=True)
    assert second.epoch > first.epoch
    stale = Driver("s")  # hub-a's copy, one write ahead of what it committed
    stale.core = SessionCore.replay(driver.records, session_id="s")
    stale.cut = len(stale.records)
    stale.set("k", "a again")
    with pytest.raises(SessionFencedError) as fenced:
        await store.commit(_with_epoch(stale.batch(), first.epoch))
    assert fenced.value.code is ErrorCode.SESSION_FENCED
    assert isinstance(fenced.value, PersistError)
    assert fenced.value.details["owner"] == "hub-b"
    driver.set("k", "b")
    await store.commit(_with_epoch(driver.batch(), second.epoch))
    loaded = await assert_matches(store, driver)  # nothing of the fenced write is stored
    assert loaded.state == {"k": b'"b"'}
    with pytest.raises(SessionFencedError):  # a batch that conflicts too is fenced first
        await store.commit(Batch("s", 1, [], 0, epoch=first.epoch))
    with pytest.raises(SessionNotFoundError):
        await store.acquire("nope", "hub-a", lease_seconds=1)


def _with_epoch(batch: Batch, epoch: int) -> Batch:
    return dataclasses.replace(batch, epoch=epoch)


async def test_an_expired_lease_is_taken_over(store: SessionStore) -> None:
    await created(store, "s")
    first = await store.acquire("s", "hub-a", lease_seconds=0.05)
    await anyio.sleep(0.1)
    second = await store.acquire("s", "hub-b", lease_seconds=60)
    assert second.owner == "hub-b" and second.epoch == first.epoch + 1
    again = await store.acquire("s", "hub-b", lease_seconds=60)  # its own: a new epoch
    assert again.epoch == second.epoch + 1


async def test_replace_owner_takes_only_from_the_owner_named(store: SessionStore) -> None:
    await created(store, "s")
    first = await store.acquire("s", "hub-a", lease_seconds=60)
    with pytest.raises(SessionBusyError):  # hub-a holds it, not hub-x
        await store.acquire("s", "hub-b", lease_seconds=60, replace_owner="hub-x")
    second = await store.acquire("s", "hub-b", lease_seconds=60, replace_owner="hub-a")
    assert second.epoch == first.epoch + 1
    with pytest.raises(SessionBusyError):  # hub-b took it meanwhile: hub-c's is refused
        await store.acquire("s", "hub-c", lease_seconds=60, replace_owner="hub-a")
    with pytest.raises(KaizenValidationError):
        await store.acquire("s", "hub-c", lease_seconds=60, replace_owner="")


async def test_renew_extends_held_leases_and_reports_lost_ones(store: SessionStore) -> None:
    for sid in ("s1", "s2", "s3"):
        await created(store, sid)
    a1 = await store.acquire("s1", "hub-a", lease_seconds=1)
    a2 = await store.acquire("s2", "hub-a", lease_seconds=1)
    await store.acquire("s2", "hub-b", lease_seconds=60, take_over=True)
    kept = await store.renew(
        "hub-a", {"s1": a1.epoch, "s2": a2.epoch, "s3": 1, "gone": 1}, lease_seconds=60
    )
    assert set(kept) == {"s1"}
    assert kept["s1"] > a1.lease_until + 30
    with pytest.raises(SessionBusyError):  # the renewed lease holds
        await store.acquire("s1", "hub-b", lease_seconds=60)
    assert await store.renew("hub-a", {}, lease_seconds=60) == {}


async def test_release_frees_the_session_at_once(store: SessionStore) -> None:
    await created(store, "s")
    first = await store.acquire("s", "hub-a", lease_seconds=60)
    await store.release("s", "hub-b", first.epoch)  # not the owner: nothing happens
    await store.release("s", "hub-a", first.epoch + 1)  # not its epoch: nothing happens
    with pytest.raises(SessionBusyError):
        await store.acquire("s", "hub-b", lease_seconds=60)
    await store.release("s", "hub-a", first.epoch)
    second = await store.acquire("s", "hub-b", lease_seconds=60)
    assert second.epoch == first.epoch + 1
    await store.release("gone", "hub-a", 1)  # an unknown session: nothing to release


async def test_ownership_arguments_are_checked(store: SessionStore) -> None:
    await created(store, "s")
    for owner in ("", " ", "a\nb", 3):
        with pytest.raises(KaizenValidationError):
            await store.acquire("s", owner, lease_seconds=1)  # type: ignore[arg-type]
    for lease in (0, -1, float("nan"), True, "1"):
        with pytest.raises(KaizenValidationError):
            await store.acquire("s", "hub", lease_seconds=lease)  # type: ignore[arg-type]
    with pytest.raises(KaizenValidationError):
        await store.renew("hub", {"s": -1}, lease_seconds=1)
    with pytest.raises(KaizenValidationError):
        await store.commit(Batch("s", 1, [], 0, epoch=-1))
    with pytest.raises(KaizenValidationError):
        await store.wait_for_commit("s", -1, timeout=1)
    with pytest.raises(KaizenValidationError):
        await store.wait_for_commit("s", 0, timeout=-1)
    first = await store.acquire("s", "hub", lease_seconds=1)
    assert first.epoch == 1  # nothing refused above took the session


async def test_wait_for_commit_wakes_on_a_commit(store: SessionStore) -> None:
    driver = await created(store, "s")
    assert await store.wait_for_commit("s", 0, timeout=5) == 1  # already past
    assert await store.wait_for_commit("s", 1, timeout=0.05) == 1  # timed out: the head
    heads: list[int] = []

    async def wait() -> None:
        heads.append(await store.wait_for_commit("s", 1, timeout=30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        tg.start_soon(wait)
        await anyio.sleep(0.05)
        assert heads == []
        driver.set("k", 1).note()
        with anyio.fail_after(10):  # woken by the commit, long before their timeout
            await driver.commit(store)
    assert heads == [3, 3]
    with pytest.raises(SessionNotFoundError):
        await store.wait_for_commit("nope", 0, timeout=1)


# -- SQLite: durability, group commit, schema -----------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


class Gate:
    """Holds the SQLite writer at the start of its next transaction until released (so
    that what is queued meanwhile lands in one transaction, deterministically)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.store = store
        store._writer_hook = self._hook

    def _hook(self, conn: sqlite3.Connection) -> None:
        self.store._writer_hook = None  # once
        self.entered.set()
        self.release.wait(10)

    async def wait_entered(self) -> None:
        await anyio.to_thread.run_sync(self.entered.wait, 10)


async def test_sqlite_group_commit_batches_concurrent_commits(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        drivers = [await created(store, f"s{i}") for i in range(64)]
        before = store.statistics()
        for driver in drivers:
            driver.set("k", 1)
        gate = Gate(store)
        async with anyio.create_task_group() as tg:
            tg.start_soon(drivers[0].commit, store)
            await gate.wait_entered()  # the writer holds the first batch in its transaction
            for driver in drivers[1:]:
                tg.start_soon(driver.commit, store)
            while store.statistics().queued < 63:
                await anyio.sleep(0.001)
            gate.release.set()
        after = store.statistics()
        assert after.commits - before.commits == 2  # 1 batch, then the 63 queued meanwhile
        assert after.batches - before.batches == 64
        assert after.mean_batch_size > 1
        for driver in drivers:
            await assert_matches(store, driver)


async def test_sqlite_many_concurrent_commits_share_transactions(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        drivers = [await created(store, f"s{i}") for i in range(64)]

        async def work(driver: Driver) -> None:
            for i in range(10):
                driver.set("k", i)
                await driver.commit(store)

        start = store.statistics()
        async with anyio.create_task_group() as tg:
            for driver in drivers:
                tg.start_soon(work, driver)
        end = store.statistics()
        assert end.batches - start.batches == 640
        assert (end.batches - start.batches) / (end.commits - start.commits) > 1


async def test_sqlite_a_conflict_fails_alone_in_its_transaction(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        good1, good2, stale = [await created(store, sid) for sid in ("a", "b", "c")]
        stale.set("k", 1)
        await stale.commit(store)
        stale.cut = 1  # its next batch claims seqs already stored
        for driver in (good1, good2, stale):
            driver.set("k", 2)
        outcomes: dict[str, BaseException | None] = {}

        async def commit(driver: Driver) -> None:
            try:
                await driver.commit(store)
                outcomes[driver.session_id] = None
            except PersistError as exc:
                outcomes[driver.session_id] = exc

        blocker = await created(store, "blocker")
        blocker.set("k", 0)
        before = store.statistics()
        gate = Gate(store)
        async with anyio.create_task_group() as tg:
            tg.start_soon(blocker.commit, store)
            await gate.wait_entered()
            for driver in (good1, stale, good2):
                tg.start_soon(commit, driver)
            while store.statistics().queued < 3:
                await anyio.sleep(0.001)
            gate.release.set()
        assert store.statistics().commits - before.commits == 2
        assert outcomes["a"] is None and outcomes["b"] is None
        error = outcomes["c"]
        assert isinstance(error, PersistError) and error.code is ErrorCode.PERSIST_CONFLICT
        await assert_matches(store, good1)
        await assert_matches(store, good2)
        assert (await store.load("c")).info.trajectory_length == 2


async def _held(store: SQLiteStore, queue: Callable[[anyio.abc.TaskGroup], Awaitable[None]]) -> int:
    """Hold the writer in a transaction, let ``queue`` start commits meanwhile, release;
    returns how many transactions ran (what was queued lands in one)."""
    blocker = await created(store, f"blocker-{store.statistics().commits}")
    blocker.set("k", 0)
    before = store.statistics()
    gate = Gate(store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(blocker.commit, store)
        await gate.wait_entered()
        await queue(tg)
        await anyio.wait_all_tasks_blocked()
        gate.release.set()
    return store.statistics().commits - before.commits


async def test_sqlite_batches_of_one_session_in_one_transaction(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
        batches = []
        for i in range(5):  # set, delete, set ... the same key and artifact
            driver.set("k", i)
            if i % 2:
                driver.delete("k")
            driver.write("a", bytes([i]))
            if i == 3:
                driver.remove("a")
            batches.append(driver.batch())

        async def queue(tg: anyio.abc.TaskGroup) -> None:
            for batch in batches:  # queued in this order
                tg.start_soon(store.commit, batch)
                await anyio.wait_all_tasks_blocked()

        assert await _held(store, queue) == 2
        loaded = await assert_matches(store, driver)
        assert loaded.state == {"k": b"4"}  # deleted, then set again by the last batch
        assert loaded.artifacts == {"a": sha256_hex(bytes([4]))}


async def test_sqlite_commit_then_delete_in_one_transaction(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
        driver.set("k", 1).write("f", b"gone with the session")

        async def queue(tg: anyio.abc.TaskGroup) -> None:
            tg.start_soon(driver.commit, store)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.delete, "s")

        assert await _held(store, queue) == 2
        with pytest.raises(SessionNotFoundError):
            await store.load("s")
        with pytest.raises(ArtifactNotFoundError):
            await store.read_blob(sha256_hex(b"gone with the session"))
        again = await created(store, "s")  # no rows of the old session were left behind
        await assert_matches(store, again)


async def test_sqlite_reads_run_beside_the_writer_and_see_committed_data(
    db_path: Path,
) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
        driver.set("k", 1)
        await driver.commit(store)
        driver.set("k", 2)
        gate = Gate(store)
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.commit, store)
            await gate.wait_entered()  # the writer is busy with the new batch
            loaded = await store.load("s")  # not blocked behind it
            assert loaded.state == {"k": b"1"}
            assert len(await store.read("s")) == 2
            gate.release.set()
        assert (await store.load("s")).state == {"k": b"2"}


async def test_sqlite_a_commit_cancelled_while_queued_is_withdrawn(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        a, b = await created(store, "a"), await created(store, "b")
        a.set("k", 1)
        b.set("k", 1)
        gate = Gate(store)
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.commit, store)
            await gate.wait_entered()
            with anyio.move_on_after(0.05):
                await b.commit(store)  # queued behind the held transaction, then cancelled
            gate.release.set()
        assert (await store.load("a")).state == {"k": b"1"}
        assert (await store.load("b")).info.trajectory_length == 1  # never written


async def test_sqlite_leaving_commits_what_is_queued(db_path: Path) -> None:
    drivers = [Driver(f"s{i}") for i in range(10)]
    async with SQLiteStore(db_path) as store, anyio.create_task_group() as tg:
        for driver in drivers:
            tg.start_soon(driver.create, store)
    async with SQLiteStore(db_path) as store:
        assert len(await store.list_sessions()) == 10


async def test_sqlite_schema_is_created_and_marked(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == (
            _sqlite_schema.APPLICATION_ID
        )
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(_sqlite_schema.MIGRATIONS) + 1))
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == _sqlite_schema.TABLES
    finally:
        conn.close()


async def test_sqlite_an_empty_file_becomes_a_store(db_path: Path) -> None:
    db_path.write_bytes(b"")
    async with SQLiteStore(db_path) as store:
        await created(store, "s")
    async with SQLiteStore(db_path) as store:
        assert [i.session_id for i in await store.list_sessions()] == ["s"]


async def test_sqlite_garbage_file_is_corrupted_at_open(db_path: Path) -> None:
    db_path.write_bytes(os.urandom(8192))
    store = SQLiteStore(db_path)
    with pytest.raises(SessionCorruptedError):
        async with store:
            pass
    assert db_path.stat().st_size == 8192


async def test_sqlite_a_foreign_database_is_corrupted_at_open(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError, match="not a kaizen_async session store"):
        async with SQLiteStore(other):
            pass
    saved = tmp_path / "one.kaizen"  # a single-session file is not a store either
    async with Session() as session:
        await session.save(saved)
    with pytest.raises(SessionCorruptedError):
        async with SQLiteStore(saved):
            pass


async def test_sqlite_a_newer_schema_is_refused(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_version VALUES (99, 'later')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaMismatchError) as caught:
        async with SQLiteStore(db_path):
            pass
    assert caught.value.details["file_version"] == 99


async def test_sqlite_missing_tables_are_corruption(db_path: Path) -> None:
    async with SQLiteStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE state")
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError, match="state"):
        async with SQLiteStore(db_path):
            pass


async def test_sqlite_migrations_apply_in_order_in_one_transaction(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
        driver.set("k", 1)
        await driver.commit(store)
    steps = [
        *_sqlite_schema.MIGRATIONS,
        ("CREATE TABLE extra (x)", "INSERT INTO extra VALUES (2)"),
        ("ALTER TABLE extra ADD COLUMN y", "UPDATE extra SET y = x * 10"),
    ]
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", steps)
    async with SQLiteStore(db_path) as store:
        await assert_matches(store, driver)
    conn = sqlite3.connect(db_path)
    try:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(steps) + 1))
        assert conn.execute("SELECT x, y FROM extra").fetchall() == [(2, 20)]
    finally:
        conn.close()


async def test_sqlite_a_failing_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
    current = len(_sqlite_schema.MIGRATIONS)
    steps = [
        *_sqlite_schema.MIGRATIONS,
        ("CREATE TABLE extra (x)",),
        ("INSERT INTO no_such_table VALUES (1)",),
    ]
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", steps)
    with pytest.raises(PersistError) as caught:
        async with SQLiteStore(db_path):
            pass
    assert caught.value.code is ErrorCode.PERSIST_LOAD_FAILED
    conn = sqlite3.connect(db_path)
    try:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, current + 1))
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "extra" not in names  # the first new step was rolled back with the second
    finally:
        conn.close()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", steps[:current])
    async with SQLiteStore(db_path) as store:
        await assert_matches(store, driver)


def _tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("statement", "call", "message"),
    [
        ("UPDATE entries SET entry_type = 'bogus' WHERE seq = 3", "load", "entry 3"),
        ("UPDATE entries SET agent_id = ' ' WHERE seq = 2", "read", "entry 2"),
        ("UPDATE entries SET content = '{}' WHERE seq = 3", "load", "entry 3"),  # TEXT, not bytes
        ("UPDATE entries SET content = x'7b7d' WHERE seq = 3", "load", "entry 3"),  # hash
        ("DELETE FROM entries WHERE seq = 2", "load", "entry 2"),
        ("UPDATE sessions SET head_hash = 'x'", "load", "malformed session row"),
        ("UPDATE sessions SET head_seq = 2", "load", "past the recorded head 2"),
        ("UPDATE sessions SET head_hash = '%s'" % ("0" * 64), "load", "not the recorded head"),
        ("UPDATE state SET key = ' '", "load", "state row"),
        ("UPDATE state SET value = x'ff'", "load", "state row"),
        ("UPDATE artifacts SET name = '../etc'", "load", "artifact name"),
        ("UPDATE artifacts SET digest = 'abc'", "load", "digest"),
        ("UPDATE sessions SET metadata_json = '[1]'", "info", "metadata"),
        ("UPDATE sessions SET open_steps_json = '[0]'", "load", "open steps"),
        ("UPDATE sessions SET session_id = ' '", "list", "session id"),
        ("UPDATE blobs SET data = x'00'", "blob", "does not match its digest"),
    ],
)
async def test_sqlite_what_it_reads_is_validated(
    db_path: Path, statement: str, call: str, message: str
) -> None:
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
        driver.set("k", 1).write("f", b"data")
        await driver.commit(store)
    _tamper(db_path, statement)
    async with SQLiteStore(db_path) as store:
        with pytest.raises(SessionCorruptedError, match=message) as caught:
            if call == "load":
                await store.load("s")
            elif call == "read":
                await store.read("s")
            elif call == "info":
                await store.info("s")
            elif call == "list":
                await store.list_sessions()
            else:
                await store.read_blob(sha256_hex(b"data"))
        assert caught.value.code is ErrorCode.SESSION_CORRUPTED


async def test_sqlite_many_sessions_and_a_long_history(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        drivers = [Driver(f"session-{i:04d}") for i in range(300)]
        async with anyio.create_task_group() as tg:
            for driver in drivers:
                tg.start_soon(driver.create, store)
        long = drivers[0]
        for chunk in range(20):
            for i in range(250):
                long.set(f"k{i % 7}", chunk * 1000 + i)
            await long.commit(store)
        loaded = await store.load(long.session_id, tail=10)
        assert loaded.tail == long.records[-10:]
        assert loaded.info.trajectory_length == 5001
        assert len(await store.list_sessions()) == 300
    async with SQLiteStore(db_path) as store:
        await assert_matches(store, long)


# -- SQLite: faults during commits --------------------------------------------------------------


async def _commit_all(
    store: SessionStore, drivers: list[Driver]
) -> dict[str, BaseException | None]:
    """Commit one batch of each driver concurrently; the outcome of each."""
    outcomes: dict[str, BaseException | None] = {}

    async def commit(driver: Driver) -> None:
        try:
            await driver.commit(store)
            outcomes[driver.session_id] = None
        except PersistError as exc:
            outcomes[driver.session_id] = exc

    async with anyio.create_task_group() as tg:
        for driver in drivers:
            tg.start_soon(commit, driver)
    return outcomes


async def _roll_back(store: SessionStore, driver: Driver) -> Driver:
    """What a session does after a failed commit: rebuild from what the store holds."""
    fresh = Driver(driver.session_id)
    history = await store.read(driver.session_id)
    fresh.core = SessionCore.replay(history, session_id=driver.session_id)
    fresh.cut = len(history)
    return fresh


async def _fault_round(
    store: SQLiteStore,
    drivers: list[Driver],
    start: Callable[[], Any],
    stop: Callable[[], Any],
    sqlite_error: str,
) -> list[Driver]:
    """Acknowledged writes, then a fault during which every commit fails, then recovery;
    returns the drivers rolled back to what the store acknowledged."""
    for driver in drivers:
        driver.set("before", driver.session_id)
    assert all(o is None for o in (await _commit_all(store, drivers)).values())
    await start()
    for driver in drivers:
        driver.set("during", "x" * 2000).write("big", os.urandom(64 * 1024))
    outcomes = await _commit_all(store, drivers)
    for error in outcomes.values():
        assert isinstance(error, PersistError)
        assert error.code is ErrorCode.PERSIST_COMMIT_FAILED
        assert error.details["sqlite_error"] == sqlite_error, error
    assert (await store.load(drivers[0].session_id)).state.keys() == {"before"}  # reads work
    await stop()
    drivers = [await _roll_back(store, driver) for driver in drivers]
    for driver in drivers:
        driver.set("after", 1).write("big", os.urandom(16 * 1024))
    assert all(o is None for o in (await _commit_all(store, drivers)).values())
    return drivers


async def _check_after_reopen(path: Path, drivers: list[Driver]) -> None:
    async with SQLiteStore(path) as store:
        for driver in drivers:
            loaded = await assert_matches(store, driver)
            assert loaded.state.keys() == {"before", "after"}


async def test_sqlite_full_database_fails_every_waiting_commit(db_path: Path) -> None:
    """``PRAGMA max_page_count`` makes SQLite report SQLITE_FULL exactly as a full disk."""
    full = threading.Event()

    def limit(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if full.is_set() else 1 << 30}")

    async with SQLiteStore(db_path) as store:
        store._writer_hook = limit
        drivers = [await created(store, f"s{i}") for i in range(8)]

        async def start() -> None:
            full.set()

        async def stop() -> None:
            full.clear()

        drivers = await _fault_round(store, drivers, start, stop, "SQLITE_FULL")
    await _check_after_reopen(db_path, drivers)


async def test_sqlite_read_only_database_fails_every_waiting_commit(db_path: Path) -> None:
    """``PRAGMA query_only`` makes every write fail with SQLITE_READONLY."""
    read_only = threading.Event()

    def hook(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA query_only = {int(read_only.is_set())}")

    async with SQLiteStore(db_path) as store:
        store._writer_hook = hook
        drivers = [await created(store, f"s{i}") for i in range(8)]

        async def start() -> None:
            read_only.set()

        async def stop() -> None:
            read_only.clear()

        drivers = await _fault_round(store, drivers, start, stop, "SQLITE_READONLY")
    await _check_after_reopen(db_path, drivers)


def _mount(*args: str) -> bool:
    import subprocess

    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB filesystem (tmpfs), or skip where mounting is not allowed (not root)."""
    target = tmp_path / "small"
    target.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield target
    finally:
        _umount(target)


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory and a read-only bind mount of it (the same files, kernel-enforced
    read-only), or skip where mounting is not allowed."""
    source, view = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    view.mkdir()
    if not _mount("--bind", "-o", "ro", str(source), str(view)):
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        yield source, view
    finally:
        _umount(view)


def _fill(directory: Path) -> Path:
    """Fill a filesystem up to its last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_sqlite_really_full_disk_fails_every_waiting_commit(small_disk: Path) -> None:
    path = small_disk / "store.db"
    filler: list[Path] = []

    async with SQLiteStore(path) as store:
        drivers = [await created(store, f"s{i}") for i in range(8)]

        async def start() -> None:
            filler.append(await anyio.to_thread.run_sync(_fill, small_disk))

        async def stop() -> None:
            await anyio.Path(filler[0]).unlink()

        drivers = await _fault_round(store, drivers, start, stop, "SQLITE_FULL")
    await _check_after_reopen(path, drivers)


async def test_sqlite_really_read_only_filesystem_fails_every_waiting_commit(
    read_only_view: tuple[Path, Path],
) -> None:
    """The store is opened through a read-only bind mount: the kernel refuses writes
    (EROFS), SQLite reports SQLITE_READONLY; remounting read-write ends the fault."""
    source, view = read_only_view
    async with SQLiteStore(source / "store.db") as writable:
        drivers = [await created(writable, f"s{i}") for i in range(8)]
        for driver in drivers:
            driver.set("before", driver.session_id)
        assert all(o is None for o in (await _commit_all(writable, drivers)).values())
        async with SQLiteStore(view / "store.db") as store:
            assert (await store.load("s0")).state.keys() == {"before"}
            for driver in drivers:
                driver.set("during", 1)
            outcomes = await _commit_all(store, drivers)
            for error in outcomes.values():
                assert isinstance(error, PersistError)
                assert error.code is ErrorCode.PERSIST_COMMIT_FAILED
                assert error.details["sqlite_error"].startswith("SQLITE_READONLY")
            await anyio.run_process(["mount", "-o", "remount,bind,rw", str(view)])
            drivers = [await _roll_back(store, driver) for driver in drivers]
            for driver in drivers:
                driver.set("after", 1)
            assert all(o is None for o in (await _commit_all(store, drivers)).values())
    await _check_after_reopen(source / "store.db", drivers)


# -- SQLite: killed mid-write ----------------------------------------------------------------

_CHILD = """
import random, sys
import anyio
from kaizen_async import SessionNotFoundError
from kaizen_async._state import SessionCore
from kaizen_async.stores import Batch, SQLiteStore

path, backend = sys.argv[1], sys.argv[2]

async def session(store, sid, rng):
    try:
        core = SessionCore.replay(await store.read(sid), session_id=sid)
        for digest in core.artifacts.values():
            core.blobs[digest] = await store.read_blob(digest)
    except SessionNotFoundError:
        core = SessionCore(sid)
        await store.create(Batch(sid, 0, list(core.records), 0), max_artifact_size=1 << 20,
                           workspace_path=None)
        print("ack", sid, 1, flush=True)
    while True:
        base, state, artifacts, blobs = len(core.records), {}, {}, {}
        for _ in range(rng.randint(1, 3)):
            key = f"k{rng.randint(0, 5)}"
            core.set(key, {"n": len(core.records), "pad": "x" * rng.randint(0, 300)})
            state[key] = core.state[key]
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randint(0, 5000))
            core.write_artifact("a", data)
            artifacts["a"] = core.artifacts["a"]
            blobs[artifacts["a"]] = data
        batch = Batch(sid, base, core.records[base:], core.version, state=state,
                      artifacts=artifacts, blobs=blobs)
        await store.commit(batch)
        print("ack", sid, len(core.records), flush=True)

async def main():
    rng = random.Random()
    async with SQLiteStore(path) as store, anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(session, store, f"s{i}", random.Random(rng.random()))

anyio.run(main, backend=backend)
"""


_ACK = re.compile(r"ack (\S+) (\d+)")


def _acknowledged(out: bytes, err: bytes = b"") -> list[tuple[str, int]]:
    """The ``ack <sid> <seq>`` lines of a killed child's output.

    Only complete lines count: the kill may cut the last one (no newline yet), and that one
    alone is ignored; any other line that is not an acknowledgement fails the test.
    """
    *lines, last = out.decode(errors="replace").split("\n")
    matches = [_ACK.fullmatch(line) for line in lines]
    odd = [line for line, match in zip(lines, matches, strict=True) if match is None]
    assert not odd, (
        f"the child printed lines that are not acknowledgements: {odd!r}"
        f" (cut last line: {last!r}); stderr: {err.decode(errors='replace')[-2000:]}"
    )
    return [(m[1], int(m[2])) for m in matches if m is not None]


def test_acknowledgements_are_read_from_complete_lines_only() -> None:
    # a line cut by the kill used to fail the crash test ("expected 3, got 2")
    assert _acknowledged(b"ack s0 1\nack s1 7\nack s2") == [("s0", 1), ("s1", 7)]
    assert _acknowledged(b"ack s0 1\nack s1 7\n") == [("s0", 1), ("s1", 7)]
    assert _acknowledged(b"") == []
    with pytest.raises(AssertionError, match=r"'ack s1'.*cut last line: 'ack s2 3'"):
        _acknowledged(b"ack s0 1\nack s1\nack s2 3")
    with pytest.raises(AssertionError, match="Traceback"):
        _acknowledged(b"ack s0 1\nTraceback (most recent call last):\n")


def test_sqlite_killed_mid_write_keeps_every_acknowledged_commit(tmp_path: Path) -> None:
    """A child process commits through the store and prints each acknowledgement; it is
    SIGKILLed at random moments (some during its open). Every acknowledged commit must be
    there afterwards, the history must verify and the stored state equal its replay."""
    import random
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    path = tmp_path / "crash.db"
    rng = random.Random(os.environ.get("KAIZEN_CRASH_SEED", "stores"))
    acked: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(root)}
    for round_ in range(8):
        backend = "trio" if round_ % 2 else "asyncio"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), backend],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        first = b""
        if round_ % 2:
            # half the rounds are killed while it writes: wait for its first acknowledgement
            # (however slow a loaded machine makes the start), then at a random moment
            assert child.stdout is not None
            first = child.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(0.05, 0.8))  # early kills land while it starts or opens
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()
        for sid, seq in _acknowledged(first + out, err):
            acked[sid] = max(acked.get(sid, 0), seq)

    async def check() -> None:
        async with SQLiteStore(path) as store:
            for sid, seq in acked.items():
                history = await store.read(sid)
                assert len(history) >= seq  # nothing acknowledged is lost
                core = SessionCore.replay(history, session_id=sid)  # verifies the chain
                loaded = await store.load(sid)
                assert loaded.info.trajectory_length == len(history)
                assert loaded.state == core.state and loaded.artifacts == core.artifacts
                for digest in core.artifacts.values():
                    assert sha256_hex(await store.read_blob(digest)) == digest

    anyio.run(check)
    assert acked, "no round got as far as an acknowledged commit"


async def test_sqlite_a_commit_of_another_process_is_found_by_polling(db_path: Path) -> None:
    """Two stores on one file stand for two processes: the waiter reads the head every
    ``poll_interval`` and finds the other's commit."""
    async with (
        SQLiteStore(db_path) as writer,
        SQLiteStore(db_path, poll_interval=0.02) as watcher,
    ):
        driver = await created(writer, "s")
        heads: list[int] = []

        async def wait() -> None:
            heads.append(await watcher.wait_for_commit("s", 1, timeout=600))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.1)
            driver.set("k", 1)
            await driver.commit(writer)
            with anyio.fail_after(5):
                while not heads:
                    await anyio.sleep(0.01)
        assert heads == [2]


async def test_sqlite_a_store_from_before_ownership_gains_it(db_path: Path) -> None:
    """A store written before ownership existed (taken back to that schema version here)
    migrates: its sessions have no owner and epoch 0, and can be acquired at once."""
    async with SQLiteStore(db_path) as store:
        driver = await created(store, "s")
    before = 2  # migration 3 added ownership
    _tamper(
        db_path,
        "ALTER TABLE sessions DROP COLUMN owner",
        "ALTER TABLE sessions DROP COLUMN epoch",
        "ALTER TABLE sessions DROP COLUMN lease_until",
        f"DELETE FROM schema_version WHERE version > {before}",
    )
    async with SQLiteStore(db_path) as store:
        await assert_matches(store, driver)
        assert (await store.acquire("s", "hub", lease_seconds=5)).epoch == 1


def _entries_layout(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        sql: str = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
        ).fetchone()[0]
    finally:
        conn.close()
    return "clustered" if "WITHOUT ROWID" in sql.upper() else "commit order"


async def test_sqlite_entries_are_kept_in_commit_order(db_path: Path) -> None:
    """Entries live in a rowid table (appends of many sessions fill its last pages) with
    the (session_id, seq) key as an index: reads and the duplicate-seq refusal use it."""
    async with SQLiteStore(db_path) as store:
        one, two = await created(store, "one"), await created(store, "two")
        for _ in range(3):
            await one.note().note().commit(store)
            await two.note().commit(store)
        await assert_matches(store, one)
        await assert_matches(store, two)
        assert [r[SEQ] for r in await store.read("one", since_seq=2, until_seq=5)] == [3, 4, 5]
    assert _entries_layout(db_path) == "commit order"
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError):  # the key stays unique
            conn.execute(
                "INSERT INTO entries SELECT * FROM entries WHERE session_id = 'one' AND seq = 1"
            )
    finally:
        conn.close()


async def test_sqlite_a_store_with_clustered_entries_migrates(db_path: Path) -> None:
    """A store of schema version 3 (entries clustered by (session_id, seq), WITHOUT ROWID)
    gets its entries moved to the commit-order table, every one kept."""
    async with SQLiteStore(db_path) as store:
        one, two = await created(store, "one"), await created(store, "two")
        await one.note().set("k", 1).note().commit(store)
        await two.note().commit(store)
    _tamper(
        db_path,
        "CREATE TABLE clustered (session_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "timestamp TEXT NOT NULL, agent_id TEXT NOT NULL, entry_type TEXT NOT NULL, "
        "content BLOB NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, "
        "PRIMARY KEY (session_id, seq)) WITHOUT ROWID",
        "INSERT INTO clustered SELECT * FROM entries",
        "DROP TABLE entries",
        "ALTER TABLE clustered RENAME TO entries",
        "DELETE FROM schema_version WHERE version > 3",
    )
    assert _entries_layout(db_path) == "clustered"
    async with SQLiteStore(db_path) as store:
        await assert_matches(store, one)
        await assert_matches(store, two)
        await one.note().commit(store)
        await assert_matches(store, one)
    assert _entries_layout(db_path) == "commit order"
