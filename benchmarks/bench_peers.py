"""kaizen_async beside other actor runtimes on one workload, in one invocation.

Run: ``python benchmarks/bench_peers.py`` (``--quick`` for a smaller run, ``--sweep`` for
1, 4, 16 and 64 callers, which ``benchmarks/plot.py`` draws). The peers come from the
``bench`` extra (``pip install 'kaizen-async[bench]'``); one that is not installed is
skipped with the reason printed.

The workload: client -> router -> one of 4 worker actors -> session actor write -> reply.

- kaizen_async: its real ``Dispatcher.dispatch_single("reverse", ...)`` with the
  ``ReverseAgent`` of the ``agents`` package, registered once with ``max_concurrency=4``:
  the dispatcher is the router, and the agent's 4 worker tasks draining its one mailbox are
  the 4 workers (the closest analogue that runs the real agent unchanged: 4 registered
  agents would need 4 capability names, and the dispatcher routes by name). The session
  actor applies the step's writes: five SHA-256 chained entries per step
  (plan_step_started, agent_invoked, state_set, agent_completed, plan_step_completed).
  "N callers" is N asyncio tasks, each awaiting ``dispatch_single`` before the next, all
  on one session (each on its own key).
- Thespian (``ActorSystem("simpleSystemBase")``, in-process), Pykka (``ThreadingActor``)
  and AutoGen core (``SingleThreadedAgentRuntime``): a router actor, 4 worker actors and
  a session actor that sets a dict key, appends to a list and replies to the client;
  nothing is encoded or hashed. Each adapter's docstring (``_peer_*.py``) says how it is
  built and what "N callers" means there; the table's legend repeats it.

Every rate is the best of a few timed runs, each sized by a warm-up to about the same
wall time; after them each runtime's session is checked to have applied exactly one write
(kaizen_async: five entries) per step. The asyncio.Queue request/reply baseline of
``_common`` runs in the same invocation, so figures taken on different machines compare by
their ratios.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from typing import Any

import anyio
from _common import asyncio_queue_baseline, load_average, report, size, size_options
from _peers import WORKERS, Measured, abest_of, check, clock

from agents import ReverseAgent
from kaizen_async import Dispatcher, Session

KAIZEN = "kaizen_async"
LEVELS = (1, 64)
SWEEP_LEVELS = (1, 4, 16, 64)
ENTRIES_PER_STEP = 5
KAIZEN_CALLERS_MEAN = "N asyncio tasks, each awaiting dispatch_single, on one session"
GOAL = "kaizen_async with its five recorded entries at or above Thespian's unrecorded rate"

Measure = Callable[[int, float, int], Measured]


async def _kaizen(callers: int, seconds: float, repeats: int) -> Measured:
    async with (
        Session() as session,
        Dispatcher(mailbox_size=max(64, callers)) as dispatcher,
    ):
        dispatcher.register(ReverseAgent(), max_concurrency=WORKERS)
        keys = [f"text{c}" for c in range(callers)]
        for key in keys:
            await session.set(key, "hello world")

        async def client(key: str, per: int) -> None:
            for _ in range(per):
                await dispatcher.dispatch_single("reverse", session, {"key": key})

        async def run(n: int) -> float:
            start = clock()
            if callers == 1:
                await client(keys[0], n)
            else:
                async with anyio.create_task_group() as tg:
                    for key in keys:
                        tg.start_soon(client, key, n // callers)
            return clock() - start

        before = await session.get_trajectory_length()
        measured = await abest_of(run, callers, seconds, repeats)
        entries = await session.get_trajectory_length() - before
        check(KAIZEN, entries, ENTRIES_PER_STEP * measured.steps)
        return measured


def measure_kaizen(callers: int, seconds: float, repeats: int) -> Measured:
    return anyio.run(_kaizen, callers, seconds, repeats)


class Runtime:
    """One row group of the table: a runtime, how it is measured, or why it is skipped."""

    def __init__(
        self, key: str, name: str, callers_mean: str, measure: Measure | None, skipped: str = ""
    ) -> None:
        self.key = key
        self.name = name
        self.callers_mean = callers_mean
        self.measure = measure
        self.skipped = skipped
        self.max_callers = 1 if key == "thespian_ask" else None


def _peer(key: str, name: str, module: str, attr: str = "measure") -> Runtime:
    """A peer adapter, or a skipped row when its runtime cannot be imported."""
    try:
        mod: Any = importlib.import_module(module)
    except ImportError as exc:
        reason = f"not installed ({exc}); pip install 'kaizen-async[bench]'"
        return Runtime(key, name, "", None, reason)
    if attr == "measure_ask":
        return Runtime(key, mod.ASK_NAME, mod.ASK_CALLERS_MEAN, mod.measure_ask)
    return Runtime(key, mod.NAME, mod.CALLERS_MEAN, mod.measure)


def runtimes() -> list[Runtime]:
    return [
        Runtime(
            KAIZEN, "kaizen_async (5 recorded entries/step)", KAIZEN_CALLERS_MEAN, measure_kaizen
        ),
        _peer("thespian", "Thespian", "_peer_thespian"),
        _peer("thespian_ask", "Thespian, ActorSystem.ask", "_peer_thespian", "measure_ask"),
        _peer("pykka", "Pykka", "_peer_pykka"),
        _peer("autogen_core", "AutoGen core", "_peer_autogen"),
    ]


def _callers(n: int) -> str:
    return f"{n} caller" + ("" if n == 1 else "s")


def _goal(per_s: dict[str, dict[int, float]], levels: tuple[int, ...]) -> dict[str, Any]:
    """kaizen_async against the faster Thespian way of calling at each level."""
    goal: dict[str, Any] = {}
    for level in levels:
        thespian = [per_s[k][level] for k in ("thespian", "thespian_ask") if level in per_s[k]]
        kaizen = per_s[KAIZEN].get(level)
        if not thespian or kaizen is None:
            goal[str(level)] = None
            continue
        best = max(thespian)
        goal[str(level)] = {"kaizen_per_s": kaizen, "thespian_per_s": best, "met": kaizen >= best}
    return goal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_options(parser, "smaller sizes, one run each")
    parser.add_argument("--sweep", action="store_true", help=f"callers {SWEEP_LEVELS}")
    parser.add_argument(
        "--only", default="", help="comma-separated runtime keys (kaizen_async is always run)"
    )
    args = parser.parse_args()
    load = load_average()
    seconds, repeats = {"tiny": (0.005, 1), "quick": (0.08, 1), "full": (0.5, 3)}[size(args)]
    levels = SWEEP_LEVELS if args.sweep else LEVELS
    chosen = runtimes()
    if args.only:
        wanted = {KAIZEN, *args.only.split(",")}
        chosen = [r for r in chosen if r.key in wanted]

    queue = anyio.run(_queue_baseline, seconds, repeats)
    per_s: dict[str, dict[int, float]] = {r.key: {} for r in chosen}
    for level in levels:
        for runtime in chosen:
            if runtime.measure is None or (runtime.max_callers or level) < level:
                continue
            per_s[runtime.key][level] = runtime.measure(level, seconds, repeats).per_s

    kaizen = per_s[KAIZEN]
    rows = [
        (
            "asyncio.Queue request/reply (no work), 1 caller",
            f"{queue:,.0f}/s",
            f"{queue / kaizen[1]:.2f}",
        )
    ]
    for runtime in chosen:
        if runtime.measure is None:
            rows.append((f"{runtime.name}: skipped (reason below)", "-", ""))
            continue
        for level, rate in per_s[runtime.key].items():
            rows.append(
                (
                    f"{runtime.name}, {_callers(level)}",
                    f"{rate:,.0f}/s",
                    f"{rate / kaizen[level]:.2f}",
                )
            )
    goal = _goal(per_s, levels)
    print(
        f"\nthe workload: client -> router -> one of {WORKERS} workers -> session write -> reply;"
    )
    print("ratio = steps/s over kaizen_async's at the same number of callers")
    report(
        "peers_sweep" if args.sweep else "peers",
        rows,
        {
            "load_average": load,
            "cores": os.cpu_count() or 1,
            "levels": list(levels),
            "workers": WORKERS,
            "asyncio_queue_per_s": queue,
            "kaizen_ratio_to_asyncio_queue": kaizen[1] / queue,
            "per_s": {k: {str(n): v for n, v in rates.items()} for k, rates in per_s.items()},
            "ratio_to_kaizen": {
                k: {str(n): v / kaizen[n] for n, v in rates.items()} for k, rates in per_s.items()
            },
            "names": {r.key: r.name for r in chosen},
            "callers_mean": {r.key: r.callers_mean for r in chosen if r.measure is not None},
            "skipped": {r.key: r.skipped for r in chosen if r.measure is None},
            "entries_per_step": {r.key: ENTRIES_PER_STEP if r.key == KAIZEN else 0 for r in chosen},
            "goal": goal,
        },
        results=args.results,
    )
    print("\n'N callers' means:")
    for runtime in chosen:
        if runtime.measure is not None:
            print(f"  {runtime.name}: {runtime.callers_mean}")
    skipped = [r for r in chosen if r.measure is None]
    if skipped:
        print("\nskipped:")
    for runtime in skipped:
        print(f"  {runtime.name}: {runtime.skipped}")
    print(f"\ngoal (issue 10): {GOAL}")
    for at, verdict in goal.items():
        if verdict is None:
            print(f"  {_callers(int(at))}: not measured (Thespian skipped)")
            continue
        k, t = verdict["kaizen_per_s"], verdict["thespian_per_s"]
        state = "met" if verdict["met"] else "missed"
        print(f"  {_callers(int(at))}: {k:,.0f}/s vs {t:,.0f}/s ({k / t:.2f}x): {state}")


async def _queue_baseline(seconds: float, repeats: int) -> float:
    async def run(n: int) -> float:
        start = clock()
        await asyncio_queue_baseline(n)
        return clock() - start

    return (await abest_of(run, 1, seconds, repeats)).per_s


if __name__ == "__main__":
    main()
