"""``Session``: an append-only trajectory + versioned state + artifacts, run as an actor.

One task (the actor) owns the session's :class:`~kaizen_async._state.SessionCore`; every
write is a message to it, applied strictly in arrival order and acknowledged once applied.
Reads are served from the applied state directly: on one event loop that is already
serialized, and it sees every acknowledged write. CPU-heavy work (verification, long
replays) and all disk I/O run in worker threads on snapshots, never on the event loop.

A session backed by a store (opened by a :class:`~kaizen_async.SessionHub`) is the
subclass in :mod:`kaizen_async._durable`; the hooks it overrides are marked below.
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from ._actor import Actor, Committer, create_actor
from ._actor import exit_task_group as _exit_task_group
from ._anchors import AnchorPublisher, AnchorSink, publisher_for
from ._canonical import check_text
from ._checkpoint import Checkpoint, default_writer_id, sign_heads
from ._exceptions import KaizenValidationError, SessionClosedError, SessionReadOnlyError
from ._keys import Keyring, Signer, check_signer
from ._persistence import SavePlan, plan_save, read_session, write_session
from ._state import (
    DEFAULT_MAX_ARTIFACT_SIZE,
    SCHEMA_VERSION,
    SET,
    Op,
    SessionCore,
    validate_artifact_name,
    validate_key,
)
from ._steps import find_open_steps, interrupted_records
from ._trajectory import AGENT_ID, ENTRY_TYPE, HASH, SEQ, EntryType, Record, TrajectoryEntry
from ._verification import (
    AnchorSource,
    VerifyOptions,
    VerifyReport,
    check_checkpoints,
    verify_options,
)

__all__ = ["Session", "SessionStatistics", "StepWrites", "agent_view"]

_OFFLOAD_ABOVE = 5_000  # replays longer than this many entries run in a worker thread
_PAGE = 4096  # entries a subscriber takes at a time


@dataclass(frozen=True)
class SessionStatistics:
    """What the session actor has done: queued requests, batches drained, writes applied."""

    queued: int
    batches: int
    applied: int
    trajectory_length: int
    state_version: int


class Session:
    """A session: use as ``async with Session() as session:``.

    Args:
        session_id: defaults to a new UUID4.
        max_artifact_size: largest artifact accepted, in bytes (inclusive).
        workspace_path: an optional directory the session's agents work in.
        signer: signs a checkpoint of the chain's head at every :meth:`save` (see
            :mod:`kaizen_async.signing`); None (the default) saves files as before.
        anchor: receives each checkpoint after its save, off the write path (an
            :class:`~kaizen_async.signing.AnchorSink` such as ``JsonlAnchor``, or an
            ``AnchorPublisher`` to set its rate).
    """

    #: who ``set``/``delete``/``write_artifact``/``delete_artifact`` are recorded as: the
    #: session itself is ``system``; the view a capability is handed is its agent
    _writer: str = "system"
    #: woken after the actor's next batch (created only while a subscriber waits)
    _settled_event: anyio.Event | None = None

    def __init__(
        self,
        session_id: str | None = None,
        *,
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        workspace_path: str | os.PathLike[str] | None = None,
        signer: Signer | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
    ) -> None:
        self._setup(
            SessionCore(
                session_id,
                max_artifact_size=max_artifact_size,
                workspace_path=None if workspace_path is None else os.fspath(workspace_path),
            ),
            signer=signer,
            anchor=anchor,
        )

    def _setup(
        self,
        core: SessionCore,
        load_path: str | None = None,
        read_only: bool = False,
        *,
        signer: Signer | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
        load_checks: dict[str, Any] | None = None,
    ) -> None:
        self._core = core
        self._load_path = load_path
        self._read_only = read_only
        self._actor: Actor | None = None
        self._task_group: TaskGroup | None = None
        self._entered = False
        self._signer = None if signer is None else check_signer(signer)
        self._writer_id = default_writer_id() if signer is not None else ""
        self._anchor = publisher_for(anchor)
        self._load_checks = load_checks

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        signer: Signer | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
        keyring: Keyring | str | os.PathLike[str] | None = None,
        require_signed: bool = False,
        max_unsigned_tail: int | None = None,
        anchors: AnchorSource | None = None,
        all_checkpoints: bool = False,
    ) -> Session:
        """A session that loads ``path`` when entered: ``async with Session.load(p) as s``.

        Entering reads the file in one read transaction, verifies the hash chain, rebuilds
        state by replay, checks it against the stored state and every name, key and agent
        id in it, and records ``session_loaded {path}``. With ``read_only=True`` the file is
        opened read-only, nothing changes on disk (not even killed saves' leftovers are
        removed), nothing is recorded and every write (``set``, ``delete``, ``append``,
        ``append_nowait``, ``transaction``, artifacts, ``save``, dispatching onto it) raises
        :class:`SessionReadOnlyError`; reads, ``verify`` and ``fork`` (a new, writable
        session) work. Raises :class:`PersistFileNotFoundError` (also a
        ``FileNotFoundError``), :class:`PersistError` (a directory, unreadable, locked),
        :class:`SessionCorruptedError` or :class:`SchemaMismatchError`.

        ``keyring``, ``require_signed``, ``max_unsigned_tail``, ``anchors`` and
        ``all_checkpoints`` check the file's signed checkpoints as :meth:`verify` does,
        before anything is recorded (the ``session_loaded`` entry is not part of what is
        checked); ``signer`` and ``anchor`` are as for :class:`Session`.
        """
        session = cls.__new__(cls)
        checks = {
            "keyring": keyring,
            "require_signed": require_signed,
            "max_unsigned_tail": max_unsigned_tail,
            "anchors": anchors,
            "all_checkpoints": all_checkpoints,
        }
        session._setup(
            SessionCore(created=False),
            _check_path(path),
            bool(read_only),
            signer=signer,
            anchor=anchor,
            load_checks=checks,
        )
        return session

    @classmethod
    def _from_core(cls, core: SessionCore) -> Session:
        session = cls.__new__(cls)
        session._setup(core)
        return session

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise SessionClosedError("a Session can be entered only once")
        self._entered = True
        if self._load_path is not None:
            path = self._load_path
            # read_only: the file is opened read-only and dead savers' temporary files are
            # left alone (nothing on disk changes), as for the `kaizen` command
            core, version = await anyio.to_thread.run_sync(
                _read_checked, path, self._read_only, self._load_checks
            )
            self._core = core
            # recorded before the actor starts (nothing else can write yet), so nothing is
            # awaited between entering the task group and returning
            if not self._read_only:
                core.append("system", EntryType.SESSION_LOADED, self._loaded_entry(path, version))
                # steps the file holds as started but never completed: closed as interrupted
                for kind, content in interrupted_records(find_open_steps(core.records)):
                    core.apply_append("system", kind, content)
        actor = create_actor(f"session {self._core.session_id}", self._committer())
        if self._anchor is None:  # the actor alone: its own task, left by actor.join
            actor.spawn()
            self._actor = actor
            return self
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(actor.run, name=actor.name)
        task_group.start_soon(self._anchor.run, name=f"anchor of {actor.name}")
        self._actor, self._task_group = actor, task_group
        return self

    def _loaded_entry(self, path: str, version: int) -> dict[str, Any]:
        content: dict[str, Any] = {"path": path}
        if version != SCHEMA_VERSION:
            # artifacts of an original-Kaizen file are known only from its table: record
            # the map, so replaying this trajectory later derives the same artifacts
            content["imported_from_schema"] = version
            content["artifacts"] = dict(self._core.artifacts)
        return content

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._actor is not None
        self._actor.close()
        if self._task_group is None:
            # as leaving a task group: drained on the way out, cancelled with the caller
            await self._actor.join(isinstance(exc, anyio.get_cancelled_exc_class()))
            return None
        if self._anchor is not None:
            self._anchor.close()
        return await _exit_task_group(self._task_group, exc_type, exc, tb)

    def _committer(self) -> Committer | None:
        """What makes the actor durable (overridden by a store-backed session)."""
        return None

    def _start(self, task_group: TaskGroup) -> None:
        """Start the actor in someone else's task group (a hub's) instead of one of its own:
        no task group or cancel scope per session, so N sessions start and stop in O(N)."""
        if self._entered:
            raise SessionClosedError("a Session can be entered only once")
        self._entered = True
        actor = create_actor(f"session {self._core.session_id}", self._committer())
        self._actor = actor
        task_group.start_soon(actor.run, name=actor.name)

    async def _stop(self) -> None:
        """Stop taking requests and return once the actor has applied (and, with a store,
        committed) everything queued: the counterpart of :meth:`_start`."""
        actor = self._actor
        if actor is None:
            return
        actor.close()  # at once: from here on requests raise SessionClosedError
        if not actor.closed:  # the loop has not ended yet: wait for it (an event made
            if actor.finished is None:  # only now, so an idle session holds none)
                actor.finished = anyio.Event()
            await actor.finished.wait()

    async def _settled(self) -> None:
        """Wait until every write queued so far is applied (reads see all earlier writes).

        Writes queued without waiting (``append_nowait``, ``transaction(wait=False)``) are
        applied in order before anything queued after them, and a read waits for them
        too, so every caller reads its own writes. With nothing queued this costs nothing.
        """
        actor = self._running()
        if actor.queue:
            await actor.call(_noop)

    def _running(self) -> Actor:
        """The running actor (else :class:`SessionClosedError`); an agent's view first
        posts the writes it buffered, so whatever follows is applied after them."""
        actor = self._actor
        if actor is not None and not (actor.closing or actor.closed):
            return actor
        return self._actor_or_raise()

    def _actor_or_raise(self) -> Actor:
        actor = self._actor
        if actor is not None and (actor.closing or actor.closed) and actor.close_error:
            raise actor.close_error()  # e.g. fenced: another hub owns the session now
        if actor is None or actor.closing or actor.closed:
            state = "not started" if actor is None else f"closed{actor.close_reason}"
            raise SessionClosedError(
                f"session {self._core.session_id} is {state}; use it inside `async with`"
            )
        return actor

    def _writable(self) -> Actor:
        """The running actor, for a write: refused on a session loaded read-only."""
        actor = self._running()
        if self._read_only:
            self._refuse_write()
        return actor

    def _check_writable(self) -> Actor:
        """:meth:`_writable` without posting an agent view's collected writes: for a write
        that is itself collected (or merely checked), so the collection goes on."""
        actor = self._actor
        if actor is not None and not (actor.closing or actor.closed or self._read_only):
            return actor
        actor = self._actor_or_raise()
        if self._read_only:
            self._refuse_write()
        return actor

    def _refuse_write(self) -> None:
        raise SessionReadOnlyError(
            f"session {self._core.session_id} was loaded read-only; writes are refused"
        )

    def _acknowledge(self, slot: list[Any], value: Any) -> bool:
        """Have the session answer ``slot`` with ``value`` once everything queued so far is
        acknowledged, or say False: answer it now. A session in memory answers now (what
        is queued is applied before any later read); a store-backed one answers after the
        commit (overridden), so a dispatched step is acknowledged once it is durable."""
        return False

    def _post(self, fn: Callable[..., Any], args: tuple[Any, ...], keys: Sequence[str]) -> None:
        """Queue ``fn(*args)``, a checked write that cannot fail, without waiting for it
        (FIFO with every later request); ``keys``: the state keys it sets or deletes, so
        that a read of one of them queued after it waits for it (a read of any other key
        waits for nothing)."""
        actor = self._actor
        if actor is None or actor.closing or actor.closed or self._read_only:
            actor = self._writable()  # raises (the checks, on the hot path, in one line)
        if keys:
            actor.state_keys.update(keys)
        actor.post(fn, *args)

    def _post_ops(self, ops: list[Op], keys: Sequence[str]) -> None:
        """Queue checked ``apply_*`` calls (none of which can fail) as one message."""
        self._post(self._core.apply_step, (ops,), keys)

    @property
    def read_only(self) -> bool:
        """True for a session loaded with ``read_only=True``."""
        return self._read_only

    # -- identity ------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._core.session_id

    @property
    def max_artifact_size(self) -> int:
        return self._core.max_artifact_size

    @property
    def workspace_path(self) -> str | None:
        return self._core.workspace_path

    def workspace_file(self, *parts: str) -> Path | None:
        """``workspace_path`` joined with ``parts``, or None without a workspace.

        The result never leaves the workspace: a part that is not a str (of valid UTF-8
        text), is absolute, holds NUL or a ``..`` segment raises
        :class:`KaizenValidationError`. The check is
        lexical (no file system access): symlinks inside the workspace are followed by
        whoever opens the path, as the workspace's owner set them up.
        """
        for part in parts:
            if not isinstance(part, str):
                raise KaizenValidationError(
                    f"workspace path parts must be str, got {type(part).__name__}"
                )
            check_text(part, "workspace path part")
            if "\x00" in part:
                raise KaizenValidationError(f"workspace path part {part!r} contains NUL")
            if os.path.isabs(part) or part.startswith(("/", "\\")) or part[1:2] == ":":
                raise KaizenValidationError(f"workspace path part {part!r} is absolute")
            if ".." in part.replace("\\", "/").split("/"):
                raise KaizenValidationError(
                    f"workspace path part {part!r} would leave the workspace ('..')"
                )
        base = self._core.workspace_path
        return None if base is None else Path(base, *parts)

    def statistics(self) -> SessionStatistics:
        actor = self._actor
        return SessionStatistics(
            queued=len(actor.queue) if actor else 0,
            batches=actor.batches if actor else 0,
            applied=actor.applied if actor else 0,
            trajectory_length=self._core.length,
            state_version=self._core.version,
        )

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self._core.session_id!r}, "
            f"entries={self._core.length}, state_version={self._core.version})"
        )

    # -- state -----------------------------------------------------------------------------

    # Every write is validated (and its value encoded, so copied) here, in the caller, and
    # only a valid write is queued: the actor applies it and cannot fail (a delete checks
    # there that its key or artifact still exists).

    async def set(self, key: str, value: Any) -> int:
        """Set ``key`` to a copy of the JSON ``value``; returns the new state version."""
        return await self._request(*self._set_write(key, value))  # type: ignore[no-any-return]

    async def delete(self, key: str) -> int:
        """Delete ``key`` (``StateKeyNotFoundError`` if absent); returns the new version."""
        return await self._request(*self._delete_write(key))  # type: ignore[no-any-return]

    # Each awaited write is checked in the caller into ``(fn, *args)`` for the actor (raising
    # there, queueing nothing, when it is refused); the blocking facade posts the same
    # requests with a thread waiting for the answer.

    @staticmethod
    def _request(actor: Actor, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return actor.call(fn, *args)

    def _set_write(self, key: str, value: Any) -> tuple[Any, ...]:
        actor, core = self._writable(), self._core
        return (actor, core.apply_set, *core.check_set(key, value), self._writer)

    def _delete_write(self, key: str) -> tuple[Any, ...]:
        return (self._writable(), self._core.delete, validate_key(key), self._writer)

    def _append_write(
        self, agent_id: str, entry_type: EntryType | str, content: Any
    ) -> tuple[Any, ...]:
        actor, core = self._writable(), self._core
        return (actor, core.apply_append, *core.check_append(agent_id, entry_type, content))

    async def get(self, key: str, default: Any = None) -> Any:
        """A copy of the value at ``key``, or ``default``."""
        if type(key) is not str or not key or key.isspace() or not key.isascii():
            key = validate_key(key)
        actor = self._actor
        # queued appends (a step's entries) change no state, and a posted write of another
        # key does not change this one: only a queued posted write of ``key`` is waited for
        # (an awaited write is applied before its caller goes on)
        if (
            actor is None
            or (actor.queue and key in actor.state_keys)
            or actor.closing
            or actor.closed
        ):
            await self._settled()
        return self._core.get(key, default)

    async def get_state_version(self) -> int:
        await self._settled()
        return self._core.version

    async def get_all_state(self) -> dict[str, Any]:
        await self._settled()
        return self._core.all_state()

    async def state_at(self, version: int) -> dict[str, Any]:
        """The state right after ``version`` (0 is empty), rebuilt by replay."""
        await self._settled()
        core = self._core
        if len(core.records) > _OFFLOAD_ABOVE:
            return await anyio.to_thread.run_sync(core.snapshot_copy().state_at, version)
        return core.state_at(version)

    # -- trajectory ----------------------------------------------------------------------

    async def append(self, agent_id: str, entry_type: EntryType | str, content: Any) -> int:
        """Append an entry; returns its seq."""
        return await self._request(*self._append_write(agent_id, entry_type, content))  # type: ignore[no-any-return]

    def append_nowait(self, agent_id: str, entry_type: EntryType | str, content: Any) -> None:
        """Validate an append now and queue it without waiting for it to be applied.

        It is applied before any write queued after it (FIFO), so an awaited write that
        follows acknowledges both. Invalid input raises here, and nothing is queued.
        """
        self._check_writable()
        core = self._core
        self._post(core.apply_append, core.check_append(agent_id, entry_type, content), ())

    def transaction(self, *, wait: bool = True) -> Transaction:
        """Collect writes and apply them as one message, all or none::

            async with session.transaction() as tx:
                tx.append("agent", EntryType.AGENT_INVOKED, {...})
                tx.set("text", "olleh")
            tx.results  # [seq, version]

        Each write is validated completely when it is added and raises there if it is
        invalid. Leaving the block with an exception applies nothing; so does leaving it
        normally after one of its writes was refused (the caller caught the error): the
        transaction is then spoiled and raises :class:`KaizenValidationError` at the end of
        the block instead of applying the rest. With ``wait=False`` the batch is queued
        without waiting (like :meth:`append_nowait`); it may then hold only writes that
        cannot fail once validated (append, set, write_artifact), and ``results`` stays None.
        """
        self._check_writable()
        return Transaction(self, wait)

    async def get_trajectory(
        self,
        limit: int | None = None,
        *,
        entry_types: Iterable[EntryType | str] | None = None,
        agent_id: str | None = None,
        since_seq: int | None = None,
    ) -> list[TrajectoryEntry]:
        """Entries oldest first. ``limit``: None all, <= 0 none, N the last N (after filters)."""
        await self._settled()
        if limit is not None and limit <= 0:
            return []
        records: Sequence[Record] = self._core.records
        if since_seq is not None:
            records = records[max(since_seq, 0) :]
        if entry_types is not None:
            kinds = {_entry_type(k) for k in entry_types}
            records = [r for r in records if r[ENTRY_TYPE] in kinds]
        if agent_id is not None:
            records = [r for r in records if r[AGENT_ID] == agent_id]
        if limit is not None:
            records = records[-limit:]
        return [TrajectoryEntry.from_record(r) for r in records]

    async def get_trajectory_length(self) -> int:
        await self._settled()
        return len(self._core.records)

    async def flush(self) -> None:
        """Return once every write queued before this call, posted ones included, is applied
        (and, for a store-backed session, durable: it then raises the
        :class:`PersistError` of a posted write whose commit failed since the last flush)."""
        await self._settled()

    def subscribe(
        self,
        *,
        since_seq: int = 0,
        entry_types: Iterable[EntryType | str] | None = None,
    ) -> AsyncGenerator[TrajectoryEntry, None]:
        """Every committed entry with ``seq > since_seq``, in order: the history first,
        then live entries as they are committed, without gaps or duplicates.

        Committed means durable for a store-backed session, applied for an in-memory one.
        ``entry_types`` keeps only those types. The subscriber pulls a page at a time and
        then waits to be told that more is committed, so a slow one holds no backlog. It
        runs until cancelled (or the loop is left); when the session closes it yields what
        was committed and ends.
        """
        if not isinstance(since_seq, int) or isinstance(since_seq, bool):
            raise KaizenValidationError(f"since_seq must be an int, got {since_seq!r}")
        kinds = None if entry_types is None else frozenset(_entry_type(k) for k in entry_types)
        self._running()
        return self._follow(max(since_seq, 0), kinds)

    async def _follow(
        self, pos: int, kinds: frozenset[str] | None
    ) -> AsyncGenerator[TrajectoryEntry, None]:
        while True:
            head = self._committed_seq()
            if pos < head:
                records, pos = await self._committed_page(pos, head, kinds)
                for record in records:
                    yield TrajectoryEntry.from_record(record)
                continue
            actor = self._actor
            if actor is None or actor.closed:
                return
            event = self._settled_event
            if event is None:
                event = self._settled_event = anyio.Event()
                actor.on_settled = self._wake_subscribers
            await event.wait()

    def _wake_subscribers(self) -> None:
        event = self._settled_event
        self._settled_event = None
        if self._actor is not None:
            self._actor.on_settled = None
        if event is not None:
            event.set()

    def _committed_seq(self) -> int:
        """The newest entry a subscriber may see (overridden: durable, not just applied)."""
        return len(self._core.records)

    async def _committed_page(
        self, pos: int, head: int, kinds: frozenset[str] | None
    ) -> tuple[list[Record], int]:
        """Committed records after ``pos`` (up to a page, filtered) and where they end."""
        end = min(head, pos + _PAGE)
        records = self._core.records[pos:end]
        if kinds is not None:
            records = [r for r in records if r[ENTRY_TYPE] in kinds]
        return records, end

    async def verify(
        self,
        *,
        keyring: Keyring | str | os.PathLike[str] | None = None,
        require_signed: bool = False,
        max_unsigned_tail: int | None = None,
        anchors: AnchorSource | None = None,
        all_checkpoints: bool = False,
    ) -> VerifyReport:
        """Recompute the hash chain and the derived state, then check the signed
        checkpoints; returns a :class:`~kaizen_async.signing.VerifyReport`.

        The report is an ``int``, the number of entries checked (what ``verify()``
        returned before), with the rest as attributes: last signed seq, unsigned tail,
        key ids, writers, epochs, problems. ``keyring`` (a
        :class:`~kaizen_async.signing.Keyring` or its file) is what signatures are
        trusted by; by default only the latest checkpoint's signature is checked (the
        chain carries it back), ``all_checkpoints=True`` checks each. ``anchors`` (a
        JSON-lines file or checkpoints) checks for rollback and truncation.
        ``require_signed``/``max_unsigned_tail`` fail a session that is not signed
        (enough). Raises :class:`SessionCorruptedError` naming the first bad seq, with
        code ``session_corrupted``, ``checkpoint_invalid``, ``checkpoint_head_mismatch``,
        ``unknown_key``, ``unsigned_tail`` or ``rollback_detected``.
        """
        await self._settled()
        core = self._core.snapshot_copy()
        options = {
            "keyring": keyring,
            "require_signed": require_signed,
            "max_unsigned_tail": max_unsigned_tail,
            "anchors": anchors,
            "all_checkpoints": all_checkpoints,
        }
        return await anyio.to_thread.run_sync(_verify_core, core, options)

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The signed checkpoints kept beside this session's chain, oldest first."""
        return list(self._core.checkpoints)

    # -- artifacts -----------------------------------------------------------------------

    async def write_artifact(self, name: str, data: bytes) -> int:
        """Store ``data`` under ``name`` (content-addressed); returns the entry's seq."""
        actor, core = self._writable(), self._core
        checked = core.check_write_artifact(name, data)
        return await actor.call(core.apply_write_artifact, *checked, self._writer)  # type: ignore[no-any-return]

    async def read_artifact(self, name: str) -> bytes:
        await self._settled()
        return self._core.read_artifact(name)

    async def list_artifacts(self) -> list[str]:
        await self._settled()
        return sorted(self._core.artifacts)

    async def get_artifact_size(self, name: str) -> int:
        await self._settled()
        return self._core.artifact_size(name)

    async def delete_artifact(self, name: str) -> int:
        actor, name = self._writable(), validate_artifact_name(name)
        return await actor.call(self._core.delete_artifact, name, self._writer)  # type: ignore[no-any-return]

    # -- snapshots and forks -------------------------------------------------------------

    async def snapshot_for_agent(self, agent_id: str, depth: int = 10) -> dict[str, Any]:
        """A deep copy of what an agent needs to see (state and the last ``depth`` entries)."""
        await self._settled()
        return self._core.snapshot(depth)

    async def fork(self, at_seq: int | None = None, session_id: str | None = None) -> Session:
        """A new, not yet started session: this trajectory up to ``at_seq`` + ``session_forked``."""
        await self._settled()
        core = self._core
        if len(core.records) > _OFFLOAD_ABOVE:  # the prefix is replayed: not on the loop
            child = await anyio.to_thread.run_sync(core.snapshot_copy().fork, at_seq, session_id)
        else:
            child = core.fork(at_seq, session_id)
        return Session._from_core(child)

    # -- files -----------------------------------------------------------------------------

    async def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Save to a single-file SQLite database; returns the ``session_saved`` seq.

        No file: it is written whole. A file holding this session's history up to some
        entry (saved or loaded earlier, not moved since): only what is new is appended.
        Any other file (another session, a diverged or longer history, not a ``.kaizen``
        file) raises :class:`PersistError` with code ``persist_conflict`` and is left
        byte for byte as it was; ``overwrite=True`` replaces it on purpose. Atomic: on
        failure the previous file is intact, this session is unchanged and
        :class:`PersistError` is raised. A read-only session refuses to save (a save
        records ``session_saved``); copy its file to export it.
        """
        return await self._writable().call_async(  # type: ignore[no-any-return]
            self._save, _check_path(path), bool(overwrite)
        )

    async def _save(self, path: str, overwrite: bool) -> int:
        core = self._core
        target = os.path.abspath(path)  # noqa: ASYNC240 - no I/O beyond getcwd
        # the file gets its own session_saved entry; the session only once the file is
        # written, so a failed save leaves no trace and readers never see a tentative entry
        saved = core.next_record("system", EntryType.SESSION_SAVED, {"path": path})
        whole = await self._full_core()
        plan = plan_save(whole, target, saved, overwrite=overwrite)
        plan.checkpoints = await self._file_checkpoints(whole)
        signed = await anyio.to_thread.run_sync(self._sign_and_write, plan, saved)
        core.add_record(saved)
        if signed is not None:
            core.checkpoints.append(signed)
            if self._anchor is not None:
                self._anchor.offer([signed])
        return saved[SEQ]

    async def _full_core(self) -> SessionCore:
        """The whole session in memory, as a save writes it (overridden: read from a store)."""
        return self._core

    async def _file_checkpoints(self, whole: SessionCore) -> list[Checkpoint]:
        """The checkpoints a save writes beside the entries (overridden: from a store)."""
        return list(whole.checkpoints)

    def _sign_and_write(self, plan: SavePlan, saved: Record) -> Checkpoint | None:
        """Sign the saved head (with a signer), then write the file with the checkpoint in
        the same transaction as the entries it covers (runs in a worker thread)."""
        signer, signed = self._signer, None
        if signer is not None:
            (signed,) = sign_heads(
                signer.sign,
                signer.key_id,
                [(self._core.session_id, saved[SEQ], saved[HASH], 0)],
                self._writer_id,
            )
            plan.checkpoints.append(signed)
        write_session(plan)
        return signed


def _read_checked(
    path: str, read_only: bool, checks: dict[str, Any] | None
) -> tuple[SessionCore, int]:
    """Load ``path`` and check its checkpoints as asked (runs in a worker thread)."""
    options = VerifyOptions() if checks is None else verify_options(**checks)
    core, version = read_session(path, read_only=read_only)
    if options.active or core.checkpoints:  # stored heads must match the chain, always
        _check_core(core, options)
    return core, version


def _check_core(core: SessionCore, options: VerifyOptions) -> VerifyReport:
    records = core.records
    return check_checkpoints(
        core.session_id,
        len(records),
        lambda seq: records[seq - 1][HASH],
        core.checkpoints,
        options,
    )


def _verify_core(core: SessionCore, checks: dict[str, Any]) -> VerifyReport:
    """verify(): the options, the chain and state, then the checkpoints (worker thread)."""
    options = verify_options(**checks)
    core.verify()
    return _check_core(core, options)


def _entry_type(kind: EntryType | str) -> str:
    try:
        return EntryType(kind).value
    except ValueError:
        raise KaizenValidationError(f"unknown entry type {kind!r}") from None


def _noop() -> None:
    """What a read queues behind earlier writes to wait for them."""


class Transaction:
    """Writes validated one by one, applied together by one message to the session actor.

    A write refused when it is added spoils the transaction: nothing of it is applied,
    even if the caller caught the error and left the block normally (see
    :meth:`Session.transaction`).
    """

    __slots__ = (
        "_core",
        "_deletes",
        "_keys",
        "_names",
        "_ops",
        "_refused",
        "_session",
        "_wait",
        "_writer",
        "results",
    )

    def __init__(self, session: Session, wait: bool = True) -> None:
        self._session = session
        self._core = session._core
        self._writer = session._writer
        self._wait = wait
        #: the checked writes: the core's ``apply_*`` calls, in order
        self._ops: list[Op] = []
        #: ``(kind, name)`` of each key or artifact write, checked again when the batch is
        #: applied if it deletes one (a delete can still fail then); None: none so far
        self._names: list[tuple[str, str]] | None = None
        self._keys: list[str] = []  # the keys it sets or deletes
        self._deletes = False  # whether it deletes a key or an artifact
        self._refused: Exception | None = None
        self.results: list[int] | None = None

    def _fallible(self, what: str) -> None:
        if not self._wait:
            raise KaizenValidationError(
                f"{what} can fail when applied: use transaction(wait=True) for it"
            )

    def _named(self, kind: str, name: str) -> None:
        names = self._names
        if names is None:
            names = self._names = []
        names.append((kind, name))

    def set(self, key: str, value: Any) -> None:
        try:
            key, new = self._core.check_set(key, value)
        except Exception as exc:
            self._refused = self._refused or exc
            raise
        self._ops.append((SET, (key, new, self._writer)))  # apply_set, inlined
        self._keys.append(key)
        if self._wait:
            self._named("set", key)

    def delete(self, key: str) -> None:
        try:
            self._fallible("delete")
            validate_key(key)
        except Exception as exc:
            self._refused = self._refused or exc
            raise
        self._ops.append((self._core.apply_delete, (key, self._writer)))
        self._named("delete", key)
        self._keys.append(key)
        self._deletes = True

    def append(self, agent_id: str, entry_type: EntryType | str, content: Any) -> None:
        try:
            op = self._core.append_op(agent_id, entry_type, content)
        except Exception as exc:
            self._refused = self._refused or exc
            raise
        self._ops.append(op)

    def write_artifact(self, name: str, data: bytes) -> None:
        try:
            op = self._core.check_write_artifact(name, data)
        except Exception as exc:
            self._refused = self._refused or exc
            raise
        self._ops.append((self._core.apply_write_artifact, (*op, self._writer)))
        self._named("write_artifact", name)

    def delete_artifact(self, name: str) -> None:
        try:
            self._fallible("delete_artifact")
            validate_artifact_name(name)
        except Exception as exc:
            self._refused = self._refused or exc
            raise
        self._ops.append((self._core.apply_delete_artifact, (name, self._writer)))
        self._named("delete_artifact", name)
        self._deletes = True

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._refused is not None:
            raise KaizenValidationError(
                f"transaction not applied: one of its writes was refused ({self._refused})",
                details={"refused": str(self._refused)},
            ) from self._refused
        if exc_type is None and self._ops:
            if self._wait:
                actor = self._session._running()
                names = self._names if self._deletes else None
                self.results = await actor.call(self._core.apply_batch, self._ops, names)
            else:  # none of its writes can fail: queued as the writes of one step are
                self._session._post_ops(self._ops, self._keys)


class StepWrites:
    """The writes of one dispatched step, posted to the session as one message.

    The agent's runner starts ``ops`` with the step's ``plan_step_started``; the writes
    the agent posts meanwhile (``append_nowait``, ``transaction(wait=False)``) are added
    to it instead of being queued one by one; the runner ends it with
    ``plan_step_completed`` and posts the whole list: one wake of the session actor per
    step, one timestamp for its entries. Anything the agent awaits on the session, and a
    state read while a state write is buffered, posts the list first, so the order of
    entries and read-your-writes are as if each write had been queued at once. ``ops`` is
    None once the step's entries are posted: later writes are queued directly.
    """

    __slots__ = ("keys", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] | None = None
        self.keys: Sequence[str] = ()  # the state keys ``ops`` sets or deletes

    def add(self, ops: list[Op], keys: Sequence[str]) -> None:
        """Collect ``ops``, posted writes of the step's agent."""
        assert self.ops is not None
        self.ops += ops
        if keys:
            self.keys = [*self.keys, *keys]

    def flush(self, session: Session) -> None:
        """Post the writes collected so far as one message (nothing is queued between
        them, so their order is kept); collecting goes on."""
        ops, keys = self.ops, self.keys
        if ops:
            self.ops, self.keys = [], ()
            Session._post(session, session._core.apply_step, (ops,), keys)


class _AgentSession(Session):
    """The session as an agent's capability sees it: the same session (it shares the
    session's attributes, so the same actor, core and files; reads are identical), with its
    state and artifact writes recorded under the agent's id instead of ``system``, and its
    posted writes collected into its step's :class:`StepWrites` when a dispatcher runs it."""

    __slots__ = ("_writer", "_writes")  # its own attributes; the rest is the session's
    _writes: StepWrites | None

    def _running(self) -> Actor:
        writes = self._writes
        if writes is not None and writes.ops:
            writes.flush(self)
        return self._actor_or_raise()

    def _post(self, fn: Callable[..., Any], args: tuple[Any, ...], keys: Sequence[str]) -> None:
        writes = self._writes
        if writes is None or writes.ops is None:
            Session._post(self, fn, args, keys)
            return
        self._check_writable()
        writes.add([(fn, args)], keys)

    def _post_ops(self, ops: list[Op], keys: Sequence[str]) -> None:
        writes = self._writes
        if writes is None or writes.ops is None:
            Session._post_ops(self, ops, keys)
            return
        self._check_writable()
        writes.add(ops, keys)

    def _acknowledge(self, slot: list[Any], value: Any) -> bool:
        writes = self._writes
        if writes is not None and writes.ops is not None:
            return False  # a nested step: it is in this step's writes, not yet queued
        return super()._acknowledge(slot, value)

    def get(self, key: str, default: Any = None) -> Coroutine[Any, Any, Any]:
        # the session's own read, awaited by the caller (no coroutine of the view's own)
        writes = self._writes
        if writes is not None and key in writes.keys:  # read-your-writes: apply them first
            writes.flush(self)
        return super().get(key, default)


#: the view class of each kind of session (a store-backed one reads through its store)
_VIEW_CLASSES: dict[type[Session], type[_AgentSession]] = {}


def _view_class(cls: type[Session]) -> type[_AgentSession]:
    """The agent view class for sessions of class ``cls``: ``_AgentSession`` for a plain
    ``Session``, else a subclass of both, so a view of a store-backed session keeps that
    session's own reads and writes (committed data, blobs and history from the store)."""
    if issubclass(cls, _AgentSession):
        return cls
    view_class = _VIEW_CLASSES.get(cls)
    if view_class is None:
        if cls is Session:
            view_class = _AgentSession
        else:
            view_class = type(f"_Agent{cls.__name__}", (_AgentSession, cls), {"__slots__": ()})
        _VIEW_CLASSES[cls] = view_class
    return view_class


def agent_view(session: Session, agent_id: str, writes: StepWrites | None = None) -> Session:
    """``session`` as seen by agent ``agent_id`` (validated by the caller): cheap enough
    (~0.2 us) to make one per capability call. The view shares the session's attribute
    dict, so whatever one of them sets (the actor once started, say) the other sees, and
    has the methods of the session's own class. ``writes``: the step its posted writes
    are collected into (see :class:`StepWrites`)."""
    view = object.__new__(_view_class(type(session)))
    view.__dict__ = session.__dict__
    view._writer = agent_id
    view._writes = writes
    return view


def _check_path(path: object) -> str:
    """A file path to save or load: a non-empty str (or PathLike of one) of valid UTF-8
    text without NUL (a lone surrogate would fail later as a raw ``UnicodeEncodeError``)."""
    if not isinstance(path, str | os.PathLike):
        raise KaizenValidationError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise KaizenValidationError(f"path must be a non-empty str, got {text!r}")
    if "\x00" in text:
        raise KaizenValidationError(f"path {text!r} contains a NUL byte")
    return check_text(text, "path")
