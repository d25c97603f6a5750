"""Where an asyncio-only database driver runs: the caller's loop, or a loop of its own.

asyncpg runs only on asyncio. A store entered on asyncio runs its driver calls on the
caller's own event loop (no hop); a store entered on Trio starts a private asyncio loop in
a daemon thread and runs every driver call there, waking the Trio task through its
``TrioToken`` when the call is done (two cross-thread wake-ups per call, no worker thread
parked). Callers see one interface, :meth:`DriverLoop.call`, on both backends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .._waiting import on_trio

__all__ = ["DriverLoop"]

T = TypeVar("T")


class DriverLoop:
    """Runs coroutine functions on an asyncio loop: the caller's (asyncio) or a thread's (Trio)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def threaded(self) -> bool:
        """Whether calls run on a loop thread of their own (the caller is on Trio)."""
        return self._thread is not None

    async def start(self) -> None:
        """Pick the loop for the running backend (call from the task entering the store)."""
        if not on_trio():
            self._loop = asyncio.get_running_loop()
            return
        ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            ready.set_result(loop)
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=main, name=self._name, daemon=True)
        thread.start()
        self._loop = await anyio.to_thread.run_sync(ready.result)
        self._thread = thread

    async def stop(self) -> None:
        """Stop the loop thread (if any) once the driver's connections are closed."""
        loop, thread = self._loop, self._thread
        self._loop, self._thread = None, None
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            await anyio.to_thread.run_sync(thread.join)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, shield: bool = False) -> T:
        """``await fn(*args)`` on the driver's loop.

        ``shield``: the call runs to its end even if the caller is cancelled meanwhile (a
        commit must not be abandoned half-way by a cancellation; the driver's own timeouts
        bound it). Unshielded, cancelling the caller cancels the call.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("the driver loop is not running")
        if self._thread is None:
            if shield:
                with anyio.CancelScope(shield=True):
                    return await fn(*args)
            return await fn(*args)
        return await self._call_threaded(loop, fn, args, shield)

    async def _call_threaded(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        shield: bool,
    ) -> T:
        """Run ``fn(*args)`` as a task of the loop thread; the Trio caller sleeps until the
        task is done. Cancelled, the caller cancels the task and waits for it to end, so no
        work of the call outlives the caller's cancellation."""
        import trio  # the caller runs on Trio: it is importable

        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, Any] = {}

        def finished(task: asyncio.Task[T]) -> None:
            box["task_done"] = task
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        def start() -> None:
            task = loop.create_task(_awaited(fn, args))
            box["task"] = task
            task.add_done_callback(finished)

        def cancel() -> None:
            task = box.get("task")
            if task is not None:
                task.cancel()

        loop.call_soon_threadsafe(start)
        try:
            with anyio.CancelScope(shield=shield):
                await done.wait()
        except BaseException:
            loop.call_soon_threadsafe(cancel)
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
        task: asyncio.Task[T] = box["task_done"]
        return task.result()


async def _awaited(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)
