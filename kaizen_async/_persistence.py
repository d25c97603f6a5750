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

What a save does with the file already at its path (decided under the file's SQLite write
lock, so concurrent savers are serialized and the check and the write are one step):

- no file, or an empty one: written whole to a temporary file next to it, then moved in
  place (a hard link for a path that did not exist: a file created there meanwhile is a
  conflict, never clobbered);
- a schema-2 file of this session whose history is a prefix of this session's (its head
  entry is this session's entry of the same seq; e.g. saved or loaded earlier and not
  moved since): only the entries after its head, the changed state rows and the missing
  blobs are appended, in one transaction;
- a schema-1 file whose recomputed history is a prefix of this session's (it was loaded
  from there): rewritten whole as schema 2;
- anything else (another session id, a diverged or longer history, not a ``.kaizen``
  file): :class:`PersistError` ``persist_conflict`` and the file is left byte for byte
  as it was. ``overwrite=True`` replaces whatever is there on purpose.

Either way the previous file stays loadable if anything fails midway. The rollback journal
(not WAL) is used, so the file is complete on its own once a save returns. A load reads the
whole file in one read transaction, so it sees one save or the next, never half of one.

Names and keys read from a file pass the same validation as the API (replay checks them,
once per distinct agent id, key and artifact name). A save killed between writing and
moving its temporary file leaves ``.{name}.{host}-{pid}.{random}.tmp`` behind; the next
save or load of that path removes those whose writer is gone (see :func:`_remove_leftovers`).
Everything here is blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import re
import socket
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ._canonical import ZERO_HASH, decode, encode, entry_hash, sha256_hex
from ._checkpoint import Checkpoint
from ._exceptions import (
    ErrorCode,
    KaizenError,
    KaizenValidationError,
    PersistError,
    PersistFileNotFoundError,
    SchemaMismatchError,
    SessionCorruptedError,
)
from ._file_checkpoints import read_checkpoints, write_checkpoints
from ._state import SCHEMA_VERSION, SessionCore, validate_artifact_name
from ._trajectory import (
    AGENT_ID,
    CONTENT,
    ENTRY_TYPE,
    HASH,
    PREV_HASH,
    SEQ,
    TIMESTAMP,
    EntryType,
    Record,
)

__all__ = ["SavePlan", "plan_save", "read_session", "write_session"]

_SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE trajectory (
    seq INTEGER PRIMARY KEY, timestamp TEXT NOT NULL, agent_id TEXT NOT NULL,
    entry_type TEXT NOT NULL, content_json TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE state (key TEXT PRIMARY KEY, value_json TEXT NOT NULL);
CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
"""
#: seconds a save or load waits for another connection's lock on the file before it fails
LOCK_TIMEOUT = 5.0
_STATE_KINDS = (EntryType.STATE_SET.value, EntryType.STATE_DELETED.value)
#: SQLite primary result codes that say "could not access the file", not "bad contents":
#: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL, AUTH
_ACCESS_ERRORS = frozenset({5, 6, 7, 8, 10, 13, 14, 15, 23})
#: this host, in temporary file names: a writer's pid means something only on its host
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_ATTEMPTS = 3  # a save re-checks a file that was replaced while it waited for its lock


@dataclass
class SavePlan:
    """Everything a save needs, captured on the event loop so the worker reads no live data."""

    path: str
    session_id: str
    metadata: dict[str, Any]
    records: Sequence[Record]
    state: dict[str, bytes]
    blobs: dict[str, bytes]
    #: replace whatever the file holds instead of refusing another history
    overwrite: bool = False
    #: signed checkpoints kept beside the trajectory (see _file_checkpoints)
    checkpoints: list[Checkpoint] = field(default_factory=list)


def plan_save(core: SessionCore, path: str, saved: Record, *, overwrite: bool = False) -> SavePlan:
    """What saving ``core`` plus its ``session_saved`` record ``saved`` to ``path`` writes.

    Captured on the event loop (copies of the lists and dicts, not of the data), so the
    worker thread reads nothing the session may change meanwhile.
    """
    records = core.records[:]  # a slice copies the chunks whole: faster than iterating
    records.append(saved)
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "session_id": core.session_id,
        "max_artifact_size": core.max_artifact_size,
        "workspace_path": core.workspace_path,
        "state_version": core.version,
        "head_seq": saved[SEQ],
        "head_hash": saved[HASH],
    }
    return SavePlan(
        path, core.session_id, metadata, records, dict(core.state), dict(core.blobs), overwrite
    )


def _uri(path: str, read_only: bool = False) -> str:
    """An SQLite URI that opens an existing file only (a plain path would create it)."""
    return "file:" + quote(os.path.abspath(path)) + ("?mode=ro" if read_only else "?mode=rw")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _open_existing(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(
        _uri(path, read_only),
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=LOCK_TIMEOUT,
    )


def _rows(records: Iterable[Record]) -> Iterable[tuple[Any, ...]]:
    for r in records:
        yield (
            r[SEQ],
            r[TIMESTAMP],
            r[AGENT_ID],
            r[ENTRY_TYPE],
            r[CONTENT].decode(),
            r[PREV_HASH],
            r[HASH],
        )


def _meta_rows(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key, encode(value).decode()) for key, value in metadata.items()]


def _conflict(path: str, why: str, **details: Any) -> PersistError:
    return PersistError(
        f"not saved to {path}: {why}; save(path, overwrite=True) replaces the file",
        code=ErrorCode.PERSIST_CONFLICT,
        details={"path": path, **details},
    )


# -- paths and leftovers ---------------------------------------------------------------------


def _stat_target(path: str) -> os.stat_result | None:
    """The save target's stat (None: absent); a directory or a missing parent is an error."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise PersistError(
                f"cannot save to {path}: directory {parent} does not exist",
                details={"path": path},
            ) from None
        return None
    if stat.S_ISDIR(st.st_mode):
        raise PersistError(f"cannot save to {path}: it is a directory", details={"path": path})
    if not stat.S_ISREG(st.st_mode):
        raise PersistError(
            f"cannot save to {path}: it is not a regular file", details={"path": path}
        )
    return st


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}.{uuid.uuid4().hex[:16]}.tmp")


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process never leaves its own temp files: one is being written
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive under another user; anything else: do not guess
        return True
    return True


def _remove_leftovers(path: str) -> None:
    """Remove temporary files (and their journals) of killed saves of ``path``.

    The writer's host and pid are in the name; a leftover goes only if it was written on
    this host by a process that no longer exists, so a save in progress elsewhere (another
    process or thread) keeps its file. A reused pid only keeps a leftover longer. Temp files
    from other hosts (a shared directory) or without a pid are never touched. Best effort:
    a directory that cannot be listed or written is left as it is. POSIX only (``kill(pid,
    0)`` means something else on Windows).
    """
    if os.name != "posix":  # pragma: no cover
        return
    directory, name = os.path.split(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{name}.{_HOST}-") + r"(\d+)\.[0-9a-f]{16}\.tmp(?:-journal)?")
    try:
        with os.scandir(directory) as entries:
            found = [(entry.path, m) for entry in entries if (m := pattern.fullmatch(entry.name))]
    except OSError:
        return
    for leftover, match in found:
        if not _writer_alive(int(match.group(1))):
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                os.unlink(leftover)


# -- writing -------------------------------------------------------------------------------


def write_session(plan: SavePlan) -> None:
    """Write a save plan atomically: appended, written whole, or refused (module docstring)."""
    try:
        _remove_leftovers(plan.path)
        for _ in range(_ATTEMPTS):
            before = _stat_target(plan.path)
            if before is None:
                _write_fresh(plan, replace=plan.overwrite)
                return
            if _save_onto(plan, before):
                return
        raise PersistError(f"could not save to {plan.path}: it keeps being replaced")
    except KaizenError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise PersistError(f"could not save session to {plan.path}: {exc}") from exc


def _save_onto(plan: SavePlan, before: os.stat_result) -> bool:
    """Save onto an existing file under its write lock; False if it was replaced meanwhile.

    A file is replaced (renamed over) only while its replacer holds the old file's write
    lock, so once the lock is held, the path still naming the file stat'ed before the
    connection opened proves the connection holds that very file.
    """
    path = plan.path
    try:
        conn = _open_existing(path)
    except sqlite3.OperationalError:
        if not os.path.exists(path):
            return False  # removed since it was stat'ed: look again
        raise
    try:
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:  # locked, disk full, ...: fail, never rewrite
            raise
        except sqlite3.DatabaseError:  # not a database: not ours to replace unasked
            if plan.overwrite:
                _write_fresh(plan, replace=True)
                return True
            raise _conflict(path, "it is not a .kaizen file") from None
        after = os.stat(path)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            return False
        if plan.overwrite or (not tables and after.st_size == 0):
            _write_fresh(plan, replace=True)  # still holding the old file's lock
            return True
        if "metadata" not in tables:
            raise _conflict(path, "it is not a .kaizen file (no metadata table)")
        meta = dict(conn.execute("SELECT key, value FROM metadata"))
        version = meta.get("schema_version")
        if version == str(SCHEMA_VERSION):
            _append(conn, plan, _appendable_head(conn, plan, meta))
            conn.execute("COMMIT")
        elif version == "1":
            _check_v1_prefix(conn, plan, meta, tables)
            _write_fresh(plan, replace=True)  # the upgrade to schema 2, under the lock
        else:
            raise _conflict(path, f"it has schema version {version!r}")
        return True
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def _appendable_head(conn: sqlite3.Connection, plan: SavePlan, meta: dict[str, str]) -> int:
    """The file's head seq if its history is a prefix of the plan's, else a conflict."""
    path, records = plan.path, plan.records
    try:
        session_id = decode(meta["session_id"])
        head_seq = decode(meta["head_seq"])
        head_hash = decode(meta["head_hash"])
    except (KeyError, ValueError):
        raise _conflict(path, "its metadata is incomplete") from None
    if session_id != plan.session_id:
        raise _conflict(
            path,
            f"it holds session {session_id!r}, not {plan.session_id!r}",
            file_session=session_id,
        )
    if (
        type(head_seq) is not int
        or not 1 <= head_seq < len(records)
        or records[head_seq - 1][HASH] != head_hash
    ):
        raise _conflict(
            path,
            f"its history (head seq {head_seq!r}) is not a prefix of this session's: another "
            "session that loaded or saved it wrote there since, or it is newer",
            file_head_seq=head_seq,
        )
    last = conn.execute("SELECT seq, hash FROM trajectory ORDER BY seq DESC LIMIT 1").fetchone()
    if last != (head_seq, head_hash):
        raise _conflict(path, "its trajectory does not end where its metadata says")
    return head_seq


def _append(conn: sqlite3.Connection, plan: SavePlan, head_seq: int) -> None:
    """Append what follows ``head_seq``: entries, changed state rows, missing blobs."""
    new = plan.records[head_seq:]
    conn.executemany("INSERT INTO trajectory VALUES (?, ?, ?, ?, ?, ?, ?)", _rows(new))
    for key in {decode(r[CONTENT])["key"] for r in new if r[ENTRY_TYPE] in _STATE_KINDS}:
        value = plan.state.get(key)
        if value is None:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value.decode()))
    present = {row[0] for row in conn.execute("SELECT digest FROM blobs")}
    conn.executemany(
        "INSERT INTO blobs VALUES (?, ?)",
        ((digest, data) for digest, data in plan.blobs.items() if digest not in present),
    )
    conn.executemany("INSERT OR REPLACE INTO metadata VALUES (?, ?)", _meta_rows(plan.metadata))
    write_checkpoints(conn, plan.checkpoints)


def _check_v1_prefix(
    conn: sqlite3.Connection, plan: SavePlan, meta: dict[str, str], tables: set[str]
) -> None:
    """An original-Kaizen file may be upgraded only by a session that continues it."""
    if meta.get("session_id") != plan.session_id or "trajectory" not in tables:
        raise _conflict(plan.path, f"it holds session {meta.get('session_id')!r} (schema 1)")
    try:
        records = _v1_records(conn, plan.path)
    except (SessionCorruptedError, ValueError, TypeError):
        raise _conflict(plan.path, "it is an unreadable schema-1 file") from None
    n = len(records)
    if not 1 <= n < len(plan.records) or plan.records[n - 1][HASH] != records[-1][HASH]:
        raise _conflict(plan.path, "its history (schema 1) is not a prefix of this session's")


def _write_fresh(plan: SavePlan, *, replace: bool) -> None:
    """The whole session into a temporary file, then moved to the target.

    ``replace=False`` (nothing was at the target) links it there instead, which fails if
    a file appeared meanwhile: a conflict, never a silent clobber.
    """
    target = Path(plan.path)
    tmp = _temp_name(target)
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
        if replace:
            os.replace(tmp, target)
        else:
            _link_new(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _link_new(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _conflict(str(target), "a file was created there meanwhile") from None
    except OSError as exc:  # no hard links on this file system: plain rename
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        os.replace(tmp, target)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------------


#: ``progress(done, total)``: entries verified so far, out of how many
Progress = Callable[[int, int], None]
_PROGRESS_EVERY = 4096


def read_session(
    path: str, progress: Progress | None = None, *, read_only: bool = False
) -> tuple[SessionCore, int]:
    """Load and fully verify a file; returns the rebuilt core and the file's schema version.

    ``progress`` is called every few thousand entries verified (a command line shows a bar).
    ``read_only`` opens the file read-only (SQLite ``mode=ro``) and leaves killed saves'
    temporary files alone: nothing on disk changes (for inspection, e.g. the ``kaizen``
    command).

    A load builds hundreds of thousands of acyclic objects (records, bytes); the cyclic
    garbage collector would rescan the whole heap several times meanwhile for nothing, so it
    is paused for the duration (it is process-wide: other threads skip cycle collection
    for that long too, nothing else).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read_session(path, progress, read_only)
    finally:
        if paused:
            gc.enable()


def _check_loadable(path: str) -> None:
    """A missing file, a directory or an unreadable path fails before SQLite sees it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PersistFileNotFoundError(f"no such file: {path}", path=path) from None
    except OSError as exc:
        raise PersistError(
            f"cannot load {path}: {exc.strerror or exc}",
            code=ErrorCode.PERSIST_LOAD_FAILED,
            details={"path": path},
        ) from None
    what = None
    if stat.S_ISDIR(st.st_mode):
        what = "it is a directory, not a .kaizen file"
    elif not stat.S_ISREG(st.st_mode):
        what = "it is not a regular file"
    elif not os.access(path, os.R_OK):
        what = "permission denied"
    if what is not None:
        raise PersistError(
            f"cannot load {path}: {what}",
            code=ErrorCode.PERSIST_LOAD_FAILED,
            details={"path": path},
        )


def _access_error(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _ACCESS_ERRORS


def _read_session(path: str, progress: Progress | None, read_only: bool) -> tuple[SessionCore, int]:
    if not read_only:
        _remove_leftovers(path)  # also when the file is missing: a killed first save
    _check_loadable(path)
    try:
        conn = _open_existing(path, read_only=read_only)
    except sqlite3.Error as exc:
        _check_loadable(path)  # gone meanwhile?
        raise PersistError(
            f"cannot open {path}: {exc}", code=ErrorCode.PERSIST_LOAD_FAILED, details={"path": path}
        ) from None
    try:
        # one read transaction: every SELECT below sees the same committed file, never
        # a save that commits in between (its writer waits for this read to finish)
        conn.execute("BEGIN")
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
            return _read_v2(conn, path, meta, tables, progress), version
        if version == 1:
            return _read_v1(conn, path, meta, tables), version
        raise SchemaMismatchError(f"{path} has unsupported schema version {version}")
    except (SessionCorruptedError, SchemaMismatchError):
        raise
    except sqlite3.DatabaseError as exc:
        if _access_error(exc):
            raise PersistError(
                f"cannot read {path}: {exc}",
                code=ErrorCode.PERSIST_LOAD_FAILED,
                details={"path": path},
            ) from None
        raise SessionCorruptedError(f"{path} is not a readable .kaizen file: {exc}") from None
    except Exception as exc:  # wrong types or values anywhere in the file
        raise SessionCorruptedError(f"{path} has malformed data: {exc!r}") from None
    finally:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
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


def _reporting(records: list[Record], progress: Progress) -> Iterator[Record]:
    """``records``, calling ``progress`` after each stretch of them has been taken."""
    total = len(records)
    for start in range(0, total, _PROGRESS_EVERY):
        yield from records[start : start + _PROGRESS_EVERY]
        progress(min(start + _PROGRESS_EVERY, total), total)


def _read_v2(
    conn: sqlite3.Connection,
    path: str,
    meta: dict[str, str],
    tables: set[str],
    progress: Progress | None = None,
) -> SessionCore:
    _require(tables, path, "trajectory", "state", "blobs")
    session_id = _meta_json(meta, "session_id", path)
    records: list[Record] = conn.execute(  # rows are exact tuples: records as they are
        "SELECT seq, timestamp, agent_id, entry_type, CAST(content_json AS BLOB), "
        "prev_hash, hash FROM trajectory ORDER BY seq"
    ).fetchall()
    if not records:
        raise SessionCorruptedError(f"{path}: the trajectory is empty")
    core = _replay(
        path,
        records if progress is None else _reporting(records, progress),
        session_id=session_id,
        max_artifact_size=_meta_json(meta, "max_artifact_size", path),
        workspace_path=_workspace(_meta_json(meta, "workspace_path", path), path),
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


def _v1_records(conn: sqlite3.Connection, path: str) -> list[Record]:
    """An original-Kaizen trajectory as records, the hash chain computed on the way."""
    records: list[Record] = []
    prev = ZERO_HASH
    for seq, ts, agent, kind, content_json in conn.execute(
        "SELECT seq_num, timestamp, agent_id, entry_type, content_json FROM trajectory "
        "ORDER BY seq_num"
    ):
        try:
            content = encode(_v1_json(content_json))
            digest = entry_hash(seq, ts, agent, kind, content, prev)
        except (KaizenValidationError, ValueError, TypeError) as exc:
            raise SessionCorruptedError(
                f"{path}: entry {seq} is malformed: {exc}", seq=seq if type(seq) is int else None
            ) from None
        records.append((seq, ts, agent, kind, content, prev, digest))
        prev = digest
    return records


def _read_v1(
    conn: sqlite3.Connection, path: str, meta: dict[str, str], tables: set[str]
) -> SessionCore:
    """Original Kaizen files: entries taken as they are, the chain computed on load.

    Their JSON came from ``json.dumps``, which also writes NaN/Infinity and integers of
    any size; canonical JSON has neither, so those become null and decimal strings.
    """
    _require(tables, path, "trajectory", "state", "artifacts")
    if "session_id" not in meta:
        raise SessionCorruptedError(f"{path}: metadata has no 'session_id'")
    records = _v1_records(conn, path)
    workspace = _workspace(meta.get("workspace_path") or None, path)
    core = _replay(
        path,
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
        try:
            validate_artifact_name(name)
        except KaizenValidationError as exc:
            raise SessionCorruptedError(
                f"{path}: artifacts table, name {name!r}: {exc}", details={"name": name}
            ) from None
        blob = bytes(data)
        digest = sha256_hex(blob)
        core.blobs[digest] = blob
        core.artifacts[name] = digest
    return core


def _workspace(value: Any, path: str) -> str | None:
    """A workspace path from a file: None or a non-empty str without NUL."""
    if value is None or (isinstance(value, str) and value.strip() and "\x00" not in value):
        return value
    raise SessionCorruptedError(f"{path}: workspace_path {value!r} is not a usable path")


def _replay(path: str, records: Iterable[Record], **kwargs: Any) -> SessionCore:
    """SessionCore.replay, its errors naming the file."""
    try:
        return SessionCore.replay(records, **kwargs)
    except SessionCorruptedError as exc:
        raise SessionCorruptedError(
            f"{path}: {exc.message}", seq=exc.seq, details=exc.details
        ) from None
    except KaizenValidationError as exc:  # session id, artifact limit
        raise SessionCorruptedError(f"{path}: {exc.message}") from None


def _v1_int(text: str) -> int | str:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else text


def _v1_json(text: str) -> Any:
    """Parse the original's JSON: NaN/Infinity -> None, integers past 64 bits -> str."""
    return json.loads(text, parse_constant=lambda _: None, parse_int=_v1_int)
