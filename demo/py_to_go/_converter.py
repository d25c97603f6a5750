"""The converter: one Python file to one Go file per call, through the model.

It works from the session alone: the Python source is the mapper's snapshot
(``source/<file>``), the Go code of the files it imports is what earlier conversions
wrote (``go/<file>``). The answer's Go file and the record ``converted/<file>`` are written
in one transaction, so a file is either converted or not, never half.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from kaizen_async import Agent, ArtifactNotFoundError, InvokeResult, LLMError, Session, capability
from kaizen_async.llm import LLMProvider

from ._progress import Observer
from ._prompts import SYSTEM, convert_prompt, extract_go

__all__ = ["ConvertParams", "ConverterAgent", "ask_for_go", "planned_file"]

CONVERTER_ID = "py2go_converter"


class ConvertParams(BaseModel):
    """Params of ``convert_file``: the Python file, as the plan names it."""

    model_config = ConfigDict(extra="forbid")

    file: str


def planned_file(plan: dict[str, Any], py: str) -> dict[str, Any] | None:
    """The plan's entry for the Python file ``py``."""
    for entry in plan["files"]:
        if entry["py"] == py:
            return dict(entry)
    return None


async def go_code(session: Session, go_names: list[str]) -> dict[str, str]:
    """The current Go code of the named files that exist in the session."""
    found: dict[str, str] = {}
    for name in go_names:
        try:
            found[name] = (await session.read_artifact(f"go/{name}")).decode()
        except ArtifactNotFoundError:
            continue
    return found


async def ask_for_go(
    llm: LLMProvider, prompt: str, session: Session, options: dict[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """Ask the model; the Go file of its answer (None if it has none) and facts about it.

    The exchange is recorded in ``session`` (an ``llm_exchange`` entry), so the run can
    be replayed without the model.
    """
    response = await llm.complete(prompt, system=SYSTEM, options=options, session=session)
    facts = {
        "model": response.model,
        "output_tokens": response.output_tokens,
        "truncated": response.truncated,
        "duration_ms": response.duration_ms,
    }
    return extract_go(response.text), facts


class ConverterAgent(Agent):
    """Converts one file per call (see the module docstring).

    Args:
        llm: the model.
        options: model options sent with every request (temperature ...).
        observer: told about each converted file (the progress display).
    """

    agent_id = CONVERTER_ID
    name = "Converter"
    description = "Converts one Python file to Go with the model."

    def __init__(
        self, llm: LLMProvider, *, options: dict[str, Any], observer: Observer | None = None
    ) -> None:
        self.llm = llm
        self.options = options
        self.observer = observer

    @capability(
        "convert_file",
        params=ConvertParams,
        description="Convert the Python file `file` of the plan to Go.",
    )
    async def convert_file(self, session: Session, params: ConvertParams) -> InvokeResult:
        plan = await session.get("plan")
        entry = planned_file(plan or {"files": []}, params.file)
        if plan is None or entry is None:
            return self.invalid_params(f"{params.file} is not in the plan", "convert_file")
        by_py = {f["py"]: f for f in plan["files"]}
        python = (await session.read_artifact(f"source/{entry['py']}")).decode()
        deps = await go_code(session, [by_py[d]["go"] for d in entry["deps"] if d in by_py])
        prompt = convert_prompt(
            py_name=entry["py"],
            go_name=entry["go"],
            package=plan["package"],
            python=python,
            test=entry["test"],
            deps=deps,
        )
        if self.observer is not None:
            self.observer.note("converting", file=entry["py"])
        try:
            go, facts = await ask_for_go(self.llm, prompt, session, self.options)
        except LLMError as exc:
            return InvokeResult.fail(
                "llm_error",
                f"the model failed on {entry['py']}: {exc}",
                self.agent_id,
                "convert_file",
            )
        if go is None:
            return InvokeResult.fail(
                "no_go_code",
                f"the model's answer for {entry['py']} holds no Go file",
                self.agent_id,
                "convert_file",
            )
        record = {
            "go": entry["go"],
            "lines": len(go.splitlines()),
            "sha256": hashlib.sha256(go.encode()).hexdigest(),
            **facts,
        }
        async with session.transaction() as tx:
            tx.write_artifact(f"go/{entry['go']}", go.encode())
            tx.set(f"converted/{entry['py']}", record)
        if self.observer is not None:
            self.observer.note("converted", file=entry["py"], go=entry["go"], lines=record["lines"])
        return self.ok(
            {"file": entry["py"], "go": entry["go"], "lines": record["lines"]}, "convert_file"
        )
