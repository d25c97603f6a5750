"""Processes for the inspector's live and browser tests: the server (``kaizen inspect``:
the installed console script when there is one, else ``python -m kaizen_async.cli``) and a
writer that commits entries to an SQLite store when told to, each importing this
worktree's code (PYTHONPATH)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    """A running inspector server: its process, the URL it printed and its stderr."""

    proc: subprocess.Popen[str]
    url: str
    stderr: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        match = re.match(r"(https?://[^/]+)", self.url)
        assert match is not None
        return match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def kaizen_command() -> list[str]:
    """The ``kaizen`` console script next to this Python, else the same through ``-m``."""
    script = Path(sys.executable).with_name("kaizen")
    if script.exists():
        return [str(script)]
    found = shutil.which("kaizen")
    return [found] if found else [sys.executable, "-m", "kaizen_async.cli"]


def start_server(args: Sequence[str], *, port: int = 0, timeout: float = 30.0) -> Server:
    """Start ``kaizen inspect ARGS`` on 127.0.0.1 (unless ``args`` say otherwise) and wait
    for the URL it prints."""
    cmd = [*kaizen_command(), "inspect", *args, "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
    )
    errors: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            errors.append(line)

    threading.Thread(target=drain, daemon=True).start()
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"inspector exited {proc.returncode}: {''.join(errors)}")
            continue
        match = re.search(r"serving on (\S+)", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return Server(proc, match.group(1), errors)
    proc.kill()
    raise RuntimeError(f"inspector did not start: {''.join(errors)}")


class Writer:
    """A child process that writes to session ``session_id`` of an SQLite store: each
    ``write(n)`` commits ``n`` entries (a state write and notes) and returns the head seq
    once they are durable."""

    def __init__(self, db: Path, session_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "inspect_writer.py"), str(db), session_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
        )
        self.head = self._answer()

    def _answer(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("head "):
            raise RuntimeError(
                f"writer said {line!r}: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        return int(line.split()[1])

    def write(self, count: int, delay: float = 0.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{count} {delay}\n")
        self.proc.stdin.flush()
        self.head = self._answer()
        return self.head

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
