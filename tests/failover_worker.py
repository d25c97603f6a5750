"""A worker process of the failover tests (tests/test_failover.py): one of several owners
of the sessions in one store, each serving the sessions routed to it by id.

Run as ``python failover_worker.py STORE INDEX WORKERS LEASE BACKEND GO SID...`` where
STORE is ``sqlite:PATH`` or ``postgres:SCHEMA:DSN``. The worker acquires the sessions routed
to it (``index(sid) % WORKERS == INDEX``), renews its leases every third of a lease, and
keeps committing to each session it owns; once the file GO exists (the test creates it
when every worker serves its own) it also tries, every half lease, to acquire the others
(which succeeds only once their owner's lease has expired: the owner died or was paused).
Each record it writes carries its owner id and epoch.

It prints one line per event, flushed, to standard output:
``ack SID SEQ HASH`` (a commit acknowledged), ``own SID EPOCH`` (acquired),
``fenced SID`` (a commit refused: the session was taken over), ``lost SID`` (a renewal
found it taken over). It runs until killed (SIGKILL, or SIGTERM: a clean stop).
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any

import anyio

from kaizen_async import PersistError, SessionBusyError, SessionFencedError
from kaizen_async._state import SessionCore
from kaizen_async._storage import Batch, SessionStore
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
    def __init__(self, store: SessionStore, index: int, workers: int, lease: float) -> None:
        self.store = store
        self.index = index
        self.workers = workers
        self.lease = lease
        self.owner = f"worker{index}-{os.getpid()}"
        self.epochs: dict[str, int] = {}  # sessions owned now -> epoch
        self.scopes: dict[str, anyio.CancelScope] = {}
        self.rng = random.Random(index)

    def routed(self, sid: str) -> bool:
        return int(sid.removeprefix("s")) % self.workers == self.index

    async def take(self, tg: anyio.abc.TaskGroup, sid: str) -> None:
        if sid in self.epochs:
            return
        try:
            ownership = await self.store.acquire(sid, self.owner, lease_seconds=self.lease)
        except (SessionBusyError, PersistError):
            return
        self.epochs[sid] = ownership.epoch
        say("own", sid, ownership.epoch)
        tg.start_soon(self.write, sid, ownership.epoch)

    async def write(self, sid: str, epoch: int) -> None:
        """Commit to ``sid`` steadily under ``epoch`` until fenced or lost."""
        with anyio.CancelScope() as scope:
            self.scopes[sid] = scope
            try:
                core = SessionCore.replay(await self.store.read(sid), session_id=sid)
                while True:
                    base = len(core.records)
                    core.append(
                        self.owner,
                        "system_note",
                        {"owner": self.owner, "epoch": epoch, "n": base + 1},
                    )
                    batch = Batch(sid, base, core.records[base:], core.version, epoch=epoch)
                    try:
                        await self.store.commit(batch)
                    except SessionFencedError:
                        say("fenced", sid)
                        return
                    say("ack", sid, len(core.records), core.records[-1].hash)
                    await anyio.sleep(self.rng.uniform(0.002, 0.02))
            except PersistError as exc:  # the store failed: give the session up
                say("error", sid, exc.code)
            finally:
                if self.scopes.get(sid) is scope:
                    del self.scopes[sid]
                if self.epochs.get(sid) == epoch:
                    del self.epochs[sid]

    async def renew(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            claims = dict(self.epochs)
            try:
                kept = await self.store.renew(self.owner, claims, lease_seconds=self.lease)
            except PersistError:
                continue
            for sid, epoch in claims.items():
                if sid not in kept and self.epochs.get(sid) == epoch:
                    say("lost", sid)
                    del self.epochs[sid]
                    scope = self.scopes.get(sid)
                    if scope is not None:
                        scope.cancel()

    async def run(self, sids: list[str], go: anyio.Path) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.renew)
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
    async with open_store(spec) as store:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:

                async def stop() -> None:
                    async for _ in signals:
                        tg.cancel_scope.cancel()

                tg.start_soon(stop)
                await Worker(store, int(index), int(workers), float(lease)).run(
                    sids, anyio.Path(go)
                )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:], backend=sys.argv[5])
