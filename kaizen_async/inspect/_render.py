"""Turning entries and values into text for the templates (escaping is the templates'
job: everything here returns plain strings that Jinja2 autoescapes)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import orjson

from .._trajectory import ENTRY_TYPE, Record
from ._redact import is_hidden
from ._timeline import body

__all__ = [
    "DiffLine",
    "KeyDiff",
    "clip",
    "diff_states",
    "diff_values",
    "one_line",
    "pretty",
    "summary_line",
]

#: characters of an entry's content shown in the timeline before "full entry"
PREVIEW_CHARS = 2_000
#: characters of a one-line summary
LINE_CHARS = 140


def pretty(value: Any) -> str:
    """Indented JSON, keys sorted, non-ASCII kept."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def one_line(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def clip(text: str, limit: int = PREVIEW_CHARS) -> tuple[str, int]:
    """``text`` cut to ``limit`` characters, and how many were cut."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def hidden_text(value: Any) -> str:
    return f"hidden: {value.get('length')} characters, SHA-256 {str(value.get('sha256'))[:16]}…"


def _short(value: Any, limit: int = 60) -> str:
    if is_hidden(value):
        return f"[{hidden_text(value)}]"
    text = value if isinstance(value, str) else one_line(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_line(record: Record) -> str:
    """A short description of an entry, for its timeline row."""
    content = body(record)
    if not isinstance(content, dict):
        return _short(content, LINE_CHARS)
    kind = record[ENTRY_TYPE]
    if kind == "state_set":
        key, value = _short(content.get("key")), _short(content.get("new_value"))
        return f"{key} = {value} (version {content.get('state_version')})"
    if kind == "state_deleted":
        return f"{_short(content.get('key'))} deleted (version {content.get('state_version')})"
    if kind in ("artifact_written", "artifact_deleted"):
        return f"{_short(content.get('name'))} ({content.get('size')} bytes)"
    if kind == "llm_exchange":
        tokens = tokens_text(content)
        parts = [str(content.get("model") or "model")]
        if tokens:
            parts.append(tokens)
        if content.get("error"):
            parts.append(f"error: {_short(content.get('error'))}")
        else:
            parts.append(f"reply: {_short(content.get('response'))}")
        return ", ".join(parts)
    if kind in ("plan_step_started", "plan_step_completed"):
        text = f"{_short(content.get('capability'))} (step {content.get('step_index')})"
        if kind == "plan_step_completed":
            text += f": {_short(content.get('result_summary'), 80)}"
        return text
    if kind == "plan_created":
        calls = content.get("calls")
        count = len(calls) if isinstance(calls, list) else "?"
        return f"{count} step(s) for {_short(content.get('user_input'))}"
    if kind == "plan_failed":
        error = content.get("error")
        code = error.get("error_code") if isinstance(error, dict) else error
        return f"{_short(code)} for {_short(content.get('user_input'))}"
    if kind == "agent_failed":
        return f"{_short(content.get('capability'))}: {_short(content.get('error'), 80)}"
    return _short(content, LINE_CHARS)


def _tokens(usage: dict[str, Any]) -> str:
    prompt = usage.get("prompt_tokens", usage.get("prompt_eval_count"))
    completion = usage.get("completion_tokens", usage.get("eval_count"))
    if prompt is None and completion is None:
        return ""
    given = "?" if prompt is None else prompt
    made = "?" if completion is None else completion
    return f"{given} in / {made} out tokens"


def tokens_text(content: dict[str, Any]) -> str:
    usage = content.get("usage")
    return _tokens(usage) if isinstance(usage, dict) else ""


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff: ``sign`` is ``+`` (added), ``-`` (removed), `` ``
    (unchanged) or ``@`` (a hunk header)."""

    sign: str
    text: str

    @property
    def label(self) -> str:
        return {"+": "added", "-": "removed", "@": "hunk", " ": "same"}[self.sign]


@dataclass(frozen=True)
class KeyDiff:
    """How one state key differs between two versions."""

    key: str
    change: str  # "added", "removed", "changed"
    old: Any
    new: Any
    lines: list[DiffLine]


def diff_values(
    old: Any, new: Any, *, old_label: str = "before", new_label: str = "after"
) -> list[DiffLine]:
    """A unified diff of two JSON values, pretty-printed line by line."""
    a = [] if old is ABSENT else pretty(old).splitlines()
    b = [] if new is ABSENT else pretty(new).splitlines()
    out: list[DiffLine] = []
    for line in difflib.unified_diff(a, b, old_label, new_label, n=3, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        sign = line[:1] if line[:1] in "+- @" else " "
        out.append(DiffLine(sign, line[1:] if sign != "@" else line))
    return out


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()


def diff_states(old: dict[str, Any], new: dict[str, Any]) -> list[KeyDiff]:
    """Per key that differs, sorted: added, removed or changed, with a line diff."""
    out: list[KeyDiff] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, ABSENT), new.get(key, ABSENT)
        if a is not ABSENT and b is not ABSENT and one_line(a) == one_line(b):
            continue
        change = "added" if a is ABSENT else "removed" if b is ABSENT else "changed"
        out.append(
            KeyDiff(
                key,
                change,
                None if a is ABSENT else a,
                None if b is ABSENT else b,
                diff_values(a, b),
            )
        )
    return out
