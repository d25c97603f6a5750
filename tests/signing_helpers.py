"""What the signing tests share: keys, keyrings, and an attacker who rewrites storage.

The attacker functions do what someone with write access to a ``.kaizen`` file or an
SQLite store can do without any key: change an entry's content, recompute every hash
after it, the head and the stored state, so that the hash chain verifies again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kaizen_async._canonical import decode, encode, entry_hash
from kaizen_async._state import SessionCore
from kaizen_async.signing import Ed25519Signer, Keyring

KEY_A = Ed25519Signer.from_private_bytes(bytes(range(32)))
KEY_B = Ed25519Signer.from_private_bytes(bytes(range(32, 64)))
KEY_EVIL = Ed25519Signer.from_private_bytes(bytes(range(64, 96)))


def ring(*keys: Ed25519Signer) -> Keyring:
    return Keyring.parse("\n".join(key.keyring_line() for key in keys))


def _rechain(rows: list[list[Any]], start: int) -> None:
    """Recompute prev_hash/hash of rows (seq, ts, agent, kind, content bytes, prev, hash)
    from index ``start`` on."""
    for i in range(start, len(rows)):
        seq, ts, agent, kind, content, _, _ = rows[i]
        prev = rows[i - 1][6] if i else "0" * 64
        rows[i][5] = prev
        rows[i][6] = entry_hash(seq, ts, agent, kind, content, prev)


def _rewrite_value(rows: list[list[Any]], seq: int, value: Any) -> dict[str, bytes]:
    """Set the new_value of the state_set entry ``seq``, rechain; returns the state the
    rewritten trajectory replays to (what the attacker stores as the state)."""
    row = rows[seq - 1]
    assert row[3] == "state_set", row[3]
    content = decode(row[4])
    content["new_value"] = value
    row[4] = encode(content)
    _rechain(rows, seq - 1)
    core = SessionCore.replay([tuple(r) for r in rows], session_id="replay")
    return core.state


def rewrite_file_entry(path: Path, seq: int, value: Any) -> None:
    """Rewrite state_set entry ``seq`` of a .kaizen file to set ``value``, then fix every
    later hash, the metadata head and the stored state."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = [
            list(r)
            for r in conn.execute(
                "SELECT seq, timestamp, agent_id, entry_type, CAST(content_json AS BLOB), "
                "prev_hash, hash FROM trajectory ORDER BY seq"
            )
        ]
        state = _rewrite_value(rows, seq, value)
        conn.execute("BEGIN")
        conn.execute("DELETE FROM trajectory")
        conn.executemany(
            "INSERT INTO trajectory VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s, t, a, k, c.decode(), p, h) for s, t, a, k, c, p, h in rows],
        )
        conn.execute("DELETE FROM state")
        conn.executemany(
            "INSERT INTO state VALUES (?, ?)", [(k, v.decode()) for k, v in state.items()]
        )
        conn.execute(
            "UPDATE metadata SET value = ? WHERE key = 'head_hash'",
            (encode(rows[-1][6]).decode(),),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def rewrite_store_entry(path: Path, session_id: str, seq: int, value: Any) -> None:
    """The same in an SQLite store: entries, the session row's head and the state row."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = [
            list(r)
            for r in conn.execute(
                "SELECT seq, timestamp, agent_id, entry_type, content, prev_hash, hash "
                "FROM entries WHERE session_id = ? ORDER BY seq",
                (session_id,),
            )
        ]
        state = _rewrite_value(rows, seq, value)
        conn.execute("BEGIN")
        conn.executemany(
            "UPDATE entries SET content = ?, prev_hash = ?, hash = ? "
            "WHERE session_id = ? AND seq = ?",
            [(c, p, h, session_id, s) for s, _, _, _, c, p, h in rows],
        )
        conn.execute("DELETE FROM state WHERE session_id = ?", (session_id,))
        conn.executemany(
            "INSERT INTO state VALUES (?, ?, ?)", [(session_id, k, v) for k, v in state.items()]
        )
        conn.execute(
            "UPDATE sessions SET head_hash = ? WHERE session_id = ?", (rows[-1][6], session_id)
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
