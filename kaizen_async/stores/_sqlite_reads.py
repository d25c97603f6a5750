"""The SQLite store's reads: blocking functions run in a worker thread on a read connection.

A read that spans several statements runs in one read transaction (WAL: one consistent
snapshot of committed data). Every row read back is validated as the API would validate
it (see :mod:`._common`), so a damaged or hand-edited database raises
:class:`~kaizen_async.SessionCorruptedError` naming the session and entry.
"""

from __future__ import annotations

import gc
import sqlite3
from typing import Any

import orjson

from .._canonical import sha256_hex
from .._checkpoint import Checkpoint, checkpoint_text, leaf_hash, proof_from_leaves
from .._exceptions import ArtifactNotFoundError, KaizenValidationError, SessionCorruptedError
from .._storage import SessionInfo, StoredSession
from .._trajectory import Record
from ._common import (
    check_artifact_rows,
    check_metadata_text,
    check_open_steps,
    check_records,
    check_session_id,
    check_state_rows,
    check_tail,
    corrupted,
    is_digest,
    not_found,
)

__all__ = [
    "HEAD",
    "head",
    "info",
    "list_sessions",
    "load",
    "read_blob",
    "read_checkpoints",
    "read_entries",
]

HEAD = "SELECT head_seq FROM sessions WHERE session_id = ?"
_SESSION_COLUMNS = (
    "session_id, created_at, updated_at, head_seq, head_hash, state_version, "
    "max_artifact_size, workspace_path, metadata_json, open_steps_json"
)
_ENTRY_COLUMNS = "seq, timestamp, agent_id, entry_type, content, prev_hash, hash"


def _session_row(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise not_found(session_id)
    return tuple(row)


def _session_info(row: tuple[Any, ...]) -> SessionInfo:
    """A sessions row, every field checked."""
    (sid, created, updated, head_seq, head_hash, version, max_size, workspace, meta, _) = row
    try:
        check_session_id(sid)
    except KaizenValidationError:
        raise SessionCorruptedError(f"the store holds a malformed session id {sid!r}") from None
    if (
        type(created) is not str
        or type(updated) is not str
        or type(head_seq) is not int
        or head_seq < 0
        or not is_digest(head_hash)
        or type(version) is not int
        or version < 0
        or type(max_size) is not int
        or max_size < 0
        or (workspace is not None and type(workspace) is not str)
    ):
        raise corrupted(sid, "malformed session row")
    return SessionInfo(sid, created, updated, head_seq, version, check_metadata_text(sid, meta))


def load(conn: sqlite3.Connection, session_id: str, wanted: int) -> StoredSession:
    conn.execute("BEGIN")
    row = _session_row(conn, session_id)
    state_rows = conn.execute(
        "SELECT key, value FROM state WHERE session_id = ?", (session_id,)
    ).fetchall()
    artifact_rows = conn.execute(
        "SELECT name, digest FROM artifacts WHERE session_id = ?", (session_id,)
    ).fetchall()
    tail_rows = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
        (session_id, wanted),
    ).fetchall()
    conn.execute("COMMIT")
    info = _session_info(row)
    head_hash = row[4]
    tail = check_records(session_id, reversed(tail_rows))
    check_tail(session_id, tail, info.trajectory_length, head_hash, wanted)
    return StoredSession(
        info=info,
        head_hash=head_hash,
        max_artifact_size=row[6],
        workspace_path=row[7],
        state=check_state_rows(session_id, state_rows),
        artifacts=check_artifact_rows(session_id, artifact_rows),
        open_steps=check_open_steps(session_id, row[9]),
        tail=tail,
    )


def read_entries(
    conn: sqlite3.Connection,
    session_id: str,
    since: int,
    until: int | None,
    kinds: tuple[str, ...] | None,
    agent_id: str | None,
    count: int | None,
    newest: bool,
) -> list[Record]:
    """The matching committed entries, oldest first, in one read transaction."""
    conn.execute("BEGIN")
    head = conn.execute(HEAD, (session_id,)).fetchone()
    if head is None:
        raise not_found(session_id)
    if type(head[0]) is not int:
        raise corrupted(session_id, "malformed session row")
    last = head[0] if until is None else min(until, head[0])
    sql = [f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE session_id = ? AND seq > ? AND seq <= ?"]
    params: list[Any] = [session_id, since, last]
    if kinds is not None:
        sql.append(f"AND entry_type IN ({','.join('?' * len(kinds))})")
        params.extend(kinds)
    if agent_id is not None:
        sql.append("AND agent_id = ?")
        params.append(agent_id)
    sql.append("ORDER BY seq DESC" if newest else "ORDER BY seq")
    if count is not None:
        sql.append("LIMIT ?")
        params.append(count)
    # a long read builds many acyclic objects (rows, records, bytes): the cyclic garbage
    # collector would rescan the growing heap several times meanwhile for nothing (2-4x
    # the read's time), so it is paused while they are built (as a file load does)
    paused = gc.isenabled()
    gc.disable()
    try:
        rows = conn.execute(" ".join(sql), params).fetchall()
        conn.execute("COMMIT")
        if newest:
            rows.reverse()
        return check_records(session_id, rows)
    finally:
        if paused:
            gc.enable()


def read_blob(conn: sqlite3.Connection, digest: str) -> bytes:
    row = (
        conn.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if is_digest(digest)
        else None
    )
    if row is None:
        raise ArtifactNotFoundError(
            f"no artifact blob {digest!r} in the store", details={"digest": digest}
        )
    data = row[0]
    if type(data) is not bytes or sha256_hex(data) != digest:
        raise SessionCorruptedError(
            f"artifact blob {digest[:12]}... does not match its digest",
            details={"digest": digest},
        )
    return data


def head(conn: sqlite3.Connection, session_id: str) -> int:
    """The session's committed head seq."""
    row = conn.execute(HEAD, (session_id,)).fetchone()
    if row is None:
        raise not_found(session_id)
    if type(row[0]) is not int:
        raise corrupted(session_id, "malformed session row")
    return row[0]


def info(conn: sqlite3.Connection, session_id: str) -> SessionInfo:
    return _session_info(_session_row(conn, session_id))


def list_sessions(
    conn: sqlite3.Connection, after: str | None, count: int | None
) -> list[SessionInfo]:
    rows = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id > ? ORDER BY session_id LIMIT ?",
        ("" if after is None else after, -1 if count is None else count),
    ).fetchall()
    return [_session_info(tuple(row)) for row in rows]


_HISTORY = "SELECT tree_id, tree_index FROM checkpoints WHERE session_id = ? AND seq > ?"
_LATEST = (
    "SELECT checkpoint_tree, checkpoint_index FROM sessions "
    "WHERE session_id = ? AND checkpoint_tree IS NOT NULL"
)
_TREE = "SELECT key_id, writer_id, time, signature, heads FROM checkpoint_trees WHERE tree_id = ?"


def read_checkpoints(conn: sqlite3.Connection, session_id: str, since: int) -> list[Checkpoint]:
    """The session's checkpoints after ``since`` (its history rows and its latest, in one
    snapshot), oldest first, each rebuilt from the tree row its signature covers (the heads
    signed together, in leaf order), audit path included.

    Whatever was changed in a tree row after signing makes its leaves, so its root, differ:
    the signature then fails (``checkpoint_invalid``), as it should; a rewritten entry
    leaves the signed head in the tree row (``checkpoint_head_mismatch``).
    """
    conn.execute("BEGIN")
    if conn.execute(HEAD, (session_id,)).fetchone() is None:
        raise not_found(session_id)
    places = conn.execute(_HISTORY, (session_id, since)).fetchall()
    places += conn.execute(_LATEST, (session_id,)).fetchall()
    trees = {tree: conn.execute(_TREE, (tree,)).fetchone() for tree in {tree for tree, _ in places}}
    conn.execute("COMMIT")
    found: dict[tuple[Any, Any], Checkpoint] = {}
    for tree, index in places:
        if (tree, index) in found:
            continue  # the latest is often also a history row
        try:
            checkpoint = _from_tree(session_id, trees[tree], index)
        except (KaizenValidationError, TypeError, ValueError, IndexError, KeyError) as exc:
            raise corrupted(session_id, f"malformed checkpoint (tree {tree!r}): {exc}") from None
        if checkpoint.seq > since:
            found[tree, index] = checkpoint
    return sorted(found.values(), key=lambda c: (c.seq, c.time))


def _from_tree(session_id: str, row: tuple[Any, ...] | None, index: Any) -> Checkpoint:
    """Leaf ``index`` of a tree row as a checkpoint (it must name ``session_id``)."""
    if row is None:
        raise KaizenValidationError("its tree row is missing")
    key_id, writer, time, signature, heads_text = row
    heads = orjson.loads(heads_text)
    if type(index) is not int or not isinstance(heads, list) or not 0 <= index < len(heads):
        raise KaizenValidationError("its leaf index is out of range")
    members = [tuple(member) for member in heads]
    if any(len(member) != 4 for member in members):
        raise KaizenValidationError("its tree's heads are malformed")
    sid, seq, head, epoch = members[index]
    if sid != session_id:
        raise KaizenValidationError(f"its leaf names session {sid!r}")
    if type(signature) is not bytes:
        raise KaizenValidationError("its signature is not bytes")
    size = len(members)
    checkpoint = Checkpoint(sid, seq, head, epoch, writer, time, key_id, signature, index, size)
    checkpoint.checked()
    if size == 1:
        return checkpoint
    leaves = [leaf_hash(checkpoint_text(s, q, h, e, writer, time)) for s, q, h, e in members]
    return Checkpoint(
        sid,
        seq,
        head,
        epoch,
        writer,
        time,
        key_id,
        signature,
        index,
        size,
        proof_from_leaves(leaves, index),
    )
