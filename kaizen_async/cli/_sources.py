"""Reading a named session for the command line, without ever writing to it.

A :class:`Source` gives the commands one view of a session whether it lives in a ``.kaizen``
file or in a store: its verified records, state and artifacts. A file is read whole and
verified on open (hash chain, state, blobs); nothing is appended to it, not even the
``session_loaded`` entry a :class:`~kaizen_async.Session` would record in memory.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from .._canonical import sha256_hex
from .._checkpoint import Checkpoint
from .._exceptions import SessionCorruptedError, SessionNotFoundError
from .._persistence import read_session
from .._state import SessionCore
from .._storage import SessionInfo, SessionStore
from .._trajectory import AGENT_ID, ENTRY_TYPE, Record
from ..stores import SQLiteStore
from ._errors import BadInput
from ._naming import SessionName, StoreURL
from ._output import Progress

__all__ = [
    "FileSource",
    "Source",
    "StoreSource",
    "filter_records",
    "open_source",
    "open_store",
    "store_for",
]


def filter_records(
    records: Sequence[Record],
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
        records = [r for r in records if r[ENTRY_TYPE] in kinds]
    if agent_id is not None:
        records = [r for r in records if r[AGENT_ID] == agent_id]
    if limit is not None:
        records = records[-limit:]
    return list(records) if type(records) is not list else records


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

    async def checkpoints(self) -> list[Checkpoint]:
        """The signed checkpoints stored beside the session (call before :meth:`core`: a
        store commits each with the entries it covers, so none lies past the head read
        after it)."""
        return list((await self.core()).checkpoints)

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
        if os.path.isdir(name.path):
            raise BadInput(f"{name.path} is a directory, not a .kaizen file")
        core, version = read_session(name.path, progress, read_only=True)
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


#: entries read from a store per query when the whole history is wanted
PAGE = 5_000


class StoreSource(Source):
    """A session in a store, read through the store's own queries (never through a hub:
    opening a session in a hub may write to it, and another process may own it)."""

    def __init__(
        self,
        name: SessionName,
        store: SessionStore,
        info: SessionInfo,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(name)
        self.store = store
        self.info = info
        self._progress = progress
        self._core: SessionCore | None = None

    @property
    def kind(self) -> str:
        return "sqlite store"

    @property
    def session_id(self) -> str:
        return self.info.session_id

    async def entries(
        self,
        *,
        since_seq: int | None = None,
        entry_types: Collection[str] | None = None,
        agent_id: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        if limit is not None and limit <= 0:
            return []
        return await self.store.read(
            self.session_id,
            since_seq=since_seq or 0,
            entry_types=entry_types or None,
            agent_id=agent_id,
            limit=limit,
            newest=limit is not None,
        )

    async def core(self) -> SessionCore:
        """Every entry (a page at a time), replayed and checked against what the store says
        the session is: its head, state, state version, artifacts and blob digests."""
        if self._core is not None:
            return self._core
        session_id = self.session_id
        stored = await self.store.load(session_id, tail=0)
        head = stored.info.trajectory_length
        records: list[Record] = []
        while len(records) < head:
            page = await self.store.read(
                session_id, since_seq=len(records), until_seq=head, limit=PAGE
            )
            if not page:
                break
            records.extend(page)
            if self._progress is not None:
                self._progress(len(records), head)
        where = f"session {session_id!r} in {self.name.store}"
        core = SessionCore.replay(
            records,
            session_id=session_id,
            max_artifact_size=stored.max_artifact_size,
            workspace_path=stored.workspace_path,
        )
        if len(records) != head or core.head != stored.head_hash:
            raise SessionCorruptedError(
                f"{where}: the entries end at seq {len(records)} ({core.head[:12]}) but the "
                f"store's head is seq {head} ({stored.head_hash[:12]})"
            )
        if core.version != stored.info.state_version or core.state != stored.state:
            raise SessionCorruptedError(f"{where}: the stored state differs from replay")
        if core.artifacts != stored.artifacts:
            raise SessionCorruptedError(f"{where}: the stored artifacts differ from replay")
        for digest in set(core.artifacts.values()):
            data = await self.store.read_blob(digest)
            if sha256_hex(data) != digest:
                raise SessionCorruptedError(f"{where}: blob {digest[:12]} does not match")
            core.blobs[digest] = data
        self._core = core
        return core

    async def checkpoints(self) -> list[Checkpoint]:
        reader: Any = getattr(self.store, "read_checkpoints", None)
        return [] if reader is None else list(await reader(self.session_id))

    async def verify(self) -> int:
        return len((await self.core()).records)

    async def facts(self) -> dict[str, Any]:
        info = self.info
        return {
            "store": str(self.name.store),
            "store_path": self.name.store.abspath if self.name.store else None,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "metadata": dict(info.metadata),
        }


def _check_database(url: StoreURL, create: bool) -> None:
    if not create and not os.path.exists(url.path):
        raise BadInput(f"no such database file: {url.path} (from {url})")
    if os.path.isdir(url.path):
        raise BadInput(f"{url.path} is a directory, not a database file (from {url})")


@asynccontextmanager
async def open_store(url: StoreURL, *, create: bool = False) -> AsyncIterator[SessionStore]:
    """Open the store at ``url``; a missing database file is an error unless ``create``."""
    async with store_for(url, create=create) as store:
        yield store


def store_for(url: StoreURL, *, create: bool = False) -> SQLiteStore:
    """The store at ``url``, not yet opened (a SessionHub opens the store it is given)."""
    _check_database(url, create)
    return SQLiteStore(url.path)


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
            raise SessionCorruptedError(
                message, seq=exc.seq, details=exc.details, code=exc.code
            ) from None
        yield source
        return
    assert name.store is not None and name.session_id is not None
    async with open_store(name.store) as store:
        try:
            info = await store.info(name.session_id)
        except SessionNotFoundError:
            raise BadInput(
                f"no session {name.session_id!r} in {name.store} "
                f"(kaizen show {name.store} lists them)"
            ) from None
        yield StoreSource(name, store, info, progress)
