"""The benchmark scripts with rows per backend and per peer run end to end at their
``--tiny`` size and write the JSON keys they document (their figures are not checked: a
tiny run on a shared machine measures nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str) -> str:
    """Run ``benchmarks/<script> ARGS`` on this checkout; its stdout (it must succeed)."""
    # the child imports this worktree's kaizen_async and agents, not the installed ones
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_tiny(script: str, results: Path) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks/<script> --tiny`` on this checkout; its stdout and its JSON."""
    out = run_script(script, "--tiny", "--results", str(results))
    name = {"bench_dispatch.py": "dispatch", "bench_peers.py": "peers", "bench_sync.py": "sync"}[
        script
    ]
    return out, json.loads((results / f"{name}.json").read_text())


def test_bench_dispatch_rows_per_backend_with_targets(tmp_path: Path) -> None:
    out, data = run_tiny("bench_dispatch.py", tmp_path)
    for key in (
        "asyncio_queue_per_s",
        "anyio_stream_per_s",
        "dispatch_one_caller_per_s",
        "dispatch_64_sessions_per_s",
        "dispatch_64_on_one_session_per_s",
    ):
        assert data[key] > 0
    assert set(data["backends"]) == {"asyncio", "trio", "uvloop"}
    assert data["backends"]["trio"]["one_caller"] > 0
    assert set(data["targets"]) >= {
        "asyncio_one_caller_ratio",
        "asyncio_64_sessions_ratio",
        "trio_one_caller_over_asyncio",
        "trio_64_sessions_over_asyncio",
    }
    if data["backends"]["uvloop"] is None:  # not installed: a printed reason instead
        assert data["skipped"]["uvloop"] in out
    else:
        assert data["event_loops"]["uvloop"].startswith("uvloop.")
        assert "uvloop_one_caller_per_s" in data["targets"]
    assert "issue 10 target" in out
    assert ">= 0.25: m" in out


def test_bench_peers_table_and_goal(tmp_path: Path) -> None:
    out, data = run_tiny("bench_peers.py", tmp_path)
    assert data["per_s"]["kaizen_async"]["1"] > 0
    assert data["per_s"]["kaizen_async"]["64"] > 0
    for key in ("thespian", "thespian_ask", "pykka", "autogen_core"):
        # each peer is measured, or skipped with the reason printed
        assert data["per_s"][key] or data["skipped"][key] in out
    assert "goal (issue 10): kaizen_async with its five recorded entries" in out


def test_bench_sync_rows_beside_todays_path_with_targets(tmp_path: Path) -> None:
    out, data = run_tiny("bench_sync.py", tmp_path)
    rows = {"floor", "rcts_noop", "today_1", "sync_1", "today_8", "sync_8"}
    assert set(data["per_s"]) == rows and all(v > 0 for v in data["per_s"].values())
    assert set(data["cpu_us_per_call"]) == rows
    assert set(data["targets"]) == {"sync_1_over_today", "sync_8_over_today"}
    assert out.startswith("load average")
    for threads in (1, 8):
        assert f"sync set >= 2x today's path with {threads} thread(s)" in out


def test_ab_dispatch_compares_two_checkouts_row_by_row() -> None:
    args = ("--rounds", "1", "--steps", "128", "--repeats", "2", "--backend", "trio")
    out = run_script("ab_dispatch.py", str(ROOT), str(ROOT), *args)
    rows = [line.split() for line in out.splitlines() if line.startswith(("1 ", "64 "))]
    assert [" ".join(r[:-3]) for r in rows] == [
        "1 caller",
        "64 callers on 64 sessions",
        "64 callers on 1 session",
    ]
    assert all(float(r[-1]) > 0 for r in rows)  # new/old, whatever a tiny run measures
