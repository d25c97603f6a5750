"""Logging: each step's ``dispatch.step`` event reaches the application's structlog
configuration, ``capture_logs()`` or stdlib logging, and nothing when nothing is configured."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from agents import ReverseAgent
from kaizen_async import Dispatcher, Session
from kaizen_async._logging import _Logger

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {
    "session_id",
    "plan_id",
    "step_index",
    "capability",
    "agent_id",
    "duration_ms",
    "outcome",
}


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog at its built-in defaults for the test; the previous configuration after.

    (``capture_logs()`` leaves ``structlog.is_configured()`` True, so it is reset here.)
    """
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        if was_configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()


async def _two_steps(session: Session) -> None:
    """One step that succeeds (reverse) and one that fails (no agent for "fly")."""
    async with Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        await session.set("text", "abc")
        await dispatcher.dispatch_single("reverse", session, {"key": "text"}, plan_id="p")
        await dispatcher.dispatch_single("fly", session, {}, plan_id="q")


def _check_steps(steps: list[MutableMapping[str, Any]], session: Session) -> None:
    assert len(steps) == 2
    ok, failed = steps
    assert set(ok) >= FIELDS and set(failed) >= FIELDS
    assert ok["session_id"] == session.session_id == failed["session_id"]
    assert (ok["plan_id"], ok["step_index"], ok["capability"]) == ("p", 0, "reverse")
    assert ok["agent_id"] == "reverse_agent_v1" and ok["outcome"] == "success"
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    assert (failed["plan_id"], failed["capability"], failed["agent_id"]) == (
        "q",
        "fly",
        "dispatcher",
    )
    assert failed["outcome"] == "dispatch_no_agent_for_capability"


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_capture_logs_receives_each_step(session: Session) -> None:
    with structlog.testing.capture_logs() as logs:
        await _two_steps(session)
    steps = [entry for entry in logs if entry["event"] == "dispatch.step"]
    _check_steps(steps, session)
    assert [s["log_level"] for s in steps] == ["info", "warning"]


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_configured_structlog_receives_each_step(session: Session) -> None:
    seen: list[MutableMapping[str, Any]] = []

    def collect(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        seen.append({**event_dict, "method": method})
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.processors.add_log_level, collect],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    await _two_steps(session)
    steps = [entry for entry in seen if entry["event"] == "dispatch.step"]
    _check_steps(steps, session)
    assert [s["level"] for s in steps] == ["info", "warning"]

    # the application's level filter applies: at WARNING only the failed step arrives
    seen.clear()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    await _two_steps(session)
    assert [s["outcome"] for s in seen if s["event"] == "dispatch.step"] == [
        "dispatch_no_agent_for_capability"
    ]


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_stdlib_logging_receives_each_step_at_its_level(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kaizen_async"):
        await _two_steps(session)
    records = [r for r in caplog.records if r.getMessage() == "dispatch.step"]
    assert {r.name for r in records} == {"kaizen_async.dispatcher"}
    _check_steps([r.__dict__ for r in records], session)
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kaizen_async"):
        await _two_steps(session)
    assert [r.__dict__["capability"] for r in caplog.records] == ["fly"]


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_disabled_logging_is_skipped(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing configured a successful (INFO) step builds no event at all."""
    events: list[tuple[int, str]] = []
    real = _Logger.log

    def spy(self: _Logger, level: int, event: str, **fields: Any) -> None:
        events.append((level, event))
        real(self, level, event, **fields)

    monkeypatch.setattr(_Logger, "log", spy)
    await _two_steps(session)
    # only the failed step: stdlib's WARNING is enabled by default (and goes nowhere)
    assert events == [(logging.WARNING, "dispatch.step")]


def test_an_application_that_configures_nothing_sees_nothing(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import anyio
        from kaizen_async import Dispatcher, Session
        from agents import ReverseAgent

        class Again(ReverseAgent):
            agent_id = "again"

        async def main() -> None:
            async with Session() as session, Dispatcher() as dispatcher:
                dispatcher.register(ReverseAgent())
                await session.set("text", "abc")
                await dispatcher.dispatch_single("reverse", session, {"key": "text"})
                await dispatcher.dispatch_single("fly", session, {})
                dispatcher.register(Again())  # a warning: "reverse" is taken over

        anyio.run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
