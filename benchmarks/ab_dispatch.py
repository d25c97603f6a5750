"""Two checkouts' ``dispatch_single`` side by side: which is faster, as a ratio.

Run: ``python benchmarks/ab_dispatch.py OLD NEW [--rounds 5] [--backend trio|uvloop]
[--instructions]``,
where OLD and NEW are checkouts of this project (``git worktree add /tmp/old <commit>``,
say); ``uvloop`` is asyncio on uvloop (the ``uvloop`` extra). Each
round runs, in a fresh child process per checkout and in alternating order, the rows of
``bench_dispatch.py`` (1 caller; 64 callers on 64 sessions; 64 callers on 1 session) on the
checkout's own ``kaizen_async`` and ``agents``; each row's best of the rounds is compared.
Alternating rounds share whatever load the machine has, so the ratio stays meaningful on a
noisy machine where the absolute figures do not (still: run it with nothing else going).

``--instructions`` counts instead of timing: each row runs once per checkout under
``valgrind --tool=callgrind`` (needs valgrind), which counts the instructions executed in
user space (the interpreter, the event loop's C code, OpenSSL, orjson; not the kernel's
share of a syscall, not cache misses) while the row runs, after a warm-up run that is not
counted; the table gives instructions per step. The count repeats to a few in 10,000
whatever else the machine does, so it reads a change on a host too noisy for timings. Under
valgrind OpenSSL computes SHA-256 without the CPU's SHA instructions, so hashing weighs
more in the count than in time (the same in both columns).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import load_average

CHILD = r"""
import json, sys, time, anyio
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import bench_dispatch as b
steps, repeats = int(sys.argv[3]), int(sys.argv[4])
async def main():
    rates = {}
    for row, fn in (("1 caller", b.sequential), ("64 callers on 64 sessions", b.many_sessions),
                    ("64 callers on 1 session", b.one_session)):
        for _ in range(repeats):
            start = time.perf_counter()
            await fn(steps)
            rates[row] = max(rates.get(row, 0.0), steps / (time.perf_counter() - start))
    print(json.dumps(rates))
backend = sys.argv[2]
options = {"use_uvloop": True} if backend == "uvloop" else {}
anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
"""


COUNTED = r"""
import functools, sys, anyio
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import bench_dispatch as b
backend, row, steps = sys.argv[2], sys.argv[3], int(sys.argv[4])
fn = {"1 caller": b.sequential, "64 callers on 64 sessions": b.many_sessions,
      "64 callers on 1 session": b.one_session}[row]
options = {"use_uvloop": True} if backend == "uvloop" else {}
def go(n):
    anyio.run(fn, n, backend="asyncio" if backend == "uvloop" else backend,
              backend_options=options)
go(640)  # warm-up: imports, caches, the first sessions (not counted)
# counted: callgrind collects only inside functools.reduce, which nothing else here calls
functools.reduce(lambda _, n: go(n), [None, steps])
"""
ROWS = ("1 caller", "64 callers on 64 sessions", "64 callers on 1 session")


def count(root: Path, backend: str, row: str, steps: int) -> float:
    """Instructions per step of one row on ``root``'s code, counted by callgrind."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            sys.executable,
            "-c",
            COUNTED,
            str(root),
            backend,
            row,
            str(steps),
        ],
        env={**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"},
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        sys.exit(f"{root}: {done.stderr[-2000:]}")
    return int(found.group(1)) / steps


def instructions(roots: tuple[Path, Path], backend: str, steps: int) -> None:
    """The ``--instructions`` table: each row counted once per checkout, two at a time
    (a count does not depend on what else runs)."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    jobs = [(root, row) for row in ROWS for root in roots]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counted = pool.map(lambda job: count(job[0], backend, job[1], steps), jobs)
        counts = dict(zip(jobs, counted, strict=True))
    print(f"\n{backend}, instructions per step (callgrind), {steps:,} counted steps per row")
    print(f"old: {roots[0]}\nnew: {roots[1]}\n")
    print(f"{'row':28}  {'old':>10}  {'new':>10}  old/new")
    for row in ROWS:
        old, new = counts[(roots[0], row)], counts[(roots[1], row)]
        print(f"{row:28}  {old:>10,.0f}  {new:>10,.0f}  {old / new:.3f}")


def run(root: Path, backend: str, steps: int, repeats: int) -> dict[str, float]:
    """One child process on ``root``'s code: steps/s per row (the best of ``repeats``)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), backend, str(steps), str(repeats)],
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        sys.exit(f"{root}: {done.stderr[-2000:]}")
    rates: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=25_600)
    parser.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each row per round, in the same child (a host whose speed swings "
        "within a run is read better by many short runs: --steps 6400 --repeats 4)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per step under callgrind instead of timing (see above)",
    )
    args = parser.parse_args()
    roots = (args.old.resolve(), args.new.resolve())
    if args.instructions:
        instructions(roots, args.backend, args.steps)
        return
    load_average()
    best: list[dict[str, float]] = [{}, {}]
    for round_ in range(args.rounds):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for i in order:
            for row, rate in run(roots[i], args.backend, args.steps, args.repeats).items():
                best[i][row] = max(best[i].get(row, 0.0), rate)
    print(
        f"\n{args.backend}, best of {args.rounds} alternating rounds x {args.repeats} runs, "
        f"{args.steps:,} steps each"
    )
    print(f"old: {roots[0]}\nnew: {roots[1]}\n")
    print(f"{'row':28}  {'old':>10}  {'new':>10}  new/old")
    for row in best[0]:
        old, new = best[0][row], best[1][row]
        print(f"{row:28}  {old:>8,.0f}/s  {new:>8,.0f}/s  {new / old:.3f}")


if __name__ == "__main__":
    main()
