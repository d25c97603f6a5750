"""The PostgreSQL store's schema, its migrations and the check that a schema is one of ours.

All tables live in one PostgreSQL schema (``kaizen`` by default), so one database can hold
several stores side by side. Schema version 1 (the same logical layout as the SQLite
store; version 2 adds ``sessions.owner``, ``epoch`` and ``lease_until``, the ownership of
sessions by hubs)::

    schema_version(version PK, applied_at)      one row per applied migration; its table
                                                comment marks the schema as a session store
    sessions(session_id PK, created_at, updated_at, head_seq, head_hash, state_version,
             max_artifact_size, workspace_path, metadata_json, open_steps_json)
    entries(session_id, seq, timestamp, agent_id, entry_type, content, prev_hash, hash,
            PK (session_id, seq))               content: the record's canonical bytes
    state(session_id, key, value, PK (session_id, key))     materialized, canonical bytes
    artifacts(session_id, name, digest, PK (session_id, name))
    blobs(digest PK, data)                      content-addressed, shared by sessions
    session_blobs(session_id, digest, PK (session_id, digest)) + index on digest

Session ids, state keys, agent ids and workspace paths are stored as their UTF-8 bytes
(``bytea``): PostgreSQL ``text`` cannot hold U+0000, which these may contain, and byte
order is the order the other stores list sessions in (code point order). An ASCII id
still reads naturally in SQL: ``WHERE session_id = 'order-42'``.

Opening applies the missing migrations in order in one transaction under an advisory
lock (several processes may open the store at once); a schema of a newer version raises
:class:`SchemaMismatchError`, one that holds other tables :class:`SessionCorruptedError`.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import SchemaMismatchError, SessionCorruptedError
from ._common import now

__all__ = ["MARK", "MIGRATIONS", "TABLES", "migrate", "quote_ident"]

#: the comment on ``schema_version``: the schema is a kaizen_async session store
MARK = "kaizen_async session store"

#: migration N (1-based) brings a schema from version N - 1 to N; append, never edit.
#: ``{s}`` is the quoted schema name.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE {s}.schema_version (version integer PRIMARY KEY, applied_at text NOT NULL)",
        f"COMMENT ON TABLE {{s}}.schema_version IS '{MARK}'",
        """CREATE TABLE {s}.sessions (
            session_id bytea PRIMARY KEY,
            created_at text NOT NULL,
            updated_at text NOT NULL,
            head_seq bigint NOT NULL,
            head_hash text NOT NULL,
            state_version bigint NOT NULL,
            max_artifact_size bigint NOT NULL,
            workspace_path bytea,
            metadata_json text NOT NULL,
            open_steps_json text NOT NULL
        )""",
        """CREATE TABLE {s}.entries (
            session_id bytea NOT NULL,
            seq bigint NOT NULL,
            timestamp text NOT NULL,
            agent_id bytea NOT NULL,
            entry_type text NOT NULL,
            content bytea NOT NULL,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE {s}.state (
            session_id bytea NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            PRIMARY KEY (session_id, key)
        )""",
        """CREATE TABLE {s}.artifacts (
            session_id bytea NOT NULL,
            name text NOT NULL,
            digest text NOT NULL,
            PRIMARY KEY (session_id, name)
        )""",
        "CREATE TABLE {s}.blobs (digest text PRIMARY KEY, data bytea NOT NULL)",
        """CREATE TABLE {s}.session_blobs (
            session_id bytea NOT NULL,
            digest text NOT NULL,
            PRIMARY KEY (session_id, digest)
        )""",
        "CREATE INDEX session_blobs_by_digest ON {s}.session_blobs (digest)",
    ),
    (  # 2: ownership of sessions by hubs (owner, its lease, the fencing epoch)
        "ALTER TABLE {s}.sessions ADD COLUMN owner text, "
        "ADD COLUMN epoch bigint NOT NULL DEFAULT 0, "
        "ADD COLUMN lease_until double precision NOT NULL DEFAULT 0",
    ),
]

#: the tables a current schema must have
TABLES = frozenset(
    {"schema_version", "sessions", "entries", "state", "artifacts", "blobs", "session_blobs"}
)

_INSPECT = """
SELECT
    (SELECT coalesce(array_agg(c.relname::text), '{}') FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')),
    (SELECT obj_description(c.oid, 'pg_class') FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = 'schema_version')
"""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


async def _version(conn: Any, schema: str) -> int:
    """The schema's version (0: absent or empty)."""
    row = await conn.fetchrow(_INSPECT, schema)
    tables, mark = set(row[0]), row[1]
    where = f"PostgreSQL schema {schema!r}"
    if not tables:
        return 0
    if "schema_version" not in tables or mark != MARK:
        raise SessionCorruptedError(
            f"{where} holds tables but is not a kaizen_async session store",
            details={"schema": schema},
        )
    version = await conn.fetchval(f"SELECT max(version) FROM {quote_ident(schema)}.schema_version")
    if type(version) is not int or version < 1:
        raise SessionCorruptedError(
            f"{where}: malformed schema version {version!r}", details={"schema": schema}
        )
    latest = len(MIGRATIONS)
    if version > latest:
        raise SchemaMismatchError(
            f"{where} has store schema version {version}; this library reads up to {latest}",
            details={"schema": schema, "file_version": version, "supported": latest},
        )
    if version == latest and not tables >= TABLES:
        raise SessionCorruptedError(
            f"{where} is missing table(s): {', '.join(sorted(TABLES - tables))}",
            details={"schema": schema},
        )
    return version


async def migrate(conn: Any, schema: str) -> int:
    """Bring the schema to the latest version; returns the version it had.

    The missing steps run in one transaction holding an advisory lock keyed by the schema
    name, and the version is read again under it: of several processes opening a fresh
    store at once, one migrates and the others find it done.
    """
    found = await _version(conn, schema)
    latest = len(MIGRATIONS)
    if found == latest:
        return found
    quoted = quote_ident(schema)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "kaizen_async:" + schema
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        found = await _version(conn, schema)
        stamp = now()
        for version in range(found + 1, latest + 1):
            for statement in MIGRATIONS[version - 1]:
                await conn.execute(statement.replace("{s}", quoted))
            await conn.execute(
                f"INSERT INTO {quoted}.schema_version VALUES ($1, $2)", version, stamp
            )
    await _version(conn, schema)  # the result is a complete, current store
    return found
