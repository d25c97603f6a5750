"""The PostgreSQL store's statements: one round trip per group commit, one per read.

A group commit is cut into *rounds* in queue order, each holding at most one write per
session (a second batch of a session, or a delete, starts the next round). A round is ONE
statement: data-modifying CTEs create the new sessions (``ON CONFLICT DO NOTHING``), move
the heads of the others behind their guards (``WHERE head_seq = base AND head_hash =
prev``), and write the rows (entries, state, artifacts, blobs, blob references) of only
the sessions whose create or guard succeeded, all from column arrays (``unnest``). Run in
autocommit, the statement is its own transaction: nothing waits between two round trips
holding locks, and the statement's text never changes, so the driver prepares it once.

Every argument is a column array built here from the batches; ``session_id``, state keys,
agent ids and workspace paths travel as UTF-8 bytes (see :mod:`._postgres_schema`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._storage import Batch, SessionInfo, StoredSession
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
    "Round",
    "Statements",
    "plan_rounds",
    "session_info",
    "steps_json",
    "stored_session",
    "to_records",
]

_ROUND = """
WITH
created AS (
    INSERT INTO {s}.sessions
    SELECT c.sid, $1, $1, c.head, c.hash, c.ver, c.max_size, c.workspace, c.meta, c.steps
    FROM unnest($2::bytea[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[],
                $7::bytea[], $8::text[], $9::text[])
        AS c(sid, head, hash, ver, max_size, workspace, meta, steps)
    ON CONFLICT (session_id) DO NOTHING
    RETURNING session_id),
advanced AS (
    UPDATE {s}.sessions AS s SET
        head_seq = a.head,
        head_hash = coalesce(a.hash, s.head_hash),
        state_version = a.ver,
        updated_at = $1,
        open_steps_json = coalesce(a.steps, s.open_steps_json)
    FROM unnest($10::bytea[], $11::bigint[], $12::text[], $13::bigint[], $14::text[],
                $15::bigint[], $16::text[], $40::bigint[])
        AS a(sid, base, prev, head, hash, ver, steps, epoch)
    WHERE s.session_id = a.sid AND s.head_seq = a.base
        AND (a.prev IS NULL OR s.head_hash = a.prev)
        AND (a.epoch IS NULL OR s.epoch = a.epoch)
    RETURNING s.session_id),
ok AS (SELECT session_id FROM created UNION ALL SELECT session_id FROM advanced),
new_entries AS (
    INSERT INTO {s}.entries
    SELECT e.* FROM unnest($17::bytea[], $18::bigint[], $19::text[], $20::bytea[],
                           $21::text[], $22::bytea[], $23::text[], $24::text[])
        AS e(sid, seq, ts, agent, kind, content, prev, hash)
    WHERE e.sid IN (SELECT session_id FROM ok)),
set_state AS (
    INSERT INTO {s}.state
    SELECT v.* FROM unnest($25::bytea[], $26::bytea[], $27::bytea[]) AS v(sid, key, value)
    WHERE v.sid IN (SELECT session_id FROM ok)
    ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value),
unset_state AS (
    DELETE FROM {s}.state AS t
    USING unnest($28::bytea[], $29::bytea[]) AS d(sid, key)
    WHERE t.session_id = d.sid AND t.key = d.key AND d.sid IN (SELECT session_id FROM ok)),
set_artifacts AS (
    INSERT INTO {s}.artifacts
    SELECT r.* FROM unnest($30::bytea[], $31::text[], $32::text[]) AS r(sid, name, digest)
    WHERE r.sid IN (SELECT session_id FROM ok)
    ON CONFLICT (session_id, name) DO UPDATE SET digest = excluded.digest),
unset_artifacts AS (
    DELETE FROM {s}.artifacts AS t
    USING unnest($33::bytea[], $34::text[]) AS x(sid, name)
    WHERE t.session_id = x.sid AND t.name = x.name AND x.sid IN (SELECT session_id FROM ok)),
new_blobs AS (
    INSERT INTO {s}.blobs
    SELECT DISTINCT ON (b.digest) b.digest, b.data
    FROM unnest($35::bytea[], $36::text[], $37::bytea[]) AS b(sid, digest, data)
    WHERE b.sid IN (SELECT session_id FROM ok)
    ON CONFLICT (digest) DO NOTHING),
new_refs AS (
    INSERT INTO {s}.session_blobs
    SELECT f.* FROM unnest($38::bytea[], $39::text[]) AS f(sid, digest)
    WHERE f.sid IN (SELECT session_id FROM ok)
    ON CONFLICT (session_id, digest) DO NOTHING),
-- one notification per statement, delivered at commit: the committed session ids (hex),
-- or "*" when they would not fit a payload (listeners then check every session they watch)
notified AS (
    SELECT pg_notify($41, CASE WHEN sum(octet_length(session_id)) * 2 + count(*) < 7000
                          THEN string_agg(encode(session_id, 'hex'), ',') ELSE '*' END)
    FROM ok WHERE $41 IS NOT NULL HAVING count(*) > 0)
SELECT ok.session_id FROM ok, (SELECT count(*) FROM notified) AS n
"""

_ACQUIRE = """
WITH now_s AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS t),
current AS (SELECT owner, epoch, lease_until FROM {s}.sessions WHERE session_id = $1 FOR UPDATE),
taken AS (
    UPDATE {s}.sessions AS s
    SET owner = $2, epoch = s.epoch + 1, lease_until = (SELECT t FROM now_s) + $3
    FROM current AS c
    WHERE s.session_id = $1
        AND ($4 OR c.owner IS NULL OR c.owner = $2 OR c.owner = $5::text
             OR c.lease_until <= (SELECT t FROM now_s))
    RETURNING s.epoch, s.lease_until)
SELECT c.owner, c.epoch, c.lease_until, t.epoch, t.lease_until
FROM current AS c LEFT JOIN taken AS t ON true
"""

_RENEW = """
UPDATE {s}.sessions AS s
SET lease_until = extract(epoch FROM clock_timestamp())::double precision + $2
FROM unnest($3::bytea[], $4::bigint[]) AS c(sid, epoch)
WHERE s.session_id = c.sid AND s.owner = $1 AND s.epoch = c.epoch
RETURNING s.session_id, s.lease_until
"""

_RELEASE = """
UPDATE {s}.sessions SET owner = NULL, lease_until = 0
WHERE session_id = $1 AND owner = $2 AND epoch = $3
"""

_DELETE = """
WITH
gone AS (DELETE FROM {s}.sessions WHERE session_id = $1 RETURNING session_id),
gone_entries AS (DELETE FROM {s}.entries WHERE session_id = $1),
gone_state AS (DELETE FROM {s}.state WHERE session_id = $1),
gone_artifacts AS (DELETE FROM {s}.artifacts WHERE session_id = $1),
gone_blobs AS (
    DELETE FROM {s}.blobs WHERE digest IN (
        SELECT mine.digest FROM {s}.session_blobs AS mine
        WHERE mine.session_id = $1 AND NOT EXISTS (
            SELECT 1 FROM {s}.session_blobs AS other
            WHERE other.digest = mine.digest AND other.session_id <> $1))),
gone_refs AS (DELETE FROM {s}.session_blobs WHERE session_id = $1)
SELECT count(*) FROM gone
"""

_SESSION_COLUMNS = (
    "session_id, created_at, updated_at, head_seq, head_hash, state_version, "
    "max_artifact_size, workspace_path, metadata_json, open_steps_json"
)
_ENTRY_COLUMNS = "seq, timestamp, agent_id, entry_type, content, prev_hash, hash"

_READ = """
SELECT s.head_seq, e.seq, e.timestamp, e.agent_id, e.entry_type, e.content, e.prev_hash, e.hash
FROM {s}.sessions AS s
LEFT JOIN LATERAL (
    SELECT * FROM {s}.entries AS x
    WHERE x.session_id = s.session_id AND x.seq > $2 AND x.seq <= least(s.head_seq, $3)
        AND ($4::text[] IS NULL OR x.entry_type = ANY($4))
        AND ($5::bytea IS NULL OR x.agent_id = $5)
    ORDER BY x.seq {order}
    LIMIT $6
) AS e ON true
WHERE s.session_id = $1
"""


@dataclass(frozen=True)
class Statements:
    """The store's SQL with its schema name filled in."""

    round: str
    delete: str
    acquire: str
    renew: str
    release: str
    head: str
    heads: str
    session: str
    state: str
    artifacts: str
    tail: str
    read_oldest: str
    read_newest: str
    blob: str
    list_sessions: str

    @classmethod
    def for_schema(cls, quoted: str) -> Statements:
        def fill(sql: str) -> str:
            return sql.replace("{s}", quoted)

        return cls(
            round=fill(_ROUND),
            delete=fill(_DELETE),
            acquire=fill(_ACQUIRE),
            renew=fill(_RENEW),
            release=fill(_RELEASE),
            head=fill("SELECT head_seq FROM {s}.sessions WHERE session_id = $1"),
            heads=fill(
                "SELECT session_id, head_seq, epoch, owner FROM {s}.sessions "
                "WHERE session_id = ANY($1::bytea[])"
            ),
            session=fill(f"SELECT {_SESSION_COLUMNS} FROM {{s}}.sessions WHERE session_id = $1"),
            state=fill("SELECT key, value FROM {s}.state WHERE session_id = $1"),
            artifacts=fill("SELECT name, digest FROM {s}.artifacts WHERE session_id = $1"),
            tail=fill(
                f"SELECT {_ENTRY_COLUMNS} FROM {{s}}.entries WHERE session_id = $1 "
                "ORDER BY seq DESC LIMIT $2"
            ),
            read_oldest=fill(_READ.replace("{order}", "ASC")),
            read_newest=fill(_READ.replace("{order}", "DESC")),
            blob=fill("SELECT data FROM {s}.blobs WHERE digest = $1"),
            list_sessions=fill(
                f"SELECT {_SESSION_COLUMNS} FROM {{s}}.sessions WHERE session_id > $1 "
                "ORDER BY session_id LIMIT $2"
            ),
        )


# -- writes ------------------------------------------------------------------------------------


def steps_json(steps: tuple[int, ...] | None) -> str | None:
    return None if steps is None else "[" + ",".join(map(str, steps)) + "]"


@dataclass
class Round:
    """The column arrays of one round statement, and which write each session came from."""

    stamp: str
    creates: list[list[Any]] = field(default_factory=lambda: [[] for _ in range(8)])
    advances: list[list[Any]] = field(default_factory=lambda: [[] for _ in range(8)])
    entries: list[list[Any]] = field(default_factory=lambda: [[] for _ in range(8)])
    set_state: list[list[Any]] = field(default_factory=lambda: [[], [], []])
    unset_state: list[list[Any]] = field(default_factory=lambda: [[], []])
    set_artifacts: list[list[Any]] = field(default_factory=lambda: [[], [], []])
    unset_artifacts: list[list[Any]] = field(default_factory=lambda: [[], []])
    blobs: list[list[Any]] = field(default_factory=lambda: [[], [], []])
    refs: list[list[Any]] = field(default_factory=lambda: [[], []])
    #: session id bytes -> index of its write in the group
    writes: dict[bytes, int] = field(default_factory=dict)

    def add_create(self, index: int, payload: tuple[Batch, int, str | None, str]) -> None:
        batch, max_artifact_size, workspace, meta = payload
        sid = batch.session_id.encode()
        last = batch.records[-1]
        row = (
            sid,
            last[0],
            last[6],
            batch.state_version,
            max_artifact_size,
            None if workspace is None else workspace.encode(),
            meta,
            steps_json(batch.open_steps) or "[]",
        )
        for column, value in zip(self.creates, row, strict=True):
            column.append(value)
        self._rows(index, sid, batch)

    def add_commit(self, index: int, batch: Batch) -> None:
        sid = batch.session_id.encode()
        records = batch.records
        if records:
            row: tuple[Any, ...] = (
                sid,
                batch.base_seq,
                records[0][5],
                records[-1][0],
                records[-1][6],
                batch.state_version,
                steps_json(batch.open_steps),
                batch.epoch,
            )
        else:  # only the state version or the open steps changed: guarded by the seq alone
            row = (
                sid,
                batch.base_seq,
                None,
                batch.base_seq,
                None,
                batch.state_version,
                steps_json(batch.open_steps),
                batch.epoch,
            )
        for column, value in zip(self.advances, row, strict=True):
            column.append(value)
        self._rows(index, sid, batch)

    def _rows(self, index: int, sid: bytes, batch: Batch) -> None:
        self.writes[sid] = index
        if batch.records:
            seqs, stamps, agents, kinds, contents, prevs, hashes = zip(*batch.records, strict=True)
            entries = self.entries
            entries[0].extend([sid] * len(seqs))
            entries[1].extend(seqs)
            entries[2].extend(stamps)
            entries[3].extend([agent.encode() for agent in agents])
            entries[4].extend(kinds)
            entries[5].extend(contents)
            entries[6].extend(prevs)
            entries[7].extend(hashes)
        for key, value in batch.state.items():
            if value is None:
                self.unset_state[0].append(sid)
                self.unset_state[1].append(key.encode())
            else:
                self.set_state[0].append(sid)
                self.set_state[1].append(key.encode())
                self.set_state[2].append(value)
        refs: set[str] = set()
        for name, digest in batch.artifacts.items():
            if digest is None:
                self.unset_artifacts[0].append(sid)
                self.unset_artifacts[1].append(name)
            else:
                self.set_artifacts[0].append(sid)
                self.set_artifacts[1].append(name)
                self.set_artifacts[2].append(digest)
                refs.add(digest)
        for digest, data in batch.blobs.items():
            self.blobs[0].append(sid)
            self.blobs[1].append(digest)
            self.blobs[2].append(data)
            refs.add(digest)
        for digest in sorted(refs):
            self.refs[0].append(sid)
            self.refs[1].append(digest)

    def arguments(self, channel: str | None) -> list[Any]:
        """The round statement's arguments, in ``$n`` order (``channel``: where to notify
        the commit, or None)."""
        return [
            self.stamp,
            *self.creates,
            *self.advances[:7],
            *self.entries,
            *self.set_state,
            *self.unset_state,
            *self.set_artifacts,
            *self.unset_artifacts,
            *self.blobs,
            *self.refs,
            self.advances[7],
            channel,
        ]


def plan_rounds(writes: list[tuple[str, Any]]) -> list[list[int]]:
    """Cut a group into rounds, in queue order: a round holds at most one write per session;
    any write other than a create or commit (delete, acquire, renew, release) is a round of
    its own (so writes before it land first, as queued)."""
    rounds: list[list[int]] = []
    current: list[int] = []
    seen: set[str] = set()
    for index, (kind, payload) in enumerate(writes):
        if kind not in ("commit", "create"):
            if current:
                rounds.append(current)
            rounds.append([index])
            current, seen = [], set()
            continue
        sid = payload.session_id if kind == "commit" else payload[0].session_id
        if sid in seen:
            rounds.append(current)
            current, seen = [], set()
        current.append(index)
        seen.add(sid)
    if current:
        rounds.append(current)
    return rounds


# -- reads -------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    """A ``bytea`` column back to ``str`` (a value that is not UTF-8 stays bytes, and the
    validators then refuse it as malformed)."""
    if type(value) is bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    return value


def session_info(row: Any) -> SessionInfo:
    """A sessions row, every field checked (as the SQLite store checks its rows)."""
    sid = _text(row[0])
    try:
        check_session_id(sid)
    except Exception:
        raise corrupted(repr(row[0]), "malformed session id") from None
    created, updated, head_seq, head_hash, version, max_size, workspace, meta = (
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        _text(row[7]),
        row[8],
    )
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


def to_records(session_id: str, rows: Iterable[Any]) -> list[Record]:
    """Entry rows as checked records (agent ids decoded from their bytes)."""
    return check_records(
        session_id,
        ((r[0], r[1], _text(r[2]), r[3], r[4], r[5], r[6]) for r in rows),
    )


def stored_session(
    session_id: str,
    row: Any,
    state_rows: list[Any],
    artifact_rows: list[Any],
    tail_rows: list[Any],
    wanted: int,
) -> StoredSession:
    """What ``load`` returns, from the rows of one snapshot, every row validated."""
    if row is None:
        raise not_found(session_id)
    info = session_info(row)
    head_hash = row[4]
    tail = to_records(session_id, reversed(tail_rows))
    check_tail(session_id, tail, info.trajectory_length, head_hash, wanted)
    return StoredSession(
        info=info,
        head_hash=head_hash,
        max_artifact_size=row[6],
        workspace_path=_text(row[7]),
        state=check_state_rows(session_id, ((_text(k), v) for k, v in state_rows)),
        artifacts=check_artifact_rows(session_id, ((n, d) for n, d in artifact_rows)),
        open_steps=check_open_steps(session_id, row[9]),
        tail=tail,
    )
