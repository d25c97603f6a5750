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

With a signer, the writer also signs the new head of every session the transaction
advanced (per :class:`~kaizen_async.signing.CheckpointPolicy`; one signature per
transaction) and writes the checkpoint rows in that same transaction, after the guarded
updates: a refused batch, a rolled-back transaction or a fenced writer commits none.

Reads run on a small pool of read connections in worker threads, concurrently with the
writer (WAL readers see the last committed state and never block it); a read that spans
several statements (``load``, ``read``) runs in one read transaction: one snapshot.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._actor import exit_task_group
from .._anchors import AnchorPublisher, AnchorSink
from .._checkpoint import Checkpoint
from .._checkpointing import Checkpointer, CheckpointPolicy, Head, SignedTree
from .._exceptions import (
    ErrorCode,
    KaizenError,
    KaizenValidationError,
    PersistError,
)
from .._keys import Signer
from .._storage import Batch, SessionInfo, StoredSession
from .._trajectory import Record
from . import _sqlite_reads as reads
from ._committing import CommittingStore
from ._common import (
    check_entry_types,
    check_limit,
    check_optional_text,
    check_range,
    check_session_id,
    check_wait,
    closed_error,
    now,
)
from ._group_commit import GroupCommitter, Outcome, Write
from ._sqlite_schema import configure, migrate, storage_error
from ._sqlite_writes import (
    DELETE_SESSION,
    Staged,
    acquire,
    next_tree_id,
    release,
    renew,
    stage_checkpoint,
    stage_commit,
    stage_create,
    write_trees,
)

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")


class SQLiteStore(CommittingStore):
    """A durable :class:`~kaizen_async.stores.SessionStore` in one SQLite file.

    Args:
        path: the database file (created with its schema when missing or empty).
        readers: read connections (reads beyond this many wait for one to be free).
        busy_timeout: seconds a connection waits for another process's lock.
        poll_interval: seconds between reads of a session's head while
            :meth:`wait_for_commit` waits for another process's commit (this process's own
            commits wake it at once).
        signer: signs checkpoints of session heads at commits (see
            :mod:`kaizen_async.signing`); None (the default): no checkpoints.
        checkpoints: when to sign (default: at every durable commit of a session).
        anchor: receives each committed checkpoint, off the write path.

    Entering opens (creating or migrating) the database and starts the writer; leaving
    commits what is queued, then closes. Opening raises :class:`SessionCorruptedError`
    for a file that is not an SQLite database or not a session store, and
    :class:`SchemaMismatchError` for a store of a newer schema version.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readers: int = 4,
        busy_timeout: float = 5.0,
        poll_interval: float = 0.05,
        signer: Signer | None = None,
        checkpoints: CheckpointPolicy | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
    ) -> None:
        if not isinstance(readers, int) or isinstance(readers, bool) or readers < 1:
            raise KaizenValidationError("readers must be an int >= 1")
        if not isinstance(busy_timeout, int | float) or busy_timeout < 0:
            raise KaizenValidationError("busy_timeout must be a number of seconds >= 0")
        if not isinstance(poll_interval, int | float) or not 0 < poll_interval < 3600:
            raise KaizenValidationError("poll_interval must be a number of seconds > 0")
        self._poll_interval = float(poll_interval)
        self._waiters: dict[str, set[anyio.Event]] = {}
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
        self._checkpointer = None if signer is None else Checkpointer(signer, checkpoints, anchor)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._open:
            raise PersistError(f"{self!r} is already open", code=ErrorCode.PERSIST_LOAD_FAILED)
        writer, readers = await anyio.to_thread.run_sync(self._open_sync)
        try:
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:  # cancelled while opening: leave nothing open
            _close_all([writer, *readers])
            raise
        self._writer, self._readers = writer, readers
        self._reader_slots = anyio.Semaphore(len(readers))
        self._committer.open()
        task_group.start_soon(self._committer.run, name=f"writer of {self!r}")
        anchor = self._checkpointer.anchor if self._checkpointer is not None else None
        if anchor is not None:
            task_group.start_soon(anchor.run, name=f"anchor of {self!r}")
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
        if self._checkpointer is not None and self._checkpointer.anchor is not None:
            self._checkpointer.anchor.close()
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

    async def read_checkpoints(self, session_id: str, *, since_seq: int = 0) -> list[Checkpoint]:
        """The session's committed checkpoints with ``seq > since_seq``, oldest first."""
        check_session_id(session_id)
        since, _ = check_range(since_seq, None)
        return await self._read(reads.read_checkpoints, session_id, since)

    async def _transact(self, writes: list[Write]) -> tuple[bool, list[Outcome]]:
        signer = self._checkpointer
        if signer is None:
            committed, outcomes = await anyio.to_thread.run_sync(self._transact_sync, writes)
        else:
            signing = _Signing(signer)
            committed, outcomes = await anyio.to_thread.run_sync(
                self._transact_sync, writes, signing
            )
            if committed:
                signer.committed(signing.heads, signing.trees)
                for session_id in signing.deleted:
                    signer.forget(session_id)
        if self._waiters:  # this process's commits wake its waiters at once
            for (kind, payload), outcome in zip(writes, outcomes, strict=True):
                if kind in ("commit", "create") and not isinstance(outcome, BaseException):
                    sid = payload.session_id if kind == "commit" else payload[0].session_id
                    for event in self._waiters.pop(sid, ()):
                        event.set()
        return committed, outcomes

    def _transact_sync(
        self, writes: list[Write], signing: _Signing | None = None
    ) -> tuple[bool, list[Outcome]]:
        """One transaction for all ``writes`` (runs in a worker thread); ``signing``
        collects and signs the session heads it advances (with a signer)."""
        outcomes: list[Outcome] = [None] * len(writes)
        conn = self._writer
        try:
            if conn is None:  # the previous transaction failed: start afresh
                conn = self._writer = self._connect()
            if self._writer_hook is not None:
                self._writer_hook(conn)
            stamp = now()
            staged = Staged()
            conn.execute("BEGIN IMMEDIATE")
            for index, (kind, payload) in enumerate(writes):
                if kind == "commit":
                    if signing is None or not payload.records:
                        outcomes[index] = stage_commit(conn, payload, stamp, staged)
                    else:
                        mark = signing.mark(conn, payload)
                        outcomes[index] = stage_commit(conn, payload, stamp, staged, mark)
                        if outcomes[index] is None:
                            signing.accepted(payload, mark)
                elif kind == "create":
                    outcomes[index] = stage_create(conn, payload, stamp, staged)
                    if signing is not None and isinstance(outcomes[index], SessionInfo):
                        signing.explicit(conn, payload[0].session_id, *_last(payload[0]))
                elif kind == "checkpoint":
                    assert signing is not None
                    found = stage_checkpoint(conn, payload, signing.signer.key_id)
                    if isinstance(found, tuple):
                        signing.explicit(conn, payload, *found, index=index)
                    else:
                        outcomes[index] = found
                elif kind == "acquire":
                    outcomes[index] = acquire(conn, payload)
                elif kind == "renew":
                    outcomes[index] = renew(conn, payload)
                elif kind == "release":
                    release(conn, payload)
                else:
                    staged.flush(conn)  # rows of earlier batches go in before the delete
                    outcomes[index] = conn.execute(DELETE_SESSION[0], (payload,)).rowcount > 0
                    if outcomes[index]:
                        for statement in DELETE_SESSION[1:]:
                            conn.execute(statement, (payload,))
                        if signing is not None:
                            signing.deleted.add(payload)
            staged.flush(conn)
            if signing is not None and signing.due:
                signing.write(conn, outcomes)
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
        return await self._read(reads.load, session_id, wanted)

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
        check_optional_text(agent_id, "agent_id")
        return await self._read(
            reads.read_entries, session_id, since, until, kinds, agent_id, count, bool(newest)
        )

    async def read_blob(self, digest: str) -> bytes:
        """Artifact data by SHA-256 digest, checked against it."""
        return await self._read(reads.read_blob, digest)

    async def info(self, session_id: str) -> SessionInfo:
        check_session_id(session_id)
        return await self._read(reads.info, session_id)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """Sessions ordered by id; ``after`` continues a page (keyset paging)."""
        count = check_limit(limit)
        check_optional_text(after, "after")
        return await self._read(reads.list_sessions, after, count)

    # -- ownership ---------------------------------------------------------------------------

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        """The head once past ``after_seq``: woken at once by this store's own commits,
        found within ``poll_interval`` when another process commits."""
        check_session_id(session_id)
        after, limit = check_wait(after_seq, timeout)
        deadline = anyio.current_time() + limit
        while True:
            event = anyio.Event()
            waiters = self._waiters.setdefault(session_id, set())
            waiters.add(event)
            try:
                head = await self._read(reads.head, session_id)
                remaining = deadline - anyio.current_time()
                if head > after or remaining <= 0:
                    return head
                with anyio.move_on_after(min(remaining, self._poll_interval)):
                    await event.wait()
            finally:
                waiters.discard(event)
                if not waiters and self._waiters.get(session_id) is waiters:
                    del self._waiters[session_id]


def _last(batch: Batch) -> tuple[int, str]:
    last = batch.records[-1]
    return last[0], last[6]


def _epoch(batch: Batch) -> int:
    """The writer's fencing epoch for this session's batch (0: a writer without
    ownership)."""
    return batch.epoch or 0


class _Signing:
    """What one transaction signs (runs in the writer thread): the heads due, in leaf
    order, the tree ids and leaf indexes they get, and the rows that record them."""

    __slots__ = (
        "counts",
        "deleted",
        "due",
        "explicit_rows",
        "first_tree",
        "heads",
        "signer",
        "trees",
    )

    def __init__(self, signer: Checkpointer) -> None:
        self.signer = signer
        self.due: list[tuple[str, int, str, int]] = []
        #: (position in due, write index or None) of heads not set by a guarded update
        self.explicit_rows: list[tuple[int, int | None]] = []
        self.heads: list[Head] = []  # every head advanced (for the policy's counters)
        self.counts: dict[str, tuple[int, int]] = {}
        self.deleted: set[str] = set()
        self.first_tree = 0
        self.trees: list[SignedTree] = []

    def _place(self, conn: sqlite3.Connection, epoch: int) -> tuple[int, int, int]:
        """(epoch, tree id, leaf index) of the next head signed."""
        first = self.first_tree or self._first(conn)
        n = len(self.due)
        if self.signer.policy.group:
            return epoch, first, n
        return epoch, first + n, 0

    def _first(self, conn: sqlite3.Connection) -> int:
        self.first_tree = next_tree_id(conn)
        return self.first_tree

    def mark(self, conn: sqlite3.Connection, batch: Batch) -> tuple[int, int, int] | None:
        """Where this batch's head goes if it is due (None: not due). Runs once per
        batch: the default policy (every commit, one tree) takes the short way."""
        signer = self.signer
        if signer.every and signer.policy.group:
            return _epoch(batch), self.first_tree or self._first(conn), len(self.due)
        sid = batch.session_id
        commits, entries = self.counts.get(sid, (0, 0))
        commits, entries = commits + 1, entries + len(batch.records)
        self.counts[sid] = (commits, entries)
        if not signer.due(sid, commits, entries):
            return None
        return self._place(conn, _epoch(batch))

    def accepted(self, batch: Batch, mark: tuple[int, int, int] | None) -> None:
        last = batch.records[-1]
        if mark is not None:
            self.due.append((batch.session_id, last[0], last[6], mark[0]))
        if not self.signer.every:  # the policy's counters need every head
            self.heads.append(
                (batch.session_id, last[0], last[6], _epoch(batch), len(batch.records))
            )

    def explicit(
        self, conn: sqlite3.Connection, sid: str, seq: int, head: str, *, index: int | None = None
    ) -> None:
        """A head signed whatever the policy (a created session, ``store.checkpoint``)."""
        self._place(conn, 0)
        self.explicit_rows.append((len(self.due), index))
        self.due.append((sid, seq, head, 0))

    def write(self, conn: sqlite3.Connection, outcomes: list[Outcome]) -> None:
        """Sign the due heads and write their rows; explicit callers get their checkpoint."""
        signer = self.signer
        self.trees = trees = signer.sign(self.due)
        first, group = self.first_tree, signer.policy.group
        explicit = dict(self.explicit_rows)
        history = signer.history(self.due, first, group, explicit, self.deleted)
        latest = []
        for n in explicit:
            sid = self.due[n][0]
            if sid not in self.deleted:
                tree_id, leaf = (first, n) if group else (first + n, 0)
                latest.append((tree_id, leaf, sid, tree_id))
        write_trees(conn, first, trees, signer.key_id, signer.writer_id, history, latest)
        wanted = [(n, index) for n, index in self.explicit_rows if index is not None]
        if wanted:
            made = signer.checkpoints(trees)
            for n, index in wanted:
                outcomes[index] = made[n]


def _close_all(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
