"""The final report, written by an agent as the run's last step (artifact ``report.txt``,
state ``result``) and printed by the job."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from kaizen_async import Agent, InvokeResult, Session, capability

from ._toolchain import CHECKS

__all__ = ["ReportAgent", "ReportParams", "checks_by_round", "render_report", "shown"]

REPORTER_ID = "py2go_reporter"


class ReportParams(BaseModel):
    """Params of ``write_report``: facts only the job knows."""

    model_config = ConfigDict(extra="forbid")

    wall_seconds: float
    model: str
    max_rounds: int
    resumed: bool
    stopped: str | None = None


def shown(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it (shorter to read)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def checks_by_round(state: dict[str, Any]) -> dict[int, dict[str, dict[str, Any]]]:
    """Every recorded check outcome: round -> check -> outcome."""
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    for key, value in state.items():
        if key.startswith("checks/"):
            _, number, check = key.split("/")
            rounds.setdefault(int(number), {})[check] = value
    return dict(sorted(rounds.items()))


def _status(outcome: dict[str, Any] | None) -> str:
    if outcome is None:
        return "-"
    if outcome["ok"]:
        return "pass"
    return "TIMEOUT" if outcome["timed_out"] else "FAIL"


def render_report(
    state: dict[str, Any],
    *,
    run_id: str,
    artifacts: list[str],
    trajectory_length: int,
    params: ReportParams,
) -> tuple[str, dict[str, Any]]:
    """The report text and the ``result`` record."""
    plan = state.get("plan") or {"files": []}
    job = state.get("job") or {}
    converted = [f for f in plan["files"] if f"converted/{f['py']}" in state]
    rounds = checks_by_round(state)
    last = rounds[max(rounds)] if rounds else {}
    passed = bool(last) and all(last.get(c, {}).get("ok") for c in CHECKS)
    fix_rounds = max((r for r in rounds if r > 0), default=0)
    go_lines = int(state.get("go_lines", 0))
    status = "PASSED: go build, go vet and go test pass" if passed else "INCOMPLETE"
    if not passed and params.stopped:
        status += f" ({params.stopped})"
    lines = [
        f"py_to_go report, run {run_id}",
        f"  status:      {status}",
        f"  source:      {shown(job.get('source', '?'))} "
        f"({plan.get('python_lines', 0)} Python lines)",
        f"  Go module:   {shown(job.get('workdir', '?'))} ({job.get('module', '?')})",
        f"  model:       {params.model}",
        f"  files:       {len(converted)}/{len(plan['files'])} converted, {go_lines} Go lines",
        f"  rounds:      {fix_rounds} fix round(s) used of at most {params.max_rounds}",
    ]
    for number, checks in rounds.items():
        label = "after conversion" if number == 0 else f"after fix round {number}"
        cells = "  ".join(f"{c} {_status(checks.get(c))}" for c in CHECKS)
        lines.append(f"    round {number} ({label}): {cells}")
        failed = next((checks[c] for c in CHECKS if c in checks and not checks[c]["ok"]), None)
        if failed and failed["blamed"]:
            lines.append(f"      blamed: {', '.join(sorted(failed['blamed']))}")
        fixes = state.get(f"fixes/{number + 1:02d}")
        if fixes is not None:
            rules = sum(len(v) for v in fixes["rules"].values())
            rewritten = ", ".join(sorted(fixes["needs_model"])) or "nothing"
            lines.append(
                f"      fix round {number + 1}: {rules} rule fix(es), model rewrote {rewritten}"
            )
    lines += [
        f"  trajectory:  {trajectory_length} entries (when this report was written)",
        f"  artifacts:   {len(artifacts)} ({_artifact_summary(artifacts)})",
        f"  wall time:   {params.wall_seconds:.1f}s"
        + (" (this invocation; the run was resumed)" if params.resumed else ""),
    ]
    result = {
        "passed": passed,
        "files_converted": len(converted),
        "files_planned": len(plan["files"]),
        "go_lines": go_lines,
        "fix_rounds": fix_rounds,
        "checks": {str(n): {c: _status(v.get(c)) for c in CHECKS} for n, v in rounds.items()},
    }
    return "\n".join(lines) + "\n", result


def _artifact_summary(names: list[str]) -> str:
    groups: dict[str, int] = {}
    for name in names:
        head = name.split("/", 1)[0] if "/" in name else name
        groups[head] = groups.get(head, 0) + 1
    return ", ".join(f"{head}: {count}" for head, count in sorted(groups.items()))


class ReportAgent(Agent):
    """Writes the report (``report.txt``) and the ``result`` record."""

    agent_id = REPORTER_ID
    name = "Reporter"
    description = "Summarizes the run."

    @capability(
        "write_report", params=ReportParams, description="Write the run's report.", idempotent=True
    )
    async def write_report(self, session: Session, params: ReportParams) -> InvokeResult:
        state = await session.get_all_state()
        artifacts = await session.list_artifacts()
        go_lines = 0
        for name in artifacts:
            if name.startswith("go/") and name.endswith(".go"):
                go_lines += len((await session.read_artifact(name)).splitlines())
        state["go_lines"] = go_lines
        if "report.txt" not in artifacts:
            artifacts = sorted([*artifacts, "report.txt"])
        text, result = render_report(
            state,
            run_id=session.session_id,
            artifacts=artifacts,
            trajectory_length=await session.get_trajectory_length(),
            params=params,
        )
        async with session.transaction() as tx:
            tx.write_artifact("report.txt", text.encode())
            tx.set("result", result)
        return self.ok({"text": text, **result}, "write_report")
