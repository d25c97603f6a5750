"""Mailbox: waiters that give up are released without searching the deque of waiters,
FIFO holds for the rest and the statistics count exactly the live waiters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from kaizen_async._mailbox import Mailbox, MailboxClosedError

pytestmark = pytest.mark.anyio


class Item:
    """A mailbox item that counts how often it is compared: finding a withdrawn sender by
    comparing items (``deque.remove``) is O(N) per withdrawal, O(N^2) for N of them."""

    comparisons = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        Item.comparisons += 1
        return isinstance(other, Item) and other.n == self.n

    __hash__ = object.__hash__


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the other tasks run until ``condition()`` holds (no fixed sleep that a loaded
    machine can outlast); fails after 10 s instead of hanging."""
    with anyio.move_on_after(10):
        while not condition():
            await anyio.sleep(0.001)
        return
    pytest.fail(f"not {what} after 10 s")


async def _park_senders(
    mailbox: Mailbox[Any], tg: anyio.abc.TaskGroup, items: list[Any]
) -> tuple[list[anyio.CancelScope], list[Any]]:
    """Start one waiting sender per item, in order; returns their scopes and what each
    sender's ``send`` ended with (None: returned, else the exception class)."""
    scopes = [anyio.CancelScope() for _ in items]
    outcomes: list[Any] = [...] * len(items)

    async def sender(i: int) -> None:
        with scopes[i]:
            try:
                await mailbox.send(items[i])
                outcomes[i] = None
            except BaseException as exc:
                outcomes[i] = type(exc)
                if not isinstance(exc, MailboxClosedError):
                    raise

    for i in range(len(items)):
        tg.start_soon(sender, i)
        await anyio.lowlevel.checkpoint()  # parks in arrival order
    while mailbox.statistics().tasks_waiting_send < len(items):
        await anyio.lowlevel.checkpoint()
    return scopes, outcomes


async def test_cancelled_senders_are_released_fifo_kept_statistics_exact() -> None:
    n = 300
    mailbox: Mailbox[Any] = Mailbox(2)
    await mailbox.send(Item(-2))
    await mailbox.send(Item(-1))  # full
    async with anyio.create_task_group() as tg:
        scopes, outcomes = await _park_senders(mailbox, tg, [Item(i) for i in range(n)])
        Item.comparisons = 0
        cancelled = [i for i in range(n) if i % 3 != 0]
        for i in reversed(cancelled):  # the worst order for a search from the front
            scopes[i].cancel()
        kept = [i for i in range(n) if i % 3 == 0]
        await _until(
            lambda: mailbox.statistics().tasks_waiting_send == len(kept),
            "only the kept senders waiting",
        )
        assert Item.comparisons == 0  # no search for the withdrawn senders
        stats = mailbox.statistics()
        assert stats.tasks_waiting_send == len(kept)
        assert stats.current_buffer_used == 2
        received = [(await mailbox.receive()).n for _ in range(2 + len(kept))]
        assert received == [-2, -1, *kept]  # FIFO for everyone who stayed
        assert mailbox.statistics().tasks_waiting_send == 0
        assert len(mailbox) == 0
    assert all(outcomes[i] is None for i in kept)
    assert all(outcomes[i] is anyio.get_cancelled_exc_class() for i in cancelled)


async def test_timed_out_senders_are_released_and_the_mailbox_goes_on() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    await mailbox.send(0)
    timed_out: list[int] = []

    async def sender(i: int, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await mailbox.send(i)
            return
        timed_out.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(1, 41):
            # the odd ones give up, the last to arrive first
            tg.start_soon(sender, i, 0.05 + (40 - i) * 0.001 if i % 2 else 60)
            await anyio.lowlevel.checkpoint()
        await _until(
            lambda: len(timed_out) == 20 and mailbox.statistics().tasks_waiting_send == 20,
            "20 senders timed out and 20 waiting",
        )
        assert sorted(timed_out) == list(range(1, 41, 2))
        assert mailbox.statistics().tasks_waiting_send == 20
        assert [await mailbox.receive() for _ in range(21)] == [0, *range(2, 41, 2)]
    # the withdrawn slots are gone: a send goes straight into the buffer again
    await mailbox.send(99)
    assert mailbox.statistics().tasks_waiting_send == 0
    assert await mailbox.receive() == 99


async def test_withdrawn_waiters_do_not_pile_up_in_a_full_mailbox() -> None:
    # nobody receives: withdrawn slots never reach the front, so they are compacted away
    mailbox: Mailbox[int] = Mailbox(1)
    await mailbox.send(0)
    for round_ in range(20):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(mailbox.send, round_ * 100 + i)
            await _until(
                lambda: mailbox.statistics().tasks_waiting_send == 50, "50 senders waiting"
            )
            tg.cancel_scope.cancel()
        assert mailbox.statistics().tasks_waiting_send == 0
        assert len(mailbox._senders) <= 64 + 50
    assert await mailbox.receive() == 0


async def test_cancelled_receivers_are_released_and_a_live_one_still_gets_the_item() -> None:
    mailbox: Mailbox[str] = Mailbox(4)
    got: list[str] = []

    async def live_receiver() -> None:
        got.append(await mailbox.receive())

    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as quitters:
            for _ in range(100):
                quitters.start_soon(mailbox.receive)
            await _until(
                lambda: mailbox.statistics().tasks_waiting_receive == 100, "100 receivers waiting"
            )
            outer.start_soon(live_receiver)  # the last to arrive
            await _until(
                lambda: mailbox.statistics().tasks_waiting_receive == 101, "101 receivers waiting"
            )
            quitters.cancel_scope.cancel()
        assert mailbox.statistics().tasks_waiting_receive == 1
        await mailbox.send("x")
    assert got == ["x"]
    assert mailbox.statistics().tasks_waiting_receive == 0
    assert len(mailbox._receivers) == 0


async def test_close_fails_the_live_waiters_and_keeps_counts_exact() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    await mailbox.send(0)
    async with anyio.create_task_group() as tg:
        scopes, outcomes = await _park_senders(mailbox, tg, list(range(1, 11)))
        for scope in scopes[:5]:
            scope.cancel()
        await _until(lambda: mailbox.statistics().tasks_waiting_send == 5, "5 senders waiting")
        mailbox.close()  # fails the live senders at once (they end before the group does)
        assert mailbox.statistics().tasks_waiting_send == 0
    assert outcomes == [anyio.get_cancelled_exc_class()] * 5 + [MailboxClosedError] * 5
    assert await mailbox.receive() == 0  # what was buffered is still drained
    with pytest.raises(MailboxClosedError):
        await mailbox.receive()
