"""Where runs live: one embedded SQLite database (``SQLiteStore``) holding every run as a
session, opened by id through a ``SessionHub``.

Each write of the run is acknowledged once it is on disk (the dispatcher's step entries by
the next commit, which :meth:`Run.checkpoint` waits for), so a run killed at any moment
keeps everything acknowledged before the kill. A step that was running at that moment is
closed as ``step_interrupted`` when the run is opened again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from kaizen_async import Session, SessionHub, SessionNotFoundError
from kaizen_async.stores import SQLiteStore

from ._report import shown

__all__ = ["Run", "RunNotFound", "Runs", "new_run_id"]


def new_run_id() -> str:
    """A short, readable, unique run id."""
    return f"py2go-{uuid.uuid4().hex[:10]}"


class RunNotFound(LookupError):
    """No run with that id in the store."""


@dataclass
class Run:
    """An open run: its session (leased from the hub)."""

    session: Session

    @property
    def run_id(self) -> str:
        return self.session.session_id

    async def checkpoint(self) -> None:
        """Return once everything written so far, posted step entries included, is durable."""
        await self.session.flush()


class Runs:
    """The runs of one store: ``async with Runs(path) as runs:``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hub: SessionHub | None = None

    def describe(self) -> str:
        return shown(str(self.path))

    def url(self) -> str:
        """The store as the ``kaizen`` command names it (``sqlite:///relative/path.db``)."""
        return f"sqlite:///{shown(str(self.path))}"  # an absolute path gets four slashes

    @property
    def hub(self) -> SessionHub:
        if self._hub is None:
            raise RuntimeError("use Runs inside `async with`")
        return self._hub

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(lambda: self.path.parent.mkdir(parents=True, exist_ok=True))
        hub = SessionHub(SQLiteStore(self.path))
        await hub.__aenter__()
        self._hub = hub
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        hub, self._hub = self._hub, None
        assert hub is not None
        return await hub.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def create(self, run_id: str) -> AsyncIterator[Run]:
        """A new run."""
        await self.hub.create(run_id, metadata={"kind": "py_to_go"})
        async with self.hub.open(run_id) as session:
            run = Run(session)
            try:
                yield run
            finally:
                with anyio.CancelScope(shield=True):
                    await run.checkpoint()

    @asynccontextmanager
    async def open(self, run_id: str) -> AsyncIterator[Run]:
        """An existing run, to carry on with (its interrupted steps closed as such)."""
        try:
            lease = self.hub.open(run_id)
            session = await lease.acquire()
        except SessionNotFoundError:
            raise RunNotFound(run_id) from None
        try:
            run = Run(session)
            try:
                yield run
            finally:
                with anyio.CancelScope(shield=True):
                    await run.checkpoint()
        finally:
            lease.release()

    @asynccontextmanager
    async def read(self, run_id: str) -> AsyncIterator[Session]:
        """An existing run whose recorded answers a replay reads."""
        try:
            lease = self.hub.open(run_id)
            session = await lease.acquire()
        except SessionNotFoundError:
            raise RunNotFound(run_id) from None
        try:
            yield session
        finally:
            lease.release()
