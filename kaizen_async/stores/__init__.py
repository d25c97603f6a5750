"""Session stores: where a hub's sessions live between (and across) processes.

``SessionStore`` is the contract (see :mod:`kaizen_async._storage`); ``MemoryStore`` keeps
it in memory (tests, in-memory hubs) and ``SQLiteStore`` in one durable SQLite file holding
many sessions, with group commit across sessions; ``PostgresStore`` in a PostgreSQL
database that several processes share (driver: ``pip install "kaizen-async[postgres]"``).
"""

from __future__ import annotations

from .._storage import Batch as Batch
from .._storage import CheckpointStore as CheckpointStore
from .._storage import SessionInfo as SessionInfo
from .._storage import SessionStore as SessionStore
from .._storage import StoredSession as StoredSession
from .._storage import StoreStatistics as StoreStatistics
from ._memory import MemoryStore as MemoryStore
from ._postgres import PostgresStore as PostgresStore
from ._sqlite import SQLiteStore as SQLiteStore
from ._verify import verify_stored as verify_stored

__all__ = [
    "Batch",
    "CheckpointStore",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "StoreStatistics",
    "StoredSession",
    "verify_stored",
]
