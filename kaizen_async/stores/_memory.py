"""``MemoryStore``: the store contract kept in dicts, for tests and in-memory hubs.

Nothing survives the process, but every rule of :class:`~kaizen_async.stores.SessionStore`
holds exactly as in the durable stores: a batch must continue the stored head
(``persist_conflict``), ids are unique, reads are filtered and paged the same way, blobs are
shared between sessions and dropped with the last session that uses them. Each call is
applied whole when called (in call order, like a durable store's queue) and the call then
yields, so its "transactions" hold one batch each. With a signer, each commit's checkpoint
is made with it (signed alone: a transaction holds one session).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import anyio

from .._actor import exit_task_group
from .._anchors import AnchorPublisher, AnchorSink
from .._canonical import ZERO_HASH, decode
from .._checkpoint import Checkpoint
from .._checkpointing import Checkpointer, CheckpointPolicy
from .._exceptions import ArtifactNotFoundError, ErrorCode, PersistError
from .._keys import Signer
from .._storage import Batch, Ownership, SessionInfo, StoredSession, StoreStatistics
from .._trajectory import AGENT_ID, ENTRY_TYPE, HASH, PREV_HASH, Record
from ._common import (
    busy,
    check_batch,
    check_claims,
    check_create,
    check_entry_types,
    check_lease,
    check_limit,
    check_optional_text,
    check_owner,
    check_range,
    check_session_id,
    check_wait,
    closed_error,
    conflict,
    exists,
    fenced,
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
    owner: str | None = None
    epoch: int = 0
    lease_until: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)

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
    ``signer``, ``checkpoints`` and ``anchor`` are as for :class:`SQLiteStore`.
    """

    def __init__(
        self,
        *,
        signer: Signer | None = None,
        checkpoints: CheckpointPolicy | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
    ) -> None:
        self._sessions: dict[str, _Session] = {}
        self._blobs: dict[str, bytes] = {}
        self._blob_users: dict[str, int] = {}
        self._open = False
        self._commits = 0
        self._waiters: dict[str, list[anyio.Event]] = {}
        self._checkpointer = None if signer is None else Checkpointer(signer, checkpoints, anchor)
        self._task_group: Any = None

    async def __aenter__(self) -> Self:
        if self._open:
            raise PersistError(
                "this MemoryStore is already open", code=ErrorCode.PERSIST_LOAD_FAILED
            )
        anchor = self._checkpointer.anchor if self._checkpointer is not None else None
        if anchor is not None:
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            self._task_group.start_soon(anchor.run, name="anchor of a MemoryStore")
        self._open = True
        await anyio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._open = False
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return None
        assert self._checkpointer is not None and self._checkpointer.anchor is not None
        self._checkpointer.anchor.close()
        return await exit_task_group(task_group, exc_type, exc, tb)

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
        batch, max_artifact_size, workspace, meta = check_create(
            batch, max_artifact_size, workspace_path, metadata
        )
        if batch.session_id in self._sessions:
            raise exists(batch.session_id)
        stamp = now()
        stored = _Session(stamp, stamp, max_artifact_size, workspace, meta)
        self._sessions[batch.session_id] = stored
        self._apply(stored, batch, stamp)
        self._sign(batch, stored)
        await anyio.lowlevel.checkpoint()  # applied first: calls apply in call order
        return stored.info(batch.session_id)

    async def commit(self, batch: Batch) -> None:
        """Append ``batch`` if it continues the stored head (else ``persist_conflict``)."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_batch(batch)
        stored = self._session(batch.session_id)
        if batch.epoch is not None and batch.epoch != stored.epoch:
            raise fenced(batch.session_id, batch.epoch, stored.epoch, stored.owner)
        head = len(stored.records)
        if batch.base_seq != head or (
            batch.records and batch.records[0][PREV_HASH] != stored.head_hash
        ):
            raise conflict(batch.session_id, batch.base_seq, head)
        self._apply(stored, batch, now())
        self._sign(batch, stored)
        await anyio.lowlevel.checkpoint()

    def _sign(self, batch: Batch, stored: _Session, *, force: bool = False) -> list[Checkpoint]:
        """The checkpoint of a batch just applied, if one is due (always with ``force``)."""
        signer = self._checkpointer
        if signer is None or not (batch.records or force):
            return []
        sid, entries = batch.session_id, len(batch.records)
        head = (sid, len(stored.records), stored.head_hash, 0, entries)
        trees = signer.sign([head[:4]]) if force or signer.due(sid, 1, entries) else []
        made = signer.checkpoints(trees)
        stored.checkpoints.extend(made)
        signer.committed([head], trees)
        return made

    async def checkpoint(self, session_id: str) -> Checkpoint | None:
        """Sign the session's head now unless this store's key signed that head already
        (then None, as without a signer): what a store-backed session's close calls."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        stored = self._session(session_id)
        await anyio.lowlevel.checkpoint()
        signer = self._checkpointer
        if signer is None:
            return None
        head_seq = len(stored.records)
        for known in reversed(stored.checkpoints):
            if known.seq == head_seq and known.key_id == signer.key_id:
                return None
        batch = Batch(session_id, head_seq, (), stored.state_version)
        return self._sign(batch, stored, force=True)[0]

    async def read_checkpoints(self, session_id: str, *, since_seq: int = 0) -> list[Checkpoint]:
        """The session's checkpoints with ``seq > since_seq``, oldest first."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        since, _ = check_range(since_seq, None)
        await anyio.lowlevel.checkpoint()
        return [c for c in self._session(session_id).checkpoints if c.seq > since]

    def _apply(self, stored: _Session, batch: Batch, stamp: str) -> None:
        stored.records.extend(batch.records)
        if batch.records:
            stored.head_hash = batch.records[-1][HASH]
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
        for event in self._waiters.pop(batch.session_id, ()):
            event.set()

    async def delete(self, session_id: str) -> bool:
        """Remove a session and the blobs no other session uses; False if absent."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_session_id(session_id)
        stored = self._sessions.pop(session_id, None)
        await anyio.lowlevel.checkpoint()
        if stored is None:
            return False
        if self._checkpointer is not None:
            self._checkpointer.forget(session_id)
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
            found = [r for r in found if r[ENTRY_TYPE] in kinds]
        if agent_id is not None:
            found = [r for r in found if r[AGENT_ID] == agent_id]
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

    # -- ownership ---------------------------------------------------------------------------

    async def acquire(
        self,
        session_id: str,
        owner: str,
        *,
        lease_seconds: float,
        take_over: bool = False,
        replace_owner: str | None = None,
    ) -> Ownership:
        """Make ``owner`` the owner under a new epoch unless another live lease holds it."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_owner(owner)
        if replace_owner is not None:
            check_owner(replace_owner)
        lease = check_lease(lease_seconds)
        stored = self._session(session_id)
        now_s = time.time()
        if (
            not take_over
            and stored.owner is not None
            and stored.owner not in (owner, replace_owner)
            and stored.lease_until > now_s
        ):
            raise busy(session_id, stored.owner, stored.lease_until)
        stored.owner, stored.epoch, stored.lease_until = owner, stored.epoch + 1, now_s + lease
        await anyio.lowlevel.checkpoint()
        return Ownership(session_id, owner, stored.epoch, stored.lease_until)

    async def renew(
        self, owner: str, claims: Mapping[str, int], *, lease_seconds: float
    ) -> dict[str, float]:
        """Extend the leases ``owner`` still holds at the given epochs."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_owner(owner)
        lease = check_lease(lease_seconds)
        wanted = check_claims(claims)
        until = time.time() + lease
        kept = {}
        for sid, epoch in wanted.items():
            stored = self._sessions.get(sid)
            if stored is not None and stored.owner == owner and stored.epoch == epoch:
                stored.lease_until = kept[sid] = until
        await anyio.lowlevel.checkpoint()
        return kept

    async def release(self, session_id: str, owner: str, epoch: int) -> None:
        """End ``owner``'s lease if it still holds the session at ``epoch``."""
        self._check_open(ErrorCode.PERSIST_COMMIT_FAILED)
        check_owner(owner)
        check_claims({session_id: epoch})
        stored = self._sessions.get(session_id)
        if stored is not None and stored.owner == owner and stored.epoch == epoch:
            stored.owner, stored.lease_until = None, 0.0
        await anyio.lowlevel.checkpoint()

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        """The head once past ``after_seq`` (woken by the commit), or after ``timeout``."""
        self._check_open(ErrorCode.PERSIST_LOAD_FAILED)
        after, limit = check_wait(after_seq, timeout)
        stored = self._session(session_id)
        if len(stored.records) <= after:
            event = anyio.Event()
            waiters = self._waiters.setdefault(session_id, [])
            waiters.append(event)
            try:
                with anyio.move_on_after(limit):
                    await event.wait()
            finally:
                if event in waiters:
                    waiters.remove(event)
                    if not waiters and self._waiters.get(session_id) is waiters:
                        del self._waiters[session_id]
        else:
            await anyio.lowlevel.checkpoint()
        return len(self._session(session_id).records)
