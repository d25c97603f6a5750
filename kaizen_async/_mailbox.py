"""Bounded FIFO mailboxes on each backend's cheapest primitive.

AnyIO's memory object streams are the obvious tool, but a request/reply over them costs
several times a plain ``asyncio.Queue`` one (see ``benchmarks/bench_dispatch.py``), and the
agent hop is on every dispatched step. So the mailbox is a deque with parked waiters: an
``asyncio.Future`` on asyncio, a parked task (``trio.lowlevel``) on Trio. Semantics follow
memory object streams: bounded (senders wait while it is full: backpressure), FIFO,
``statistics()`` like ``MemoryObjectStreamStatistics``, and closing wakes every waiter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._exceptions import KaizenValidationError, SessionClosedError
from ._waiting import create_parker

__all__ = ["Mailbox", "MailboxClosedError", "MailboxStatistics"]

T = TypeVar("T")

#: withdrawn slots a deque of waiters may hold beyond its live ones before it is compacted
_SLACK = 64


class MailboxClosedError(SessionClosedError):
    """The mailbox was closed: no more sends; receivers get this once it is empty."""


@dataclass(frozen=True)
class MailboxStatistics:
    """Like AnyIO's ``MemoryObjectStreamStatistics``."""

    current_buffer_used: int
    max_buffer_size: int
    tasks_waiting_send: int
    tasks_waiting_receive: int


class Mailbox(Generic[T]):
    """A bounded FIFO for one or more receiving tasks; senders wait while it is full.

    A waiting sender's item is moved into the buffer by the receiver that makes room, in
    the order the senders arrived, so FIFO holds exactly even under backpressure.

    A waiter that gives up (cancelled, timed out) is not searched for in the deque of
    waiters (``deque.remove`` is O(N), so N callers giving up at once took O(N^2)): its
    slot is withdrawn, stays where it is and is skipped when it reaches the front. The
    numbers of live waiters are counted exactly, and a deque is compacted when withdrawn
    slots outnumber the live ones, so its size stays proportional to the live waiters.
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise KaizenValidationError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        #: the buffer (read-only outside: a receiver may look before it calls receive)
        self.items: deque[T] = deque()
        self._senders: deque[tuple[T, list[Any]]] = deque()
        self._receivers: deque[list[Any]] = deque()
        #: live (not withdrawn) slots in ``_senders`` / ``_receivers``
        self._waiting_send = 0
        self._waiting_receive = 0
        #: how senders and receivers wait; the dispatcher's callers wait on it for their
        #: results too (one parker per mailbox, on the backend it was made on)
        self.parker = create_parker()
        self.closed = False

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            len(self.items), self.max_size, self._waiting_send, self._waiting_receive
        )

    def __len__(self) -> int:
        return len(self.items)

    def _wake_receiver(self) -> None:
        """Wake the first live waiting receiver (withdrawn ones are dropped on the way)."""
        receivers = self._receivers
        while receivers:
            if self.parker.wake(receivers.popleft()):
                self._waiting_receive -= 1
                return

    def try_send(self, item: T) -> bool:
        """Append ``item`` if that needs no wait (there is room and no sender waits
        before it); False otherwise. MailboxClosedError once closed."""
        if self.closed:
            raise MailboxClosedError("the mailbox is closed")
        if len(self.items) < self.max_size:
            senders = self._senders
            # senders wait only while the buffer is full, so any left here gave up
            withdrawn = self.parker.withdrawn
            while senders and withdrawn(senders[0][1]):
                senders.popleft()
            if not senders:
                self.items.append(item)
                if self._receivers:
                    self._wake_receiver()
                return True
        return False

    async def send(self, item: T) -> None:
        """Append ``item``, waiting while the mailbox is full (FIFO among waiting senders)."""
        if self.try_send(item):
            return
        senders = self._senders
        waiting = (item, self.parker.new_slot())
        senders.append(waiting)
        self._waiting_send += 1
        try:
            await self.parker.park(waiting[1])
        except BaseException:
            if self.parker.withdraw(waiting[1]):  # not moved in: skipped when popped
                self._waiting_send -= 1
                if len(self._senders) > 2 * self._waiting_send + _SLACK:
                    self._compact()
            raise

    def receive_nowait(self) -> T:
        """The oldest item without waiting (``IndexError`` when empty); makes room for the
        first waiting sender, whose item moves in."""
        item = self.items.popleft()
        senders = self._senders
        while senders:
            waiting_item, slot = senders.popleft()
            if self.parker.wake(slot):
                self._waiting_send -= 1
                self.items.append(waiting_item)
                break
        return item

    async def receive(self) -> T:
        """The oldest item, waiting while empty; MailboxClosedError once closed and drained."""
        while True:
            if self.items:
                return self.receive_nowait()
            if self.closed:
                raise MailboxClosedError("the mailbox is closed")
            parker = self.parker
            slot = parker.new_slot()
            self._receivers.append(slot)
            self._waiting_receive += 1
            try:
                await parker.park(slot)
            except BaseException:
                if self.parker.withdraw(slot):  # skipped when popped
                    self._waiting_receive -= 1
                    if len(self._receivers) > 2 * self._waiting_receive + _SLACK:
                        self._compact()
                raise

    def _compact(self) -> None:
        """Drop the withdrawn slots of both deques: O(N), once per O(N) withdrawals."""
        withdrawn = self.parker.withdrawn
        self._senders = deque(w for w in self._senders if not withdrawn(w[1]))
        self._receivers = deque(r for r in self._receivers if not withdrawn(r))

    def close(self) -> None:
        """No more sends (waiting senders fail); receivers drain the buffer, then fail."""
        self.closed = True
        while self._receivers:
            if self.parker.wake(self._receivers.popleft()):
                self._waiting_receive -= 1
        while self._senders:
            _, slot = self._senders.popleft()
            if self.parker.wake(slot, None, MailboxClosedError("the mailbox is closed")):
                self._waiting_send -= 1
