"""The blocking facade (``kaizen_async.sync``): ``Session.set`` from plain threads.

Run: ``python benchmarks/bench_sync.py`` (``--quick`` for a smaller run).

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

from _common import load_average, report

from kaizen_async.sync import Session, _runtime

TARGET = 2.0
FLOOR = "call_soon_threadsafe + lock round trip, 1 thread (floor)"
BASELINE = "run_coroutine_threadsafe no-op, 1 thread (baseline)"
TODAY_1 = "today: BlockingPortal.call(set), 1 thread"
FACADE_1 = "sync Session.set, 1 thread"
TODAY_8 = "today: BlockingPortal.call(set), 8 threads on one session"
FACADE_8 = "sync Session.set, 8 threads on one session"
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


def main(quick: bool) -> None:
    load_average()
    n = 4_000 if quick else 16_000
    rounds = 3 if quick else 7
    with Session() as session:
        loop = _runtime().loop
        assert loop is not None
        today, facade = portal_set(session), facade_set(session)
        variants: dict[str, tuple[Runner, int]] = {
            FLOOR: (call_soon_threadsafe_floor(loop), 1),
            BASELINE: (run_coroutine_threadsafe_noop(loop), 1),
            TODAY_1: (today, 1),
            FACADE_1: (facade, 1),
            TODAY_8: (today, 8),
            FACADE_8: (facade, 8),
        }
        best = {name: (0.0, float("inf")) for name in variants}
        for run, threads in variants.values():  # warm up (imports, caches)
            rate(run, threads, n // 10)
        for _ in range(rounds):
            for name, (run, threads) in variants.items():
                per_s, cpu_us = rate(run, threads, n)
                best[name] = (max(best[name][0], per_s), min(best[name][1], cpu_us))
    base = best[BASELINE][0]
    rows = [
        (name, f"{per_s:,.0f}/s ({cpu_us:.1f} µs CPU/call)", f"{per_s / base:.2f}")
        for name, (per_s, cpu_us) in best.items()
    ]
    data: dict[str, object] = {name: {"per_s": r, "cpu_us": c} for name, (r, c) in best.items()}
    verdicts = []
    for threads, new_name, old_name in ((1, FACADE_1, TODAY_1), (8, FACADE_8, TODAY_8)):
        (new, new_cpu), (old, old_cpu) = best[new_name], best[old_name]
        ratio = new / old
        verdicts.append(
            f"target: sync set >= {TARGET:.0f}x today's path with {threads} thread(s): "
            f"{ratio:.2f}x ({new:,.0f}/s vs {old:,.0f}/s; CPU per call {old_cpu / new_cpu:.2f}x "
            f"less): {'met' if ratio >= TARGET else 'MISSED'}"
        )
        data[f"ratio_{threads}_threads"] = ratio
    report("sync", rows, data)
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    main(parser.parse_args().quick)
