"""The timeline's rows: a step's started and completed entries paired into one row, with
the entries written while it ran nested under it, and durations drawn on one time axis.

Pairing is by ``(plan_id, step_index)``, as the effect journal pairs them. An entry nests
under a step when it was written while exactly that one step was running, by someone other
than ``system`` (the session's own writes): the step's agent, its model exchanges. While
several steps run at once (parallel dispatch) nothing says which one wrote an entry, so it
stays a row of its own that names the running steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._canonical import decode
from .._trajectory import AGENT_ID, CONTENT, ENTRY_TYPE, SEQ, TIMESTAMP, EntryType, Record
from ._reader import step_key

__all__ = ["Axis", "Row", "StepTracker", "build_rows", "duration_text", "parse_time"]

_STARTED = EntryType.PLAN_STEP_STARTED.value
_COMPLETED = EntryType.PLAN_STEP_COMPLETED.value
_LLM = EntryType.LLM_EXCHANGE.value
#: entries that belong to the session or a plan as a whole, never to one step
_NEVER_NESTED = frozenset(
    {
        EntryType.SESSION_CREATED.value,
        EntryType.SESSION_LOADED.value,
        EntryType.SESSION_SAVED.value,
        EntryType.SESSION_FORKED.value,
        EntryType.PLAN_CREATED.value,
        EntryType.PLAN_FAILED.value,
        EntryType.USER_INPUT.value,
        _STARTED,
        _COMPLETED,
    }
)
_OUTSIDER = "system"

#: the words for an entry type (the type name stays visible as well)
TYPE_LABELS = {
    "agent_invoked": "agent invoked",
    "agent_completed": "agent completed",
    "agent_failed": "agent failed",
    "state_set": "state set",
    "state_deleted": "state deleted",
    "artifact_written": "artifact written",
    "artifact_deleted": "artifact deleted",
    "session_created": "session created",
    "session_loaded": "session loaded",
    "session_saved": "session saved",
    "session_forked": "session forked",
    "plan_created": "plan created",
    "plan_failed": "plan failed",
    "plan_step_started": "step started",
    "plan_step_completed": "step completed",
    "llm_exchange": "model exchange",
    "user_input": "user input",
    "system_note": "note",
}


def parse_time(timestamp: str) -> float:
    """Seconds since the epoch of an entry's RFC 3339 timestamp."""
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def duration_text(ms: float | None) -> str:
    """``812 ms``, ``3.41 s``, ``2 min 5 s``, ``1 h 2 min``."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def body(record: Record) -> Any:
    try:
        return decode(record[CONTENT])
    except ValueError:
        return None


@dataclass
class Row:
    """One line of the timeline: a step (started + completed) or a single entry."""

    record: Record  # the started entry of a step, else the entry itself
    end: Record | None = None  # a step's completed entry
    start: Record | None = None  # a step's started entry when it lies outside the window
    children: list[Record] = field(default_factory=list)
    during: tuple[int, ...] = ()  # seqs of the steps running when a lone entry was written
    is_step: bool = False

    @property
    def seq(self) -> int:
        return self.record[SEQ]

    @property
    def anchor(self) -> int:
        """The seq this row's element is named after (``seq-N``)."""
        return self.record[SEQ]

    @property
    def seqs(self) -> list[int]:
        out = [self.record[SEQ]]
        if self.end is not None:
            out.append(self.end[SEQ])
        out.extend(child[SEQ] for child in self.children)
        return out

    @property
    def last_seq(self) -> int:
        return max(self.seqs)

    def _content(self, record: Record | None) -> dict[str, Any]:
        value = None if record is None else body(record)
        return value if isinstance(value, dict) else {}

    @property
    def step_started(self) -> Record | None:
        if not self.is_step:
            return None
        return self.start if self.record[ENTRY_TYPE] == _COMPLETED else self.record

    @property
    def step_completed(self) -> Record | None:
        if not self.is_step:
            return None
        return self.record if self.record[ENTRY_TYPE] == _COMPLETED else self.end

    @property
    def capability(self) -> str:
        started = self._content(self.step_started) or self._content(self.step_completed)
        return str(started.get("capability", ""))

    @property
    def step_index(self) -> Any:
        content = self._content(self.step_started) or self._content(self.step_completed)
        return content.get("step_index")

    @property
    def status(self) -> str:
        """In words: ``ok``, ``failed``, ``interrupted``, ``running`` (no end yet) for a
        step; ``failed`` for an entry that records a failure; else empty."""
        if self.is_step:
            completed = self.step_completed
            if completed is None:
                return "running"
            content = self._content(completed)
            if content.get("success") is True:
                return "ok"
            if "step_interrupted" in str(content.get("result_summary", "")):
                return "interrupted"
            return "failed"
        kind = self.record[ENTRY_TYPE]
        if kind in ("agent_failed", "plan_failed"):
            return "failed"
        if kind == _LLM and self._content(self.record).get("error"):
            return "failed"
        return ""

    @property
    def times(self) -> tuple[float, float] | None:
        """(start, end) seconds of what this row spans, when it spans time."""
        if self.is_step:
            started, completed = self.step_started, self.step_completed
            if started is None or completed is None:
                return None
            return parse_time(started[TIMESTAMP]), parse_time(completed[TIMESTAMP])
        if self.record[ENTRY_TYPE] == _LLM:
            ms = self._content(self.record).get("duration_ms")
            if isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0:
                end = parse_time(self.record[TIMESTAMP])
                return end - ms / 1000.0, end
        return None

    @property
    def duration_ms(self) -> float | None:
        times = self.times
        if times is None:
            return None
        return max(times[1] - times[0], 0.0) * 1000.0

    @property
    def when(self) -> float:
        times = self.times
        return times[0] if times is not None else parse_time(self.record[TIMESTAMP])


@dataclass(frozen=True)
class Axis:
    """One time axis for a window: bars are placed as fractions of ``start..end``."""

    start: float
    end: float

    @classmethod
    def of(cls, rows: list[Row]) -> Axis:
        points: list[float] = []
        for row in rows:
            times = row.times
            if times is not None:
                points.extend(times)
            points.append(parse_time(row.record[TIMESTAMP]))
        if not points:
            return cls(0.0, 0.0)
        return cls(min(points), max(points))

    def bar(self, row: Row) -> tuple[float, float] | None:
        """(x, width) in percent of the axis, or None when the row spans no time. A
        zero-length span still gets a visible sliver."""
        times = row.times
        if times is None:
            return None
        span = self.end - self.start
        if span <= 0:
            return (0.0, 100.0)
        x = (times[0] - self.start) / span * 100.0
        width = (times[1] - times[0]) / span * 100.0
        x = min(max(x, 0.0), 100.0)
        width = min(max(width, 0.5), 100.0 - x if x < 100.0 else 0.5)
        return (round(x, 3), round(width, 3))


class StepTracker:
    """Steps running as entries go by, to pair ends with starts and nest entries."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], list[Row]] = {}

    def running(self) -> list[Row]:
        return [row for rows in self.open.values() for row in rows]

    def place(self, record: Record) -> tuple[str, Row]:
        """Where an entry goes: ``("new", row)`` a new row; ``("end", row)`` it completes
        a step row shown before; ``("child", row)`` it nests under a running step."""
        kind = record[ENTRY_TYPE]
        if kind == _STARTED:
            key = step_key(record)
            row = Row(record, is_step=True)
            if key is not None:
                self.open.setdefault(key, []).append(row)
            return "new", row
        if kind == _COMPLETED:
            key = step_key(record)
            waiting = self.open.get(key) if key is not None else None
            if waiting:
                row = waiting.pop(0)
                if not waiting:
                    del self.open[key]  # type: ignore[arg-type]
                row.end = record
                return "end", row
            return "new", Row(record, is_step=True)
        running = self.running()
        if kind not in _NEVER_NESTED and record[AGENT_ID] != _OUTSIDER and len(running) == 1:
            running[0].children.append(record)
            return "child", running[0]
        row = Row(record)
        if len(running) > 1:
            row.during = tuple(sorted(r.seq for r in running))
        return "new", row


def build_rows(
    records: list[Record],
    starts: dict[tuple[str, int], Record] | None = None,
    ends: dict[tuple[str, int], Record] | None = None,
    running_before: list[Record] | None = None,
) -> list[Row]:
    """Rows for a window of entries (oldest first). ``starts``: started entries before the
    window for ends inside it; ``ends``: completed entries after it for starts inside it;
    ``running_before``: started entries before the window whose steps are still running
    at its beginning (so entries at its start nest under them)."""
    tracker = StepTracker()
    rows: list[Row] = []
    starts = starts or {}
    for started in running_before or []:
        key = step_key(started)
        if key is not None:
            tracker.open.setdefault(key, []).append(Row(started, is_step=True))
    hidden_parents: set[int] = {started[SEQ] for started in running_before or []}
    for record in records:
        where, row = tracker.place(record)
        if where == "new":
            if row.is_step and row.record[ENTRY_TYPE] == _COMPLETED:
                key = step_key(row.record)
                if key is not None and key in starts:
                    row.start = starts[key]
            rows.append(row)
        elif where == "child" and row.record[SEQ] in hidden_parents:
            # the step started before the window: show the entry as its own row
            row.children.pop()
            rows.append(Row(record, during=(row.record[SEQ],)))
        elif where == "end" and row.record[SEQ] in hidden_parents:
            shown = Row(record, is_step=True, start=row.record)
            rows.append(shown)
    if ends:
        for row in rows:
            if row.is_step and row.end is None and row.record[ENTRY_TYPE] == _STARTED:
                key = step_key(row.record)
                if key is not None and key in ends:
                    row.end = ends[key]
    return rows
