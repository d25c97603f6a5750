"""PostgresStore's own rules (the contract itself runs in test_stores.py on every store):
group commit, its schema and migrations, validated reads, text PostgreSQL cannot hold as
``text``, and faults during commits: a dropped connection, a restarted server.

Each test uses a schema of its own (``pg_schema``) on the test server (tests/pgserver.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import pytest
from pgserver import PgServer
from test_stores import Driver, assert_matches, created

from kaizen_async import (
    ErrorCode,
    KaizenValidationError,
    PersistError,
    SchemaMismatchError,
    SessionCorruptedError,
)
from kaizen_async._state import SessionCore
from kaizen_async._trajectory import AGENT_ID
from kaizen_async.stores import PostgresStore, _postgres_schema

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
async def store(postgres_dsn: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(postgres_dsn, schema=pg_schema) as entered:
        yield entered


async def _sql(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    """Run ``fn`` on a connection of its own, on a private asyncio loop (any backend)."""

    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return await anyio.to_thread.run_sync(asyncio.run, run())


class Gate:
    """Holds the writer before its next statement until released (the hook runs on the
    store's driver loop, in whichever thread that is)."""

    def __init__(self, store: PostgresStore) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        store._writer_hook = self._hook

    async def _hook(self, conn: asyncpg.Connection) -> None:
        self.entered.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait)

    async def wait_entered(self) -> None:
        await anyio.to_thread.run_sync(self.entered.wait)


# -- group commit ---------------------------------------------------------------------------------


async def test_concurrent_commits_share_one_statement(store: PostgresStore) -> None:
    holder = await created(store, "holder")
    drivers = [await created(store, f"s{i}") for i in range(12)]
    before = store.statistics()
    gate = Gate(store)
    async with anyio.create_task_group() as tg:
        holder.set("k", 0)
        tg.start_soon(holder.commit, store)
        await gate.wait_entered()  # the writer holds the holder's batch; the rest queue
        for driver in drivers:
            driver.set("k", driver.session_id)
            tg.start_soon(driver.commit, store)
        await anyio.wait_all_tasks_blocked()
        assert store.statistics().queued == len(drivers)
        gate.release.set()
    after = store.statistics()
    assert after.commits - before.commits == 2  # the holder's, then all twelve at once
    assert after.batches - before.batches == 13
    for driver in [holder, *drivers]:
        await assert_matches(store, driver)


async def test_a_conflict_fails_alone_in_its_statement(store: PostgresStore) -> None:
    good = [await created(store, f"g{i}") for i in range(3)]
    stale = await created(store, "stale")
    stale.set("k", 1)
    first = stale.batch()
    await store.commit(first)
    gate = Gate(store)
    outcomes: dict[str, BaseException | None] = {}

    async def commit(name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
            outcomes[name] = None
        except PersistError as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit, "first", lambda: good[0].commit(store))
        await gate.wait_entered()
        for driver in good[1:]:
            driver.set("k", 2)
            tg.start_soon(commit, driver.session_id, lambda d=driver: d.commit(store))
        tg.start_soon(commit, "stale", lambda: store.commit(first))  # already committed
        await anyio.wait_all_tasks_blocked()
        gate.release.set()
    error = outcomes.pop("stale")
    assert isinstance(error, PersistError) and error.code is ErrorCode.PERSIST_CONFLICT
    assert error.details["head_seq"] == 2
    assert all(outcome is None for outcome in outcomes.values())
    for driver in [*good, stale]:
        await assert_matches(store, driver)


async def test_text_postgres_cannot_hold_as_text_round_trips(store: PostgresStore) -> None:
    """U+0000 and non-ASCII in ids, keys and agent ids are stored as UTF-8 bytes, read back
    unchanged and listed in code point order, as the other stores do."""
    ids = ["a\x00b", "a", "ä", "Z", "\U0001f600"]
    drivers = {sid: await created(store, sid) for sid in ids}
    for sid, driver in drivers.items():
        driver.set("k\x00" + sid, sid).note(agent="ag\x00ent")
        await driver.commit(store)
        await assert_matches(store, driver)
    assert [i.session_id for i in await store.list_sessions()] == sorted(ids)
    assert [i.session_id for i in await store.list_sessions(after="a")] == sorted(ids)[2:]
    noted = await store.read("a\x00b", agent_id="ag\x00ent")
    assert [r[AGENT_ID] for r in noted] == ["ag\x00ent"]


# -- schema ---------------------------------------------------------------------------------------


async def test_schema_is_created_versioned_and_marked(postgres_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema):
        pass

    async def inspect(conn: asyncpg.Connection) -> tuple[set[str], list[int], str]:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", pg_schema
        )
        versions = await conn.fetch(f'SELECT version FROM "{pg_schema}".schema_version')
        mark = await conn.fetchval(
            f"SELECT obj_description('\"{pg_schema}\".schema_version'::regclass, 'pg_class')"
        )
        return {r[0] for r in tables}, [r[0] for r in versions], mark

    tables, versions, mark = await _sql(postgres_dsn, inspect)
    assert tables == _postgres_schema.TABLES
    assert versions == list(range(1, len(_postgres_schema.MIGRATIONS) + 1))
    assert mark == _postgres_schema.MARK


async def test_several_stores_opening_a_fresh_schema_at_once(
    postgres_dsn: str, pg_schema: str
) -> None:
    """One of them migrates (under the advisory lock); the others find it done."""

    async def use(i: int) -> None:
        async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
            await created(store, f"s{i}")

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(use, i)
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        assert len(await store.list_sessions()) == 4
    versions = await _sql(
        postgres_dsn, lambda c: c.fetch(f'SELECT version FROM "{pg_schema}".schema_version')
    )
    assert [r[0] for r in versions] == list(range(1, len(_postgres_schema.MIGRATIONS) + 1))


async def test_a_schema_holding_other_tables_is_corrupted(
    postgres_dsn: str, pg_schema: str
) -> None:
    async def foreign(conn: asyncpg.Connection) -> None:
        await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        await conn.execute(f'CREATE TABLE "{pg_schema}".users (id int)')

    await _sql(postgres_dsn, foreign)
    with pytest.raises(SessionCorruptedError, match="not a kaizen_async session store"):
        async with PostgresStore(postgres_dsn, schema=pg_schema):
            pass


async def test_a_newer_schema_is_refused(postgres_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema):
        pass
    await _sql(
        postgres_dsn,
        lambda c: c.execute(f"INSERT INTO \"{pg_schema}\".schema_version VALUES (99, 'later')"),
    )
    with pytest.raises(SchemaMismatchError) as caught:
        async with PostgresStore(postgres_dsn, schema=pg_schema):
            pass
    assert caught.value.details["file_version"] == 99


async def test_missing_tables_are_corruption(postgres_dsn: str, pg_schema: str) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema):
        pass
    await _sql(postgres_dsn, lambda c: c.execute(f'DROP TABLE "{pg_schema}".blobs'))
    with pytest.raises(SessionCorruptedError, match="missing table"):
        async with PostgresStore(postgres_dsn, schema=pg_schema):
            pass


async def test_migrations_apply_in_order_and_a_failing_one_changes_nothing(
    postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        driver = await created(store, "s")
    current = list(range(1, len(_postgres_schema.MIGRATIONS) + 1))
    good = (
        "ALTER TABLE {s}.sessions ADD COLUMN note text",
        "UPDATE {s}.sessions SET note = 'migrated'",
    )
    bad = ("CREATE TABLE {s}.extra (x int)", "SELECT no_such_function()")
    monkeypatch.setattr(_postgres_schema, "MIGRATIONS", [*_postgres_schema.MIGRATIONS, good, bad])
    with pytest.raises(PersistError) as caught:
        async with PostgresStore(postgres_dsn, schema=pg_schema):
            pass
    assert caught.value.code is ErrorCode.PERSIST_LOAD_FAILED

    async def columns(conn: asyncpg.Connection) -> tuple[list[int], int]:
        versions = await conn.fetch(f'SELECT version FROM "{pg_schema}".schema_version')
        extra = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'extra'",
            pg_schema,
        )
        return [r[0] for r in versions], extra

    assert await _sql(postgres_dsn, columns) == (current, 0)  # neither new step stayed
    monkeypatch.setattr(
        _postgres_schema, "MIGRATIONS", [*_postgres_schema.MIGRATIONS[: len(current)], good]
    )
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        await assert_matches(store, driver)
    notes = await _sql(postgres_dsn, lambda c: c.fetch(f'SELECT note FROM "{pg_schema}".sessions'))
    assert [r[0] for r in notes] == ["migrated"]
    assert (await _sql(postgres_dsn, columns))[0] == [*current, len(current) + 1]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE {s}.entries SET content = 'x' WHERE seq = 2", "hash chain broken"),
        ("UPDATE {s}.entries SET entry_type = 'nope' WHERE seq = 2", "malformed entry row"),
        ("DELETE FROM {s}.entries WHERE seq = 2", "entry is missing"),
        ("UPDATE {s}.state SET value = '{{' WHERE true", "malformed state row"),
        ("UPDATE {s}.sessions SET head_hash = 'zz'", "malformed session row"),
        ("UPDATE {s}.sessions SET metadata_json = '[1]'", "malformed session metadata"),
        ("UPDATE {s}.artifacts SET digest = 'nope'", "malformed digest"),
    ],
)
async def test_what_it_reads_is_validated(
    postgres_dsn: str, pg_schema: str, statement: str, message: str
) -> None:
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        driver = await created(store, "s")
        driver.set("k", 1).write("a", b"data").note()
        await driver.commit(store)
    await _sql(postgres_dsn, lambda c: c.execute(statement.replace("{s}", f'"{pg_schema}"')))
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        with pytest.raises(SessionCorruptedError, match=message):
            await store.load("s")


async def test_bad_arguments_and_an_unreachable_server(postgres_dsn: str) -> None:
    for kwargs in (
        {"schema": ""},
        {"schema": "x" * 64},
        {"schema": "a\x00b"},
        {"readers": 0},
        {"connect_timeout": 0},
        {"command_timeout": float("nan")},
    ):
        with pytest.raises(KaizenValidationError):
            PostgresStore(postgres_dsn, **kwargs)
    with pytest.raises(KaizenValidationError):
        PostgresStore(" ")
    nobody = PostgresStore("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=5)
    with pytest.raises(PersistError) as caught:
        async with nobody:
            pass
    assert caught.value.code is ErrorCode.PERSIST_LOAD_FAILED
    with pytest.raises(PersistError):  # nothing was left open: it fails the same again
        async with nobody:
            pass


# -- faults during commits ------------------------------------------------------------------------


async def _commit_all(store: PostgresStore, drivers: list[Driver]) -> dict[str, Any]:
    outcomes: dict[str, Any] = {}

    async def commit(driver: Driver) -> None:
        try:
            await driver.commit(store)
            outcomes[driver.session_id] = None
        except PersistError as exc:
            outcomes[driver.session_id] = exc

    async with anyio.create_task_group() as tg:
        for driver in drivers:
            tg.start_soon(commit, driver)
    return outcomes


async def _reloaded(store: PostgresStore, driver: Driver) -> Driver:
    """What a session does after a failed commit: take the store's history as its own."""
    again = Driver(driver.session_id)
    again.core = SessionCore.replay(
        await store.read(driver.session_id), session_id=again.session_id
    )
    again.cut = len(again.core.records)
    return again


async def test_a_dropped_connection_fails_every_waiting_commit(
    store: PostgresStore, postgres_dsn: str
) -> None:
    drivers = [await created(store, f"s{i}") for i in range(6)]
    gate = Gate(store)
    for driver in drivers:
        driver.set("lost", 1)
    async with anyio.create_task_group() as tg:
        results: dict[str, Any] = {}

        async def run() -> None:
            results.update(await _commit_all(store, drivers))

        tg.start_soon(run)
        await gate.wait_entered()
        pid = await store._loop.call(lambda: _writer_pid(store))
        await _sql(postgres_dsn, lambda c: c.execute("SELECT pg_terminate_backend($1)", pid))
        store._writer_hook = None
        gate.release.set()
    assert len(results) == len(drivers)
    for error in results.values():
        assert isinstance(error, PersistError)
        assert error.code is ErrorCode.PERSIST_COMMIT_FAILED
    drivers = [await _reloaded(store, driver) for driver in drivers]
    for driver in drivers:  # the writer reconnects for the next statement
        assert "lost" not in driver.core.state
        driver.set("after", 1)
    assert all(o is None for o in (await _commit_all(store, drivers)).values())
    for driver in drivers:
        await assert_matches(store, driver)


async def _writer_pid(store: PostgresStore) -> int:
    conn = store._writer
    assert conn is not None
    return conn.get_server_pid()


async def test_server_restart_under_load_loses_no_acknowledged_commit(
    postgres_server: PgServer | None, postgres_dsn: str, pg_schema: str
) -> None:
    """Sessions commit in a loop while the server is stopped at once (no checkpoint, as in
    a crash) and started again: commits in flight fail with ``persist_commit_failed`` (or
    cannot tell: the session then reloads), later ones succeed again, and every
    acknowledged commit is in the store afterwards, each history verifying."""
    if postgres_server is None:
        pytest.skip("the server named by KAIZEN_TEST_POSTGRES_DSN is not ours to restart")
    acked: dict[str, int] = {}
    failures = 0
    codes: set[ErrorCode] = set()
    restarted = anyio.Event()

    async def session(store: PostgresStore, sid: str) -> None:
        nonlocal failures
        driver = await created(store, sid)
        acked[sid] = 1
        after_restart = 0
        while after_restart < 5:
            driver.set("k", len(driver.records)).note()
            try:
                await driver.commit(store)
            except PersistError as exc:
                codes.add(exc.code)
                failures += 1
                while True:
                    try:
                        driver = await _reloaded(store, driver)
                        break
                    except PersistError:
                        await anyio.sleep(0.05)  # the server is still down
                continue
            acked[sid] = len(driver.records)
            if restarted.is_set():
                after_restart += 1
            else:
                await anyio.sleep(0.001)

    async with (
        PostgresStore(postgres_dsn, schema=pg_schema) as store,
        anyio.create_task_group() as tg,
    ):
        for i in range(8):
            tg.start_soon(session, store, f"s{i}")
        await anyio.sleep(0.3)
        await anyio.to_thread.run_sync(postgres_server.restart)
        restarted.set()
    assert failures > 0
    assert codes == {ErrorCode.PERSIST_COMMIT_FAILED}
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        for sid, seq in acked.items():
            history = await store.read(sid)
            assert len(history) >= seq  # every acknowledged commit is there
            replayed = SessionCore.replay(history, session_id=sid)  # and verifies
            assert (await store.load(sid)).state == replayed.state


# -- watching commits made elsewhere ------------------------------------------------------------


async def test_a_commit_of_another_process_wakes_a_waiter_by_notify(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Two stores on one schema stand for two processes: a commit through one wakes a
    waiter on the other by its NOTIFY (the poll interval is far longer than the wait)."""
    async with (
        PostgresStore(postgres_dsn, schema=pg_schema) as writer,
        PostgresStore(postgres_dsn, schema=pg_schema, poll_interval=600) as watcher,
    ):
        driver = await created(writer, "s")
        heads: list[int] = []

        async def wait() -> None:
            heads.append(await watcher.wait_for_commit("s", 1, timeout=600))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.2)  # the waiter listens
            driver.set("k", 1)
            await driver.commit(writer)
            with anyio.fail_after(5):
                while not heads:
                    await anyio.sleep(0.01)
        assert heads == [2]


async def test_without_notify_a_waiter_finds_commits_by_polling(
    postgres_dsn: str, pg_schema: str
) -> None:
    async with (
        PostgresStore(postgres_dsn, schema=pg_schema, notify=False) as writer,
        PostgresStore(postgres_dsn, schema=pg_schema, poll_interval=0.05) as watcher,
    ):
        driver = await created(writer, "s")
        heads: list[int] = []

        async def wait() -> None:
            heads.append(await watcher.wait_for_commit("s", 1, timeout=600))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.2)
            driver.set("k", 1)
            await driver.commit(writer)
            with anyio.fail_after(5):
                while not heads:
                    await anyio.sleep(0.01)
        assert heads == [2]


async def test_a_version_1_store_gains_ownership(postgres_dsn: str, pg_schema: str) -> None:
    """A store written before ownership existed (its schema taken back to version 1 here)
    migrates: its sessions have no owner and epoch 0, and can be acquired at once."""
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        driver = await created(store, "s")

    async def back_to_1(conn: asyncpg.Connection) -> None:
        await conn.execute(
            f'ALTER TABLE "{pg_schema}".sessions DROP COLUMN owner, DROP COLUMN epoch, '
            "DROP COLUMN lease_until"
        )
        await conn.execute(f'DROP TABLE "{pg_schema}".checkpoints')  # version 3
        await conn.execute(f'DELETE FROM "{pg_schema}".schema_version WHERE version > 1')

    await _sql(postgres_dsn, back_to_1)
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        await assert_matches(store, driver)
        assert (await store.acquire("s", "hub", lease_seconds=5)).epoch == 1


async def test_a_paused_transaction_is_ended_by_the_server(store: PostgresStore) -> None:
    """Every connection of the store has the server end a transaction left idle for 10 s
    (a paused process never holds locks longer than that)."""

    async def setting(conn: asyncpg.Connection) -> str:
        value: str = await conn.fetchval("SHOW idle_in_transaction_session_timeout")
        return value

    assert await store._read(setting) == "10s"
    assert await store._loop.call(lambda: setting(_writer(store))) == "10s"


def _writer(store: PostgresStore) -> asyncpg.Connection:
    assert store._writer is not None
    return store._writer


async def test_a_cancelled_wait_leaves_nothing_behind(store: PostgresStore) -> None:
    driver = await created(store, "s")
    with anyio.move_on_after(0.2):
        await store.wait_for_commit("s", 1, timeout=600)
    assert await store._loop.call(lambda: _watched(store)) == {}
    driver.set("k", 1)
    await driver.commit(store)
    assert await store.wait_for_commit("s", 1, timeout=600) == 2


async def _watched(store: PostgresStore) -> dict[bytes, Any]:
    return dict(store._watchers)
