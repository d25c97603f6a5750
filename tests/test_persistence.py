from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kaizen_async import (
    EntryType,
    ErrorCode,
    PersistError,
    SchemaMismatchError,
    Session,
    SessionCorruptedError,
)

pytestmark = pytest.mark.anyio


async def _populate(session: Session) -> None:
    await session.set("text", "hello 世界 🌍")
    await session.set("nested", {"a": [1, 2.5, None, True], "b": {"c": "d"}})
    await session.set("gone", 1)
    await session.delete("gone")
    await session.write_artifact("empty.bin", b"")
    await session.write_artifact("bin/data", bytes(range(256)) * 10)
    await session.append("agent", EntryType.USER_INPUT, {"q": "what?"})


async def test_round_trip_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session("sid", max_artifact_size=5000, workspace_path="/ws") as s:
        await _populate(s)
        saved_seq = await s.save(path)
        before = await s.get_trajectory()
        state = await s.get_all_state()
        version = await s.get_state_version()
    assert before[-1].seq == saved_seq
    assert before[-1].entry_type is EntryType.SESSION_SAVED
    assert before[-1].content == {"path": str(path)}
    async with Session.load(path) as loaded:
        assert loaded.session_id == "sid"
        assert loaded.max_artifact_size == 5000
        assert loaded.workspace_path == "/ws"
        assert await loaded.get_all_state() == state
        assert await loaded.get_state_version() == version
        after = await loaded.get_trajectory()
        assert after[: len(before)] == before  # seq, timestamp, type, content, hashes
        assert after[-1].entry_type is EntryType.SESSION_LOADED
        assert after[-1].seq == len(before) + 1
        assert after[-1].prev_hash == before[-1].hash
        assert await loaded.read_artifact("empty.bin") == b""
        assert await loaded.read_artifact("bin/data") == bytes(range(256)) * 10
        assert await loaded.list_artifacts() == ["bin/data", "empty.bin"]
        assert await loaded.verify() == len(after)
        # life goes on after a load
        assert await loaded.set("more", 1) == version + 1
        await loaded.save(path)
    async with Session.load(str(path)) as again:
        assert await again.get("more") == 1
        types = [e.entry_type for e in await again.get_trajectory()]
        assert types.count(EntryType.SESSION_SAVED) == 2
        assert types.count(EntryType.SESSION_LOADED) == 2


async def test_file_is_self_contained_after_save(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        await s.set("k", 1)
        await s.save(path)
        await s.set("k", 2)
        await s.save(path)
        assert not (tmp_path / "s.kaizen-wal").exists()
        assert not (tmp_path / "s.kaizen-journal").exists()
    copy = tmp_path / "copy.kaizen"
    copy.write_bytes(path.read_bytes())  # only the main file travels
    async with Session.load(copy) as loaded:
        assert await loaded.get("k") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.kaizen", "s.kaizen"]


async def test_incremental_save_appends_only_new_entries(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        for i in range(50):
            await s.set(f"k{i}", i)
        await s.save(path)
        conn = sqlite3.connect(path)
        rowids_before = dict(conn.execute("SELECT seq, rowid FROM trajectory"))
        first_hashes = dict(conn.execute("SELECT seq, hash FROM trajectory"))
        conn.close()
        await s.set("k0", "changed")
        await s.delete("k1")
        await s.write_artifact("a", b"x")
        await s.save(path)
    conn = sqlite3.connect(path)
    try:
        rows = dict(conn.execute("SELECT seq, hash FROM trajectory"))
        assert {k: rows[k] for k in first_hashes} == first_hashes  # old rows untouched
        assert len(rows) == len(first_hashes) + 4
        assert dict(conn.execute("SELECT seq, rowid FROM trajectory WHERE seq <= 52")) == {
            k: v for k, v in rowids_before.items() if k <= 52
        }
        state = dict(conn.execute("SELECT key, value_json FROM state"))
        assert state["k0"] == '"changed"'
        assert "k1" not in state
    finally:
        conn.close()
    async with Session.load(path) as loaded:
        assert await loaded.get("k0") == "changed"
        assert await loaded.read_artifact("a") == b"x"


async def test_loaded_session_saves_incrementally_to_its_file(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        await s.set("a", 1)
        await s.save(path)
    async with Session.load(path) as loaded:
        await loaded.set("b", 2)
        await loaded.save(path)
    async with Session.load(path) as again:
        assert await again.get_all_state() == {"a": 1, "b": 2}
        assert await again.verify() == 7


async def test_save_over_another_sessions_file_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session("one") as one, Session("two") as two:
        await one.set("who", "one")
        await one.save(path)
        await two.set("who", "two")
        with pytest.raises(PersistError) as info:
            await two.save(path)
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        await two.save(path, overwrite=True)
        await one.set("again", True)
        with pytest.raises(PersistError) as info:
            await one.save(path)  # the file holds `two` now
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        await one.save(path, overwrite=True)
    async with Session.load(path) as loaded:
        assert loaded.session_id == "one"
        assert await loaded.get_all_state() == {"who": "one", "again": True}


async def test_failed_save_changes_nothing(tmp_path: Path) -> None:
    async with Session() as s:
        await s.set("k", 1)
        length = await s.get_trajectory_length()
        with pytest.raises(PersistError) as info:
            await s.save(tmp_path / "no" / "such" / "dir" / "s.kaizen")
        assert info.value.code is ErrorCode.PERSIST_SAVE_FAILED
        assert await s.get_trajectory_length() == length  # no stray session_saved
        assert await s.set("k", 2) == 2
        await s.verify()


async def test_crash_during_fresh_save_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    path = tmp_path / "s.kaizen"
    async with Session("one") as one:
        await one.set("k", "v1")
        await one.save(path)

    def crash(*args: object) -> None:
        raise OSError("disk on fire")

    async with Session("two") as two:  # another history replaced: a fresh write + rename
        await two.set("k", "v2")
        monkeypatch.setattr("kaizen_async._persistence.os.replace", crash)
        with pytest.raises(PersistError, match="disk on fire"):
            await two.save(path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["s.kaizen"]  # no temp file left
    async with Session.load(path) as loaded:
        assert loaded.session_id == "one"
        assert await loaded.get("k") == "v1"


async def test_crash_during_incremental_save_keeps_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaizen_async import _persistence

    path = tmp_path / "s.kaizen"
    real_rows = _persistence._rows

    def rows_then_crash(records):  # type: ignore[no-untyped-def]
        for i, row in enumerate(real_rows(records)):
            if i == 3:
                raise OSError("power cut")
            yield row

    async with Session() as s:
        await s.set("k", "v1")
        await s.save(path)
        for i in range(10):
            await s.set("k", f"v{i + 2}")
        length = await s.get_trajectory_length()
        monkeypatch.setattr(_persistence, "_rows", rows_then_crash)
        with pytest.raises(PersistError, match="power cut"):
            await s.save(path)
        assert await s.get_trajectory_length() == length
        monkeypatch.setattr(_persistence, "_rows", real_rows)
        async with Session.load(path) as loaded:  # the half-written transaction is gone
            assert await loaded.get("k") == "v1"
            assert await loaded.get_trajectory_length() == 4
        await s.save(path)  # and the next save still works incrementally
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == "v11"


async def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError) as info:
        async with Session.load("/nonexistent/dir/file.kaizen"):
            pass
    assert isinstance(info.value, PersistError)
    assert info.value.code is ErrorCode.PERSIST_FILE_NOT_FOUND


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 100, b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["empty", "garbage", "bad-header"],
)
async def test_unreadable_files_are_corrupted(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.kaizen"
    path.write_bytes(content)
    with pytest.raises(SessionCorruptedError) as info:
        async with Session.load(path):
            pass
    assert info.value.code is ErrorCode.SESSION_CORRUPTED
    assert str(path) in str(info.value)


async def _saved(tmp_path: Path, entries: int = 20) -> Path:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        for i in range(entries):
            await s.set(f"k{i % 5}", {"i": i, "text": f"value number {i}"})
        await s.write_artifact("a", b"artifact bytes here")
        await s.save(path)
    return path


async def test_truncated_file_is_corrupted(tmp_path: Path) -> None:
    path = await _saved(tmp_path, 400)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionCorruptedError):
        async with Session.load(path):
            pass


async def test_a_tampered_byte_is_detected(tmp_path: Path) -> None:
    path = await _saved(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"value number 7")
    assert at > 0
    data[at + len("value number ")] = ord("8")  # same length, different content
    path.write_bytes(bytes(data))
    with pytest.raises(SessionCorruptedError) as info:
        async with Session.load(path):
            pass
    assert info.value.seq == 9  # session_created is 1, the 8th set (i=7) is 9
    assert "9" in str(info.value)


async def test_tampered_artifact_blob_is_detected(tmp_path: Path) -> None:
    path = await _saved(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.find(b"artifact bytes here")
    data[at] = ord("A")
    path.write_bytes(bytes(data))
    with pytest.raises(SessionCorruptedError, match="digest"):
        async with Session.load(path):
            pass


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("DELETE FROM trajectory WHERE seq = 5", "seq"),
        ("UPDATE trajectory SET hash = 'x' || substr(hash, 2) WHERE seq = 3", "entry"),
        ("UPDATE state SET value_json = '42' WHERE key = 'k1'", "state"),
        ("UPDATE metadata SET value = '999' WHERE key = 'state_version'", "state_version"),
        ("DELETE FROM trajectory WHERE seq = (SELECT max(seq) FROM trajectory)", "truncated"),
        ("DELETE FROM blobs", "missing"),
        ("UPDATE trajectory SET content_json = 'not json' WHERE seq = 4", "entry 4"),
        ("UPDATE trajectory SET entry_type = 'bogus' WHERE seq = 4", "entry 4"),
        ("DELETE FROM metadata WHERE key = 'session_id'", "session_id"),
        ("DROP TABLE state", "state"),
    ],
)
async def test_inconsistent_files_are_corrupted(tmp_path: Path, sql: str, match: str) -> None:
    path = await _saved(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError, match=match):
        async with Session.load(path):
            pass


async def test_newer_schema_is_a_mismatch(tmp_path: Path) -> None:
    path = await _saved(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE metadata SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaMismatchError) as info:
        async with Session.load(path):
            pass
    assert info.value.code is ErrorCode.SESSION_SCHEMA_MISMATCH


def _write_v1(path: Path) -> None:
    """A file as the original synchronous Kaizen writes it (schema version 1)."""
    ts = datetime(2026, 2, 4, 12, 0, 0, 123456, tzinfo=UTC)
    entries = [
        (
            "system",
            "session_created",
            {
                "session_id": "legacy",
                "max_artifact_size": 1000,
                "schema_version": 1,
                "workspace_path": None,
            },
        ),
        (
            "system",
            "state_set",
            {"key": "text", "old_value": None, "new_value": "hello", "state_version": 1},
        ),
        (
            "reverse_agent_v1",
            "agent_invoked",
            {"capability": "reverse", "params": {"key": "text"}, "input_value": "hello"},
        ),
        (
            "system",
            "state_set",
            {"key": "text", "old_value": "hello", "new_value": "olleh", "state_version": 2},
        ),
        (
            "system",
            "artifact_written",
            {"name": "notes.txt", "size": 5, "is_update": False, "old_size": None},
        ),
        ("system", "session_saved", {"path": str(path)}),
    ]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        "CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE state (key TEXT PRIMARY KEY, value_json TEXT);"
        "CREATE TABLE trajectory (seq_num INTEGER PRIMARY KEY, timestamp TEXT, agent_id TEXT,"
        " entry_type TEXT, content_json TEXT);"
        "CREATE TABLE artifacts (name TEXT PRIMARY KEY, data BLOB);"
    )
    meta = {
        "schema_version": "1",
        "session_id": "legacy",
        "max_artifact_size": "1000",
        "state_version": "2",
        "workspace_path": "",
    }
    conn.executemany("INSERT INTO metadata VALUES (?, ?)", meta.items())
    conn.execute("INSERT INTO state VALUES (?, ?)", ("text", json.dumps("olleh")))
    conn.executemany(
        "INSERT INTO trajectory VALUES (?, ?, ?, ?, ?)",
        [
            (i + 1, ts.isoformat(), agent, kind, json.dumps(content))
            for i, (agent, kind, content) in enumerate(entries)
        ],
    )
    conn.execute("INSERT INTO artifacts VALUES (?, ?)", ("notes.txt", b"notes"))
    conn.commit()
    conn.close()


async def test_original_kaizen_v1_file_loads_and_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "legacy.kaizen"
    _write_v1(path)
    async with Session.load(path) as s:
        assert s.session_id == "legacy"
        assert s.max_artifact_size == 1000
        assert s.workspace_path is None
        assert await s.get_all_state() == {"text": "olleh"}
        assert await s.get_state_version() == 2
        assert await s.read_artifact("notes.txt") == b"notes"
        entries = await s.get_trajectory()
        assert [e.entry_type.value for e in entries[:6]] == [
            "session_created",
            "state_set",
            "agent_invoked",
            "state_set",
            "artifact_written",
            "session_saved",
        ]
        assert entries[2].content["input_value"] == "hello"
        assert entries[0].timestamp == datetime(2026, 2, 4, 12, 0, 0, 123456, tzinfo=UTC)
        loaded = entries[6]
        assert loaded.entry_type is EntryType.SESSION_LOADED
        assert loaded.content["imported_from_schema"] == 1
        assert await s.verify() == 7
        await s.set("after", 1)
        await s.save(path)  # the next save writes the new schema
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT key, value FROM metadata"))["schema_version"] == "2"
    conn.close()
    async with Session.load(path) as upgraded:
        assert await upgraded.get_all_state() == {"text": "olleh", "after": 1}
        assert await upgraded.read_artifact("notes.txt") == b"notes"
        assert await upgraded.verify() == 10


async def test_v1_file_with_inconsistent_state_is_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "legacy.kaizen"
    _write_v1(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE state SET value_json = '\"tampered\"'")
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError):
        async with Session.load(path):
            pass


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE metadata SET value = '123' WHERE key = 'session_id'",
        "UPDATE metadata SET value = '\"big\"' WHERE key = 'max_artifact_size'",
        "UPDATE trajectory SET timestamp = X'00' WHERE seq = 2",
        "UPDATE trajectory SET agent_id = 7 WHERE seq = 2",
        "UPDATE state SET value_json = 'true' WHERE key = 'flag'",
    ],
)
async def test_wrong_types_in_a_file_are_corrupted(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        await s.set("flag", 1)
        await s.save(path)
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError):
        async with Session.load(path):
            pass


async def test_v1_values_outside_json_still_load(tmp_path: Path) -> None:
    path = tmp_path / "legacy.kaizen"
    _write_v1(path)
    conn = sqlite3.connect(path)
    big = 2**70
    conn.execute(
        "UPDATE trajectory SET content_json = ? WHERE seq_num = 3",
        (
            '{"capability": "reverse", "params": {"key": "text"}, "input_value": NaN, "n": '
            + str(big)
            + "}",
        ),
    )
    conn.commit()
    conn.close()
    async with Session.load(path) as s:
        entry = (await s.get_trajectory(entry_types=["agent_invoked"]))[0]
        assert entry.content["input_value"] is None
        assert entry.content["n"] == str(big)
        await s.verify()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE metadata SET value = '\"evil\"' WHERE key = 'session_id'",
        "UPDATE metadata SET value = '1' WHERE key = 'max_artifact_size'",
        "UPDATE metadata SET value = '\"/etc\"' WHERE key = 'workspace_path'",
    ],
)
async def test_metadata_must_agree_with_the_chain(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "s.kaizen"
    async with Session("sid", workspace_path="/ws") as s:
        await s.set("k", 1)
        await s.save(path)
    conn = sqlite3.connect(path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    with pytest.raises(SessionCorruptedError, match="metadata"):
        async with Session.load(path):
            pass


async def test_a_saved_fork_keeps_its_own_id(tmp_path: Path) -> None:
    path = tmp_path / "fork.kaizen"
    async with Session("parent") as parent:
        await parent.set("k", 1)
        child = await parent.fork(session_id="child")
        async with child:
            await child.save(path)
    async with Session.load(path) as loaded:
        assert loaded.session_id == "child"


async def test_a_locked_file_fails_the_save_without_rewriting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kaizen_async._persistence.LOCK_TIMEOUT", 0.05)
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        await s.set("k", 1)
        await s.save(path)
        await s.set("k", 2)
        length = await s.get_trajectory_length()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # someone else is writing the file
        try:
            with pytest.raises(PersistError, match="locked"):
                await s.save(path)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await s.get_trajectory_length() == length
        await s.save(path)  # once the lock is gone, the incremental save goes through
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == 2


async def test_a_file_replaced_by_garbage_is_replaced_only_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session() as s:
        await s.set("k", 1)
        await s.save(path)
        path.write_bytes(b"not a database" * 100)
        await s.set("k", 2)
        with pytest.raises(PersistError) as info:
            await s.save(path)
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        assert path.read_bytes() == b"not a database" * 100
        await s.save(path, overwrite=True)
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == 2
        await loaded.verify()
