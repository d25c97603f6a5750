"""Durable commit throughput of ``SQLiteStore`` beside plain sqlite3 measured in the same run.

Run: ``python benchmarks/bench_store.py`` (``--quick`` for a smaller run; ``--dispatch``
for only the durable dispatch row and its in-memory baseline). Run it when the machine is
otherwise idle: the load average is printed first, with a warning when high.

Every commit is what a durable ``Session.set`` hands its store: one batch holding one
hash-chained ``state_set`` record and the one state key it changed. Records are built
beforehand (from a real ``SessionCore``) so that every row compares only the writing.
All databases are WAL with ``synchronous=FULL``, fresh per run, with the store's schema.

PostgreSQL column (``PostgresStore``, asyncpg; a private server with fsync on, or the one
at ``KAIZEN_BENCH_POSTGRES_DSN``): 64 callers on 64 sessions beside (c) asyncpg inserting
the same entry and state rows in batches of 64, one multi-row statement per batch; the
store is measured on asyncio (driver on the caller's loop) and on Trio (driver loop thread).

Baselines (plain stdlib sqlite3, one worker-thread call per transaction):
  (a) one set's rows (its entry row and its state row) per transaction, one caller;
  (b) the same rows, 64 sets per transaction (what 64 concurrent callers could share).
The store additionally keeps each session's row (head, version; the guarded update that
refuses a conflicting batch) and runs the group commit: queue, one writer, per-caller
answers.

Hub rows (what a server pays: ``SessionHub(SQLiteStore(path))`` sessions, records built as
they are written, each ``set`` awaited until durable), against the baselines above or run
in the same invocation:
  ``session.set`` with 1 caller (vs a) and 64 callers on 64 sessions (vs b);
  ``dispatch_single("reverse")``, 64 callers on 64 hub sessions vs 64 in-memory sessions (c);
  reopening an evicted 1,000-entry session; tracemalloc's bytes per idle open session
  (2 entries, and 300 entries: a full 256-entry tail); opening N stored sessions through one
  hub, all leased at once, then closing them, for three N doubling (linear: ~x2 each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
from _common import load_average, report

from agents import ReverseAgent
from kaizen_async import Dispatcher, EntryType, Session, SessionHub, SessionLease
from kaizen_async._state import SessionCore
from kaizen_async._trajectory import (
    AGENT_ID,
    CONTENT,
    ENTRY_TYPE,
    HASH,
    PREV_HASH,
    SEQ,
    TIMESTAMP,
    Record,
)
from kaizen_async.stores import Batch, PostgresStore, SQLiteStore
from kaizen_async.stores._common import now
from kaizen_async.stores._sqlite_schema import MIGRATIONS

CALLERS = 64
TARGET_RATIO = 0.8
TARGET_64_PER_S = 40_000
TARGET_DISPATCH_RATIO = 0.5
TARGET_REOPEN_MS = 5
TARGET_IDLE_KIB = 10
PG_TARGET_RATIO = 0.7
PG_TARGET_64_PER_S = 20_000
#: the lease of the takeover measurement: SessionHub's default (env TAKEOVER_LEASE: shorter)
TAKEOVER_LEASE = float(os.environ.get("TAKEOVER_LEASE", "30"))

Sets = list[tuple[Record, bytes]]  # per session: each set's record and new state value


def make_sets(session_id: str, n: int) -> tuple[Record, Sets]:
    """A session's ``session_created`` record and ``n`` set records after it."""
    core = SessionCore(session_id)
    sets = []
    for i in range(n):
        core.set("key", {"i": i, "text": "hello world"})
        sets.append((core.records[-1], core.state["key"]))
    return core.records[0], sets


# -- baselines: plain sqlite3 ---------------------------------------------------------------


def _plain_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    return conn


_ENTRY = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_STATE = (
    "INSERT INTO state VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value"
)


def _write(conn: sqlite3.Connection, entries: list[tuple[Any, ...]], state: list[Any]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_ENTRY, entries)
    conn.executemany(_STATE, state)
    conn.execute("COMMIT")


async def plain_per_set(directory: str, sessions: list[tuple[str, Sets]]) -> None:
    conn = _plain_db(os.path.join(directory, f"plain-a-{time.perf_counter_ns()}.db"))
    try:
        for sid, sets in sessions:
            for record, value in sets:
                entry, state = [(sid, *record)], [(sid, "key", value)]
                await anyio.to_thread.run_sync(_write, conn, entry, state)
    finally:
        conn.close()


async def plain_batched(directory: str, sessions: list[tuple[str, Sets]]) -> None:
    """Round i commits set i of every session in one transaction (64 sets at a time)."""
    conn = _plain_db(os.path.join(directory, f"plain-b-{time.perf_counter_ns()}.db"))
    try:
        for i in range(len(sessions[0][1])):
            entries = [(sid, *sets[i][0]) for sid, sets in sessions]
            state = [(sid, "key", sets[i][1]) for sid, sets in sessions]
            await anyio.to_thread.run_sync(_write, conn, entries, state)
    finally:
        conn.close()


# -- the store ------------------------------------------------------------------------------


async def store_commits(
    directory: str, sessions: list[tuple[str, Record, Sets]], timed: list[float]
) -> None:
    """Each session's sets committed by its own caller, all callers at once."""
    path = os.path.join(directory, f"store-{time.perf_counter_ns()}.db")
    async with SQLiteStore(path) as store:
        for sid, created, _ in sessions:
            await store.create(
                Batch(sid, 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
            )

        async def caller(sid: str, sets: Sets) -> None:
            commit = store.commit
            for record, value in sets:
                await commit(
                    Batch(sid, record[SEQ] - 1, (record,), record[SEQ] - 1, {"key": value})
                )

        before = store.statistics()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for sid, _, sets in sessions:
                tg.start_soon(caller, sid, sets)
        timed.append(time.perf_counter() - start)
        after = store.statistics()
    commits, batches = after.commits - before.commits, after.batches - before.batches
    print(
        f"  store, {len(sessions)} caller(s): {batches:,} commits in {commits:,} "
        f"transactions (mean batch {batches / commits:.1f})"
    )


async def best(fn: Callable[[], Awaitable[float]], repeats: int) -> float:
    return min([await fn() for _ in range(repeats)])


async def timed_run(fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def long_session_load(directory: str, entries: int) -> float:
    """Seconds to ``load()`` a session of ``entries`` entries (only its tail is read)."""
    path = os.path.join(directory, "long.db")
    created, sets = make_sets("long", entries - 1)
    async with SQLiteStore(path) as store:
        await store.create(
            Batch("long", 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
        )
        chunk = 10_000
        for first in range(0, len(sets), chunk):
            part = sets[first : first + chunk]
            base = part[0][0][SEQ] - 1
            await store.commit(
                Batch(
                    "long", base, [r for r, _ in part], part[-1][0][SEQ] - 1, {"key": part[-1][1]}
                )
            )
    times = []
    for _ in range(3):
        async with SQLiteStore(path) as store:
            began = time.perf_counter()
            loaded = await store.load("long")
            times.append(time.perf_counter() - began)
            assert loaded.info.trajectory_length == entries and len(loaded.tail) == 256
    return min(times)


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_PLAIN = """
WITH e AS (INSERT INTO {s}.entries SELECT * FROM unnest($1::bytea[], $2::bigint[],
    $3::text[], $4::bytea[], $5::text[], $6::bytea[], $7::text[], $8::text[]))
INSERT INTO {s}.state SELECT * FROM unnest($9::bytea[], $10::bytea[], $11::bytea[])
ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value
"""


#: (c') the same, and each session's row moved to its new head (unguarded): the rows the
#: store writes
_PG_PLAIN_HEADS = """
WITH h AS (UPDATE {s}.sessions AS s SET head_seq = a.head, head_hash = a.hash,
    state_version = a.ver, updated_at = $12
    FROM unnest($13::bytea[], $14::bigint[], $15::text[], $16::bigint[]) AS a(sid, head, hash, ver)
    WHERE s.session_id = a.sid),
e AS (INSERT INTO {s}.entries SELECT * FROM unnest($1::bytea[], $2::bigint[],
    $3::text[], $4::bytea[], $5::text[], $6::bytea[], $7::text[], $8::text[]))
INSERT INTO {s}.state SELECT * FROM unnest($9::bytea[], $10::bytea[], $11::bytea[])
ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value
"""


@contextlib.contextmanager
def postgres_dsn() -> Iterator[str | None]:
    """The server to measure on: ``KAIZEN_BENCH_POSTGRES_DSN``, else a private one (fsync
    on) from the test helper; None when neither is available."""
    if os.environ.get("KAIZEN_BENCH_POSTGRES_DSN"):
        yield os.environ["KAIZEN_BENCH_POSTGRES_DSN"]
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgserver import PgServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        yield None
        return
    server = PgServer(bindir, fsync=True)
    try:
        server.init()
        server.start()
        yield server.dsn
    finally:
        server.remove()


def _schema() -> str:
    return f"bench_{uuid.uuid4().hex[:12]}"


async def _drop(dsn: str, schema: str) -> None:
    """Drop a schema (asyncpg on a loop of its own: the caller may be on Trio)."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    await anyio.to_thread.run_sync(asyncio.run, drop())


async def pg_plain_batched(
    dsn: str, sessions: list[tuple[str, Sets]], *, heads: bool = False
) -> float:
    """(c) asyncpg: round i inserts set i of every session (entry + state rows), one
    statement (its own transaction) per round, its column arrays built in the loop as (b)
    builds its rows; with ``heads`` (c') it also moves each session's row to its new head,
    as the store does (without its guards); returns the seconds taken."""
    import asyncpg

    schema = _schema()
    async with PostgresStore(dsn, schema=schema) as store:
        # the store's tables, so both write the same rows into the same layout
        for sid, _ in sessions if heads else []:
            first = SessionCore(sid).records[0]
            await store.create(
                Batch(sid, 0, [first], 0), max_artifact_size=1 << 20, workspace_path=None
            )
    conn = await asyncpg.connect(dsn)
    sql = (_PG_PLAIN_HEADS if heads else _PG_PLAIN).replace("{s}", f'"{schema}"')
    try:
        start = time.perf_counter()
        for i in range(len(sessions[0][1])):  # the rows built in the loop, as in (b)
            rows = [(sid.encode(), *sets[i]) for sid, sets in sessions]
            await conn.execute(
                sql,
                [sid for sid, _, _ in rows],
                [r[SEQ] for _, r, _ in rows],
                [r[TIMESTAMP] for _, r, _ in rows],
                [r[AGENT_ID].encode() for _, r, _ in rows],
                [r[ENTRY_TYPE] for _, r, _ in rows],
                [r[CONTENT] for _, r, _ in rows],
                [r[PREV_HASH] for _, r, _ in rows],
                [r[HASH] for _, r, _ in rows],
                [sid for sid, _, _ in rows],
                [b"key"] * len(rows),
                [value for _, _, value in rows],
                *(
                    (
                        now(),
                        [sid for sid, _, _ in rows],
                        [r[SEQ] for _, r, _ in rows],
                        [r[HASH] for _, r, _ in rows],
                        [r[SEQ] - 1 for _, r, _ in rows],
                    )
                    if heads
                    else ()
                ),
            )
        return time.perf_counter() - start
    finally:
        await conn.close()
        await _drop(dsn, schema)


async def pg_store_commits(dsn: str, sessions: list[tuple[str, Record, Sets]]) -> float:
    """PostgresStore: each session's sets committed by its own caller, all at once."""
    schema = _schema()
    try:
        async with PostgresStore(dsn, schema=schema) as store:
            for sid, created, _ in sessions:
                await store.create(
                    Batch(sid, 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
                )

            async def caller(sid: str, sets: Sets) -> None:
                commit = store.commit
                for record, value in sets:
                    await commit(
                        Batch(sid, record[SEQ] - 1, (record,), record[SEQ] - 1, {"key": value})
                    )

            before = store.statistics()
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for sid, _, sets in sessions:
                    tg.start_soon(caller, sid, sets)
            elapsed = time.perf_counter() - start
            after = store.statistics()
        commits, batches = after.commits - before.commits, after.batches - before.batches
        print(
            f"  PostgresStore, {len(sessions)} callers: {batches:,} commits in {commits:,} "
            f"statements (mean batch {batches / commits:.1f})"
        )
        return elapsed
    finally:
        await _drop(dsn, schema)


_SUBSCRIBER = """
import sys, time, anyio
from kaizen_async.stores import PostgresStore

async def main(dsn, schema, count):
    async with PostgresStore(dsn, schema=schema) as store:
        print("ready", flush=True)
        last = 1
        while last < count + 1:
            head = await store.wait_for_commit("watched", last, timeout=30)
            for record in await store.read("watched", since_seq=last, until_seq=head):
                print(record[0], time.time(), flush=True)
            last = head

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


async def subscription_latency(dsn: str, count: int) -> tuple[list[float], list[float]]:
    """Commit ``count`` single entries one at a time (a few ms apart) while a subscriber in
    another process waits for commits (``wait_for_commit``, woken by NOTIFY) and reads
    them; returns the delays (ms) from each commit's start, and from its acknowledgement,
    to the subscriber holding the entry."""
    schema = _schema()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    starts: dict[int, float] = {}
    acks: dict[int, float] = {}
    delivered: dict[int, float] = {}
    try:
        async with PostgresStore(dsn, schema=schema) as store:
            created, sets = make_sets("watched", count)
            await store.create(
                Batch("watched", 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
            )
            async with await anyio.open_process(
                [sys.executable, "-c", _SUBSCRIBER, dsn, schema, str(count)], env=env
            ) as child:
                assert child.stdout is not None
                lines = child.stdout
                done = anyio.Event()

                async def collect() -> None:
                    buffer = b""
                    async for chunk in lines:
                        buffer += chunk
                        *complete, buffer = buffer.split(b"\n")
                        for line in complete:
                            if line != b"ready":
                                seq, at = line.split()
                                delivered[int(seq)] = float(at)
                        if len(delivered) >= count:
                            done.set()
                            return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect)
                    await anyio.sleep(1.0)  # the subscriber has started and listens
                    for record, value in sets:
                        starts[record[SEQ]] = time.time()
                        await store.commit(
                            Batch(
                                "watched", record[SEQ] - 1, (record,), record[SEQ] - 1, {"k": value}
                            )
                        )
                        acks[record[SEQ]] = time.time()
                        await anyio.sleep(0.004)
                    with anyio.fail_after(30):
                        await done.wait()
    finally:
        await _drop(dsn, schema)
    from_start = [(delivered[seq] - starts[seq]) * 1000 for seq in starts]
    from_ack = [(delivered[seq] - acks[seq]) * 1000 for seq in acks]
    return from_start, from_ack


_OWNER = """
import sys, anyio
from kaizen_async.stores import PostgresStore

async def main(dsn, schema, lease):
    async with PostgresStore(dsn, schema=schema) as store:
        ownership = await store.acquire("owned", "owner", lease_seconds=lease)
        print("owned", flush=True)
        while True:  # renew as a hub does, every third of a lease
            await anyio.sleep(lease / 3)
            await store.renew("owner", {"owned": ownership.epoch}, lease_seconds=lease)

anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


async def takeover_time(dsn: str, lease: float) -> float:
    """Seconds from an owner's death (SIGKILL at a random moment of its renewal cycle) to
    another owner's successful ``acquire`` (retried every 0.1 s, as an open would be)."""
    import random
    import signal

    from kaizen_async import SessionBusyError

    schema = _schema()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    try:
        async with PostgresStore(dsn, schema=schema) as store:
            created, _ = make_sets("owned", 0)
            await store.create(
                Batch("owned", 0, [created], 0), max_artifact_size=1 << 20, workspace_path=None
            )
            async with await anyio.open_process(
                [sys.executable, "-c", _OWNER, dsn, schema, str(lease)], env=env
            ) as owner:
                assert owner.stdout is not None
                await owner.stdout.receive()  # "owned"
                await anyio.sleep(random.uniform(lease / 3, lease))
                owner.send_signal(signal.SIGKILL)
                died = time.perf_counter()
            while True:
                try:
                    await store.acquire("owned", "rival", lease_seconds=lease)
                    return time.perf_counter() - died
                except SessionBusyError:
                    await anyio.sleep(0.1)
    finally:
        await _drop(dsn, schema)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def postgres_rows(dsn: str, quick: bool) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    repeats = 2 if quick else 3
    per_caller = 100 if quick else 300
    many = [(f"s{c:02d}", *make_sets(f"s{c:02d}", per_caller)) for c in range(CALLERS)]
    plain = [(sid, sets) for sid, _, sets in many]
    n = CALLERS * per_caller
    # interleaved (baseline, store, store on Trio) rounds, best of each: the disk's flush
    # time on a shared machine drifts within a run, and each round sees the same drift
    plain_times, heads_times, asyncio_times, trio_times = [], [], [], []

    async def on_trio() -> float:
        return await pg_store_commits(dsn, many)

    for _ in range(repeats):
        plain_times.append(await pg_plain_batched(dsn, plain))
        heads_times.append(await pg_plain_batched(dsn, plain, heads=True))
        asyncio_times.append(await pg_store_commits(dsn, many))
        trio_times.append(
            await anyio.to_thread.run_sync(lambda: anyio.run(on_trio, backend="trio"))
        )
    base_c, store_asyncio, store_trio = min(plain_times), min(asyncio_times), min(trio_times)
    rate_heads = n / min(heads_times)
    rate_c, rate_a, rate_t = n / base_c, n / store_asyncio, n / store_trio
    ratio = rate_a / rate_c

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        (f"(c) asyncpg, {CALLERS} sets per statement (baseline)", f"{rate_c:,.0f}/s", "1.00"),
        (
            f"PostgresStore.commit, {CALLERS} callers on {CALLERS} sessions, asyncio "
            f"[target >= {PG_TARGET_RATIO}x (c)]",
            f"{rate_a:,.0f}/s",
            f"{ratio:.2f} {verdict(ratio >= PG_TARGET_RATIO)}",
        ),
        (
            "  beside (c') asyncpg writing all the rows the store writes (entry, state and the "
            "session's head, unguarded) in statements of 64",
            f"{rate_heads:,.0f}/s",
            f"{rate_a / rate_heads:.2f}",
        ),
        (
            f"  same, absolute [target >= {PG_TARGET_64_PER_S:,}/s on a quiet machine]",
            f"{rate_a:,.0f}/s",
            verdict(rate_a >= PG_TARGET_64_PER_S),
        ),
        (
            "  same on Trio (driver loop thread)",
            f"{rate_t:,.0f}/s",
            f"{rate_t / rate_c:.2f}",
        ),
    ]
    from_start, from_ack = await subscription_latency(dsn, 200 if quick else 1000)
    p50, p99 = _percentile(from_start, 0.5), _percentile(from_start, 0.99)
    ack50, ack99 = _percentile(from_ack, 0.5), _percentile(from_ack, 0.99)
    rows.append(
        (
            "cross-process subscription, commit start -> delivery p50 / p99 [p99 < 10 ms]",
            f"{p50:.2f} / {p99:.2f} ms",
            verdict(p99 < 10),
        )
    )
    rows.append(("  same, from the commit's acknowledgement", f"{ack50:.2f} / {ack99:.2f} ms", ""))
    lease = TAKEOVER_LEASE
    took = await takeover_time(dsn, lease)
    rows.append(
        (
            f"takeover after the owner's death (lease {lease:g} s, renewed every third)",
            f"{took:.1f} s",
            "",
        )
    )
    figures = {
        "pg_subscription_p50_ms": p50,
        "pg_subscription_p99_ms": p99,
        "pg_subscription_from_ack_p50_ms": ack50,
        "pg_subscription_from_ack_p99_ms": ack99,
        "pg_takeover_s": took,
        "pg_takeover_lease_s": lease,
        "pg_plain_batched_per_s": rate_c,
        "pg_plain_batched_with_heads_per_s": rate_heads,
        "pg_store_64_callers_per_s": rate_a,
        "pg_store_64_callers_trio_per_s": rate_t,
        "pg_ratio_64_callers": ratio,
    }
    return rows, figures


# -- hub-level rows ---------------------------------------------------------------------------
# The same writes through SessionHub sessions (SQLiteStore underneath): what a server pays.


async def _create_sessions(hub: SessionHub, ids: list[str], text: str | None = None) -> None:
    """Create ``ids`` in the hub's store (64 at a time), with ``text`` set when given."""

    async def make(part: list[str]) -> None:
        for sid in part:
            await hub.create(sid)
            if text is not None:
                async with hub.open(sid) as session:
                    await session.set("text", text)

    async with anyio.create_task_group() as tg:
        for c in range(CALLERS):
            tg.start_soon(make, ids[c::CALLERS])


async def hub_sets(directory: str, callers: int, per_caller: int) -> float:
    """Seconds for ``callers`` tasks, each on its own hub session, to ``await set`` the
    baselines' values ``per_caller`` times (every set acknowledged once durable)."""
    path = os.path.join(directory, f"hub-sets-{time.perf_counter_ns()}.db")
    values = [{"i": i, "text": "hello world"} for i in range(per_caller)]
    ids = [f"s{c:02d}" for c in range(callers)]
    async with SessionHub(SQLiteStore(path)) as hub:
        await _create_sessions(hub, ids)
        leases = [hub.open(sid) for sid in ids]
        sessions = [await lease.acquire() for lease in leases]

        async def caller(session: Session) -> None:
            set_ = session.set
            for value in values:
                await set_("key", value)

        before = hub.statistics()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(caller, session)
        elapsed = time.perf_counter() - start
        after = hub.statistics()
        for lease in leases:
            lease.release()
    batches, commits = after.batches - before.batches, after.commits - before.commits
    print(
        f"  hub sets, {callers} caller(s): {batches:,} session commits in {commits:,} "
        f"transactions (mean batch {batches / commits:.1f})"
    )
    return elapsed


async def dispatch_durable(directory: str, per_caller: int) -> tuple[float, float]:
    """Seconds for 64 callers on 64 hub sessions to ``dispatch_single("reverse")``
    ``per_caller`` times each (then ``flush``: every step entry durable), and the CPU
    seconds of the process meanwhile (the store's writer thread included)."""
    path = os.path.join(directory, f"hub-dispatch-{time.perf_counter_ns()}.db")
    ids = [f"d{c:02d}" for c in range(CALLERS)]
    async with (
        SessionHub(SQLiteStore(path)) as hub,
        Dispatcher(mailbox_size=CALLERS) as dispatcher,
    ):
        dispatcher.register(ReverseAgent())
        await _create_sessions(hub, ids, "hello world")
        leases = [hub.open(sid) for sid in ids]
        sessions = [await lease.acquire() for lease in leases]

        async def caller(session: Session) -> None:
            for _ in range(per_caller):
                await dispatcher.dispatch_single("reverse", session, {"key": "text"})
            await session.flush()

        before = hub.statistics()
        start, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(caller, session)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = hub.statistics()
        for lease in leases:
            lease.release()
    steps = CALLERS * per_caller
    batches, commits = after.batches - before.batches, after.commits - before.commits
    print(
        f"  hub dispatch: {steps:,} steps, {batches:,} session "
        f"commits ({batches / steps:.1f} a step) in {commits:,} transactions "
        f"(mean batch {batches / commits:.1f})"
    )
    return elapsed, cpu


async def dispatch_memory(per_caller: int) -> tuple[float, float]:
    """The same on 64 in-memory sessions (the baseline of the durable row)."""
    async with (
        Dispatcher(mailbox_size=CALLERS) as dispatcher,
        contextlib.AsyncExitStack() as stack,
    ):
        dispatcher.register(ReverseAgent())
        sessions = [await stack.enter_async_context(Session()) for _ in range(CALLERS)]
        for session in sessions:
            await session.set("text", "hello world")

        async def caller(session: Session) -> None:
            for _ in range(per_caller):
                await dispatcher.dispatch_single("reverse", session, {"key": "text"})
            await session.flush()

        start, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for session in sessions:
                tg.start_soon(caller, session)
        return time.perf_counter() - start, time.process_time() - cpu


async def _wait_evicted(hub: SessionHub) -> None:
    """Until the reaper has evicted every session (the hub has no event for it)."""
    while hub.statistics().open:  # noqa: ASYNC110
        await anyio.sleep(0.001)


async def reopen_evicted(directory: str, entries: int, repeats: int) -> list[float]:
    """Seconds to open (take a lease on) an evicted session of ``entries`` entries: the
    store reads its state, head and tail; ``idle_timeout=0`` evicts it at each release."""
    path = os.path.join(directory, "reopen.db")
    async with SessionHub(SQLiteStore(path), idle_timeout=0) as hub:
        await hub.create("big")
        async with hub.open("big") as session:
            for first in range(1, entries, 100):
                async with session.transaction() as tx:
                    for i in range(first, min(first + 100, entries)):
                        tx.set(f"k{i % 10}", {"i": i, "text": "hello world"})
            assert await session.get_trajectory_length() == entries
        times = []
        for _ in range(repeats):
            await _wait_evicted(hub)
            lease = hub.open("big")
            began = time.perf_counter()
            await lease.acquire()
            times.append(time.perf_counter() - began)
            lease.release()
        assert hub.statistics().evicted >= repeats
    return times


async def idle_memory(directory: str, n: int, entries: int) -> tuple[float, float, list[str]]:
    """Bytes held per idle (warm, unleased) open session, measured with tracemalloc over
    ``n`` sessions of ``entries`` entries each; also each one's state (canonical JSON
    bytes of keys and values) and the biggest allocation sites."""
    path = os.path.join(directory, f"memory-{entries}.db")
    ids = [f"m{i:05d}" for i in range(n)]
    async with SessionHub(SQLiteStore(path)) as hub:
        await _create_sessions(hub, ids, "hello world")
        for sid in ids:
            async with hub.open(sid) as session, session.transaction() as tx:
                for i in range(entries - 2):
                    tx.append("bench", EntryType.SYSTEM_NOTE, {"i": i})
    async with SessionHub(SQLiteStore(path), idle_timeout=3600) as hub:
        async with hub.open(ids[0]) as session:  # warm up: imports, caches, threads
            state = await session.get_all_state()
            assert await session.get_trajectory_length() == entries
        state_bytes = sum(len(k) + len(orjson.dumps(v)) for k, v in state.items())
        gc.collect()
        tracemalloc.start(10)
        before = tracemalloc.take_snapshot()
        for sid in ids[1:]:
            async with hub.open(sid):
                pass
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        assert hub.statistics().open == n and hub.statistics().leased == 0
    diff = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in diff)
    top = [
        f"{stat.size_diff / (n - 1):,.0f} B/session at {stat.traceback[0].filename.split('/')[-1]}"
        f":{stat.traceback[0].lineno}"
        for stat in sorted(diff, key=lambda s: -s.size_diff)[:5]
    ]
    return total / (n - 1), state_bytes, top


async def open_close(directory: str, n: int) -> tuple[float, float]:
    """Seconds to open ``n`` stored sessions through one hub, all leased at once (64
    openers), then to release them all and close the hub (every actor stopped)."""
    path = os.path.join(directory, f"open-close-{n}.db")
    ids = [f"o{i:06d}" for i in range(n)]
    async with SessionHub(SQLiteStore(path)) as hub:
        await _create_sessions(hub, ids)
    leases: list[SessionLease] = []
    hub = SessionHub(SQLiteStore(path), max_open=n)
    await hub.__aenter__()
    try:

        async def opener(part: list[str]) -> None:
            for sid in part:
                lease = hub.open(sid)
                await lease.acquire()
                leases.append(lease)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in range(CALLERS):
                tg.start_soon(opener, ids[c::CALLERS])
        opened = time.perf_counter()
        assert hub.statistics().open == n
        for lease in leases:
            lease.release()
    finally:
        await hub.__aexit__(None, None, None)
    return opened - start, time.perf_counter() - opened


async def dispatch_only(quick: bool) -> None:
    """Only the durable ``dispatch_single`` row beside its in-memory baseline, interleaved,
    each the best of its repeats, with the CPU time of each (``time.process_time``: the
    store's writer thread included) beside the wall-clock rate."""
    load = load_average()
    repeats = 3 if quick else 5
    per_dispatch = 40 if quick else 250
    steps = CALLERS * per_dispatch
    wall: dict[str, list[float]] = {"memory": [], "durable": []}
    cpu: dict[str, list[float]] = {"memory": [], "durable": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        for _ in range(repeats):
            for kind in ("memory", "durable"):
                if kind == "memory":
                    elapsed, used = await dispatch_memory(per_dispatch)
                else:
                    elapsed, used = await dispatch_durable(directory, per_dispatch)
                cpu[kind].append(used)
                wall[kind].append(elapsed)
    memory_rate, durable_rate = steps / min(wall["memory"]), steps / min(wall["durable"])
    ratio = durable_rate / memory_rate
    cpu_us = {kind: min(times) / steps * 1e6 for kind, times in cpu.items()}
    verdict = "met" if ratio >= TARGET_DISPATCH_RATIO else "MISSED"
    report(
        "store_dispatch",
        [
            (
                f"(c) dispatch_single, {CALLERS} callers on {CALLERS} in-memory sessions "
                "(baseline)",
                f"{memory_rate:,.0f}/s",
                f"1.00 (CPU {cpu_us['memory']:.1f} us/step)",
            ),
            (
                f"dispatch_single, {CALLERS} callers on {CALLERS} hub sessions "
                f"[target >= {TARGET_DISPATCH_RATIO}x (c)]",
                f"{durable_rate:,.0f}/s",
                f"{ratio:.2f} {verdict} (CPU {cpu_us['durable']:.1f} us/step, "
                f"CPU ratio {cpu_us['memory'] / cpu_us['durable']:.2f})",
            ),
        ],
        {
            "load_average_1min": load,
            "dispatch_memory_64_per_s": memory_rate,
            "dispatch_durable_64_per_s": durable_rate,
            "ratio_dispatch_durable": ratio,
            "cpu_us_per_step": cpu_us,
        },
    )


async def main(quick: bool) -> None:
    load = load_average()
    repeats = 2 if quick else 3
    single_n = 1_000 if quick else 5_000
    per_caller = 200 if quick else 1_000
    per_dispatch = 40 if quick else 250
    long_entries = 100_000 if quick else 1_000_000
    reopen_repeats = 20 if quick else 50
    idle_n = 200 if quick else 1_000
    scale = [500, 1_000, 2_000] if quick else [2_500, 5_000, 10_000]
    one = [("one", *make_sets("one", single_n))]
    many = [(f"s{c:02d}", *make_sets(f"s{c:02d}", per_caller)) for c in range(CALLERS)]
    one_plain = [(sid, sets) for sid, _, sets in one]
    many_plain = [(sid, sets) for sid, _, sets in many]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        # each repeat runs every variant once, interleaved, so a change in the machine's
        # load shifts a row and its baseline alike; each keeps its best time
        base_a_times: list[float] = []
        base_b_times: list[float] = []
        single_times: list[float] = []
        many_times: list[float] = []
        hub_one_times: list[float] = []
        hub_many_times: list[float] = []
        memory_dispatch_times: list[float] = []
        durable_dispatch_times: list[float] = []
        for _ in range(repeats):
            base_a_times.append(await timed_run(lambda: plain_per_set(directory, one_plain)))
            await store_commits(directory, one, single_times)
            hub_one_times.append(await hub_sets(directory, 1, single_n))
            base_b_times.append(await timed_run(lambda: plain_batched(directory, many_plain)))
            await store_commits(directory, many, many_times)
            hub_many_times.append(await hub_sets(directory, CALLERS, per_caller))
            memory_dispatch_times.append((await dispatch_memory(per_dispatch))[0])
            durable_dispatch_times.append((await dispatch_durable(directory, per_dispatch))[0])
        load_s = await long_session_load(directory, long_entries)
        reopen = sorted(await reopen_evicted(directory, 1_000, reopen_repeats))
        idle_small = await idle_memory(directory, idle_n, 2)
        idle_full = await idle_memory(directory, idle_n, 300)
        scaling = [(n, *await open_close(directory, n)) for n in scale]
    rate_a = single_n / min(base_a_times)
    rate_b = CALLERS * per_caller / min(base_b_times)
    pg_rows: list[tuple[str, str, str]] = []
    pg_figures: dict[str, Any] = {}
    with postgres_dsn() as dsn:
        if dsn is None:
            pg_rows = [("PostgresStore (no PostgreSQL server binaries: not measured)", "-", "")]
        else:
            pg_rows, pg_figures = await postgres_rows(dsn, quick)
    rate_one = single_n / min(single_times)
    rate_many = CALLERS * per_caller / min(many_times)
    ratio_one, ratio_many = rate_one / rate_a, rate_many / rate_b
    hub_one = single_n / min(hub_one_times)
    hub_many = CALLERS * per_caller / min(hub_many_times)
    steps = CALLERS * per_dispatch
    dispatch_memory_rate = steps / min(memory_dispatch_times)
    dispatch_durable_rate = steps / min(durable_dispatch_times)
    dispatch_ratio = dispatch_durable_rate / dispatch_memory_rate
    reopen_median = reopen[len(reopen) // 2]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def ratio(value: float, target: float) -> str:
        return f"{value:.2f} {verdict(value >= target)}"

    rows = [
        ("(a) plain sqlite3, 1 set per transaction (baseline)", f"{rate_a:,.0f}/s", "1.00"),
        (
            f"SQLiteStore.commit, 1 caller [target >= {TARGET_RATIO}x (a)]",
            f"{rate_one:,.0f}/s",
            ratio(ratio_one, TARGET_RATIO),
        ),
        (
            f"hub session.set, 1 caller [target >= {TARGET_RATIO}x (a)]",
            f"{hub_one:,.0f}/s",
            ratio(hub_one / rate_a, TARGET_RATIO),
        ),
        (
            f"(b) plain sqlite3, {CALLERS} sets per transaction (baseline)",
            f"{rate_b:,.0f}/s",
            "1.00",
        ),
        (
            f"SQLiteStore.commit, {CALLERS} callers on {CALLERS} sessions "
            f"[target >= {TARGET_RATIO}x (b)]",
            f"{rate_many:,.0f}/s",
            ratio(ratio_many, TARGET_RATIO),
        ),
        (
            f"  same, absolute [target >= {TARGET_64_PER_S:,}/s on a quiet machine]",
            f"{rate_many:,.0f}/s",
            verdict(rate_many >= TARGET_64_PER_S),
        ),
        (
            f"hub session.set, {CALLERS} callers on {CALLERS} sessions "
            f"[target >= {TARGET_RATIO}x (b)]",
            f"{hub_many:,.0f}/s",
            ratio(hub_many / rate_b, TARGET_RATIO),
        ),
        (
            f"  same, absolute [target >= {TARGET_64_PER_S:,}/s on a quiet machine]",
            f"{hub_many:,.0f}/s",
            verdict(hub_many >= TARGET_64_PER_S),
        ),
        (
            f"(c) dispatch_single, {CALLERS} callers on {CALLERS} in-memory sessions (baseline)",
            f"{dispatch_memory_rate:,.0f}/s",
            "1.00",
        ),
        (
            f"dispatch_single, {CALLERS} callers on {CALLERS} hub sessions "
            f"[target >= {TARGET_DISPATCH_RATIO}x (c)]",
            f"{dispatch_durable_rate:,.0f}/s",
            ratio(dispatch_ratio, TARGET_DISPATCH_RATIO),
        ),
        (
            f"load() of a {long_entries:,}-entry session (tail 256) [target < 1 s]",
            f"{load_s * 1000:,.1f} ms",
            verdict(load_s < 1.0),
        ),
        (
            f"reopen of an evicted 1,000-entry session, median of {reopen_repeats} "
            f"[target < {TARGET_REOPEN_MS} ms]",
            f"{reopen_median * 1000:,.2f} ms",
            f"best {reopen[0] * 1000:,.2f} ms, {verdict(reopen_median * 1000 < TARGET_REOPEN_MS)}",
        ),
        *pg_rows,
    ]
    for entries, (per_session, state_bytes, _) in [(2, idle_small), (300, idle_full)]:
        beyond = per_session - state_bytes
        rows.append(
            (
                f"memory per idle open session, {entries} entries (state {state_bytes:.0f} B) "
                f"[target <= {TARGET_IDLE_KIB} KiB + state]",
                f"{per_session / 1024:,.1f} KiB",
                f"{beyond / 1024:,.1f} KiB beyond state, "
                f"{verdict(beyond <= TARGET_IDLE_KIB * 1024)}",
            )
        )
    previous = None
    for n, opened, closed in scaling:
        total = opened + closed
        growth = "" if previous is None else f"x{total / previous:.2f} for x2 sessions"
        rows.append(
            (
                f"open {n:,} sessions through a hub, then close them [O(N): ~x2 per doubling]",
                f"{total:,.2f} s (open {opened:,.2f}, close {closed:,.2f})",
                growth,
            )
        )
        previous = total
    for entries, (_, _, top) in [(2, idle_small), (300, idle_full)]:
        print(f"where an idle {entries}-entry session's memory goes (tracemalloc, top 5):")
        for line in top:
            print(f"  {line}")
    report(
        "store",
        rows,
        {
            "load_average_1min": load,
            "plain_per_set_per_s": rate_a,
            "plain_batched_per_s": rate_b,
            "store_one_caller_per_s": rate_one,
            "store_64_callers_per_s": rate_many,
            "ratio_one_caller": ratio_one,
            "ratio_64_callers": ratio_many,
            "hub_set_one_caller_per_s": hub_one,
            "hub_set_64_callers_per_s": hub_many,
            "ratio_hub_one_caller": hub_one / rate_a,
            "ratio_hub_64_callers": hub_many / rate_b,
            "dispatch_memory_64_per_s": dispatch_memory_rate,
            "dispatch_durable_64_per_s": dispatch_durable_rate,
            "ratio_dispatch_durable": dispatch_ratio,
            "long_session_entries": long_entries,
            "long_session_load_s": load_s,
            "reopen_evicted_1000_median_s": reopen_median,
            "reopen_evicted_1000_best_s": reopen[0],
            "idle_session_bytes_2_entries": idle_small[0],
            "idle_session_bytes_300_entries": idle_full[0],
            "idle_session_state_bytes": idle_small[1],
            "open_close_seconds": {str(n): [o, c] for n, o, c in scaling},
            **pg_figures,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--dispatch", action="store_true", help="only the durable dispatch row and its baseline"
    )
    arguments = parser.parse_args()
    anyio.run(dispatch_only if arguments.dispatch else main, arguments.quick)
