"""Records cost no garbage-collector time: every record a session, a store or a load holds
is an exact tuple of ints, strings and bytes, which CPython's collector stops tracking the
first time it sees it (a tuple subclass would stay tracked and be traversed forever), and a
session holds them in sealed chunks (``Records``), so that a full collection does not even
visit each record through the container holding it."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from kaizen_async import EntryType, Session, SessionHub
from kaizen_async._trajectory import (
    CHUNK,
    HASH,
    SEQ,
    Record,
    Records,
    TrajectoryEntry,
    record_hash,
)
from kaizen_async.stores import MemoryStore, SQLiteStore

pytestmark = pytest.mark.anyio


def _assert_untracked(records: Iterable[Record], count: int) -> None:
    held = list(records)
    assert len(held) >= count
    gc.collect()
    assert [type(r) for r in held if type(r) is not tuple] == []
    assert [r[SEQ] for r in held if gc.is_tracked(r)] == []


async def _write(session: Session) -> None:
    await session.set("k", {"nested": [1, 2]})
    await session.append("a", EntryType.SYSTEM_NOTE, {"n": 1})
    async with session.transaction() as tx:
        tx.set("k2", "v")
        tx.append("a", EntryType.USER_INPUT, {"text": "hi"})
    await session.delete("k2")


async def test_in_memory_session_records_are_untracked() -> None:
    async with Session() as session:
        await _write(session)
        _assert_untracked(session._core.records, 6)


async def test_loaded_file_session_records_are_untracked(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    async with Session() as session:
        await _write(session)
        await session.save(path)
    async with Session.load(path) as loaded:
        _assert_untracked(loaded._core.records, 7)
        await loaded.append("a", EntryType.SYSTEM_NOTE, {"after": "load"})
        _assert_untracked(loaded._core.records, 8)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_store_backed_session_records_are_untracked(tmp_path: Path, kind: str) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(str(tmp_path / "store.db"))
    async with SessionHub(store) as hub:
        async with hub.open("s", create=True) as session:
            await _write(session)
            await session.flush()
            _assert_untracked(session._core.records, 6)
        read = await store.read("s")
        _assert_untracked(read, 6)
    async with SessionHub(store) as hub, hub.open("s") as reopened:  # the tail, from the store
        await reopened.append("a", EntryType.SYSTEM_NOTE, {"again": True})
        _assert_untracked(reopened._core.records, 7)


async def test_record_helpers_round_trip(session: Session) -> None:
    await session.set("k", 1)
    record = session._core.records[-1]
    assert record_hash(record) == record[HASH]
    entry = TrajectoryEntry.from_record(record)
    assert entry.seq == record[SEQ] and entry.hash == record[HASH]
    assert entry.to_record() == record and type(entry.to_record()) is tuple
    assert entry.compute_hash() == record[HASH]


def _visited_by_a_full_collection(records: Records) -> int:
    """How many references a full collection follows from ``records`` into what holds
    records: it traverses every tracked container (untracked ones it visits, not enters).
    Its class and the like are left out: they are shared, not per record."""
    visits, stack = 0, [records]
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if type(ref) in (list, tuple):
                visits += 1
                if gc.is_tracked(ref):
                    stack.append(ref)
    return visits


async def test_a_full_collection_visits_a_session_s_records_a_chunk_at_a_time() -> None:
    """3,000+ records: what a full collection follows from the session's records is its
    sealed chunks (one reference per CHUNK records) and the unsealed tail, not every
    record; the records read back whole and in order, and the chain verifies."""
    total = 3 * CHUNK + 10
    async with Session() as session:
        for n in range(total - 1):
            session.append_nowait("a", EntryType.SYSTEM_NOTE, {"n": n})
        await session.flush()
        records = session._core.records
        assert len(records) == total
        gc.collect()  # a chunk sealed after records the same pass untracks later is
        gc.collect()  # untracked by the next collection
        assert _visited_by_a_full_collection(records) < CHUNK + 10  # a list: > 3 * CHUNK
        assert [r[SEQ] for r in records] == list(range(1, total + 1))
        assert await session.verify() == total  # the chain verifies (entries checked)
        entries = await session.get_trajectory(since_seq=CHUNK - 2, limit=5)
        assert [e.seq for e in entries] == list(range(total - 4, total + 1))


def test_records_read_like_a_list() -> None:
    """Indexing, slicing (any bounds and step), iteration, replacing one record, dropping a
    prefix and appending agree with a list holding the same records, across chunk edges."""
    rng = random.Random(7)
    for n in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17):
        expected: list[Record] = [(i, "", "", "", b"", "", "") for i in range(n)]
        records = Records(expected[: n // 2])
        for record in expected[n // 2 :]:
            records.append(record)
        assert len(records) == n and list(records) == expected and records == expected
        for _ in range(200):
            a, b = rng.randint(-n - 3, n + 3), rng.randint(-n - 3, n + 3)
            step = rng.choice((1, 2, -1))
            assert records[a:b] == expected[a:b]
            assert records[a:b:step] == expected[a:b:step]
            if n:
                i = rng.randint(-n, n - 1)
                assert records[i] == expected[i]
        for outside in (n, -n - 1):
            with pytest.raises(IndexError):
                records[outside]
        if n:
            i = rng.randint(0, n - 1)
            records[i] = expected[i] = (-1, "", "", "", b"", "", "")
            copy = records.copy()
            k = rng.randint(0, n)
            del records[:k]
            del expected[:k]
            assert list(records) == expected
            assert len(copy) == n  # a copy is not affected
            more: list[Record] = [(n + i, "", "", "", b"", "", "") for i in range(CHUNK)]
            for record in more:
                records.append(record)
            expected.extend(more)
            assert list(records) == expected and records[-1] == expected[-1]
