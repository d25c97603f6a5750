"""Bounded FIFO mailboxes and one-shot replies, on each backend's cheapest primitive.

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
from ._waiting import Parker, create_parker

__all__ = ["Mailbox", "MailboxClosedError", "MailboxStatistics", "Reply", "create_reply"]

T = TypeVar("T")


class MailboxClosedError(SessionClosedError):
    """The mailbox was closed: no more sends; receivers get this once it is empty."""


@dataclass(frozen=True)
class MailboxStatistics:
    """Like AnyIO's ``MemoryObjectStreamStatistics``."""

    current_buffer_used: int
    max_buffer_size: int
    tasks_waiting_send: int
    tasks_waiting_receive: int


class Reply:
    """A one-shot answer from a receiver to the sender that is waiting for it."""

    __slots__ = ("_parker", "_slot")

    def __init__(self, parker: Parker) -> None:
        self._parker = parker
        self._slot = parker.new_slot()

    def send(self, value: Any) -> bool:
        """Deliver ``value``; False when the waiter is gone (cancelled) or already answered."""
        return self._parker.wake(self._slot, value)

    def send_error(self, error: BaseException) -> bool:
        return self._parker.wake(self._slot, None, error)

    @property
    def withdrawn(self) -> bool:
        """True once the waiting side was cancelled."""
        return self._parker.withdrawn(self._slot)

    async def wait(self) -> Any:
        return await self._parker.park(self._slot)


def create_reply() -> Reply:
    """A :class:`Reply` for the running backend."""
    return Reply(create_parker())


class Mailbox(Generic[T]):
    """A bounded FIFO for one or more receiving tasks; senders wait while it is full.

    A waiting sender's item is moved into the buffer by the receiver that makes room, in
    the order the senders arrived, so FIFO holds exactly even under backpressure.
    """

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise KaizenValidationError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        self._items: deque[T] = deque()
        self._senders: deque[tuple[T, list[Any]]] = deque()
        self._receivers: deque[list[Any]] = deque()
        self._parker = create_parker()
        self.closed = False

    def reply(self) -> Reply:
        """A :class:`Reply` on this mailbox's backend (cheaper than :func:`create_reply`)."""
        return Reply(self._parker)

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            len(self._items), self.max_size, len(self._senders), len(self._receivers)
        )

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, item: T) -> None:
        self._items.append(item)
        receivers = self._receivers
        while receivers:
            if self._parker.wake(receivers.popleft()):
                return

    async def send(self, item: T) -> None:
        """Append ``item``, waiting while the mailbox is full (FIFO among waiting senders)."""
        if self.closed:
            raise MailboxClosedError("the mailbox is closed")
        if len(self._items) < self.max_size and not self._senders:
            self._put(item)
            return
        waiting = (item, self._parker.new_slot())
        self._senders.append(waiting)
        try:
            await self._parker.park(waiting[1])
        except BaseException:
            if waiting in self._senders:  # not moved in yet: withdraw it
                self._senders.remove(waiting)
            raise

    def receive_nowait(self) -> T:
        """The oldest item without waiting (``IndexError`` when empty); makes room for the
        first waiting sender, whose item moves in."""
        item = self._items.popleft()
        senders = self._senders
        while senders:
            waiting_item, slot = senders.popleft()
            if self._parker.wake(slot):
                self._items.append(waiting_item)
                break
        return item

    async def receive(self) -> T:
        """The oldest item, waiting while empty; MailboxClosedError once closed and drained."""
        while True:
            if self._items:
                return self.receive_nowait()
            if self.closed:
                raise MailboxClosedError("the mailbox is closed")
            slot = self._parker.new_slot()
            self._receivers.append(slot)
            try:
                await self._parker.park(slot)
            except BaseException:
                if slot in self._receivers:
                    self._receivers.remove(slot)
                raise

    def close(self) -> None:
        """No more sends (waiting senders fail); receivers drain the buffer, then fail."""
        self.closed = True
        while self._receivers:
            self._parker.wake(self._receivers.popleft())
        while self._senders:
            _, slot = self._senders.popleft()
            self._parker.wake(slot, None, MailboxClosedError("the mailbox is closed"))
