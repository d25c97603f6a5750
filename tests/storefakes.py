"""Stores for the hub tests: a wrapper that lets a test hold, fail and count store calls.

``ControlledStore`` wraps any :class:`~kaizen_async._storage.SessionStore` and passes every
call through, except that a test can hold commits (or loads) at a gate, make the next
commits or loads fail, and count what was called.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, Self

import anyio

from kaizen_async import (
    ArtifactNotFoundError,
    ErrorCode,
    PersistError,
    SessionBusyError,
    SessionExistsError,
    SessionFencedError,
    SessionNotFoundError,
)
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
        for event in stored.pop("waiters", ()):
            event.set()

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
        if batch.epoch is not None and batch.epoch != s.get("epoch", 0):
            raise SessionFencedError("fenced", details={"owner": s.get("owner")})
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

    async def acquire(
        self,
        session_id: str,
        owner: str,
        *,
        lease_seconds: float,
        take_over: bool = False,
        replace_owner: str | None = None,
    ) -> Ownership:
        await anyio.lowlevel.checkpoint()
        s = self._get(session_id)
        now = time.time()
        holder = s.get("owner")
        if (
            not take_over
            and holder not in (None, owner, replace_owner)
            and s.get("lease_until", 0.0) > now
        ):
            raise SessionBusyError(f"owned by {holder}", details={"owner": holder})
        s["owner"], s["epoch"], s["lease_until"] = owner, s.get("epoch", 0) + 1, now + lease_seconds
        return Ownership(session_id, owner, s["epoch"], s["lease_until"])

    async def renew(
        self, owner: str, claims: Mapping[str, int], *, lease_seconds: float
    ) -> dict[str, float]:
        await anyio.lowlevel.checkpoint()
        kept = {}
        for sid, epoch in claims.items():
            s = self.sessions.get(sid)
            if s is not None and s.get("owner") == owner and s.get("epoch") == epoch:
                s["lease_until"] = kept[sid] = time.time() + lease_seconds
        return kept

    async def release(self, session_id: str, owner: str, epoch: int) -> None:
        await anyio.lowlevel.checkpoint()
        s = self.sessions.get(session_id)
        if s is not None and s.get("owner") == owner and s.get("epoch") == epoch:
            s["owner"], s["lease_until"] = None, 0.0

    async def wait_for_commit(self, session_id: str, after_seq: int, *, timeout: float) -> int:
        s = self._get(session_id)
        if len(s["records"]) <= after_seq:
            event = anyio.Event()
            s.setdefault("waiters", []).append(event)
            with anyio.move_on_after(timeout):
                await event.wait()
        else:
            await anyio.lowlevel.checkpoint()
        return len(self._get(session_id)["records"])
