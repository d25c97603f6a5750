"""What the stores with a writer task share: every write is a request to their
:class:`~kaizen_async.stores._group_commit.GroupCommitter`, checked in the caller first.

``SQLiteStore`` commits a round of requests in one transaction, ``PostgresStore`` in one
statement; each implements ``_transact`` for its engine and inherits the requests here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._checkpoint import Checkpoint
from .._checkpointing import Checkpointer
from .._storage import Batch, Ownership, SessionInfo, StoreStatistics
from ._common import (
    check_batch,
    check_claims,
    check_create,
    check_lease,
    check_owner,
    check_session_id,
)
from ._group_commit import GroupCommitter

__all__ = ["CommittingStore"]


class CommittingStore:
    """The write requests of a store whose writer task groups them (see the module)."""

    _committer: GroupCommitter
    _checkpointer: Checkpointer | None

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
        batch, max_artifact_size, workspace, meta = check_create(
            batch, max_artifact_size, workspace_path, metadata
        )
        info: SessionInfo = await self._committer.submit(
            "create", (batch, max_artifact_size, workspace, meta.decode())
        )
        return info

    async def commit(self, batch: Batch) -> None:
        """Append ``batch`` once it is durable, grouped with whatever else is queued.

        Raises ``persist_conflict`` when the batch does not continue the stored head,
        :class:`~kaizen_async.SessionNotFoundError` for an unknown session, and
        ``persist_commit_failed`` when the commit failed: nothing of it is stored, or (on
        PostgreSQL) the connection dropped before the answer and the session reloads to
        find out.
        """
        check_batch(batch)
        await self._committer.submit("commit", batch)

    def _post_commit(self, batch: Batch) -> list[Any]:
        """Queue a store-backed session's own batch (built by its core, so not checked
        again) and return the firm slot its outcome wakes: None once durable, else the
        exception (what :meth:`commit` would raise). The session's actor waits on it
        without a cancel scope, so a cancellation cannot abandon the commit half-way."""
        return self._committer.post("commit", batch)

    async def delete(self, session_id: str) -> bool:
        """Remove a session, its entries and the blobs no other session uses."""
        check_session_id(session_id)
        deleted: bool = await self._committer.submit("delete", session_id)
        return deleted

    async def checkpoint(self, session_id: str) -> Checkpoint | None:
        """Sign the session's head now, in a commit of its own, unless this store's key
        signed that head already (then that checkpoint is not repeated: None). What a
        store-backed session's close calls. None without a signer."""
        check_session_id(session_id)
        if self._checkpointer is None:
            return None
        made: Checkpoint | None = await self._committer.submit("checkpoint", session_id)
        return made

    def statistics(self) -> StoreStatistics:
        committer = self._committer
        return StoreStatistics(
            commits=committer.commits, batches=committer.batches, queued=committer.queued
        )

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
        """Make ``owner`` the owner under a new epoch unless another live lease holds it
        (:class:`~kaizen_async.SessionBusyError`); in the writer's round, the lease timed
        by the database's clock on PostgreSQL."""
        check_session_id(session_id)
        check_owner(owner)
        if replace_owner is not None:
            check_owner(replace_owner)
        lease = check_lease(lease_seconds)
        ownership: Ownership = await self._committer.submit(
            "acquire", (session_id, owner, lease, bool(take_over), replace_owner)
        )
        return ownership

    async def renew(
        self, owner: str, claims: Mapping[str, int], *, lease_seconds: float
    ) -> dict[str, float]:
        """Extend the leases ``owner`` still holds at the given epochs."""
        check_owner(owner)
        lease = check_lease(lease_seconds)
        wanted = check_claims(claims)
        if not wanted:
            return {}
        kept: dict[str, float] = await self._committer.submit("renew", (owner, wanted, lease))
        return kept

    async def release(self, session_id: str, owner: str, epoch: int) -> None:
        """End ``owner``'s lease if it still holds the session at ``epoch``."""
        check_owner(owner)
        check_claims({session_id: epoch})
        await self._committer.submit("release", (session_id, owner, epoch))
