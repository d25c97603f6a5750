"""Records cost no garbage-collector time: every record a session, a store or a load holds
is an exact tuple of ints, strings and bytes, which CPython's collector stops tracking the
first time it sees it (a tuple subclass would stay tracked and be traversed forever)."""

from __future__ import annotations

import gc
from collections.abc import Iterable
from pathlib import Path

import pytest

from kaizen_async import EntryType, Session, SessionHub
from kaizen_async._trajectory import HASH, SEQ, Record, TrajectoryEntry, record_hash
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
