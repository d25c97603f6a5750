"""The README's examples run as written (each in a fresh interpreter, in a temp dir).

The interpreter imports this checkout's ``kaizen_async`` and ``agents`` (``PYTHONPATH``),
whichever checkout the editable install points at.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def _examples() -> dict[str, str]:
    """Python blocks of the README whose first line is ``# example: <name>``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = {}
    for block in blocks:
        first = block.splitlines()[0]
        if first.startswith("# example: "):
            found[first.removeprefix("# example: ").strip()] = block
    return found


def test_readme_has_both_quick_starts() -> None:
    assert {"quick start", "blocking quick start"} <= set(_examples())


def test_readme_install_and_test_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in text
    assert re.search(r"^pytest$", text, re.M)


@pytest.mark.parametrize("name", ["quick start", "blocking quick start"])
def test_quick_start_runs_as_written(name: str, tmp_path: Path) -> None:
    code = _examples()[name]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "DLROW OLLEH"
    saved = tmp_path / "my_session.kaizen"
    assert saved.exists()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import anyio\nfrom kaizen_async import Session\n"
            "async def main():\n"
            "    async with Session.load('my_session.kaizen') as s:\n"
            "        print(await s.get('text'), await s.verify())\n"
            "anyio.run(main)\n",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    text, count = check.stdout.strip().rsplit(maxsplit=1)
    assert text == "DLROW OLLEH"
    assert int(count) == 14  # created, set, 2 x 5 step entries, saved, loaded


def test_quick_starts_run_one_after_the_other_in_one_directory(tmp_path: Path) -> None:
    """A new user runs both examples (or one twice) in one directory: the second run's
    session replaces the first one's file instead of failing with persist_conflict."""
    for name in ["quick start", "blocking quick start"]:
        done = subprocess.run(
            [sys.executable, "-c", _examples()[name]],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr


def test_blocking_quick_start_closes_what_it_opens(tmp_path: Path) -> None:
    """Every blocking Session/Dispatcher the example makes is closed when it ends (not left
    for garbage collection or interpreter exit to close)."""
    code = _examples()["blocking quick start"]
    probe = (
        "import gc\n"
        "gc.disable()\n"
        "namespace = {}\n"
        f"exec(compile({code!r}, 'example', 'exec'), namespace)\n"
        "from kaizen_async.sync import _Resource\n"
        "made = [o for o in gc.get_objects() if isinstance(o, _Resource)]\n"
        "print(len(made), sum(not o.closed for o in made))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    made, still_open = map(int, done.stdout.strip().splitlines()[-1].split())
    assert made == 2 and still_open == 0


def test_servers_example_runs_as_written(tmp_path: Path) -> None:
    code = _examples()["servers"]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, *entries = done.stdout.strip().splitlines()
    assert first == "True"
    assert [int(line.split()[0]) for line in entries] == list(range(1, len(entries) + 1))
    assert entries[0].split()[1] == "session_created"
    assert entries[-1].split()[1:] == ["state_set", "shipped"]
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import anyio\nfrom kaizen_async import SessionHub\n"
            "from kaizen_async.stores import SQLiteStore\n"
            "async def main():\n"
            "    async with SessionHub(SQLiteStore('sessions.db')) as hub:\n"
            "        async with hub.open('order-42') as s:\n"
            "            print(await s.get('status'), await s.get('text'), await s.verify())\n"
            "anyio.run(main)\n",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["shipped", "dlrow", "olleh", str(len(entries))]
