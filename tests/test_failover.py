"""Failover for real: worker processes, each a SessionHub on one store (PostgreSQL, or one
SQLite file), serve the sessions routed to them by id under steady load
(tests/failover_worker.py).

One worker is SIGKILLed mid-write; once its lease has expired the others take its sessions
over. Another is SIGSTOPped past its lease, then resumed: it is fenced, and nothing it had
acquired before the pause is written after it. At the end every acknowledged write is in
the store exactly once, at its seq with its hash; every history verifies; and along every
history the writers' epochs never go back (no stale owner wrote after a takeover).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import orjson
import pytest

from kaizen_async._state import SessionCore
from kaizen_async._storage import Batch, SessionStore
from kaizen_async._trajectory import CONTENT, ENTRY_TYPE, Record
from kaizen_async.stores import PostgresStore, SQLiteStore

TESTS = Path(__file__).resolve().parent
WORKERS = 5
SESSIONS = [f"s{i}" for i in range(15)]
LEASE = 1.0

T = TypeVar("T")
Make = Callable[[], SessionStore]
Histories = dict[str, list[Record]]


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[str]
    lines: list[tuple[float, list[str]]] = field(default_factory=list)

    def events(self, kind: str, after: float = 0.0) -> list[list[str]]:
        return [parts[1:] for at, parts in list(self.lines) if parts[0] == kind and at >= after]


def _start(spec: str, go: Path) -> list[Worker]:
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    workers = []
    for index in range(WORKERS):
        backend = "trio" if index % 2 else "asyncio"
        process = subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "failover_worker.py"),
                spec,
                str(index),
                str(WORKERS),
                str(LEASE),
                backend,
                str(go),
                *SESSIONS,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        worker = Worker(index, process)

        def read(worker: Worker = worker) -> None:
            assert worker.process.stdout is not None
            for line in worker.process.stdout:
                if line.endswith("\n"):  # a line a kill cut short was never acknowledged
                    worker.lines.append((time.monotonic(), line.split()))

        threading.Thread(target=read, daemon=True).start()
        workers.append(worker)
    return workers


def _wait(
    condition: Callable[[], bool], what: str, workers: list[Worker], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for worker in workers:  # a worker that died by itself: say why at once
            if worker.process.returncode is None and worker.process.poll() not in (None, -9):
                stderr = worker.process.stderr.read() if worker.process.stderr else ""
                raise AssertionError(f"worker {worker.index} exited: {stderr[-3000:]}")
        if time.monotonic() > deadline:
            states = [
                (w.index, w.process.poll(), len(w.lines), w.lines[-1:] if w.lines else None)
                for w in workers
            ]
            raise AssertionError(f"timed out waiting for {what}: {states}")
        time.sleep(0.05)


def _run(fn: Callable[[Make], Awaitable[T]], make: Make) -> T:
    return anyio.run(fn, make)


async def _create(make: Make) -> None:
    async with make() as store:
        for sid in SESSIONS:
            core = SessionCore(sid)
            await store.create(
                Batch(sid, 0, list(core.records), 0), max_artifact_size=1024, workspace_path=None
            )


async def _histories(make: Make) -> Histories:
    async with make() as store:
        return {sid: await store.read(sid) for sid in SESSIONS}


def _writer(record: Record) -> tuple[str, int] | None:
    """The owner and epoch a worker wrote into a record (None for session_created)."""
    if record[ENTRY_TYPE] != "system_note":
        return None
    content = orjson.loads(record[CONTENT])
    return content["owner"], content["epoch"]


def _failover(make: Make, spec: str, go: Path, *, strict_pause: bool) -> dict[str, int]:
    _run(_create, make)
    workers = _start(spec, go)
    try:
        _wait(
            lambda: all(w.events("ready") and w.events("ack") for w in workers),
            "every worker to serve its sessions",
            workers,
        )
        go.touch()  # from now on, each worker takes over sessions whose lease expired
        time.sleep(1.0)  # steady load
        victim, paused = workers[0], workers[-1]
        victim.process.send_signal(signal.SIGKILL)
        paused.process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        paused_owned = {sid: int(epoch) for sid, epoch in paused.events("own")}
        victim_owned = {sid for sid, _ in victim.events("own")}
        assert victim_owned and paused_owned
        gone = victim_owned | set(paused_owned)
        if strict_pause:  # the paused worker holds nothing: the others take over meanwhile

            def taken_over() -> bool:
                taken = {sid for w in workers[1:-1] for sid, _ in w.events("own", stopped_at)}
                return gone <= taken

            _wait(
                taken_over,
                "the others to take the sessions of the dead and the paused over",
                workers,
            )
            time.sleep(0.5)  # the new owners write a while
        else:  # SQLite: a worker paused inside a commit holds the file's write lock, and
            # every writer waits until it resumes; the takeover follows its resumption
            time.sleep(3 * LEASE)
        before = _run(_histories, make)
        paused.process.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        if not strict_pause:  # with SQLite every lease may have lapsed while the paused
            # worker held the lock: whoever wins a session once it resumes (the resumed
            # worker too, even under its old epoch when no one else took it) serves it again

            def served_again() -> bool:
                served = {sid for w in workers[1:] for sid, *_ in w.events("ack", after=resumed_at)}
                return gone <= served

            _wait(served_again, "the sessions of the dead and the paused to be served", workers)

        def lost() -> set[str]:
            """The paused worker's sessions that another worker owned after the pause."""
            others_owned = {
                sid for w in workers[1:-1] for sid, _ in w.events("own", after=stopped_at)
            }
            return others_owned & set(paused_owned)

        _wait(
            lambda: lost() <= {sid for (sid,) in paused.events("fenced", resumed_at)},
            "the resumed worker to find itself fenced on every session taken from it",
            workers,
        )
        assert not strict_pause or lost() == set(paused_owned)
        time.sleep(1.0)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
    for worker in workers[1:]:
        assert worker.process.returncode in (0, -signal.SIGTERM), (
            worker.process.stderr.read() if worker.process.stderr else ""
        )
    after = _run(_histories, make)

    acked: dict[str, dict[int, str]] = defaultdict(dict)
    for worker in workers:
        for sid, seq_text, token in worker.events("ack"):
            assert acked[sid].setdefault(int(seq_text), token) == token, "seq acked twice"
    for sid in SESSIONS:
        history = after[sid]
        SessionCore.replay(history, session_id=sid)  # every chain verifies
        for seq, token in acked[sid].items():  # every acknowledged write, exactly there
            content = orjson.loads(history[seq - 1][CONTENT])
            assert f"{content['owner']}/{content['epoch']}/{content['n']}" == token
        epochs = [w[1] for w in map(_writer, history) if w is not None]
        assert epochs == sorted(epochs), f"{sid}: a stale owner wrote after a takeover"
    # the paused worker wrote nothing under the epochs it held before its pause once resumed,
    # on the sessions taken from it (with SQLite a commit it had under way when paused may
    # complete: it held the lock, so no one could take the session over before it did; and a
    # session no one else took meanwhile it may go on serving under its old epoch)
    taken = lost()
    old = {(sid, epoch) for sid, epoch in paused_owned.items() if sid in taken}

    def stale(histories: Histories) -> int:
        return sum(
            1
            for sid, history in histories.items()
            for record in history
            if (w := _writer(record)) is not None
            and w[0].startswith(f"worker{paused.index}-")
            and (sid, w[1]) in old
        )

    if strict_pause:
        assert stale(after) == stale(before)
    else:
        assert stale(after) - stale(before) <= len(taken)
    counts = {
        "acknowledged": sum(len(v) for v in acked.values()),
        "entries": sum(len(h) for h in after.values()),
        "taken_over": len(gone),
        "fenced": len(paused.events("fenced")),
        "lost_by_the_paused": len(taken),
    }
    print(f"failover counts: {counts}")
    return counts


@pytest.mark.postgres
def test_failover_on_postgres(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    _failover(
        lambda: PostgresStore(postgres_dsn, schema=pg_schema),
        f"postgres:{pg_schema}:{postgres_dsn}",
        tmp_path / "go",
        strict_pause=True,
    )


def test_failover_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    _failover(lambda: SQLiteStore(path), f"sqlite:{path}", tmp_path / "go", strict_pause=False)
