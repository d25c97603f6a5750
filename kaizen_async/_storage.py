"""The contract between a session and a durable store: what is committed, what is read back.

A store holds many sessions. A session hands it one :class:`Batch` per drained batch of
writes (its new records plus what they changed: state keys, artifact names, new blobs) and
is answered once the batch is durable; it reads back a :class:`StoredSession` when opened
(state, head and a bounded tail, never the whole history) and older entries on demand.

Several hubs (processes) may share one store. A hub that opens a session takes its
*ownership* (:meth:`SessionStore.acquire`): the store records the owner, a lease the owner
renews and an *epoch*, bumped on every acquisition. The owner's batches carry that epoch,
and the store commits a batch only while the session's epoch is still the batch's: a hub
that lost the session (paused past its lease, then taken over) is fenced
(:class:`~kaizen_async.SessionFencedError`) and can overwrite nothing.

Only the interface lives here, below the session layer; the implementations
(``MemoryStore``, ``SQLiteStore``, ``PostgresStore``) are in :mod:`kaizen_async.stores`,
above it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from ._checkpoint import Checkpoint
from ._trajectory import Record

__all__ = [
    "Batch",
    "CheckpointStore",
    "Ownership",
    "SessionInfo",
    "SessionStore",
    "StoreStatistics",
    "StoredSession",
]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as a store lists it.

    Times are RFC 3339 UTC strings set by the store (creation, last commit).
    """

    session_id: str
    created_at: str
    updated_at: str
    trajectory_length: int
    state_version: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What opening a session needs, read in one consistent snapshot.

    ``state`` holds canonical JSON bytes per key; ``artifacts`` maps names to SHA-256
    digests (blobs are read with :meth:`SessionStore.read_blob`); ``open_steps`` are the
    seqs of ``plan_step_started`` entries whose ``plan_step_completed`` never came;
    ``tail`` is the newest records, oldest first (at most as many as were asked for).
    """

    info: SessionInfo
    head_hash: str
    max_artifact_size: int
    workspace_path: str | None
    state: dict[str, bytes]
    artifacts: dict[str, str]
    open_steps: tuple[int, ...]
    tail: list[Record]


@dataclass(frozen=True, slots=True)
class Batch:
    """One session's writes, committed all or nothing.

    ``records`` continue the session's chain right after ``base_seq`` (the head the
    session believes the store has; a store refuses a batch that does not follow its head
    with a ``persist_conflict`` :class:`PersistError`). ``state`` and ``artifacts`` carry
    only what changed (None: deleted); ``blobs`` the artifact data first written in this
    batch (digest -> bytes); ``open_steps`` the new set of open step seqs, or None when it
    did not change. ``epoch``: the writer's :class:`Ownership` epoch; the store refuses the
    batch with :class:`~kaizen_async.SessionFencedError` unless the session is still at it
    (None: a writer without ownership, guarded by the head alone).
    """

    session_id: str
    base_seq: int
    records: Sequence[Record]
    state_version: int
    state: Mapping[str, bytes | None] = field(default_factory=dict)
    artifacts: Mapping[str, str | None] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    open_steps: tuple[int, ...] | None = None
    epoch: int | None = None

    @property
    def head_seq(self) -> int:
        """The session's head once this batch is committed."""
        return self.base_seq + len(self.records)


@dataclass(frozen=True, slots=True)
class Ownership:
    """A hub's claim on one session, as the store granted it.

    ``epoch`` is the fencing token (it grows with every acquisition of the session);
    ``lease_until`` is when the claim lapses unless renewed, in seconds since the Unix
    epoch by the store's clock (the database server's, for a server database).
    """

    session_id: str
    owner: str
    epoch: int
    lease_until: float


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """What a store's writer has done: transactions committed, session batches in them,
    batches waiting for the next transaction."""

    commits: int
    batches: int
    queued: int

    @property
    def mean_batch_size(self) -> float:
        """Session batches per transaction (the group-commit factor)."""
        return self.batches / self.commits if self.commits else 0.0


@runtime_checkable
class SessionStore(Protocol):
    """What a :class:`~kaizen_async.SessionHub` needs of a store.

    A store is an async context manager: entering it opens (creating or migrating) its
    database and starts its writer; leaving it commits what is queued and closes. Every
    method raises :class:`~kaizen_async.PersistError` when the storage fails, and
    :class:`~kaizen_async.SessionNotFoundError` for an unknown id.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    async def create(
        self,
        batch: Batch,
        *,
        max_artifact_size: int,
        workspace_path: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Create the session ``batch.session_id`` from its first records (``base_seq`` 0);
        :class:`~kaizen_async.SessionExistsError` if the id is taken. Durable on return."""
        ...

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        """The session's state, head and newest ``tail`` records, as one snapshot."""
        ...

    async def commit(self, batch: Batch) -> None:
        """Append ``batch``; returns once it is durable.

        Batches of many sessions queued meanwhile are committed in one transaction
        (group commit); each caller is answered only after that transaction commits.
        """
        ...

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
        """
        ...

    async def read_blob(self, digest: str) -> bytes:
        """Artifact data by SHA-256 digest (:class:`~kaizen_async.ArtifactNotFoundError`)."""
        ...

    async def info(self, session_id: str) -> SessionInfo: ...

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """Sessions ordered by id; ``after`` continues a page (keyset paging)."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Remove a session, its entries and blobs no other session uses; False if absent."""
        ...

    def statistics(self) -> StoreStatistics: ...

    # -- ownership (several hubs on one store) ---------------------------------------------

    async def acquire(
        self,
        session_id: str,
        owner: str,
        *,
        lease_seconds: float,
        take_over: bool = False,
        replace_owner: str | None = None,
    ) -> Ownership:
        """Make ``owner`` the session's owner under a new epoch, leased for
        ``lease_seconds``; durable on return.

        Refused with :class:`~kaizen_async.SessionBusyError` (naming the holder) while
        another owner's lease runs, unless ``take_over``, or unless that owner is
        ``replace_owner`` (one the caller knows is dead: a takeover that does not also take
        the session from whoever took it meanwhile); an expired lease is taken over.
        """
        ...

    async def renew(
        self, owner: str, claims: Mapping[str, int], *, lease_seconds: float
    ) -> dict[str, float]:
        """Extend ``owner``'s leases on the sessions it still holds at the epochs given
        (``session_id -> epoch``); returns ``session_id -> lease_until`` for those. A
        session missing from the result was lost (taken over, or deleted)."""
        ...

    async def release(self, session_id: str, owner: str, epoch: int) -> None:
        """End ``owner``'s lease on the session if it still holds it at ``epoch`` (another
        hub may then take it at once); otherwise do nothing."""
        ...

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        """The session's committed head seq once it is past ``after_seq``, whoever commits
        (this process or another), or after ``timeout`` seconds: whatever it is then."""
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """What a store that signs checkpoints offers beside :class:`SessionStore` (optional:
    ``MemoryStore`` and ``SQLiteStore`` do).

    A store given a signer signs, inside the transaction of each commit it accepts, the
    session's new head when its policy says so (see :mod:`kaizen_async.signing`); a batch
    it refuses (a conflict, or a fenced writer) commits no checkpoint.
    """

    async def checkpoint(self, session_id: str) -> Checkpoint | None:
        """Sign the session's head now (None: this store's key signed it already, or the
        store has no signer). What closing a store-backed session calls."""
        ...

    async def read_checkpoints(self, session_id: str, *, since_seq: int = 0) -> list[Checkpoint]:
        """The session's committed checkpoints with ``seq > since_seq``, oldest first."""
        ...
