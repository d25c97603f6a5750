"""The demo HTTP server (``demo/server``), driven with httpx.

Pages and finite event streams run in process (``httpx.ASGITransport``, with the app's
lifespan entered by the test) on asyncio and Trio. The live stream runs against a real
server (``python -m demo.server``, uvicorn, in a child process): an in-process transport
hands over a response only once it is complete, which a stream that stays open never is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Scope

from demo.server import Settings, create_app
from demo.server.app import Server, stop_streams
from demo.server.planning import keyword_plan
from kaizen_async import EntryType, SessionHub
from kaizen_async.stores import MemoryStore, SQLiteStore
from kaizen_async.testing import OllamaReply, StandInLLMServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
PLAN = (
    '{"steps": [{"capability": "reverse", "params": {"key": "text"}}, '
    '{"capability": "uppercase", "params": {"key": "text"}}]}'
)


@contextlib.asynccontextmanager
async def served(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app in process, with the app's lifespan (its hub) running."""
    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def server_of(client: httpx.AsyncClient) -> Server:
    app: Starlette = client.app  # type: ignore[attr-defined]
    server: Server = app.state.server
    return server


def events_of(text: str) -> list[dict[str, Any]]:
    """The events of a complete ``text/event-stream`` body: ``{"id", "event", "data"}``."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            fields["data"] = orjson.loads(fields["data"])
            fields["id"] = int(fields["id"]) if "id" in fields else None
            events.append(fields)
    return events


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database=str(tmp_path / "sessions.db"), chunk_delay=0.0)


# -- in process --------------------------------------------------------------------------------


async def test_create_plan_state(settings: Settings) -> None:
    async with served(settings) as client:
        created = await client.post(
            "/sessions",
            json={"id": "order-42", "metadata": {"customer": "ada"}, "state": {"text": "hello"}},
        )
        assert created.status_code == 201, created.text
        assert created.json() == {"id": "order-42", "state_version": 1}
        assert created.headers["location"] == "/sessions/order-42/state"

        ran = await client.post(
            "/sessions/order-42/plan", json={"request": "Reverse the text, then shout it"}
        )
        assert ran.status_code == 200, ran.text
        result = ran.json()
        assert result["session_id"] == "order-42"
        assert result["success"] is True and result["executed_count"] == 2
        assert [r["capability"] for r in result["results"]] == ["reverse", "uppercase"]
        assert result["results"][1]["result"] == {"original": "olleh", "uppercased": "OLLEH"}

        state = await client.get("/sessions/order-42/state")
        assert state.status_code == 200
        # created, set, 2 x 5 step entries, the model exchange, plan_created
        assert state.json() == {
            "id": "order-42",
            "state": {"text": "OLLEH"},
            "state_version": 3,
            "entries": 14,
        }
        async with server_of(client).hub.open("order-42") as session:
            plan = await session.get_trajectory(entry_types=[EntryType.PLAN_CREATED])
            assert plan[0].content["plan_id"] == result["plan_id"]
            assert await session.verify() == 14


async def test_a_plan_that_fails_is_a_result(settings: Settings) -> None:
    async with served(settings) as client:
        sid = (await client.post("/sessions")).json()["id"]  # no body: a new id, no state
        ran = await client.post(f"/sessions/{sid}/plan", json={"request": "reverse it"})
        assert ran.status_code == 200
        result = ran.json()
        assert result["success"] is False and result["failed_at"] == 0
        assert "No value found at key" in result["error"]["message"]
        nothing = await client.post(f"/sessions/{sid}/plan", json={"request": "say hello"})
        assert nothing.json()["success"] is True and nothing.json()["executed_count"] == 0


async def test_list_sessions_pages_by_id(settings: Settings) -> None:
    async with served(settings) as client:
        for sid in ["c", "a", "b"]:
            await client.post("/sessions", json={"id": sid, "metadata": {"n": sid}})
        first = (await client.get("/sessions", params={"limit": 2})).json()
        assert [s["id"] for s in first["sessions"]] == ["a", "b"]
        assert first["sessions"][0]["metadata"] == {"n": "a"}
        assert first["sessions"][0]["entries"] == 1
        assert first["sessions"][0]["state_version"] == 0
        assert first["next"] == "b"
        rest = (await client.get("/sessions", params={"limit": 2, "after": "b"})).json()
        assert [s["id"] for s in rest["sessions"]] == ["c"] and rest["next"] is None


async def test_finite_event_streams_and_resuming(settings: Settings) -> None:
    async with served(settings) as client:
        await client.post("/sessions", json={"id": "s", "state": {"text": "abc"}})
        await client.post("/sessions/s/plan", json={"request": "reverse"})
        async with server_of(client).hub.open("s") as session:
            entries = [e.to_dict() for e in await session.get_trajectory()]

        stream = await client.get("/sessions/s/events", params={"follow": "0"})
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-store"
        assert "content-length" not in stream.headers
        assert stream.text.startswith("retry: 1000\n\n")
        events = events_of(stream.text)
        assert [e["event"] for e in events] == ["entry"] * len(entries) + ["end"]
        assert [e["id"] for e in events[:-1]] == [e["seq"] for e in entries]
        assert [e["data"] for e in events[:-1]] == entries  # each entry, exactly

        # a reconnecting browser sends the last id it saw: the stream goes on right after it
        resumed = await client.get(
            "/sessions/s/events", params={"follow": "0"}, headers={"Last-Event-ID": "5"}
        )
        assert [e["id"] for e in events_of(resumed.text)[:-1]] == list(range(6, len(entries) + 1))
        since = await client.get("/sessions/s/events", params={"follow": "0", "since": "7"})
        assert [e["id"] for e in events_of(since.text)[:-1]] == list(range(8, len(entries) + 1))
        done = await client.get("/sessions/s/events", params={"follow": "false", "since": "99"})
        assert [e["event"] for e in events_of(done.text)] == ["end"]


async def test_errors_are_json_and_change_nothing(tmp_path: Path) -> None:
    settings = Settings(database=str(tmp_path / "s.db"), chunk_delay=0.0, max_body=20_000)
    async with served(settings) as client:
        await client.post("/sessions", json={"id": "taken"})

        async def error(response: httpx.Response) -> tuple[int, str]:
            return response.status_code, response.json()["error"]["code"]

        assert await error(await client.get("/sessions/nope/state")) == (404, "session_not_found")
        assert await error(
            await client.post("/sessions/nope/plan", json={"request": "reverse"})
        ) == (404, "session_not_found")
        assert await error(await client.get("/sessions/nope/events")) == (
            404,
            "session_not_found",
        )
        assert await error(await client.post("/sessions", json={"id": "taken"})) == (
            409,
            "session_exists",
        )
        for body in [b"{not json", b"[1, 2]", b'{"id": 7}', b'{"state": [1]}']:
            assert await error(await client.post("/sessions", content=body)) == (
                400,
                "bad_request",
            )
        assert await error(await client.post("/sessions", content=b" " * 20_001)) == (
            413,
            "too_large",
        )
        # a state key the session refuses: 400, and no session is left behind
        refused = await client.post("/sessions", json={"id": "bad", "state": {"ok": 1, " ": 2}})
        assert await error(refused) == (400, "validation_error")
        plans: list[dict[str, Any]] = [
            {},
            {"request": ""},
            {"request": 5},
            {"request": "x" * 10_001},
        ]
        for plan in plans:
            assert (await client.post("/sessions/taken/plan", json=plan)).status_code == 400
        for query in [{"limit": "0"}, {"limit": "x"}, {"limit": "501"}]:
            assert (await client.get("/sessions", params=query)).status_code == 400
        for headers in [{"Last-Event-ID": "x"}, {"Last-Event-ID": "-1"}]:
            response = await client.get("/sessions/taken/events", headers=headers)
            assert response.status_code == 400
        listed = (await client.get("/sessions")).json()["sessions"]
        assert [(s["id"], s["entries"]) for s in listed] == [("taken", 1)]


class RawStream:
    """An event stream request made at the ASGI level, so the test plays the client:
    it sees each body part as it is sent and decides when the client leaves."""

    def __init__(self, path: str) -> None:
        self.scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"demo")],
            "client": ("127.0.0.1", 50000),
            "server": ("demo", 80),
        }
        self.body = b""
        self.leave = anyio.Event()
        self.changed = anyio.Event()
        self.finished = False

    async def receive(self) -> Message:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.body += message.get("body", b"")
        self.finished = message["type"] == "http.response.body" and not message["more_body"]
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, text: bytes) -> None:
        with anyio.fail_after(30):
            while text not in self.body:
                await self.changed.wait()


async def test_a_client_that_leaves_ends_its_subscription(settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, heartbeat=0.01))
    async with app.router.lifespan_context(app):
        hub: SessionHub = app.state.server.hub
        await hub.create("s")
        raw = RawStream("/sessions/s/events")
        with anyio.fail_after(30):  # bounds the stream's end after the client left
            async with anyio.create_task_group() as group:
                group.start_soon(app, raw.scope, raw.receive, raw.send)
                await raw.wait_for(b"id: 1\n")
                await raw.wait_for(b": keep-alive\n\n")  # an idle stream is kept alive
                assert hub.statistics().leased == 1  # the subscription's lease
                raw.leave.set()
        assert hub.statistics().leased == 0  # the client left: the subscription ended
        assert not raw.finished  # and nothing more was sent to a client that is gone


async def test_streams_end_when_the_server_stops(settings: Settings) -> None:
    app = create_app(settings)
    raw = RawStream("/sessions/s/events")
    async with anyio.create_task_group() as group:
        async with app.router.lifespan_context(app):
            await app.state.server.hub.create("s")
            group.start_soon(app, raw.scope, raw.receive, raw.send)
            await raw.wait_for(b"id: 1\n")
        # the hub closed with the app: the subscription ended, and so did the stream
        await raw.wait_for(b"event: end\n")
        with anyio.fail_after(30):
            while not raw.finished:
                await raw.changed.wait()


async def test_stop_streams_ends_open_streams_first(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub: SessionHub = app.state.server.hub
        await hub.create("s")
        raw = RawStream("/sessions/s/events")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(app, raw.scope, raw.receive, raw.send)
                await raw.wait_for(b"id: 1\n")
                stop_streams(app)  # what the server does before it waits for connections
                await raw.wait_for(b"event: end\n")
                while not raw.finished:
                    await raw.changed.wait()
        assert hub.statistics().leased == 0  # the hub still runs; the stream let go
        async with hub.open("s") as session:
            assert await session.get_trajectory_length() == 1


async def test_the_store_outlives_the_app(settings: Settings) -> None:
    async with served(settings) as client:
        await client.post("/sessions", json={"id": "kept", "state": {"text": "hello"}})
        await client.post("/sessions/kept/plan", json={"request": "shout"})
        hub = server_of(client).hub
    assert hub.statistics().open == 0  # the lifespan closed the hub with the app
    async with served(settings) as client:  # a restart: the same file
        state = (await client.get("/sessions/kept/state")).json()
        assert state["state"] == {"text": "HELLO"} and state["entries"] == 9
    async with SessionHub(SQLiteStore(settings.database)) as hub, hub.open("kept") as session:
        assert await session.verify() == 9


async def test_a_store_can_be_given(settings: Settings) -> None:
    store = MemoryStore()
    async with served(settings, store=store) as client:
        await client.post("/sessions", json={"id": "m"})
    assert not Path(settings.database).exists()


async def test_plans_come_from_ollama_when_a_model_is_set(tmp_path: Path) -> None:
    async with StandInLLMServer([OllamaReply([PLAN[:40], PLAN[40:]])]) as model:
        settings = Settings(database=str(tmp_path / "o.db"), model="qwen3:8b", ollama_url=model.url)
        async with served(settings) as client:
            await client.post("/sessions", json={"id": "o", "state": {"text": "abc"}})
            ran = await client.post("/sessions/o/plan", json={"request": "do the thing"})
            assert ran.json()["success"] is True and ran.json()["executed_count"] == 2
            state = (await client.get("/sessions/o/state")).json()["state"]
            assert state == {"text": "CBA"}
        (request,) = model.requests
        assert request.path == "/api/chat" and request.json["model"] == "qwen3:8b"
        assert request.json["messages"][-1]["content"] == "do the thing"


def test_keyword_plan() -> None:
    assert orjson.loads(keyword_plan("Reverse the text, then SHOUT it")) == {
        "steps": [
            {"capability": "reverse", "params": {"key": "text"}},
            {"capability": "uppercase", "params": {"key": "text"}},
        ]
    }
    assert keyword_plan("hello") == '{"steps":[]}'
    assert orjson.loads(keyword_plan("upper", key="k"))["steps"][0]["params"] == {"key": "k"}


def test_settings_from_the_environment() -> None:
    assert Settings.from_env({}) == Settings()
    env = {
        "KAIZEN_DEMO_DB": "x.db",
        "KAIZEN_DEMO_MODEL": "qwen3:8b",
        "OLLAMA_HOST": "http://gpu:11434",
        "KAIZEN_DEMO_CHUNK_DELAY": "0.5",
    }
    assert Settings.from_env(env) == Settings(
        database="x.db", model="qwen3:8b", ollama_url="http://gpu:11434", chunk_delay=0.5
    )
    for bad in [{"database": ""}, {"chunk_delay": -1.0}, {"heartbeat": 0.0}, {"max_body": 0}]:
        with pytest.raises(ValueError):
            Settings(**bad)  # type: ignore[arg-type]


# -- a real server ------------------------------------------------------------------------------


class GatedOllama:
    """A stand-in Ollama whose reply stops after the plan's first step until ``release``
    is set, so the test knows a plan is still running while it watches the stream."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.url = ""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}"
        task_status.started()
        await listener.serve(self.answer)

    async def answer(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
            while len(body) < length:
                body += await stream.receive()

            def line(content: str, done: bool) -> bytes:
                obj = {"model": "m", "message": {"role": "assistant", "content": content}}
                text = orjson.dumps({**obj, "done": done, "done_reason": "stop"}) + b"\n"
                return b"%x\r\n%b\r\n" % (len(text), text)

            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + line(PLAN[:64], False)
            )
            await self.release.wait()
            await stream.send(line(PLAN[64:], False) + line("", True) + b"0\r\n\r\n")


class LiveEvents:
    """Reads an event stream as it comes, and says when a wanted event has arrived."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ended = anyio.Event()
        self._changed = anyio.Event()

    async def read(self, response: httpx.Response) -> None:
        """Collect the events until the stream ends (or the server cuts it)."""
        block: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line:
                    block.append(line)
                    continue
                fields = dict(f.partition(": ")[::2] for f in block if not f.startswith(":"))
                block = []
                if "event" in fields:
                    data = orjson.loads(fields["data"])
                    entry = data if isinstance(data, dict) else {"data": data}
                    self.events.append({"id": fields.get("id"), "event": fields["event"], **entry})
                    self._changed.set()
                    self._changed = anyio.Event()
        except httpx.HTTPError:
            pass  # cut by a server that stopped
        finally:
            self.ended.set()
            self._changed.set()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with anyio.fail_after(60):  # a bound against hanging, not a timing assertion
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                assert not self.ended.is_set(), f"the stream ended: {self.events}"
                await self._changed.wait()


async def start_server(
    database: Path, env: dict[str, str], group: anyio.abc.TaskGroup
) -> tuple[anyio.abc.Process, str, list[str]]:
    """``python -m demo.server`` on a free port; returns it, its URL and its log lines."""
    process = await anyio.open_process(
        [sys.executable, "-m", "demo.server", "--db", str(database), "--port", "0"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )
    assert process.stderr is not None
    log: list[str] = []
    found = anyio.Event()
    url: list[str] = []

    async def read_log() -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                log.append(raw.decode(errors="replace"))
                match = re.search(r"Uvicorn running on (http://\S+)", log[-1])
                if match:
                    url.append(match[1])
                    found.set()
        found.set()

    group.start_soon(read_log)
    with anyio.fail_after(60):
        await found.wait()
    assert url, "the server did not start:\n" + "\n".join(log)
    return process, url[0], log


async def test_live_events_from_a_real_server(tmp_path: Path) -> None:
    model = GatedOllama()
    database = tmp_path / "live.db"
    async with anyio.create_task_group() as group:
        await group.start(model.serve)
        env = {"KAIZEN_DEMO_MODEL": "m", "OLLAMA_HOST": model.url}
        process, url, log = await start_server(database, env, group)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                created = await client.post(
                    "/sessions", json={"id": "live", "state": {"text": "ab"}}
                )
                assert created.status_code == 201
                live = LiveEvents()
                outcome: list[httpx.Response] = []

                async def plan() -> None:
                    response = await client.post("/sessions/live/plan", json={"request": "go"})
                    outcome.append(response)

                async with (
                    client.stream("GET", "/sessions/live/events") as stream,
                    anyio.create_task_group() as tasks,
                ):
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    tasks.start_soon(live.read, stream)
                    await live.wait_for(lambda e: e["id"] == "2")  # the history came
                    tasks.start_soon(plan)
                    # step 0 ran and its entries came while the model still holds step 1:
                    # the plan has not finished, and the stream delivered them live
                    await live.wait_for(
                        lambda e: (
                            e["entry_type"] == "plan_step_completed"
                            and e["content"]["step_index"] == 0
                        )
                    )
                    assert not outcome, "the plan ended before the model released it"
                    model.release.set()
                    await live.wait_for(lambda e: e["entry_type"] == "plan_created")
                    with anyio.fail_after(60):
                        while not outcome:
                            await anyio.sleep(0.01)
                    assert outcome[0].json()["success"] is True
                    ids = [int(e["id"]) for e in live.events]
                    assert ids == list(range(1, 15)), ids  # in order, no gaps, no repeats
                    tasks.cancel_scope.cancel()

                # reconnect as a browser does, after the last id it saw
                again = LiveEvents()
                async with (
                    client.stream(
                        "GET", "/sessions/live/events", headers={"Last-Event-ID": "12"}
                    ) as stream,
                    anyio.create_task_group() as tasks,
                ):
                    tasks.start_soon(again.read, stream)
                    await again.wait_for(lambda e: e["id"] == "14")
                    assert [int(e["id"]) for e in again.events] == [13, 14]
                    state = (await client.get("/sessions/live/state")).json()
                    assert state["state"] == {"text": "BA"}
                    # stop the server while this stream is open: the stream ends (told so)
                    # and the server exits (its hub committed and closed)
                    process.send_signal(signal.SIGINT)
                    with anyio.fail_after(60):
                        await again.ended.wait()
                    assert again.events[-1]["event"] == "end", again.events[-1]
            with anyio.fail_after(60):
                assert await process.wait() == 0, "\n".join(log)
            text = "\n".join(log)
            assert "Traceback" not in text and "graceful shutdown exceeded" not in text, text
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
            group.cancel_scope.cancel()
    async with SessionHub(SQLiteStore(database)) as hub, hub.open("live") as session:
        assert await session.verify() == 14
        assert await session.get("text") == "BA"
