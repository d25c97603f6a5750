"""Crash safety end to end: a process writing through ``SessionHub(SQLiteStore(path))`` is
SIGKILLed at random moments, and after every kill the store opens through a hub with every
acknowledged write in it, every chain intact, state equal to replay and no step left
without an end.

The writer is ``crash_hub_child.py`` (several sessions, awaited ``set``/``append``, posted
entries + ``flush``, artifacts, dispatched steps, sessions created during the run); it
prints a line per acknowledged write. Kills land during the first open of a fresh
database, during a reopen (loading sessions, closing interrupted steps), right after an
acknowledgement (the writer is committing the next batches then) and at random delays.
Children run on asyncio and on Trio, and so do the checks. ``KAIZEN_CRASH_SEED`` replays a
run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from crash_hub_child import artifact_data

from kaizen_async import EntryType, ErrorCode, SessionHub
from kaizen_async._state import SessionCore
from kaizen_async.stores import SQLiteStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD = HERE / "crash_hub_child.py"
ROUNDS = 24
#: a bound against a hung child or a lost line (never reached when things work)
WAIT = 60.0

_ACK = re.compile(r"ack (\S+) (created|set|append|posted|artifact|step) (\S+)(?: (\S+))?")


@dataclass(frozen=True)
class Ack:
    """One acknowledged write, as the child printed it."""

    sid: str
    kind: str
    token: str
    number: str  # the version or seq the awaited call returned, or "-"


def parse_output(out: bytes) -> list[Ack]:
    """The acknowledgements among a killed child's complete lines.

    The kill may cut the last line (no newline yet): it alone is ignored. Any complete
    line that is neither ``opening`` nor an acknowledgement fails the test.
    """
    *lines, _cut = out.decode(errors="replace").split("\n")
    acks = []
    for line in lines:
        if line == "opening":
            continue
        match = _ACK.fullmatch(line)
        assert match is not None, f"unexpected line from the child: {line!r}"
        acks.append(Ack(match[1], match[2], match[3], match[4] or "-"))
    return acks


def test_parse_output_reads_complete_lines_only() -> None:
    assert parse_output(b"opening\nack s0 set 1.1 2\nack s1 append 1.2 3\nack s1 st") == [
        Ack("s0", "set", "1.1", "2"),
        Ack("s1", "append", "1.2", "3"),
    ]
    assert parse_output(b"") == []
    assert parse_output(b"opening\n") == []
    with pytest.raises(AssertionError, match="Traceback"):
        parse_output(b"ack s0 created -\nTraceback (most recent call last):\n")


class Child:
    """A writer process whose stdout a thread reads as it comes (so the pipe never fills
    and the test can wait for a given line)."""

    def __init__(self, path: Path, backend: str, round_: int, seed: str, stderr: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), backend, str(round_), seed],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self.out = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        while chunk := os.read(stream.fileno(), 65536):
            with self._changed:
                self.out += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def complete_lines(self) -> int:
        return self.out.count(b"\n")

    def wait_for(self, predicate: Callable[[bytes], bool]) -> None:
        """Wait until the output so far satisfies ``predicate`` (fails if the child dies)."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while not predicate(self.out):
                assert self.proc.poll() is None, f"the child exited: {self.stderr()}"
                left = deadline - time.monotonic()
                assert left > 0, f"the child did not get there in {WAIT} s: {self.out[-500:]!r}"
                self._changed.wait(min(left, 0.5))

    def kill(self) -> bytes:
        """SIGKILL it; returns everything it printed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        self._stderr.close()
        assert self.proc.returncode == -signal.SIGKILL, self.stderr()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.out

    def stderr(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text(errors="replace")[-3000:]


def acks_at_least(n: int) -> Callable[[bytes], bool]:
    return lambda out: out.count(b"\nack ") >= n


def opened(out: bytes) -> bool:
    return out.startswith(b"opening\n")


@dataclass
class Findings:
    """What the checks saw, across rounds."""

    interrupted: int = 0
    sessions: int = 0
    checked: dict[str, int] = field(default_factory=dict)


async def check_store(path: Path, acked: list[Ack], findings: Findings) -> None:
    """Open the store through a hub and check every session and every acknowledgement."""
    by_session: dict[str, list[Ack]] = {}
    for ack in acked:
        by_session.setdefault(ack.sid, []).append(ack)
    async with SessionHub(SQLiteStore(path)) as hub:
        ids = {info.session_id for info in await hub.list_sessions()}
        lost = sorted(set(by_session) - ids)
        assert not lost, f"acknowledged sessions missing from the store: {lost}"
        findings.sessions = len(ids)
        findings.interrupted = 0
        for sid in sorted(ids):
            async with hub.open(sid) as session:
                length = await session.verify()  # the chain, the state and artifacts
                entries = await session.get_trajectory()
                assert [e.seq for e in entries] == list(range(1, length + 1))
                # the state equals a replay of the trajectory, done here independently
                replayed = SessionCore.replay([e.to_record() for e in entries], session_id=sid)
                assert await session.get_all_state() == replayed.all_state()
                assert await session.get_state_version() == replayed.version

                # every started step has its end; the ends the hub wrote are interrupted
                open_steps: dict[tuple[str, int], int] = {}
                ends: dict[str, dict[str, object]] = {}
                for entry in entries:
                    content = entry.content
                    if entry.entry_type == EntryType.PLAN_STEP_STARTED:
                        key = (content["plan_id"], content["step_index"])
                        open_steps[key] = open_steps.get(key, 0) + 1
                    elif entry.entry_type == EntryType.PLAN_STEP_COMPLETED:
                        key = (content["plan_id"], content["step_index"])
                        assert open_steps.get(key), f"{sid}: an end without a start at {entry.seq}"
                        open_steps[key] -= 1
                        ends[content["plan_id"]] = content
                        if not content["success"]:
                            assert content["error_code"] == ErrorCode.STEP_INTERRUPTED.value
                            findings.interrupted += 1
                left_open = [key for key, count in open_steps.items() if count]
                assert not left_open, f"{sid}: steps started and never ended: {left_open}"

                by_seq = {e.seq: e for e in entries}
                sets = {
                    e.content["new_value"]["token"]: e.content["state_version"]
                    for e in entries
                    if e.entry_type == EntryType.STATE_SET
                    and isinstance(e.content["new_value"], dict)
                }
                posted = {
                    e.content["token"] for e in entries if e.entry_type == EntryType.USER_INPUT
                }
                for ack in by_session.get(sid, []):
                    where = f"{sid}: acknowledged {ack.kind} {ack.token}"
                    if ack.kind == "set":
                        assert sets.get(ack.token) == int(ack.number), f"{where} is not there"
                    elif ack.kind == "append":
                        found = by_seq.get(int(ack.number))
                        assert found is not None, f"{where} is not there"
                        assert found.content == {"token": ack.token}, where
                    elif ack.kind == "posted":
                        assert ack.token in posted, f"{where} is not there"
                    elif ack.kind == "artifact":
                        found = by_seq.get(int(ack.number))
                        assert found is not None, f"{where} is not there"
                        assert found.entry_type == EntryType.ARTIFACT_WRITTEN, where
                        assert found.content["name"] == f"a-{ack.token}", where
                        data = await session.read_artifact(f"a-{ack.token}")
                        assert data == artifact_data(ack.token), f"{where}: its data differs"
                    elif ack.kind == "step":
                        end = ends.get(f"plan-{ack.token}")
                        assert end is not None and end["success"] is True, f"{where}: {end}"
                    findings.checked[ack.kind] = findings.checked.get(ack.kind, 0) + 1


def test_hub_killed_at_random_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    seed = os.environ.get("KAIZEN_CRASH_SEED") or str(random.randrange(1 << 32))
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    acked: list[Ack] = []
    findings = Findings()
    modes: list[str] = []
    for round_ in range(ROUNDS):
        backend = "trio" if round_ % 2 else "asyncio"
        # the kinds of kill, in turn; the first round is the database's first open
        mode = ["first open", "reopen", "after ack", "delay"][round_ % 4]
        target = path
        if mode == "first open" and round_:
            target = tmp_path / f"fresh-{round_}.db"  # a new database each time
        child = Child(target, backend, round_, f"{seed}-{round_}", tmp_path / "stderr.txt")
        try:
            if mode in ("first open", "reopen"):
                child.wait_for(opened)  # interpreter started; the hub opens the store now
                time.sleep(rng.uniform(0.0, 0.03))
            elif mode == "after ack":
                child.wait_for(acks_at_least(rng.randint(1, 60)))  # killed at once
            else:
                child.wait_for(acks_at_least(1))
                time.sleep(rng.uniform(0.0, 0.3))
        finally:
            out = child.kill()
        modes.append(f"{mode}: {out.count(b'ack ')} acks")
        this_round = parse_output(out)
        try:
            if target == path:
                acked.extend(this_round)
                anyio.run(check_store, path, acked, findings, backend=backend)
            else:
                anyio.run(check_store, target, this_round, Findings(), backend=backend)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, round {round_} ({modes[-1]}): {exc}") from exc
    # the run exercised what it is about (else a quiet failure could pass unnoticed)
    assert findings.interrupted > 0, f"seed {seed}: no kill landed inside a step: {modes}"
    kinds = {"created", "set", "append", "posted", "artifact", "step"}
    assert kinds <= set(findings.checked), f"seed {seed}: checked only {findings.checked}"
