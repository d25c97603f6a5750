"""Two checkouts' ``dispatch_single`` side by side: which is faster, as a ratio.

Run: ``python benchmarks/ab_dispatch.py OLD NEW [--rounds 5] [--backend trio|uvloop]``,
where OLD and NEW are checkouts of this project (``git worktree add /tmp/old <commit>``,
say); ``uvloop`` is asyncio on uvloop (the ``uvloop`` extra). Each
round runs, in a fresh child process per checkout and in alternating order, the rows of
``bench_dispatch.py`` (1 caller; 64 callers on 64 sessions; 64 callers on 1 session) on the
checkout's own ``kaizen_async`` and ``agents``; each row's best of the rounds is compared.
Alternating rounds share whatever load the machine has, so the ratio stays meaningful on a
noisy machine where the absolute figures do not (still: run it with nothing else going).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    args = parser.parse_args()
    load_average()
    roots = (args.old.resolve(), args.new.resolve())
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
