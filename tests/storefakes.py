"""Stores for the hub tests: a wrapper that lets a test hold, fail and count store calls.

``ControlledStore`` wraps any :class:`~kaizen_async._storage.SessionStore` and passes every
call through, except that a test can hold commits (or loads) at a gate, make the next
commits or loads fail, and count what was called.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, Self

import anyio

from kaizen_async import (
    ArtifactNotFoundError,
    ErrorCode,
    PersistError,
    SessionExistsError,
    SessionNotFoundError,
)
from kaizen_async._storage import Batch, SessionInfo, SessionStore, StoredSession, StoreStatistics
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


class FakeStore:
    """A small in-memory store following the contract (used until the real stores land)."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.commits = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def _get(self, session_id: str) -> dict[str, Any]:
        if session_id not in self.sessions:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return self.sessions[session_id]

    def _apply(self, stored: dict[str, Any], batch: Batch) -> None:
        stored["records"].extend(batch.records)
        if batch.records:
            stored["head"] = batch.records[-1].hash
        stored["version"] = batch.state_version
        for key, value in batch.state.items():
            if value is None:
                stored["state"].pop(key, None)
            else:
                stored["state"][key] = value
        for name, digest in batch.artifacts.items():
            if digest is None:
                stored["artifacts"].pop(name, None)
            else:
                stored["artifacts"][name] = digest
        self.blobs.update(batch.blobs)
        if batch.open_steps is not None:
            stored["open_steps"] = tuple(batch.open_steps)
        stored["updated"] = str(anyio.current_time())
        self.commits += 1

    async def create(
        self,
        batch: Batch,
        *,
        max_artifact_size: int,
        workspace_path: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionInfo:
        await anyio.lowlevel.checkpoint()
        if batch.session_id in self.sessions:
            raise SessionExistsError(f"session {batch.session_id!r} exists")
        stored: dict[str, Any] = {
            "records": [],
            "head": "0" * 64,
            "version": 0,
            "state": {},
            "artifacts": {},
            "open_steps": (),
            "max": max_artifact_size,
            "workspace": workspace_path,
            "metadata": dict(metadata or {}),
            "created": str(anyio.current_time()),
        }
        self.sessions[batch.session_id] = stored
        self._apply(stored, batch)
        return self._info(batch.session_id)

    def _info(self, session_id: str) -> SessionInfo:
        s = self._get(session_id)
        return SessionInfo(
            session_id, s["created"], s["updated"], len(s["records"]), s["version"], s["metadata"]
        )

    async def load(self, session_id: str, *, tail: int = 256) -> StoredSession:
        await anyio.lowlevel.checkpoint()
        s = self._get(session_id)
        records = s["records"]
        return StoredSession(
            self._info(session_id),
            s["head"],
            s["max"],
            s["workspace"],
            dict(s["state"]),
            dict(s["artifacts"]),
            s["open_steps"],
            records[len(records) - tail :] if tail else [],
        )

    async def commit(self, batch: Batch) -> None:
        await anyio.lowlevel.checkpoint()
        s = self._get(batch.session_id)
        if batch.base_seq != len(s["records"]):
            raise PersistError("conflict", code=ErrorCode.PERSIST_CONFLICT)
        self._apply(s, batch)

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
        await anyio.lowlevel.checkpoint()
        found = self._get(session_id)["records"][since_seq:until_seq]
        if entry_types is not None:
            found = [r for r in found if r.entry_type in entry_types]
        if agent_id is not None:
            found = [r for r in found if r.agent_id == agent_id]
        if limit is not None:
            found = (found[-limit:] if limit else []) if newest else found[:limit]
        return list(found)

    async def read_blob(self, digest: str) -> bytes:
        await anyio.lowlevel.checkpoint()
        if digest not in self.blobs:
            raise ArtifactNotFoundError(f"no blob {digest}")
        return self.blobs[digest]

    async def info(self, session_id: str) -> SessionInfo:
        return self._info(session_id)

    async def list_sessions(
        self, *, limit: int | None = None, after: str | None = None
    ) -> list[SessionInfo]:
        ids = sorted(i for i in self.sessions if after is None or i > after)
        return [self._info(i) for i in ids[:limit]]

    async def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self.commits, self.commits, 0)
