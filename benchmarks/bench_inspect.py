"""How fast the inspector's pages render on a long session and on many sessions.

Run: ``python benchmarks/bench_inspect.py`` (``--entries 1000000 --sessions 10000`` by
default; ``--quick`` for 100,000 entries and 1,000 sessions). It builds an SQLite store in
a temporary directory (or reuses ``--db``): one session of N entries in a repeating
pattern (a dispatched step with its agent's entries and a model exchange, then notes),
plus M small sessions; then it times requests through the ASGI app in process (no
socket): the session page's latest window (first visit, then again), a window in the
middle, one entry, the sessions page (first and a middle page). The target of the issue:
the latest window of a 1,000,000-entry session in under 1 s; the sessions page fast with
10,000 sessions.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator

import anyio
import httpx
from _common import load_average

from kaizen_async import SessionHub
from kaizen_async._canonical import ZERO_HASH, encode, entry_hash
from kaizen_async._trajectory import HASH, Record
from kaizen_async.inspect import create_app
from kaizen_async.stores import Batch, SQLiteStore

CHUNK = 50_000


def pattern(total: int) -> Iterator[tuple[str, str, bytes]]:
    """(agent, type, content) of entries 1..total after ``session_created``."""
    step = 0
    produced = 0
    while produced < total:
        plan = f"plan-{step // 10}"
        index = step % 10
        block = [
            (
                "dispatcher",
                "plan_step_started",
                {
                    "capability": "convert",
                    "params": {"file": f"f{step}.py"},
                    "plan_id": plan,
                    "step_index": index,
                },
            ),
            (
                "converter",
                "agent_invoked",
                {"capability": "convert", "params": {"file": f"f{step}.py"}},
            ),
            (
                "llm",
                "llm_exchange",
                {
                    "provider": "scripted",
                    "model": "m",
                    "request": {"messages": [{"role": "user", "content": f"convert f{step}.py"}]},
                    "response": "package main\n" * 5,
                    "usage": {"prompt_tokens": 40, "completion_tokens": 60},
                    "duration_ms": 120.0,
                    "error": None,
                },
            ),
            ("converter", "agent_completed", {"capability": "convert", "ok": True}),
            (
                "dispatcher",
                "plan_step_completed",
                {
                    "capability": "convert",
                    "plan_id": plan,
                    "result_summary": "{}",
                    "step_index": index,
                    "success": True,
                },
            ),
            *(("worker", "system_note", {"n": step, "i": i}) for i in range(5)),
        ]
        for agent, kind, content in block:
            if produced == total:
                return
            produced += 1
            yield agent, kind, encode(content)
        step += 1


async def build(path: str, entries: int, sessions: int) -> None:
    store = SQLiteStore(path)
    async with SessionHub(store) as hub:
        if True:
            await hub.create("big")
            first = await store.read("big")
            prev = first[-1][HASH] if first else ZERO_HASH
            seq = len(first)
            batch: list[Record] = []
            for agent, kind, content in pattern(entries - seq):
                seq += 1
                minute, second, milli = (seq // 60000) % 60, (seq // 1000) % 60, seq % 1000
                stamp = f"2026-01-01T00:{minute:02d}:{second:02d}.{milli:03d}000+00:00"
                digest = entry_hash(seq, stamp, agent, kind, content, prev)
                batch.append((seq, stamp, agent, kind, content, prev, digest))
                prev = digest
                if len(batch) == CHUNK:
                    await store.commit(Batch("big", seq - len(batch), batch, 0))
                    batch = []
            if batch:
                await store.commit(Batch("big", seq - len(batch), batch, 0))
            for index in range(sessions):
                await hub.create(f"s{index:06d}", metadata={"n": index})


async def timed(client: httpx.AsyncClient, path: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    response = await client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return elapsed, len(response.content), response.text.count('<li id="seq-')


async def measure(path: str, entries: int) -> None:
    async with SessionHub(SQLiteStore(path)) as hub:
        app = create_app(hub)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            rows = [
                ("session page, latest window (first visit)", "/session?id=big"),
                ("session page, latest window (again)", "/session?id=big"),
                (
                    "session page, a window in the middle",
                    f"/session?id=big&until_seq={entries // 2}",
                ),
                ("session page, filtered by type", "/session?id=big&type=llm_exchange"),
                ("one entry", f"/entry?id=big&seq={entries // 2}"),
                ("sessions page (first)", "/"),
                ("sessions page (a middle page)", "/?after=s005000"),
            ]
            for label, url in rows:
                elapsed, size, count = await timed(c, url)
                print(
                    f"{label:45s} {elapsed * 1000:8.1f} ms  {size / 1024:7.1f} KiB  "
                    f"{count} entries shown"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--db", help="reuse (or create) this store instead of a temporary one")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.sessions = 100_000, 1_000
    load_average()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or os.path.join(tmp, "bench.db")
        if not os.path.exists(path):
            started = time.perf_counter()
            anyio.run(build, path, args.entries, args.sessions)
            print(
                f"built {args.entries:,} entries and {args.sessions:,} sessions "
                f"in {time.perf_counter() - started:.1f} s"
            )
        anyio.run(measure, path, args.entries)


if __name__ == "__main__":
    main()
