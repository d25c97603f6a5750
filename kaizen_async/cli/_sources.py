"""Reading a named session for the command line, without ever writing to it.

A :class:`Source` gives the commands one view of a session whether it lives in a ``.kaizen``
file or in a store: its verified records, state and artifacts. A file is read whole and
verified on open (hash chain, state, blobs); nothing is appended to it, not even the
``session_loaded`` entry a :class:`~kaizen_async.Session` would record in memory.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from .._exceptions import SessionCorruptedError
from .._persistence import read_session
from .._state import SessionCore
from .._trajectory import Record
from ._errors import BadInput
from ._naming import SessionName
from ._output import Progress

__all__ = ["FileSource", "Source", "filter_records", "open_source"]


def filter_records(
    records: list[Record],
    *,
    since_seq: int | None = None,
    entry_types: Collection[str] | None = None,
    agent_id: str | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Entries with ``seq > since_seq`` of those types and agent; the last ``limit`` of them
    (the same rules as :meth:`Session.get_trajectory`)."""
    if limit is not None and limit <= 0:
        return []
    if since_seq is not None:
        records = records[max(since_seq, 0) :]
    if entry_types:
        kinds = set(entry_types)
        records = [r for r in records if r.entry_type in kinds]
    if agent_id is not None:
        records = [r for r in records if r.agent_id == agent_id]
    if limit is not None:
        records = records[-limit:]
    return records


class Source(ABC):
    """One session, read-only, as the commands see it."""

    def __init__(self, name: SessionName) -> None:
        self.name = name

    @property
    @abstractmethod
    def kind(self) -> str:
        """What holds the session: ``file`` or ``sqlite store``."""

    @abstractmethod
    async def core(self) -> SessionCore:
        """The whole session in memory, verified: records, state, artifacts and blobs."""

    async def entries(
        self,
        *,
        since_seq: int | None = None,
        entry_types: Collection[str] | None = None,
        agent_id: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Filtered entries, oldest first (see :func:`filter_records`)."""
        core = await self.core()
        return filter_records(
            core.records,
            since_seq=since_seq,
            entry_types=entry_types,
            agent_id=agent_id,
            limit=limit,
        )

    @abstractmethod
    async def verify(self) -> int:
        """Check the chain, the state and the artifact digests; returns the entries checked.

        Raises :class:`SessionCorruptedError` naming the first bad seq.
        """

    async def facts(self) -> dict[str, Any]:
        """What the container says about the session beyond its entries (schema, times)."""
        return {}


class FileSource(Source):
    """A ``.kaizen`` file, read and verified once."""

    def __init__(self, name: SessionName, core: SessionCore, facts: dict[str, Any]) -> None:
        super().__init__(name)
        self._core = core
        self._facts = facts

    @property
    def kind(self) -> str:
        return "file"

    @classmethod
    def read(cls, name: SessionName, progress: Progress | None = None) -> FileSource:
        """Read and verify ``name.path`` (``FileNotFoundError``, ``SessionCorruptedError``,
        ``SchemaMismatchError``)."""
        assert name.path is not None
        core, version = read_session(name.path, progress)
        facts = {
            "path": os.path.abspath(name.path),
            "schema_version": version,
            "size_bytes": os.path.getsize(name.path),
        }
        return cls(name, core, facts)

    async def core(self) -> SessionCore:
        return self._core

    async def verify(self) -> int:
        # reading the file verified everything: chain, metadata, state, blob digests
        return len(self._core.records)

    async def facts(self) -> dict[str, Any]:
        return dict(self._facts)


@asynccontextmanager
async def open_source(
    name: SessionName, *, progress: Progress | None = None
) -> AsyncIterator[Source]:
    """Open a named session for reading; ``progress`` is told how verification goes."""
    if name.path is not None:
        try:
            source = FileSource.read(name, progress)
        except SessionCorruptedError as exc:
            message = exc.message if name.path in exc.message else f"{name.path}: {exc.message}"
            raise SessionCorruptedError(message, seq=exc.seq, details=exc.details) from None
        yield source
        return
    raise BadInput(f"{name.store}: stores are not available in this build yet")
