"""Bounded FIFO mailboxes and one-shot replies, on each backend's cheapest primitive.

AnyIO's memory object streams are the obvious tool, but a request/reply over them costs
several times a plain ``asyncio.Queue`` one (see ``benchmarks/bench_dispatch.py``), and the
agent hop is on every dispatched step. So the mailbox is a deque with parked waiters: an
``asyncio.Future`` on asyncio, a parked task (``trio.lowlevel``) on Trio. Semantics follow
memory object streams: bounded (senders wait while it is full: backpressure), FIFO,
``statistics()`` like ``MemoryObjectStreamStatistics``, and closing wakes every waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._actor import on_trio
from ._exceptions import KaizenValidationError, SessionClosedError

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


class _Parker:
    """Park the current task until woken (returns the value) or cancelled."""

    async def park(self, slot: list[Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def new_slot(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def wake(self, slot: list[Any], value: Any = None, error: BaseException | None = None) -> bool:
        raise NotImplementedError  # pragma: no cover - overridden


class _AsyncioParker(_Parker):
    # slot: [future]
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def new_slot(self) -> list[Any]:
        return [self._loop.create_future()]

    async def park(self, slot: list[Any]) -> Any:
        return await slot[0]

    def wake(self, slot: list[Any], value: Any = None, error: BaseException | None = None) -> bool:
        future = slot[0]
        if future.done():
            return False
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
        return True


class _TrioParker(_Parker):
    # slot: [task or None, state (0 new, 1 parked, 2 done, 3 withdrawn), value, error]
    def __init__(self) -> None:
        import outcome
        import trio

        self._lowlevel = trio.lowlevel
        self._outcome = outcome

    def new_slot(self) -> list[Any]:
        return [None, 0, None, None]

    async def park(self, slot: list[Any]) -> Any:
        if slot[1] == 2:  # answered before we waited
            await self._lowlevel.checkpoint()
            if slot[3] is not None:
                raise slot[3]
            return slot[2]
        slot[0] = self._lowlevel.current_task()
        slot[1] = 1

        def abort(_: Any) -> Any:
            slot[1] = 3
            return self._lowlevel.Abort.SUCCEEDED

        return await self._lowlevel.wait_task_rescheduled(abort)

    def wake(self, slot: list[Any], value: Any = None, error: BaseException | None = None) -> bool:
        state = slot[1]
        if state == 0:
            slot[1], slot[2], slot[3] = 2, value, error
            return True
        if state != 1:
            return False
        slot[1] = 2
        result = self._outcome.Value(value) if error is None else self._outcome.Error(error)
        self._lowlevel.reschedule(slot[0], result)
        return True


def _parker() -> _Parker:
    return _TrioParker() if on_trio() else _AsyncioParker()


class Reply:
    """A one-shot answer from a receiver to the sender that is waiting for it."""

    __slots__ = ("_parker", "_slot")

    def __init__(self, parker: _Parker) -> None:
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
        slot = self._slot
        if isinstance(self._parker, _AsyncioParker):
            return bool(slot[0].cancelled())
        return bool(slot[1] == 3)

    async def wait(self) -> Any:
        return await self._parker.park(self._slot)


def create_reply() -> Reply:
    """A :class:`Reply` for the running backend."""
    return Reply(_parker())


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
        self._parker = _parker()
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
