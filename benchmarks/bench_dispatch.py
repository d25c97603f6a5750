"""Dispatch throughput on each backend beside request/reply baselines measured in the same run.

Run: ``python benchmarks/bench_dispatch.py`` (``--quick`` for a smaller run, ``--tiny`` only
to check that it runs). Every step is fully recorded: a ``reverse`` appends five
hash-chained entries (plan_step_started, agent_invoked, state_set, agent_completed,
plan_step_completed). One invocation measures the asyncio backend, the Trio backend
(``anyio.run(..., backend="trio")``) and asyncio on uvloop (``backend_options={"use_uvloop":
True}``, the ``uvloop`` extra; skipped with the reason printed when it is not installed),
each as a ratio to the asyncio.Queue baseline taken on plain asyncio in the same run, and
prints issue 10's targets beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import anyio
from _common import (
    anyio_stream_baseline,
    asyncio_queue_baseline,
    best_rate,
    load_average,
    report,
    size,
    size_options,
)

from agents import ReverseAgent
from kaizen_async import Dispatcher, Session

CALLERS = 64


async def sequential(n: int) -> None:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        await session.set("text", "hello world")
        for _ in range(n):
            await dispatcher.dispatch_single("reverse", session, {"key": "text"})


async def many_sessions(n: int) -> None:
    """64 callers, each on its own session, all through one agent."""
    async with Dispatcher(mailbox_size=CALLERS) as dispatcher:
        dispatcher.register(ReverseAgent())
        per = n // CALLERS

        async def caller() -> None:
            async with Session() as session:
                await session.set("text", "hello world")
                for _ in range(per):
                    await dispatcher.dispatch_single("reverse", session, {"key": "text"})

        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)


async def one_session(n: int) -> None:
    """64 callers on one shared session, each on its own key."""
    async with Session() as session, Dispatcher(mailbox_size=CALLERS) as dispatcher:
        dispatcher.register(ReverseAgent())
        per = n // CALLERS

        async def caller(c: int) -> None:
            key = f"text{c}"
            await session.set(key, "hello world")
            for _ in range(per):
                await dispatcher.dispatch_single("reverse", session, {"key": key})

        async with anyio.create_task_group() as tg:
            for c in range(CALLERS):
                tg.start_soon(caller, c)


# the issue 10 targets: ratios to the asyncio.Queue baseline of the same run (asyncio),
# Trio against asyncio, and uvloop's absolute rate
RATIO_ONE_CALLER = 0.25
RATIO_64_SESSIONS = 0.28
TRIO_OVER_ASYNCIO = 0.8
UVLOOP_PER_S = 50_000

ROWS = (
    ("one_caller", "1 caller"),
    ("64_sessions", f"{CALLERS} callers on {CALLERS} sessions"),
    ("64_on_one_session", f"{CALLERS} callers on 1 session"),
)


async def baselines(n: int, repeats: int) -> tuple[float, float]:
    """asyncio.Queue and AnyIO memory stream request/reply (plain asyncio)."""
    queue = await best_rate(asyncio_queue_baseline, n, repeats)
    stream = await best_rate(anyio_stream_baseline, n, repeats)
    return queue, stream


async def dispatch_rates(n: int, repeats: int) -> dict[str, float]:
    """The three dispatch rows on the running backend, keyed as in ``ROWS``."""
    return {
        "one_caller": await best_rate(sequential, n, repeats),
        "64_sessions": await best_rate(many_sessions, n, repeats),
        "64_on_one_session": await best_rate(one_session, n, repeats),
    }


async def event_loop() -> str:
    """The running event loop's class (shows that uvloop's was used)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # Trio
        return "trio"
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


def uvloop_missing() -> str:
    """Why the uvloop rows cannot run here ("" when they can)."""
    if sys.platform == "win32":
        return "uvloop does not support Windows"
    if importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed (pip install 'kaizen-async[uvloop]')"
    return ""


def trio_missing() -> str:
    if importlib.util.find_spec("trio") is None:
        return "trio is not installed"
    return ""


def verdict(figure: float, target: float, shown: str) -> str:
    """``>= <target as shown>: met`` (or ``missed``)."""
    return f">= {shown}: {'met' if figure >= target else 'missed'}"


def main(size: str, results: Path) -> None:
    load = load_average()
    n, repeats = {"full": (32_000, 4), "quick": (6_400, 2), "tiny": (640, 1)}[size]
    queue, stream = anyio.run(baselines, n, repeats)
    backends: dict[str, tuple[str, dict[str, Any], str]] = {
        "asyncio": ("asyncio", {}, ""),
        "trio": ("trio", {}, trio_missing()),
        "uvloop": ("asyncio", {"use_uvloop": True}, uvloop_missing()),
    }
    rates: dict[str, dict[str, float]] = {}
    loops: dict[str, str] = {}
    for label, (backend, options, missing) in backends.items():
        if not missing:
            rates[label] = anyio.run(
                dispatch_rates, n, repeats, backend=backend, backend_options=options
            )
            loops[label] = anyio.run(event_loop, backend=backend, backend_options=options)

    targets: dict[str, dict[str, Any]] = {}

    def target(key: str, figure: float, goal: float, text: str) -> str:
        targets[key] = {"figure": figure, "target": goal, "met": figure >= goal}
        return text

    rows: list[tuple[str, ...]] = [
        ("asyncio.Queue request/reply (baseline, asyncio)", f"{queue:,.0f}/s", "1.00"),
        (
            "anyio memory stream request/reply (asyncio)",
            f"{stream:,.0f}/s",
            f"{stream / queue:.2f}",
        ),
    ]
    asyncio_rates = rates["asyncio"]
    trio_shown = f"{TRIO_OVER_ASYNCIO:.2f}x"
    for label, (_, _, missing) in backends.items():
        if missing:
            rows.append((f"dispatch_single on {label}: skipped", missing))
            continue
        for key, what in ROWS:
            rate = rates[label][key]
            ratio = rate / queue
            goal = ""
            if label == "asyncio" and key in ("one_caller", "64_sessions"):
                wanted = RATIO_ONE_CALLER if key == "one_caller" else RATIO_64_SESSIONS
                goal = target(
                    f"asyncio_{key}_ratio", ratio, wanted, verdict(ratio, wanted, f"{wanted:.2f}")
                )
            elif label == "trio" and key in ("one_caller", "64_sessions"):
                over = rate / asyncio_rates[key]
                goal = target(
                    f"trio_{key}_over_asyncio",
                    over,
                    TRIO_OVER_ASYNCIO,
                    f"{over:.2f}x asyncio; {verdict(over, TRIO_OVER_ASYNCIO, trio_shown)}",
                )
            elif label == "uvloop" and key in ("one_caller", "64_sessions"):
                goal = target(
                    f"uvloop_{key}_per_s",
                    rate,
                    UVLOOP_PER_S,
                    verdict(rate, UVLOOP_PER_S, f"{UVLOOP_PER_S:,}/s"),
                )
            rows.append(
                (f"dispatch_single, {what} [{label}]", f"{rate:,.0f}/s", f"{ratio:.2f}", goal)
            )
    report(
        "dispatch",
        rows,
        {
            "load_average": load,
            "asyncio_queue_per_s": queue,
            "anyio_stream_per_s": stream,
            "dispatch_one_caller_per_s": asyncio_rates["one_caller"],
            "dispatch_64_sessions_per_s": asyncio_rates["64_sessions"],
            "dispatch_64_on_one_session_per_s": asyncio_rates["64_on_one_session"],
            "entries_per_step": 5,
            "backends": {label: rates.get(label) for label in backends},
            "event_loops": loops,
            "skipped": {label: missing for label, (_, _, missing) in backends.items() if missing},
            "targets": targets,
        },
        header=("what", "figure", "ratio to asyncio.Queue", "issue 10 target"),
        results=results,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_options(parser, "smaller sizes, fewer repeats")
    args = parser.parse_args()
    main(size(args), args.results)
