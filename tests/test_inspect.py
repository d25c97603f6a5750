"""The inspector's routes over HTTP (httpx's ASGI transport), on asyncio and Trio.

Pages and finite event streams only: the ASGI transport buffers a whole response, so open
streams are tested against a real server in ``test_inspect_live.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import markupsafe
import orjson
import pytest
from inspect_data import SECRET, XSS, populate
from storefakes import ControlledStore

from kaizen_async import EntryType, Session, SessionHub, TrajectoryEntry
from kaizen_async._trajectory import AGENT_ID, CONTENT, ENTRY_TYPE, HASH, PREV_HASH, SEQ, Record
from kaizen_async.inspect import create_app
from kaizen_async.inspect._files import load_files
from kaizen_async.inspect._reader import SCAN_BUDGET, WINDOW
from kaizen_async.llm import OpenAICompatProvider
from kaizen_async.stores import MemoryStore, SQLiteStore
from kaizen_async.testing import OpenAIReply, StandInLLMServer

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1"


@asynccontextmanager
async def client(app: Any, base: str = BASE) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
        yield c


@asynccontextmanager
async def populated(store: Any = None) -> AsyncIterator[tuple[SessionHub, dict[str, str]]]:
    async with SessionHub(store if store is not None else MemoryStore()) as hub:
        ids = await populate(hub)
        yield hub, ids


async def head_of(hub: SessionHub, session_id: str) -> tuple[int, str]:
    stored = await hub.store.load(session_id, tail=1)
    return stored.info.trajectory_length, stored.head_hash


def entry_seqs(page: str) -> list[int]:
    """Seqs of the timeline's elements, in document order."""
    return [int(n) for n in re.findall(r'<li id="seq-(\d+)"', page)]


def every_page(ids: dict[str, str], length: int, state_version: int) -> list[str]:
    run, fork, other = ids["run"], ids["fork"], ids["other"]
    pages = [
        "/",
        "/?q=run",
        "/compare",
        f"/compare?a={run}&b={fork}",
        f"/compare?a={run}&b={other}",
    ]
    for sid in (run, fork, other):
        pages += [
            f"/session?id={sid}",
            f"/session?id={sid}&type=state_set&type=llm_exchange",
            f"/session?id={sid}&q=text",
            f"/session?id={sid}&since_seq=3&until_seq=9",
            f"/summary?id={sid}",
            f"/state?id={sid}",
            f"/state?id={sid}&at=1",
            f"/state/diff?id={sid}&from=0&to=1",
            f"/artifacts?id={sid}",
            f"/verify?id={sid}",
            f"/export.jsonl?id={sid}",
            f"/events?id={sid}&since_seq=0",
        ]
    pages += [f"/entry?id={run}&seq={seq}" for seq in range(1, length + 1)]
    pages += [f"/state?id={run}&at={v}" for v in range(state_version + 1)]
    pages += [f"/artifact?id={run}&name=report.txt", f"/artifact?id={run}&name={XSS[1]}"]
    return pages


# -- every page, and reading never writes


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_every_page_renders_and_reading_never_writes(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db")
    async with populated(store) as (hub, ids):
        before = {sid: await head_of(hub, sid) for sid in ids.values()}
        info = await hub.store.info(ids["run"])
        commits = hub.store.statistics().commits
        app = create_app(hub, follow=False)
        async with client(app) as c:
            for path in every_page(ids, info.trajectory_length, info.state_version):
                response = await c.get(path)
                assert response.status_code == 200, (path, response.text[:500])
                head = await c.head(path)
                assert head.status_code == 200, path
        assert {sid: await head_of(hub, sid) for sid in ids.values()} == before
        assert hub.store.statistics().commits == commits  # not one write reached the store


async def test_only_get_and_head_are_served() -> None:
    async with populated() as (hub, ids), client(create_app(hub)) as c:
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            response = await c.request(method, f"/session?id={ids['run']}")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET, HEAD"
        assert (await c.post("/static/inspector.js")).status_code == 405


# -- safe by default


async def test_a_foreign_host_header_gets_400() -> None:
    async with populated() as (hub, _):
        app = create_app(hub)
        for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
            async with client(app) as c:
                assert (await c.get("/", headers={"host": host})).status_code == 200, host
        for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", ""):
            async with client(app) as c:
                response = await c.get("/", headers={"host": host})
                assert response.status_code == 400, host
        async with client(create_app(hub, allowed_hosts=["inspect.internal"])) as c:
            assert (await c.get("/", headers={"host": "inspect.internal"})).status_code == 200
            assert (await c.get("/", headers={"host": "127.0.0.1"})).status_code == 400


async def test_strict_headers_on_pages_static_files_and_errors() -> None:
    async with populated() as (hub, ids), client(create_app(hub)) as c:
        for path in (f"/session?id={ids['run']}", "/static/inspector.js", "/session?id=nope"):
            response = await c.get(path)
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
            assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        page = (await c.get(f"/session?id={ids['run']}")).text
        # no inline script or style anywhere: the CSP would block it
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
        assert " style=" not in page and "<style" not in page
        assert re.search(r"<[a-z][^<>]*\son[a-z]+=", page) is None  # no handler attribute


async def test_a_token_is_required_when_set() -> None:
    async with populated() as (hub, ids):
        app = create_app(hub, token="s3cret-token")
        async with client(app) as c:
            assert (await c.get("/")).status_code == 403
            assert (await c.get("/?token=wrong")).status_code == 403
            first = await c.get("/?token=s3cret-token")
            assert first.status_code == 200
            cookie = first.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            # the cookie carries it from then on (links never repeat the token)
            assert (await c.get(f"/session?id={ids['run']}")).status_code == 200
        async with client(app) as c:
            assert (await c.get("/static/inspector.js")).status_code == 403


async def test_everything_from_a_session_is_escaped() -> None:
    async with populated() as (hub, ids), client(create_app(hub, follow=False)) as c:
        run = ids["run"]
        length = (await hub.store.info(run)).trajectory_length
        pages = [
            "/",
            f"/session?id={run}",
            f"/state?id={run}",
            f"/artifacts?id={run}",
            f"/compare?a={run}&b={ids['fork']}",
            f"/events?id={run}",
            *(f"/entry?id={run}&seq={s}" for s in range(1, length + 1)),
        ]
        seen = set()
        for path in pages:
            text = (await c.get(path)).text
            for payload in XSS:
                assert payload not in text, (path, payload)
                if str(markupsafe.escape(payload)) in text:
                    seen.add(payload)
            assert "<script>" not in text and "<img" not in text
            assert 'href="javascript:' not in text.lower()
        assert seen == set(XSS)  # each payload was shown, as text


async def test_hidden_llm_content_shows_no_message_text_anywhere() -> None:
    async with populated() as (hub, ids):
        info = await hub.store.info(ids["run"])
        app = create_app(hub, show_llm_content=False, follow=False)
        async with client(app) as c:
            for path in every_page(ids, info.trajectory_length, info.state_version):
                text = (await c.get(path)).text
                assert SECRET not in text, path
                assert "second line" not in text, path
            exchange = next(
                r
                for r in await hub.store.read(ids["run"])
                if r[ENTRY_TYPE] == EntryType.LLM_EXCHANGE.value
            )
            page = (await c.get(f"/entry?id={ids['run']}&seq={exchange[SEQ]}")).text
        recorded = orjson.loads(exchange[CONTENT])
        user = recorded["request"]["messages"][-1]["content"]
        assert SECRET in user  # the store has it; the page does not
        digest = hashlib.sha256(user.encode()).hexdigest()
        assert f"hidden: {len(user)} characters, SHA-256 {digest[:16]}" in page
        assert digest in page  # the raw JSON keeps the whole digest
        assert "scripted-model" in page  # the model stays
        async with client(create_app(hub, show_llm_content=True, follow=False)) as c:
            assert SECRET in (await c.get(f"/entry?id={ids['run']}&seq={exchange[SEQ]}")).text


async def test_recorded_exchanges_never_contain_the_api_key() -> None:
    key = "sk-test-" + "K3Y" * 12
    async with (
        StandInLLMServer([OpenAIReply(["hello there"])]) as server,
        OpenAICompatProvider(server.url, "gpt-test", api_key=key) as provider,
        SessionHub(MemoryStore()) as hub,
    ):
        await hub.create("llm")
        async with hub.open("llm") as session:
            await provider.complete("say hi", session=session)
        assert server.requests[0].headers["authorization"] == f"Bearer {key}"  # it was sent
        records = await hub.store.read("llm")
        assert any(r[ENTRY_TYPE] == "llm_exchange" for r in records)
        for record in records:
            assert key.encode() not in record[CONTENT] and key not in record[AGENT_ID]
        async with client(create_app(hub, follow=False)) as c:
            for path in ("/export.jsonl?id=llm", "/entry?id=llm&seq=2", "/session?id=llm"):
                assert key not in (await c.get(path)).text


async def test_artifacts_download_only_as_attachments() -> None:
    async with populated() as (hub, ids), client(create_app(hub)) as c:
        listing = (await c.get(f"/artifacts?id={ids['run']}")).text
        assert "report.txt" in listing and str(markupsafe.escape(XSS[1])) in listing
        digest = hashlib.sha256(b"plain report\n").hexdigest()
        assert digest in listing
        response = await c.get(f"/artifact?id={ids['run']}&name={XSS[1]}")
        assert response.status_code == 200
        assert response.content == b"<html><script>alert('artifact')</script></html>"
        assert response.headers["content-type"] == "application/octet-stream"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="')
        plain = disposition.split('"')[1]
        assert re.fullmatch(r"[A-Za-z0-9._-]+", plain), plain
        assert "sandbox" in response.headers["content-security-policy"]
        missing = await c.get(f"/artifact?id={ids['run']}&name=nope")
        assert missing.status_code == 404


async def test_export_is_kaizen_log_json() -> None:
    async with populated() as (hub, ids):
        async with client(create_app(hub)) as c:
            response = await c.get(f"/export.jsonl?id={ids['run']}")
        assert "attachment" in response.headers["content-disposition"]
        lines = response.text.splitlines()
        records = await hub.store.read(ids["run"])
        expected = [
            orjson.dumps(TrajectoryEntry.from_record(r).to_dict(), default=str).decode()
            for r in records
        ]
        assert lines == expected
        assert [orjson.loads(line)["seq"] for line in lines] == list(range(1, len(records) + 1))


# -- the timeline


def step_block(page: str, seq: int) -> str:
    start = page.index(f'<li id="seq-{seq}" class="row step')
    following = re.search(r'<li id="seq-\d+" class="row', page[start + 10 :])
    return page[start : start + 10 + following.start()] if following else page[start:]


async def test_timeline_pairs_steps_and_nests_their_entries() -> None:
    async with populated() as (hub, ids):
        records = await hub.store.read(ids["run"])
        started = [r for r in records if r[ENTRY_TYPE] == "plan_step_started"]
        completed = [r for r in records if r[ENTRY_TYPE] == "plan_step_completed"]
        async with client(create_app(hub)) as c:
            page = (await c.get(f"/session?id={ids['run']}")).text
        top = re.findall(r'<li id="seq-(\d+)" class="row', page)
        for start, end in zip(started, completed, strict=True):
            assert str(start[SEQ]) in top and str(end[SEQ]) not in top  # one row per step
            block = step_block(page, start[SEQ])
            assert f'href="/entry?id=run-1&amp;seq={end[SEQ]}"' in block
            inside = [r for r in records if start[SEQ] < r[SEQ] < end[SEQ]]
            assert inside, "every step wrote entries"
            for record in inside:
                assert f'<li id="seq-{record[SEQ]}" class="entry' in block  # nested
        reverse, _uppercase, explode = (step_block(page, s[SEQ]) for s in started)
        assert 'class="status status-ok">ok<' in reverse
        assert 'class="status status-failed">failed<' in explode  # a word, not only a colour
        assert re.search(r'<span class="dur">[0-9.]+ (ms|s)</span>', reverse)  # written out
        assert '<svg class="bar"' in reverse and "<rect" in reverse  # and drawn
        assert "agent_failed" in explode


async def test_filters_live_in_the_url_and_narrow_the_timeline() -> None:
    async with populated() as (hub, ids):
        run = ids["run"]
        records = await hub.store.read(run)
        async with client(create_app(hub)) as c:
            page = (await c.get(f"/session?id={run}&type=state_set&type=system_note")).text
            kinds = {"state_set", "system_note"}
            assert entry_seqs(page) == [r[SEQ] for r in records if r[ENTRY_TYPE] in kinds]
            assert '<option value="state_set" selected>' in page
            page = (await c.get(f"/session?id={run}&agent=uppercase_agent_v1")).text
            assert entry_seqs(page) == [
                r[SEQ] for r in records if r[AGENT_ID] == "uppercase_agent_v1"
            ]
            assert 'value="uppercase_agent_v1"' in page
            page = (await c.get(f"/session?id={run}&q=DLROW")).text
            assert entry_seqs(page) == [r[SEQ] for r in records if b"DLROW" in r[CONTENT].upper()]
            assert 'value="DLROW"' in page
            page = (await c.get(f"/session?id={run}&since_seq=4&until_seq=8")).text
            assert entry_seqs(page) == [5, 6, 7, 8]
            bad = await c.get(f"/session?id={run}&type=nope")
            assert bad.status_code == 400
            assert (await c.get(f"/session?id={run}&since_seq=x")).status_code == 400


async def long_session(hub: SessionHub, session_id: str, entries: int) -> list[Record]:
    await hub.create(session_id)
    async with hub.open(session_id) as session, session.transaction() as tx:
        for index in range(entries - 1):
            if index % 3 == 0:
                tx.set("counter", index)
            else:
                tx.append("worker", EntryType.SYSTEM_NOTE, {"n": index})
    return await hub.store.read(session_id)


class CountingStore(ControlledStore):
    """Counts the entries each read returns."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.entries_read = 0

    async def read(self, session_id: str, **kwargs: Any) -> list[Record]:
        found = await super().read(session_id, **kwargs)
        self.entries_read += len(found)
        return found


async def test_a_page_never_sends_or_reads_the_whole_trajectory() -> None:
    store = CountingStore(MemoryStore())
    async with SessionHub(store) as hub:
        records = await long_session(hub, "long", 30_000)
        app = create_app(hub)
        async with client(app) as c:
            await c.get("/session?id=long")  # the first visit counts every entry once
            store.entries_read = 0
            page = (await c.get("/session?id=long")).text
            assert entry_seqs(page) == [r[SEQ] for r in records[-WINDOW:]]
            assert store.entries_read <= 3 * WINDOW + 2_000  # the window and a step lookup
            assert "Earlier entries" in page and "until_seq=29800" in page
            earlier = (await c.get("/session?id=long&until_seq=29800")).text
            assert entry_seqs(earlier) == list(range(29601, 29801))
            assert "Later entries" in earlier
            later = (await c.get("/session?id=long&since_seq=100")).text
            assert entry_seqs(later) == list(range(101, 301))
            around = (await c.get("/session?id=long&around=5000")).text
            assert 5000 in entry_seqs(around) and len(entry_seqs(around)) == WINDOW
            store.entries_read = 0
            search = (await c.get("/session?id=long&q=nomatchanywhere")).text
            assert entry_seqs(search) == []
            assert store.entries_read <= SCAN_BUDGET + 2_000  # bounded, then "earlier"
            assert "Earlier entries" in search
            for seq in (1, 15_000, 30_000):
                assert (await c.get(f"/entry?id=long&seq={seq}")).status_code == 200


async def test_a_step_across_a_window_edge_is_still_one_step() -> None:
    step = {"capability": "c", "plan_id": "p", "step_index": 0}
    async with SessionHub(MemoryStore()) as hub:
        await hub.create("edge")
        async with hub.open("edge") as session:
            await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, {**step, "params": {}})
            async with session.transaction() as tx:
                for index in range(250):  # seqs 3..252, by the step's agent
                    tx.append("worker", EntryType.SYSTEM_NOTE, {"i": index})
            await session.append(
                "dispatcher",
                EntryType.PLAN_STEP_COMPLETED,
                {**step, "result_summary": "{}", "success": True},
            )
        async with client(create_app(hub)) as c:
            latest = (await c.get("/session?id=edge")).text
            assert entry_seqs(latest)[0] == 54 and entry_seqs(latest)[-1] == 253
            row = step_block(latest, 253)  # the end, drawn as the step it closes
            assert "started <a" in row and "seq=2" in row and "(before this window)" in row
            assert 'status-ok">ok<' in row
            assert 'written while steps <a href="#seq-2">2</a> were running' in latest
            earlier = (await c.get("/session?id=edge&until_seq=53")).text
            row = step_block(earlier, 2)  # the start, with its end after the window
            assert "completed <a" in row and "seq=253" in row and 'status-ok">ok<' in row
            assert '<li id="seq-3" class="entry' in row  # nested: it was the only step running


async def test_sessions_page_keyset_paging_and_filter() -> None:
    async with SessionHub(MemoryStore()) as hub:
        for index in range(120):
            await hub.create(f"s{index:03d}", metadata={"team": "red" if index % 2 else "blue"})
        async with client(create_app(hub)) as c:
            first = (await c.get("/")).text
            shown = re.findall(r'href="/session\?id=(s\d+)"', first)
            assert shown == [f"s{i:03d}" for i in range(50)]
            assert 'href="/?after=s049"' in first
            second = (await c.get("/?after=s049")).text
            assert re.findall(r'href="/session\?id=(s\d+)"', second)[0] == "s050"
            third = (await c.get("/?after=s099")).text
            assert len(re.findall(r'href="/session\?id=(s\d+)"', third)) == 20
            assert "Next page" not in third
            red = (await c.get("/?q=red")).text
            assert re.findall(r'href="/session\?id=(s\d+)"', red)[:3] == ["s001", "s003", "s005"]


# -- entry, state, verify, compare


async def test_entry_page_chat_keeps_newlines_and_shows_hashes() -> None:
    async with populated() as (hub, ids):
        records = await hub.store.read(ids["run"])
        exchange = next(r for r in records if r[ENTRY_TYPE] == "llm_exchange")
        async with client(create_app(hub)) as c:
            page = (await c.get(f"/entry?id={ids['run']}&seq={exchange[SEQ]}")).text
            assert f'<div class="msg-text">do it {SECRET}\nsecond line</div>' in page
            assert exchange[HASH] in page and exchange[PREV_HASH] in page
            assert "Raw JSON" in page and "scripted-model" in page
            state = next(
                r for r in records if r[ENTRY_TYPE] == "state_set" and b"DLROW" in r[CONTENT]
            )
            page = (await c.get(f"/entry?id={ids['run']}&seq={state[SEQ]}")).text
            assert '<span class="d d-removed">-   &#34; dlrow olleh&#34;</span>' in page or (
                "d-removed" in page and "d-added" in page
            )
            assert "DLROW OLLEH" in page
            missing = await c.get(f"/entry?id={ids['run']}&seq=9999")
            assert missing.status_code == 404


async def test_state_at_a_version_and_a_diff_between_two() -> None:
    async with SessionHub(MemoryStore()) as hub:
        await hub.create("st")
        async with hub.open("st") as session:
            await session.set("a", 1)  # v1
            await session.set("b", {"x": [1, 2]})  # v2
            await session.set("a", 2)  # v3
            await session.delete("b")  # v4
            await session.set("c", "new")  # v5
            expected = [await session.state_at(v) for v in range(6)]
        async with client(create_app(hub)) as c:
            for version, state in enumerate(expected):
                page = (await c.get(f"/state?id=st&at={version}")).text
                keys = re.findall(r'<th scope="row" class="mono">([^<]+)</th>', page)
                assert keys == sorted(state), version
            diff = (await c.get("/state/diff?id=st&from=2&to=5")).text
            assert "3 key(s) differ" in diff
            assert 'change-changed">changed' in diff and 'change-removed">removed' in diff
            assert 'change-added">added' in diff
            assert (await c.get("/state?id=st&at=6")).status_code == 400


async def test_verify_names_the_first_bad_seq(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with populated(SQLiteStore(path)) as (hub, ids):
        length, head = await head_of(hub, ids["run"])
        async with client(create_app(hub)) as c:
            page = (await c.get(f"/verify?id={ids['run']}")).text
            assert f"intact up to entry {length}" in page and head in page
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE entries SET content = ? WHERE session_id = ? AND seq = 7",
        (b'{"tampered":true}', ids["run"]),
    )
    conn.commit()
    conn.close()
    async with SessionHub(SQLiteStore(path)) as hub, client(create_app(hub)) as c:
        page = (await c.get(f"/verify?id={ids['run']}")).text
        assert "verification FAILED" in page
        assert "The first bad entry is" in page and "seq=7" in page
        session = (await c.get(f"/session?id={ids['run']}")).text
        assert "verification FAILED" in session


async def test_compare_a_fork_with_its_parent_and_unrelated_sessions() -> None:
    async with populated() as (hub, ids):
        run, fork = ids["run"], ids["fork"]
        parent = await hub.store.read(run)
        child = await hub.store.read(fork)
        shared = next(
            i for i, (a, b) in enumerate(zip(parent, child, strict=False)) if a[HASH] != b[HASH]
        )
        async with client(create_app(hub)) as c:
            page = (await c.get(f"/compare?a={run}&b={fork}")).text
            assert f"share entries 1\u2013{shared} and first differ at entry {shared + 1}" in page
            assert f"A from entry {shared + 1}" in page and f"B from entry {shared + 1}" in page
            assert "forked" in page and "only in B" in page  # the final-state diff
            assert "Step durations" in page
            unrelated = (await c.get(f"/compare?a={run}&b={ids['other']}")).text
            assert "No common prefix" in unrelated
            same = (await c.get(f"/compare?a={run}&b={run}")).text
            assert "The histories are the same" in same
            steps = (await c.get(f"/compare?a={ids['other']}&b={run}")).text
            assert steps.count("(slower)") + steps.count("(faster)") == 0  # A ran no steps
            assert re.search(r"<td>reverse <span class=\"status status-ok\">", steps)


# -- live events (finite streams) -----------------------------------------------------------------


def parse_events(text: str) -> list[tuple[str | None, str, str]]:
    """(id, event, data) of each event in a stream."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        if "event" in fields:
            ids = fields.get("id")
            out.append(
                (
                    ids[0] if ids else None,
                    fields["event"][0],
                    "\n".join(fields.get("data", [])),
                )
            )
    return out


async def test_events_resume_after_last_event_id_of_a_finished_snapshot() -> None:
    async with populated() as (hub, ids):
        length = (await hub.store.info(ids["run"])).trajectory_length
        async with client(create_app(hub, follow=False)) as c:
            whole = parse_events((await c.get(f"/events?id={ids['run']}")).text)
            assert [int(i) for i, kind, _ in whole if kind == "entry" and i] == list(
                range(1, length + 1)
            )
            assert whole[-1][1] == "end"
            resumed = await c.get(
                f"/events?id={ids['run']}&since_seq=2", headers={"last-event-id": "9"}
            )
            assert resumed.headers["content-type"].startswith("text/event-stream")
            events = parse_events(resumed.text)
            assert [int(i) for i, kind, _ in events if kind == "entry" and i] == list(
                range(10, length + 1)
            )
            assert (
                await c.get(f"/events?id={ids['run']}", headers={"last-event-id": "x"})
            ).status_code == 400


async def test_events_of_a_session_open_in_the_hub_follow_it_until_it_closes() -> None:
    """The hub's subscription: history after since_seq, each commit as it lands, and the
    end of the stream when the session closes (the hub closing closes it)."""
    result: dict[str, Any] = {}
    with anyio.fail_after(30):
        await _follow_open_session(result)
    events = parse_events(result["r"].text)
    assert [int(i) for i, kind, _ in events if kind == "entry" and i] == result["expected"]
    assert events[-1][1] == "end"
    assert ": ping\n\n" in result["r"].text


async def _follow_open_session(result: dict[str, Any]) -> None:
    async with anyio.create_task_group() as group, SessionHub(MemoryStore()) as hub:
        await hub.create("live")
        async with hub.open("live") as session:
            await session.set("k", 0)
            # a poll would stall the test: the subscription must be what serves it
            app = create_app(hub, poll_interval=3600.0, heartbeat=0.05)

            async def get() -> None:
                async with client(app) as c:
                    result["r"] = await c.get("/events?id=live&since_seq=1")

            group.start_soon(get)
            with anyio.fail_after(10):
                while hub._slots["live"].leases < 2:  # the stream holds its own lease
                    await anyio.sleep(0.01)
            for value in range(1, 6):
                await session.set("k", value)
            async with session.transaction() as tx:
                tx.append("agent", EntryType.SYSTEM_NOTE, {"x": 1})
                tx.append("agent", EntryType.SYSTEM_NOTE, {"x": 2})
            length = await session.get_trajectory_length()
            result["expected"] = list(range(2, length + 1))
            await anyio.sleep(0.3)  # idle: keep-alive comments go out


# -- files, mounting, errors


async def test_a_kaizen_file_is_shown_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "run.kaizen"
    async with Session(session_id="filed") as session:
        await session.set("k", "<b>v</b>")
        await session.save(path)
        expected = [r for r in session._core.records]
    async with SessionHub(MemoryStore()) as hub:
        assert await load_files(hub.store, [path]) == ["filed"]
        records = await hub.store.read("filed")
        assert records == expected  # nothing appended, not even session_loaded
        async with client(create_app(hub, follow=False)) as c:
            page = (await c.get("/session?id=filed")).text
            assert "cannot grow" in page and "data-events" not in page
            assert str(markupsafe.escape("<b>v</b>")) in (await c.get("/state?id=filed")).text
            events = parse_events((await c.get("/events?id=filed")).text)
            assert [e[1] for e in events] == ["entry"] * len(expected) + ["end"]


async def test_mounted_under_a_prefix_links_stay_inside_it() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async with populated() as (hub, ids):
        outer = Starlette(routes=[Mount("/inspect", app=create_app(hub))])
        async with client(outer) as c:
            page = (await c.get(f"/inspect/session?id={ids['run']}")).text
            assert 'href="/inspect/static/inspector.css"' in page
            assert f'href="/inspect/entry?id={ids["run"]}&amp;seq=1"' in page
            assert (await c.get("/inspect/static/inspector.js")).status_code == 200


async def test_unknown_sessions_and_bad_parameters_get_error_pages() -> None:
    async with populated() as (hub, _ids), client(create_app(hub)) as c:
        for path in (
            "/session?id=nope",
            "/state?id=nope",
            "/verify?id=nope",
            "/events?id=nope",
        ):
            response = await c.get(path)
            assert response.status_code == 404, path
            assert "No such session" in response.text
        for path in (
            "/session",
            "/entry?id=run-1",
            "/entry?id=run-1&seq=0",
            "/state?id=run-1&at=-1",
            "/compare?a=run-1&b=nope",
        ):
            assert (await c.get(path)).status_code in (400, 404), path


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(# example: inspector\n.*?)```", readme, re.S)
    assert len(blocks) == 1
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": root},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200 True"
