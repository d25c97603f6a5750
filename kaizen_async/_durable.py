"""A session backed by a :class:`~kaizen_async._storage.SessionStore`.

Its data is a :class:`~kaizen_async._stored.StoredCore` (state, head, a bounded tail, and
what changed since the last commit). Two pieces here:

- :class:`StoreLink`: the actor's committer. After each drained batch it sends one
  :class:`~kaizen_async._storage.Batch`; when a commit fails it **reloads** the core from
  the store (state, head, tail, open steps), so memory never runs ahead of the store.
- :class:`DurableSession`: a :class:`~kaizen_async.Session` whose reads never see an
  uncommitted write and whose history reads (``get_trajectory``, ``state_at``, ``fork``,
  ``verify``, ``save``, subscriptions) page older entries in from the store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.from_thread

from ._canonical import decode, sha256_hex
from ._checkpoint import Checkpoint
from ._exceptions import (
    ErrorCode,
    KaizenValidationError,
    PersistError,
    SessionCorruptedError,
    SessionFencedError,
)
from ._keys import Keyring
from ._logging import get_logger
from ._session import Session, Transaction, _entry_type
from ._state import SessionCore, _timestamp, validate_key
from ._steps import COMPLETED, interrupted_content
from ._storage import Batch, CheckpointStore, SessionStore
from ._stored import _CACHE_BLOB_BYTES, StoredCore, step_records
from ._trajectory import CONTENT, ENTRY_TYPE, SEQ, EntryType, Record, TrajectoryEntry
from ._verification import AnchorSource, VerifyReport, check_checkpoints, verify_options
from ._waiting import Parker, create_parker

__all__ = ["DurableSession", "StoreLink"]

_log = get_logger("kaizen_async.durable")
T = TypeVar("T")

#: records per page when history is read from the store
PAGE = 4096
_ARTIFACT_WRITTEN = EntryType.ARTIFACT_WRITTEN.value


def _persist_error(exc: Exception, session_id: str) -> PersistError:
    if isinstance(exc, PersistError):
        return exc
    error = PersistError(
        f"could not commit to session {session_id}: {exc}",
        code=ErrorCode.PERSIST_COMMIT_FAILED,
        details={"session_id": session_id, "cause": type(exc).__name__},
    )
    error.__cause__ = exc
    return error


class StoreLink:
    """The committer of a store-backed session's actor, and its way to the history."""

    __slots__ = ("_parker", "_post", "broken", "commits", "core", "flush_error", "store")

    def __init__(self, store: SessionStore, core: StoredCore) -> None:
        self.store = store
        self.core = core
        self.flush_error: Exception | None = None
        self.broken: Exception | None = None
        self.commits = 0
        #: a store with a group committer queues the session's own batch without checking
        #: it again and hands back a firm slot (see ``CommittingStore._post_commit``)
        self._post: Callable[[Batch], list[Any]] | None = getattr(store, "_post_commit", None)
        self._parker: Parker | None = None

    async def commit(self) -> tuple[Exception | None, BaseException | None]:
        """Commit what was applied since the last commit, seen through to its outcome
        even if the actor is cancelled meanwhile: ``(the error if it failed, the
        cancellation that arrived during the wait)``; the actor answers the batch, then
        raises that cancellation."""
        core = self.core
        if not core.pending():
            return None, None
        post = self._post
        error: Exception | None = None
        cancelled: BaseException | None = None
        if post is None:  # a store without a group committer: its own commit, shielded
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.commit(core.batch())
                except Exception as exc:
                    error = await self._failed(exc)
        else:
            try:
                slot = post(core.batch())
            except Exception as exc:  # the store is closed
                error = exc
            else:
                parker = self._parker
                if parker is None:
                    parker = self._parker = create_parker()
                error, cancelled = await parker.park_firm(slot)
            if error is not None:
                with anyio.CancelScope(shield=True):
                    error = await self._failed(error)
        if error is None:
            core.committed_ok()
            self.commits += 1
        return error, cancelled

    async def _failed(self, exc: Exception) -> Exception:
        """A failed commit: the error for its callers, once the session is reloaded from
        the store (or ``broken`` is set: fenced, or the reload failed too)."""
        if isinstance(exc, SessionFencedError):
            # another hub owns the session now: this copy must not write (or reload) again
            self.broken = exc
            return exc
        error = _persist_error(exc, self.core.session_id)
        try:
            await self.reload()
        except Exception as reload_error:
            self.broken = reload_error
        return error

    async def reload(self) -> None:
        """Replace the core's data with the store's (drops whatever was not committed)."""
        core = self.core
        stored = await self.store.load(core.session_id, tail=core.tail_max)
        core.reset(stored, await step_records(self.store, stored))

    def take_flush_error(self) -> None:
        """Raise (once) the failed commit of a posted write since the last flush."""
        error, self.flush_error = self.flush_error, None
        if error is not None:
            raise error

    # -- history -----------------------------------------------------------------------------

    async def read(
        self,
        since_seq: int,
        until_seq: int,
        entry_types: Iterable[str] | None = None,
        agent_id: str | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[Record]:
        return await self.store.read(
            self.core.session_id,
            since_seq=since_seq,
            until_seq=until_seq,
            entry_types=None if entry_types is None else list(entry_types),
            agent_id=agent_id,
            limit=limit,
            newest=newest,
        )

    async def blob(self, digest: str) -> bytes:
        """Artifact data: from memory when held there, else from the store."""
        core = self.core
        data = core.new_blobs.get(digest) or core.blobs.get(digest)
        if data is None:
            data = await self.store.read_blob(digest)
            core.sizes[digest] = len(data)
            if len(data) <= _CACHE_BLOB_BYTES:
                core.blobs[digest] = data
        return data

    def _pages(self, until: int) -> Iterator[Record]:
        """Records 1..``until`` page by page, for a worker thread (pages are read on the
        event loop through :func:`anyio.from_thread.run`)."""
        pos = 0
        while pos < until:
            page = anyio.from_thread.run(self.read, pos, min(pos + PAGE, until))
            if not page:
                raise SessionCorruptedError(
                    f"session {self.core.session_id}: the store has no entry {pos + 1}",
                    seq=pos + 1,
                )
            yield from page
            pos = page[-1][SEQ]

    async def replay(
        self,
        until: int,
        *,
        verify: bool,
        keep: bool,
        session_id: str | None = None,
        until_version: int | None = None,
        hashes: dict[int, str] | None = None,
    ) -> SessionCore:
        """Replay entries 1..``until`` from the store in a worker thread; ``hashes`` (seq ->
        "") receives the hash of each entry whose seq it holds (checkpoints are checked
        against them)."""
        core = self.core

        def pages() -> Iterator[Record]:
            assert hashes is not None
            for record in self._pages(until):
                if record[0] in hashes:
                    hashes[record[0]] = record[6]
                yield record

        def run() -> SessionCore:
            return SessionCore.replay(
                self._pages(until) if hashes is None else pages(),
                session_id=session_id or core.session_id,
                max_artifact_size=core.max_artifact_size,
                workspace_path=core.workspace_path,
                verify=verify,
                until_version=until_version,
                keep=keep,
            )

        return await anyio.to_thread.run_sync(run)


class DurableSession(Session):
    """A session whose every acknowledged write is durable in a store.

    Opened by a :class:`~kaizen_async.SessionHub`. An awaited write returns once its entry
    is committed, and so does a dispatched step (its caller is answered once the step's
    entries are committed; a failed commit raises :class:`PersistError` there); posted
    writes (``append_nowait``, ``transaction(wait=False)``) are committed with the next
    batch, and :meth:`flush` waits for them. A read waits until the writes queued before
    it are applied *and* committed, so it never sees a write that could still be rolled
    back. Only state, head and a bounded tail are in memory; older entries are read from
    the store.
    """

    _core: StoredCore
    _link: StoreLink

    @classmethod
    def _open(cls, store: SessionStore, core: StoredCore) -> DurableSession:
        session = cls.__new__(cls)
        session._setup(core)
        session._link = StoreLink(store, core)
        return session

    def _committer(self) -> StoreLink:
        return self._link

    def _acknowledge(self, slot: list[Any], value: Any) -> bool:
        self._actor_or_raise().post_answered(slot, _identity, value)
        return True

    def _is_usable(self) -> bool:
        """Running and taking requests (false once closed, or stopped by a store failure)."""
        actor = self._actor
        return actor is not None and not actor.closing and not actor.closed

    def _queued(self) -> int:
        return 0 if self._actor is None else len(self._actor.queue)

    async def _consistent(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on committed data: now if nothing is pending, else by the actor
        right after the commit of what was queued before."""
        actor = self._running()
        if actor.queue or self._core.pending():
            return await actor.call_after(fn, *args)  # type: ignore[no-any-return]
        return fn(*args)

    async def _consistent_state(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the state: like :meth:`_consistent`, but at once when no state
        write is applied and uncommitted (the state in memory is then exactly the committed
        state) and no posted state write is queued (a caller reads its own posted writes);
        queued appends, a step's entries say, are not waited for."""
        actor = self._actor_or_raise()
        if self._core.keys or (actor.state_keys and actor.queue):
            return await actor.call_after(fn, *args)  # type: ignore[no-any-return]
        return fn(*args)

    async def flush(self) -> None:
        """Return once every write queued before this call (posted ones included) is
        committed; raises the :class:`PersistError` of a posted write whose commit failed
        since the last flush."""
        actor = self._running()
        if actor.queue or self._core.pending():
            await actor.call_after(self._link.take_flush_error)
        else:
            self._link.take_flush_error()

    # -- state -----------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """:meth:`_consistent_state` for one key: at once unless *this* key has a write
        applied and uncommitted, or a posted write queued."""
        key = validate_key(key)
        actor, core = self._actor_or_raise(), self._core
        if key in core.keys or (actor.queue and key in actor.state_keys):
            return await actor.call_after(core.get, key, default)
        return core.get(key, default)

    async def get_state_version(self) -> int:
        return await self._consistent_state(_version, self._core)

    async def get_all_state(self) -> dict[str, Any]:
        return await self._consistent_state(self._core.all_state)

    async def state_at(self, version: int) -> dict[str, Any]:
        """The state right after ``version``, replayed from the store's history."""
        if not isinstance(version, int) or isinstance(version, bool):
            raise KaizenValidationError("version must be an int")
        head, now, state = await self._consistent(_state_now, self._core)
        if version < 0 or version > now:
            raise KaizenValidationError(
                f"version {version} is out of range 0..{now}",
                details={"version": version, "state_version": now},
            )
        if version == now:
            return state
        past = await self._link.replay(head, verify=False, keep=False, until_version=version)
        return past.all_state()

    # -- trajectory ----------------------------------------------------------------------

    async def get_trajectory(
        self,
        limit: int | None = None,
        *,
        entry_types: Iterable[EntryType | str] | None = None,
        agent_id: str | None = None,
        since_seq: int | None = None,
    ) -> list[TrajectoryEntry]:
        """Entries oldest first. ``limit``: None all, <= 0 none, N the last N (after filters).

        Served from the tail in memory when it covers the request, else by one read of
        the store (filtered there).
        """
        kinds = None if entry_types is None else {_entry_type(k) for k in entry_types}
        head, base, tail = await self._consistent(self._core.tail)
        if (limit is not None and limit <= 0) or (kinds is not None and not kinds):
            return []
        since = max(since_seq or 0, 0)
        records = [r for r in tail[max(since - base, 0) :] if _wanted(r, kinds, agent_id)]
        if since < base and (limit is None or len(records) < limit):
            records = await self._link.read(
                since, head, kinds, agent_id, limit=limit, newest=limit is not None
            )
        elif limit is not None:
            records = records[-limit:]
        return [TrajectoryEntry.from_record(r) for r in records]

    async def get_trajectory_length(self) -> int:
        return await self._consistent(_committed, self._core)

    async def verify(
        self,
        *,
        keyring: Keyring | str | os.PathLike[str] | None = None,
        require_signed: bool = False,
        max_unsigned_tail: int | None = None,
        anchors: AnchorSource | None = None,
        all_checkpoints: bool = False,
    ) -> VerifyReport:
        """Replay the whole chain from the store page by page (in bounded memory) and check
        it, the state, the artifacts and their blobs against what this session holds, then
        the store's checkpoints of it (the options of :meth:`Session.verify`)."""
        options = await anyio.to_thread.run_sync(
            verify_options, keyring, require_signed, max_unsigned_tail, anchors, all_checkpoints
        )
        store = self._link.store
        # checkpoints first: each is committed with the entries it covers, so none lies
        # past the head read next (one that does means entries were removed)
        checkpoints: list[Checkpoint] = (
            await store.read_checkpoints(self.session_id)
            if isinstance(store, CheckpointStore)
            else []
        )
        head, head_hash, version, state, artifacts = await self._consistent(
            _verify_snapshot, self._core
        )
        anchored = options.anchors[0] if options.anchors is not None else ()
        hashes = {c.seq: "" for c in (*checkpoints, *anchored) if c.seq <= head}
        check = await self._link.replay(head, verify=True, keep=False, hashes=hashes)
        sid = self.session_id
        if check.head != head_hash:
            raise SessionCorruptedError(f"session {sid}: the head differs from the chain's end")
        if check.version != version:
            raise SessionCorruptedError(
                f"session {sid}: state_version {version} differs from replay ({check.version})"
            )
        if check.state != state:
            bad = sorted(set(check.state.items()) ^ set(state.items()))
            raise SessionCorruptedError(
                f"session {sid}: state differs from replay of the trajectory at key {bad[0][0]!r}"
            )
        if check.artifacts != artifacts:
            raise SessionCorruptedError(f"session {sid}: artifacts differ from replay")
        for name, digest in artifacts.items():
            if sha256_hex(await self._link.blob(digest)) != digest:
                raise SessionCorruptedError(
                    f"session {sid}: artifact {name!r} does not match its digest"
                )
        return check_checkpoints(sid, head, hashes.__getitem__, checkpoints, options)

    # -- artifacts -----------------------------------------------------------------------

    async def _know_sizes(self, names: Iterable[str]) -> None:
        """Learn the size of the current version of each artifact before it is replaced or
        deleted (its entry records it); a store-backed session may not hold the data."""
        core = self._core
        for name in names:
            digest = core.artifacts.get(name) if isinstance(name, str) else None
            if digest is not None and digest not in core.sizes:
                await self._link.blob(digest)

    async def write_artifact(self, name: str, data: bytes) -> int:
        await self._know_sizes([name])
        return await super().write_artifact(name, data)

    async def delete_artifact(self, name: str) -> int:
        await self._know_sizes([name])
        return await super().delete_artifact(name)

    async def read_artifact(self, name: str) -> bytes:
        return await self._link.blob(await self._consistent(self._core._artifact_digest, name))

    async def list_artifacts(self) -> list[str]:
        return await self._consistent(_artifact_names, self._core)

    async def get_artifact_size(self, name: str) -> int:
        digest = await self._consistent(self._core._artifact_digest, name)
        size = self._core.sizes.get(digest)
        return size if size is not None else len(await self._link.blob(digest))

    def transaction(self, *, wait: bool = True) -> Transaction:
        self._check_writable()
        return _DurableTransaction(self, wait)

    # -- snapshots, forks, files -----------------------------------------------------------

    async def snapshot_for_agent(self, agent_id: str, depth: int = 10) -> dict[str, Any]:
        snapshot, tail = await self._consistent(_snapshot, self._core)
        if depth <= 0:
            records: list[Record] = []
        elif depth <= len(tail) or len(tail) >= snapshot["trajectory_total_length"]:
            records = tail[-depth:]
        else:
            head = snapshot["trajectory_total_length"]
            records = await self._link.read(0, head, limit=depth, newest=True)
        snapshot["trajectory"] = [TrajectoryEntry.from_record(r).to_dict() for r in records]
        return snapshot

    async def fork(self, at_seq: int | None = None, session_id: str | None = None) -> Session:
        """A new in-memory session (not started): this history up to ``at_seq``, replayed
        from the store, plus ``session_forked``; it holds the artifacts current there."""
        head = await self._consistent(_committed, self._core)
        if at_seq is None:
            at_seq = head
        if not isinstance(at_seq, int) or isinstance(at_seq, bool) or not 1 <= at_seq <= head:
            raise KaizenValidationError(f"at_seq must be an int in 1..{head}, got {at_seq!r}")
        child = await self._link.replay(
            at_seq, verify=False, keep=True, session_id=session_id or str(uuid.uuid4())
        )
        for digest in set(child.artifacts.values()):
            child.blobs[digest] = await self._link.blob(digest)
        child.append(
            "system",
            EntryType.SESSION_FORKED,
            {
                "session_id": child.session_id,
                "parent_session_id": self.session_id,
                "forked_at_seq": at_seq,
                "parent_hash": child.head,
            },
        )
        return Session._from_core(child)

    async def _file_checkpoints(self, whole: SessionCore) -> list[Checkpoint]:
        """A save exports the store's checkpoints of what it writes (audit paths included,
        so each verifies on its own in the file)."""
        store = self._link.store
        if not isinstance(store, CheckpointStore):
            return []
        found = await store.read_checkpoints(self.session_id)
        return [c for c in found if c.seq <= len(whole.records)]

    async def _stop(self) -> None:
        """Stop, then leave a signed checkpoint at the last committed seq (a store with a
        signer; nothing to do when its key signed that head already). A failure to sign is
        logged, never raised: the writes are durable whatever it does."""
        await super()._stop()
        store = self._link.store
        if isinstance(store, CheckpointStore) and self._link.broken is None:
            try:
                await store.checkpoint(self.session_id)
            except Exception as exc:
                _log.warning(
                    "checkpoint_at_close_failed", session_id=self.session_id, error=repr(exc)
                )

    async def _full_core(self) -> SessionCore:
        """The whole session in memory, for an export (``save``): every entry read from
        the store and the data of every artifact version the history names."""
        core = self._core
        head = core.committed
        full = await self._link.replay(head, verify=False, keep=True)
        if full.head != core.head:
            raise SessionCorruptedError(
                f"session {core.session_id}: the stored history does not end at the head"
            )
        full.state = dict(core.state)  # the replayed state equals it (verify() checks)
        digests = set(core.artifacts.values())
        for record in full.records:
            if record[ENTRY_TYPE] == _ARTIFACT_WRITTEN:
                digest = decode(record[CONTENT]).get("digest")
                if isinstance(digest, str):
                    digests.add(digest)
        for digest in digests:
            full.blobs[digest] = await self._link.blob(digest)
        return full

    # -- subscriptions -----------------------------------------------------------------------

    def _committed_seq(self) -> int:
        return self._core.committed

    async def _committed_page(
        self, pos: int, head: int, kinds: frozenset[str] | None
    ) -> tuple[list[Record], int]:
        core = self._core
        if pos >= core.base:
            end = min(head, pos + PAGE)
            records = core.records[pos - core.base : end - core.base]
            if kinds is not None:
                records = [r for r in records if r[3] in kinds]
            return records, end
        if kinds is not None and not kinds:
            return [], head
        records = await self._link.read(pos, head, kinds, limit=PAGE)
        if len(records) < PAGE:
            return records, head
        return records, records[-1][SEQ]

    # -- interrupted steps -------------------------------------------------------------------

    async def _close_interrupted(self) -> int:
        """Record each step open at load as completed with ``step_interrupted``; returns
        once that is committed (before the opener gets the session)."""
        started = self._core.interrupted
        if not started:
            return 0
        async with self.transaction() as tx:
            for record in started:
                tx.append("system", COMPLETED, decode(interrupted_content(record)))
        self._core.interrupted = []
        return len(started)


class _DurableTransaction(Transaction):
    """A transaction on a store-backed session: learns the sizes of the artifacts it
    replaces or deletes first (their entries record the old size)."""

    __slots__ = ()
    _session: DurableSession

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            names = [name for kind, name in self._names or () if "artifact" in kind]
            if names:
                await self._session._know_sizes(names)
        await super().__aexit__(exc_type, exc, tb)


def _identity(value: T) -> T:
    """What a caller acknowledged after a commit is answered with: what it was to get."""
    return value


def _wanted(record: Record, kinds: set[str] | None, agent_id: str | None) -> bool:
    return (kinds is None or record[3] in kinds) and (agent_id is None or record[2] == agent_id)


def _version(core: StoredCore) -> int:
    return core.version


def _committed(core: StoredCore) -> int:
    return core.committed


def _artifact_names(core: StoredCore) -> list[str]:
    return sorted(core.artifacts)


def _state_now(core: StoredCore) -> tuple[int, int, dict[str, Any]]:
    return core.committed, core.version, core.all_state()


def _verify_snapshot(core: StoredCore) -> tuple[int, str, int, dict[str, bytes], dict[str, str]]:
    return core.committed, core.head, core.version, dict(core.state), dict(core.artifacts)


def _snapshot(core: StoredCore) -> tuple[dict[str, Any], list[Record]]:
    head, _, tail = core.tail()
    return (
        {
            "session_id": core.session_id,
            "state": core.all_state(),
            "state_version": core.version,
            "trajectory": [],
            "artifacts": sorted(core.artifacts),
            "snapshot_time": _timestamp(),
            "trajectory_total_length": head,
        },
        tail,
    )
