"""A store wrapper for the hub tests: lets a test hold, fail and count store calls.

``ControlledStore`` wraps any :class:`~kaizen_async._storage.SessionStore` and passes every
call through, except that a test can hold commits (or loads) at a gate, make the next
commits or loads fail, and count what was called.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, Self

import anyio

from kaizen_async import ErrorCode, PersistError
from kaizen_async._storage import (
    Batch,
    Ownership,
    SessionInfo,
    SessionStore,
    StoredSession,
    StoreStatistics,
)
from kaizen_async._trajectory import Record


class ControlledStore:
    """A store that passes through to ``inner``, with gates, injected failures and counts."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.commit_gate: anyio.Event | None = None
        self.load_gate: anyio.Event | None = None
        self.commits_waiting = 0
        self.loads_waiting = 0
        self.fail_commits = 0
        self.fail_loads = 0
        self.commit_calls = 0
        self.load_calls = 0
        self.read_calls = 0
        self.batches: list[Batch] = []

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def create(
        self,
        batch: Batch,
        *,
        max_artifact_size: int,
        workspace_path: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        return await self.inner.create(
            batch,
            max_artifact_size=max_artifact_size,
            workspace_path=workspace_path,
            metadata=metadata,
        )

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        self.load_calls += 1
        if self.load_gate is not None:
            self.loads_waiting += 1
            try:
                await self.load_gate.wait()
            finally:
                self.loads_waiting -= 1
        if self.fail_loads:
            self.fail_loads -= 1
            raise PersistError("injected load failure", code=ErrorCode.PERSIST_LOAD_FAILED)
        return await self.inner.load(session_id, tail=tail)

    async def commit(self, batch: Batch) -> None:
        self.commit_calls += 1
        if self.commit_gate is not None:
            self.commits_waiting += 1
            try:
                await self.commit_gate.wait()
            finally:
                self.commits_waiting -= 1
        if self.fail_commits:
            self.fail_commits -= 1
            raise PersistError("injected commit failure", code=ErrorCode.PERSIST_COMMIT_FAILED)
        await self.inner.commit(batch)
        self.batches.append(batch)

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
        self.read_calls += 1
        return await self.inner.read(
            session_id,
            since_seq=since_seq,
            until_seq=until_seq,
            entry_types=entry_types,
            agent_id=agent_id,
            limit=limit,
            newest=newest,
        )

    async def read_blob(self, digest: str) -> bytes:
        return await self.inner.read_blob(digest)

    async def info(self, session_id: str) -> SessionInfo:
        return await self.inner.info(session_id)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        return await self.inner.list_sessions(limit=limit, after=after)

    async def delete(self, session_id: str) -> bool:
        return await self.inner.delete(session_id)

    def statistics(self) -> StoreStatistics:
        return self.inner.statistics()

    async def acquire(
        self,
        session_id: str,
        owner: str,
        *,
        lease_seconds: float,
        take_over: bool = False,
        replace_owner: str | None = None,
    ) -> Ownership:
        return await self.inner.acquire(
            session_id,
            owner,
            lease_seconds=lease_seconds,
            take_over=take_over,
            replace_owner=replace_owner,
        )

    async def renew(
        self, owner: str, claims: Mapping[str, int], *, lease_seconds: float
    ) -> dict[str, float]:
        return await self.inner.renew(owner, claims, lease_seconds=lease_seconds)

    async def release(self, session_id: str, owner: str, epoch: int) -> None:
        await self.inner.release(session_id, owner, epoch)

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        return await self.inner.wait_for_commit(session_id, after_seq, timeout=timeout)
