"""Output: human-readable tables by default, JSON for scripts, a progress bar on a terminal.

Tables go to stdout. With ``--json`` a command prints JSON instead: a listing (``log``,
``artifacts``, ``tail``, ``import``) one object per line, anything else one object. Progress
bars go to stderr, and only when stderr is a terminal, so pipes and logs stay clean.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
import orjson

from .._canonical import decode
from .._trajectory import AGENT_ID, CONTENT, ENTRY_TYPE, SEQ, TIMESTAMP, Record, TrajectoryEntry

__all__ = [
    "compact",
    "emit_json",
    "entry_row",
    "field_table",
    "progress_bar",
    "short_hash",
    "short_time",
    "table",
]

#: widest a table's last column gets when stdout is not a terminal (``--wide``: no limit)
PIPE_WIDTH = 160
#: below this many entries no progress bar is worth drawing
PROGRESS_MIN = 5_000

Progress = Callable[[int, int], None]


def emit_json(value: Any) -> None:
    """Print one JSON value on one line (non-ASCII kept as is)."""
    click.echo(orjson.dumps(value, default=str).decode())


def compact(value: Any) -> str:
    """A JSON value as compact one-line JSON (a string is shown with its quotes)."""
    return orjson.dumps(value, default=str).decode()


def short_hash(digest: str) -> str:
    return digest[:12]


def short_time(timestamp: str) -> str:
    """``2025-01-02T10:11:12.345678+00:00`` -> ``2025-01-02 10:11:12.345``."""
    text = timestamp.replace("T", " ")
    head, _, rest = text.partition(".")
    if rest:
        return f"{head}.{rest[:3]}"
    return head.removesuffix("+00:00")


def entry_row(record: Record) -> list[str]:
    """A trajectory entry as a row: seq, time, agent, type, content."""
    return [
        str(record[SEQ]),
        short_time(record[TIMESTAMP]),
        record[AGENT_ID],
        record[ENTRY_TYPE],
        compact(decode(record[CONTENT])),
    ]


def entry_json(record: Record) -> dict[str, Any]:
    """The entry as ``TrajectoryEntry.to_dict()`` gives it."""
    return TrajectoryEntry.from_record(record).to_dict()


def _clip(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"


def _last_width(widths: Sequence[int], wide: bool) -> int | None:
    if wide:
        return None
    if not sys.stdout.isatty():
        return PIPE_WIDTH
    columns = shutil.get_terminal_size().columns
    used = sum(widths[:-1]) + 2 * (len(widths) - 1)
    return max(columns - used, 20)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wide: bool = False) -> None:
    """Print rows under headers, columns aligned; the last column is clipped to fit."""
    if not rows:
        return
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell))
    last = _last_width(widths, wide)
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        cells.append(_clip(row[-1], last))
        lines.append("  ".join(cells).rstrip())
    click.echo("\n".join(lines))


def field_table(fields: Sequence[tuple[str, str]]) -> None:
    """Print ``name  value`` lines, names aligned."""
    width = max((len(name) for name, _ in fields), default=0)
    click.echo("\n".join(f"{name.ljust(width)}  {value}".rstrip() for name, value in fields))


@contextmanager
def progress_bar(label: str, *, force: bool | None = None) -> Iterator[Progress | None]:
    """A ``progress(done, total)`` callback drawing a bar on stderr, or None when stderr is
    not a terminal (``force`` overrides the check). The bar appears only for large totals."""
    show = sys.stderr.isatty() if force is None else force
    if not show:
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            if total < PROGRESS_MIN:
                return
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
