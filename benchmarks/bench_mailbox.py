"""Releasing many callers waiting on an agent's mailbox: it must take linear time.

Run: ``python benchmarks/bench_mailbox.py`` (``--quick`` for 10,000 callers; ``--trio``
to run on Trio). A baseline (N tasks sleeping, cancelled: what the event loop itself
costs), then four cases, each with N callers parked on one mailbox:

- N senders waiting on a full mailbox, released by cancelling them all at once;
- N senders waiting on a full mailbox, each giving up on its own deadline (a timeout);
- N receivers waiting on an empty mailbox, released by cancelling them all at once;
- N ``dispatch_single(..., timeout=...)`` callers on a busy agent, all timing out
  (each records its two step entries; the agent's mailbox holds the rest).

The time printed is from the release (the cancel, or the first deadline: the deadlines
are spread over N microseconds, latest arrival first) until every caller has returned.
A withdrawn caller used to be removed from the middle of the mailbox's deque
(``deque.remove``: O(N) each, O(N^2) in all: 40,000 senders took 22.9 s).

Run it from the repository root with ``PYTHONPATH=.`` to measure this checkout's package
rather than an installed one.
"""

from __future__ import annotations

import argparse
import time

import anyio
from _common import load_average, report

from kaizen_async import Agent, Dispatcher, Session, capability
from kaizen_async._mailbox import Mailbox


async def cancel_sleepers(n: int) -> float:
    """The baseline: N tasks in ``anyio.sleep_forever()``, cancelled (no mailbox)."""
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(anyio.sleep_forever)
        await anyio.sleep(0.05 + n / 100_000)
        start = time.perf_counter()
        tg.cancel_scope.cancel()
    return time.perf_counter() - start


async def cancel_senders(n: int) -> float:
    mailbox: Mailbox[int] = Mailbox(1)
    await mailbox.send(-1)  # full
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(mailbox.send, i)
        while mailbox.statistics().tasks_waiting_send < n:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        start = time.perf_counter()
        tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - start
    assert mailbox.statistics().tasks_waiting_send == 0
    return elapsed


async def time_out_senders(n: int) -> float:
    mailbox: Mailbox[int] = Mailbox(1)
    await mailbox.send(-1)  # full
    parked = anyio.Event()
    deadline = 0.0

    async def sender(i: int) -> None:
        await parked.wait()
        # the last to arrive gives up first: each withdrawal is far from the deque's front
        with anyio.move_on_after(deadline + (n - i) * 1e-6 - anyio.current_time()):
            await mailbox.send(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(sender, i)
        await anyio.sleep(0.05)
        # deadlines far enough ahead for every sender to park first, latest arrival first
        deadline = anyio.current_time() + 0.5 + n / 50_000
        parked.set()
        await anyio.sleep_until(deadline)
        start = time.perf_counter()
    elapsed = time.perf_counter() - start
    assert mailbox.statistics().tasks_waiting_send == 0
    return elapsed


async def cancel_receivers(n: int) -> float:
    mailbox: Mailbox[int] = Mailbox(1)
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(mailbox.receive)
        while mailbox.statistics().tasks_waiting_receive < n:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        start = time.perf_counter()
        tg.cancel_scope.cancel()
    elapsed = time.perf_counter() - start
    assert mailbox.statistics().tasks_waiting_receive == 0
    return elapsed


class Busy(Agent):
    agent_id = "busy"

    def __init__(self) -> None:
        self.release = anyio.Event()

    @capability("wait")
    async def wait(self, session: Session, params: dict[str, int]) -> None:
        await self.release.wait()


async def time_out_dispatches(n: int) -> float:
    """N callers of a stuck agent (mailbox of 1) time out through the dispatcher."""
    agent = Busy()
    go = anyio.Event()
    deadline = 0.0
    done = 0
    async with Session() as session, Dispatcher(mailbox_size=1) as dispatcher:
        dispatcher.register(agent)

        async def caller(i: int) -> None:
            nonlocal done
            await go.wait()
            timeout = deadline + (n - i) * 1e-6 - anyio.current_time()  # latest first
            await dispatcher.dispatch_single("wait", session, {}, timeout=timeout)
            done += 1

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(caller, i)
            await anyio.sleep(0.05)
            deadline = anyio.current_time() + 1.0 + n / 20_000
            go.set()
            await anyio.sleep_until(deadline)
            start = time.perf_counter()
        elapsed = time.perf_counter() - start
        agent.release.set()
        assert done == n
        assert dispatcher.statistics("busy").tasks_waiting_send == 0
    return elapsed


async def main(n: int) -> None:
    load_average()
    cases = [
        ("baseline", f"{n:,} tasks sleeping (no mailbox), cancelled: baseline", cancel_sleepers),
        ("cancel", f"{n:,} senders waiting on a full mailbox, cancelled", cancel_senders),
        ("timeout", f"{n:,} senders waiting on a full mailbox, timing out", time_out_senders),
        ("receivers", f"{n:,} receivers waiting on an empty mailbox, cancelled", cancel_receivers),
        (
            "dispatch",
            f"{n:,} dispatch_single callers of a stuck agent, timing out",
            time_out_dispatches,
        ),
    ]
    rows = []
    data: dict[str, float | int] = {"callers": n}
    for key, what, case in cases:
        seconds = await case(n)
        rows.append((what, f"{seconds * 1000:,.0f} ms ({seconds / n * 1e6:.1f} us/caller)", ""))
        data[f"{key}_seconds"] = seconds
    report("mailbox", rows, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 callers instead of 40,000")
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    args = parser.parse_args()
    anyio.run(main, 10_000 if args.quick else 40_000, backend="trio" if args.trio else "asyncio")
