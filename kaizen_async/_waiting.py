"""Parking a task until another task answers it, on each backend's cheapest primitive.

A waiter is a *slot* (a small list) made by :meth:`Parker.new_slot`: an ``asyncio.Future``
on asyncio, a parked task (``trio.lowlevel.wait_task_rescheduled``) on Trio. The session
actor's callers and the agents' mailboxes and replies all wait this way; AnyIO's own
primitives cost several times more on this hop, which every write and every step takes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

__all__ = ["Parker", "create_parker", "on_trio"]


def on_trio() -> bool:
    """Whether the running event loop is Trio's (else asyncio's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if "trio" in sys.modules:
            return True
        raise
    return False


class Parker:
    """Park the current task until woken (returns the value) or cancelled."""

    def park(self, slot: list[Any]) -> Awaitable[Any]:  # pragma: no cover - overridden
        """What to await for ``slot``'s answer: the backend's own wait, returned rather
        than awaited here, so a wait makes no coroutine of ours (it is on every hop)."""
        raise NotImplementedError

    def new_slot(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def wake(self, slot: list[Any], value: Any = None, error: BaseException | None = None) -> bool:
        raise NotImplementedError  # pragma: no cover - overridden

    def withdrawn(self, slot: list[Any]) -> bool:  # pragma: no cover - overridden
        """True once the task that waits (or would wait) on ``slot`` was cancelled."""
        raise NotImplementedError

    def withdraw(self, slot: list[Any]) -> bool:  # pragma: no cover - overridden
        """Give ``slot`` up unless it was answered: True when it is withdrawn (now or
        before), False when it was answered (``wake`` won). Called by the waiting task
        when its wait ended in an exception, so that a later ``wake`` skips the slot."""
        raise NotImplementedError

    def new_firm_slot(self) -> list[Any]:  # pragma: no cover - overridden
        """A slot that a cancellation cannot withdraw (see :meth:`park_firm`)."""
        raise NotImplementedError

    async def park_firm(self, slot: list[Any]) -> tuple[Any, BaseException | None]:
        """Wait on a firm slot until it is woken, even if the task is cancelled meanwhile:
        ``(value, cancellation)``, where ``cancellation`` is the cancellation that arrived
        during the wait (asyncio; the caller re-raises it once done) or None (on Trio it
        is delivered at the task's next checkpoint). What a commit under way needs, for
        the price of a plain wait rather than a shielded cancel scope."""
        raise NotImplementedError  # pragma: no cover - overridden


class _FirmFuture(asyncio.Future[Any]):
    """A future its waiting task's cancellation cannot cancel: the task is woken by its
    result and the cancellation is thrown in then."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _AsyncioParker(Parker):
    # slot: [future]
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def new_slot(self) -> list[Any]:
        return [self._loop.create_future()]

    def park(self, slot: list[Any]) -> Awaitable[Any]:
        return slot[0]  # type: ignore[no-any-return]

    def withdrawn(self, slot: list[Any]) -> bool:
        return bool(slot[0].cancelled())

    def withdraw(self, slot: list[Any]) -> bool:
        future = slot[0]
        if not future.done():
            future.cancel()
        return bool(future.cancelled())

    def wake(self, slot: list[Any], value: Any = None, error: BaseException | None = None) -> bool:
        future = slot[0]
        if future.done():
            return False
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
        return True

    def new_firm_slot(self) -> list[Any]:
        return [_FirmFuture(loop=self._loop)]

    async def park_firm(self, slot: list[Any]) -> tuple[Any, BaseException | None]:
        future = slot[0]
        try:
            return await future, None
        except asyncio.CancelledError as exc:
            if not future.done():  # not a firm slot, or cancelled before it was awaited
                raise
            return future.result(), exc


class _TrioParker(Parker):
    # slot: [task or None, state (0 new, 1 parked, 2 done, 3 withdrawn), value, error]
    def __init__(self) -> None:
        import outcome
        import trio

        self._lowlevel = trio.lowlevel
        self._outcome = outcome

    def new_slot(self) -> list[Any]:
        return [None, 0, None, None]

    def withdrawn(self, slot: list[Any]) -> bool:
        return bool(slot[1] == 3)

    def withdraw(self, slot: list[Any]) -> bool:
        if slot[1] != 2:  # not answered: new, parked (the wait raised) or withdrawn
            slot[1] = 3
        return bool(slot[1] == 3)

    def park(self, slot: list[Any]) -> Awaitable[Any]:
        if slot[1] == 2:  # answered before we waited
            return self._answered(slot)
        lowlevel = self._lowlevel
        slot[0] = lowlevel.current_task()
        slot[1] = 1

        def abort(_: Any) -> Any:
            slot[1] = 3
            return lowlevel.Abort.SUCCEEDED

        return lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    async def _answered(self, slot: list[Any]) -> Any:
        """The answer of a slot woken before its task waited (a checkpoint all the same)."""
        await self._lowlevel.checkpoint()
        if slot[3] is not None:
            raise slot[3]
        return slot[2]

    def new_firm_slot(self) -> list[Any]:
        return [None, 0, None, None]

    async def park_firm(self, slot: list[Any]) -> tuple[Any, BaseException | None]:
        if slot[1] == 2:  # answered before we waited (no checkpoint: a cancellation waits)
            if slot[3] is not None:
                raise slot[3]
            return slot[2], None
        slot[0] = self._lowlevel.current_task()
        slot[1] = 1
        failed = self._lowlevel.Abort.FAILED
        # a cancellation cannot abort the wait: Trio delivers it at the next checkpoint
        return await self._lowlevel.wait_task_rescheduled(lambda _: failed), None

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


def create_parker() -> Parker:
    """A parker for the running event loop's backend."""
    return _TrioParker() if on_trio() else _AsyncioParker()
