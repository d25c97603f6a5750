"""Durable commit throughput of ``SQLiteStore`` beside plain sqlite3 measured in the same run.

Run: ``python benchmarks/bench_store.py`` (``--quick`` for a smaller run). Run it when the
machine is otherwise idle: the load average is printed first, with a warning when high.

Every commit is what a durable ``Session.set`` hands its store: one batch holding one
hash-chained ``state_set`` record and the one state key it changed. Records are built
beforehand (from a real ``SessionCore``) so that every row compares only the writing.
All databases are WAL with ``synchronous=FULL``, fresh per run, with the store's schema.

Baselines (plain stdlib sqlite3, one worker-thread call per transaction):
  (a) one set's rows (its entry row and its state row) per transaction, one caller;
  (b) the same rows, 64 sets per transaction (what 64 concurrent callers could share).
The store additionally keeps each session's row (head, version; the guarded update that
refuses a conflicting batch) and runs the group commit: queue, one writer, per-caller
answers.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import report

from kaizen_async._state import SessionCore
from kaizen_async._trajectory import Record
from kaizen_async.stores import Batch, SQLiteStore
from kaizen_async.stores._sqlite_schema import MIGRATIONS

CALLERS = 64
TARGET_RATIO = 0.8
TARGET_64_PER_S = 40_000

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
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    anyio.run(main, parser.parse_args().quick)
