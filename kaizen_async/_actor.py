"""The single-writer actor loop behind a session.

Callers append requests to a FIFO and wait for their reply; one task drains whatever is
queued, applies it as one batch in arrival order, and then answers every caller of the
batch (the place where a durable store flushes once per batch: group commit).

The request/reply hop is the hot path of the whole runtime: callers wait on a
:class:`~kaizen_async._waiting.Parker` slot (a future on asyncio, a parked task on Trio), and
the asyncio loop below inlines it. A caller cancelled before its request is applied
withdraws it; one cancelled after that only stops waiting (the write stands, as with any
acknowledged-late write).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._exceptions import SessionClosedError
from ._waiting import create_parker, on_trio

__all__ = ["Actor", "create_actor", "exit_task_group"]

_Fn = Callable[..., Any]


class Actor:
    """Backend-neutral part: the queue, the batch loop and closing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._parker = create_parker()
        self.queue: deque[list[Any]] = deque()
        self.closing = False
        self.closed = False
        self.batches = 0
        self.applied = 0
        self.async_queued = 0  # queued async requests (saves): they take the generic path

    async def call(self, fn: _Fn, *args: Any) -> Any:
        """Queue ``fn(*args)`` and wait for its result (or its exception)."""
        return await self._request(fn, args, False)

    async def call_async(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Queue ``await fn(*args)``: it runs alone, after what was queued before it."""
        return await self._request(fn, args, True)

    async def _request(self, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool) -> Any:
        self._check_open()
        slot = self._parker.new_slot()
        self.queue.append([fn, args, slot, is_async])
        self.async_queued += is_async
        self._wake()
        return await self._parker.park(slot)

    def post(self, fn: _Fn, *args: Any) -> None:
        """Queue a write without waiting for it (FIFO with every later request)."""
        self._check_open()
        self.queue.append([fn, args, None, False])
        self._wake()

    # backend hooks: how the actor task itself sleeps and is woken
    def _wake(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _sleep(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _withdrawn(self, slot: list[Any]) -> bool:
        return self._parker.withdrawn(slot)

    def _resolve(self, slot: list[Any], ok: bool, value: Any) -> None:
        if ok:
            self._parker.wake(slot, value)
        else:
            self._parker.wake(slot, None, value)

    # shared ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closing or self.closed:
            raise SessionClosedError(f"{self.name} is closed")

    def close(self) -> None:
        """Stop accepting requests; the loop drains what is queued, then returns."""
        self.closing = True
        self._wake()

    async def run(self) -> None:
        """Drain the queue in batches until closed; always fails what it could not serve."""
        try:
            while True:
                if not self.queue:
                    if self.closing:
                        return
                    await self._sleep()
                    continue
                await self._drain_once()
        finally:
            self._fail_pending()

    async def _drain_once(self) -> None:
        """Apply everything queued now, in order, then answer its callers (one batch)."""
        queue = self.queue
        self.batches += 1
        answers: list[tuple[Any, bool, Any]] = []
        for _ in range(len(queue)):
            fn, args, waiter, is_async = queue.popleft()
            if is_async:
                self.async_queued -= 1
            if waiter is not None and self._withdrawn(waiter):
                continue
            self.applied += 1
            if is_async:
                # an async step (a save) answers the batch so far first, then runs alone
                for answer in answers:
                    self._resolve(*answer)
                answers.clear()
                try:
                    result = (True, await fn(*args))
                except Exception as exc:
                    result = (False, exc)
                except BaseException:  # the actor itself is cancelled mid-step
                    self._resolve(waiter, False, SessionClosedError(f"{self.name} is closed"))
                    raise
                self._resolve(waiter, *result)
                continue
            try:
                value = fn(*args)
            except Exception as exc:
                if waiter is not None:
                    answers.append((waiter, False, exc))
                else:
                    _lost(self.name, exc)
                continue
            if waiter is not None:
                answers.append((waiter, True, value))
        for answer in answers:
            self._resolve(*answer)

    def _fail_pending(self) -> None:
        self.closed = True
        queue = self.queue
        while queue:
            _, _, waiter, _ = queue.popleft()
            if waiter is not None:
                self._resolve(waiter, False, SessionClosedError(f"{self.name} is closed"))


class _AsyncioActor(Actor):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _sleep(self) -> None:
        self._wakeup = self._loop.create_future()
        await self._wakeup

    async def call(self, fn: _Fn, *args: Any) -> Any:
        """The hot path of every awaited write: the generic request, inlined."""
        if self.closing or self.closed:
            self._check_open()
        future = self._loop.create_future()
        self.queue.append([fn, args, [future], False])  # the asyncio parker's slot
        if self._wakeup is not None:
            self._wake()
        return await future

    async def run(self) -> None:
        """The generic loop, specialised for futures: this is the per-write hot path."""
        queue = self.queue
        popleft = queue.popleft
        try:
            while True:
                if not queue:
                    if self.closing:
                        return
                    await self._sleep()
                    continue
                if self.async_queued:
                    await self._drain_once()
                    continue
                self.batches += 1
                answers = []
                for _ in range(len(queue)):
                    fn, args, slot, _ = popleft()
                    future = None if slot is None else slot[0]
                    if future is not None and future.done():
                        continue
                    try:
                        answers.append((future, True, fn(*args)))
                    except Exception as exc:
                        if future is None:
                            _lost(self.name, exc)
                        answers.append((future, False, exc))
                self.applied += len(answers)
                for future, ok, value in answers:
                    if future is None or future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._fail_pending()


class _TrioActor(Actor):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        import trio

        self._lowlevel = trio.lowlevel
        self._sleeper: Any = None

    def _wake(self) -> None:
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            self._lowlevel.reschedule(sleeper)

    async def _sleep(self) -> None:
        lowlevel = self._lowlevel
        self._sleeper = lowlevel.current_task()

        def abort(_: Any) -> Any:
            self._sleeper = None
            return lowlevel.Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)


def _lost(name: str, exc: Exception) -> None:
    """A write queued without a waiter failed (they are validated first: a bug)."""
    logging.getLogger("kaizen_async.session").error(
        "a queued write to %s failed: %r", name, exc, exc_info=exc
    )


def create_actor(name: str) -> Actor:
    """An actor for the running event loop's backend (asyncio or Trio)."""
    return _TrioActor(name) if on_trio() else _AsyncioActor(name)


async def exit_task_group(
    task_group: TaskGroup,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    """Leave a task group entered by hand in an object's ``__aenter__``.

    An exception from the ``async with`` body is the caller's, not the tasks': the tasks
    drain and stop, and the exception propagates as itself rather than wrapped in an
    ``ExceptionGroup``. Cancellation is passed on so the task group can handle it.
    """
    if exc is not None and not isinstance(exc, anyio.get_cancelled_exc_class()):
        await task_group.__aexit__(None, None, None)
        return None
    return await task_group.__aexit__(exc_type, exc, tb)
