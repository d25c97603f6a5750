"""The ``.kaizen`` file: one self-contained SQLite database per saved session.

Schema version 2 (written here)::

    metadata(key PRIMARY KEY, value)       JSON values: schema_version, session_id,
                                           max_artifact_size, workspace_path,
                                           state_version, head_seq, head_hash
    trajectory(seq PRIMARY KEY, timestamp, agent_id, entry_type, content_json,
               prev_hash, hash)            content_json is the canonical encoding
    state(key PRIMARY KEY, value_json)     the derived state, checked against replay
    blobs(digest PRIMARY KEY, data)        content-addressed artifact data

Schema version 1 (the original synchronous Kaizen: ``metadata``, ``state``,
``trajectory(seq_num, ...)``, ``artifacts(name, data)``) is read too.

A first save (or a save over a file of some other history) writes a temporary file and
renames it over the target; a later save to the same file appends only the new entries,
changed state rows and new blobs in one transaction. Either way the previous file stays
loadable if anything fails midway. The rollback journal (not WAL) is used, so the file is
complete on its own once a save returns. Everything here is blocking: callers run it in a
worker thread.
"""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._canonical import decode, encode, sha256_hex
from ._checkpoint import Checkpoint
from ._exceptions import KaizenError, PersistError, SchemaMismatchError, SessionCorruptedError
from ._file_checkpoints import read_checkpoints, write_checkpoints
from ._state import SCHEMA_VERSION, SessionCore
from ._trajectory import EntryType, Record

__all__ = ["SaveMark", "SavePlan", "plan_save", "read_session", "write_session"]

_SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trajectory (
    seq INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, agent_id TEXT NOT NULL,
    entry_type TEXT NOT NULL, content_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value_json TEXT NOT NULL);
CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
"""
#: seconds a save waits for another connection's lock on the file before it fails
LOCK_TIMEOUT = 5.0
_STATE_KINDS = (EntryType.STATE_SET.value, EntryType.STATE_DELETED.value)
_ARTIFACT_WRITTEN = EntryType.ARTIFACT_WRITTEN.value


@dataclass(frozen=True)
class SaveMark:
    """Where a session's history stands in a file it saved to or loaded from."""

    path: str
    seq: int
    head_hash: str
    session_id: str


@dataclass
class SavePlan:
    """Everything a save needs, captured on the event loop so the worker reads no live data."""

    path: str
    metadata: dict[str, Any]
    records: Sequence[Record]
    state: dict[str, bytes]
    blobs: dict[str, bytes]
    #: set when the file was last seen at this mark: then only what follows is written
    mark: SaveMark | None = None
    changed_keys: set[str] = field(default_factory=set)
    new_digests: set[str] = field(default_factory=set)
    #: signed checkpoints kept beside the trajectory (see _file_checkpoints)
    checkpoints: list[Checkpoint] = field(default_factory=list)


def plan_save(core: SessionCore, path: str, mark: SaveMark | None, saved: Record) -> SavePlan:
    """What saving ``core`` plus its ``session_saved`` record ``saved`` to ``path`` writes.

    Captured on the event loop (copies of the lists and dicts, not of the data), so the
    worker thread reads nothing the session may change meanwhile.
    """
    records = [*core.records, saved]
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "session_id": core.session_id,
        "max_artifact_size": core.max_artifact_size,
        "workspace_path": core.workspace_path,
        "state_version": core.version,
        "head_seq": saved.seq,
        "head_hash": saved.hash,
    }
    plan = SavePlan(path, metadata, records, dict(core.state), dict(core.blobs))
    if mark is not None:
        new = records[mark.seq :]
        plan.mark = mark
        plan.changed_keys = {decode(r.content)["key"] for r in new if r.entry_type in _STATE_KINDS}
        plan.new_digests = {
            digest
            for r in new
            if r.entry_type == _ARTIFACT_WRITTEN
            and (digest := decode(r.content).get("digest")) is not None
        }
    return plan


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _rows(records: Iterable[Record]) -> Iterable[tuple[Any, ...]]:
    for r in records:
        yield (
            r.seq,
            r.timestamp,
            r.agent_id,
            r.entry_type,
            r.content.decode(),
            r.prev_hash,
            r.hash,
        )


def _meta_rows(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, encode(value).decode()) for key, value in metadata.items()]


def write_session(plan: SavePlan) -> None:
    """Write a save plan atomically (incrementally when the file is where ``mark`` says)."""
    try:
        if plan.mark is not None and _append_to_file(plan):
            return
        _write_fresh(plan)
    except KaizenError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise PersistError(f"could not save session to {plan.path}: {exc}") from exc


def _write_fresh(plan: SavePlan) -> None:
    target = Path(plan.path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        conn = _connect(str(tmp))
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany("INSERT INTO metadata VALUES (?, ?)", _meta_rows(plan.metadata))
            conn.executemany(
                "INSERT INTO trajectory VALUES (?, ?, ?, ?, ?, ?, ?)", _rows(plan.records)
            )
            conn.executemany(
                "INSERT INTO state VALUES (?, ?)",
                ((key, value.decode()) for key, value in plan.state.items()),
            )
            conn.executemany("INSERT INTO blobs VALUES (?, ?)", plan.blobs.items())
            write_checkpoints(conn, plan.checkpoints)
            conn.execute("COMMIT")
        finally:
            conn.close()
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_to_file(plan: SavePlan) -> bool:
    """Append onto an existing file; False (nothing written) if its head is not ``mark``."""
    mark = plan.mark
    assert mark is not None
    if not os.path.exists(plan.path):
        return False
    conn = sqlite3.connect(
        plan.path, isolation_level=None, check_same_thread=False, timeout=LOCK_TIMEOUT
    )
    try:
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            meta = dict(conn.execute("SELECT key, value FROM metadata"))
        except sqlite3.OperationalError:  # locked, disk full, ...: fail, never rewrite
            raise
        except sqlite3.DatabaseError:  # not one of our files (any more): rewrite it whole
            return False
        try:
            if (
                meta.get("schema_version") != str(SCHEMA_VERSION)
                or meta.get("session_id") != encode(mark.session_id).decode()
                or meta.get("head_seq") != str(mark.seq)
                or meta.get("head_hash") != encode(mark.head_hash).decode()
            ):
                conn.execute("ROLLBACK")
                return False
            conn.executemany(
                "INSERT INTO trajectory VALUES (?, ?, ?, ?, ?, ?, ?)",
                _rows(plan.records[mark.seq :]),
            )
            for key in plan.changed_keys:
                value = plan.state.get(key)
                if value is None:
                    conn.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value.decode())
                    )
            conn.executemany(
                "INSERT OR IGNORE INTO blobs VALUES (?, ?)",
                ((digest, plan.blobs[digest]) for digest in plan.new_digests),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO metadata VALUES (?, ?)", _meta_rows(plan.metadata)
            )
            write_checkpoints(conn, plan.checkpoints)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return True


# -- reading -------------------------------------------------------------------------------


def read_session(path: str) -> tuple[SessionCore, int]:
    """Load and fully verify a file; returns the rebuilt core and the file's schema version.

    A load builds hundreds of thousands of acyclic objects (records, bytes); the cyclic
    garbage collector would rescan the whole heap several times meanwhile for nothing, so it
    is paused for the duration (it is process-wide: other threads skip cycle collection
    for that long too, nothing else).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read_session(path)
    finally:
        if paused:
            gc.enable()


def _read_session(path: str) -> tuple[SessionCore, int]:
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if os.path.isdir(path):
        raise SessionCorruptedError(f"{path} is a directory, not a .kaizen file")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SessionCorruptedError(f"{path} cannot be opened as a .kaizen file: {exc}") from None
    try:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "metadata" not in tables:
            raise SessionCorruptedError(f"{path} is not a .kaizen file: no metadata table")
        meta = dict(conn.execute("SELECT key, value FROM metadata"))
        version_text = meta.get("schema_version", "0")
        try:
            version = int(version_text)
        except ValueError:
            raise SessionCorruptedError(
                f"{path}: schema_version {version_text!r} is not a number"
            ) from None
        if version > SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"{path} has schema version {version}; this library reads up to {SCHEMA_VERSION}",
                details={"file_version": version, "supported": SCHEMA_VERSION},
            )
        if version == SCHEMA_VERSION:
            return _read_v2(conn, path, meta, tables), version
        if version == 1:
            return _read_v1(conn, path, meta, tables), version
        raise SchemaMismatchError(f"{path} has unsupported schema version {version}")
    except (SessionCorruptedError, SchemaMismatchError):
        raise
    except sqlite3.DatabaseError as exc:
        raise SessionCorruptedError(f"{path} is not a readable .kaizen file: {exc}") from None
    except Exception as exc:  # wrong types or values anywhere in the file
        raise SessionCorruptedError(f"{path} has malformed data: {exc!r}") from None
    finally:
        conn.close()


def _require(tables: set[str], path: str, *names: str) -> None:
    missing = [name for name in names if name not in tables]
    if missing:
        raise SessionCorruptedError(f"{path} is missing table(s): {', '.join(missing)}")


def _meta_json(meta: dict[str, str], key: str, path: str) -> Any:
    if key not in meta:
        raise SessionCorruptedError(f"{path}: metadata has no {key!r}")
    return decode(meta[key])


def _read_v2(
    conn: sqlite3.Connection, path: str, meta: dict[str, str], tables: set[str]
) -> SessionCore:
    _require(tables, path, "trajectory", "state", "blobs")
    session_id = _meta_json(meta, "session_id", path)
    records = list(
        map(
            Record,
            conn.execute(
                "SELECT seq, timestamp, agent_id, entry_type, CAST(content_json AS BLOB), "
                "prev_hash, hash FROM trajectory ORDER BY seq"
            ),
        )
    )
    if not records:
        raise SessionCorruptedError(f"{path}: the trajectory is empty")
    core = SessionCore.replay(
        records,
        session_id=session_id,
        max_artifact_size=_meta_json(meta, "max_artifact_size", path),
        workspace_path=_meta_json(meta, "workspace_path", path),
    )
    recorded = SessionCore.identity(records)  # what the hash chain says the session is
    for key, value in recorded.items():
        if key == "session_id" and value is None:  # forked before forks recorded their id
            continue
        if _meta_json(meta, key, path) != value:
            raise SessionCorruptedError(
                f"{path}: metadata {key} {_meta_json(meta, key, path)!r} differs from the "
                f"trajectory's {value!r}"
            )
    if (
        _meta_json(meta, "head_seq", path) != len(records)
        or _meta_json(meta, "head_hash", path) != core.head
    ):
        raise SessionCorruptedError(
            f"{path}: the trajectory does not end where the metadata says (truncated?)"
        )
    stored = {
        key: encode(decode(value))
        for key, value in conn.execute("SELECT key, value_json FROM state")
    }
    _check_state(core, stored, _meta_json(meta, "state_version", path), path)
    wanted = set(core.artifacts.values())
    for digest, data in conn.execute("SELECT digest, data FROM blobs"):
        if sha256_hex(bytes(data)) != digest:
            raise SessionCorruptedError(
                f"{path}: artifact blob {digest[:12]}… does not match its digest"
            )
        core.blobs[digest] = bytes(data)
    missing = wanted - core.blobs.keys()
    if missing:
        raise SessionCorruptedError(f"{path}: {len(missing)} artifact blob(s) are missing")
    core.checkpoints = read_checkpoints(conn, tables, path)
    return core


def _check_state(core: SessionCore, stored: dict[str, bytes], version: Any, path: str) -> None:
    """The stored state (canonical bytes per key) must be exactly what replay derived."""
    if version != core.version or type(version) is not int:
        raise SessionCorruptedError(
            f"{path}: stored state_version {version!r} differs from replay ({core.version})"
        )
    replayed = core.state
    if stored != replayed:
        key = sorted(set(stored) ^ set(replayed)) or sorted(
            k for k in stored if stored[k] != replayed[k]
        )
        raise SessionCorruptedError(
            f"{path}: stored state differs from replay of the trajectory at key {key[0]!r}"
        )


def _read_v1(
    conn: sqlite3.Connection, path: str, meta: dict[str, str], tables: set[str]
) -> SessionCore:
    """Original Kaizen files: entries taken as they are, the chain computed on load.

    Their JSON came from ``json.dumps``, which also writes NaN/Infinity and integers of
    any size; canonical JSON has neither, so those become null and decimal strings.
    """
    from ._canonical import ZERO_HASH, entry_hash

    _require(tables, path, "trajectory", "state", "artifacts")
    if "session_id" not in meta:
        raise SessionCorruptedError(f"{path}: metadata has no 'session_id'")
    records: list[Record] = []
    prev = ZERO_HASH
    for seq, ts, agent, kind, content_json in conn.execute(
        "SELECT seq_num, timestamp, agent_id, entry_type, content_json FROM trajectory "
        "ORDER BY seq_num"
    ):
        content = encode(_v1_json(content_json))
        digest = entry_hash(seq, ts, agent, kind, content, prev)
        records.append(Record((seq, ts, agent, kind, content, prev, digest)))
        prev = digest
    workspace = meta.get("workspace_path") or None
    core = SessionCore.replay(
        records,
        session_id=meta["session_id"],
        max_artifact_size=int(meta.get("max_artifact_size", 100 * 1024 * 1024)),
        workspace_path=workspace,
        verify=False,
    )
    stored = {
        key: encode(_v1_json(value))
        for key, value in conn.execute("SELECT key, value_json FROM state")
    }
    _check_state(core, stored, int(meta.get("state_version", core.version)), path)
    for name, data in conn.execute("SELECT name, data FROM artifacts"):
        blob = bytes(data)
        digest = sha256_hex(blob)
        core.blobs[digest] = blob
        core.artifacts[name] = digest
    return core


def _v1_int(text: str) -> int | str:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else text


def _v1_json(text: str) -> Any:
    """Parse the original's JSON: NaN/Infinity -> None, integers past 64 bits -> str."""
    return json.loads(text, parse_constant=lambda _: None, parse_int=_v1_int)
