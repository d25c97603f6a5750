"""Open plan steps: the effect journal's bookkeeping.

A dispatched step is ``plan_step_started`` ... ``plan_step_completed``, matched by
``(plan_id, step_index)``. A step whose start is recorded but whose end never came (the
process died in between) may or may not have taken effect. When such a session is opened
again the step is closed with a failed ``plan_step_completed`` carrying the error code
``step_interrupted``, so the trajectory never holds a step without an end and
``resume_sequence`` knows to ask before running it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from ._canonical import decode, encode
from ._exceptions import ErrorCode
from ._trajectory import CONTENT, SEQ, EntryType, Record
from ._types import InvokeResult

__all__ = [
    "COMPLETED",
    "STARTED",
    "OpenSteps",
    "completed_content",
    "find_open_steps",
    "interrupted_content",
    "started_content",
]

STARTED = EntryType.PLAN_STEP_STARTED.value
COMPLETED = EntryType.PLAN_STEP_COMPLETED.value
_SUMMARY_CHARS = 200  # characters of a step's result_summary

StepKey = tuple[str, int]

_dumps = orjson.dumps
_STARTED_CONTENT = b'{"capability":%b,"params":%b,"plan_id":%b,"step_index":%d}'
_COMPLETED_CONTENT = (
    b'{"capability":%b,"plan_id":%b,"result_summary":%b,"step_index":%d,"success":%b}'
)


def started_content(
    capability_json: bytes, params_json: bytes, plan_json: bytes, index: int
) -> bytes:
    """The canonical content of ``plan_step_started`` from its already encoded parts."""
    return _STARTED_CONTENT % (capability_json, params_json, plan_json, index)


def completed_content(
    capability_json: bytes,
    plan_json: bytes,
    index: int,
    result: InvokeResult,
    result_json: bytes | None = None,
) -> bytes:
    """The canonical content of ``plan_step_completed``: the step and a summary of its
    result (the first 200 characters of the result or error as JSON). ``result_json``:
    the canonical JSON of a successful result, when the caller has it already."""
    if result_json is not None and len(result_json) <= _SUMMARY_CHARS:
        # short enough to be its own summary; as a JSON string only quotes and
        # backslashes need escaping (control characters are escaped inside JSON already)
        summary = b'"%b"' % result_json.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    else:
        summary = _dumps(result_summary(result))
    return _COMPLETED_CONTENT % (
        capability_json,
        plan_json,
        summary,
        index,
        b"true" if result.success else b"false",
    )


def result_summary(result: InvokeResult) -> str:
    """The first 200 characters of the result (or error) as JSON; repr() if it is not JSON."""
    value = result.result if result.success else result.error
    try:
        text = _dumps(value, default=repr, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. int dict keys, ints past 64 bits
        text = repr(value)
    return text[:_SUMMARY_CHARS]


def step_key(content: bytes) -> StepKey | None:
    """``(plan_id, step_index)`` of a step entry, or None if its content has neither."""
    try:
        body = decode(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    plan_id, index = body.get("plan_id"), body.get("step_index")
    if not isinstance(plan_id, str) or type(index) is not int:
        return None
    return (plan_id, index)


class OpenSteps:
    """Steps started and not yet completed: ``(plan_id, step_index)`` -> started seqs.

    A key maps to a list because a plan may be resumed (the same step started again) and,
    in principle, two dispatchers may run the same plan; completions close the oldest.
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: dict[StepKey, list[int]] = {}

    def started(self, seq: int, content: bytes, key: StepKey | None = None) -> bool:
        """A step's start at ``seq``; ``key``: its ``(plan_id, step_index)`` when known
        (else read from ``content``). False: no step key (not a step's entry)."""
        if key is None:
            key = step_key(content)
            if key is None:
                return False
        self.steps.setdefault(key, []).append(seq)
        return True

    def completed(self, content: bytes, key: StepKey | None = None) -> bool:
        """A step's end (closes its oldest open start); False if none was open."""
        if key is None:
            key = step_key(content)
        seqs = None if key is None else self.steps.get(key)
        if not seqs:
            return False
        seqs.pop(0)
        if not seqs:
            del self.steps[key]  # type: ignore[arg-type]
        return True

    def seqs(self) -> tuple[int, ...]:
        return tuple(sorted(seq for seqs in self.steps.values() for seq in seqs))

    def __len__(self) -> int:
        return sum(len(seqs) for seqs in self.steps.values())


def find_open_steps(records: Sequence[Record]) -> list[Record]:
    """The ``plan_step_started`` records of ``records`` (a whole trajectory) never completed.

    Counting first keeps the common case (every step ended) to one pass of string
    comparisons; the contents are decoded only when the counts differ.
    """
    started = completed = 0
    for record in records:
        kind = record[3]
        if kind == STARTED:
            started += 1
        elif kind == COMPLETED:
            completed += 1
    if started <= completed:
        return []
    steps = OpenSteps()
    by_seq: dict[int, Record] = {}
    for record in records:
        kind = record[3]
        if kind == STARTED:
            if steps.started(record[0], record[4]):
                by_seq[record[0]] = record
        elif kind == COMPLETED:
            steps.completed(record[4])
    return [by_seq[seq] for seq in steps.seqs()]


def interrupted_content(started: Record) -> bytes:
    """The ``plan_step_completed`` content that closes an interrupted step.

    The dispatcher's completed shape (capability, plan_id, result_summary, step_index,
    success) plus ``error_code``: ``step_interrupted``.
    """
    body = decode(started[CONTENT])
    capability = body.get("capability") if isinstance(body, dict) else None
    plan_id, index = step_key(started[CONTENT]) or ("", -1)
    error = {
        "error_code": ErrorCode.STEP_INTERRUPTED.value,
        "message": (
            f"step {index} ({capability!r}) of plan {plan_id!r} was started (seq "
            f"{started[SEQ]}) but never completed: it may have taken effect"
        ),
        "details": {"started_seq": started[SEQ], "step_index": index},
    }
    summary = orjson.dumps(error, option=orjson.OPT_SORT_KEYS).decode()[:_SUMMARY_CHARS]
    return encode(
        {
            "capability": capability,
            "error_code": ErrorCode.STEP_INTERRUPTED.value,
            "plan_id": plan_id,
            "result_summary": summary,
            "step_index": index,
            "success": False,
        }
    )


def interrupted_records(records: Iterable[Record]) -> list[tuple[str, bytes]]:
    """``(entry_type, content)`` of the completions that close ``records`` (started ones)."""
    return [(COMPLETED, interrupted_content(record)) for record in records]
