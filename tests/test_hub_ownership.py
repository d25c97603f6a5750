"""Several hubs on one store (each stands for a process): ownership, leases, takeovers,
fencing, and subscriptions to sessions another hub owns.

Every test runs on SQLite (two stores on one file) and PostgreSQL (two stores on one
schema), on asyncio and Trio.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from kaizen_async import (
    EntryType,
    ErrorCode,
    KaizenValidationError,
    SessionBusyError,
    SessionFencedError,
    SessionHub,
    TrajectoryEntry,
)
from kaizen_async._durable import DurableSession
from kaizen_async._state import SessionCore
from kaizen_async._storage import SessionStore
from kaizen_async._trajectory import SEQ
from kaizen_async.stores import MemoryStore, PostgresStore, SQLiteStore

pytestmark = pytest.mark.anyio

Make = Callable[[], SessionStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    """Unentered stores over one backing: one per hub."""
    if request.param == "sqlite":
        path = tmp_path / "shared.db"
        return lambda: SQLiteStore(path, poll_interval=0.02)
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds (a bound only against hanging, not a timing test)."""
    with anyio.fail_after(10):
        while not predicate():
            await anyio.sleep(0.005)


async def test_a_session_another_live_hub_owns_is_busy(make: Make) -> None:
    async with (
        SessionHub(make(), owner="hub-a") as a,
        SessionHub(make(), owner="hub-b") as b,
        a.open("s", create=True) as session,
    ):
        await session.set("k", "a")
        with pytest.raises(SessionBusyError) as caught:
            async with b.open("s"):
                pass
        assert caught.value.code is ErrorCode.SESSION_BUSY
        assert caught.value.details["owner"] == "hub-a"
        assert await session.get("k") == "a"  # the owner is untouched


async def test_take_over_fences_the_previous_owner(make: Make) -> None:
    async with SessionHub(make(), owner="hub-a") as a, SessionHub(make(), owner="hub-b") as b:
        async with a.open("s", create=True) as old:
            await old.set("k", "a")
            async with b.open("s", take_over=True) as new:
                assert await new.get("k") == "a"  # everything committed before the takeover
                await new.set("k", "b")
                with pytest.raises(SessionFencedError) as caught:
                    await old.set("k", "a again")
                assert caught.value.code is ErrorCode.SESSION_FENCED
                with pytest.raises(SessionFencedError):  # its copy is closed
                    await old.set("other", 1)
                await new.set("k2", "b2")
                assert await new.get_all_state() == {"k": "b", "k2": "b2"}
        history = await b.store.read("s")
        replayed = SessionCore.replay(history, session_id="s")  # one chain, no seq twice
        assert replayed.state == {"k": b'"b"', "k2": b'"b2"'}
        assert [r[SEQ] for r in history] == list(range(1, len(history) + 1))


async def test_an_expired_lease_is_taken_over_and_the_paused_owner_fenced(make: Make) -> None:
    async with (
        SessionHub(make(), owner="hub-a", lease_seconds=0.3) as a,
        SessionHub(make(), owner="hub-b", lease_seconds=0.3) as b,
        a.open("s", create=True) as old,
    ):
        await old.set("k", "a")
        a._renewer.cancel()  # hub-a stops renewing, as a paused process would
        with pytest.raises(SessionBusyError):  # its lease still runs
            async with b.open("s"):
                pass
        await anyio.sleep(0.4)
        async with b.open("s") as new:  # expired: taken over
            await new.set("k", "b")
            with pytest.raises(SessionFencedError):  # hub-a resumes: fenced
                await old.set("k", "a again")
            assert await new.get("k") == "b"


async def test_a_renewal_that_finds_the_session_taken_closes_the_copy(make: Make) -> None:
    async with (
        SessionHub(make(), owner="hub-a", lease_seconds=0.3) as a,
        SessionHub(make(), owner="hub-b") as b,
        a.open("s", create=True) as old,
        b.open("s", take_over=True),
    ):
        durable = old
        assert isinstance(durable, DurableSession)
        await wait_until(lambda: not durable._is_usable())  # the next renewal
        with pytest.raises(SessionFencedError):
            await old.set("k", 1)


async def test_closing_a_hub_releases_its_sessions(make: Make) -> None:
    async with SessionHub(make(), owner="hub-a") as a, a.open("s", create=True) as session:
        await session.set("k", 1)
    async with SessionHub(make(), owner="hub-b") as b, b.open("s") as session:
        assert await session.get("k") == 1  # at once, though hub-a's lease was 30 s


async def test_subscribe_follows_another_hubs_session_across_a_takeover(make: Make) -> None:
    seen: list[TrajectoryEntry] = []
    async with (
        SessionHub(make(), owner="hub-a") as a,
        SessionHub(make(), owner="hub-b") as b,
        SessionHub(make(), owner="watcher") as watcher,
    ):
        await a.create("s")

        async def follow() -> None:
            async for entry in watcher.subscribe("s", since_seq=0):
                seen.append(entry)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            async with a.open("s") as old:
                for i in range(5):
                    await old.append("a", EntryType.USER_INPUT, {"i": i})
                async with b.open("s", take_over=True) as new:
                    for i in range(5, 10):
                        await new.append("b", EntryType.USER_INPUT, {"i": i})
            await wait_until(lambda: len(seen) == 11)
            tg.cancel_scope.cancel()
        assert watcher.statistics().open == 0  # it followed the store, owning nothing
    assert [e.seq for e in seen] == list(range(1, 12))  # in order, no gap, no duplicate
    assert [e.content["i"] for e in seen[1:]] == list(range(10))


async def test_hub_arguments_are_checked() -> None:
    for kwargs in ({"lease_seconds": 0}, {"lease_seconds": -1}, {"owner": ""}, {"owner": "a\nb"}):
        with pytest.raises(KaizenValidationError):
            SessionHub(MemoryStore(), **kwargs)
    assert SessionHub(MemoryStore(), owner="me").owner == "me"


async def test_a_dead_process_of_this_machine_is_taken_over_at_once(make: Make) -> None:
    """A restarted server does not wait out its predecessor's lease: a default owner id
    names this machine and the process, and a process that has exited holds nothing."""
    from kaizen_async._hub import _LOCAL

    child = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    dead = f"{_LOCAL}:{int(child.stdout)}:deadbeef"
    alive = f"{_LOCAL}:{os.getppid()}:cafe0123"
    async with SessionHub(make(), owner="creator") as hub:
        await hub.create("gone")
        await hub.create("here")
        await hub.store.acquire("gone", dead, lease_seconds=600)
        await hub.store.acquire("here", alive, lease_seconds=600)
        async with hub.open("gone") as session:  # at once, though the lease runs 600 s
            await session.set("k", 1)
        with pytest.raises(SessionBusyError):  # that process lives: its lease holds
            async with hub.open("here"):
                pass
        await hub.create("far")
        await hub.store.acquire("far", "elsewhere/0/0:12345:deadbeef", lease_seconds=600)
        with pytest.raises(SessionBusyError):  # another machine's process: no way to tell
            async with hub.open("far"):
                pass


async def test_signed_checkpoints_carry_the_owners_epoch(tmp_path: Path) -> None:
    """A signing SQLite store records the epoch each checkpointed head was written under."""
    from kaizen_async.signing import Ed25519Signer

    signer = Ed25519Signer.generate()
    path = tmp_path / "signed.db"
    async with (
        SessionHub(SQLiteStore(path, signer=signer), owner="hub-a") as a,
        a.open("s", create=True) as session,
    ):
        await session.set("k", 1)
    async with SessionHub(SQLiteStore(path, signer=signer), owner="hub-b") as b:
        async with b.open("s") as session:
            await session.set("k", 2)
        store = b.store
        assert isinstance(store, SQLiteStore)
        epochs = [c.epoch for c in await store.read_checkpoints("s")]
    assert epochs[-1] == 2 and epochs == sorted(epochs)  # the head hub-b wrote: its epoch
