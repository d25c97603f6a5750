"""The fixer: repairs what the last check blamed, deterministic rules first, then the model.

``apply_rules {round}`` reads the failed check of the round before, applies the rules of
:mod:`._rules` to every blamed file, and records which files still need the model (with
the diagnostics no rule handled) as state ``fixes/NN``; its edits and that record are
written in one transaction, so running it again after an interruption is safe.
``rewrite_file {round, file}`` asks the model to rewrite one of those files.

A failed test blames the ``_test.go`` file that defines it; the files the test exercises
are the ones rewritten (the tests come from the Python tests, which define the behaviour),
with the failing test's code shown to the model. A test file with nothing of the package
to blame is rewritten itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kaizen_async import Agent, InvokeResult, LLMError, Session, capability
from kaizen_async.llm import LLMProvider

from ._converter import ask_for_go, go_code
from ._progress import Observer
from ._prompts import fix_prompt
from ._rules import apply_rules
from ._toolchain import CHECKS

__all__ = ["FixerAgent", "RewriteParams", "failed_check"]

FIXER_ID = "py2go_fixer"


class FixRoundParams(BaseModel):
    """Params of ``apply_rules``: the fix round (1 is the first)."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)


class RewriteParams(BaseModel):
    """Params of ``rewrite_file``: the fix round and the Go file to rewrite."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)
    file: str


def failed_check(state: dict[str, Any], round_number: int) -> tuple[str, dict[str, Any]] | None:
    """The first check of ``round_number`` that failed, with its outcome (None: none did)."""
    for check in CHECKS:
        outcome = state.get(f"checks/{round_number:02d}/{check}")
        if outcome is None:
            return None
        if not outcome["ok"]:
            return check, outcome
    return None


def _targets(
    check: str, outcome: dict[str, Any], plan: dict[str, Any]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The files to repair with their diagnostics, and the related files to show with each."""
    blamed: dict[str, list[str]] = outcome["blamed"]
    related: dict[str, list[str]] = {}
    if check != "test" or "--- FAIL:" not in outcome["output"]:
        return blamed, related
    by_go = {f["go"]: f for f in plan["files"]}
    by_py = {f["py"]: f for f in plan["files"]}
    targets: dict[str, list[str]] = {}
    for name, lines in blamed.items():
        entry = by_go.get(name)
        subjects = (
            [by_py[d]["go"] for d in entry["deps"] if d in by_py and not by_py[d]["test"]]
            if entry is not None and entry["test"]
            else []
        )
        for subject in subjects or [name]:
            targets.setdefault(subject, []).extend(lines)
            if subject != name:
                related.setdefault(subject, []).append(name)
    return targets, related


class FixerAgent(Agent):
    """Applies deterministic fixes and asks the model for the rest (module docstring).

    Args:
        llm: the model.
        options: model options sent with every request.
        observer: told about each fix (the progress display).
    """

    agent_id = FIXER_ID
    name = "Fixer"
    description = "Repairs the Go files the toolchain blames."

    def __init__(
        self, llm: LLMProvider, *, options: dict[str, Any], observer: Observer | None = None
    ) -> None:
        self.llm = llm
        self.options = options
        self.observer = observer

    @capability(
        "apply_rules",
        params=FixRoundParams,
        description="Apply the deterministic fixes to the files the last check blamed.",
        idempotent=True,  # its edits and its record are one transaction: all or nothing
    )
    async def apply_rules(self, session: Session, params: FixRoundParams) -> InvokeResult:
        state = await session.get_all_state()
        plan = state["plan"]
        found = failed_check(state, params.round - 1)
        if found is None:
            return self.invalid_params(
                f"round {params.round - 1} has no failed check to fix", "apply_rules"
            )
        check, outcome = found
        targets, related = _targets(check, outcome, plan)
        current = await go_code(session, sorted(targets))
        rules: dict[str, list[str]] = {}
        needs_model: dict[str, list[str]] = {}
        changed: dict[str, str] = {}
        for name in sorted(targets):
            if name not in current:
                continue
            result = apply_rules(current[name], targets[name])
            if result.changed:
                rules[name] = result.applied
                changed[name] = result.text
            if result.unhandled:
                needs_model[name] = result.unhandled
        record = {
            "check": check,
            "rules": rules,
            "needs_model": needs_model,
            "related": {k: v for k, v in related.items() if k in needs_model},
        }
        summary = [f"round {params.round}: fixing what `go {check}` reported"]
        for name, applied in rules.items():
            summary += [f"{name}: {a}" for a in applied]
        summary += [f"{name}: left for the model" for name in needs_model]
        async with session.transaction() as tx:
            for name, text in changed.items():
                tx.write_artifact(f"go/{name}", text.encode())
            tx.write_artifact(f"fixes/round-{params.round:02d}.txt", "\n".join(summary).encode())
            tx.set(f"fixes/{params.round:02d}", record)
        if self.observer is not None:
            self.observer.note(
                "rules",
                round=params.round,
                rules=sum(map(len, rules.values())),
                files=sorted(needs_model),
            )
        return self.ok(
            {"rules_applied": sum(map(len, rules.values())), "needs_model": sorted(needs_model)},
            "apply_rules",
        )

    @capability(
        "rewrite_file",
        params=RewriteParams,
        description="Ask the model to rewrite one Go file the last check blamed.",
    )
    async def rewrite_file(self, session: Session, params: RewriteParams) -> InvokeResult:
        plan = await session.get("plan")
        record = await session.get(f"fixes/{params.round:02d}")
        if plan is None or record is None or params.file not in record["needs_model"]:
            return self.invalid_params(
                f"{params.file} is not to be rewritten in round {params.round}", "rewrite_file"
            )
        by_go = {f["go"]: f for f in plan["files"]}
        by_py = {f["py"]: f for f in plan["files"]}
        entry = by_go[params.file]
        current = (await session.read_artifact(f"go/{params.file}")).decode()
        python = (await session.read_artifact(f"source/{entry['py']}")).decode()
        names = [by_py[d]["go"] for d in entry["deps"] if d in by_py]
        names += record["related"].get(params.file, [])
        prompt = fix_prompt(
            go_name=params.file,
            py_name=entry["py"],
            package=plan["package"],
            go=current,
            python=python,
            errors=record["needs_model"][params.file],
            test=entry["test"],
            deps=await go_code(session, sorted(set(names))),
        )
        if self.observer is not None:
            self.observer.note("rewriting", round=params.round, file=params.file)
        try:
            go, facts = await ask_for_go(self.llm, prompt, session, self.options)
        except LLMError as exc:
            return InvokeResult.fail(
                "llm_error",
                f"the model failed on {params.file}: {exc}",
                self.agent_id,
                "rewrite_file",
            )
        if go is None:
            return InvokeResult.fail(
                "no_go_code",
                f"the model's answer for {params.file} holds no Go file",
                self.agent_id,
                "rewrite_file",
            )
        rewrite = {
            "lines": len(go.splitlines()),
            "sha256": hashlib.sha256(go.encode()).hexdigest(),
            "changed": go != current,
            **facts,
        }
        async with session.transaction() as tx:
            tx.write_artifact(f"go/{params.file}", go.encode())
            tx.set(f"rewrites/{params.round:02d}/{params.file}", rewrite)
        if self.observer is not None:
            self.observer.note("rewritten", round=params.round, file=params.file)
        return self.ok({"file": params.file, "changed": rewrite["changed"]}, "rewrite_file")
