"""The job: map, convert wave by wave, then check and fix until the module passes or the
rounds run out. Every piece of work is a capability call through the dispatcher; the job
itself only decides what to call next, from the session's state.

Because every decision is read back from the state, running the job again on the same
session carries on where it stopped: a finished conversion (``converted/<file>``), a
finished check (``checks/NN/<check>``) or fix (``fixes/NN``, ``rewrites/NN/<file>``) is
never run again, and the sequences that are run again go through ``resume_sequence``
under fixed plan ids, which skips their steps that already succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kaizen_async import Dispatcher, DispatchResult, EntryType, Session

from ._progress import Progress
from ._report import shown
from ._toolchain import CHECKS

__all__ = [
    "SETTING_KEYS",
    "Interrupted",
    "Job",
    "JobFailed",
    "Outcome",
    "interrupted_steps",
]

#: what ``map_package`` records in state ``job`` besides the paths, so a resume uses them
SETTING_KEYS = ("provider", "model", "llm_options", "max_rounds", "jobs", "replay_of")
#: attempts at converting (or rewriting) one file before the run stops
ATTEMPTS = 2


class JobFailed(Exception):
    """The job cannot go on (a step failed in a way another round cannot repair)."""


class Interrupted(Exception):
    """Steps that were cut off mid-flight (the process died) and may have had effects."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        names = ", ".join(f"{s['capability']} {s['params']}" for s in steps)
        super().__init__(f"interrupted mid-flight: {names}")


@dataclass
class Outcome:
    """How the run ended."""

    passed: bool
    stopped: str | None = None
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


async def interrupted_steps(session: Session, capability: str) -> list[dict[str, Any]]:
    """The calls of ``capability`` whose latest attempt was interrupted (closed as
    ``step_interrupted`` when the session was opened again): the process died while they
    ran, so whatever they do outside the session (ask a model) may have happened. Each as
    ``{"capability", "params", "plan_id", "step_index"}``; a call run again since (with
    any outcome) is not listed."""
    started: dict[tuple[str, int], dict[str, Any]] = {}
    latest: dict[str, dict[str, Any] | None] = {}  # params (JSON) -> the interruption
    entries = await session.get_trajectory(
        entry_types=[EntryType.PLAN_STEP_STARTED, EntryType.PLAN_STEP_COMPLETED]
    )
    for entry in entries:
        content = entry.content
        if not isinstance(content, dict) or content.get("capability") != capability:
            continue
        key = (str(content.get("plan_id")), int(content.get("step_index", -1)))
        if entry.entry_type is EntryType.PLAN_STEP_STARTED:
            started[key] = content
            continue
        step = started.pop(key, None)
        if step is None:
            continue
        params = step.get("params", {})
        interrupted = not content.get("success") and (
            content.get("error_code") == "step_interrupted"
            or "step_interrupted" in str(content.get("result_summary", ""))
        )
        latest[json.dumps(params, sort_keys=True)] = (
            {"capability": capability, "params": params, "plan_id": key[0], "step_index": key[1]}
            if interrupted
            else None
        )
    return [step for step in latest.values() if step is not None]


def _error(result: DispatchResult) -> str:
    error = result.error or {}
    return f"{error.get('error_code')}: {error.get('message')}"


class Job:
    """One run of the demo on one session.

    Args:
        session: the run's session (new, or one being resumed).
        dispatcher: a running dispatcher with the demo's agents registered.
        progress: the display.
        max_rounds: the most fix rounds.
        jobs: the most conversions (or rewrites) at once.
        rerun_interrupted: run again steps that were interrupted mid-flight.
        ask: asks the user whether to run interrupted steps again (None: never ask).
        checkpoint: makes what was written durable; called after each dispatch.
    """

    def __init__(
        self,
        session: Session,
        dispatcher: Dispatcher,
        progress: Progress,
        *,
        max_rounds: int,
        jobs: int,
        rerun_interrupted: bool = False,
        ask: Callable[[str], Awaitable[bool]] | None = None,
        checkpoint: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.session = session
        self.dispatcher = dispatcher
        self.progress = progress
        self.max_rounds = max_rounds
        self.jobs = jobs
        self.rerun_interrupted = rerun_interrupted
        self.ask = ask
        self.checkpoint = checkpoint

    async def state(self) -> dict[str, Any]:
        return await self.session.get_all_state()

    async def sequence(self, plan_id: str, calls: list[dict[str, Any]]) -> DispatchResult:
        """Run ``calls`` as plan ``plan_id``, skipping its steps that already succeeded."""
        result = await self.dispatcher.resume_sequence(
            calls, self.session, plan_id=plan_id, rerun_interrupted=self.rerun_interrupted
        )
        await self._checkpoint()
        return result

    async def parallel(self, prefix: str, calls: list[dict[str, Any]]) -> DispatchResult:
        """Run independent ``calls`` at most ``jobs`` at once, under a new plan id."""
        plan_id = f"{prefix}@{await self.session.get_trajectory_length()}"
        result = await self.dispatcher.dispatch_parallel(
            calls, self.session, max_concurrency=self.jobs, plan_id=plan_id
        )
        await self._checkpoint()
        return result

    async def _checkpoint(self) -> None:
        if self.checkpoint is not None:
            await self.checkpoint()

    async def confirm_interrupted(self, capability: str, pending: set[str], key: str) -> None:
        """Stop (or ask) when a step of ``capability`` on a still-pending target was cut
        off mid-flight: it may have asked the model already, so running it again is the
        user's decision (``--rerun-interrupted``)."""
        steps = [
            s
            for s in await interrupted_steps(self.session, capability)
            if str(s["params"].get(key)) in pending
        ]
        if not steps or self.rerun_interrupted:
            return
        names = ", ".join(f"{capability} {s['params'][key]}" for s in steps)
        question = (
            f"{len(steps)} step(s) were interrupted mid-flight and may have asked the model "
            f"already: {names}. Run them again?"
        )
        if self.ask is not None and await self.ask(question):
            self.rerun_interrupted = True
            return
        raise Interrupted(steps)

    # -- the phases ------------------------------------------------------------------------

    async def map(self, params: dict[str, Any]) -> dict[str, Any]:
        self.progress.note("phase", text=f"mapping {shown(params['source'])}")
        result = await self.sequence("map", [{"capability": "map_package", "params": params}])
        if not result.success:
            raise JobFailed(f"mapping failed: {_error(result)}")
        state = await self.state()
        plan: dict[str, Any] = state["plan"]
        done = sum(f"converted/{f['py']}" in state for f in plan["files"])
        self.progress.note("plan", total=len(plan["files"]), done=done)
        self.progress.note(
            "phase",
            text=f"plan: {len(plan['files'])} files ({plan['python_lines']} Python lines) "
            f"in {len(plan['waves'])} waves of files that do not import each other",
        )
        return plan

    async def go_mod_init(self) -> None:
        result = await self.sequence("go-mod-init", [{"capability": "go_mod_init", "params": {}}])
        if not result.success:
            raise JobFailed(f"go mod init failed: {_error(result)}")
        toolchain = (await self.state())["toolchain"]
        version = toolchain["version"].removeprefix("go version ")
        self.progress.note("phase", text=f"Go module ready ({version})")

    async def convert(self, plan: dict[str, Any]) -> None:
        for number, wave in enumerate(plan["waves"]):
            for attempt in range(ATTEMPTS):
                state = await self.state()
                todo = [py for py in wave if f"converted/{py}" not in state]
                if not todo:
                    break
                await self.confirm_interrupted("convert_file", set(todo), "file")
                if attempt == 0:
                    self.progress.note(
                        "phase", text=f"wave {number + 1}/{len(plan['waves'])}: {', '.join(todo)}"
                    )
                calls = [{"capability": "convert_file", "params": {"file": py}} for py in todo]
                result = await self.parallel(f"convert-wave-{number}", calls)
                for py, step in zip(todo, result.results, strict=True):
                    if not step.success:
                        message = (step.error or {}).get("message", "")
                        self.progress.note("conversion_failed", file=py, error=message)
            state = await self.state()
            missing = [py for py in wave if f"converted/{py}" not in state]
            if missing:
                raise JobFailed(f"could not convert {', '.join(missing)}")

    async def check(self, number: int) -> bool:
        """Round ``number``'s build, vet and test (each only if the one before passed)."""
        self.progress.note("round", number=number)
        state = await self.state()
        if self._check_done(state, number):  # done before a resume: show what it found
            for check in CHECKS:
                outcome = state.get(f"checks/{number:02d}/{check}")
                if outcome is None:
                    break
                self.progress.note(
                    "check",
                    round=number,
                    check=check,
                    ok=outcome["ok"],
                    seconds=outcome["seconds"],
                    blamed=sorted(outcome["blamed"]),
                )
        else:
            calls = [{"capability": f"go_{c}", "params": {"round": number}} for c in CHECKS]
            await self.sequence(f"round-{number:02d}-check", calls)
            state = await self.state()
        outcomes = [state.get(f"checks/{number:02d}/{c}") for c in CHECKS]
        return all(o is not None and o["ok"] for o in outcomes)

    @staticmethod
    def _check_done(state: dict[str, Any], number: int) -> bool:
        for check in CHECKS:
            outcome = state.get(f"checks/{number:02d}/{check}")
            if outcome is None:
                return False
            if not outcome["ok"]:
                return True
        return True

    async def fix(self, number: int) -> bool:
        """Fix round ``number``: the rules, then the model; False when nothing changed."""
        state = await self.state()
        if f"fixes/{number:02d}" not in state:
            result = await self.sequence(
                f"round-{number:02d}-rules",
                [{"capability": "apply_rules", "params": {"round": number}}],
            )
            if not result.success:
                raise JobFailed(f"fix round {number} failed: {_error(result)}")
            state = await self.state()
        record = state[f"fixes/{number:02d}"]
        for _ in range(ATTEMPTS):
            todo = [
                name
                for name in sorted(record["needs_model"])
                if f"rewrites/{number:02d}/{name}" not in state
            ]
            if not todo:
                break
            await self.confirm_interrupted("rewrite_file", set(todo), "file")
            calls = [
                {"capability": "rewrite_file", "params": {"round": number, "file": name}}
                for name in todo
            ]
            await self.parallel(f"round-{number:02d}-rewrite", calls)
            state = await self.state()
        rewrites = [
            state.get(f"rewrites/{number:02d}/{name}") for name in sorted(record["needs_model"])
        ]
        return bool(record["rules"]) or any(r is not None and r["changed"] for r in rewrites)

    async def rounds(self) -> Outcome:
        number = 0
        while True:
            if await self.check(number):
                return Outcome(passed=True, rounds=number)
            if number >= self.max_rounds:
                return Outcome(
                    passed=False,
                    rounds=number,
                    stopped=(
                        f"still failing after {number} fix round(s) "
                        f"(--max-rounds {self.max_rounds})"
                    ),
                )
            number += 1
            self.progress.note("phase", text=f"fix round {number}")
            if not await self.fix(number):
                return Outcome(
                    passed=False,
                    rounds=number,
                    stopped="the fixer could change nothing (no file to blame or no new answer)",
                )

    async def run(self, map_params: dict[str, Any]) -> Outcome:
        """The whole job; ``map_params`` are ``map_package``'s (the same on a resume)."""
        plan = await self.map(map_params)
        await self.go_mod_init()
        await self.convert(plan)
        return await self.rounds()
