"""Where runs live: one ``.kaizen`` file per run in the store directory, saved
incrementally after every step of the job (each save appends only what is new).

A run that was killed loses only what happened after its last save.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from kaizen_async import Session

__all__ = ["Run", "RunNotFound", "Runs", "new_run_id"]


def new_run_id() -> str:
    """A short, readable, unique run id."""
    return f"py2go-{uuid.uuid4().hex[:10]}"


class RunNotFound(LookupError):
    """No run with that id in the store."""


@dataclass
class Run:
    """An open run: its session and how to make what it has done durable."""

    session: Session
    path: Path

    @property
    def run_id(self) -> str:
        return self.session.session_id

    async def checkpoint(self) -> None:
        """Make everything written so far durable."""
        await self.session.save(self.path)


class Runs:
    """The runs of one store (a directory of ``.kaizen`` files)."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def describe(self) -> str:
        return f"{self.store}/<run>.kaizen"

    def _path(self, run_id: str) -> Path:
        return self.store / f"{run_id}.kaizen"

    def exists(self, run_id: str) -> bool:
        return self._path(run_id).is_file()

    @asynccontextmanager
    async def create(self, run_id: str) -> AsyncIterator[Run]:
        self.store.mkdir(parents=True, exist_ok=True)
        async with Session(run_id) as session:
            run = Run(session, self._path(run_id))
            await run.checkpoint()
            try:
                yield run
            finally:
                await run.checkpoint()

    @asynccontextmanager
    async def open(self, run_id: str) -> AsyncIterator[Run]:
        if not self.exists(run_id):
            raise RunNotFound(run_id)
        async with Session.load(self._path(run_id)) as session:
            run = Run(session, self._path(run_id))
            try:
                yield run
            finally:
                await run.checkpoint()

    @asynccontextmanager
    async def read(self, run_id: str) -> AsyncIterator[Session]:
        """A run to read (replay): never written back."""
        if not self.exists(run_id):
            raise RunNotFound(run_id)
        async with Session.load(self._path(run_id), read_only=True) as session:
            yield session
