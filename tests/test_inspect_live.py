"""Open event streams and ``kaizen inspect`` itself, against a real server on 127.0.0.1.

The server is a child process (``python -m kaizen_async.inspect``, what ``kaizen inspect``
runs); the test writes to the same SQLite store from its own process, as a running job
would, and reads the stream with httpx over a real socket on asyncio and Trio.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from inspect_data import SECRET, populate
from inspect_procs import ROOT, Server, child_env, kaizen_command, start_server

from kaizen_async import EntryType, Session, SessionHub
from kaizen_async.stores import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "live.db"

    async def make() -> None:
        async with SessionHub(SQLiteStore(path)) as hub:
            await populate(hub)
            await hub.create("live")
            async with hub.open("live") as session:
                await session.set("k", 0)

    anyio.run(make)
    return path


@pytest.fixture
def server(store_path: Path) -> Iterator[Server]:
    running = start_server([f"sqlite:///{store_path}"])
    yield running
    running.stop()


async def read_events(response: httpx.Response, until_seq: int) -> AsyncIterator[tuple[int, str]]:
    """(seq, data) of each entry event until ``until_seq``."""
    seq: int | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and seq is not None:
            yield seq, "\n".join(data)
            if seq >= until_seq:
                return
            seq, data = None, []
        elif line == "":
            data = []


async def write(path: Path, count: int) -> int:
    """Commit ``count`` entries to session ``live`` from this process; returns the head."""
    async with SessionHub(SQLiteStore(path)) as hub, hub.open("live") as session:
        for index in range(count):
            if index % 2:
                await session.set("k", index)
            else:
                await session.append("writer", EntryType.SYSTEM_NOTE, {"i": index})
            await anyio.sleep(0.01)
        return await session.get_trajectory_length()


async def test_an_open_stream_follows_another_processs_writes(
    server: Server, store_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
        async with SessionHub(SQLiteStore(store_path)) as hub:
            start = (await hub.store.info("live")).trajectory_length
        seen: list[int] = []
        with anyio.fail_after(60):
            async with client.stream("GET", f"/events?id=live&since_seq={start}") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async with anyio.create_task_group() as group:
                    head: list[int] = []

                    async def writer() -> None:
                        head.append(await write(store_path, 30))

                    group.start_soon(writer)
                    async for seq, data in read_events(response, start + 30):
                        seen.append(seq)
                        assert f'id="seq-{seq}"' in data
        assert head == [start + 30]
        assert seen == list(range(start + 1, start + 31))  # in order, none lost, none twice


async def test_a_reconnect_with_last_event_id_resumes_without_loss(
    server: Server, store_path: Path
) -> None:
    async with SessionHub(SQLiteStore(store_path)) as hub:
        start = (await hub.store.info("live")).trajectory_length
    head = await write(store_path, 20)
    seen: list[int] = []
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
        with anyio.fail_after(60):
            async with client.stream("GET", f"/events?id=live&since_seq={start}") as first:
                async for seq, _ in read_events(first, start + 8):
                    seen.append(seq)
            # the browser reconnects with the URL it had and the last id it saw
            more = await write(store_path, 10)
            async with client.stream(
                "GET",
                f"/events?id=live&since_seq={start}",
                headers={"Last-Event-ID": str(seen[-1])},
            ) as second:
                async for seq, _ in read_events(second, more):
                    seen.append(seq)
    assert head == start + 20
    assert seen == list(range(start + 1, more + 1))


async def test_the_stream_ends_when_the_session_is_deleted(
    server: Server, store_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
        with anyio.fail_after(60):
            async with client.stream("GET", "/events?id=other&since_seq=0") as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if line == "id: 2":
                        break
                async with SessionHub(SQLiteStore(store_path)) as hub:
                    assert await hub.delete_session("other")
                rest = [line async for line in lines]
    assert "event: end" in rest


async def test_every_page_over_a_real_socket_leaves_the_store_unchanged(
    server: Server, store_path: Path
) -> None:
    async with SessionHub(SQLiteStore(store_path)) as hub:
        before = {
            i.session_id: (i.trajectory_length, (await hub.store.load(i.session_id)).head_hash)
            for i in await hub.list_sessions()
        }
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
        page = (await client.get("/")).text
        sessions = re.findall(r'href="/session\?id=([^"]+)"', page)
        assert set(sessions) == set(before)
        for sid in sessions:
            for path in (
                f"/session?id={sid}",
                f"/state?id={sid}",
                f"/artifacts?id={sid}",
                f"/verify?id={sid}",
                f"/export.jsonl?id={sid}",
                f"/entry?id={sid}&seq=1",
            ):
                assert (await client.get(path)).status_code == 200, path
        assert (await client.post("/")).status_code == 405
        assert (await client.get("/", headers={"host": "evil.example"})).status_code == 400
    async with SessionHub(SQLiteStore(store_path)) as hub:
        after = {
            i.session_id: (i.trajectory_length, (await hub.store.load(i.session_id)).head_hash)
            for i in await hub.list_sessions()
        }
    assert after == before


async def test_beyond_loopback_a_token_is_required_and_model_text_hidden(
    store_path: Path,
) -> None:
    running = start_server([f"sqlite:///{store_path}", "run-1", "--host", "0.0.0.0"])
    try:
        url = running.url
        assert "127.0.0.1" not in url and "0.0.0.0" in url
        token = re.search(r"token=([A-Za-z0-9_-]+)", url)
        assert token is not None and len(token.group(1)) >= 24
        assert "/session?id=run-1" in url
        warning = "".join(running.stderr)
        assert "WARNING" in warning and "0.0.0.0" in warning
        port = url.split(":")[2].split("/")[0]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert (await client.get("/")).status_code == 403
            assert (await client.get("/?token=nope")).status_code == 403
            assert (await client.get(f"/?token={token.group(1)}")).status_code == 200
            records_page = (await client.get("/session?id=run-1")).text  # the cookie now
            assert "run-1" in records_page
            for seq in range(1, 29):
                text = (await client.get(f"/entry?id=run-1&seq={seq}")).text
                assert SECRET not in text
            assert SECRET not in (await client.get("/export.jsonl?id=run-1")).text
    finally:
        running.stop()


async def test_kaizen_inspect_serves_a_kaizen_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "run.kaizen"
    async with Session(session_id="from-file") as session:
        await session.set("k", "v")
        await session.save(path)
        length = await session.get_trajectory_length()
    data = path.read_bytes()
    running = start_server([str(path)])
    try:
        assert running.url.endswith("/session?id=from-file")
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as client:
            page = (await client.get("/session?id=from-file")).text
            assert f"Showing {length} entries" in page
            with anyio.fail_after(30):
                events = (await client.get("/events?id=from-file")).text
            assert events.count("event: entry") == length and "event: end" in events
    finally:
        running.stop()
    assert path.read_bytes() == data  # only read


def test_kaizen_inspect_refuses_bad_targets(tmp_path: Path, store_path: Path) -> None:
    corrupt = tmp_path / "corrupt.kaizen"
    corrupt.write_bytes(b"not a database at all" * 100)
    cases = [
        ([str(tmp_path / "missing.kaizen")], "no such file", 2),
        (["sqlite:///" + str(tmp_path / "missing.db")], "no such database file", 2),
        (["sqlite:///" + str(tmp_path / "x.db"), "a", "b"], "at most one session id", 2),
        (["sqlite:///" + str(tmp_path / "x.db")], "is empty, not a session store", 2),
        ([f"sqlite:///{store_path}", "no-such-session"], "no-such-session", 2),
        (["postgresql://host/db"], "not supported yet", 4),
        (["ftp://host/db"], "unknown store URL scheme", 2),
        ([str(corrupt)], "corrupt.kaizen", 2),
    ]
    (tmp_path / "x.db").write_bytes(b"")
    for args, message, code in cases:
        done = subprocess.run(
            [*kaizen_command(), "inspect", *args],
            capture_output=True,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
            timeout=60,
        )
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert (tmp_path / "x.db").read_bytes() == b""  # left as it was


async def test_export_is_what_kaizen_log_json_prints(tmp_path: Path) -> None:
    from inspect_data import planned_run

    from kaizen_async.inspect import create_app
    from kaizen_async.inspect._files import load_files
    from kaizen_async.stores import MemoryStore

    path = tmp_path / "run.kaizen"
    async with Session(session_id="exported") as session:
        await planned_run(session)
        await session.save(path)
    done = await anyio.run_process(
        [*kaizen_command(), "log", str(path), "--json"], env=child_env(), check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    async with SessionHub(MemoryStore()) as hub:
        await load_files(hub.store, [path])
        transport = httpx.ASGITransport(app=create_app(hub, follow=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            exported = (await c.get("/export.jsonl?id=exported")).content
    assert exported == done.stdout
