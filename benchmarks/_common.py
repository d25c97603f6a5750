"""Shared helpers for the benchmark scripts: baselines, timing, the result table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

RESULTS = Path(__file__).parent / "results"


def size_options(parser: argparse.ArgumentParser, quick: str) -> None:
    """The size options the issue-10 scripts share: ``--quick`` (``quick`` says what it
    means there), ``--tiny`` (only checks that it runs) and ``--results`` (where the JSON
    goes); :func:`size` reads the first two back."""
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help=quick)
    sizes.add_argument(
        "--tiny", action="store_true", help="only checks that it runs (meaningless figures)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")


def size(args: argparse.Namespace) -> str:
    """``"tiny"``, ``"quick"`` or ``"full"``, as :func:`size_options` were given."""
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def load_average() -> float:
    """Print the 1-minute load average; warn when the machine is busy (figures taken under
    load read several times low)."""
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    print(f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {cores} cores")
    if one > 0.5 * cores:
        print("WARNING: the machine is busy; these figures are not representative")
    return one


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


async def best_rate(fn: Callable[[int], Awaitable[None]], n: int, repeats: int) -> float:
    """Operations per second of ``fn(n)``, best of ``repeats`` runs (least disturbed)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        await fn(n)
        best = max(best, n / (time.perf_counter() - start))
    return best


async def asyncio_queue_baseline(n: int) -> None:
    """A bare request/reply between two tasks over ``asyncio.Queue`` and a future."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[asyncio.Future[int], int]] = asyncio.Queue()

    async def server() -> None:
        while True:
            future, value = await queue.get()
            future.set_result(value)

    task = asyncio.create_task(server())
    for i in range(n):
        future = loop.create_future()
        queue.put_nowait((future, i))
        await future
    task.cancel()


async def anyio_stream_baseline(n: int) -> None:
    """The same over AnyIO memory object streams (a request stream, a reply stream)."""
    send, receive = anyio.create_memory_object_stream[int](1)
    reply_send, reply_receive = anyio.create_memory_object_stream[int](1)

    async def server() -> None:
        async for value in receive:
            await reply_send.send(value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        for i in range(n):
            await send.send(i)
            await reply_receive.receive()
        await send.aclose()


def report(
    name: str,
    rows: Sequence[Sequence[str]],
    data: dict[str, Any],
    header: Sequence[str] = ("what", "figure", "ratio"),
    results: Path = RESULTS,
) -> None:
    """Print a table (what, figure, ratio, or the columns of ``header``) and write JSON
    under ``results`` (benchmarks/results/)."""
    print(f"\n$ {command_line()}")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores\n")
    table = [tuple(header), *(tuple(r) + ("",) * (len(header) - len(r)) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in [table[0], tuple("-" * w for w in widths), *table[1:]]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{name}.json"
    out.write_text(json.dumps({"command": command_line(), **data}, indent=2) + "\n")
    print(f"\nwrote {out}")
