"""Where a dispatched step spends its CPU: py-spy samples summarized by function.

Run: ``python benchmarks/profile_dispatch.py [--callers 64] [--steps 60000] [--top 25]
[--durable] [--backend trio]``. It runs ``dispatch_single("reverse")`` (five recorded entries
per step) in a child process, on in-memory sessions or, with ``--durable``, on sessions opened
through a ``SessionHub`` on an ``SQLiteStore`` in a temporary directory (each caller on its own
session), under ``py-spy record`` (sampling, no per-call hook, so the step is not inflated the
way cProfile or pyinstrument inflate it), then prints each function's share of the samples
(self time, leaf-first) scaled to microseconds per step. Needs ``py-spy`` (``bench`` extra).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import load_average

CHILD = r"""
import contextlib, os, sys, tempfile, time, anyio
sys.path.insert(0, {root!r})
from agents import ReverseAgent
from kaizen_async import Dispatcher, Session, SessionHub
from kaizen_async.stores import SQLiteStore

@contextlib.asynccontextmanager
async def sessions(durable, tmp):
    if not durable:
        yield lambda n: Session()
        return
    async with SessionHub(SQLiteStore(os.path.join(tmp, "profile.db"))) as hub:
        yield lambda n: hub.open(f"s{{n}}", create=True)

async def main(steps, callers, durable):
    with tempfile.TemporaryDirectory() as tmp:
        async with sessions(durable, tmp) as opener, Dispatcher(
            mailbox_size=max(callers, 1)
        ) as dispatcher:
            await run(dispatcher, opener, steps, callers)

async def run(dispatcher, opener, steps, callers):
        dispatcher.register(ReverseAgent())
        per = steps // callers
        ready = anyio.Event()
        opened = []

        async def caller(n):
            async with opener(n) as session:
                await session.set("text", "hello world")
                opened.append(n)
                if len(opened) == callers:
                    ready.set()
                await ready.wait()
                for _ in range(per):
                    await dispatcher.dispatch_single("reverse", session, {{"key": "text"}})
                await session.flush()

        async with anyio.create_task_group() as tg:
            for n in range(callers):
                tg.start_soon(caller, n)
            await ready.wait()
            start = time.process_time()
        print(f"US_PER_STEP={{(time.process_time() - start) / (per * callers) * 1e6:.2f}}")

import gc
if {nogc}: gc.disable()
anyio.run(main, {steps}, {callers}, {durable}, backend={backend!r})
"""


#: a sample counts when one of its frames is one of these (event loops, worker threads)
_RUNNING = ("_run_once (", "run (trio", "WorkerThread.run (", "_work (trio")
#: --gil: only samples of the thread holding the GIL (a thread waiting for it is not busy)
PY_SPY = ["py-spy", "record", "--rate", "1000", "--gil", "--format", "raw", "--output"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", help="also keep py-spy's raw stacks in this file")
    parser.add_argument(
        "--durable", action="store_true", help="hub sessions on an SQLiteStore (temp dir)"
    )
    parser.add_argument("--no-gc", action="store_true", help="gc.disable() in the child")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--root", help="profile the kaizen_async of another checkout (say, an older commit)"
    )
    args = parser.parse_args()
    load_average()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install -e '.[bench]'")
    root = args.root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(
        root=root,
        steps=args.steps,
        callers=args.callers,
        durable=args.durable,
        nogc=args.no_gc,
        backend=args.backend,
    )
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "profile.txt")
        started = time.perf_counter()
        run = subprocess.run(
            [*PY_SPY, raw, "--", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - started
        if args.raw:
            shutil.copy(raw, args.raw)
        marker = "US_PER_STEP="
        figure = run.stdout[run.stdout.index(marker) + len(marker) :].split()[0]
        us_per_step = float(figure)
        leaves: collections.Counter[str] = collections.Counter()
        total = 0
        with open(raw) as f:
            for line in f:
                stack, _, count = line.rstrip().rpartition(" ")
                frames = stack.split(";")
                # only samples taken while the event loop or a worker thread (the store's
                # writer) runs, not imports or start-up
                if not any(marker in frame for frame in frames for marker in _RUNNING):
                    continue
                leaves[_short(frames[-1])] += int(count)
                total += int(count)
    kind = "durable (SQLiteStore hub)" if args.durable else "in-memory"
    print(
        f"\n{args.callers} caller(s) on {kind} sessions ({args.backend}), {args.steps} steps, "
        f"{us_per_step:.2f} us CPU per step"
    )
    print(f"({total} samples in the dispatch loop, {elapsed:.1f} s under py-spy)\n")
    print(f"{'us/step':>8}  {'share':>6}  function (self time)")
    for name, hits in leaves.most_common(args.top):
        print(f"{hits / total * us_per_step:8.2f}  {hits / total:6.1%}  {name}")


def _short(frame: str) -> str:
    """'fn (path/to/module.py:123)' -> 'fn (module.py)'."""
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    return f"{name} ({os.path.basename(path)})"


if __name__ == "__main__":
    main()
