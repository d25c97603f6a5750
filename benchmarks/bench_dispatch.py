"""Dispatch throughput beside request/reply baselines measured in the same run.

Run: ``python benchmarks/bench_dispatch.py`` (``--quick`` for a smaller run).
Every step is fully recorded: a ``reverse`` appends five hash-chained entries
(plan_step_started, agent_invoked, state_set, agent_completed, plan_step_completed).
"""

from __future__ import annotations

import argparse

import anyio
from _common import anyio_stream_baseline, asyncio_queue_baseline, best_rate, load_average, report

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


async def main(quick: bool) -> None:
    load_average()
    n = 6_400 if quick else 32_000
    repeats = 2 if quick else 4
    queue = await best_rate(asyncio_queue_baseline, n, repeats)
    stream = await best_rate(anyio_stream_baseline, n, repeats)
    single = await best_rate(sequential, n, repeats)
    spread = await best_rate(many_sessions, n, repeats)
    shared = await best_rate(one_session, n, repeats)
    rows = [
        ("asyncio.Queue request/reply (baseline)", f"{queue:,.0f}/s", "1.00"),
        ("anyio memory stream request/reply", f"{stream:,.0f}/s", f"{stream / queue:.2f}"),
        ("dispatch_single, 1 caller", f"{single:,.0f}/s", f"{single / queue:.2f}"),
        (
            f"dispatch_single, {CALLERS} callers on {CALLERS} sessions",
            f"{spread:,.0f}/s",
            f"{spread / queue:.2f}",
        ),
        (
            f"dispatch_single, {CALLERS} callers on 1 session",
            f"{shared:,.0f}/s",
            f"{shared / queue:.2f}",
        ),
    ]
    report(
        "dispatch",
        rows,
        {
            "asyncio_queue_per_s": queue,
            "anyio_stream_per_s": stream,
            "dispatch_one_caller_per_s": single,
            "dispatch_64_sessions_per_s": spread,
            "dispatch_64_on_one_session_per_s": shared,
            "entries_per_step": 5,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    anyio.run(main, parser.parse_args().quick)
