"""The ``checkpoints`` table of a ``.kaizen`` file: signed checkpoints beside the trajectory.

The table exists only in files saved with a signer (or holding checkpoints from a store),
so a file saved without one is exactly what it was before checkpoints existed, and the
schema version stays 2: a reader that does not know the table ignores it (schema 1 and 2
files load as before)::

    checkpoints(seq, head_hash, epoch, writer_id, time, key_id, signature, tree_index,
                tree_size, tree_path, session_id, PRIMARY KEY (seq, signature))

Blocking code, run inside the save's or load's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ._checkpoint import Checkpoint
from ._exceptions import KaizenValidationError, SessionCorruptedError

__all__ = ["read_checkpoints", "write_checkpoints"]

_CREATE = (
    "CREATE TABLE IF NOT EXISTS checkpoints (seq INTEGER NOT NULL, head_hash TEXT NOT NULL, "
    "epoch INTEGER NOT NULL, writer_id TEXT NOT NULL, time TEXT NOT NULL, "
    "key_id TEXT NOT NULL, signature BLOB NOT NULL, tree_index INTEGER NOT NULL, "
    "tree_size INTEGER NOT NULL, tree_path BLOB NOT NULL, session_id TEXT NOT NULL, "
    "PRIMARY KEY (seq, signature))"
)
_INSERT = "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT = (
    "SELECT session_id, seq, head_hash, epoch, writer_id, time, key_id, signature, "
    "tree_index, tree_size, tree_path FROM checkpoints ORDER BY seq, time"
)


def write_checkpoints(conn: sqlite3.Connection, checkpoints: Sequence[Checkpoint]) -> None:
    """Add ``checkpoints`` (those already there are kept once); no table without any."""
    if not checkpoints:
        return
    conn.execute(_CREATE)
    conn.executemany(
        _INSERT,
        [
            (
                c.seq,
                c.head_hash,
                c.epoch,
                c.writer_id,
                c.time,
                c.key_id,
                c.signature,
                c.tree_index,
                c.tree_size,
                c.tree_path,
                c.session_id,
            )
            for c in checkpoints
        ],
    )


def read_checkpoints(conn: sqlite3.Connection, tables: set[str], path: str) -> list[Checkpoint]:
    """The file's checkpoints, oldest first, each field checked."""
    if "checkpoints" not in tables:
        return []
    found = []
    for row in conn.execute(_SELECT):
        values: list[Any] = [bytes(v) if isinstance(v, memoryview) else v for v in row]
        try:
            found.append(Checkpoint(*values).checked())
        except (KaizenValidationError, TypeError) as exc:
            raise SessionCorruptedError(
                f"{path}: malformed checkpoint row: {exc}",
                seq=values[1] if type(values[1]) is int else None,
            ) from None
    return found
