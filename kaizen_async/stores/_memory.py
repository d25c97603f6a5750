"""``MemoryStore``: the store contract kept in dicts, for tests and in-memory hubs.

Nothing survives the process, but every rule of :class:`~kaizen_async.stores.SessionStore`
holds exactly as in the durable stores: a batch must continue the stored head
(``persist_conflict``), ids are unique, reads are filtered and paged the same way, blobs are
shared between sessions and dropped with the last session that uses them. Each call is
applied whole when called (in call order, like a durable store's queue) and the call then
yields, so its "transactions" hold one batch each.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio

from .._canonical import ZERO_HASH, decode
from .._exceptions import ArtifactNotFoundError, ErrorCode, KaizenValidationError, PersistError
from .._storage import Batch, SessionInfo, StoredSession, StoreStatistics
from .._trajectory import Record
from ._common import (
    check_batch,
    check_entry_types,
    check_limit,
    check_metadata,
    check_optional_text,
    check_range,
    check_session_id,
    closed_error,
    conflict,
    exists,
    is_digest,
    not_found,
    now,
)

__all__ = ["MemoryStore"]


@dataclass
class _Session:
    created_at: str
    updated_at: str
    max_artifact_size: int
    workspace_path: str | None
    metadata: bytes
    head_hash: str = ZERO_HASH
    state_version: int = 0
    open_steps: tuple[int, ...] = ()
    records: list[Record] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    blobs: set[str] = field(default_factory=set)  # digests this session refers to

    def info(self, session_id: str) -> SessionInfo:
        return SessionInfo(
            session_id,
            self.created_at,
            self.updated_at,
            len(self.records),
            self.state_version,
            decode(self.metadata),
        )


class MemoryStore:
    """A :class:`~kaizen_async.stores.SessionStore` in memory (no durability).

    The data lives in the object: leaving and entering it again keeps every session.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._blobs: dict[str, bytes] = {}
        self._blob_users: dict[str, int] = {}
        self._open = False
        self._commits = 0

    async def __aenter__(self) -> Self:
        if self._open:
            raise PersistError(
                "this MemoryStore is already open", code=ErrorCode.PERSIST_LOAD_FAILED
            )
        self._open = True
        await anyio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False

    def _check_open(self, code: ErrorCode) -> None:
        if not self._open:
            raise closed_error(code)

    def _session(self, session_id: str) -> _Session:
        stored = self._sessions.get(check_session_id(session_id))
        if stored is None:
            raise not_found(session_id)
        return stored

    # -- writes ------------------------------------------------------------------------------

    async def create(
        self,
        batch: Batch,
        *,
        max_artifact_size: int,
        workspace_path: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        """Create the session ``batch.session_id`` from its first records."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_batch(batch, create=True)
        meta = check_metadata(metadata)
        if (
            not isinstance(max_artifact_size, int)
            or isinstance(max_artifact_size, bool)
            or max_artifact_size < 0
        ):
            raise KaizenValidationError("max_artifact_size must be a non-negative int")
        workspace = check_optional_text(
            None if workspace_path is None else str(workspace_path), "workspace_path"
        )
        if batch.session_id in self._sessions:
            raise exists(batch.session_id)
        stamp = now()
        stored = _Session(stamp, stamp, max_artifact_size, workspace, meta)
        self._sessions[batch.session_id] = stored
        self._apply(stored, batch, stamp)
        await anyio.lowlevel.checkpoint()  # applied first: calls apply in call order
        return stored.info(batch.session_id)

    async def commit(self, batch: Batch) -> None:
        """Append ``batch`` if it continues the stored head (else ``persist_conflict``)."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_batch(batch)
        stored = self._session(batch.session_id)
        head = len(stored.records)
        if batch.base_seq != head or (
            batch.records and batch.records[0].prev_hash != stored.head_hash
        ):
            raise conflict(batch.session_id, batch.base_seq, head)
        self._apply(stored, batch, now())
        await anyio.lowlevel.checkpoint()

    def _apply(self, stored: _Session, batch: Batch, stamp: str) -> None:
        stored.records.extend(batch.records)
        if batch.records:
            stored.head_hash = batch.records[-1].hash
        stored.state_version = batch.state_version
        stored.updated_at = stamp
        for key, value in batch.state.items():
            if value is None:
                stored.state.pop(key, None)
            else:
                stored.state[key] = value
        for name, digest in batch.artifacts.items():
            if digest is None:
                stored.artifacts.pop(name, None)
            else:
                stored.artifacts[name] = digest
        for digest, data in batch.blobs.items():
            self._blobs.setdefault(digest, data)
        for digest in [*batch.blobs, *(d for d in batch.artifacts.values() if d is not None)]:
            if digest not in stored.blobs:
                stored.blobs.add(digest)
                self._blob_users[digest] = self._blob_users.get(digest, 0) + 1
        if batch.open_steps is not None:
            stored.open_steps = tuple(batch.open_steps)
        self._commits += 1

    async def delete(self, session_id: str) -> bool:
        """Remove a session and the blobs no other session uses; False if absent."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_session_id(session_id)
        stored = self._sessions.pop(session_id, None)
        await anyio.lowlevel.checkpoint()
        if stored is None:
            return False
        for digest in stored.blobs:
            users = self._blob_users[digest] - 1
            if users:
                self._blob_users[digest] = users
            else:
                del self._blob_users[digest]
                self._blobs.pop(digest, None)
        self._commits += 1
        return True

    # -- reads -------------------------------------------------------------------------------

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        """The session's state, head and newest ``tail`` records."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        wanted = check_limit(tail, "tail") or 0
        await anyio.lowlevel.checkpoint()
        stored = self._session(session_id)
        records = stored.records
        return StoredSession(
            info=stored.info(session_id),
            head_hash=stored.head_hash,
            max_artifact_size=stored.max_artifact_size,
            workspace_path=stored.workspace_path,
            state=dict(stored.state),
            artifacts=dict(stored.artifacts),
            open_steps=stored.open_steps,
            tail=records[len(records) - wanted :] if wanted else [],
        )

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
        """Committed records with ``since_seq < seq <= until_seq``, filtered, oldest first."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        since, until = check_range(since_seq, until_seq)
        kinds = check_entry_types(entry_types)
        count = check_limit(limit)
        check_optional_text(agent_id, "agent_id")
        await anyio.lowlevel.checkpoint()
        stored = self._session(session_id)
        found = stored.records[since:until]
        if kinds is not None:
            found = [r for r in found if r.entry_type in kinds]
        if agent_id is not None:
            found = [r for r in found if r.agent_id == agent_id]
        if count is not None:
            if count == 0:
                return []
            found = found[-count:] if newest else found[:count]
        return list(found)

    async def read_blob(self, digest: str) -> bytes:
        """Artifact data by digest (:class:`ArtifactNotFoundError` when no session has it)."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        await anyio.lowlevel.checkpoint()
        data = self._blobs.get(digest) if is_digest(digest) else None
        if data is None:
            raise ArtifactNotFoundError(
                f"no artifact blob {digest!r} in the store", details={"digest": digest}
            )
        return data

    async def info(self, session_id: str) -> SessionInfo:
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        await anyio.lowlevel.checkpoint()
        return self._session(session_id).info(session_id)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        """Sessions ordered by id; ``after`` continues a page (keyset paging)."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        count = check_limit(limit)
        check_optional_text(after, "after")
        await anyio.lowlevel.checkpoint()
        ids = sorted(sid for sid in self._sessions if after is None or sid > after)
        if count is not None:
            ids = ids[:count]
        return [self._sessions[sid].info(sid) for sid in ids]

    def statistics(self) -> StoreStatistics:
        """Each call is its own transaction here: the mean batch size is 1."""
        return StoreStatistics(commits=self._commits, batches=self._commits, queued=0)
