"""``SQLiteStore``: many sessions in one SQLite database file (stdlib ``sqlite3`` only).

Writes: one writer task per store (see :mod:`._group_commit`) takes every queued batch,
of all sessions, and commits them in ONE transaction through one worker-thread call
(WAL, ``synchronous=FULL``: durable when the call returns), then answers each caller.
Each batch is applied behind a guarded update of its session row (``WHERE head_seq = ?
AND head_hash = ?``): a batch that does not continue the stored head fails alone with
``persist_conflict`` and writes nothing. A transaction that fails (disk full, read-only
database, I/O error) is rolled back whole and every batch in it fails with
``persist_commit_failed``; the writer then reopens its connection, so the store works
again once the fault is gone.

Reads run on a small pool of read connections in worker threads, concurrently with the
writer (WAL readers see the last committed state and never block it); a read that spans
several statements (``load``, ``read``) runs in one read transaction: one snapshot.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._actor import exit_task_group
from .._canonical import sha256_hex
from .._exceptions import (
    ArtifactNotFoundError,
    ErrorCode,
    KaizenError,
    KaizenValidationError,
    PersistError,
    SessionCorruptedError,
)
from .._storage import Batch, SessionInfo, StoredSession, StoreStatistics
from .._trajectory import Record
from ._common import (
    check_artifact_rows,
    check_batch,
    check_entry_types,
    check_limit,
    check_metadata,
    check_metadata_text,
    check_open_steps,
    check_range,
    check_records,
    check_session_id,
    check_state_rows,
    check_tail,
    closed_error,
    conflict,
    corrupted,
    exists,
    is_digest,
    not_found,
    now,
)
from ._group_commit import GroupCommitter, Outcome, Write
from ._sqlite_schema import configure, migrate, storage_error

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

_ADVANCE = (
    "UPDATE sessions SET head_seq = ?, head_hash = ?, state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) "
    "WHERE session_id = ? AND head_seq = ? AND head_hash = ?"
)
_TOUCH = (  # a batch without records (only open steps or the state version changed)
    "UPDATE sessions SET state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) WHERE session_id = ? AND head_seq = ?"
)
_CREATE = (
    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING"
)
_HEAD = "SELECT head_seq FROM sessions WHERE session_id = ?"
_INSERT_ENTRIES = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_STATE = (
    "INSERT INTO state VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value"
)
_DELETE_STATE = "DELETE FROM state WHERE session_id = ? AND key = ?"
_UPSERT_ARTIFACT = (
    "INSERT INTO artifacts VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, name) DO UPDATE SET digest = excluded.digest"
)
_DELETE_ARTIFACT = "DELETE FROM artifacts WHERE session_id = ? AND name = ?"
_INSERT_BLOB = "INSERT OR IGNORE INTO blobs VALUES (?, ?)"
_INSERT_REF = "INSERT OR IGNORE INTO session_blobs VALUES (?, ?)"
_DELETE_SESSION = (
    "DELETE FROM sessions WHERE session_id = ?1",
    "DELETE FROM entries WHERE session_id = ?1",
    "DELETE FROM state WHERE session_id = ?1",
    "DELETE FROM artifacts WHERE session_id = ?1",
    # blobs this session uses and no other session does
    "DELETE FROM blobs WHERE digest IN (SELECT mine.digest FROM session_blobs AS mine "
    "WHERE mine.session_id = ?1 AND NOT EXISTS (SELECT 1 FROM session_blobs AS other "
    "WHERE other.digest = mine.digest AND other.session_id <> ?1))",
    "DELETE FROM session_blobs WHERE session_id = ?1",
)
_SESSION_COLUMNS = (
    "session_id, created_at, updated_at, head_seq, head_hash, state_version, "
    "max_artifact_size, workspace_path, metadata_json, open_steps_json"
)
_ENTRY_COLUMNS = "seq, timestamp, agent_id, entry_type, content, prev_hash, hash"


class _Staged:
    """The rows of the batches accepted so far in a transaction, written by :meth:`flush`.

    State and artifact changes are keyed by (session, key) so that two batches of one
    session in one transaction leave the later value, whatever the statement order.
    """

    __slots__ = ("artifacts", "blobs", "entries", "refs", "state")

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.state: dict[tuple[str, str], bytes | None] = {}
        self.artifacts: dict[tuple[str, str], str | None] = {}
        self.blobs: list[tuple[str, bytes]] = []
        self.refs: list[tuple[str, str]] = []

    def add(self, batch: Batch) -> None:
        sid = batch.session_id
        self.entries.extend(map((sid,).__add__, batch.records))
        if batch.state:
            state = self.state
            for key, value in batch.state.items():
                state[sid, key] = value
        if batch.artifacts:
            artifacts = self.artifacts
            for name, digest in batch.artifacts.items():
                artifacts[sid, name] = digest
                if digest is not None:
                    self.refs.append((sid, digest))
        if batch.blobs:
            self.blobs.extend(batch.blobs.items())
            self.refs.extend((sid, digest) for digest in batch.blobs)

    def flush(self, conn: sqlite3.Connection) -> None:
        if self.entries:
            conn.executemany(_INSERT_ENTRIES, self.entries)
            self.entries = []
        if self.state:
            items = self.state.items()
            conn.executemany(_UPSERT_STATE, [(s, k, v) for (s, k), v in items if v is not None])
            deleted = [(s, k) for (s, k), v in items if v is None]
            if deleted:
                conn.executemany(_DELETE_STATE, deleted)
            self.state = {}
        if self.artifacts:
            items_a = self.artifacts.items()
            written = [(s, n, d) for (s, n), d in items_a if d is not None]
            if written:
                conn.executemany(_UPSERT_ARTIFACT, written)
            removed = [(s, n) for (s, n), d in items_a if d is None]
            if removed:
                conn.executemany(_DELETE_ARTIFACT, removed)
            self.artifacts = {}
        if self.blobs:
            conn.executemany(_INSERT_BLOB, self.blobs)
            self.blobs = []
        if self.refs:
            conn.executemany(_INSERT_REF, self.refs)
            self.refs = []


def _steps_json(steps: tuple[int, ...] | None) -> str | None:
    return None if steps is None else "[" + ",".join(map(str, steps)) + "]"


class SQLiteStore:
    """A durable :class:`~kaizen_async.stores.SessionStore` in one SQLite file.

    Args:
        path: the database file (created with its schema when missing or empty).
        readers: read connections (reads beyond this many wait for one to be free).
        busy_timeout: seconds a connection waits for another process's lock.

    Entering opens (creating or migrating) the database and starts the writer; leaving
    commits what is queued, then closes. Opening raises :class:`SessionCorruptedError`
    for a file that is not an SQLite database or not a session store, and
    :class:`SchemaMismatchError` for a store of a newer schema version.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, readers: int = 4, busy_timeout: float = 5.0
    ) -> None:
        if not isinstance(readers, int) or isinstance(readers, bool) or readers < 1:
            raise KaizenValidationError("readers must be an int >= 1")
        if not isinstance(busy_timeout, int | float) or busy_timeout < 0:
            raise KaizenValidationError("busy_timeout must be a number of seconds >= 0")
        self.path = os.fspath(path)
        self._reader_count = readers
        self._busy_timeout = float(busy_timeout)
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._reader_slots: anyio.Semaphore | None = None
        self._committer = GroupCommitter(self._transact)
        self._task_group: TaskGroup | None = None
        self._open = False
        #: test seam: called with the writer connection in the writer thread before each
        #: transaction (fault injection: ``PRAGMA max_page_count``, ``query_only``)
        self._writer_hook: Callable[[sqlite3.Connection], None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._open:
            raise PersistError(f"{self!r} is already open", code=ErrorCode.PERSIST_LOAD_FAILED)
        writer, readers = await anyio.to_thread.run_sync(self._open_sync)
        self._writer, self._readers = writer, readers
        self._reader_slots = anyio.Semaphore(len(readers))
        self._committer.open()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(self._committer.run, name=f"writer of {self!r}")
        self._task_group = task_group
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            return None
        self._task_group = None
        self._committer.close()
        try:
            return await exit_task_group(task_group, exc_type, exc, tb)
        finally:
            self._open = False
            with anyio.CancelScope(shield=True):
                slots = self._reader_slots
                if slots is not None:  # wait for reads in flight to give their connection back
                    for _ in range(self._reader_count):
                        await slots.acquire()
                connections = [c for c in [self._writer, *self._readers] if c is not None]
                self._writer, self._readers = None, []
                await anyio.to_thread.run_sync(_close_all, connections)

    def _open_sync(self) -> tuple[sqlite3.Connection, list[sqlite3.Connection]]:
        opened: list[sqlite3.Connection] = []
        try:
            writer = self._connect()
            opened.append(writer)
            migrate(writer, self.path)
            for _ in range(self._reader_count):
                reader = self._connect()
                opened.append(reader)
                reader.execute("PRAGMA query_only = 1")
            return writer, opened[1:]
        except BaseException as exc:
            _close_all(opened)
            if isinstance(exc, sqlite3.Error):
                raise storage_error(
                    exc, self.path, ErrorCode.PERSIST_LOAD_FAILED, "cannot open the store"
                ) from None
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout,
            cached_statements=256,
        )
        try:
            configure(conn, self._busy_timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- writes ------------------------------------------------------------------------------

    async def create(
        self,
        batch: Batch,
        *,
        max_artifact_size: int,
        workspace_path: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Create the session ``batch.session_id`` from its first records (durable on
        return); :class:`~kaizen_async.SessionExistsError` if the id is taken."""
        check_batch(batch, create=True)
        meta = check_metadata(metadata)
        if (
            not isinstance(max_artifact_size, int)
            or isinstance(max_artifact_size, bool)
            or max_artifact_size < 0
        ):
            raise KaizenValidationError("max_artifact_size must be a non-negative int")
        workspace = None if workspace_path is None else str(workspace_path)
        info: SessionInfo = await self._committer.submit(
            "create", (batch, max_artifact_size, workspace, meta.decode())
        )
        return info

    async def commit(self, batch: Batch) -> None:
        """Append ``batch`` once it is durable, grouped with whatever else is queued.

        Raises ``persist_conflict`` when the batch does not continue the stored head,
        :class:`~kaizen_async.SessionNotFoundError` for an unknown session, and
        ``persist_commit_failed`` when the transaction failed (nothing of it is stored).
        """
        check_batch(batch)
        await self._committer.submit("commit", batch)

    async def delete(self, session_id: str) -> bool:
        """Remove a session, its entries and the blobs no other session uses."""
        check_session_id(session_id)
        deleted: bool = await self._committer.submit("delete", session_id)
        return deleted

    async def _transact(self, writes: list[Write]) -> tuple[bool, list[Outcome]]:
        return await anyio.to_thread.run_sync(self._transact_sync, writes)

    def _transact_sync(self, writes: list[Write]) -> tuple[bool, list[Outcome]]:
        """One transaction for all ``writes`` (runs in a worker thread)."""
        outcomes: list[Outcome] = [None] * len(writes)
        conn = self._writer
        try:
            if conn is None:  # the previous transaction failed: start afresh
                conn = self._writer = self._connect()
            if self._writer_hook is not None:
                self._writer_hook(conn)
            stamp = now()
            staged = _Staged()
            conn.execute("BEGIN IMMEDIATE")
            for index, (kind, payload) in enumerate(writes):
                if kind == "commit":
                    outcomes[index] = _stage_commit(conn, payload, stamp, staged)
                elif kind == "create":
                    outcomes[index] = _stage_create(conn, payload, stamp, staged)
                else:
                    staged.flush(conn)  # rows of earlier batches go in before the delete
                    outcomes[index] = conn.execute(_DELETE_SESSION[0], (payload,)).rowcount > 0
                    if outcomes[index]:
                        for statement in _DELETE_SESSION[1:]:
                            conn.execute(statement, (payload,))
            staged.flush(conn)
            conn.execute("COMMIT")
            return True, outcomes
        except Exception as exc:
            self._abandon_writer()
            if isinstance(exc, sqlite3.Error):
                error: KaizenError = storage_error(
                    exc, self.path, ErrorCode.PERSIST_COMMIT_FAILED, "the commit failed"
                )
                if not isinstance(error, PersistError):  # a damaged file fails commits too
                    error = PersistError(
                        error.message,
                        code=ErrorCode.PERSIST_COMMIT_FAILED,
                        details=error.details,
                    )
            else:
                error = PersistError(
                    f"the commit failed ({self.path}): {exc!r}",
                    code=ErrorCode.PERSIST_COMMIT_FAILED,
                )
            return False, [o if isinstance(o, KaizenError) else error for o in outcomes]

    def _abandon_writer(self) -> None:
        """Roll back and drop the writer connection; the next transaction reconnects."""
        conn, self._writer = self._writer, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # closing without COMMIT discards the transaction anyway
        _close_all([conn])

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        slots = self._reader_slots
        if not self._open or slots is None:
            raise closed_error(ErrorCode.PERSIST_LOAD_FAILED)
        async with slots:
            conn = self._readers.pop()
            try:
                return await anyio.to_thread.run_sync(self._read_sync, fn, conn, *args)
            finally:
                self._readers.append(conn)

    def _read_sync(self, fn: Callable[..., _T], conn: sqlite3.Connection, *args: Any) -> _T:
        try:
            return fn(conn, *args)
        except sqlite3.Error as exc:
            raise storage_error(
                exc, self.path, ErrorCode.PERSIST_LOAD_FAILED, "the read failed"
            ) from None
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        """The session's state, head and newest ``tail`` records, as one snapshot; the
        tail is checked (seqs, hash chain, head) and every row validated."""
        check_session_id(session_id)
        wanted = check_limit(tail, "tail") or 0
        return await self._read(_load, session_id, wanted)

    async def read(
        self,
        session_id: str,
        *,
        since_seq: int = 0,
        until_seq: int | None = None,
        entry_types: Collection[str] | None = None,
        agent_id: str | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Record]:
        """Committed records with ``since_seq < seq <= until_seq``, filtered, oldest first.

        ``limit`` keeps the first ``limit`` matches (the last ones with ``newest=True``).
        The filters run in SQL over the session's key range (no extra index is kept, so
        appends stay cheap).
        """
        check_session_id(session_id)
        since, until = check_range(since_seq, until_seq)
        kinds = check_entry_types(entry_types)
        count = check_limit(limit)
        if agent_id is not None and not isinstance(agent_id, str):
            raise KaizenValidationError("agent_id must be a str or None")
        return await self._read(
            _read_entries, session_id, since, until, kinds, agent_id, count, bool(newest)
        )

    async def read_blob(self, digest: str) -> bytes:
        """Artifact data by SHA-256 digest, checked against it."""
        return await self._read(_read_blob, digest)

    async def info(self, session_id: str) -> SessionInfo:
        check_session_id(session_id)
        return await self._read(_info, session_id)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """Sessions ordered by id; ``after`` continues a page (keyset paging)."""
        count = check_limit(limit)
        if after is not None and not isinstance(after, str):
            raise KaizenValidationError("after must be a session id (str) or None")
        return await self._read(_list_sessions, after, count)

    def statistics(self) -> StoreStatistics:
        committer = self._committer
        return StoreStatistics(
            commits=committer.commits, batches=committer.batches, queued=committer.queued
        )


# -- the writer's steps (worker thread) ---------------------------------------------------


def _stage_commit(
    conn: sqlite3.Connection, batch: Batch, stamp: str, staged: _Staged
) -> KaizenError | None:
    sid = batch.session_id
    records = batch.records
    steps = _steps_json(batch.open_steps)
    if records:
        last = records[-1]
        changed = conn.execute(
            _ADVANCE,
            (
                last[0],
                last[6],
                batch.state_version,
                stamp,
                steps,
                sid,
                batch.base_seq,
                records[0][5],
            ),
        ).rowcount
    else:
        changed = conn.execute(
            _TOUCH, (batch.state_version, stamp, steps, sid, batch.base_seq)
        ).rowcount
    if changed != 1:
        row = conn.execute(_HEAD, (sid,)).fetchone()
        return not_found(sid) if row is None else conflict(sid, batch.base_seq, row[0])
    staged.add(batch)
    return None


def _stage_create(
    conn: sqlite3.Connection,
    payload: tuple[Batch, int, str | None, str],
    stamp: str,
    staged: _Staged,
) -> KaizenError | SessionInfo:
    batch, max_artifact_size, workspace, meta = payload
    sid = batch.session_id
    last = batch.records[-1]
    row = (
        sid,
        stamp,
        stamp,
        last[0],
        last[6],
        batch.state_version,
        max_artifact_size,
        workspace,
        meta,
        _steps_json(batch.open_steps) or "[]",
    )
    if conn.execute(_CREATE, row).rowcount != 1:
        return exists(sid)
    staged.add(batch)
    return SessionInfo(
        sid, stamp, stamp, last[0], batch.state_version, check_metadata_text(sid, meta)
    )


# -- the reads (worker thread, on a read connection) --------------------------------------


def _session_row(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise not_found(session_id)
    return tuple(row)


def _session_info(row: tuple[Any, ...]) -> SessionInfo:
    """A sessions row, every field checked."""
    (sid, created, updated, head_seq, head_hash, version, max_size, workspace, meta, _) = row
    try:
        check_session_id(sid)
    except KaizenValidationError:
        raise SessionCorruptedError(f"the store holds a malformed session id {sid!r}") from None
    if (
        type(created) is not str
        or type(updated) is not str
        or type(head_seq) is not int
        or head_seq < 0
        or not is_digest(head_hash)
        or type(version) is not int
        or version < 0
        or type(max_size) is not int
        or max_size < 0
        or (workspace is not None and type(workspace) is not str)
    ):
        raise corrupted(sid, "malformed session row")
    return SessionInfo(sid, created, updated, head_seq, version, check_metadata_text(sid, meta))


def _load(conn: sqlite3.Connection, session_id: str, wanted: int) -> StoredSession:
    conn.execute("BEGIN")
    row = _session_row(conn, session_id)
    state_rows = conn.execute(
        "SELECT key, value FROM state WHERE session_id = ?", (session_id,)
    ).fetchall()
    artifact_rows = conn.execute(
        "SELECT name, digest FROM artifacts WHERE session_id = ?", (session_id,)
    ).fetchall()
    tail_rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
        (session_id, wanted),
    ).fetchall()
    conn.execute("COMMIT")
    info = _session_info(row)
    head_hash = row[4]
    tail = check_records(session_id, reversed(tail_rows))
    check_tail(session_id, tail, info.trajectory_length, head_hash, wanted)
    return StoredSession(
        info=info,
        head_hash=head_hash,
        max_artifact_size=row[6],
        workspace_path=row[7],
        state=check_state_rows(session_id, state_rows),
        artifacts=check_artifact_rows(session_id, artifact_rows),
        open_steps=check_open_steps(session_id, row[9]),
        tail=tail,
    )


def _read_entries(
    conn: sqlite3.Connection,
    session_id: str,
    since: int,
    until: int | None,
    kinds: tuple[str, ...] | None,
    agent_id: str | None,
    count: int | None,
    newest: bool,
) -> list[Record]:
    conn.execute("BEGIN")
    head = conn.execute(_HEAD, (session_id,)).fetchone()
    if head is None:
        raise not_found(session_id)
    if type(head[0]) is not int:
        raise corrupted(session_id, "malformed session row")
    last = head[0] if until is None else min(until, head[0])
    sql = [f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? AND seq > ? AND seq <= ?"]
    params: list[Any] = [session_id, since, last]
    if kinds is not None:
        sql.append(f"AND entry_type IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    if agent_id is not None:
        sql.append("AND agent_id = ?")
        params.append(agent_id)
    sql.append("ORDER BY seq DESC" if newest else "ORDER BY seq")
    if count is not None:
        sql.append("LIMIT ?")
        params.append(count)
    rows = conn.execute(" ".join(sql), params).fetchall()
    conn.execute("COMMIT")
    if newest:
        rows.reverse()
    return check_records(session_id, rows)


def _read_blob(conn: sqlite3.Connection, digest: str) -> bytes:
    row = (
        conn.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if is_digest(digest)
        else None
    )
    if row is None:
        raise ArtifactNotFoundError(
            f"no artifact blob {digest!r} in the store", details={"digest": digest}
        )
    data = row[0]
    if type(data) is not bytes or sha256_hex(data) != digest:
        raise SessionCorruptedError(
            f"artifact blob {digest[:12]}... does not match its digest",
            details={"digest": digest},
        )
    return data


def _info(conn: sqlite3.Connection, session_id: str) -> SessionInfo:
    return _session_info(_session_row(conn, session_id))


def _list_sessions(
    conn: sqlite3.Connection, after: str | None, count: int | None
) -> list[SessionInfo]:
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id > ? ORDER BY session_id LIMIT ?",
        ("" if after is None else after, -1 if count is None else count),
    ).fetchall()
    return [_session_info(tuple(row)) for row in rows]


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
