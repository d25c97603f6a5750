"""The contract between a session and a durable store: what is committed, what is read back.

A store holds many sessions. A session hands it one :class:`Batch` per drained batch of
writes (its new records plus what they changed: state keys, artifact names, new blobs) and
is answered once the batch is durable; it reads back a :class:`StoredSession` when opened
(state, head and a bounded tail, never the whole history) and older entries on demand.

Only the interface lives here, below the session layer; the implementations
(``MemoryStore``, ``SQLiteStore``) are in :mod:`kaizen_async.stores`, above it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from ._trajectory import Record

__all__ = ["Batch", "SessionInfo", "SessionStore", "StoreStatistics", "StoredSession"]


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
    did not change.
    """

    session_id: str
    base_seq: int
    records: Sequence[Record]
    state_version: int
    state: Mapping[str, bytes | None] = field(default_factory=dict)
    artifacts: Mapping[str, str | None] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    open_steps: tuple[int, ...] | None = None

    @property
    def head_seq(self) -> int:
        """The session's head once this batch is committed."""
        return self.base_seq + len(self.records)


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
