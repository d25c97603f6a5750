"""The progress display: what the job is doing while it runs.

On a terminal a status line (files converted, the current round, build/vet/test status,
elapsed time) stays at the bottom and is redrawn as things happen and every half second,
with events printed above it. Anywhere else (a pipe, a log file, CI) every event is one
plain line with the elapsed time in front, and there is no status line.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TextIO

import anyio

__all__ = ["Observer", "Progress"]

_MARK = {True: "ok", False: "FAILED", None: "-"}


class Observer(Protocol):
    """What agents tell the display: an event name and its facts."""

    def note(self, event: str, **fields: Any) -> None: ...


class Progress:
    """Formats events as lines, and keeps a live status line on a terminal.

    Args:
        out: where to write (default: stdout).
        live: keep a redrawn status line (default: when ``out`` is a terminal).
    """

    def __init__(self, out: TextIO | None = None, *, live: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.started = time.monotonic()
        self.total = 0
        self.converted = 0
        self.round: int | None = None
        self.checks: dict[str, bool | None] = {"build": None, "vet": None, "test": None}
        self.working: set[str] = set()
        self.phase = "starting"
        self._status_shown = False

    # -- the status ------------------------------------------------------------------------

    def elapsed(self) -> str:
        seconds = time.monotonic() - self.started
        return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"

    def status(self) -> str:
        parts = [f"{self.converted}/{self.total} files converted"]
        if self.round is not None:
            parts.append(f"round {self.round}")
        parts.append(" ".join(f"{name} {_MARK[ok]}" for name, ok in self.checks.items()))
        parts.append(
            self.phase if not self.working else "working on " + ", ".join(sorted(self.working))
        )
        parts.append(self.elapsed())
        return " | ".join(parts)

    def _draw(self) -> None:
        if self.live:  # one line only: a wrapped status line could not be redrawn
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.out.write("\r\033[K" + self.status()[:width])
            self.out.flush()
            self._status_shown = True

    def line(self, text: str) -> None:
        """Print one event line (above the status line on a terminal)."""
        if self.live:
            self.out.write("\r\033[K" + text + "\n")
            self._draw()
        else:
            self.out.write(f"[{self.elapsed()}] {text}\n")
            self.out.flush()

    def close(self) -> None:
        """Clear the status line for good."""
        if self.live and self._status_shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self._status_shown = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Progress]:
        """Redraw the status line every half second while the block runs (on a terminal)."""
        if not self.live:
            yield self
            return
        async with anyio.create_task_group() as tg:

            async def tick() -> None:
                while True:
                    self._draw()
                    await anyio.sleep(0.5)

            tg.start_soon(tick)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                self.close()

    # -- events ----------------------------------------------------------------------------

    def note(self, event: str, **fields: Any) -> None:
        """Take one event from an agent or the job."""
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(**fields)
        elif "text" in fields:
            self.line(str(fields["text"]))

    def _on_phase(self, text: str) -> None:
        self.phase = text
        self.line(text)

    def _on_plan(self, total: int, done: int) -> None:
        self.total = total
        self.converted = done

    def _on_converting(self, file: str) -> None:
        self.working.add(file)
        self._draw()

    def _on_converted(self, file: str, go: str, lines: int) -> None:
        self.working.discard(file)
        self.converted += 1
        self.line(f"converted {file} -> {go} ({lines} lines) [{self.converted}/{self.total}]")

    def _on_conversion_failed(self, file: str, error: str) -> None:
        self.working.discard(file)
        self.line(f"conversion of {file} failed: {error}")

    def _on_round(self, number: int) -> None:
        self.round = number
        self.checks = dict.fromkeys(self.checks)
        self._draw()

    def _on_check(
        self, round: int, check: str, ok: bool, seconds: float, blamed: list[str]
    ) -> None:
        self.checks[check] = ok
        tail = "" if ok or not blamed else ": " + ", ".join(blamed)
        self.line(f"round {round}: go {check} {_MARK[ok]} ({seconds:.1f}s){tail}")

    def _on_rules(self, round: int, rules: int, files: list[str]) -> None:
        text = f"round {round}: {rules} deterministic fix(es) applied"
        if files:
            text += "; the model rewrites " + ", ".join(files)
        self.line(text)

    def _on_rewriting(self, round: int, file: str) -> None:
        self.working.add(file)
        self._draw()

    def _on_rewritten(self, round: int, file: str) -> None:
        self.working.discard(file)
        self.line(f"round {round}: the model rewrote {file}")
