"""A blocking facade for scripts and notebooks: the same objects, as plain calls.

``Session`` and ``Dispatcher`` here wrap the async ones and run them on one background
asyncio event loop (in a daemon thread), so they can be used from code that is not async::

    from kaizen_async.sync import Session, Dispatcher
    from agents import ReverseAgent

    with Session() as session, Dispatcher() as dispatcher:
        session.set("text", "hello")
        dispatcher.register(ReverseAgent())
        dispatcher.dispatch_single("reverse", session, {"key": "text"})

Every object shares that loop, so a sync dispatcher can work on a sync session. Any thread
may call them; each blocking call is answered in one thread round trip (it runs as a task on
the loop, or, for ``set``, ``delete`` and ``append``, is posted straight to the session's
actor), and what it raises there is raised, as itself, in the calling thread. Ctrl-C
interrupts the wait (the call itself goes on running on the loop). Objects are started when
created and stopped by ``close()``, by leaving a ``with`` block, when they are
garbage-collected, or at interpreter exit; a call on a closed object, or once the loop has
stopped, raises SessionClosedError. Do not call these from inside a running event loop: use
the async API.
"""

from __future__ import annotations

import _thread
import asyncio
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from inspect import isawaitable
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

from ._agent import AgentProtocol
from ._dispatcher import CallLike, DispatchResult
from ._dispatcher import Dispatcher as AsyncDispatcher
from ._exceptions import SessionClosedError
from ._mailbox import MailboxStatistics
from ._session import Session as AsyncSession
from ._session import SessionStatistics
from ._state import DEFAULT_MAX_ARTIFACT_SIZE
from ._trajectory import EntryType, TrajectoryEntry
from ._types import AgentInfo, CapabilitySpec, InvokeResult
from ._verification import VerifyReport

__all__ = ["Dispatcher", "Session"]

T = TypeVar("T")


class _Waiter:
    """One blocking call's answer: a lock the loop releases once the outcome is set."""

    __slots__ = ("lock", "ok", "task", "value")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.ok = False
        self.value: Any = None
        self.task: asyncio.Task[None] | None = None


async def _serve(
    waiter: _Waiter,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Any,
    running: set[asyncio.Task[None]],
) -> None:
    """The task behind one blocking call: run ``fn`` (awaiting its result if it is
    awaitable), store the outcome in ``waiter`` and wake the caller, whatever happens.
    ``running`` holds the task until then, even if its caller stopped waiting (Ctrl-C)."""
    try:
        result = fn(*args, **kwargs)
        if isawaitable(result):
            result = await result
    except asyncio.CancelledError:  # only when the loop itself shuts down
        waiter.value = SessionClosedError("the blocking facade's event loop has stopped")
        raise
    except BaseException as exc:  # the caller's to handle; the loop goes on serving others
        waiter.value = exc
    else:
        waiter.ok, waiter.value = True, result
    finally:
        running.discard(waiter.task)
        waiter.lock.release()


def _answer(waiter: _Waiter, fn: Callable[..., Any], *args: Any) -> None:
    """A checked write posted to a session actor by a blocking call: the actor applies it
    in its turn and this answers the waiting thread at once (no task on the loop)."""
    try:
        waiter.value = fn(*args)
        waiter.ok = True
    except Exception as exc:  # a delete whose key went meanwhile
        waiter.value = exc
    finally:
        waiter.lock.release()


def _post_write(waiter: _Waiter, write: Callable[..., tuple[Any, ...]], *args: Any) -> None:
    """A write of the async session (``Session._set_write`` and its kin check it and name the
    actor's request), posted to its actor with ``waiter`` answered when it is applied."""
    actor, fn, *request = write(*args)
    actor.post(_answer, waiter, fn, *request)


class _LoopThread:
    """One asyncio event loop in a daemon thread, and the way blocking calls reach it.

    A call queues ``(waiter, fn, args, kwargs)``, wakes the loop only when no wake-up is
    pending already (so concurrent callers share one), and blocks on the waiter's lock;
    the loop starts one task per queued call, in queue order, that releases the lock when
    done. That is one thread round trip per call (AnyIO's ``BlockingPortal.call`` takes
    two, spawning the task first, with a cancel scope and a concurrent future each); the
    portal stays for the long-lived tasks that hold objects entered (:class:`_Entered`).
    A session write needs no task at all (:meth:`post`): it is checked and posted to the
    session actor, which answers the waiter when it applies it.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.portal: BlockingPortal | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[tuple[_Waiter, Callable[..., Any], tuple[Any, ...], Any]] = deque()
        self._wake_pending = False
        self._running: set[asyncio.Task[None]] = set()  # the tasks of unanswered calls
        self.thread = threading.Thread(target=self._run, name="kaizen-async-loop", daemon=True)
        self.thread.start()
        self._ready.wait()
        self._loop_ident = self.thread.ident

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        finally:
            self._fail_pending()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        async with BlockingPortal() as portal:
            self.portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a task on the loop (awaited if it returns an
        awaitable) and return its result or raise its exception, in the calling thread."""
        return self._wait(fn, args, kwargs, _never)

    def post(self, fn: Callable[..., None], args: tuple[Any, ...], gone: Callable[[], bool]) -> Any:
        """Run ``fn(waiter, *args)`` on the loop, outside any task, and wait until it (or
        what it arranged: :func:`_answer`) answers ``waiter``; what it raises is the answer.
        For the session writes that end in the session actor's queue: ``gone()`` says that
        the actor has ended, so an answer still missing will never come."""
        return self._wait(fn, args, None, gone)

    def _wait(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Any,
        gone: Callable[[], bool],
    ) -> Any:
        if _thread.get_ident() == self._loop_ident:
            raise RuntimeError("kaizen_async.sync cannot be used from its own event loop")
        waiter = _Waiter()
        self._pending.append((waiter, fn, args, kwargs))
        if not self._wake_pending:
            self._wake_pending = True
            loop = self.loop
            assert loop is not None
            try:
                loop.call_soon_threadsafe(self._start_pending)
            except RuntimeError:  # the loop is closed (interpreter shutdown)
                self._fail_pending()
        lock = waiter.lock
        while not lock.acquire(timeout=_ALIVE_CHECK_SECONDS):
            stopped = not self.thread.is_alive()
            if stopped:  # the loop stopped with this call unanswered
                self._fail_pending()
            if stopped or gone():
                if not lock.acquire(blocking=False):
                    raise SessionClosedError(
                        "the blocking facade's event loop has stopped"
                        if stopped
                        else "the session closed before applying this write"
                    )
                break
        if waiter.ok:
            return waiter.value
        error = waiter.value
        try:
            raise error
        finally:  # no cycle through the traceback
            waiter.value = error = None

    def _start_pending(self) -> None:
        """On the loop: start a task for every queued call, or run a posted one, in the
        order they came."""
        self._wake_pending = False
        pending, running = self._pending, self._running
        create_task = self.loop.create_task  # type: ignore[union-attr]
        while pending:
            waiter, fn, args, kwargs = pending.popleft()
            if kwargs is None:  # posted: fn answers the waiter itself, unless it raises
                try:
                    fn(waiter, *args)
                except BaseException as exc:
                    waiter.value = exc
                    waiter.lock.release()
                continue
            waiter.task = task = create_task(_serve(waiter, fn, args, kwargs, running))
            running.add(task)

    def _fail_pending(self) -> None:
        """Answer every queued call with SessionClosedError (the loop has stopped)."""
        pending = self._pending
        while pending:
            try:
                waiter = pending.popleft()[0]
            except IndexError:  # another thread emptied it meanwhile
                return
            waiter.value = SessionClosedError("the blocking facade's event loop has stopped")
            waiter.lock.release()


#: how often a blocked caller checks that the loop thread (or the actor) is still alive
_ALIVE_CHECK_SECONDS = 1.0


def _never() -> bool:
    return False


_lock = threading.Lock()
_loop: _LoopThread | None = None


def _runtime() -> _LoopThread:
    global _loop
    with _lock:
        if _loop is None:
            _loop = _LoopThread()
        return _loop


class _Entered:
    """One async context manager kept entered by a task on the loop until :meth:`release`.

    It holds no reference to the facade object that owns it, so that object can be
    garbage-collected; its finalizer then calls :meth:`release`.
    """

    def __init__(self, runtime: _LoopThread, manager: Any) -> None:
        self._runtime = runtime
        self._stop: anyio.Event | None = None
        entered: Future[None] = Future()
        assert runtime.portal is not None
        if threading.current_thread() is runtime.thread:
            raise RuntimeError("kaizen_async.sync cannot be used from its own event loop")
        self._done = runtime.portal.start_task_soon(self._hold, manager, entered)
        entered.result()

    async def _hold(self, manager: Any, entered: Future[None]) -> None:
        self._stop = anyio.Event()
        try:
            await manager.__aenter__()
        except BaseException as exc:
            entered.set_exception(exc)
            return
        entered.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await manager.__aexit__(None, None, None)

    def release(self) -> None:
        """Exit the manager on the loop and wait for it to finish.

        On the loop thread itself (a garbage collection that ran there) waiting would
        deadlock, so a short-lived thread does the release instead.
        """
        if threading.current_thread() is self._runtime.thread:
            threading.Thread(target=self.release, name="kaizen-async-release", daemon=True).start()
            return
        portal = self._runtime.portal
        assert portal is not None and self._stop is not None
        try:
            portal.call(self._stop.set)
        except RuntimeError:  # the loop has stopped (interpreter shutdown): nothing runs
            return
        self._done.result()


class _Resource:
    """An async context manager entered on the shared loop until ``close()``.

    An object never closed is closed when it is garbage-collected (or at interpreter
    exit), so forgotten sessions and dispatchers do not accumulate on the loop.
    """

    def __init__(self, inner: Any) -> None:
        self._runtime = _runtime()
        self._inner = inner
        self._closer = weakref.finalize(self, _Entered(self._runtime, inner).release)

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run a coroutine function on the loop and wait for its result."""
        return cast(T, self._call_sync(fn, *args, **kwargs))

    def _call_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function on the loop thread (it may start tasks there)."""
        if not self._closer.alive:
            raise SessionClosedError(f"{type(self).__name__} is closed")
        return self._runtime.call(fn, *args, **kwargs)  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran (explicitly, by a ``with`` block, or at exit)."""
        return not self._closer.alive

    def close(self) -> None:
        """Stop it (drains queued work); later calls raise SessionClosedError."""
        self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Session(_Resource):
    """Blocking twin of :class:`kaizen_async.Session` (same methods, plain calls)."""

    _inner: AsyncSession

    def __init__(
        self,
        session_id: str | None = None,
        *,
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        workspace_path: str | os.PathLike[str] | None = None,
        _inner: AsyncSession | None = None,
    ) -> None:
        super().__init__(
            _inner
            or AsyncSession(
                session_id, max_artifact_size=max_artifact_size, workspace_path=workspace_path
            )
        )
        actor = self._inner._actor
        # set, delete and append are posted to the session actor (no task per call) on a
        # plain session; a subclass's (or a store's: answered once committed) are awaited
        self._direct_writes = (
            type(self._inner) is AsyncSession and actor is not None and actor.committer is None
        )

    def _post_write(self, write: Callable[..., tuple[Any, ...]], *args: Any) -> Any:
        """Post a checked write to the session actor (see :meth:`_LoopThread.post`)."""
        if not self._closer.alive:
            raise SessionClosedError(f"{type(self).__name__} is closed")
        return self._runtime.post(_post_write, (write, *args), self._actor_gone)

    def _actor_gone(self) -> bool:
        """Whether the session actor has ended (a posted write it dropped is never answered)."""
        actor = self._inner._actor
        return actor is None or actor.closed

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, read_only: bool = False) -> Session:
        """Load and verify a ``.kaizen`` file (see :meth:`kaizen_async.Session.load`)."""
        return cls(_inner=AsyncSession.load(path, read_only=read_only))

    @property
    def async_session(self) -> AsyncSession:
        """The async session underneath (for code running on the facade's loop)."""
        return self._inner

    @property
    def session_id(self) -> str:
        return self._inner.session_id

    @property
    def max_artifact_size(self) -> int:
        return self._inner.max_artifact_size

    @property
    def workspace_path(self) -> str | None:
        return self._inner.workspace_path

    @property
    def read_only(self) -> bool:
        return self._inner.read_only

    def workspace_file(self, *parts: str) -> Any:
        return self._inner.workspace_file(*parts)

    def statistics(self) -> SessionStatistics:
        return self._inner.statistics()

    def set(self, key: str, value: Any) -> int:
        if self._direct_writes:
            return self._post_write(self._inner._set_write, key, value)  # type: ignore[no-any-return]
        return self._call(self._inner.set, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return self._call(self._inner.get, key, default)

    def delete(self, key: str) -> int:
        if self._direct_writes:
            return self._post_write(self._inner._delete_write, key)  # type: ignore[no-any-return]
        return self._call(self._inner.delete, key)

    def get_state_version(self) -> int:
        return self._call(self._inner.get_state_version)

    def get_all_state(self) -> dict[str, Any]:
        return self._call(self._inner.get_all_state)

    def state_at(self, version: int) -> dict[str, Any]:
        return self._call(self._inner.state_at, version)

    def append(self, agent_id: str, entry_type: EntryType | str, content: Any) -> int:
        if self._direct_writes:
            return self._post_write(  # type: ignore[no-any-return]
                self._inner._append_write, agent_id, entry_type, content
            )
        return self._call(self._inner.append, agent_id, entry_type, content)

    def get_trajectory(
        self,
        limit: int | None = None,
        *,
        entry_types: Iterable[EntryType | str] | None = None,
        agent_id: str | None = None,
        since_seq: int | None = None,
    ) -> list[TrajectoryEntry]:
        return self._call(
            self._inner.get_trajectory,
            limit,
            entry_types=None if entry_types is None else list(entry_types),
            agent_id=agent_id,
            since_seq=since_seq,
        )

    def append_nowait(self, agent_id: str, entry_type: EntryType | str, content: Any) -> None:
        """Validate an append now and queue it (see the async method)."""
        self._call_sync(self._inner.append_nowait, agent_id, entry_type, content)

    @contextmanager
    def transaction(self) -> Iterator[_SyncTransaction]:
        """Collect writes; leaving the block applies them in one message, all or none."""
        tx = _SyncTransaction()
        yield tx
        tx.results = self._call(self._apply, tx.ops)

    async def _apply(self, ops: list[tuple[str, tuple[Any, ...]]]) -> list[int] | None:
        async with self._inner.transaction() as tx:
            for name, args in ops:
                getattr(tx, name)(*args)
        return tx.results

    def get_trajectory_length(self) -> int:
        return self._call(self._inner.get_trajectory_length)

    def verify(self, **checks: Any) -> VerifyReport:
        """See :meth:`kaizen_async.Session.verify` (the same keyword options)."""
        return self._call(self._inner.verify, **checks)

    def write_artifact(self, name: str, data: bytes) -> int:
        return self._call(self._inner.write_artifact, name, data)

    def read_artifact(self, name: str) -> bytes:
        return self._call(self._inner.read_artifact, name)

    def list_artifacts(self) -> list[str]:
        return self._call(self._inner.list_artifacts)

    def get_artifact_size(self, name: str) -> int:
        return self._call(self._inner.get_artifact_size, name)

    def delete_artifact(self, name: str) -> int:
        return self._call(self._inner.delete_artifact, name)

    def snapshot_for_agent(self, agent_id: str, depth: int = 10) -> dict[str, Any]:
        return self._call(self._inner.snapshot_for_agent, agent_id, depth)

    def fork(self, at_seq: int | None = None, session_id: str | None = None) -> Session:
        """A new, started session (see :meth:`kaizen_async.Session.fork`)."""
        child = self._call(self._inner.fork, at_seq, session_id)
        return Session(_inner=child)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        return self._call(self._inner.save, path, overwrite=overwrite)

    def __repr__(self) -> str:
        return f"sync.{self._inner!r}"


class _SyncTransaction:
    """The writes of a blocking ``transaction()``, applied when its block ends."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, tuple[Any, ...]]] = []
        self.results: list[int] | None = None

    def set(self, key: str, value: Any) -> None:
        self.ops.append(("set", (key, value)))

    def delete(self, key: str) -> None:
        self.ops.append(("delete", (key,)))

    def append(self, agent_id: str, entry_type: EntryType | str, content: Any) -> None:
        self.ops.append(("append", (agent_id, entry_type, content)))

    def write_artifact(self, name: str, data: bytes) -> None:
        self.ops.append(("write_artifact", (name, data)))

    def delete_artifact(self, name: str) -> None:
        self.ops.append(("delete_artifact", (name,)))


class Dispatcher(_Resource):
    """Blocking twin of :class:`kaizen_async.Dispatcher` working on sync sessions."""

    _inner: AsyncDispatcher

    def __init__(self, *, mailbox_size: int = 64, max_concurrency: int = 1) -> None:
        super().__init__(
            AsyncDispatcher(mailbox_size=mailbox_size, max_concurrency=max_concurrency)
        )

    def register(
        self,
        agent: AgentProtocol,
        *,
        mailbox_size: int | None = None,
        max_concurrency: int | None = None,
    ) -> AgentInfo:
        return self._call_sync(
            self._inner.register, agent, mailbox_size=mailbox_size, max_concurrency=max_concurrency
        )

    def unregister(self, agent_id: str) -> bool:
        return self._call_sync(self._inner.unregister, agent_id)

    def get_capabilities(self) -> list[str]:
        return self._inner.get_capabilities()

    def has_capability(self, name: str) -> bool:
        return self._inner.has_capability(name)

    def get_registered_agents(self) -> list[AgentInfo]:
        return self._inner.get_registered_agents()

    def get_agent_for_capability(self, name: str) -> AgentProtocol | None:
        return self._inner.get_agent_for_capability(name)

    def capability_specs(self) -> list[CapabilitySpec]:
        return self._inner.capability_specs()

    def __repr__(self) -> str:
        return f"sync.{self._inner!r}"

    def statistics(self, agent_id: str) -> MailboxStatistics:
        return self._inner.statistics(agent_id)

    def dispatch_single(
        self,
        capability: str,
        session: Session,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        plan_id: str | None = None,
    ) -> InvokeResult:
        return self._call(
            self._inner.dispatch_single,
            capability,
            session.async_session,
            params,
            timeout=timeout,
            plan_id=plan_id,
        )

    def dispatch_sequence(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        return self._call(
            self._inner.dispatch_sequence,
            list(calls),
            session.async_session,
            plan_id=plan_id,
            timeout=timeout,
        )

    def resume_sequence(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        plan_id: str,
        timeout: float | None = None,
    ) -> DispatchResult:
        return self._call(
            self._inner.resume_sequence,
            list(calls),
            session.async_session,
            plan_id=plan_id,
            timeout=timeout,
        )

    def dispatch_parallel(
        self,
        calls: Sequence[CallLike],
        session: Session,
        *,
        max_concurrency: int = 8,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        return self._call(
            self._inner.dispatch_parallel,
            list(calls),
            session.async_session,
            max_concurrency=max_concurrency,
            plan_id=plan_id,
            timeout=timeout,
        )

    def dispatch_stream(
        self,
        calls: Iterable[CallLike],
        session: Session,
        *,
        plan_id: str | None = None,
        timeout: float | None = None,
    ) -> DispatchResult:
        """Run calls in order as the iterable produces them (it is read on the facade's
        loop thread, one call at a time, each only after the previous step ran)."""

        async def produce() -> AsyncIterator[CallLike]:
            for call in calls:
                yield call

        return self._call(
            self._inner.dispatch_stream,
            produce(),
            session.async_session,
            plan_id=plan_id,
            timeout=timeout,
        )
