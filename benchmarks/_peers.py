"""What the peer runtimes' benchmark adapters share: the workload's constants and the sizing.

The workload (``bench_peers.py``): a client sends a request to a router, the router hands it
to one of 4 worker actors (round robin), the worker reverses the text and sends the write to
one session actor, the session actor applies it (a dict key and an appended log record) and
replies to the client. Each adapter measures it with ``callers`` concurrent clients, each
with one request outstanding at a time, and checks afterwards that the session applied
exactly one write per step.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

WORKERS = 4
TEXT = "hello world"


class Measured(NamedTuple):
    """The best rate of the timed runs and how many steps (warm-up included) ran in all."""

    per_s: float
    steps: int


def _size(callers: int, warm_n: int, warm_s: float, seconds: float) -> int:
    """Steps for one timed run of about ``seconds``, a multiple of ``callers``."""
    rate = warm_n / max(warm_s, 1e-9)
    return callers * max(1, round(rate * seconds / callers))


def _warm_n(callers: int) -> int:
    return callers * max(1, 256 // callers)


def best_of(run: Callable[[int], float], callers: int, seconds: float, repeats: int) -> Measured:
    """``run(n)`` runs ``n`` steps (a multiple of ``callers``) and returns its wall time.

    A warm-up run sizes the timed runs to about ``seconds`` each; the best of ``repeats``
    is the figure (the least disturbed run)."""
    warm = _warm_n(callers)
    n = _size(callers, warm, run(warm), seconds)
    best = 0.0
    for _ in range(repeats):
        best = max(best, n / run(n))
    return Measured(best, warm + n * repeats)


async def abest_of(
    run: Callable[[int], Awaitable[float]], callers: int, seconds: float, repeats: int
) -> Measured:
    """:func:`best_of` for an async ``run``."""
    warm = _warm_n(callers)
    n = _size(callers, warm, await run(warm), seconds)
    best = 0.0
    for _ in range(repeats):
        best = max(best, n / await run(n))
    return Measured(best, warm + n * repeats)


def check(runtime: str, applied: int, expected: int) -> None:
    """The session must have applied exactly what the steps asked for (no lost step)."""
    if applied != expected:
        raise RuntimeError(f"{runtime}: the session applied {applied}, expected {expected}")


def clock() -> float:
    return time.perf_counter()
