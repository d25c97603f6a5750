"""The blocking facade (``kaizen_async.sync``): ``Session.set`` from plain threads.

Run: ``python benchmarks/bench_sync.py`` (``--quick`` for a smaller run, ``--tiny`` only to
check that it runs).

Beside the facade's ``set`` the same run measures, on the facade's own loop thread:

- today's path, kept here as a baseline: AnyIO's ``BlockingPortal.call(session.set, ...)``,
  which is what every blocking call did before the facade got its own one-round-trip path
  (two thread round trips per call: one to spawn a task in the portal's task group, one
  for its result);
- a bare ``asyncio.run_coroutine_threadsafe`` no-op round trip (a task per call, no work);
- the floor: ``loop.call_soon_threadsafe`` releasing a lock the caller waits on (one thread
  round trip, no task, no work).

Rounds alternate between the variants and each figure is the best round, so a change of
load during the run does not favour one of them. The target (issue 10) is the facade's
``set`` at least 2x today's path, with 1 thread and with 8 threads on one session.
"""

from __future__ import annotations

import _thread
import argparse
import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import load_average, report, size, size_options

from kaizen_async.sync import Session, _runtime

TARGET = 2.0
LABELS = {
    "floor": "call_soon_threadsafe + lock round trip, 1 thread (floor)",
    "rcts_noop": "run_coroutine_threadsafe no-op, 1 thread (baseline)",
    "today_1": "today: BlockingPortal.call(set), 1 thread",
    "sync_1": "sync Session.set, 1 thread",
    "today_8": "today: BlockingPortal.call(set), 8 threads, one session",
    "sync_8": "sync Session.set, 8 threads, one session",
}
Runner = Callable[[int, int], None]  # (thread index, calls) -> None


def facade_set(session: Session) -> Runner:
    def run(index: int, n: int) -> None:
        key = f"key{index}"
        for i in range(n):
            session.set(key, i)

    return run


def portal_set(session: Session) -> Runner:
    """Today's path: ``BlockingPortal.call`` of the async ``set`` (the facade's old call)."""
    portal = _runtime().portal
    assert portal is not None
    inner = session.async_session

    def run(index: int, n: int) -> None:
        key = f"key{index}"
        for i in range(n):
            portal.call(inner.set, key, i)

    return run


async def _noop() -> None:
    pass


def run_coroutine_threadsafe_noop(loop: asyncio.AbstractEventLoop) -> Runner:
    def run(index: int, n: int) -> None:
        for _ in range(n):
            asyncio.run_coroutine_threadsafe(_noop(), loop).result()

    return run


def call_soon_threadsafe_floor(loop: asyncio.AbstractEventLoop) -> Runner:
    def run(index: int, n: int) -> None:
        for _ in range(n):
            lock = _thread.allocate_lock()
            lock.acquire()
            loop.call_soon_threadsafe(lock.release)
            lock.acquire()

    return run


def rate(run: Runner, threads: int, n: int) -> tuple[float, float]:
    """Calls per second (wall clock) and process CPU µs per call, ``n`` calls split over
    ``threads`` threads."""
    per = n // threads
    start_gate = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        start_gate.wait()
        run(index, per)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start_gate.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return per * threads / wall, cpu / (per * threads) * 1e6


def main(size: str, results: Path) -> None:
    load_average()
    n, rounds = {"full": (16_000, 7), "quick": (4_000, 3), "tiny": (400, 1)}[size]
    with Session() as session:
        loop = _runtime().loop
        assert loop is not None
        today, facade = portal_set(session), facade_set(session)
        variants: dict[str, tuple[Runner, int]] = {
            "floor": (call_soon_threadsafe_floor(loop), 1),
            "rcts_noop": (run_coroutine_threadsafe_noop(loop), 1),
            "today_1": (today, 1),
            "sync_1": (facade, 1),
            "today_8": (today, 8),
            "sync_8": (facade, 8),
        }
        best = {key: (0.0, float("inf")) for key in variants}
        for run, threads in variants.values():  # warm up (imports, caches)
            rate(run, threads, max(n // 10, threads))
        for _ in range(rounds):
            for key, (run, threads) in variants.items():
                per_s, cpu_us = rate(run, threads, n)
                best[key] = (max(best[key][0], per_s), min(best[key][1], cpu_us))
    base = best["rcts_noop"][0]
    data: dict[str, Any] = {
        "per_s": {key: r for key, (r, _) in best.items()},
        "cpu_us_per_call": {key: c for key, (_, c) in best.items()},
        "targets": {},
    }
    rows = []
    for key, (per_s, cpu_us) in best.items():
        threads = variants[key][1]
        today_rate = best[f"today_{threads}"][0]
        target = ""
        if key.startswith("sync_"):
            ratio = per_s / today_rate
            met = ratio >= TARGET
            target = f">= {TARGET:.0f}x today: {'met' if met else 'MISSED'}"
            data["targets"][f"sync_{threads}_over_today"] = {"ratio": ratio, "met": met}
        rows.append(
            (
                LABELS[key],
                f"{per_s:,.0f}/s",
                f"{cpu_us:.1f} µs",
                f"{per_s / today_rate:.2f}",
                f"{per_s / base:.2f}",
                target,
            )
        )
    report(
        "sync",
        rows,
        data,
        header=("what", "figure", "CPU/call", "x today", "x rcts no-op", "issue 10 target"),
        results=results,
    )
    print()
    for threads in (1, 8):
        (new, new_cpu), (old, old_cpu) = best[f"sync_{threads}"], best[f"today_{threads}"]
        print(
            f"issue 10 target: sync set >= {TARGET:.0f}x today's path with {threads} thread(s): "
            f"{new / old:.2f}x ({new:,.0f}/s vs {old:,.0f}/s; {old_cpu / new_cpu:.2f}x less CPU "
            f"per call): {'met' if new / old >= TARGET else 'MISSED'}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    size_options(parser, "smaller sizes, fewer rounds")
    args = parser.parse_args()
    main(size(args), args.results)
