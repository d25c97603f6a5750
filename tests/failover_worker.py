"""A worker process of the failover tests (tests/test_failover.py): a SessionHub, one of
several on one store, serving the sessions routed to it by id.

Run as ``python failover_worker.py STORE INDEX WORKERS LEASE BACKEND GO SID...`` where
STORE is ``sqlite:PATH`` or ``postgres:SCHEMA:DSN``. The worker acquires the sessions routed
to it (``index(sid) % WORKERS == INDEX``: ``hub.open``; the hub renews its leases every
third of a lease) and keeps appending to each; once the file GO exists (the test creates
it when every worker serves its own) it also tries, every half lease, to open the others
(which succeeds only once their owner's lease has expired: the owner died or was paused).
Each entry it writes carries its owner id, epoch and a counter.

It prints one line per event, flushed, to standard output:
``ack SID SEQ OWNER/EPOCH/N`` (an append acknowledged), ``own SID EPOCH`` (opened),
``fenced SID`` (a write refused: another hub took the session over). It runs until
killed (SIGKILL, or SIGTERM: a clean stop).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any

import anyio

from kaizen_async import (
    EntryType,
    PersistError,
    Session,
    SessionBusyError,
    SessionClosedError,
    SessionFencedError,
    SessionHub,
    SessionLease,
)
from kaizen_async._storage import SessionStore
from kaizen_async.stores import PostgresStore, SQLiteStore


def open_store(spec: str) -> SessionStore:
    kind, _, rest = spec.partition(":")
    if kind == "sqlite":
        return SQLiteStore(rest)
    schema, _, dsn = rest.partition(":")
    return PostgresStore(dsn, schema=schema)


def say(*parts: Any) -> None:
    print(*parts, flush=True)


class Worker:
    def __init__(self, hub: SessionHub, index: int, workers: int, lease: float) -> None:
        self.hub = hub
        self.index = index
        self.workers = workers
        self.lease = lease
        self.owner = hub.owner
        self.serving: set[str] = set()
        self.rng = random.Random(index)

    def routed(self, sid: str) -> bool:
        return int(sid.removeprefix("s")) % self.workers == self.index

    async def take(self, tg: anyio.abc.TaskGroup, sid: str) -> None:
        if sid in self.serving:
            return
        lease = self.hub.open(sid)
        try:
            session = await lease.acquire()
        except (SessionBusyError, PersistError):
            return
        epoch = self.hub._slots[sid].epoch  # the test records it in every entry
        assert epoch is not None
        self.serving.add(sid)
        say("own", sid, epoch)
        tg.start_soon(self.write, sid, lease, session, epoch)

    async def write(self, sid: str, lease: SessionLease, session: Session, epoch: int) -> None:
        """Append to ``sid`` steadily (each append returns once committed) until fenced."""
        try:
            n = 0
            while True:
                n += 1
                token = {"owner": self.owner, "epoch": epoch, "n": n}
                seq = await session.append(self.owner, EntryType.SYSTEM_NOTE, token)
                say("ack", sid, seq, f"{self.owner}/{epoch}/{n}")
                await anyio.sleep(self.rng.uniform(0.002, 0.02))
        except SessionFencedError:
            say("fenced", sid)
        except (SessionClosedError, PersistError) as exc:
            say("error", sid, getattr(exc, "code", "closed"))
        finally:
            lease.release()
            self.serving.discard(sid)

    async def run(self, sids: list[str], go: anyio.Path) -> None:
        async with anyio.create_task_group() as tg:
            for sid in sids:
                if self.routed(sid):
                    await self.take(tg, sid)
            say("ready")
            while not await go.exists():
                await anyio.sleep(0.05)
            while True:  # take over the sessions whose owner's lease has expired
                for sid in sids:
                    await self.take(tg, sid)
                await anyio.sleep(self.lease / 2)


async def main(argv: list[str]) -> None:
    spec, index, workers, lease, _backend, go, *sids = argv
    async with SessionHub(
        open_store(spec), owner=f"worker{index}-{os.getpid()}", lease_seconds=float(lease)
    ) as hub:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def stop() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()

                tg.start_soon(stop)
                await Worker(hub, int(index), int(workers), float(lease)).run(sids, anyio.Path(go))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:], backend=sys.argv[5])
