"""The SQLite store's writes: the statements and the staging of one group transaction.

Blocking code, run by the writer in a worker thread inside ``BEGIN IMMEDIATE``. Each
batch first moves its session's head with a guarded update (0 rows: that batch alone is
refused); the rows of the accepted batches are then written with one ``executemany`` per
table, built as plain tuples (no per-row work beyond that).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import orjson

from .._checkpointing import SignedTree
from .._exceptions import KaizenError
from .._storage import Batch, Ownership, SessionInfo
from ._common import busy, check_metadata_text, conflict, exists, fenced, not_found

__all__ = [
    "DELETE_SESSION",
    "Staged",
    "acquire",
    "next_tree_id",
    "release",
    "renew",
    "stage_checkpoint",
    "stage_commit",
    "stage_create",
    "write_trees",
]

_ADVANCE = (  # behind the head guard and, for an owner's batch, the epoch (fencing)
    "UPDATE sessions SET head_seq = ?, head_hash = ?, state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) "
    "WHERE session_id = ? AND head_seq = ? AND head_hash = ? AND (?9 IS NULL OR epoch = ?9)"
)
_ADVANCE_SIGNED = (  # the same, and the batch's head becomes the session's latest checkpoint
    "UPDATE sessions SET head_seq = ?, head_hash = ?, state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json), checkpoint_tree = ?, checkpoint_index = ? "
    "WHERE session_id = ? AND head_seq = ? AND head_hash = ? AND (?11 IS NULL OR epoch = ?11)"
)
_TOUCH = (  # a batch without records (only open steps or the state version changed)
    "UPDATE sessions SET state_version = ?, updated_at = ?, "
    "open_steps_json = coalesce(?, open_steps_json) WHERE session_id = ? AND head_seq = ? "
    "AND (?6 IS NULL OR epoch = ?6)"
)
_CREATE = (
    "INSERT INTO sessions (session_id, created_at, updated_at, head_seq, head_hash, "
    "state_version, max_artifact_size, workspace_path, metadata_json, open_steps_json) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING"
)
_OWNER = "SELECT head_seq, epoch, owner, lease_until FROM sessions WHERE session_id = ?"
_ACQUIRE = "UPDATE sessions SET owner = ?, epoch = epoch + 1, lease_until = ? WHERE session_id = ?"
_RENEW = "UPDATE sessions SET lease_until = ? WHERE session_id = ? AND owner = ? AND epoch = ?"
_RELEASE = (
    "UPDATE sessions SET owner = NULL, lease_until = 0 "
    "WHERE session_id = ? AND owner = ? AND epoch = ?"
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
    "DELETE FROM checkpoints WHERE session_id = ?1",
)
_INSERT_TREE = "INSERT INTO checkpoint_trees VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_CHECKPOINT = "INSERT INTO checkpoints VALUES (?, ?, ?, ?)"
_SET_LATEST = (  # an explicit checkpoint, unless this transaction signed a newer head
    "UPDATE sessions SET checkpoint_tree = ?, checkpoint_index = ? "
    "WHERE session_id = ? AND (checkpoint_tree IS NULL OR checkpoint_tree < ?)"
)
_NEXT_TREE = "SELECT coalesce(max(tree_id), 0) + 1 FROM checkpoint_trees"
_HEAD_SIGNED = (
    "SELECT s.head_seq, s.head_hash, s.checkpoint_index, t.key_id, t.heads FROM sessions AS s "
    "LEFT JOIN checkpoint_trees AS t ON t.tree_id = s.checkpoint_tree WHERE s.session_id = ?"
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
    conn: sqlite3.Connection,
    batch: Batch,
    stamp: str,
    staged: Staged,
    mark: tuple[int, int, int] | None = None,
) -> KaizenError | None:
    """Move the session's head (guarded) and stage the batch's rows; with ``mark``
    (epoch, tree id, leaf index) its new head also becomes the session's latest
    checkpoint, in the same guarded update."""
    sid = batch.session_id
    records = batch.records
    steps = _steps_json(batch.open_steps)
    if records:
        last = records[-1]
        if mark is None:
            params: tuple[Any, ...] = (
                last[0],
                last[6],
                batch.state_version,
                stamp,
                steps,
                sid,
                batch.base_seq,
                records[0][5],
                batch.epoch,
            )
            changed = conn.execute(_ADVANCE, params).rowcount
        else:
            params = (
                last[0],
                last[6],
                batch.state_version,
                stamp,
                steps,
                mark[1],
                mark[2],
                sid,
                batch.base_seq,
                records[0][5],
                batch.epoch,
            )
            changed = conn.execute(_ADVANCE_SIGNED, params).rowcount
    else:
        changed = conn.execute(
            _TOUCH, (batch.state_version, stamp, steps, sid, batch.base_seq, batch.epoch)
        ).rowcount
    if changed != 1:
        row = conn.execute(_OWNER, (sid,)).fetchone()
        if row is None:
            return not_found(sid)
        if batch.epoch is not None and row[1] != batch.epoch:
            return fenced(sid, batch.epoch, row[1], row[2])
        return conflict(sid, batch.base_seq, row[0])
    staged.add(batch)
    return None


def acquire(
    conn: sqlite3.Connection, payload: tuple[str, str, float, bool, str | None]
) -> KaizenError | Ownership:
    """Take a session for ``owner`` unless another owner's lease runs (or ``take_over``).
    Times are this machine's clock: every process on one SQLite file shares it."""
    sid, owner, lease, take_over, replace = payload
    row = conn.execute(_OWNER, (sid,)).fetchone()
    if row is None:
        return not_found(sid)
    now_s = time.time()
    if not take_over and row[2] is not None and row[2] not in (owner, replace) and row[3] > now_s:
        return busy(sid, row[2], row[3])
    conn.execute(_ACQUIRE, (owner, now_s + lease, sid))
    return Ownership(sid, owner, row[1] + 1, now_s + lease)


def renew(conn: sqlite3.Connection, payload: tuple[str, dict[str, int], float]) -> dict[str, float]:
    owner, claims, lease = payload
    until = time.time() + lease
    return {
        sid: until
        for sid, epoch in claims.items()
        if conn.execute(_RENEW, (until, sid, owner, epoch)).rowcount == 1
    }


def release(conn: sqlite3.Connection, payload: tuple[str, str, int]) -> None:
    sid, owner, epoch = payload
    conn.execute(_RELEASE, (sid, owner, epoch))


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


def stage_checkpoint(
    conn: sqlite3.Connection, session_id: str, key_id: str
) -> KaizenError | tuple[int, str] | None:
    """The head to sign for an explicit checkpoint (None: this key signed it already)."""
    row = conn.execute(_HEAD_SIGNED, (session_id,)).fetchone()
    if row is None:
        return not_found(session_id)
    seq, head_hash, index, signed_by, heads = row
    if signed_by == key_id and type(index) is int:
        try:
            if orjson.loads(heads)[index][1] == seq:
                return None
        except (orjson.JSONDecodeError, IndexError, TypeError):
            pass  # a damaged tree row: sign again (a verifier reports the damage)
    return seq, head_hash


def next_tree_id(conn: sqlite3.Connection) -> int:
    """The id the next tree row gets (the writer holds the write lock)."""
    next_id: int = conn.execute(_NEXT_TREE).fetchone()[0]
    return next_id


def write_trees(
    conn: sqlite3.Connection,
    first_tree_id: int,
    trees: Sequence[SignedTree],
    key_id: str,
    writer_id: str,
    history: Sequence[tuple[Any, ...]],
    latest: Sequence[tuple[Any, ...]],
) -> None:
    """The signature rows of a transaction (tree ids from ``first_tree_id`` on, each with
    the heads it signed), its history rows and the latest-checkpoint columns of sessions
    not set by their guarded update."""
    conn.executemany(
        _INSERT_TREE,
        [
            (
                first_tree_id + n,
                key_id,
                writer_id,
                t.time,
                t.signature,
                orjson.dumps(t.heads).decode(),
            )
            for n, t in enumerate(trees)
        ],
    )
    if history:
        conn.executemany(_INSERT_CHECKPOINT, history)
    if latest:
        conn.executemany(_SET_LATEST, latest)
