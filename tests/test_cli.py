"""The ``kaizen`` command line, run as the installed console script in a subprocess.

Every subcommand is exercised through the real script against real files: exit codes,
table output, ``--json`` parsing, errors without tracebacks, and that reading never
changes a file. The script runs this checkout's code (PYTHONPATH points at it).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import kaizen_async
from agents import KeyParams, ReverseAgent, UppercaseAgent
from kaizen_async import (
    Agent,
    Dispatcher,
    EntryType,
    InvokeResult,
    Planner,
    Session,
    SessionCorruptedError,
    capability,
)
from kaizen_async._persistence import _HOST, read_session
from kaizen_async.cli._errors import BadInput, Unavailable
from kaizen_async.cli._naming import parse_session_names, parse_store_url
from kaizen_async.llm import ScriptedProvider
from kaizen_async.stores import Batch, SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
PLAN = (
    '{"steps": [{"capability": "reverse", "params": {"key": "text"}}, '
    '{"capability": "uppercase", "params": {"key": "text"}}]}'
)
REQUEST = "reverse the text, then shout it"


def _ctrl_c_default() -> None:
    """In the child: Ctrl-C does what it does in a terminal. A process started in the
    background by a non-interactive shell (as CI may start the suite) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _script() -> Path:
    beside = Path(sys.executable).parent / "kaizen"
    if beside.exists():
        return beside
    found = shutil.which("kaizen")
    if found is None:
        pytest.fail(
            "the `kaizen` console script is not installed: run `pip install -e .` in the "
            "checkout (it puts `kaizen` next to the Python that runs the tests)"
        )
    return Path(found)


KAIZEN = _script()


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT)] if extra_path is None else [str(extra_path), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("COLUMNS", None)
    return env


def kaizen(
    *args: str | Path, cwd: Path | None = None, extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed script; never a traceback unless the test expects a bug."""
    done = subprocess.run(
        [str(KAIZEN), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(extra_path),
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# -- sessions to read -------------------------------------------------------------------


class ShoutingReverse(Agent):
    """Says it reverses (the same capability spec as the built-in one) but upper-cases:
    a recording made with it does not replay the same with the real agent."""

    agent_id = "reverse_agent_v1"

    @capability("reverse", params=KeyParams, description="Reverse the string at state key `key`.")
    async def reverse(self, session: Session, params: KeyParams) -> InvokeResult | dict[str, Any]:
        value = await session.get(params.key)
        await session.set(params.key, str(value).upper() + "!")
        return {"shouted": True}


async def _planned(path: Path, *, cheat: bool = False, text: str = "hello world") -> None:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(ShoutingReverse() if cheat else ReverseAgent())
        dispatcher.register(UppercaseAgent())
        await session.set("text", text)
        await session.write_artifact("out/a.txt", b"artifact data")
        planner = Planner(ScriptedProvider(PLAN), dispatcher.capability_specs())
        async with planner.stream(REQUEST, session) as stream:
            result = await dispatcher.dispatch_stream(stream, session)
        assert result.success
        await session.save(path)


async def _fork(source: Path, target: Path, at_seq: int) -> None:
    async with Session.load(source) as session:
        child = await session.fork(at_seq)
    async with child:
        await child.set("text", "forked")
        await child.set("extra", [1, 2])
        await child.save(target)


async def _grow(path: Path, count: int) -> int:
    """Load, append ``count`` writes and save incrementally; returns the file's head seq."""
    async with Session.load(path) as session:
        for index in range(count):
            await session.set("counter", index)
        return await session.save(path)


async def _big(path: Path, count: int) -> None:
    async with Session() as session:
        for index in range(count):
            session.append_nowait("bulk", EntryType.SYSTEM_NOTE, {"i": index})
        await session.save(path)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sessions")
    run = base / "run.kaizen"
    other = base / "other.kaizen"
    cheat = base / "cheat.kaizen"
    fork = base / "fork.kaizen"
    anyio.run(_planned, run)
    anyio.run(_planned, other)
    anyio.run(lambda: _planned(cheat, cheat=True))
    anyio.run(_fork, run, fork, 3)
    tampered = base / "tampered.kaizen"
    shutil.copy(run, tampered)
    import sqlite3

    conn = sqlite3.connect(tampered)
    conn.execute(
        "UPDATE trajectory SET content_json = replace(content_json, 'hello world', 'HELLO') "
        "WHERE seq = 5"
    )
    conn.commit()
    conn.close()
    garbage = base / "garbage.kaizen"
    garbage.write_text("not a database\n")
    return {
        "base": base,
        "run": run,
        "other": other,
        "cheat": cheat,
        "fork": fork,
        "tampered": tampered,
        "garbage": garbage,
    }


def _trajectory(path: Path) -> list[dict[str, Any]]:
    core, _ = read_session(str(path))
    from kaizen_async import TrajectoryEntry

    return [TrajectoryEntry.from_record(r).to_dict() for r in core.records]


# -- the script itself ------------------------------------------------------------------


def test_help_lists_every_subcommand_and_the_exit_codes() -> None:
    done = kaizen("--help")
    assert done.returncode == 0
    for command in (
        "show",
        "log",
        "state",
        "verify",
        "artifacts",
        "diff",
        "tail",
        "export",
        "import",
        "replay",
        "demo",
    ):
        assert f"\n  {command} " in done.stdout, command
    assert "Exit codes:" in done.stdout
    assert "sqlite:///sessions.db order-42" in done.stdout
    version = kaizen("--version")
    assert version.returncode == 0 and "kaizen" in version.stdout


def test_unknown_subcommand_and_missing_session_are_usage_errors() -> None:
    done = kaizen("frobnicate")
    assert done.returncode == 2 and "No such command" in done.stderr
    done = kaizen("log")
    assert done.returncode == 2 and "Missing argument" in done.stderr


# -- show, log, state -------------------------------------------------------------------


def test_show_table_and_json(files: dict[str, Path]) -> None:
    done = kaizen("show", files["run"])
    assert done.returncode == 0, done.stderr
    expected = _trajectory(files["run"])
    session_id = expected[0]["content"]["session_id"]
    assert session_id in done.stdout
    assert "1 created, 0 failed; steps: 2 succeeded, 0 failed" in done.stdout
    info = json.loads(kaizen("show", files["run"], "--json").stdout)
    assert info["session_id"] == session_id
    assert info["entries"] == len(expected)
    assert info["head_hash"] == expected[-1]["hash"]
    assert info["state_version"] == 3
    assert info["entry_types"]["state_set"] == 3
    assert info["schema_version"] == 2
    assert info["forked_from"] is None
    fork = json.loads(kaizen("show", files["fork"], "--json").stdout)
    assert fork["forked_from"] == {"parent_session_id": session_id, "forked_at_seq": 3}


def test_log_json_is_each_entry_to_dict(files: dict[str, Path]) -> None:
    done = kaizen("log", files["run"], "--json")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == _trajectory(files["run"])


def test_log_filters(files: dict[str, Path]) -> None:
    everything = _trajectory(files["run"])
    states = json_lines(kaizen("log", files["run"], "--type", "state_set", "--json").stdout)
    assert [e["seq"] for e in states] == [
        e["seq"] for e in everything if e["entry_type"] == "state_set"
    ]
    two_types = json_lines(
        kaizen(
            "log", files["run"], "--type", "plan_created", "--type", "llm_exchange", "--json"
        ).stdout
    )
    assert {e["entry_type"] for e in two_types} == {"plan_created", "llm_exchange"}
    agent = json_lines(kaizen("log", files["run"], "--agent", "dispatcher", "--json").stdout)
    assert agent and all(e["agent_id"] == "dispatcher" for e in agent)
    since = json_lines(kaizen("log", files["run"], "--since", "10", "--json").stdout)
    assert [e["seq"] for e in since] == list(range(11, len(everything) + 1))
    last = json_lines(kaizen("log", files["run"], "--limit", "2", "--json").stdout)
    assert [e["seq"] for e in last] == [len(everything) - 1, len(everything)]
    table = kaizen("log", files["run"], "--type", "state_set")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "AGENT", "TYPE", "CONTENT"]
    assert len(lines) == 1 + len(states)
    assert '"new_value":"DLROW OLLEH"' in table.stdout
    bad = kaizen("log", files["run"], "--type", "bogus")
    assert bad.returncode == 2 and "bogus" in bad.stderr


def test_state_now_and_at_a_version(files: dict[str, Path]) -> None:
    done = kaizen("state", files["run"])
    assert done.returncode == 0
    assert "text" in done.stdout and '"DLROW OLLEH"' in done.stdout
    assert json.loads(kaizen("state", files["run"], "--json").stdout) == {
        "state_version": 3,
        "state": {"text": "DLROW OLLEH"},
    }
    assert json.loads(kaizen("state", files["run"], "--at", "1", "--json").stdout) == {
        "state_version": 1,
        "state": {"text": "hello world"},
    }
    assert json.loads(kaizen("state", files["run"], "--at", "0", "--json").stdout)["state"] == {}
    out_of_range = kaizen("state", files["run"], "--at", "9")
    assert out_of_range.returncode == 2
    assert "out of range 0..3" in out_of_range.stderr


# -- verify -----------------------------------------------------------------------------


def test_verify_ok_and_tampered(files: dict[str, Path]) -> None:
    ok = kaizen("verify", files["run"])
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    assert json.loads(kaizen("verify", files["run"], "--json").stdout)["ok"] is True
    bad = kaizen("verify", files["tampered"])
    assert bad.returncode == 1
    assert "first bad seq: 5" in bad.stdout
    report = json.loads(kaizen("verify", files["tampered"], "--json").stdout)
    assert report["ok"] is False and report["bad_seq"] == 5
    garbage = kaizen("verify", files["garbage"])
    assert garbage.returncode == 1 and "FAILED" in garbage.stdout


def test_verify_shows_a_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    path = tmp_path / "big.kaizen"
    anyio.run(_big, path, 9_000)
    quiet = kaizen("verify", path)
    assert quiet.returncode == 0 and quiet.stderr == ""  # stderr is a pipe: no bar
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(KAIZEN), "verify", str(path)],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=_env(),
        )
        os.close(slave)
        stdout, _ = proc.communicate(timeout=120)
        drawn = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, stdout
    assert b"verifying" in drawn and b"9002/9002" in drawn


def test_read_session_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "big.kaizen"
    anyio.run(_big, path, 9_000)
    calls: list[tuple[int, int]] = []
    read_session(str(path), lambda done, total: calls.append((done, total)))
    assert calls == [(4096, 9002), (8192, 9002), (9002, 9002)]  # + created, saved


def test_reading_never_changes_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "copy.kaizen"
    shutil.copy(files["run"], path)
    before = _digest(path)
    # what a killed save leaves: a load would remove it, a read-only read leaves it alone
    leftover = tmp_path / f".copy.kaizen.{_HOST}-{_dead_pid()}.{'0' * 16}.tmp"
    leftover.write_bytes(b"")
    for args in (
        ("show",),
        ("log",),
        ("state",),
        ("verify",),
        ("artifacts",),
        ("replay",),
        ("tail", "--timeout", "0.3"),
    ):
        done = kaizen(args[0], path, *args[1:])
        assert done.returncode == 0, (args, done.stderr)
    assert kaizen("diff", path, files["run"]).returncode == 0
    assert _digest(path) == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["copy.kaizen", leftover.name])  # no journal, nothing removed


# -- artifacts --------------------------------------------------------------------------


def test_artifacts_list_and_get(files: dict[str, Path], tmp_path: Path) -> None:
    listing = kaizen("artifacts", files["run"])
    assert listing.returncode == 0 and "out/a.txt" in listing.stdout
    (row,) = json_lines(kaizen("artifacts", files["run"], "--json").stdout)
    assert row == {
        "name": "out/a.txt",
        "size": 13,
        "digest": hashlib.sha256(b"artifact data").hexdigest(),
        "written_at_seq": 3,
    }
    target = tmp_path / "a.txt"
    got = kaizen("artifacts", files["run"], "--get", "out/a.txt", "-o", target)
    assert got.returncode == 0 and target.read_bytes() == b"artifact data"
    assert kaizen("artifacts", files["run"], "--get", "out/a.txt").stdout == "artifact data"
    missing = kaizen("artifacts", files["run"], "--get", "nope")
    assert missing.returncode == 2 and "has no artifact 'nope'" in missing.stderr
    assert kaizen("artifacts", files["run"], "-o", target).returncode == 2
    unwritable = kaizen(
        "artifacts", files["run"], "--get", "out/a.txt", "-o", tmp_path / "no" / "x"
    )
    assert unwritable.returncode == 3 and "cannot write" in unwritable.stderr


# -- diff -------------------------------------------------------------------------------


def test_diff_same_forked_unrelated_and_continued(files: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.kaizen"
    assert kaizen("export", files["run"], "-o", copy).returncode == 0
    same = kaizen("diff", files["run"], copy)
    assert same.returncode == 0 and "history: the same" in same.stdout

    forked = kaizen("diff", files["run"], files["fork"])
    assert forked.returncode == 1
    assert "diverge at seq 4 (seqs 1..3 are shared)" in forked.stdout
    report = json.loads(kaizen("diff", files["run"], files["fork"], "--json").stdout)
    assert report["same"] is False
    assert report["history"]["diverged_at_seq"] == 4
    assert report["history"]["common_prefix"] == 3
    differences = {d["key"]: d for d in report["state"]["differences"]}
    assert differences["text"]["a"] == "DLROW OLLEH" and differences["text"]["b"] == "forked"
    assert differences["extra"]["in_a"] is False and differences["extra"]["b"] == [1, 2]

    unrelated = kaizen("diff", files["run"], files["other"])
    assert unrelated.returncode == 1 and "no common prefix" in unrelated.stdout
    assert (
        json.loads(kaizen("diff", files["run"], files["other"], "--json").stdout)["history"][
            "relation"
        ]
        == "unrelated"
    )

    longer = tmp_path / "longer.kaizen"
    shutil.copy(files["run"], longer)
    anyio.run(_grow, longer, 2)
    continued = kaizen("diff", files["run"], longer)
    assert continued.returncode == 1 and "B continues A" in continued.stdout
    assert kaizen("diff", files["run"]).returncode == 2


# -- tail -------------------------------------------------------------------------------


def _tail(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KAIZEN), "tail", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_default,
        env=_env(),
    )


def test_tail_follows_a_file_as_it_grows(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "live.kaizen"
    shutil.copy(files["run"], path)
    start = len(_trajectory(path))
    # history first (-n 1), then the entries of a save made while tail runs:
    # session_loaded, 3 state_set, session_saved
    proc = _tail(path, "-n", "1", "--json", "--until-seq", str(start + 5), "--timeout", "60")
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["seq"] == start
    head = anyio.run(_grow, path, 3)
    assert head == start + 5
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    entries = json_lines(out)
    assert [e["seq"] for e in entries] == list(range(start + 1, start + 6))
    assert [e["entry_type"] for e in entries] == [
        "session_loaded",
        "state_set",
        "state_set",
        "state_set",
        "session_saved",
    ]


def test_tail_ends_on_timeout_and_on_ctrl_c(files: dict[str, Path]) -> None:
    timed = kaizen("tail", files["run"], "--timeout", "0.3", "-n", "2")
    assert timed.returncode == 0 and len(timed.stdout.splitlines()) == 2
    missed = kaizen("tail", files["run"], "--until-seq", "999", "--timeout", "0.3", "-n", "0")
    assert missed.returncode == 1 and "seq 999 was not written" in missed.stderr
    filtered = kaizen(
        "tail", files["run"], "--since", "0", "--type", "state_set", "--timeout", "0.3"
    )
    assert len(filtered.stdout.splitlines()) == 3
    proc = _tail(files["run"], "-n", "1")
    assert proc.stdout is not None
    assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_tail_notices_a_replaced_file(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "swap.kaizen"
    shutil.copy(files["run"], path)
    proc = _tail(path, "-n", "1", "--timeout", "60", "--interval", "0.05")
    assert proc.stdout is not None
    assert proc.stdout.readline()
    shutil.copy(files["other"], path)  # another history under the same name
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "was replaced" in err


# -- export and import ------------------------------------------------------------------


def test_export_writes_a_verified_copy(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "out.kaizen"
    done = kaizen("export", files["run"], "-o", target, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["entries"] == len(_trajectory(files["run"]))
    assert _trajectory(target) == _trajectory(files["run"])  # no session_saved added
    assert kaizen("verify", target).returncode == 0
    exists = kaizen("export", files["run"], "-o", target)
    assert exists.returncode == 2 and "--force" in exists.stderr
    assert kaizen("export", files["other"], "-o", target, "--force").returncode == 0
    assert _trajectory(target) == _trajectory(files["other"])
    itself = kaizen("export", files["run"], "-o", files["run"], "--force")
    assert itself.returncode == 2


def test_import_files_into_a_store(files: dict[str, Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    done = kaizen("import", files["run"], files["other"], url, "--json")
    if not hasattr(kaizen_async, "SessionHub"):  # the hub is not in this build yet
        assert done.returncode == 4 and "not available" in done.stderr
        assert not (tmp_path / "s.db").exists()
        return
    assert done.returncode == 0, done.stderr
    reports = json_lines(done.stdout)
    run_id = _trajectory(files["run"])[0]["content"]["session_id"]
    assert len(reports) == 2 and reports[0]["session_id"] == run_id
    stored = json_lines(kaizen("log", url, run_id, "--json").stdout)
    assert stored[:-1] == _trajectory(files["run"])
    assert stored[-1]["entry_type"] == "session_loaded"
    assert kaizen("verify", url, run_id).returncode == 0
    again = kaizen("import", files["run"], url)
    assert again.returncode == 2 and "already holds" in again.stderr
    corrupt = kaizen("import", files["tampered"], url)
    assert corrupt.returncode == 2 and "seq 5" in corrupt.stderr
    assert len(json_lines(kaizen("show", url, "--json").stdout)) == 2


def test_import_usage(files: dict[str, Path]) -> None:
    no_url = kaizen("import", files["run"])
    assert no_url.returncode == 2 and "FILE... URL" in no_url.stderr
    from_store = kaizen("import", "sqlite:///a.db", "x", "sqlite:///b.db")
    assert from_store.returncode == 2


# -- stores -----------------------------------------------------------------------------


async def _into_store(db: Path, path: Path, metadata: dict[str, Any] | None = None) -> str:
    """Put a file's session into an SQLite store as it is (through the store contract)."""
    core, _ = read_session(str(path))
    async with SQLiteStore(db) as store:
        await store.create(
            Batch(
                core.session_id,
                0,
                core.records,
                core.version,
                state=dict(core.state),
                artifacts=dict(core.artifacts),
                blobs=dict(core.blobs),
            ),
            max_artifact_size=core.max_artifact_size,
            workspace_path=core.workspace_path,
            metadata=metadata,
        )
    return core.session_id


async def _commit_more(db: Path, path: Path, count: int) -> int:
    """Commit ``count`` more state_set entries onto the stored copy of ``path``'s session."""
    core, _ = read_session(str(path))
    base = len(core.records)
    async with SQLiteStore(db) as store:
        for index in range(count):
            core.set("counter", index)
            await store.commit(
                Batch(
                    core.session_id,
                    base + index,
                    core.records[base + index :],
                    core.version,
                    state={"counter": core.state["counter"]},
                )
            )
    return len(core.records)


@pytest.fixture(scope="module")
def store(files: dict[str, Path]) -> tuple[str, str, str]:
    """A store holding the run's session and the fork's: (url, run id, fork id)."""
    db = files["base"] / "sessions.db"
    run_id = anyio.run(lambda: _into_store(db, files["run"], {"job": "run"}))
    fork_id = anyio.run(_into_store, db, files["fork"])
    return f"sqlite:///{db}", run_id, fork_id


def test_store_sessions_read_like_files(
    files: dict[str, Path], store: tuple[str, str, str], tmp_path: Path
) -> None:
    url, run_id, fork_id = store
    listing = json_lines(kaizen("show", url, "--json").stdout)
    assert {row["session_id"] for row in listing} == {run_id, fork_id}
    assert next(r for r in listing if r["session_id"] == run_id)["metadata"] == {"job": "run"}
    assert run_id in kaizen("show", url).stdout
    info = json.loads(kaizen("show", url, run_id, "--json").stdout)
    assert info["entries"] == len(_trajectory(files["run"])) and info["kind"] == "sqlite store"
    assert json_lines(kaizen("log", url, run_id, "--json").stdout) == _trajectory(files["run"])
    last = json_lines(
        kaizen("log", url, run_id, "--type", "state_set", "--limit", "1", "--json").stdout
    )
    assert [e["seq"] for e in last] == [11]
    assert json.loads(kaizen("state", url, run_id, "--at", "2", "--json").stdout)["state"] == {
        "text": "dlrow olleh"
    }
    assert kaizen("verify", url, run_id).returncode == 0
    assert kaizen("artifacts", url, run_id, "--get", "out/a.txt").stdout == "artifact data"
    # a file and its stored copy are the same session; the store's fork diverges from it
    assert kaizen("diff", files["run"], url, run_id).returncode == 0
    forked = json.loads(kaizen("diff", url, run_id, url, fork_id, "--json").stdout)
    assert forked["history"]["diverged_at_seq"] == 4
    assert json.loads(kaizen("replay", url, run_id, "--json").stdout)["same"] is True
    exported = tmp_path / "exported.kaizen"
    assert kaizen("export", url, run_id, "-o", exported).returncode == 0
    assert _trajectory(exported) == _trajectory(files["run"])


def test_store_errors(store: tuple[str, str, str], files: dict[str, Path], tmp_path: Path) -> None:
    url, _, _ = store
    unknown = kaizen("log", url, "no-such-id")
    assert unknown.returncode == 2 and "no session 'no-such-id'" in unknown.stderr
    missing = kaizen("log", f"sqlite:///{tmp_path}/absent.db", "x")
    assert missing.returncode == 2 and "no such database file" in missing.stderr
    assert not (tmp_path / "absent.db").exists()  # reading never creates a database
    not_a_store = kaizen("show", f"sqlite:///{files['run']}")
    assert not_a_store.returncode == 2 and "not a kaizen_async session store" in not_a_store.stderr


def test_store_relative_url_is_relative_to_the_working_directory(
    files: dict[str, Path], tmp_path: Path
) -> None:
    session_id = anyio.run(_into_store, tmp_path / "here.db", files["run"])
    done = kaizen("show", "sqlite:///here.db", session_id, "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["session_id"] == session_id


def test_tail_follows_a_store_written_by_another_process(
    files: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "live.db"
    session_id = anyio.run(_into_store, db, files["run"])
    start = len(_trajectory(files["run"]))
    proc = _tail(
        f"sqlite:///{db}",
        session_id,
        "-n",
        "1",
        "--json",
        "--until-seq",
        str(start + 3),
        "--timeout",
        "60",
    )
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["seq"] == start
    assert anyio.run(_commit_more, db, files["run"], 3) == start + 3
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    entries = json_lines(out)
    assert [e["seq"] for e in entries] == [start + 1, start + 2, start + 3]
    assert [e["content"]["new_value"] for e in entries] == [0, 1, 2]


# -- replay -----------------------------------------------------------------------------


def test_replay_same(files: dict[str, Path]) -> None:
    done = kaizen("replay", files["run"])
    assert done.returncode == 0, done.stderr
    assert "result: the same" in done.stdout
    report = json.loads(kaizen("replay", files["run"], "--json").stdout)
    assert report["same"] is True
    assert report["forked_at_seq"] == 3
    assert report["final_state"] == {"text": "DLROW OLLEH"}
    assert [s["capability"] for s in report["replayed_steps"]] == ["reverse", "uppercase"]
    plan_id = report["plan_id"]
    assert json.loads(kaizen("replay", files["run"], "--plan", plan_id, "--json").stdout)["same"]


def test_replay_different_when_the_agents_behave_differently(files: dict[str, Path]) -> None:
    done = kaizen("replay", files["cheat"])
    assert done.returncode == 1, done.stderr
    assert "result: DIFFERENT" in done.stdout
    report = json.loads(kaizen("replay", files["cheat"], "--json").stdout)
    (difference,) = report["state_differences"]
    assert difference["a"] == "HELLO WORLD!" and difference["b"] == "DLROW OLLEH"


def test_replay_without_a_plan_or_with_an_unknown_one(files: dict[str, Path]) -> None:
    no_plan = kaizen("replay", files["fork"])  # forked before the plan: nothing to replay
    assert no_plan.returncode == 2 and "no plan" in no_plan.stderr
    unknown = kaizen("replay", files["run"], "--plan", "nope")
    assert unknown.returncode == 2 and "no plan 'nope'" in unknown.stderr


# -- demo -------------------------------------------------------------------------------


def test_demo_not_installed(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "__init__.py").write_text("")  # a demo package without py_to_go
    done = kaizen("demo", extra_path=tmp_path)
    assert done.returncode == 4
    assert "the py_to_go demo is not installed" in done.stderr


def test_demo_runs_main_with_its_arguments(tmp_path: Path) -> None:
    package = tmp_path / "demo" / "py_to_go"
    package.mkdir(parents=True)
    (tmp_path / "demo" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            def main(argv):
                print("demo got", argv)
                return 7
            """
        )
    )
    done = kaizen("demo", "--provider", "scripted", "--help", extra_path=tmp_path)
    assert done.returncode == 7
    assert done.stdout.strip() == "demo got ['--provider', 'scripted', '--help']"


# -- bad input --------------------------------------------------------------------------


def test_bad_input_is_one_line_without_a_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    cases: list[tuple[tuple[str | Path, ...], int, str]] = [
        (("log", tmp_path / "missing.kaizen"), 2, "no such file"),
        (("show", files["garbage"]), 2, "not a readable .kaizen file"),
        (("log", files["tampered"]), 2, "seq 5"),
        (("show", tmp_path), 2, "directory"),
        (("log", "sqlite:///x.db"), 2, "needs a session id"),
        (("log", "mysql://h/db", "id"), 2, "unknown store URL scheme"),
        (("log", "postgresql://user@host/db", "order-42"), 4, "not supported yet"),
        (("log", "sqlite://host/x.db", "id"), 2, "names a host"),
        (("diff", files["run"], files["run"], files["run"]), 2, "expected 2 sessions"),
    ]
    for args, code, message in cases:
        done = kaizen(*args)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("kaizen: ")


def test_closing_stdout_early_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "big.kaizen"
    anyio.run(_big, path, 6_000)
    proc = subprocess.Popen(
        [str(KAIZEN), "log", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # like `kaizen log big.kaizen | head -1`
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert b"Traceback" not in err and b"Exception ignored" not in err


# -- naming (in-process) ----------------------------------------------------------------


def test_session_names() -> None:
    (name,) = parse_session_names(["run.kaizen"])
    assert name.path == "run.kaizen"
    (name,) = parse_session_names(["sqlite:///sessions.db", "order-42"])
    assert name.store is not None and name.store.path == "sessions.db"
    assert name.session_id == "order-42"
    assert parse_store_url("sqlite:////abs/path.db").path == "/abs/path.db"
    assert parse_store_url("sqlite:///dir%20x/s.db").path == "dir x/s.db"
    a, b = parse_session_names(["sqlite:///s.db", "a", "b.kaizen"], count=2)
    assert a.session_id == "a" and b.path == "b.kaizen"
    for bad in (
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite+pysqlite:///x.db",
        "sqlite:///x.db?mode=ro",
    ):
        with pytest.raises(BadInput):
            parse_store_url(bad)
    with pytest.raises(Unavailable):
        parse_store_url("postgres://h/db")
    with pytest.raises(BadInput):
        parse_session_names(["a.kaizen", "b.kaizen"], count=1)


def test_corrupt_file_error_names_the_file(files: dict[str, Path]) -> None:
    from kaizen_async.cli._naming import SessionName
    from kaizen_async.cli._sources import open_source

    async def read() -> None:
        async with open_source(SessionName(path=str(files["tampered"]))):
            pass

    with pytest.raises(SessionCorruptedError) as caught:
        anyio.run(read)
    assert str(files["tampered"]) in caught.value.message and caught.value.seq == 5


def test_python_dash_m_runs_the_same_command(files: dict[str, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kaizen_async.cli", "verify", str(files["run"]), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True
