"""Anchors: copies of checkpoints kept somewhere the session's own storage cannot reach.

A signature proves who wrote a checkpoint, not that it is the newest: whoever can replace a
session's file or database with an older copy brings its older (genuine) checkpoints along.
An anchor, a record of checkpoints on another host or volume, catches that: a verifier that
finds an anchored seq beyond the session's end, or another head at an anchored seq, knows
the session was rolled back or truncated.

- :class:`AnchorSink`: where anchored checkpoints go (``publish``, blocking, called in a
  worker thread). :class:`JsonlAnchor` appends them to a JSON-lines file, one checkpoint per
  line, fsynced; ``read`` gives them back to a verifier.
- :class:`AnchorPublisher`: the hook a store or session runs off the write path. Commits
  hand it their checkpoints (no I/O, no waiting); its task delivers them at most once per
  ``interval`` seconds (the newest checkpoint per session and writer since the previous
  delivery), retries a failed delivery with backoff, logs failures and never raises them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import anyio
import orjson

from ._checkpoint import Checkpoint
from ._exceptions import KaizenValidationError
from ._logging import get_logger

__all__ = ["AnchorPublisher", "AnchorSink", "JsonlAnchor", "read_anchors"]

_log = get_logger("kaizen_async.anchors")


@runtime_checkable
class AnchorSink(Protocol):
    """Receives checkpoints after their commit (blocking; run in a worker thread)."""

    def publish(self, checkpoints: Sequence[Checkpoint]) -> None: ...


class JsonlAnchor:
    """Appends checkpoints to a JSON-lines file (put it on another host or volume)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"JsonlAnchor({self.path!r})"

    def publish(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Append one line per checkpoint and fsync: durable when this returns."""
        data = b"".join(orjson.dumps(c.to_dict()) + b"\n" for c in checkpoints)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Checkpoint], list[str]]:
        """Every well-formed checkpoint in the file, and a note per malformed line."""
        return read_anchors(self.path)


def read_anchors(path: str | os.PathLike[str]) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints of a JSON-lines anchor file and a note for each line that is not
    one (a torn last line after a crash is expected; anything else is reported)."""
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
    except OSError as exc:
        raise KaizenValidationError(
            f"cannot read the anchor file {os.fspath(path)}: {exc.strerror or exc}"
        ) from None
    found: list[Checkpoint] = []
    notes: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            if not isinstance(data, dict):
                raise KaizenValidationError("not a JSON object")
            found.append(Checkpoint.from_dict(data))
        except (orjson.JSONDecodeError, KaizenValidationError) as exc:
            notes.append(f"anchor file {os.fspath(path)} line {number} skipped: {exc}")
    return found, notes


class AnchorPublisher:
    """Delivers checkpoints to a sink off the write path (module docstring).

    Args:
        sink: where checkpoints go.
        interval: least seconds between two deliveries (rate limit).
        retry_initial / retry_max: backoff after a failed delivery, doubling up to the max.
    """

    def __init__(
        self,
        sink: AnchorSink,
        *,
        interval: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        if not isinstance(sink, AnchorSink):
            raise KaizenValidationError(
                f"anchor must have publish(checkpoints); got {type(sink).__name__}"
            )
        for name, value in (
            ("interval", interval),
            ("retry_initial", retry_initial),
            ("retry_max", retry_max),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise KaizenValidationError(f"{name} must be a number of seconds >= 0")
        self.sink = sink
        self.interval = float(interval)
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self._pending: dict[tuple[str, str], Checkpoint] = {}
        self._wake: anyio.Event | None = None
        self._closing = False
        self.delivered = 0
        self.failures = 0

    def offer(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Queue committed checkpoints (keeps the newest per session and writer); never
        blocks, never raises. Call from the event loop."""
        pending = self._pending
        for checkpoint in checkpoints:
            key = (checkpoint.session_id, checkpoint.writer_id)
            known = pending.get(key)
            if known is None or known.seq <= checkpoint.seq:
                pending[key] = checkpoint
        if pending and self._wake is not None:
            self._wake.set()

    def close(self) -> None:
        """Deliver what is pending once more, then stop :meth:`run`."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`close` is called meanwhile."""
        if seconds <= 0 or self._closing:
            return
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            while not self._closing:
                await self._wake.wait()
                self._wake = anyio.Event()

    async def run(self) -> None:
        """The delivery loop (run it in the owner's task group until :meth:`close`)."""
        delay = self.retry_initial
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake = anyio.Event()
                if not self._pending and not self._closing:
                    await self._wake.wait()
                continue
            batch = list(self._pending.values())
            self._pending = {}
            try:
                await anyio.to_thread.run_sync(self.sink.publish, batch)
            except Exception as exc:  # never fatal: log, keep the newest, retry later
                self.failures += 1
                _log.warning(
                    "anchor_publish_failed",
                    sink=repr(self.sink),
                    checkpoints=len(batch),
                    error=repr(exc),
                    retry_in=delay,
                )
                self.offer(batch)
                if self._closing:
                    return  # the last try at close failed: do not hold the close up
                await self._pause(delay)
                delay = min(max(delay * 2, 0.001), self.retry_max)
                continue
            self.delivered += len(batch)
            delay = self.retry_initial
            await self._pause(self.interval)


def publisher_for(anchor: AnchorSink | AnchorPublisher | None) -> AnchorPublisher | None:
    """An :class:`AnchorPublisher` with default rates for a bare sink."""
    if anchor is None or isinstance(anchor, AnchorPublisher):
        return anchor
    return AnchorPublisher(anchor)
