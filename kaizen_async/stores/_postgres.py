"""``PostgresStore``: many sessions in one PostgreSQL database (driver: asyncpg).

Writes: one writer task per store (see :mod:`._group_commit`) takes every queued batch,
of all sessions, and commits them with one statement on one connection (see
:mod:`._postgres_sql`: each session's head moves behind a guard, its rows are written
only if the guard held); the statement is its own transaction, so a caller is answered
only once its batch is committed (``synchronous_commit`` as the server is configured:
on by default, i.e. flushed to the server's WAL). A batch that does not continue the
stored head fails alone with ``persist_conflict``. A statement that fails (the server
restarted, the connection dropped, a timeout) fails every batch in it with
``persist_commit_failed`` and is never retried by the store: a dropped connection can
hide a commit that did happen, so the caller is told the write was not acknowledged and
the session reloads what the store holds. The writer reconnects for the next statement.

With a signer, the writer signs the new heads of a round's sessions (per
:class:`~kaizen_async.signing.CheckpointPolicy`; one signature per round) before the
statement, since their heads and epochs are known, and the same statement writes the
checkpoint rows, each only if its session's create or guarded head update held: a refused
batch, a fenced writer or a failed statement commits none (the refused sessions' leaves
stay in the signed tree, but their checkpoints are never stored nor anchored).

Reads run on a small connection pool; a read that spans several statements (``load``)
runs in one ``REPEATABLE READ`` read-only transaction: one snapshot.

asyncpg runs on asyncio only: on asyncio its calls run on the caller's event loop; on
Trio they run on a private asyncio loop in a thread of the store's own
(:mod:`._driver_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._actor import exit_task_group
from .._anchors import AnchorPublisher, AnchorSink
from .._canonical import sha256_hex
from .._checkpoint import Checkpoint
from .._checkpointing import Checkpointer, CheckpointPolicy, Head, SignedTree
from .._exceptions import (
    ArtifactNotFoundError,
    ErrorCode,
    KaizenError,
    KaizenValidationError,
    PersistError,
    SessionCorruptedError,
)
from .._keys import Signer
from .._storage import Batch, Ownership, SessionInfo, StoredSession
from .._trajectory import Record
from ._committing import CommittingStore
from ._common import (
    busy,
    check_entry_types,
    check_limit,
    check_metadata_text,
    check_optional_text,
    check_range,
    check_session_id,
    check_wait,
    closed_error,
    conflict,
    corrupted,
    exists,
    fenced,
    is_digest,
    not_found,
    now,
)
from ._driver_loop import DriverLoop
from ._group_commit import GroupCommitter, Outcome, Write
from ._postgres_schema import migrate, quote_ident
from ._postgres_sql import (
    Round,
    Statements,
    checkpoints_from_rows,
    plan_rounds,
    session_info,
    stored_session,
    to_records,
)

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
#: rows past which a read pauses the cyclic GC while it builds its records
_LONG_READ = 10_000
#: every connection's settings. Writes are single statements, so no connection of the
#: store sits in a transaction between round trips except a migration and ``load``'s
#: read snapshot; should its process be paused there, the server ends that transaction
#: after 10 s, so its locks (a migration's) never hold other processes up for longer.
_SETTINGS = {"application_name": "kaizen_async", "idle_in_transaction_session_timeout": "10s"}


def _asyncpg() -> Any:
    try:
        import asyncpg
    except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed in tests
        raise ModuleNotFoundError(
            'PostgresStore needs the asyncpg driver: pip install "kaizen-async[postgres]"',
            name="asyncpg",
        ) from exc
    return asyncpg


def _check_seconds(value: object, what: str) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not value > 0
        or value == float("inf")
    ):
        raise KaizenValidationError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value)


class PostgresStore(CommittingStore):
    """A durable :class:`~kaizen_async.stores.SessionStore` in a PostgreSQL database.

    Args:
        dsn: a libpq connection string or URI (``postgresql://user@host:5432/db``).
        schema: the PostgreSQL schema holding the store's tables (created with them on
            first use); several stores can share a database under different schemas.
        readers: read connections (reads beyond this many wait for one to be free).
        connect_timeout: seconds to wait for a connection.
        command_timeout: seconds a statement may take before the driver cancels it (its
            callers then get a :class:`PersistError`).
        notify: send one ``NOTIFY`` per committed statement (naming its sessions), which
            wakes :meth:`wait_for_commit` in every process at once; without it waiters
            find commits by reading the head every ``poll_interval``.
        poll_interval: the longest :meth:`wait_for_commit` goes without reading the head
            (with notifications this only makes up for one lost with a dropped listener
            connection).
        signer: signs checkpoints of session heads at commits (see
            :mod:`kaizen_async.signing`); None (the default): no checkpoints.
        checkpoints: when to sign (default: at every commit of a session); every
            checkpoint is kept (``history_every`` does not apply).
        anchor: receives each committed checkpoint, off the write path.

    Entering connects, creates or migrates the schema and starts the writer; leaving
    commits what is queued, then closes. Opening raises :class:`SessionCorruptedError` for
    a schema that holds tables but is not a session store, :class:`SchemaMismatchError`
    for a store of a newer schema version and :class:`PersistError` when the server
    cannot be reached.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "kaizen",
        readers: int = 4,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        notify: bool = True,
        poll_interval: float = 1.0,
        signer: Signer | None = None,
        checkpoints: CheckpointPolicy | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise KaizenValidationError("dsn must be a non-empty connection string")
        if (
            not isinstance(schema, str)
            or not schema.strip()
            or "\x00" in schema
            or len(schema.encode()) > 63
        ):
            raise KaizenValidationError(
                f"schema must be a PostgreSQL identifier (1-63 bytes, no NUL), got {schema!r}"
            )
        check_optional_text(schema, "schema")
        if not isinstance(readers, int) or isinstance(readers, bool) or readers < 1:
            raise KaizenValidationError("readers must be an int >= 1")
        self._connect_timeout = _check_seconds(connect_timeout, "connect_timeout")
        self._command_timeout = _check_seconds(command_timeout, "command_timeout")
        self._poll_interval = _check_seconds(poll_interval, "poll_interval")
        #: the NOTIFY channel of this schema (an identifier: hashed to stay short)
        self._channel = "kaizen_async_" + hashlib.sha256(schema.encode()).hexdigest()[:24]
        self._notify = bool(notify)
        # on the driver loop only: the listener connection and who waits for which session
        self._listener: asyncpg.Connection | None = None
        self._listener_lock: asyncio.Lock | None = None
        self._watchers: dict[bytes, set[asyncio.Event]] = {}
        _asyncpg()  # fail at construction when the driver is missing
        self.dsn = dsn
        self.schema = schema
        self._reader_count = readers
        self._sql = Statements.for_schema(quote_ident(schema))
        self._loop = DriverLoop("kaizen_async postgres driver")
        self._writer: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._committer = GroupCommitter(self._transact)
        self._task_group: TaskGroup | None = None
        self._open = False
        #: test seam: awaited with the writer connection (on the driver loop) before each
        #: statement of a group commit (fault injection: terminate the connection)
        self._writer_hook: Callable[[asyncpg.Connection], Awaitable[None]] | None = None
        self._checkpointer = None if signer is None else Checkpointer(signer, checkpoints, anchor)

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._open or self._task_group is not None:
            raise PersistError(f"{self!r} is already open", code=ErrorCode.PERSIST_LOAD_FAILED)
        await self._loop.start()
        try:
            self._writer, self._pool = await self._loop.call(self._open_driver)
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._loop.call(self._close_driver)
                await self._loop.stop()
            raise
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
                await self._loop.call(self._close_driver)
                await self._loop.stop()

    async def _connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await _asyncpg().connect(
            self.dsn,
            timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            server_settings=_SETTINGS,
        )
        return connection

    async def _open_driver(self) -> tuple[asyncpg.Connection, asyncpg.Pool]:
        """Connect, migrate, start the read pool (on the driver loop)."""
        driver = _asyncpg()
        writer = None
        try:
            writer = await self._connect()
            await migrate(writer, self.schema)
            pool: asyncpg.Pool = await driver.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._reader_count,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                server_settings=_SETTINGS,
            )
            return writer, pool
        except BaseException as exc:
            if writer is not None:
                writer.terminate()
            if isinstance(exc, KaizenError) or not isinstance(exc, Exception):
                raise
            raise self._error(exc, ErrorCode.PERSIST_LOAD_FAILED, "cannot open the store") from None

    async def _close_driver(self) -> None:
        writer, pool, listener = self._writer, self._pool, self._listener
        self._writer, self._pool, self._listener = None, None, None
        self._listener_lock = None
        for event in [e for events in self._watchers.values() for e in events]:
            event.set()  # waiters read the head once more (and find the store closed)
        if listener is not None:
            listener.terminate()
        if writer is not None:
            try:
                await writer.close(timeout=self._connect_timeout)
            except Exception:
                writer.terminate()
        if pool is not None:
            try:
                with anyio.fail_after(self._connect_timeout):
                    await pool.close()
            except Exception:
                pool.terminate()

    def _error(self, exc: BaseException, code: ErrorCode, what: str) -> PersistError:
        """The typed error for a failed driver call (the SQLSTATE, if any, in ``details``)."""
        details: dict[str, Any] = {"schema": self.schema}
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate:
            details["sqlstate"] = sqlstate
        return PersistError(
            f"{what} (PostgreSQL, schema {self.schema!r}): {type(exc).__name__}: {exc}",
            code=code,
            details=details,
        )

    # -- writes ------------------------------------------------------------------------------

    async def read_checkpoints(self, session_id: str, *, since_seq: int = 0) -> list[Checkpoint]:
        """The session's committed checkpoints with ``seq > since_seq``, oldest first."""
        check_session_id(session_id)
        since, _ = check_range(since_seq, None)
        return await self._read(self._read_checkpoints, session_id, since)

    async def _read_checkpoints(
        self, conn: asyncpg.Connection, session_id: str, since: int
    ) -> list[Checkpoint]:
        rows = await conn.fetch(self._sql.read_checkpoints, session_id.encode(), since)
        return checkpoints_from_rows(session_id, rows)

    async def _transact(self, writes: list[Write]) -> tuple[bool, list[Outcome]]:
        signer = self._checkpointer
        if signer is None:
            return await self._loop.call(self._transact_async, writes, None, shield=True)
        signing = _Signing(signer)
        result = await self._loop.call(self._transact_async, writes, signing, shield=True)
        if signing.trees or signing.heads:  # back on the event loop: counters and anchor
            signer.committed(signing.heads, signing.trees, signing.accepted)
        for session_id in signing.deleted:
            signer.forget(session_id)
        return result

    async def _transact_async(
        self, writes: list[Write], signing: _Signing | None
    ) -> tuple[bool, list[Outcome]]:
        """Every round of the group, one statement each (on the driver loop)."""
        outcomes: list[Outcome] = [None] * len(writes)
        committed = False
        failure: PersistError | None = None
        stamp = now()
        for indices in plan_rounds(writes):
            if failure is not None:  # the database failed: so do the rounds after it
                for index in indices:
                    outcomes[index] = failure
                continue
            try:
                conn = self._writer
                if conn is None or conn.is_closed():
                    conn = self._writer = await self._connect()
                if self._writer_hook is not None:
                    await self._writer_hook(conn)
                await self._run_round(conn, writes, indices, stamp, outcomes, signing)
                committed = True
            except Exception as exc:
                self._abandon_writer()
                failure = (
                    exc
                    if isinstance(exc, PersistError)
                    else self._error(
                        exc,
                        ErrorCode.PERSIST_COMMIT_FAILED,
                        "the commit failed or its outcome is unknown (reload the session)",
                    )
                )
                for index in indices:
                    outcomes[index] = failure
        return committed, outcomes

    async def _run_round(
        self,
        conn: asyncpg.Connection,
        writes: list[Write],
        indices: list[int],
        stamp: str,
        outcomes: list[Outcome],
        signing: _Signing | None,
    ) -> None:
        first_kind, first_payload = writes[indices[0]]
        if first_kind not in ("create", "commit"):
            outcomes[indices[0]] = await self._run_single(conn, first_kind, first_payload, signing)
            return
        round_ = Round(stamp)
        for index in indices:
            kind, payload = writes[index]
            if kind == "create":
                round_.add_create(index, payload)
            else:
                round_.add_commit(index, payload)
        channel = self._channel if self._notify else None
        if signing is None:
            rows = await conn.fetch(self._sql.round, *round_.arguments(channel))
            accepted = {row[0] for row in rows}
        else:
            trees, signed_heads = signing.sign(writes, indices)
            made = signing.signer.checkpoints(trees)
            round_.add_checkpoints(made)
            signer = signing.signer
            rows = await conn.fetch(
                self._sql.round_signed,
                *round_.signed_arguments(channel, signer.writer_id, signer.key_id),
            )
            accepted = {row[0] for row in rows}
            signing.committed(accepted, trees, signed_heads, made)
        refused: list[bytes] = []
        for sid, index in round_.writes.items():
            kind, payload = writes[index]
            if kind == "create":
                batch = payload[0]
                if sid in accepted:
                    last = batch.records[-1]
                    outcomes[index] = SessionInfo(
                        batch.session_id,
                        stamp,
                        stamp,
                        last[0],
                        batch.state_version,
                        check_metadata_text(batch.session_id, payload[3]),
                    )
                else:
                    outcomes[index] = exists(batch.session_id)
            elif sid not in accepted:
                refused.append(sid)
        if refused:  # name each refusal: unknown session, or another head
            heads = {row[0]: row for row in await conn.fetch(self._sql.heads, refused)}
            for sid in refused:
                index = round_.writes[sid]
                batch = writes[index][1]
                row = heads.get(sid)
                if row is None:
                    outcomes[index] = not_found(batch.session_id)
                elif batch.epoch is not None and row[2] != batch.epoch:
                    outcomes[index] = fenced(batch.session_id, batch.epoch, row[2], row[3])
                else:
                    outcomes[index] = conflict(batch.session_id, batch.base_seq, row[1])

    async def _run_single(
        self, conn: asyncpg.Connection, kind: str, payload: Any, signing: _Signing | None
    ) -> Outcome:
        """A write that is a statement of its own: delete, acquire, renew, release, and
        an explicit checkpoint (two: its head read, then its guarded insert)."""
        sql = self._sql
        if kind == "delete":
            deleted = bool(await conn.fetchval(sql.delete, payload.encode()))
            if deleted and signing is not None:
                signing.deleted.add(payload)
            return deleted
        if kind == "checkpoint":
            assert signing is not None
            return await self._explicit_checkpoint(conn, payload, signing)
        if kind == "acquire":
            sid, owner, lease, take_over, replace = payload
            row = await conn.fetchrow(sql.acquire, sid.encode(), owner, lease, take_over, replace)
            if row is None:
                return not_found(sid)
            if row[3] is None:
                return busy(sid, row[0], row[2])
            return Ownership(sid, owner, row[3], row[4])
        if kind == "renew":
            owner, claims, lease = payload
            rows = await conn.fetch(
                sql.renew,
                owner,
                lease,
                [sid.encode() for sid in claims],
                list(claims.values()),
            )
            return {row[0].decode(): row[1] for row in rows}
        sid, owner, epoch = payload
        await conn.execute(sql.release, sid.encode(), owner, epoch)
        return None

    async def _explicit_checkpoint(
        self, conn: asyncpg.Connection, session_id: str, signing: _Signing
    ) -> Outcome:
        """Sign the session's head unless this key signed it already; the row is written
        only while the session still holds that entry."""
        signer = signing.signer
        key = session_id.encode()
        row = await conn.fetchrow(self._sql.checkpoint_head, key, signer.key_id)
        if row is None:
            return not_found(session_id)
        if row[2]:
            return None
        trees = signer.sign([(session_id, row[0], row[1], 0)])
        (made,) = signer.checkpoints(trees)
        inserted = await conn.execute(
            self._sql.insert_checkpoint,
            key,
            made.seq,
            made.head_hash,
            made.epoch,
            made.writer_id,
            made.time,
            made.key_id,
            made.signature,
        )
        if inserted != "INSERT 0 1":  # deleted (or cut back) between the two statements
            return not_found(session_id)
        signing.committed({key}, trees, [], [made])
        return made

    def _abandon_writer(self) -> None:
        """Drop the writer connection; the next statement reconnects."""
        conn, self._writer = self._writer, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        if not self._open or self._pool is None:
            raise closed_error(ErrorCode.PERSIST_LOAD_FAILED)
        return await self._loop.call(self._read_async, fn, *args)

    async def _read_async(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        pool = self._pool
        if pool is None:
            raise closed_error(ErrorCode.PERSIST_LOAD_FAILED)
        try:
            async with pool.acquire() as conn:
                return await fn(conn, *args)
        except KaizenError:
            raise
        except Exception as exc:
            raise self._error(exc, ErrorCode.PERSIST_LOAD_FAILED, "the read failed") from None

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        """The session's state, head and newest ``tail`` records, as one snapshot; the
        tail is checked (seqs, hash chain, head) and every row validated."""
        check_session_id(session_id)
        wanted = check_limit(tail, "tail") or 0
        return await self._read(self._load, session_id, wanted)

    async def _load(self, conn: asyncpg.Connection, session_id: str, wanted: int) -> StoredSession:
        key = session_id.encode()
        sql = self._sql
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(sql.session, key)
            if row is None:
                raise not_found(session_id)
            state_rows = await conn.fetch(sql.state, key)
            artifact_rows = await conn.fetch(sql.artifacts, key)
            tail_rows = await conn.fetch(sql.tail, key, wanted) if wanted else []
        return stored_session(session_id, row, state_rows, artifact_rows, tail_rows, wanted)

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
        One statement: the session's head and its entries in one snapshot.
        """
        check_session_id(session_id)
        since, until = check_range(since_seq, until_seq)
        kinds = check_entry_types(entry_types)
        count = check_limit(limit)
        check_optional_text(agent_id, "agent_id")
        return await self._read(
            self._read_entries, session_id, since, until, kinds, agent_id, count, bool(newest)
        )

    async def _read_entries(
        self,
        conn: asyncpg.Connection,
        session_id: str,
        since: int,
        until: int | None,
        kinds: tuple[str, ...] | None,
        agent_id: str | None,
        count: int | None,
        newest: bool,
    ) -> list[Record]:
        rows = await conn.fetch(
            self._sql.read_newest if newest else self._sql.read_oldest,
            session_id.encode(),
            since,
            until,
            None if kinds is None else list(kinds),
            None if agent_id is None else agent_id.encode(),
            count,
        )
        if not rows:
            raise not_found(session_id)
        if type(rows[0][0]) is not int:
            raise corrupted(session_id, "malformed session row")
        if rows[0][1] is None:  # the session exists; no entry matched
            return []
        paused = len(rows) > _LONG_READ and gc.isenabled()
        if paused:  # many acyclic objects: don't let the cyclic GC rescan them meanwhile
            gc.disable()
        try:
            if newest:
                rows.reverse()
            return to_records(session_id, (row[1:] for row in rows))
        finally:
            if paused:
                gc.enable()

    async def read_blob(self, digest: str) -> bytes:
        """Artifact data by SHA-256 digest, checked against it."""
        return await self._read(self._read_blob, digest)

    async def _read_blob(self, conn: asyncpg.Connection, digest: str) -> bytes:
        data = await conn.fetchval(self._sql.blob, digest) if is_digest(digest) else None
        if data is None:
            raise ArtifactNotFoundError(
                f"no artifact blob {digest!r} in the store", details={"digest": digest}
            )
        if type(data) is not bytes or sha256_hex(data) != digest:
            raise SessionCorruptedError(
                f"artifact blob {digest[:12]}... does not match its digest",
                details={"digest": digest},
            )
        return data

    async def info(self, session_id: str) -> SessionInfo:
        check_session_id(session_id)
        return await self._read(self._info, session_id)

    async def _info(self, conn: asyncpg.Connection, session_id: str) -> SessionInfo:
        row = await conn.fetchrow(self._sql.session, session_id.encode())
        if row is None:
            raise not_found(session_id)
        return session_info(row)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """Sessions ordered by id (code point order); ``after`` continues a page."""
        count = check_limit(limit)
        check_optional_text(after, "after")
        return await self._read(self._list, after, count)

    async def _list(
        self, conn: asyncpg.Connection, after: str | None, count: int | None
    ) -> list[SessionInfo]:
        rows = await conn.fetch(
            self._sql.list_sessions, b"" if after is None else after.encode(), count
        )
        return [session_info(row) for row in rows]

    # -- ownership ---------------------------------------------------------------------------

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        """The head once past ``after_seq``: woken by the ``NOTIFY`` of the statement that
        committed it, in whichever process (a listener connection per store)."""
        check_session_id(session_id)
        after, limit = check_wait(after_seq, timeout)
        if not self._open:
            raise closed_error(ErrorCode.PERSIST_LOAD_FAILED)
        return await self._loop.call(self._wait_async, session_id, after, limit)

    async def _wait_async(self, session_id: str, after: int, limit: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        key = session_id.encode()
        while True:
            event = asyncio.Event()
            watchers = self._watchers.setdefault(key, set())
            watchers.add(event)
            try:
                listening = await self._listen()
                head = await self._read_async(self._head, session_id)
                remaining = deadline - loop.time()
                if head > after or remaining <= 0:
                    return head
                wait = remaining if listening else min(remaining, self._poll_interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(wait, self._poll_interval))
            finally:
                watchers.discard(event)
                if not watchers and self._watchers.get(key) is watchers:
                    del self._watchers[key]

    async def _head(self, conn: asyncpg.Connection, session_id: str) -> int:
        head = await conn.fetchval(self._sql.head, session_id.encode())
        if head is None:
            raise not_found(session_id)
        if type(head) is not int:
            raise corrupted(session_id, "malformed session row")
        return head

    async def _listen(self) -> bool:
        """Make sure the listener connection runs (on the driver loop); False when it
        cannot (the waiters then poll)."""
        if not self._notify or self._pool is None:
            return False
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return True
        if self._listener_lock is None:
            self._listener_lock = asyncio.Lock()
        async with self._listener_lock:
            if self._listener is not None and not self._listener.is_closed():
                return True
            try:
                listener = await self._connect()
                await listener.add_listener(self._channel, self._notified)
            except Exception:
                return False
            self._listener = listener
            # commits made while there was no listener are found by the head read next
            for events in self._watchers.values():
                for event in events:
                    event.set()
            return True

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        """A committed statement's session ids (hex, comma-separated) or ``*``."""
        if payload == "*" or not isinstance(payload, str):
            woken = [e for events in self._watchers.values() for e in events]
        else:
            woken = []
            for text in payload.split(","):
                try:
                    events = self._watchers.get(bytes.fromhex(text))
                except ValueError:
                    continue
                if events:
                    woken.extend(events)
        for event in woken:
            event.set()


class _Signing:
    """What one group's rounds sign and commit (rounds run on the driver loop; the
    checkpointer's counters and anchor are updated from it on the event loop)."""

    def __init__(self, signer: Checkpointer) -> None:
        self.signer = signer
        #: per session in this group: (commits, entries) not yet signed
        self.counts: dict[str, tuple[int, int]] = {}
        self.trees: list[SignedTree] = []
        self.heads: list[Head] = []
        self.accepted: set[tuple[str, int, str]] = set()
        self.deleted: set[str] = set()

    def sign(self, writes: list[Write], indices: list[int]) -> tuple[list[SignedTree], list[Head]]:
        """Sign the heads of a round's creates (always) and of its commits with records
        when the policy says so (blocking, before the statement)."""
        signer = self.signer
        due: list[tuple[str, int, str, int]] = []
        heads: list[Head] = []
        for index in indices:
            kind, payload = writes[index]
            batch: Batch = payload[0] if kind == "create" else payload
            if not batch.records:
                continue
            sid, last = batch.session_id, batch.records[-1]
            epoch = batch.epoch or 0
            heads.append((sid, last[0], last[6], epoch, len(batch.records)))
            if kind == "create":
                due.append((sid, last[0], last[6], 0))
                continue
            commits, entries = self.counts.get(sid, (0, 0))
            commits, entries = commits + 1, entries + len(batch.records)
            self.counts[sid] = (commits, entries)
            if signer.due(sid, commits, entries):
                due.append((sid, last[0], last[6], epoch))
                self.counts.pop(sid, None)
        return signer.sign(due), heads

    def committed(
        self,
        sessions: Collection[bytes],
        trees: list[SignedTree],
        heads: list[Head],
        made: list[Checkpoint],
    ) -> None:
        """A statement committed these sessions (id bytes): keep what it signed for them."""
        self.trees.extend(trees)
        self.heads.extend(head for head in heads if head[0].encode() in sessions)
        self.accepted.update(
            (c.session_id, c.seq, c.head_hash) for c in made if c.session_id.encode() in sessions
        )
