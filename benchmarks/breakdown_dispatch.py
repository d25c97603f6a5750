"""Where one ``dispatch_single("reverse")`` spends its time, piece by piece.

Run: ``python benchmarks/breakdown_dispatch.py``. Each row times one ingredient of a
dispatched step on its own (best of 3, microseconds per operation), beside the whole step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _common import load_average, report

from agents import KeyParams, ReverseAgent
from kaizen_async import Dispatcher, EntryType, InvokeResult, Session
from kaizen_async._dispatcher import _summary
from kaizen_async._mailbox import Mailbox, Reply
from kaizen_async._state import SessionCore

N = 20_000


def per_op_sync(fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            fn()
        best = min(best, (time.perf_counter() - start) / N)
    return best * 1e6


async def per_op(fn: Callable[[], Awaitable[Any]]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(N):
            await fn()
        best = min(best, (time.perf_counter() - start) / N)
    return best * 1e6


async def main() -> None:
    load_average()
    rows: list[tuple[str, str, str]] = []

    mailbox: Mailbox[Reply] = Mailbox(64)

    async def worker() -> None:
        while True:
            (await mailbox.receive()).send(None)

    async def round_trip() -> None:
        reply = mailbox.reply()
        await mailbox.send(reply)
        await reply.wait()

    async def checkpoint() -> None:
        await asyncio.sleep(0)

    core = SessionCore()
    content = {"capability": "reverse", "params": {"key": "text"}, "input_value": "hello world"}
    async with anyio.create_task_group() as tg, Session() as session, Dispatcher() as d:
        tg.start_soon(worker)
        d.register(ReverseAgent())
        await session.set("text", "hello world")
        measures = [
            ("one task switch (asyncio.sleep(0))", await per_op(checkpoint)),
            ("mailbox round trip (caller -> agent task -> caller)", await per_op(round_trip)),
            ("awaited session write (set)", await per_op(lambda: session.set("x", 1))),
            (
                "record one entry: validate, encode, chain (core.append)",
                per_op_sync(lambda: core.append("a", EntryType.SYSTEM_NOTE, {"n": 1})),
            ),
            (
                "validate + encode one entry content",
                per_op_sync(lambda: core.check_append("a", EntryType.AGENT_INVOKED, content)),
            ),
            (
                "strict pydantic params validation",
                per_op_sync(lambda: KeyParams.model_validate({"key": "text"}, strict=True)),
            ),
            (
                "step summary",
                per_op_sync(lambda: _summary(InvokeResult.ok({"original": "a"}, "x", "reverse"))),
            ),
            (
                "whole dispatch_single(reverse): 5 entries",
                await per_op(lambda: d.dispatch_single("reverse", session, {"key": "text"})),
            ),
        ]
        tg.cancel_scope.cancel()
    rows += [(name, f"{value:.1f} us", "") for name, value in measures]
    report("breakdown", rows, {name: value for name, value in measures})


if __name__ == "__main__":
    anyio.run(main)
