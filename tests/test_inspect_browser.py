"""The inspector in a real browser: Debian's ``chromium``, headless, driven by Playwright's
sync API from plain test functions, with the server (and any writer) in child processes.

Locally these tests skip, saying why, when chromium or playwright is missing; under
``CI=true`` they fail instead (``.ci/run`` installs chromium).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pytest
from inspect_data import XSS
from inspect_procs import ROOT, TESTS, Server, Writer, child_env, start_server

from kaizen_async import EntryType


def _need_browser() -> str:
    missing = []
    exe = shutil.which("chromium")
    if exe is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    try:
        import axe_playwright_python.sync_playwright  # type: ignore[import-untyped]  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright and axe-playwright-python (pip install -e '.[dev]')")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert exe is not None
    return exe


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=exe, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.dialogs = []
    opened.on("dialog", lambda d: (opened.dialogs.append(d.message), d.dismiss()))
    yield opened
    context.close()


def make_store(path: Path, long_entries: int = 0) -> None:
    """Fill a store in a child process (Playwright's loop runs in this thread)."""
    subprocess.run(
        [sys.executable, str(TESTS / "inspect_make_store.py"), str(path), str(long_entries)],
        check=True,
        env=child_env(),
        cwd=str(ROOT),
        timeout=120,
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[tuple[Server, Path]]:
    """A server over a store with the test sessions (read-only tests share it)."""
    path = tmp_path_factory.mktemp("inspect") / "shared.db"
    make_store(path, long_entries=600)
    running = start_server([f"sqlite:///{path}"])
    yield running, path
    running.stop()


def snapshot(path: Path) -> dict[str, tuple[int, str]]:
    """Entry count and head hash of every session, read with a read-only connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT session_id, head_seq, head_hash FROM sessions").fetchall()
    finally:
        conn.close()
    return {sid: (seq, digest) for sid, seq, digest in rows}


def completed_seqs(path: Path, session_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq FROM entries WHERE session_id = ? AND entry_type = ?",
            (session_id, EntryType.PLAN_STEP_COMPLETED.value),
        ).fetchall()
    finally:
        conn.close()
    return {seq for (seq,) in rows}


def element_seqs(page: Any) -> list[int]:
    ids = page.eval_on_selector_all(
        "#timeline li[id^='seq-']", "els => els.map(e => Number(e.id.slice(4)))"
    )
    return [int(i) for i in ids]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- live ------------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path, browser: Any) -> Iterator[tuple[Path, Writer]]:
    path = tmp_path / "live.db"
    writer = Writer(path, "live")
    yield path, writer
    writer.close()


def assert_complete(page: Any, path: Path, head: int) -> None:
    """Every entry up to ``head`` is on the page once, in order (a step's completed entry
    is folded into its step's row)."""
    seqs = element_seqs(page)
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
    folded = completed_seqs(path, "live")
    assert sorted(set(seqs) | {s for s in folded if s <= head}) == list(range(1, head + 1))


def test_live_rows_appear_in_order_while_another_process_writes(
    page: Any, live: tuple[Path, Writer]
) -> None:
    path, writer = live
    server = start_server([f"sqlite:///{path}"])
    try:
        page.goto(f"{server.base}/session?id=live")
        status = page.locator("#live-status")
        page.wait_for_function("document.getElementById('timeline').dataset.stream === 'open'")
        start = writer.head
        head = writer.write(12, 0.05)
        page.locator(f"#seq-{head - 1}, #seq-{head}").first.wait_for(state="attached")
        wait_for(lambda: int(page.get_attribute("#timeline", "data-last-seq")) == head, what="last")
        assert_complete(page, path, head)
        assert start < head
        # a step's row shows its outcome once its completed entry arrives
        step = page.locator("#timeline li.step").last
        assert "ok" in step.locator("summary .status").text_content()
        assert step.locator("summary .dur").text_content().strip().endswith(("ms", "s"))
        page.wait_for_function(
            "document.getElementById('live-status').textContent.includes('new entr')"
        )
        assert "Live:" in status.text_content()
        assert page.dialogs == []
    finally:
        server.stop()


def test_a_reconnect_after_the_server_restarts_loses_nothing(
    page: Any, live: tuple[Path, Writer]
) -> None:
    path, writer = live
    port = free_port()
    server = start_server([f"sqlite:///{path}"], port=port)
    try:
        page.goto(f"{server.base}/session?id=live")
        page.wait_for_function("document.getElementById('timeline').dataset.stream === 'open'")
        first = writer.write(5)
        page.locator(f"#timeline[data-last-seq='{first}']").wait_for(state="attached")
        server.kill()
        page.wait_for_function(
            "['reconnecting', 'closed']"
            ".includes(document.getElementById('timeline').dataset.stream)"
        )
        head = writer.write(7)  # written while nobody serves the page
        server = start_server([f"sqlite:///{path}"], port=port)
        page.locator(f"#timeline[data-last-seq='{head}']").wait_for(
            state="attached", timeout=30_000
        )
        assert_complete(page, path, head)
    finally:
        server.stop()


def test_pause_stops_updates_and_counts_what_arrived(page: Any, live: tuple[Path, Writer]) -> None:
    path, writer = live
    server = start_server([f"sqlite:///{path}"])
    try:
        page.goto(f"{server.base}/session?id=live")
        page.wait_for_function("document.getElementById('timeline').dataset.stream === 'open'")
        before = writer.head
        pause = page.locator("[data-action='pause']")
        page.get_by_role("button", name="Pause live updates").click()
        assert pause.get_attribute("aria-pressed") == "true"
        assert pause.text_content() == "Resume live updates"
        head = writer.write(4)
        arrived = head - before
        page.get_by_role("status").filter(
            has_text=f"Paused: {arrived} new entries arrived"
        ).wait_for()
        assert page.locator(f"#seq-{before + 1}").count() == 0  # nothing shown while paused
        page.get_by_role("button", name="Resume live updates").click()
        page.locator(f"#timeline[data-last-seq='{head}']").wait_for(state="attached")
        page.locator(f"#seq-{before + 1}").wait_for(state="attached")
        assert_complete(page, path, head)
        assert f"{arrived} new entries added" in page.get_by_role("status").text_content()
        assert page.locator("[aria-live]").count() == 1  # one polite live region
        assert page.get_by_role("status").get_attribute("aria-live") == "polite"
    finally:
        server.stop()


# -- reading the pages -------------------------------------------------------------------------


def test_deep_links_open_and_scroll_to_the_entry(page: Any, shared: tuple[Server, Path]) -> None:
    server, path = shared
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    nested = conn.execute(
        "SELECT seq FROM entries WHERE session_id = 'run-1' AND entry_type = 'state_set' "
        "AND agent_id = 'uppercase_agent_v1'"
    ).fetchone()[0]
    conn.close()
    page.goto(f"{server.base}/session?id=run-1#seq-{nested}")
    target = page.locator(f"#seq-{nested}")
    page.locator(f"#seq-{nested}.flash > details[open]").wait_for()
    parent = page.locator(f"li.step:has(#seq-{nested})")
    assert parent.locator(":scope > details").get_attribute("open") is not None
    assert target.is_visible() and "flash" in (target.get_attribute("class") or "")
    page.wait_for_function(f"document.activeElement.closest('li').id === 'seq-{nested}'")
    # an entry outside the latest window: the page asks for the window around it
    page.goto(f"{server.base}/session?id=long#seq-5")
    page.wait_for_url("**around=5#seq-5")
    page.locator("#seq-5 > details[open]").wait_for()
    assert page.locator("#seq-5").is_visible()
    # the hash changes on the same page too
    page.evaluate("location.hash = '#seq-7'")
    page.locator("#seq-7 > details[open]").wait_for()


def test_collapse_expand_and_the_keyboard(page: Any, shared: tuple[Server, Path]) -> None:
    server, _ = shared
    page.goto(f"{server.base}/session?id=run-1")
    details = page.locator("#timeline details")
    total = details.count()
    assert total > 10
    rows = page.locator("#timeline > li > details > summary")
    rows.nth(2).click()
    rows.nth(5).click()
    assert page.locator("#timeline > li > details[open]").count() == 2  # several open at once
    page.get_by_role("button", name="Expand all").click()
    assert page.locator("#timeline details[open]").count() == total
    page.get_by_role("button", name="Collapse all").click()
    assert page.locator("#timeline details[open]").count() == 0
    # keyboard: "/" focuses the text filter; Tab reaches the buttons; Enter presses them
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "f-q"
    page.get_by_role("button", name="Expand all").focus()
    page.keyboard.press("Enter")
    assert page.locator("#timeline details[open]").count() == total
    first = rows.first
    first.focus()
    page.keyboard.press("Enter")  # a row's summary toggles from the keyboard
    assert page.locator("#timeline > li").first.locator(":scope > details[open]").count() == 0
    # filters live in the URL
    page.fill("#f-q", "DLROW")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**q=DLROW**")
    assert all("dlrow" in t.lower() for t in page.locator("#timeline > li").all_text_contents())


def test_escaped_payloads_open_no_dialog(page: Any, shared: tuple[Server, Path]) -> None:
    server, path = shared
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    note = conn.execute(
        "SELECT seq FROM entries WHERE session_id = 'run-1' AND entry_type = 'system_note'"
    ).fetchone()[0]
    conn.close()
    for where in (
        "/",
        "/session?id=run-1",
        "/state?id=run-1",
        "/artifacts?id=run-1",
        f"/entry?id=run-1&seq={note}",
        "/compare?a=other&b=run-1",
    ):
        page.goto(server.base + where)
        for button in page.get_by_role("button", name="Expand all").all():
            button.click()
        page.wait_for_timeout(100)
        text = page.locator("main").text_content()
        assert any(payload in text for payload in XSS), where
    page.goto(f"{server.base}/session?id=run-1")
    page.get_by_role("button", name="Expand all").click()
    for payload in XSS[:3]:
        assert payload in page.locator("#timeline").text_content()
    assert page.dialogs == []
    assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0


def test_reading_every_page_writes_nothing(page: Any, shared: tuple[Server, Path]) -> None:
    server, path = shared
    before = snapshot(path)
    origin = urlparse(server.base)
    todo = [server.base + "/"]
    seen: set[str] = set()
    while todo and len(seen) < 300:
        url = todo.pop(0)
        if url in seen:
            continue
        seen.add(url)
        parts = urlparse(url)
        if parts.path in ("/artifact", "/export.jsonl"):  # downloads: fetched, not rendered
            response = page.request.get(url)
            assert response.status == 200, url
            continue
        response = page.goto(url, wait_until="domcontentloaded")
        assert response is not None and response.status == 200, url
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            link = urlparse(urljoin(url, href))
            if link.netloc != origin.netloc:
                continue
            clean = link._replace(fragment="").geturl()
            if "id=long" in clean and link.path != "/session":
                continue  # 600 more entry pages of one kind teach nothing new
            if clean not in seen:
                todo.append(clean)
    assert len(seen) > 60
    print(f"visited {len(seen)} pages")
    visited = {urlparse(u).path for u in seen}
    assert {"/", "/session", "/entry", "/state", "/state/diff", "/artifacts", "/verify"} <= visited
    assert {"/export.jsonl", "/artifact", "/compare"} <= visited
    assert snapshot(path) == before


def test_axe_finds_no_violations(page: Any, shared: tuple[Server, Path]) -> None:
    from axe_playwright_python.sync_playwright import Axe

    server, path = shared
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    exchange = conn.execute(
        "SELECT seq FROM entries WHERE session_id = 'run-1' AND entry_type = 'llm_exchange'"
    ).fetchone()[0]
    conn.close()
    axe = Axe()
    problems = {}
    for where in (
        "/",
        "/session?id=run-1",
        f"/entry?id=run-1&seq={exchange}",
        "/compare?a=run-1&b=run-1-fork",
        "/compare?a=run-1&b=other",
        "/verify?id=run-1",
        "/state?id=run-1",
        "/artifacts?id=run-1",
        "/state/diff?id=run-1&from=1&to=5",
    ):
        page.goto(server.base + where)
        for button in page.get_by_role("button", name="Expand all").all():
            button.click()
        results = axe.run(page)
        if results.violations_count:
            problems[where] = results.generate_report()
    assert not problems, problems


def test_screenshot_for_the_readme(page: Any, shared: tuple[Server, Path], tmp_path: Path) -> None:
    """The README's picture: the session page of a planned run, its second step opened.
    Set KAIZEN_UPDATE_SCREENSHOT=1 to write it to docs/inspector.png."""
    server, path = shared
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    step = conn.execute(
        "SELECT seq FROM entries WHERE session_id = 'demo-run' AND entry_type = "
        "'plan_step_started' ORDER BY seq LIMIT 1 OFFSET 1"
    ).fetchone()[0]
    conn.close()
    page.set_viewport_size({"width": 1200, "height": 1250})
    page.goto(f"{server.base}/session?id=demo-run#seq-{step}")
    page.locator(f"#seq-{step} > details[open]").wait_for()
    page.locator(f"#seq-{step} ol.nested > li > details").first.evaluate("d => d.open = true")
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate("document.activeElement.blur()")
    shot = tmp_path / "inspector.png"
    page.screenshot(path=str(shot))
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    if os.environ.get("KAIZEN_UPDATE_SCREENSHOT") == "1":
        target = ROOT / "docs" / "inspector.png"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, target)
