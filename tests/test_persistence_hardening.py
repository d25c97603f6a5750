"""Files under faults and mistakes: consistent loads, no lost update, checked contents,
read-only loads, bad paths and leftovers of killed saves."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import kaizen_async
import kaizen_async.sync
from agents import ReverseAgent
from kaizen_async import (
    Dispatcher,
    EntryType,
    ErrorCode,
    KaizenError,
    KaizenValidationError,
    PersistError,
    PersistFileNotFoundError,
    Session,
    SessionCorruptedError,
    SessionReadOnlyError,
    _persistence,
)
from kaizen_async._canonical import ZERO_HASH, encode, entry_hash, sha256_hex

pytestmark = pytest.mark.anyio

ROOT = Path(kaizen_async.__file__).resolve().parent.parent
TS = "2026-02-04T12:00:00.123456+00:00"


def _run_child(script: str, *args: str) -> subprocess.Popen[bytes]:
    """A python process running ``script`` with this checkout's kaizen_async."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        stderr=subprocess.PIPE,
    )


def _meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM metadata"))
    finally:
        conn.close()


# -- 1. a load never sees a half-written save ----------------------------------------------

WRITER = """
    import asyncio, os, sys, time
    from kaizen_async import Session

    async def main(path: str, stop: str) -> None:
        deadline = time.monotonic() + 60
        async with Session("writer") as s:
            i = 0
            while not os.path.exists(stop) and time.monotonic() < deadline:
                i += 1
                await s.set("a", i)
                await s.append("w", "system_note", {"i": i})
                await s.set("b", i)
                await s.save(path)  # incremental after the first
                await asyncio.sleep(0.001)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_loads_during_saves_by_another_process_never_fail(tmp_path: Path) -> None:
    path, stop = tmp_path / "s.kaizen", tmp_path / "stop"
    child = _run_child(WRITER, str(path), str(stop))
    try:
        with anyio.fail_after(30):
            while not path.exists():  # the child's first save
                await anyio.sleep(0.01)
        head_before = int(_meta(path)["head_seq"])
        errors: list[str] = []
        lengths: set[int] = set()
        for _ in range(200):
            try:
                async with Session.load(path) as s:
                    a, b = await s.get("a"), await s.get("b")
                    assert a == b, (a, b)  # a save holds both sets or neither
                    lengths.add(await s.get_trajectory_length())
            except (KaizenError, AssertionError) as exc:
                errors.append(repr(exc))
        head_after = int(_meta(path)["head_seq"])
    finally:
        stop.touch()
        returncode = await anyio.to_thread.run_sync(child.wait, 30)
    assert child.stderr is not None
    assert returncode == 0, child.stderr.read().decode()
    assert errors == []
    assert head_after > head_before  # the child really was saving during the loads
    assert len(lengths) > 10  # and the loads saw many different saves


# -- 2. no silent lost update --------------------------------------------------------------


async def _file(tmp_path: Path, name: str = "s.kaizen", session_id: str = "sid") -> Path:
    path = tmp_path / name
    async with Session(session_id) as s:
        await s.set("k", 0)
        await s.write_artifact("a", b"one")
        await s.save(path)
    return path


async def test_two_sessions_loaded_from_one_file_second_save_conflicts(tmp_path: Path) -> None:
    path = await _file(tmp_path)
    async with Session.load(path) as first, Session.load(path) as second:
        await first.set("k", "first")
        await second.set("k", "second")
        await first.save(path)
        saved = path.read_bytes()
        length = await second.get_trajectory_length()
        with pytest.raises(PersistError) as info:
            await second.save(path)
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        assert path.read_bytes() == saved  # byte for byte
        assert await second.get_trajectory_length() == length  # no session_saved
        await second.set("more", 1)  # the session goes on
        await second.save(path, overwrite=True)  # on purpose
    async with Session.load(path) as loaded:
        assert await loaded.get_all_state() == {"k": "second", "more": 1}
        await loaded.verify()


async def test_concurrent_saves_of_two_loaded_sessions_one_wins(tmp_path: Path) -> None:
    path = await _file(tmp_path)
    outcomes: list[str] = []
    async with Session.load(path) as first, Session.load(path) as second:

        async def save(session: Session, value: str) -> None:
            await session.set("k", value)
            try:
                await session.save(path)
                outcomes.append(value)
            except PersistError as exc:
                outcomes.append(str(exc.code))

        async with anyio.create_task_group() as tg:
            tg.start_soon(save, first, "first")
            tg.start_soon(save, second, "second")
    assert sorted(outcomes) in (["first", "persist_conflict"], ["persist_conflict", "second"])
    winner = next(o for o in outcomes if o != "persist_conflict")
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == winner


async def test_a_file_that_moved_on_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session("sid") as s:
        await s.set("k", 1)
        await s.save(path)
        async with Session.load(path) as other:  # continues the file further
            await other.set("k", 2)
            await other.save(path)
        before = path.read_bytes()
        await s.set("k", 3)
        with pytest.raises(PersistError) as info:
            await s.save(path)  # the file's history is longer than a prefix of ours
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        assert path.read_bytes() == before


async def test_another_session_id_is_a_conflict(tmp_path: Path) -> None:
    path = await _file(tmp_path, session_id="one")
    before = path.read_bytes()
    async with Session("two") as two:
        with pytest.raises(PersistError) as info:
            await two.save(path)
    assert info.value.code is ErrorCode.PERSIST_CONFLICT
    assert "'one'" in str(info.value)
    assert path.read_bytes() == before


async def test_a_fork_does_not_continue_its_parents_file(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    async with Session("parent") as parent:
        await parent.set("k", 1)
        await parent.save(path)
        before = path.read_bytes()
        async with await parent.fork(session_id="child") as child:
            with pytest.raises(PersistError) as info:
                await child.save(path)  # its history has the file as a prefix, its id not
    assert info.value.code is ErrorCode.PERSIST_CONFLICT
    assert path.read_bytes() == before


async def test_a_file_holding_a_prefix_of_the_history_is_appended_to(tmp_path: Path) -> None:
    """A file this session never saw at that path, holding its history up to some entry."""
    first = await _file(tmp_path, "first.kaizen")
    copy = tmp_path / "copy.kaizen"
    async with Session.load(first) as s:
        shutil.copyfile(first, copy)  # a prefix of s's history (s added session_loaded)
        conn = sqlite3.connect(copy)
        rowids = dict(conn.execute("SELECT seq, rowid FROM trajectory"))
        conn.close()
        await s.set("k", 1)
        await s.write_artifact("b", b"two")
        await s.save(copy)
    conn = sqlite3.connect(copy)
    try:
        assert {k: v for k, v in conn.execute("SELECT seq, rowid FROM trajectory")} == {
            **rowids,
            **{seq: seq for seq in range(len(rowids) + 1, len(rowids) + 5)},
        }
    finally:
        conn.close()
    async with Session.load(copy) as loaded:
        assert await loaded.get("k") == 1
        assert await loaded.read_artifact("a") == b"one"
        assert await loaded.read_artifact("b") == b"two"


@pytest.mark.parametrize("kind", ["garbage", "other-sqlite", "newer-schema"])
async def test_a_file_that_is_not_a_kaizen_file_is_not_clobbered(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "s.kaizen"
    if kind == "garbage":
        path.write_bytes(b"my thesis, no backup" * 50)
    else:
        conn = sqlite3.connect(path)
        if kind == "other-sqlite":
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        else:
            conn.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("INSERT INTO metadata VALUES ('schema_version', '3')")
        conn.commit()
        conn.close()
    before = path.read_bytes()
    async with Session() as s:
        with pytest.raises(PersistError) as info:
            await s.save(path)
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        assert path.read_bytes() == before
        await s.save(path, overwrite=True)
    async with Session.load(path) as loaded:
        assert loaded.session_id == s.session_id


async def test_an_empty_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    path.touch()  # e.g. made by mkstemp
    async with Session() as s:
        await s.set("k", 1)
        await s.save(path)
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == 1


async def test_a_file_created_between_check_and_write_is_not_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await _file(tmp_path, session_id="other")
    before = path.read_bytes()
    monkeypatch.setattr(_persistence, "_stat_target", lambda path: None)  # "no file yet"
    async with Session() as s:
        with pytest.raises(PersistError) as info:
            await s.save(path)
    assert info.value.code is ErrorCode.PERSIST_CONFLICT
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.kaizen"]


async def test_a_file_replaced_while_waiting_for_its_lock_is_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.kaizen"
    other = await _file(tmp_path, "other.kaizen", session_id="other")
    replacement = other.read_bytes()
    real_open = _persistence._open_existing

    def open_then_replaced(target: str) -> sqlite3.Connection:
        conn = real_open(target)
        if other.exists():  # someone renames another session's file over ours, once
            os.replace(other, target)
        return conn

    async with Session("sid") as s:
        await s.set("k", 1)
        await s.save(path)
        await s.set("k", 2)
        monkeypatch.setattr(_persistence, "_open_existing", open_then_replaced)
        with pytest.raises(PersistError) as info:
            await s.save(path)  # not appended to the replaced (unlinked) file
    assert info.value.code is ErrorCode.PERSIST_CONFLICT
    assert path.read_bytes() == replacement


# -- 3. what a file says is checked like what the API is given ---------------------------------


def _created(session_id: str = "sid") -> tuple[str, str, dict[str, Any]]:
    return (
        "system",
        "session_created",
        {
            "session_id": session_id,
            "max_artifact_size": 1000,
            "schema_version": 2,
            "workspace_path": None,
        },
    )


def _write_v2(path: Path, entries: list[tuple[Any, Any, dict[str, Any]]]) -> None:
    """A schema-2 file with a valid hash chain and matching state, built by hand."""
    rows, prev, state, version, blobs = [], ZERO_HASH, {}, 0, {}
    for seq, (agent, kind, content) in enumerate(entries, 1):
        data = encode(content)
        digest = entry_hash(seq, TS, agent, kind, data, prev)
        rows.append((seq, TS, agent, kind, data.decode(), prev, digest))
        prev = digest
        if kind == "state_set":
            state[content["key"]] = encode(content["new_value"]).decode()
            version += 1
        if kind == "artifact_written":
            blobs[content["digest"]] = b"x"
    meta = {
        "schema_version": 2,
        "session_id": entries[0][2]["session_id"],
        "max_artifact_size": 1000,
        "workspace_path": None,
        "state_version": version,
        "head_seq": len(rows),
        "head_hash": prev,
    }
    conn = sqlite3.connect(path)
    conn.executescript(_persistence._SCHEMA)
    conn.executemany(
        "INSERT INTO metadata VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
    )
    conn.executemany("INSERT INTO trajectory VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO state VALUES (?, ?)", state.items())
    conn.executemany("INSERT INTO blobs VALUES (?, ?)", blobs.items())
    conn.commit()
    conn.close()


def _write_v1(
    path: Path,
    entries: list[tuple[Any, Any, dict[str, Any]]],
    artifacts: dict[str, bytes] | None = None,
) -> None:
    """A file as the original synchronous Kaizen writes it (schema 1), built by hand."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE state (key TEXT PRIMARY KEY, value_json TEXT);"
        "CREATE TABLE trajectory (seq_num INTEGER PRIMARY KEY, timestamp TEXT, agent_id TEXT,"
        " entry_type TEXT, content_json TEXT);"
        "CREATE TABLE artifacts (name TEXT PRIMARY KEY, data BLOB);"
    )
    state = {c["key"]: json.dumps(c["new_value"]) for _, k, c in entries if k == "state_set"}
    meta = {
        "schema_version": "1",
        "session_id": "legacy",
        "max_artifact_size": "1000",
        "state_version": str(sum(1 for _, k, _ in entries if k == "state_set")),
        "workspace_path": "",
    }
    conn.executemany("INSERT INTO metadata VALUES (?, ?)", meta.items())
    conn.executemany("INSERT INTO state VALUES (?, ?)", state.items())
    conn.executemany(
        "INSERT INTO trajectory VALUES (?, ?, ?, ?, ?)",
        [(i, TS, a, k, json.dumps(c)) for i, (a, k, c) in enumerate(entries, 1)],
    )
    conn.executemany("INSERT INTO artifacts VALUES (?, ?)", (artifacts or {}).items())
    conn.commit()
    conn.close()


BAD_NAMES = ["../../etc/cron.d/x", "/etc/passwd", "a\x00b", "", "   ", "ok/../../x"]
BAD_KEYS = ["", "   ", "\t\n"]
BAD_AGENTS = ["", "   "]


def _set(key: Any, value: Any = 1, version: int = 1) -> tuple[str, str, dict[str, Any]]:
    content = {"key": key, "old_value": None, "new_value": value, "state_version": version}
    return ("system", "state_set", content)


def _artifact(name: str, schema: int) -> tuple[str, str, dict[str, Any]]:
    content: dict[str, Any] = {"name": name, "size": 1, "is_update": False, "old_size": None}
    if schema == 2:
        content["digest"] = sha256_hex(b"x")
    return ("system", "artifact_written", content)


def _bad_files() -> list[Any]:
    note = ("agent", "system_note", {"n": 1})
    cases: list[Any] = []
    for schema in (1, 2):
        for name in BAD_NAMES:
            cases.append(pytest.param(schema, [note, _artifact(name, schema)], 3, name))
        for key in BAD_KEYS:
            entries = [_set("fine"), _set(key, version=2)]
            cases.append(pytest.param(schema, entries, 3, key))
        for agent in BAD_AGENTS:
            cases.append(pytest.param(schema, [note, (agent, "system_note", {})], 3, agent))
        for kind in ("bogus", "state_set\x00", "system note"):
            cases.append(pytest.param(schema, [note, ("agent", kind, {})], 3, kind))
    return cases


@pytest.mark.parametrize(("schema", "entries", "seq", "bad"), _bad_files())
async def test_names_keys_agents_and_types_in_a_file_are_validated(
    tmp_path: Path, schema: int, entries: list[Any], seq: int, bad: str
) -> None:
    path = tmp_path / "evil.kaizen"
    if schema == 2:
        _write_v2(path, [_created(), *entries])
    else:
        _write_v1(path, [_created("legacy"), *entries])
    with pytest.raises(SessionCorruptedError) as info:
        async with Session.load(path):
            pass
    assert info.value.seq == seq
    assert f"entry {seq}" in str(info.value)
    if bad.strip():
        assert repr(bad) in str(info.value)


async def test_a_good_hand_built_file_loads(tmp_path: Path) -> None:
    """The builder above makes loadable files: the failures are the bad values only."""
    path = tmp_path / "good.kaizen"
    _write_v2(
        path,
        [_created(), ("agent", "system_note", {}), _artifact("out/x.txt", 2), _set("k")],
    )
    async with Session.load(path) as s:
        assert await s.read_artifact("out/x.txt") == b"x"
        assert await s.get("k") == 1


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_v1_artifacts_table_names_are_validated(tmp_path: Path, name: str) -> None:
    path = tmp_path / "evil.kaizen"
    _write_v1(path, [_created("legacy")], artifacts={name: b"data"})
    with pytest.raises(SessionCorruptedError) as info:
        async with Session.load(path):
            pass
    assert repr(name) in str(info.value)


async def test_an_imported_artifact_map_in_a_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "evil.kaizen"
    loaded = {"path": "x", "imported_from_schema": 1, "artifacts": {"/etc/passwd": "00"}}
    _write_v2(path, [_created(), ("system", "session_loaded", loaded)])
    with pytest.raises(SessionCorruptedError) as info:
        async with Session.load(path):
            pass
    assert info.value.seq == 2
    assert "'/etc/passwd'" in str(info.value)


@pytest.mark.parametrize(
    "parts",
    [
        ("/etc/passwd",),
        ("..", "x"),
        ("a", "../../x"),
        ("a/../../b",),
        ("a\x00b",),
        (7,),
        ("a", "b\ud800.txt"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "joined-dotdot", "nul", "not-str", "not-utf8"],
)
async def test_workspace_file_never_leaves_the_workspace(
    tmp_path: Path, parts: tuple[Any, ...]
) -> None:
    async with Session(workspace_path=tmp_path / "ws") as s:
        assert s.workspace_file("out", "main.go") == tmp_path / "ws" / "out" / "main.go"
        with pytest.raises(KaizenValidationError):
            s.workspace_file(*parts)
    async with Session() as s:  # no workspace: None, but bad parts are still refused
        assert s.workspace_file("x") is None
        with pytest.raises(KaizenValidationError):
            s.workspace_file(*parts)


# -- 4. reading without writing ------------------------------------------------------------


async def test_read_only_load_records_nothing_and_refuses_every_write(tmp_path: Path) -> None:
    path = await _file(tmp_path)
    before = path.read_bytes()
    async with Session.load(path) as writable:  # the default still records the load
        length = await writable.get_trajectory_length() - 1
        assert (await writable.get_trajectory(1))[0].entry_type is EntryType.SESSION_LOADED
    async with Session.load(path, read_only=True) as s:
        assert s.read_only
        assert await s.get_trajectory_length() == length
        assert (await s.get_trajectory(1))[0].entry_type is EntryType.SESSION_SAVED
        writes: list[Any] = [
            lambda: s.set("k", 1),
            lambda: s.delete("k"),
            lambda: s.append("me", EntryType.USER_INPUT, {}),
            lambda: s.write_artifact("b", b"x"),
            lambda: s.delete_artifact("a"),
            lambda: s.save(path),
            lambda: s.save(tmp_path / "elsewhere.kaizen", overwrite=True),
        ]
        for write in writes:
            with pytest.raises(SessionReadOnlyError) as info:
                await write()
            assert info.value.code is ErrorCode.SESSION_READ_ONLY
        with pytest.raises(SessionReadOnlyError):
            s.append_nowait("me", EntryType.USER_INPUT, {})
        with pytest.raises(SessionReadOnlyError):
            async with s.transaction() as tx:
                tx.set("k", 2)
        async with Dispatcher() as dispatcher:
            dispatcher.register(ReverseAgent())
            with pytest.raises(SessionReadOnlyError):
                await dispatcher.dispatch_single("reverse", s, {"key": "k"})
        # reads, verify and fork work; nothing changed
        assert await s.get_all_state() == {"k": 0}
        assert await s.read_artifact("a") == b"one"
        assert await s.verify() == length
        assert await s.get_trajectory_length() == length
        async with await s.fork() as child:
            assert not child.read_only
            await child.set("k", "child")
    assert path.read_bytes() == before
    assert not (tmp_path / "elsewhere.kaizen").exists()


def test_read_only_load_through_the_blocking_facade(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    with kaizen_async.sync.Session() as s:
        s.set("k", 1)
        s.save(path)
    before = path.read_bytes()
    with kaizen_async.sync.Session.load(path, read_only=True) as loaded:
        assert loaded.read_only
        assert loaded.get("k") == 1
        with pytest.raises(SessionReadOnlyError):
            loaded.set("k", 2)
    assert path.read_bytes() == before
    with kaizen_async.sync.Session() as other:
        with pytest.raises(PersistError) as info:
            other.save(path)
        assert info.value.code is ErrorCode.PERSIST_CONFLICT
        other.save(path, overwrite=True)


# -- 5. paths ------------------------------------------------------------------------------


async def test_missing_file_is_a_persist_file_not_found(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.kaizen", tmp_path / "no" / "dir" / "x.kaizen"):
        with pytest.raises(PersistFileNotFoundError) as info:
            async with Session.load(path):
                pass
        assert isinstance(info.value, FileNotFoundError)
        assert isinstance(info.value, PersistError)
        assert info.value.code is ErrorCode.PERSIST_FILE_NOT_FOUND
        assert info.value.filename == str(path)
        assert str(path) in str(info.value)


async def test_bad_paths_raise_kaizen_errors(tmp_path: Path) -> None:
    directory = tmp_path / "dir.kaizen"
    directory.mkdir()
    async with Session() as s:
        length = await s.get_trajectory_length()
        for bad in (
            "a\x00b.kaizen",
            str(tmp_path / "x\x00.kaizen"),
            "",
            str(tmp_path / "\ud800.kaizen"),  # not UTF-8: was a raw UnicodeEncodeError
        ):
            with pytest.raises(KaizenValidationError):
                await s.save(bad)
            with pytest.raises(KaizenValidationError):
                Session.load(bad)
        with pytest.raises(PersistError) as info:
            await s.save(directory)
        assert info.value.code is ErrorCode.PERSIST_SAVE_FAILED
        assert "directory" in str(info.value)
        with pytest.raises(PersistError) as info:
            await s.save(tmp_path / "missing" / "s.kaizen")
        assert "does not exist" in str(info.value)
        assert await s.get_trajectory_length() == length
    with pytest.raises(PersistError) as info:
        async with Session.load(directory):
            pass
    assert info.value.code is ErrorCode.PERSIST_LOAD_FAILED
    assert not isinstance(info.value, FileNotFoundError)
    assert directory.is_dir() and not any(directory.iterdir())


async def test_paths_with_uri_characters_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "we ird?#%20ü&mode=ro.kaizen"
    async with Session() as s:
        await s.set("k", 1)
        await s.save(path)
        await s.set("k", 2)
        await s.save(path)  # incremental: the existing file is opened by URI
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == 2


async def test_a_locked_file_fails_the_load_as_a_persist_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_persistence, "LOCK_TIMEOUT", 0.05)
    path = await _file(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # someone is writing it: not corrupted, locked
    try:
        with pytest.raises(PersistError) as info:
            async with Session.load(path):
                pass
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert info.value.code is ErrorCode.PERSIST_LOAD_FAILED
    assert "locked" in str(info.value)
    async with Session.load(path) as loaded:
        assert await loaded.get("k") == 0


KILLED_SAVE = """
    import asyncio, os, signal, sys
    from kaizen_async import Session, _persistence

    def die(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[2] == "before-rename":  # the temp file is complete
        _persistence.os.replace = die
        _persistence.os.link = die
    else:  # killed in the middle of writing it (a journal is left too)
        real_rows = _persistence._rows
        def rows(records):
            for i, row in enumerate(real_rows(records)):
                if i == 50:
                    die()
                yield row
        _persistence._rows = rows

    async def main() -> None:
        async with Session() as s:
            for i in range(100):
                await s.set("k", i)
            await s.save(sys.argv[1], overwrite=True)

    asyncio.run(main())
"""


async def _killed_save(path: Path, when: str) -> list[str]:
    child = _run_child(KILLED_SAVE, str(path), when)
    returncode = await anyio.to_thread.run_sync(child.wait, 30)
    assert child.stderr is not None
    assert returncode == -9, child.stderr.read().decode()
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.mark.skipif(os.name != "posix", reason="leftovers are recognised by pid on POSIX")
async def test_leftovers_of_killed_saves_are_removed_by_the_next_writable_load_or_save(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.kaizen"
    alive = [  # temp files whose writer is alive, or of another host: kept
        f".s.kaizen.{_persistence._HOST}-{os.getpid()}.{'a' * 16}.tmp",
        f".s.kaizen.{_persistence._HOST}-{os.getppid()}.{'b' * 16}.tmp",
        f".s.kaizen.{'0' * 8 if _persistence._HOST != '0' * 8 else '1' * 8}-1.{'c' * 16}.tmp",
        f".other.kaizen.{_persistence._HOST}-999999999.{'d' * 16}.tmp",
    ]
    for name in alive:
        (tmp_path / name).write_bytes(b"in progress")

    left = await _killed_save(path, "before-rename")
    assert len(left) == len(alive) + 1 and not path.exists()
    with pytest.raises(PersistFileNotFoundError):  # a load of the path cleans up too
        async with Session.load(path):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(alive)

    left = await _killed_save(path, "mid-write")
    assert any(name.endswith(".tmp-journal") for name in left)
    async with Session() as s:
        await s.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*alive, "s.kaizen"])

    left = await _killed_save(path, "before-rename")  # a killed save over an existing file
    (dead,) = set(left) - set(alive)
    before = path.stat()
    async with Session.load(path, read_only=True) as loaded:  # changes nothing on disk
        assert loaded.session_id == s.session_id
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*alive, dead, "s.kaizen"])
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns, before.st_size)
    async with Session.load(path) as loaded:  # a writable load removes the leftover
        assert loaded.session_id == s.session_id
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*alive, "s.kaizen"])
