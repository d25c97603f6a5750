"""``SessionHub``: many store-backed sessions in one process, opened by id.

The hub owns one task group; every session actor it opens runs there (started directly,
not inside a task group or cancel scope of its own), so opening and closing N sessions
costs O(N). A session is shared: concurrent opens of one id get one actor, and opens
that arrive while it is being read from the store wait for that one load.

Each session is in one of three states: *loading* (read from the store, its interrupted
steps closed), *open* (leased, or warm and idle) and *closing* (its actor stopping after
its last writes are committed: evicted or deleted). An open that finds a session loading
or closing waits for it to finish, then takes a lease or loads it again, so eviction
never races an open.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from ._actor import exit_task_group
from ._canonical import encode
from ._durable import DurableSession
from ._exceptions import (
    KaizenValidationError,
    PersistError,
    SessionBusyError,
    SessionClosedError,
    SessionExistsError,
    SessionFencedError,
    SessionInUseError,
    SessionNotFoundError,
)
from ._keys import Keyring
from ._logging import get_logger
from ._session import Session, _check_path, _entry_type, _read_checked
from ._state import DEFAULT_MAX_ARTIFACT_SIZE, SCHEMA_VERSION, SessionCore
from ._steps import find_open_steps
from ._storage import Batch, SessionInfo, SessionStore
from ._stored import DEFAULT_TAIL, load_core
from ._trajectory import SEQ, EntryType, Record, TrajectoryEntry
from ._verification import AnchorSource

__all__ = ["HubStatistics", "SessionHub", "SessionLease"]

_log = get_logger("kaizen_async.hub")
#: entries read at a time when following a session in the store
_FOLLOW_PAGE = 4096
#: the longest a store subscription waits before reading the head again
_FOLLOW_WAIT = 30.0
_LOADING, _OPEN, _CLOSING = 0, 1, 2


@dataclass(frozen=True)
class HubStatistics:
    """What a hub holds and has done.

    ``open``: sessions with a running actor (leased or warm); ``leased``: those with at
    least one lease; ``evicted``: sessions closed for idleness or room so far; ``loads``:
    sessions read from the store so far; ``queued_writes``: requests waiting in open
    sessions' actors; ``commits``, ``batches``, ``mean_batch_size``: the store's
    transactions, the session batches they held and their ratio (group commit).
    """

    open: int
    leased: int
    evicted: int
    loads: int
    queued_writes: int
    commits: int
    batches: int
    mean_batch_size: float


class _Slot:
    """One session id's place in the hub."""

    __slots__ = (
        "epoch",
        "error",
        "idle_since",
        "leases",
        "ready",
        "session",
        "session_id",
        "state",
        "waiting",
    )

    def __init__(self, session_id: str, state: int) -> None:
        self.session_id = session_id
        self.state = state
        self.session: DurableSession | None = None
        self.leases = 0
        self.waiting = 0  # opens waiting for this slot's load or close
        self.ready = anyio.Event()  # set when the current load or close has finished
        self.error: Exception | None = None
        self.idle_since = 0.0
        self.epoch: int | None = None  # this hub's ownership epoch, while it owns it


class SessionLease:
    """A claim on an open session: ``async with hub.open(id) as session:``.

    While any lease on a session is held the hub keeps it open. A lease is not tied to the
    task that took it: :meth:`acquire` in one task and :meth:`release` in another work too.
    Use the session only while the lease is held (after release it may be evicted and
    closed, and then raises :class:`SessionClosedError`).
    """

    __slots__ = ("_checks", "_create", "_hub", "_session_id", "_slot", "_take_over")

    def __init__(
        self,
        hub: SessionHub,
        session_id: str,
        create: bool,
        checks: dict[str, Any] | None = None,
        take_over: bool = False,
    ) -> None:
        self._hub = hub
        self._session_id = session_id
        self._create = create
        self._checks = checks
        self._take_over = take_over
        self._slot: _Slot | None = None

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def session(self) -> Session:
        """The leased session (:class:`SessionClosedError` when not acquired)."""
        if self._slot is None or self._slot.session is None:
            raise SessionClosedError(f"the lease on {self._session_id} is not held")
        return self._slot.session

    async def acquire(self) -> Session:
        """Open the session (loading it if needed) and hold it; returns it."""
        if self._slot is not None:
            raise SessionClosedError(f"the lease on {self._session_id} is already held")
        self._slot = await self._hub._acquire(self._session_id, self._create, self._take_over)
        if self._checks is not None:  # the open's checkpoint options: verify, or give back
            try:
                await self.session.verify(**self._checks)
            except BaseException:
                self.release()
                raise
        return self.session

    def release(self) -> None:
        """Give the lease back (idempotent). An unleased session stays warm until the
        hub's ``idle_timeout`` or until ``max_open`` needs room."""
        slot, self._slot = self._slot, None
        if slot is not None:
            self._hub._release(slot)

    async def __aenter__(self) -> Session:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class SessionHub:
    """Hosts store-backed sessions by id: ``async with SessionHub(store) as hub:``.

    Entering it enters ``store``; leaving it closes every session (their queued writes are
    committed first), then the store. Leases still held then become unusable
    (:class:`SessionClosedError`) and subscriptions end.

    Args:
        store: where sessions live (``kaizen_async.stores.SQLiteStore``, ``MemoryStore``).
        idle_timeout: seconds an unleased session stays warm before it is evicted.
        max_open: sessions kept open at most; past it the least recently used unleased
            ones are evicted. Leased sessions are never evicted, so while more than
            ``max_open`` are leased, more are open.
        lease_seconds: how long this hub's ownership of an open session lasts unless
            renewed; the hub renews every third of it. Several hubs (processes) may share
            one store: a session is open in one hub at a time, and once its owner has died
            another hub's open takes it over after this long (see :meth:`open`).
        owner: this hub's id in the store (default: this machine's host name, boot and
            process namespace, the process id and a random suffix; from it a hub on the
            same machine tells that a holder's process has exited, see :meth:`open`).
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        idle_timeout: float = 60.0,
        max_open: int = 10_000,
        lease_seconds: float = 30.0,
        owner: str | None = None,
    ) -> None:
        if not isinstance(store, SessionStore):
            raise KaizenValidationError(f"{store!r} is not a SessionStore")
        if (
            not isinstance(idle_timeout, int | float)
            or isinstance(idle_timeout, bool)
            or math.isnan(idle_timeout)
            or idle_timeout < 0
        ):
            raise KaizenValidationError(f"idle_timeout must be a number >= 0, got {idle_timeout!r}")
        if not isinstance(max_open, int) or isinstance(max_open, bool) or max_open < 1:
            raise KaizenValidationError(f"max_open must be an int >= 1, got {max_open!r}")
        if (
            not isinstance(lease_seconds, int | float)
            or isinstance(lease_seconds, bool)
            or not 0 < lease_seconds < 10**9
        ):
            raise KaizenValidationError(
                f"lease_seconds must be a number of seconds > 0, got {lease_seconds!r}"
            )
        if owner is None:
            owner = f"{_LOCAL}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        elif not isinstance(owner, str) or not owner.strip() or not owner.isprintable():
            raise KaizenValidationError(f"owner must be a non-blank printable str, got {owner!r}")
        self._lease_seconds = float(lease_seconds)
        self._owner = owner
        # store subscriptions: the scopes of their waits, and how many are inside a store
        # call (the hub's exit lets those finish before it closes the store)
        self._followers: set[anyio.CancelScope] = set()
        self._renewer = anyio.CancelScope()
        self._in_store = 0
        self._store_idle: anyio.Event | None = None
        self._store = store
        self._idle_timeout = float(idle_timeout)
        self._max_open = max_open
        self._tail = DEFAULT_TAIL
        self._slots: dict[str, _Slot] = {}
        self._idle: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._open = 0  # slots loading or open
        self._evicted = 0
        self._loads = 0
        self._task_group: TaskGroup | None = None
        self._closed = False
        self._reaper_wake: anyio.Event | None = None
        self._loaded: anyio.Event

    @property
    def store(self) -> SessionStore:
        return self._store

    @property
    def owner(self) -> str:
        """This hub's id as the owner of the sessions it has open (in the store)."""
        return self._owner

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task_group is not None or self._closed:
            raise SessionClosedError("a SessionHub can be entered only once")
        await self._store.__aenter__()
        try:
            task_group = anyio.create_task_group()
            await task_group.__aenter__()
        except BaseException as exc:
            await self._store.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group = task_group
        self._loaded = anyio.Event()  # the ``ready`` of every open slot (saves one each)
        self._loaded.set()
        task_group.start_soon(self._reap, name="session hub reaper")
        task_group.start_soon(self._renew, name="session hub lease renewer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._closed = True
        self._wake_reaper()
        self._renewer.cancel()
        for slot in list(self._slots.values()):
            if slot.state == _OPEN:
                self._close(slot)
            # a loading slot is closed by its loader once the load is done
        try:
            return await exit_task_group(self._task_group, exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await self._end_followers()
            await self._store.__aexit__(exc_type, exc, tb)

    async def _end_followers(self) -> None:
        """Store subscriptions end: each reads what was committed up to now (the sessions
        are closed, their writes committed), then ends; the store closes after that."""
        for scope in list(self._followers):
            scope.cancel()
        with anyio.move_on_after(10):
            while self._in_store:
                idle = self._store_idle = anyio.Event()
                await idle.wait()

    def _check_running(self) -> TaskGroup:
        if self._task_group is None or self._closed:
            raise SessionClosedError("the hub is not running; use it inside `async with`")
        return self._task_group

    # -- opening -------------------------------------------------------------------------

    def open(
        self,
        session_id: str,
        *,
        create: bool = False,
        take_over: bool = False,
        keyring: Keyring | str | os.PathLike[str] | None = None,
        require_signed: bool = False,
        max_unsigned_tail: int | None = None,
        anchors: AnchorSource | None = None,
        all_checkpoints: bool = False,
    ) -> SessionLease:
        """A lease on session ``session_id``: ``async with hub.open(id) as session:``.

        Concurrent opens of one id share one actor (and one load). An unknown id raises
        :class:`SessionNotFoundError`, unless ``create`` is true: then it is created.
        Steps the store holds as started but never completed are recorded as
        ``step_interrupted`` before the session is handed out.

        ``keyring``, ``require_signed``, ``max_unsigned_tail``, ``anchors`` and
        ``all_checkpoints`` are :meth:`Session.verify`'s: given any, the open verifies the
        whole session (its chain replayed from the store, then its signed checkpoints)
        before handing it out, and raises :class:`SessionCorruptedError` (the lease given
        back) when that fails. Without them an open reads no history.

        Opening a session takes its ownership in the store (a lease this hub renews, and a
        new epoch). If another live hub owns it, :class:`SessionBusyError` names that
        owner; once the owner's lease has expired (it died, or was paused) the open takes
        the session over, and ``take_over=True`` takes it at once; an owner that was a
        process of this machine which has exited (see ``owner``) is taken over at once. A
        hub that lost a session this way finds out at its next commit or lease renewal:
        its copy closes, and every write it had not committed raises
        :class:`SessionFencedError`.
        """
        checks = {
            "keyring": keyring,
            "require_signed": require_signed,
            "max_unsigned_tail": max_unsigned_tail,
            "anchors": anchors,
            "all_checkpoints": all_checkpoints,
        }
        wanted = keyring is not None or anchors is not None or require_signed
        wanted = wanted or max_unsigned_tail is not None or all_checkpoints
        return SessionLease(
            self,
            _check_id(session_id),
            bool(create),
            checks if wanted else None,
            bool(take_over),
        )

    async def _acquire(self, session_id: str, create: bool, take_over: bool = False) -> _Slot:
        while True:
            task_group = self._check_running()
            slot = self._slots.get(session_id)
            if slot is None:
                slot = self._new_slot(session_id, create, take_over, task_group)
            elif slot.state == _OPEN:
                session = slot.session
                assert session is not None
                if not session._is_usable():  # its store failed and it stopped: reload
                    self._close(slot)
                    continue
                slot.leases += 1
                self._idle.pop(session_id, None)
                return slot
            ready = slot.ready
            slot.waiting += 1
            try:
                await ready.wait()
            except BaseException:  # cancelled: no longer waiting to take a lease
                slot.waiting -= 1
                self._maybe_idle(slot)
                raise
            slot.waiting -= 1
            if slot.error is not None:
                if create and isinstance(slot.error, SessionNotFoundError):
                    continue  # created meanwhile by no one: this open creates it
                raise slot.error

    def _new_slot(
        self, session_id: str, create: bool, take_over: bool, task_group: TaskGroup
    ) -> _Slot:
        self._make_room(1)
        slot = _Slot(session_id, _LOADING)
        self._slots[session_id] = slot
        self._open += 1
        task_group.start_soon(
            self._load, slot, create, take_over, name=f"load session {session_id}"
        )
        return slot

    async def _take(self, session_id: str, take_over: bool) -> int:
        """Own the session in the store (its new epoch); SessionBusyError if another live
        hub does. A holder that was a process of this machine (same boot, same process
        namespace) that no longer exists is taken over at once (a restarted server does
        not wait out its predecessor's lease)."""
        store, lease = self._store, self._lease_seconds
        try:
            ownership = await store.acquire(
                session_id, self._owner, lease_seconds=lease, take_over=take_over
            )
        except SessionBusyError as busy:
            holder = busy.details.get("owner")
            if not isinstance(holder, str) or not _dead_local_owner(holder):
                raise
            ownership = await store.acquire(
                session_id, self._owner, lease_seconds=lease, replace_owner=holder
            )
        return ownership.epoch

    async def _load(self, slot: _Slot, create: bool, take_over: bool) -> None:
        """Take the session's ownership, read it from the store (everything committed up
        to the takeover), start its actor, close its interrupted steps."""
        ready = slot.ready
        session: DurableSession | None = None
        try:
            try:
                slot.epoch = await self._take(slot.session_id, take_over)
            except SessionNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(SessionExistsError):  # created meanwhile: load it
                    await self.create(slot.session_id)
                slot.epoch = await self._take(slot.session_id, take_over)
            core = await load_core(self._store, slot.session_id, self._tail)
            core.epoch = slot.epoch
            self._loads += 1
            session = DurableSession._open(self._store, core)
            assert self._task_group is not None
            session._start(self._task_group)
            await session._close_interrupted()
            slot.session = session
            slot.state = _OPEN
            if self._closed:
                self._close(slot)
            else:
                self._maybe_idle(slot)
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                if session is not None:
                    await session._stop()
                await self._give_up(slot)
            slot.error = exc
            if self._slots.get(slot.session_id) is slot:
                del self._slots[slot.session_id]
            self._open -= 1
        finally:
            ready.set()
            if slot.state == _OPEN and slot.ready is ready:
                slot.ready = self._loaded  # set for good: nobody needs this slot's own

    def _release(self, slot: _Slot) -> None:
        slot.leases -= 1
        self._maybe_idle(slot)
        self._make_room(0)

    def _maybe_idle(self, slot: _Slot) -> None:
        """An open session nobody holds or waits for becomes warm (evictable)."""
        if (
            slot.state != _OPEN
            or slot.leases
            or slot.waiting
            or self._slots.get(slot.session_id) is not slot
            or slot.session_id in self._idle
        ):
            return
        slot.idle_since = anyio.current_time()
        self._idle[slot.session_id] = slot
        if slot.session is not None:  # warm sessions keep no history in memory
            slot.session._core.trim()
        if len(self._idle) == 1:
            self._wake_reaper()

    # -- eviction --------------------------------------------------------------------------

    def _make_room(self, needed: int) -> None:
        """Evict least recently used warm sessions until ``needed`` more fit in max_open."""
        while self._idle and self._open + needed > self._max_open:
            _, slot = self._idle.popitem(last=False)
            self._evicted += 1
            self._close(slot)

    def _close(self, slot: _Slot) -> None:
        """Start closing an open session: new opens wait until its actor has stopped."""
        self._idle.pop(slot.session_id, None)
        slot.state = _CLOSING
        slot.ready = anyio.Event()
        self._open -= 1
        if slot.session is not None and slot.session._actor is not None:
            slot.session._actor.close()  # no request is taken from now on
        assert self._task_group is not None
        self._task_group.start_soon(self._stop_slot, slot, name=f"close session {slot.session_id}")

    async def _stop_slot(self, slot: _Slot) -> None:
        ready = slot.ready
        try:
            if slot.session is not None:
                await slot.session._stop()
                error = slot.session._link.flush_error
                if error is not None:
                    _log.warning("hub.writes_lost", session_id=slot.session_id, error=str(error))
                if isinstance(slot.session._link.broken, SessionFencedError):
                    slot.epoch = None  # not ours any more: nothing to give back
            with anyio.CancelScope(shield=True):
                await self._give_up(slot)
        finally:
            if self._slots.get(slot.session_id) is slot:
                del self._slots[slot.session_id]
            ready.set()

    async def _give_up(self, slot: _Slot) -> None:
        """End this hub's lease on a session it closes (its writes are committed), so
        another hub may open it at once."""
        epoch, slot.epoch = slot.epoch, None
        if epoch is None:
            return
        try:
            await self._store.release(slot.session_id, self._owner, epoch)
        except PersistError as exc:  # the lease then simply runs out
            _log.warning("hub.release_failed", session_id=slot.session_id, error=str(exc))

    async def _renew(self) -> None:
        """Renew this hub's leases every third of a lease; close the sessions another hub
        has taken over meanwhile (this hub was paused, or cut off, past its lease)."""
        with self._renewer:
            while not self._closed:
                await anyio.sleep(self._lease_seconds / 3)
                await self._renew_once()

    async def _renew_once(self) -> None:
        claims = {
            sid: slot.epoch
            for sid, slot in self._slots.items()
            if slot.epoch is not None and slot.state == _OPEN
        }
        if not claims:
            return
        try:
            kept = await self._store.renew(self._owner, claims, lease_seconds=self._lease_seconds)
        except PersistError as exc:
            _log.warning("hub.renew_failed", error=str(exc))
            return
        for sid, epoch in claims.items():
            slot = self._slots.get(sid)
            if sid not in kept and slot is not None and slot.epoch == epoch:
                self._fence(slot)

    def _fence(self, slot: _Slot) -> None:
        """Another hub owns the session now: close this copy; whatever it still holds
        uncommitted, and every later request, fails with SessionFencedError."""
        slot.epoch = None
        error = SessionFencedError(
            f"session {slot.session_id!r} was taken over by another hub; this hub's copy "
            "is closed and its uncommitted writes were not stored",
            details={"session_id": slot.session_id, "hub": self._owner},
        )
        _log.warning("hub.session_fenced", session_id=slot.session_id)
        session = slot.session
        if session is not None and session._actor is not None:
            actor = session._actor
            actor.close_reason = " (taken over by another hub)"
            actor.close_error = lambda: SessionFencedError(error.message, details=error.details)
        if slot.state == _OPEN:
            self._close(slot)

    async def _reap(self) -> None:
        """Evict sessions that have been warm for ``idle_timeout``."""
        while not self._closed:
            now = anyio.current_time()
            delay = math.inf
            while self._idle:
                slot = next(iter(self._idle.values()))
                due = slot.idle_since + self._idle_timeout
                if due > now:
                    delay = due - now
                    break
                del self._idle[slot.session_id]
                self._evicted += 1
                self._close(slot)
            wake = self._reaper_wake = anyio.Event()
            with anyio.move_on_after(delay):
                await wake.wait()

    def _wake_reaper(self) -> None:
        if self._reaper_wake is not None:
            self._reaper_wake.set()

    # -- the store's sessions --------------------------------------------------------------

    async def create(
        self,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        workspace_path: str | os.PathLike[str] | None = None,
    ) -> str:
        """Create a session in the store (a new UUID4 id by default); returns its id.

        :class:`SessionExistsError` if the store already holds ``session_id``.
        ``metadata`` (a JSON object) is listed with the session.
        """
        self._check_running()
        if metadata is not None:
            if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
                raise KaizenValidationError("metadata must be a mapping with str keys")
            encode(dict(metadata), "metadata")
        core = SessionCore(
            session_id,
            max_artifact_size=max_artifact_size,
            workspace_path=None if workspace_path is None else os.fspath(workspace_path),
        )
        await self._store.create(
            Batch(core.session_id, 0, core.records[:], core.version),
            max_artifact_size=core.max_artifact_size,
            workspace_path=core.workspace_path,
            metadata=None if metadata is None else dict(metadata),
        )
        return core.session_id

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """The store's sessions ordered by id (as last committed); ``after`` continues a
        page: pass the last id of the previous one."""
        self._check_running()
        return await self._store.list_sessions(limit=limit, after=after)

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session from the store; False if there was none.

        A warm session is closed first; a leased one is refused with
        :class:`SessionInUseError` (its holders would otherwise write into nothing).
        Opens during the deletion wait for it, then find no session.
        """
        self._check_running()
        session_id = _check_id(session_id)
        while True:
            slot = self._slots.get(session_id)
            if slot is None:
                break
            if slot.state == _OPEN:
                if slot.leases or slot.waiting:
                    raise SessionInUseError(
                        f"session {session_id} is leased; release it before deleting it",
                        details={"session_id": session_id, "leases": slot.leases},
                    )
                self._close(slot)
            await slot.ready.wait()
        guard = _Slot(session_id, _CLOSING)  # opens wait while the store deletes it
        self._slots[session_id] = guard
        try:
            return await self._store.delete(session_id)
        finally:
            if self._slots.get(session_id) is guard:
                del self._slots[session_id]
            guard.ready.set()

    async def import_file(self, path: str | os.PathLike[str]) -> str:
        """Import a ``.kaizen`` file into the store (verified first, all its entries in one
        create, plus ``session_loaded``); returns its session id.

        :class:`SessionExistsError` if the store holds that id already. Steps the file holds
        as started but never completed are closed as interrupted when it is first opened.
        """
        self._check_running()
        path = _check_path(path)
        # the file's signed checkpoints must match its chain (as for Session.load); they are
        # not copied into the store, whose own signer (if any) signs the imported head
        core, version = await anyio.to_thread.run_sync(_read_checked, path, False, None)
        content: dict[str, Any] = {"path": path}
        if version != SCHEMA_VERSION:
            content["imported_from_schema"] = version
            content["artifacts"] = dict(core.artifacts)
        core.append("system", EntryType.SESSION_LOADED, content)
        open_steps = tuple(record[SEQ] for record in find_open_steps(core.records))
        await self._store.create(
            Batch(
                core.session_id,
                0,
                core.records,
                core.version,
                state=dict(core.state),
                artifacts=dict(core.artifacts),
                blobs=dict(core.blobs),
                open_steps=open_steps or None,
            ),
            max_artifact_size=core.max_artifact_size,
            workspace_path=core.workspace_path,
        )
        return core.session_id

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self,
        session_id: str,
        *,
        since_seq: int = 0,
        entry_types: Iterable[EntryType | str] | None = None,
    ) -> AsyncGenerator[TrajectoryEntry, None]:
        """Every committed (durable) entry of ``session_id`` with ``seq > since_seq``: the
        history first, read from the store page by page, then live entries as they are
        committed; in order, without gaps or duplicates; filtered to ``entry_types``.

        A session open in this hub is followed through its actor (holding a lease while it
        runs). Any other session, one another hub (process) owns included, is followed in
        the store without opening it (no ownership is taken): committed entries are read
        as the store reports new commits (``SessionStore.wait_for_commit``: a NOTIFY per
        committed statement on PostgreSQL, polling on SQLite). Across a takeover the
        entries keep coming, from whichever hub commits them. Ends when cancelled, when
        the loop is left, or when the hub closes. A slow subscriber holds no backlog: it
        catches up from the store.
        """
        session_id = _check_id(session_id)
        if not isinstance(since_seq, int) or isinstance(since_seq, bool):
            raise KaizenValidationError(f"since_seq must be an int, got {since_seq!r}")
        kinds = None if entry_types is None else [_entry_type(k) for k in entry_types]
        return self._follow(session_id, since_seq, kinds)

    async def _follow(
        self, session_id: str, since_seq: int, kinds: list[str] | None
    ) -> AsyncGenerator[TrajectoryEntry, None]:
        last = since_seq
        slot = self._slots.get(session_id)
        if slot is not None and slot.state == _OPEN and slot.epoch is not None:
            try:
                async with self.open(session_id) as session:
                    async for entry in session.subscribe(since_seq=last, entry_types=kinds):
                        last = entry.seq
                        yield entry
            except (SessionFencedError, SessionClosedError):
                pass  # taken over, or closed: carry on from the store
            if self._closed:
                return
        async for entry in self._follow_store(session_id, last, kinds):
            yield entry

    async def _follow_store(
        self, session_id: str, since_seq: int, kinds: list[str] | None
    ) -> AsyncGenerator[TrajectoryEntry, None]:
        """Follow a session in the store: read what is committed, then wait for more."""
        self._check_running()
        store = self._store
        last = since_seq
        head = (await store.info(session_id)).trajectory_length
        while True:
            while last < head:  # page by page: a slow subscriber holds no backlog
                until = min(head, last + _FOLLOW_PAGE)
                records = await store.read(
                    session_id, since_seq=last, until_seq=until, entry_types=kinds
                )
                for record in records:
                    yield TrajectoryEntry.from_record(record)
                last = until
            if self._closed:
                return
            self._in_store += 1  # the hub's exit waits until this wait (or catch-up) ends
            try:
                with anyio.CancelScope() as scope:
                    self._followers.add(scope)
                    try:
                        head = await store.wait_for_commit(session_id, last, timeout=_FOLLOW_WAIT)
                    finally:
                        self._followers.discard(scope)
                final: list[Record] = []
                if scope.cancelled_caught:  # the hub closes: what was committed, then end
                    final = await store.read(session_id, since_seq=last, entry_types=kinds)
            finally:
                self._in_store -= 1
                if not self._in_store and self._store_idle is not None:
                    self._store_idle.set()
            if scope.cancelled_caught:
                for record in final:
                    yield TrajectoryEntry.from_record(record)
                return

    # -- statistics ------------------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        store = self._store.statistics()
        open_slots = [s for s in self._slots.values() if s.state == _OPEN]
        return HubStatistics(
            open=len(open_slots),
            leased=sum(1 for s in open_slots if s.leases),
            evicted=self._evicted,
            loads=self._loads,
            queued_writes=sum(s.session._queued() for s in open_slots if s.session is not None),
            commits=store.commits,
            batches=store.batches,
            mean_batch_size=store.mean_batch_size,
        )

    def __repr__(self) -> str:
        return f"SessionHub(store={self._store!r}, open={self._open})"


def _local_key() -> str:
    """This machine boot and process namespace, as the prefix of a default owner id: two
    processes with the same prefix see each other's process ids."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as boot:
            parts.append(boot.read().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


_LOCAL = _local_key()


def _dead_local_owner(owner: str) -> bool:
    """Whether ``owner`` is a default owner id of a process of this machine (same boot
    and process namespace) that has exited."""
    prefix, _, rest = owner.rpartition(":")
    local, _, pid_text = prefix.rpartition(":")
    if local != _LOCAL or not pid_text.isdigit() or not rest:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's): alive
        return False
    return False


def _check_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not session_id.strip():
        raise KaizenValidationError(f"session id must be a non-empty string, got {session_id!r}")
    return session_id
