"""Which model the job talks to, and the scripted stand-in used when there is none.

The scripted stand-in is not a model: it answers from hand-written Go for the shipped
sample (``scripted/*.go``), chosen by the file the request asks about, so the answers do
not depend on the order parallel conversions ask in. Its first answer for
``inventory.go`` holds one deliberate compile error (an ``int64 * int``) that no
deterministic rule repairs; asked to fix that file, it answers with the correct Go. So a
scripted run goes through every part of the loop: convert, a failed build, the rules, a
rewrite by the "model", a passing build, vet and test.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from kaizen_async import LLMError
from kaizen_async.llm import LLMChunk, LLMProvider, LLMResponse

from ._prompts import prompt_field

__all__ = [
    "MISTAKE",
    "PAUSE_ENV",
    "SAMPLE_DIR",
    "SCRIPTED_DIR",
    "ModelChoice",
    "ScriptedGoModel",
    "scripted_answer",
]

HERE = Path(__file__).resolve().parent
SAMPLE_DIR = HERE / "sample"
SCRIPTED_DIR = HERE / "scripted"
#: the deliberate mistake of the first answers: (file, correct text, text answered first)
MISTAKE = (
    "inventory.go",
    "item.UnitPrice.Cents * int64(inv.OnHand(sku))",
    "item.UnitPrice.Cents * inv.OnHand(sku)",
)
#: ``FILE=SECONDS[,FILE=SECONDS]``: the stand-in sleeps that long before answering about
#: FILE (a test hook: it holds the run at a known point, e.g. to kill it there)
PAUSE_ENV = "PY_TO_GO_SCRIPTED_PAUSE"

_PYTHON_BLOCK = re.compile(
    r"^Python source \((?P<name>[^)]+)\):\n```python\n(?P<code>.*?)\n```", re.M | re.S
)


def scripted_answer(go_name: str, *, fixing: bool) -> str:
    """The stand-in's Go for ``go_name`` (the first answer has the one mistake)."""
    path = SCRIPTED_DIR / go_name
    if not path.is_file():
        raise LLMError(
            f"the scripted stand-in has no Go for {go_name}: it only knows the shipped sample",
            provider="scripted",
        )
    text = path.read_text(encoding="utf-8")
    if go_name == MISTAKE[0] and not fixing:
        text = text.replace(MISTAKE[1], MISTAKE[2])
    return text


def _pauses() -> dict[str, float]:
    pauses: dict[str, float] = {}
    for item in os.environ.get(PAUSE_ENV, "").split(","):
        name, _, seconds = item.partition("=")
        if name.strip() and seconds.strip():
            pauses[name.strip()] = float(seconds)
    return pauses


class ScriptedGoModel(LLMProvider):
    """The scripted stand-in for a model (see the module docstring).

    It checks that the Python in the request is the shipped sample's, so it never answers
    for code it was not written for.
    """

    name = "scripted"

    def __init__(self, *, chunk_size: int = 256) -> None:
        self._chunk_size = chunk_size
        self._pauses = _pauses()

    @property
    def model_name(self) -> str:
        return "scripted-stand-in"

    def _exchange(self, request: dict[str, Any]) -> AsyncIterator[LLMChunk]:
        return self._answer(request)

    async def _answer(self, request: dict[str, Any]) -> AsyncGenerator[LLMChunk, None]:
        messages = request["messages"]
        prompt = str(messages[-1].get("content", "")) if messages else ""
        fix_target = prompt_field(prompt, "Go file to fix")
        go_name = fix_target or prompt_field(prompt, "Go file")
        if go_name is None:
            raise LLMError(
                "the scripted stand-in only answers conversion and fix requests", provider=self.name
            )
        self._check_python(prompt)
        text = scripted_answer(go_name, fixing=fix_target is not None)
        pause = self._pauses.get(go_name)
        if pause:
            print(
                f"scripted stand-in: pausing {pause:g}s before answering for {go_name} "
                f"({PAUSE_ENV})",
                file=sys.stderr,
                flush=True,
            )
            await anyio.sleep(pause)
        answer = f"```go\n{text}```\n"
        for start in range(0, len(answer), self._chunk_size):
            await anyio.lowlevel.checkpoint()
            yield LLMChunk(text=answer[start : start + self._chunk_size])
        response = LLMResponse(
            text=answer, model=self.model_name, provider=self.name, done_reason="stop"
        )
        yield LLMChunk(done=True, response=response)

    def _check_python(self, prompt: str) -> None:
        match = _PYTHON_BLOCK.search(prompt)
        if match is None:
            raise LLMError("no Python source in the request", provider=self.name)
        sample = SAMPLE_DIR / match["name"]
        if not sample.is_file() or sample.read_text(encoding="utf-8").rstrip() != match["code"]:
            raise LLMError(
                f"the scripted stand-in only knows the shipped sample; {match['name']} is not "
                "it (use --provider ollama or openai for other code)",
                provider=self.name,
            )


@dataclass
class ModelChoice:
    """The provider the job uses, how to describe it, and the options sent with requests."""

    provider: LLMProvider
    kind: str
    label: str
    description: str
    options: dict[str, Any]
    scripted: bool = False
