"""Session throughput and persistence timings, beside request/reply baselines.

Run: ``python benchmarks/bench_session.py`` (``--quick`` for a smaller run).
Every ``set`` is fully recorded: one hash-chained ``state_set`` entry each.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc

import anyio
from _common import anyio_stream_baseline, asyncio_queue_baseline, best_rate, load_average, report

from kaizen_async import Session

TARGET_IDLE_KIB = 6  # issue 10: at most 6 KiB per idle open in-memory session


async def sets_one_caller(n: int) -> None:
    async with Session() as session:
        for i in range(n):
            await session.set("key", i)


async def sets_concurrent(n: int, callers: int = 64) -> None:
    async with Session() as session:
        per = n // callers

        async def caller(c: int) -> None:
            key = f"key{c}"
            for i in range(per):
                await session.set(key, i)

        async with anyio.create_task_group() as tg:
            for c in range(callers):
                tg.start_soon(caller, c)


async def fill(session: Session, entries: int) -> None:
    for i in range(entries):
        if i % 2:
            await session.set(f"k{i % 100}", {"i": i, "text": "hello world"})
        else:
            await session.append("bench", "system_note", {"i": i})


async def persistence(entries: int, increment: int, directory: str) -> dict[str, float]:
    big = os.path.join(directory, "big.kaizen")
    async with Session() as session:
        await fill(session, entries - 1)
        start = time.perf_counter()
        await session.save(big)  # its session_saved entry makes `entries`
        save_s = time.perf_counter() - start
    load_times, incremental_times = [], []
    for i in range(3):  # best of 3: each load starts from a copy of the same 100k file
        copy = os.path.join(directory, f"copy{i}.kaizen")
        shutil.copyfile(big, copy)
        with open(copy, "rb+") as f:  # flush the copy now, not in the timed save's fsync
            os.fsync(f.fileno())
        start = time.perf_counter()
        async with Session.load(copy) as loaded:
            load_times.append(time.perf_counter() - start)
            await fill(loaded, increment - 1)  # + the session_loaded entry
            start = time.perf_counter()
            await loaded.save(copy)
            incremental_times.append(time.perf_counter() - start)
    load_s, incremental_s = min(load_times), min(incremental_times)
    small_times = []
    for i in range(5):
        async with Session() as small:
            await fill(small, increment - 1)
            start = time.perf_counter()
            await small.save(os.path.join(directory, f"small{i}.kaizen"))
            small_times.append(time.perf_counter() - start)
    return {
        "save_s": save_s,
        "load_s": load_s,
        "incremental_s": incremental_s,
        "fresh_small_s": min(small_times),
        "file_mb": os.path.getsize(big) / 1e6,
    }


async def idle_memory(n: int) -> float:
    """Bytes one more idle open in-memory session holds (``async with Session()`` that did
    one ``set``), measured with tracemalloc over ``n`` sessions open at once."""

    async def open_many(count: int) -> list[Session]:
        sessions = []
        for _ in range(count):
            session = Session()
            await session.__aenter__()
            await session.set("k", "v")
            sessions.append(session)
        return sessions

    warm = await open_many(10)  # imports, caches
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    sessions = await open_many(n)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    for session in reversed(warm + sessions):
        await session.__aexit__(None, None, None)
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / n


def _full_collection_ms() -> float:
    """The best of five full collections, in ms."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - start)
    return best * 1000


async def gc_pause(entries: int) -> tuple[float, float, float]:
    """A full garbage collection's time (ms) with nothing held, with ``entries`` records
    held by sessions, and with the same records also held in one plain list: what holding
    records costs each full collection (issue 10: records cost no collector time)."""
    gc.collect()
    empty = _full_collection_ms()
    sessions = [Session() for _ in range(10)]
    for session in sessions:
        await session.__aenter__()
        for i in range(entries // len(sessions)):
            session.append_nowait("bench", "system_note", {"i": i})
        await session.flush()
    held = _full_collection_ms()
    in_a_list = [record for session in sessions for record in session._core.records]
    listed = _full_collection_ms()
    del in_a_list
    for session in sessions:
        await session.__aexit__(None, None, None)
    return empty, held, listed


async def main(quick: bool) -> None:
    load_average()
    n = 20_000 if quick else 100_000
    repeats = 3 if quick else 5
    queue_rate = await best_rate(asyncio_queue_baseline, n, repeats)
    stream_rate = await best_rate(anyio_stream_baseline, n, repeats)
    one = await best_rate(sets_one_caller, n, repeats)
    many = await best_rate(sets_concurrent, n, repeats)
    entries = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as directory:
        p = await persistence(entries, 1_000, directory)
    idle_bytes = await idle_memory(2_000)
    held = 60_000 if quick else 300_000
    gc_empty, gc_held, gc_listed = await gc_pause(held)
    rows = [
        ("asyncio.Queue request/reply (baseline)", f"{queue_rate:,.0f}/s", "1.00"),
        (
            "anyio memory stream request/reply",
            f"{stream_rate:,.0f}/s",
            f"{stream_rate / queue_rate:.2f}",
        ),
        ("set, 1 caller", f"{one:,.0f}/s", f"{one / queue_rate:.2f}"),
        ("set, 64 concurrent callers", f"{many:,.0f}/s", f"{many / queue_rate:.2f}"),
        (
            f"save {entries:,}-entry session ({p['file_mb']:.1f} MB)",
            f"{p['save_s'] * 1000:,.0f} ms",
            "",
        ),
        (f"load + verify {entries:,} entries", f"{p['load_s'] * 1000:,.0f} ms", ""),
        (
            "save fresh 1,000-entry session (baseline)",
            f"{p['fresh_small_s'] * 1000:,.1f} ms",
            "1.00",
        ),
        (
            f"incremental save of 1,000 onto {entries:,}",
            f"{p['incremental_s'] * 1000:,.1f} ms",
            f"{p['incremental_s'] / p['fresh_small_s']:.2f}",
        ),
        (
            f"memory per idle open in-memory session [target <= {TARGET_IDLE_KIB} KiB]",
            f"{idle_bytes / 1024:,.1f} KiB",
            "",
        ),
        ("full gc.collect(), no session open (baseline)", f"{gc_empty:,.1f} ms", "1.00"),
        (
            f"full gc.collect(), {held:,} records held by 10 sessions",
            f"{gc_held:,.1f} ms",
            f"{gc_held / gc_empty:.2f}",
        ),
        (
            "  the same records also held in one plain list (what a list would cost)",
            f"{gc_listed:,.1f} ms",
            f"{gc_listed / gc_empty:.2f}",
        ),
    ]
    report(
        "session",
        rows,
        {
            "asyncio_queue_per_s": queue_rate,
            "anyio_stream_per_s": stream_rate,
            "set_one_caller_per_s": one,
            "set_64_callers_per_s": many,
            "idle_session_bytes": idle_bytes,
            "gc_ms_empty": gc_empty,
            "gc_ms_records_held": gc_held,
            "gc_ms_records_in_a_list": gc_listed,
            **p,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    anyio.run(main, parser.parse_args().quick)
