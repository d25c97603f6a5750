"""The single-writer actor loop behind a session.

Callers append requests to a FIFO and wait for their reply; one task drains whatever is
queued, applies it as one batch in arrival order, and then answers every caller of the
batch (the place where a durable store flushes once per batch: group commit).

The request/reply hop is the hot path of the whole runtime: callers wait on a
:class:`~kaizen_async._waiting.Parker` slot (a future on asyncio, a parked task on Trio), and
the asyncio loop below inlines it. A caller cancelled before its request is applied
withdraws it; one cancelled after that only stops waiting (the write stands, as with any
acknowledged-late write).

A store-backed session's actor has a :class:`Committer`: after applying a batch it commits
it and only then answers the batch's callers; a commit that fails answers them with the
error (the committer has reloaded the session from its store by then). Reads that must not
see uncommitted data are queued with :meth:`Actor.call_after` and computed after the commit.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from ._exceptions import SessionClosedError, SessionFencedError
from ._waiting import create_parker, on_trio

__all__ = ["Actor", "Committer", "create_actor", "exit_task_group"]

_Fn = Callable[..., Any]
# request kinds: a write applied in the batch, an async step run alone (a save), a read
# computed once everything before it is applied and committed
_APPLY, _ASYNC, _AFTER = 0, 1, 2


class Committer(Protocol):
    """What makes a store-backed actor durable (see :mod:`kaizen_async._durable`)."""

    #: the first failed commit of a batch holding posted writes, until a flush reports it
    flush_error: Exception | None
    #: set when a failed commit could not be followed by a reload: the session must stop
    broken: Exception | None

    async def commit(self) -> tuple[Exception | None, BaseException | None]:
        """Commit what was applied since the last commit, seen through to its outcome
        even if the actor is cancelled meanwhile: ``(error, cancellation)``. ``error``: why
        it failed (the session has then been reloaded from its store, or ``broken`` is
        set); ``cancellation``: one that arrived during the wait, for the actor to raise
        once it has answered the batch (None: none, or the backend delivers it later)."""
        ...


class Actor:
    """Backend-neutral part: the queue, the batch loop and closing."""

    def __init__(self, name: str, committer: Committer | None = None) -> None:
        self.name = name
        self._parker = create_parker()
        self.queue: deque[list[Any]] = deque()
        self.closing = False
        self.closed = False
        self.batches = 0
        self.applied = 0
        self.async_queued = 0  # queued async steps and reads: they take the generic path
        #: the state keys of the posted writes queued since the queue was last empty: a
        #: read of one of them waits for the queue (see Session.get)
        self.state_keys: set[str] = set()
        self.committer = committer
        #: called after each batch is answered and when the loop ends (subscribers wait)
        self.on_settled: Callable[[], None] | None = None
        #: set when the loop has ended; made by whoever has to wait for that (``_stop``)
        self.finished: anyio.Event | None = None
        self.close_reason = ""
        #: when set, what a closed actor answers instead of SessionClosedError (a session
        #: that lost its store ownership answers every later request as fenced)
        self.close_error: Callable[[], Exception] | None = None

    def _closed_error(self) -> Exception:
        make = self.close_error
        if make is not None:
            return make()
        return SessionClosedError(f"{self.name} is closed{self.close_reason}")

    async def call(self, fn: _Fn, *args: Any) -> Any:
        """Queue ``fn(*args)`` and wait for its result (or its exception)."""
        return await self._request(fn, args, _APPLY)

    async def call_async(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Queue ``await fn(*args)``: it runs alone, after what was queued before it (and,
        with a committer, once that is committed; its own writes commit with what follows)."""
        return await self._request(fn, args, _ASYNC)

    async def call_after(self, fn: _Fn, *args: Any) -> Any:
        """Queue ``fn(*args)`` to run once everything queued before it is applied and, with
        a committer, committed: a read that never sees a write that could be rolled back."""
        return await self._request(fn, args, _AFTER)

    async def _request(self, fn: Callable[..., Any], args: tuple[Any, ...], kind: int) -> Any:
        self._check_open()
        slot = self._parker.new_slot()
        self.queue.append([fn, args, slot, kind])
        self.async_queued += kind != _APPLY
        self._wake()
        return await self._parker.park(slot)

    def post(self, fn: _Fn, *args: Any) -> None:
        """Queue a write without waiting for it (FIFO with every later request)."""
        if self.closing or self.closed:
            raise self._closed_error()
        self.queue.append([fn, args, None, 0])  # 0: _APPLY (a constant, on the hot path)
        self._wake()

    def post_answered(self, slot: list[Any], fn: _Fn, *args: Any) -> None:
        """Queue ``fn(*args)`` and answer ``slot``, a waiter of this backend's kind that a
        task already waits on, with its result once applied (and, with a committer,
        committed; a failed commit answers the error), as :meth:`call` answers its own."""
        self._check_open()
        self.queue.append([fn, args, slot, 0])
        self._wake()

    # backend hooks: how the actor task itself sleeps and is woken
    def _wake(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _sleep(self) -> Awaitable[None]:  # pragma: no cover - overridden
        """What the actor task awaits to sleep until woken (not a coroutine of ours)."""
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
            raise self._closed_error()

    def close(self) -> None:
        """Stop accepting requests; the loop drains what is queued, then returns."""
        self.closing = True
        self._wake()

    # running without a task group: ``spawn`` starts the loop as a task of its own (no
    # task group, cancel scope or AnyIO task handle per session: those cost more memory
    # than the rest of an idle session), ``join`` is the task group's exit
    def spawn(self) -> None:  # pragma: no cover - overridden
        """Start :meth:`run` as a task of its own; :meth:`join` must end it."""
        raise NotImplementedError

    def _cancel(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _ran(self) -> None:  # pragma: no cover - overridden
        """Return once the spawned task has ended (cancellable)."""
        raise NotImplementedError

    def _raise_error(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def join(self, cancel: bool = False) -> None:
        """Wait for the spawned loop to end, as leaving a task group would: with ``cancel``
        (the caller is being cancelled) it is cancelled first; a wait that is cancelled
        cancels it too, and either way it has ended when this returns. An error the loop
        itself raised (a bug) is raised here."""
        if cancel:
            self._cancel()
            with anyio.CancelScope(shield=True):
                await self._ran()
            return
        try:
            await self._ran()
        except BaseException:
            self._cancel()
            with anyio.CancelScope(shield=True):
                await self._ran()
            raise
        self._raise_error()

    async def run(self) -> None:
        """Drain the queue in batches until closed; always fails what it could not serve."""
        try:
            while True:
                if not self.queue:
                    self.state_keys.clear()
                    if self.closing:
                        return
                    await self._sleep()
                    continue
                if self.committer is None and not self.async_queued:
                    self._apply_queued()
                else:
                    await self._drain_once()
        finally:
            self._ended()

    def _apply_queued(self) -> None:
        """:meth:`_drain_once` when nothing needs awaiting (no committer, no async step
        queued): apply everything queued now, in order, then answer its callers."""
        queue = self.queue
        self.batches += 1
        answers: list[tuple[Any, bool, Any]] = []
        for _ in range(len(queue)):
            fn, args, waiter, _ = queue.popleft()
            if waiter is not None and self._withdrawn(waiter):
                continue
            self.applied += 1
            try:
                value = fn(*args)
            except Exception as exc:
                if waiter is None:
                    _lost(self.name, exc)
                else:
                    answers.append((waiter, False, exc))
                continue
            if waiter is not None:
                answers.append((waiter, True, value))
        for answer in answers:
            self._resolve(*answer)
        notify = self.on_settled
        if notify is not None:
            notify()

    async def _drain_once(self) -> None:
        """Apply everything queued now, in order, then answer its callers (one batch)."""
        queue = self.queue
        committer = self.committer
        self.batches += 1
        answers: list[tuple[Any, bool, Any]] = []
        after: list[tuple[_Fn, tuple[Any, ...], Any]] = []
        posted = 0
        for _ in range(len(queue)):
            fn, args, waiter, kind = queue.popleft()
            if kind:
                self.async_queued -= 1
            if waiter is not None and self._withdrawn(waiter):
                continue
            if kind == _AFTER:
                after.append((fn, args, waiter))
                continue
            self.applied += 1
            if kind == _ASYNC:
                # an async step (a save) answers the batch so far first, then runs alone
                await self._settle(answers, after, posted)
                answers, after, posted = [], [], 0
                if committer is not None and committer.broken is not None:
                    # the rest of the queue was failed with the session: stop here
                    self._resolve(waiter, False, self._closed_error())
                    return
                try:
                    result = (True, await fn(*args))
                except Exception as exc:
                    result = (False, exc)
                except BaseException:  # the actor itself is cancelled mid-step
                    self._resolve(waiter, False, SessionClosedError(f"{self.name} is closed"))
                    raise
                if committer is None:
                    self._resolve(waiter, *result)
                else:  # answered once what it wrote is committed, with what follows
                    answers.append((waiter, *result))
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
            else:
                posted += 1
        if committer is None and not after:
            for answer in answers:
                self._resolve(*answer)
            notify = self.on_settled
            if notify is not None:
                notify()
            return
        await self._settle(answers, after, posted)

    async def _settle(
        self,
        answers: list[tuple[Any, bool, Any]],
        after: list[tuple[_Fn, tuple[Any, ...], Any]],
        posted: int,
    ) -> None:
        """Commit what was applied (with a committer), then answer the writes and compute
        the reads queued after them. A failed commit answers every write with its error."""
        committer = self.committer
        cancelled: BaseException | None = None
        if committer is not None:
            error, cancelled = await committer.commit()  # seen through, even if cancelled
            if error is not None:
                if posted:
                    committer.flush_error = committer.flush_error or error
                answers = [(w, False, error) if ok else (w, ok, v) for w, ok, v in answers]
        for answer in answers:
            self._resolve(*answer)
        if committer is not None and committer.broken is not None:
            # the store failed and the session could not be reloaded from it: its memory
            # may hold writes the store does not, so nothing more is applied or read
            if not self.closing:
                self.closing = True
                self.close_reason = f" (its store failed: {committer.broken})"
                broken = committer.broken
                if isinstance(broken, SessionFencedError):  # another hub owns it now
                    self.close_error = lambda: SessionFencedError(
                        broken.message, details=broken.details
                    )
                self._fail_queue()  # the loop ends by itself now that the queue is empty
            for _, _, waiter in after:
                self._resolve(waiter, False, self._closed_error())
            after = []
        elif committer is not None:
            # reads queued while the batch committed, with no write before them: they see
            # the state they would see in the next batch (nothing applied since), so they
            # are answered now rather than in one more pass with nothing to commit
            queue = self.queue
            while queue and queue[0][3] == _AFTER:
                fn, args, waiter, _ = queue.popleft()
                self.async_queued -= 1
                if not self._withdrawn(waiter):
                    after.append((fn, args, waiter))
        for fn, args, waiter in after:
            try:
                value = fn(*args)
            except Exception as exc:
                self._resolve(waiter, False, exc)
            else:
                self._resolve(waiter, True, value)
        notify = self.on_settled
        if notify is not None:
            notify()
        if cancelled is not None:  # the actor was cancelled while the batch committed
            raise cancelled

    def _fail_pending(self) -> None:
        self.closed = True
        self._fail_queue()

    def _fail_queue(self) -> None:
        queue = self.queue
        while queue:
            _, _, waiter, kind = queue.popleft()
            if kind:
                self.async_queued -= 1
            if waiter is not None:
                self._resolve(waiter, False, self._closed_error())

    def _ended(self) -> None:
        """The loop is over: fail what is left, wake subscribers and whoever waits to stop."""
        self._fail_pending()
        notify = self.on_settled
        if notify is not None:
            notify()
        if self.finished is not None:
            self.finished.set()


class _AsyncioActor(Actor):
    def __init__(self, name: str, committer: Committer | None = None) -> None:
        super().__init__(name, committer)
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._soon = False  # a batch is scheduled as a loop callback (see _wake)
        self._context = contextvars.copy_context()  # the task's, and the callback's

    def spawn(self) -> None:
        self._task = self._loop.create_task(self.run(), name=self.name, context=self._context)

    def _cancel(self) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _ran(self) -> None:
        assert self._task is not None
        await asyncio.wait((self._task,))

    def _raise_error(self) -> None:
        task = self._task
        assert task is not None
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def _wake(self) -> None:
        """Wake the sleeping actor. Plain writes need no task: the batch is applied by a
        loop callback (in the actor's context, while its task sleeps), which costs less
        than resuming the task; async steps, reads after a commit, a committer and closing
        wake the task itself."""
        wakeup = self._wakeup
        if wakeup is None:  # awake (or not started): it sees the queue by itself
            return
        if self.async_queued or self.closing or self.committer is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)
        elif not self._soon:
            self._soon = True
            self._loop.call_soon(self._apply_soon, context=self._context)

    def _apply_soon(self) -> None:
        """The batch callback: apply what is queued, unless the task was woken since (it
        then applies it, in order with what it was woken for) or the actor ended."""
        self._soon = False
        if self._wakeup is None or self.async_queued or self.closing or self.closed:
            return
        self._apply_batch()
        if not self.queue:
            self.state_keys.clear()

    def _sleep(self) -> Awaitable[None]:
        self._wakeup = wakeup = self._loop.create_future()
        return wakeup

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
        """The generic loop, specialised for futures: the task applies what is queued when
        it wakes (at start, after an async step); a post that finds it asleep has the batch
        applied by a loop callback instead (see :meth:`_wake`)."""
        if self.committer is not None:
            await Actor.run(self)
            return
        queue = self.queue
        create_future = self._loop.create_future
        try:
            while True:
                if not queue:
                    self.state_keys.clear()
                    if self.closing:
                        return
                    self._wakeup = wakeup = create_future()  # _sleep, inlined
                    await wakeup
                    continue
                if self.async_queued:
                    await self._drain_once()
                    continue
                self._apply_batch()
        finally:
            self._wakeup = None
            self._ended()

    def _apply_batch(self) -> None:
        """:meth:`Actor._apply_queued`, specialised for futures: the per-write hot path."""
        queue = self.queue
        popleft = queue.popleft
        self.batches += 1
        answers = []  # only awaited requests: a posted write's answer is dropped
        applied = 0
        for _ in range(len(queue)):
            fn, args, slot, _ = popleft()
            if slot is None:
                applied += 1
                try:
                    fn(*args)
                except Exception as exc:
                    _lost(self.name, exc)
                continue
            future = slot[0]
            if future.done():
                continue
            applied += 1
            try:
                answers.append((future, True, fn(*args)))
            except Exception as exc:
                answers.append((future, False, exc))
        self.applied += applied
        for future, ok, value in answers:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        notify = self.on_settled
        if notify is not None:
            notify()


class _TrioActor(Actor):
    def __init__(self, name: str, committer: Committer | None = None) -> None:
        super().__init__(name, committer)
        import trio

        self._lowlevel = trio.lowlevel
        self._sleeper: Any = None
        self._scope: Any = None  # the spawned task's cancel scope
        self._error: Exception | None = None
        self._ended_event: Any = None  # made by a join that has to wait

    def spawn(self) -> None:
        import trio

        self._scope = trio.CancelScope()
        # a system task has no nursery: ``join`` is its owner's exit, as for asyncio
        self._lowlevel.spawn_system_task(
            self._host, name=self.name, context=contextvars.copy_context()
        )

    async def _host(self) -> None:
        try:
            with self._scope:
                await self.run()
        except Exception as exc:
            self._error = exc
        finally:
            self._scope = None
            if self._ended_event is not None:
                self._ended_event.set()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _ran(self) -> None:
        if self._scope is None:  # ended (or never entered its scope: cancel it there)
            await self._lowlevel.checkpoint()
            return
        import trio

        if self._ended_event is None:
            self._ended_event = trio.Event()
        await self._ended_event.wait()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            self._lowlevel.reschedule(sleeper)

    def _sleep(self) -> Awaitable[None]:
        lowlevel = self._lowlevel
        self._sleeper = lowlevel.current_task()
        return lowlevel.wait_task_rescheduled(self._abort_sleep)  # type: ignore[no-any-return]

    def _abort_sleep(self, _: Any) -> Any:
        self._sleeper = None
        return self._lowlevel.Abort.SUCCEEDED


def _lost(name: str, exc: Exception) -> None:
    """A write queued without a waiter failed (they are validated first: a bug)."""
    logging.getLogger("kaizen_async.session").error(
        "a queued write to %s failed: %r", name, exc, exc_info=exc
    )


def create_actor(name: str, committer: Committer | None = None) -> Actor:
    """An actor for the running event loop's backend (asyncio or Trio)."""
    return _TrioActor(name, committer) if on_trio() else _AsyncioActor(name, committer)


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
