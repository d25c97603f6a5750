"""The blocking facade: same behaviour as the async objects, as plain calls."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agents import ReverseAgent
from kaizen_async import (
    EntryType,
    ErrorCode,
    KaizenValidationError,
    SessionClosedError,
    SessionReadOnlyError,
    StateKeyNotFoundError,
    sync,
)
from kaizen_async.sync import Dispatcher, Session, _LoopThread, _runtime


def test_session_round_trip(tmp_path: Path) -> None:
    with Session("sync-id") as session:
        assert session.set("k", {"a": 1}) == 1
        assert session.get("k") == {"a": 1}
        assert session.append("me", EntryType.USER_INPUT, {"q": 1}) == 3
        session.write_artifact("a.txt", b"x")
        assert session.list_artifacts() == ["a.txt"]
        assert session.state_at(0) == {}
        assert [e.seq for e in session.get_trajectory(entry_types=["user_input"])] == [3]
        with pytest.raises(KaizenValidationError):
            session.set("", 1)
        with pytest.raises(StateKeyNotFoundError):
            session.delete("nope")
        child = session.fork()
        assert child.get("k") == {"a": 1}
        child.close()
        session.save(tmp_path / "s.kaizen")
    with pytest.raises(SessionClosedError):
        session.get("k")
    loaded = Session.load(tmp_path / "s.kaizen")
    try:
        assert loaded.session_id == "sync-id"
        assert loaded.verify() == loaded.get_trajectory_length()
    finally:
        loaded.close()


def test_dispatcher_on_sync_sessions() -> None:
    with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        assert dispatcher.get_capabilities() == ["reverse"]
        session.set("text", "abc")
        result = dispatcher.dispatch_sequence(
            [
                {"capability": "reverse", "params": {"key": "text"}},
                {"capability": "reverse", "params": {"key": "nope"}},  # fails when run
            ],
            session,
            plan_id="p",
        )
        assert result.failed_at == 1
        assert result.error["error_code"] == ErrorCode.AGENT_INVALID_PARAMS.value  # type: ignore[index]
        assert session.get("text") == "cba"
        resumed = dispatcher.resume_sequence(
            [{"capability": "reverse", "params": {"key": "text"}}], session, plan_id="p"
        )
        assert resumed.results[0].result == {"resumed": True, "step_index": 0}
        parallel = dispatcher.dispatch_parallel(
            [{"capability": "reverse", "params": {"key": "text"}}] * 2, session
        )
        assert parallel.success and session.get("text") == "cba"


def test_sync_transaction_and_append_nowait() -> None:
    with Session() as session:
        with session.transaction() as tx:
            tx.append("me", EntryType.USER_INPUT, {"n": 1})
            tx.set("k", "v")
        assert tx.results == [2, 1]
        session.append_nowait("me", EntryType.SYSTEM_NOTE, {"n": 2})
        assert session.get_trajectory_length() == 4
        with pytest.raises(KaizenValidationError), session.transaction() as tx:
            tx.set("", 1)
        assert session.get_state_version() == 1


def test_sync_dispatch_stream_reads_calls_lazily() -> None:
    seen: list[str] = []
    with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        session.set("text", "abc")

        def calls() -> Iterator[dict[str, Any]]:
            for _ in range(3):
                seen.append(session.async_session._core.get("text"))
                yield {"capability": "reverse", "params": {"key": "text"}}

        result = dispatcher.dispatch_stream(calls(), session, plan_id="p")
        assert result.success and result.executed_count == 3
    assert seen == ["abc", "cba", "abc"]  # each call produced after the previous step ran


def _dead_after_gc(refs: list[weakref.ref[Any]], wait: float = 10.0) -> bool:
    """Whether every referent is gone, collecting garbage for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        gc.collect()
        if all(ref() is None for ref in refs):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_unclosed_objects_are_closed_and_reclaimed_when_collected() -> None:
    tracemalloc.start()
    try:
        Session().close()  # the loop thread and its first allocations exist before measuring
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        refs: list[weakref.ref[Any]] = []
        for n in range(400):
            session = Session()
            session.set("k", n)
            refs.append(weakref.ref(session.async_session))
        for _ in range(10):
            dispatcher = Dispatcher()
            dispatcher.register(ReverseAgent())
            refs.append(weakref.ref(dispatcher._inner))
        del session, dispatcher
        assert _dead_after_gc(refs)
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # unreclaimed, 400 sessions hold about 10 MB
    assert growth < 2_000_000, growth


def test_a_collected_session_is_closed_not_just_dropped() -> None:
    session = Session()
    session.set("k", 1)
    inner = session.async_session
    del session
    gc.collect()
    with pytest.raises(SessionClosedError):
        _runtime().call(inner.get, "k")


def test_an_object_dropped_on_the_loop_thread_is_closed_without_deadlock() -> None:
    holder = [Session()]
    ref = weakref.ref(holder[0].async_session)
    _runtime().call(holder.clear)  # the last reference goes away on the loop thread
    assert _dead_after_gc([ref])


def test_closed_property_and_double_close() -> None:
    session = Session()
    assert not session.closed
    session.close()
    session.close()
    assert session.closed
    with pytest.raises(SessionClosedError):
        session.set("k", 1)


class _Stop(BaseException):
    """A BaseException that is not an Exception, raised by code running on the loop."""


def _raise_stop() -> None:
    raise _Stop


def test_an_error_on_the_loop_is_raised_typed_in_the_calling_thread() -> None:
    errors: list[BaseException] = []
    with Session() as session:
        session.set("k", 1)

        def bad_writes() -> None:
            try:
                session.set("", 1)
            except BaseException as exc:
                errors.append(exc)
            try:
                session.delete("nope")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=bad_writes)
        thread.start()
        thread.join()
        assert [type(e) for e in errors] == [KaizenValidationError, StateKeyNotFoundError]
        assert session.get_state_version() == 1 and session.get_trajectory_length() == 2
        # not even a BaseException from code on the loop stops the loop for the others
        with pytest.raises(_Stop):
            _runtime().call(_raise_stop)
        assert session.set("k", 2) == 2


def test_writes_from_threads_keep_each_threads_order() -> None:
    n, threads = 200, 8
    versions: dict[int, list[int]] = {}
    with Session() as session:

        def writer(t: int) -> None:
            versions[t] = [session.set(f"k{t}", i) for i in range(n)]

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert all(v == sorted(v) for v in versions.values())
        assert sorted(x for v in versions.values() for x in v) == list(range(1, n * threads + 1))
        entries = session.get_trajectory(entry_types=["state_set"])
        for t in range(threads):
            written = [e.content["new_value"] for e in entries if e.content["key"] == f"k{t}"]
            assert written == list(range(n))


def test_calls_from_threads_while_the_session_closes_raise_session_closed() -> None:
    session = Session()
    outcomes: list[BaseException | None] = [None] * 4
    started = threading.Barrier(len(outcomes) + 1)

    def writer(t: int) -> None:
        started.wait()
        try:
            while True:
                session.set(f"k{t}", t)
        except BaseException as exc:
            outcomes[t] = exc

    workers = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(4)]
    for w in workers:
        w.start()
    started.wait()
    session.close()
    for w in workers:
        w.join(timeout=30)
    assert not any(w.is_alive() for w in workers)  # none hangs
    assert all(isinstance(exc, SessionClosedError) for exc in outcomes), outcomes


def test_a_loop_that_stops_answers_waiting_and_later_calls_with_session_closed() -> None:
    runtime = _LoopThread()  # a private loop: the shared one must keep running
    assert runtime.portal is not None
    blocked: list[BaseException] = []

    def wait_forever() -> None:
        try:
            runtime.call(anyio.sleep_forever)
        except BaseException as exc:
            blocked.append(exc)

    waiter = threading.Thread(target=wait_forever, daemon=True)
    waiter.start()

    def others() -> int:  # tasks on the loop beside anyio.run's main task and this call's
        return len(asyncio.all_tasks()) - 2

    while not runtime.call(others):  # until the blocked call is running on the loop
        time.sleep(0.01)
    runtime.call(runtime.portal.stop)  # the loop ends; anyio.run cancels what is left
    runtime.thread.join(timeout=30)
    waiter.join(timeout=30)
    assert not runtime.thread.is_alive() and not waiter.is_alive()
    assert [type(e) for e in blocked] == [SessionClosedError]
    with pytest.raises(SessionClosedError):
        runtime.call(lambda: None)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT goes to main"
)
def test_ctrl_c_interrupts_a_blocked_call_and_the_facade_stays_usable() -> None:
    # Python raises KeyboardInterrupt only with its own SIGINT handler installed; a shell
    # starts background jobs (CI run with `&`, say) with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_interrupts_a_blocked_call()
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_interrupts_a_blocked_call() -> None:
    with Session() as session:
        done = threading.Event()

        finished = threading.Event()

        async def long_call() -> None:
            while not done.is_set():
                await anyio.sleep(0.01)
            finished.set()

        timer = threading.Timer(
            0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
        )
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                _runtime().call(long_call)
        finally:
            done.set()
            timer.cancel()
        assert finished.wait(30)  # the interrupted call itself went on running on the loop
        assert session.set("k", 1) == 1
        assert session.get("k") == 1


def _written(entries: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.seq, e.entry_type, e.agent_id, e.content) for e in entries]


def test_posted_writes_record_what_the_async_writes_record() -> None:
    """set, delete and append skip the task per call: same results, errors and entries."""

    def script(set_: Any, delete: Any, append: Any) -> list[Any]:
        out: list[Any] = [set_("k", {"a": [1, 2]}), append("me", "user_input", {"q": 1})]
        bads: list[Callable[[], object]] = [
            lambda: set_("", 1),
            lambda: delete("nope"),
            lambda: append("", "x", 1),
        ]
        for bad in bads:
            try:
                bad()
            except Exception as exc:
                out.append(type(exc))
        out += [set_("k", 2), delete("k"), set_("j", None)]
        return out

    with Session("same") as session:
        sync_results = script(session.set, session.delete, session.append)
        sync_entries = _written(session.get_trajectory())

    async def async_run() -> tuple[list[Any], list[tuple[Any, ...]]]:
        from kaizen_async import Session as AsyncSession

        async with AsyncSession("same") as s:
            results: list[Any] = []
            results.append(await s.set("k", {"a": [1, 2]}))
            results.append(await s.append("me", "user_input", {"q": 1}))
            for bad in (s.set("", 1), s.delete("nope"), s.append("", "x", 1)):
                try:
                    await bad
                except Exception as exc:
                    results.append(type(exc))
            results += [await s.set("k", 2), await s.delete("k"), await s.set("j", None)]
            return results, _written(await s.get_trajectory())

    async_results, async_entries = anyio.run(async_run)
    assert sync_results == async_results
    assert sync_results[2:5] == [
        KaizenValidationError,
        StateKeyNotFoundError,
        KaizenValidationError,
    ]
    assert sync_entries == async_entries


def test_a_session_subclass_keeps_its_own_writes() -> None:
    from kaizen_async import Session as AsyncSession

    class Counting(AsyncSession):
        calls = 0

        async def set(self, key: str, value: Any) -> int:
            Counting.calls += 1
            return await super().set(key, value)

    with Session(_inner=Counting()) as session:
        assert session.set("k", 1) == 1
    assert Counting.calls == 1


def test_a_write_on_a_read_only_session_is_refused_typed(tmp_path: Path) -> None:
    with Session() as session:
        session.set("k", 1)
        session.save(tmp_path / "s.kaizen")
    with Session.load(tmp_path / "s.kaizen", read_only=True) as loaded:
        length = loaded.get_trajectory_length()
        with pytest.raises(SessionReadOnlyError):
            loaded.set("k", 2)
        with pytest.raises(SessionReadOnlyError):
            loaded.delete("k")
        with pytest.raises(SessionReadOnlyError):
            loaded.append("me", "user_input", {})
        assert loaded.get("k") == 1 and loaded.get_trajectory_length() == length


def test_a_posted_write_the_actor_never_applies_raises_session_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the session's actor ends with a posted write still queued (its task cancelled),
    the waiting thread is answered SessionClosedError instead of waiting forever."""
    monkeypatch.setattr(sync, "_ALIVE_CHECK_SECONDS", 0.05)
    session = Session()
    inner = session.async_session

    def cancel_actor_then_post(waiter: Any, target: Any) -> None:
        (task,) = [t for t in asyncio.all_tasks() if t.get_name() == f"session {inner.session_id}"]
        task.cancel()  # the actor ends before it takes what is posted next
        sync._post_write(waiter, target._set_write, "k", 1)

    outcome: list[BaseException] = []

    def call() -> None:
        try:
            _runtime().post(cancel_actor_then_post, (inner,), session._actor_gone)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [SessionClosedError]
    with contextlib.suppress(Exception):
        session.close()
