"""Durable commit throughput of ``SQLiteStore`` beside plain sqlite3 measured in the same run.

Run: ``python benchmarks/bench_store.py`` (``--quick`` for a smaller run). Run it when the
machine is otherwise idle: the load average is printed first, with a warning when high.

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from _common import report

from kaizen_async._state import SessionCore
from kaizen_async._trajectory import Record
from kaizen_async.stores import Batch, PostgresStore, SQLiteStore
from kaizen_async.stores._common import now
from kaizen_async.stores._sqlite_schema import MIGRATIONS

CALLERS = 64
TARGET_RATIO = 0.8
TARGET_64_PER_S = 40_000
PG_TARGET_RATIO = 0.7
PG_TARGET_64_PER_S = 20_000
#: the lease of the takeover measurement: SessionHub's default (env TAKEOVER_LEASE: shorter)
TAKEOVER_LEASE = float(os.environ.get("TAKEOVER_LEASE", "30"))

Sets = list[tuple[Record, bytes]]  # per session: each set's record and new state value


def load_average() -> float:
    """Print the 1-minute load average; warn when the machine is busy."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    print(f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {cores} cores")
    if one > 0.5 * cores:
        print("WARNING: the machine is busy; these figures are not representative")
    return one


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
                await commit(Batch(sid, record.seq - 1, (record,), record.seq - 1, {"key": value}))

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
            base = part[0][0].seq - 1
            await store.commit(
                Batch("long", base, [r for r, _ in part], part[-1][0].seq - 1, {"key": part[-1][1]})
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
                [r.seq for _, r, _ in rows],
                [r.timestamp for _, r, _ in rows],
                [r.agent_id.encode() for _, r, _ in rows],
                [r.entry_type for _, r, _ in rows],
                [r.content for _, r, _ in rows],
                [r.prev_hash for _, r, _ in rows],
                [r.hash for _, r, _ in rows],
                [sid for sid, _, _ in rows],
                [b"key"] * len(rows),
                [value for _, _, value in rows],
                *(
                    (
                        now(),
                        [sid for sid, _, _ in rows],
                        [r.seq for _, r, _ in rows],
                        [r.hash for _, r, _ in rows],
                        [r.seq - 1 for _, r, _ in rows],
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
                        Batch(sid, record.seq - 1, (record,), record.seq - 1, {"key": value})
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
                print(record.seq, time.time(), flush=True)
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
                        starts[record.seq] = time.time()
                        await store.commit(
                            Batch(
                                "watched", record.seq - 1, (record,), record.seq - 1, {"k": value}
                            )
                        )
                        acks[record.seq] = time.time()
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
# PLACE FOR THE HUB ROWS (added with SessionHub, issue 8), each beside its target:
#   durable Session.set through a hub, 1 caller and 64 callers on 64 sessions
#   durable dispatch_single, 64 callers on 64 sessions (>= 0.5x the same in memory)
#   reopen of an evicted 1,000-entry session (< 5 ms)
#   memory per idle open session (<= 10 KiB plus its state)
HUB_ROWS_PENDING = [
    "durable Session.set via hub",
    "durable dispatch_single, 64 callers",
    "reopen evicted 1,000-entry session",
    "memory per idle open session",
]


async def main(quick: bool) -> None:
    load = load_average()
    repeats = 2 if quick else 3
    single_n = 1_000 if quick else 5_000
    per_caller = 200 if quick else 1_000
    long_entries = 100_000 if quick else 1_000_000
    one = [("one", *make_sets("one", single_n))]
    many = [(f"s{c:02d}", *make_sets(f"s{c:02d}", per_caller)) for c in range(CALLERS)]
    one_plain = [(sid, sets) for sid, _, sets in one]
    many_plain = [(sid, sets) for sid, _, sets in many]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        base_a = await best(lambda: timed_run(lambda: plain_per_set(directory, one_plain)), repeats)
        base_b = await best(
            lambda: timed_run(lambda: plain_batched(directory, many_plain)), repeats
        )
        single_times: list[float] = []
        many_times: list[float] = []
        for _ in range(repeats):
            await store_commits(directory, one, single_times)
            await store_commits(directory, many, many_times)
        load_s = await long_session_load(directory, long_entries)
    pg_rows: list[tuple[str, str, str]] = []
    pg_figures: dict[str, Any] = {}
    with postgres_dsn() as dsn:
        if dsn is None:
            pg_rows = [("PostgresStore (no PostgreSQL server binaries: not measured)", "-", "")]
        else:
            pg_rows, pg_figures = await postgres_rows(dsn, quick)
    rate_a = single_n / base_a
    rate_b = CALLERS * per_caller / base_b
    rate_one = single_n / min(single_times)
    rate_many = CALLERS * per_caller / min(many_times)
    ratio_one, ratio_many = rate_one / rate_a, rate_many / rate_b

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rows = [
        ("(a) plain sqlite3, 1 set per transaction (baseline)", f"{rate_a:,.0f}/s", "1.00"),
        (
            f"SQLiteStore.commit, 1 caller [target >= {TARGET_RATIO}x (a)]",
            f"{rate_one:,.0f}/s",
            f"{ratio_one:.2f} {verdict(ratio_one >= TARGET_RATIO)}",
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
            f"{ratio_many:.2f} {verdict(ratio_many >= TARGET_RATIO)}",
        ),
        (
            f"  same, absolute [target >= {TARGET_64_PER_S:,}/s on a quiet machine]",
            f"{rate_many:,.0f}/s",
            verdict(rate_many >= TARGET_64_PER_S),
        ),
        (
            f"load() of a {long_entries:,}-entry session (tail 256) [target < 1 s]",
            f"{load_s * 1000:,.1f} ms",
            verdict(load_s < 1.0),
        ),
        *pg_rows,
        *[(f"{name} (hub: not measured here yet)", "-", "") for name in HUB_ROWS_PENDING],
    ]
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
            "long_session_entries": long_entries,
            "long_session_load_s": load_s,
            **pg_figures,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    anyio.run(main, parser.parse_args().quick)
