"""The SQLite store's schema, its migrations and the checks that a file is one of ours.

Schema version 1::

    schema_version(version PK, applied_at)         one row per applied migration
    sessions(session_id PK, created_at, updated_at, head_seq, head_hash, state_version,
             max_artifact_size, workspace_path, metadata_json, open_steps_json)
    entries(session_id, seq, timestamp, agent_id, entry_type, content, prev_hash, hash,
            PK (session_id, seq))                  content: the record's canonical bytes
    state(session_id, key, value, PK (session_id, key))      materialized, canonical bytes
    artifacts(session_id, name, digest, PK (session_id, name))
    blobs(digest PK, data)                         content-addressed, shared by sessions
    session_blobs(session_id, digest, PK (session_id, digest)) + index on digest:
                                                   which sessions use which blob

Schema version 2 adds signed checkpoints (beside the entries, not in them)::

    sessions + checkpoint_tree, checkpoint_index   where the session's latest checkpoint is
                                                   (NULL: none), set by the guarded head
                                                   update itself
    checkpoint_trees(tree_id PK, key_id, writer_id, time, signature, heads)
                                                   one row per signature (a transaction):
                                                   heads = JSON [[session id, seq, head
                                                   hash, epoch], ...] in leaf order
    checkpoints(session_id, seq, tree_id, tree_index) + index on (session_id, seq)
                                                   older checkpoints kept as history (see
                                                   CheckpointPolicy.history_every)

A commit's checkpoint thus costs two small integers in a row the commit updates anyway
and its share of one appended row: no page per session is dirtied for it.

Schema version 3 adds the ownership of sessions by hubs (see :meth:`SessionStore.acquire`)::

    sessions + owner, epoch, lease_until           the owning hub, the fencing epoch (bumped
                                                   on every acquisition), the lease's end
                                                   (seconds since the Unix epoch)

Schema version 4 keeps the same columns but stores ``entries`` in a rowid table (rows in
the order they were committed) with its primary key ``(session_id, seq)`` as an index.
Appending to many sessions in one transaction then fills the table's last pages instead of
splitting one page in the middle of the B-tree per session (whose neighbours the split
rewrites too): a 64-session group commit writes about half the pages, and its ``COMMIT``
costs about half the CPU. Reads by ``(session_id, seq)`` go through the index.

The database header's ``application_id`` marks the file as a kaizen_async store. Opening
applies the migrations the file lacks, in order, in one transaction; a file of a newer
version raises :class:`SchemaMismatchError`, a file that is not ours (or not SQLite)
:class:`SessionCorruptedError`. Everything here is blocking (run in a worker thread).
"""

from __future__ import annotations

import sqlite3

from .._exceptions import (
    ErrorCode,
    KaizenError,
    PersistError,
    SchemaMismatchError,
    SessionCorruptedError,
)
from ._common import now

__all__ = ["APPLICATION_ID", "MIGRATIONS", "TABLES", "configure", "migrate", "storage_error"]

#: "KZSt" in the database header: the file is a kaizen_async session store
APPLICATION_ID = 0x4B5A5374

#: migration N (1-based) brings a database from version N - 1 to N; append, never edit
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            head_seq INTEGER NOT NULL,
            head_hash TEXT NOT NULL,
            state_version INTEGER NOT NULL,
            max_artifact_size INTEGER NOT NULL,
            workspace_path TEXT,
            metadata_json TEXT NOT NULL,
            open_steps_json TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE entries (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            timestamp TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            entry_type TEXT NOT NULL,
            content BLOB NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE state (
            session_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (session_id, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE artifacts (
            session_id TEXT NOT NULL,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (session_id, name)
        ) WITHOUT ROWID""",
        "CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL)",
        """CREATE TABLE session_blobs (
            session_id TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (session_id, digest)
        ) WITHOUT ROWID""",
        "CREATE INDEX session_blobs_by_digest ON session_blobs (digest)",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (
        "ALTER TABLE sessions ADD COLUMN checkpoint_tree INTEGER",
        "ALTER TABLE sessions ADD COLUMN checkpoint_index INTEGER",
        """CREATE TABLE checkpoint_trees (
            tree_id INTEGER PRIMARY KEY,
            key_id TEXT NOT NULL,
            writer_id TEXT NOT NULL,
            time TEXT NOT NULL,
            signature BLOB NOT NULL,
            heads TEXT NOT NULL
        )""",
        """CREATE TABLE checkpoints (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            tree_id INTEGER NOT NULL,
            tree_index INTEGER NOT NULL
        )""",
        "CREATE INDEX checkpoints_by_session ON checkpoints (session_id, seq)",
    ),
    (  # 3: ownership of sessions by hubs (owner, its lease, the fencing epoch)
        "ALTER TABLE sessions ADD COLUMN owner TEXT",
        "ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
    ),
    (  # 4: entries in commit order (a rowid table), found through the (session_id, seq) index
        """CREATE TABLE entries_in_commit_order (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            timestamp TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            entry_type TEXT NOT NULL,
            content BLOB NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        "INSERT INTO entries_in_commit_order SELECT session_id, seq, timestamp, agent_id, "
        "entry_type, content, prev_hash, hash FROM entries ORDER BY session_id, seq",
        "DROP TABLE entries",
        "ALTER TABLE entries_in_commit_order RENAME TO entries",
    ),
]

#: the tables a current database must have
TABLES = frozenset(
    {
        "schema_version",
        "sessions",
        "entries",
        "state",
        "artifacts",
        "blobs",
        "session_blobs",
        "checkpoint_trees",
        "checkpoints",
    }
)


def storage_error(exc: sqlite3.Error, path: str, code: ErrorCode, what: str) -> KaizenError:
    """The typed error for a failed SQLite call: a damaged file is corrupted, the rest a
    :class:`PersistError` with ``code`` (the SQLite error name is in ``details``)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return SessionCorruptedError(
            f"{path} is not a readable session store: {exc}",
            details={"path": path, "sqlite_error": name},
        )
    return PersistError(
        f"{what} ({path}): {exc}", code=code, details={"path": path, "sqlite_error": name}
    )


def configure(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Every connection: WAL, synchronous=FULL, the busy timeout."""
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot switch the database to WAL (mode {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")


def _version(conn: sqlite3.Connection, path: str) -> int:
    """The database's schema version (0: a fresh, empty database)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if app_id == 0 and not tables:
        return 0
    if app_id != APPLICATION_ID or "schema_version" not in tables:
        raise SessionCorruptedError(
            f"{path} is an SQLite database but not a kaizen_async session store",
            details={"path": path},
        )
    version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if type(version) is not int or version < 1:
        raise SessionCorruptedError(
            f"{path}: malformed schema version {version!r}", details={"path": path}
        )
    latest = len(MIGRATIONS)
    if version > latest:
        raise SchemaMismatchError(
            f"{path} has store schema version {version}; this library reads up to {latest}",
            details={"path": path, "file_version": version, "supported": latest},
        )
    if version == latest and not tables >= TABLES:
        raise SessionCorruptedError(
            f"{path} is missing table(s): {', '.join(sorted(TABLES - tables))}",
            details={"path": path},
        )
    return version


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database to the latest version (all missing steps in one transaction);
    returns the version it had. Another process may migrate at the same time: the
    version is read again under the write lock."""
    found = _version(conn, path)
    latest = len(MIGRATIONS)
    if found == latest:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn, path)
        stamp = now()
        for version in range(found + 1, latest + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, stamp))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _version(conn, path)  # the result is a complete, current store
    return found
