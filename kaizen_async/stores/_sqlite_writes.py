"""The SQLite store's writes: the statements and the staging of one group transaction.

Blocking code, run by the writer in a worker thread inside ``BEGIN IMMEDIATE``. Each
batch first moves its session's head with a guarded update (0 rows: that batch alone is
refused); the rows of the accepted batches are then written with one ``executemany`` per
table, built as plain tuples (no per-row work beyond that).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .._exceptions import KaizenError
from .._storage import Batch, SessionInfo
from ._common import check_metadata_text, conflict, exists, not_found
from ._sqlite_reads import HEAD

__all__ = ["DELETE_SESSION", "Staged", "stage_commit", "stage_create"]

_ADVANCE = (
    "UPDATE sessions SET head_seq = ?, head_hash = ?, state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) "
    "WHERE session_id = ? AND head_seq = ? AND head_hash = ?"
)
_TOUCH = (  # a batch without records (only open steps or the state version changed)
    "UPDATE sessions SET state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) WHERE session_id = ? AND head_seq = ?"
)
_CREATE = (
    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING"
)
_INSERT_ENTRIES = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_STATE = (
    "INSERT INTO state VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value"
)
_DELETE_STATE = "DELETE FROM state WHERE session_id = ? AND key = ?"
_UPSERT_ARTIFACT = (
    "INSERT INTO artifacts VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, name) DO UPDATE SET digest = excluded.digest"
)
_DELETE_ARTIFACT = "DELETE FROM artifacts WHERE session_id = ? AND name = ?"
_INSERT_BLOB = "INSERT OR IGNORE INTO blobs VALUES (?, ?)"
_INSERT_REF = "INSERT OR IGNORE INTO session_blobs VALUES (?, ?)"
DELETE_SESSION = (
    "DELETE FROM sessions WHERE session_id = ?1",
    "DELETE FROM entries WHERE session_id = ?1",
    "DELETE FROM state WHERE session_id = ?1",
    "DELETE FROM artifacts WHERE session_id = ?1",
    # blobs this session uses and no other session does
    "DELETE FROM blobs WHERE digest IN (SELECT mine.digest FROM session_blobs AS mine "
    "WHERE mine.session_id = ?1 AND NOT EXISTS (SELECT 1 FROM session_blobs AS other "
    "WHERE other.digest = mine.digest AND other.session_id <> ?1))",
    "DELETE FROM session_blobs WHERE session_id = ?1",
)


class Staged:
    """The rows of the batches accepted so far in a transaction, written by :meth:`flush`.

    State and artifact changes are keyed by (session, key) so that two batches of one
    session in one transaction leave the later value, whatever the statement order.
    """

    __slots__ = ("artifacts", "blobs", "entries", "refs", "state")

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.state: dict[tuple[str, str], bytes | None] = {}
        self.artifacts: dict[tuple[str, str], str | None] = {}
        self.blobs: list[tuple[str, bytes]] = []
        self.refs: list[tuple[str, str]] = []

    def add(self, batch: Batch) -> None:
        sid = batch.session_id
        self.entries.extend(map((sid,).__add__, batch.records))
        if batch.state:
            state = self.state
            for key, value in batch.state.items():
                state[sid, key] = value
        if batch.artifacts:
            artifacts = self.artifacts
            for name, digest in batch.artifacts.items():
                artifacts[sid, name] = digest
                if digest is not None:
                    self.refs.append((sid, digest))
        if batch.blobs:
            self.blobs.extend(batch.blobs.items())
            self.refs.extend((sid, digest) for digest in batch.blobs)

    def flush(self, conn: sqlite3.Connection) -> None:
        if self.entries:
            conn.executemany(_INSERT_ENTRIES, self.entries)
            self.entries = []
        if self.state:
            items = self.state.items()
            conn.executemany(_UPSERT_STATE, [(s, k, v) for (s, k), v in items if v is not None])
            deleted = [(s, k) for (s, k), v in items if v is None]
            if deleted:
                conn.executemany(_DELETE_STATE, deleted)
            self.state = {}
        if self.artifacts:
            items_a = self.artifacts.items()
            written = [(s, n, d) for (s, n), d in items_a if d is not None]
            if written:
                conn.executemany(_UPSERT_ARTIFACT, written)
            removed = [(s, n) for (s, n), d in items_a if d is None]
            if removed:
                conn.executemany(_DELETE_ARTIFACT, removed)
            self.artifacts = {}
        if self.blobs:
            conn.executemany(_INSERT_BLOB, self.blobs)
            self.blobs = []
        if self.refs:
            conn.executemany(_INSERT_REF, self.refs)
            self.refs = []


def _steps_json(steps: tuple[int, ...] | None) -> str | None:
    return None if steps is None else "[" + ",".join(map(str, steps)) + "]"


def stage_commit(
    conn: sqlite3.Connection, batch: Batch, stamp: str, staged: Staged
) -> KaizenError | None:
    sid = batch.session_id
    records = batch.records
    steps = _steps_json(batch.open_steps)
    if records:
        last = records[-1]
        changed = conn.execute(
            _ADVANCE,
            (
                last[0],
                last[6],
                batch.state_version,
                stamp,
                steps,
                sid,
                batch.base_seq,
                records[0][5],
            ),
        ).rowcount
    else:
        changed = conn.execute(
            _TOUCH, (batch.state_version, stamp, steps, sid, batch.base_seq)
        ).rowcount
    if changed != 1:
        row = conn.execute(HEAD, (sid,)).fetchone()
        return not_found(sid) if row is None else conflict(sid, batch.base_seq, row[0])
    staged.add(batch)
    return None


def stage_create(
    conn: sqlite3.Connection,
    payload: tuple[Batch, int, str | None, str],
    stamp: str,
    staged: Staged,
) -> KaizenError | SessionInfo:
    batch, max_artifact_size, workspace, meta = payload
    sid = batch.session_id
    last = batch.records[-1]
    row = (
        sid,
        stamp,
        stamp,
        last[0],
        last[6],
        batch.state_version,
        max_artifact_size,
        workspace,
        meta,
        _steps_json(batch.open_steps) or "[]",
    )
    if conn.execute(_CREATE, row).rowcount != 1:
        return exists(sid)
    staged.add(batch)
    return SessionInfo(
        sid, stamp, stamp, last[0], batch.state_version, check_metadata_text(sid, meta)
    )
