"""Type checkers find the installed package: after ``pip install -e ".[dev]"``, ``mypy --strict``
on a user's program outside the repository resolves ``kaizen_async`` and ``agents`` and checks
the program against their types (an editable install that is an import hook would hide them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: a mistake mypy can only report if it sees the package's types (not Any)
MISTAKE = """\
from agents import ReverseAgent
from kaizen_async import InvokeResult

agent_id: int = ReverseAgent().info().agent_id
result: InvokeResult = InvokeResult.ok(1)
code: int = result.error_code
"""


def _installed_elsewhere(tmp_path: Path, env: dict[str, str]) -> str | None:
    """Why this checkout is not what the environment installed (None when it is).

    The test checks the installed package, which is this checkout only if it was installed
    from here (as CI does); a shared environment may have installed another checkout, and
    then the test would judge that one instead: it is skipped, saying so.
    """
    found = subprocess.run(
        [sys.executable, "-c", "import kaizen_async; print(kaizen_async.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if found.returncode != 0:
        return None  # not installed at all: the test fails, as it should
    installed = Path(found.stdout.strip()).resolve()
    if installed.is_relative_to(HERE.parent):
        return None
    return f"the environment installed kaizen_async from {installed}, not from {HERE.parent}"


@pytest.mark.slow
def test_mypy_strict_resolves_the_installed_package(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    elsewhere = _installed_elsewhere(tmp_path, env)
    if elsewhere is not None:
        pytest.skip(elsewhere)
    shutil.copy(HERE / "typing_user_program.py", tmp_path / "user_program.py")
    (tmp_path / "mistake.py").write_text(MISTAKE, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "user_program.py",
            "mistake.py",
        ],
        cwd=tmp_path,  # not the repository: only the install can provide the packages
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = done.stdout.strip().splitlines()
    assert not any("import" in line for line in errors), done.stdout  # found, typed
    assert not any(line.startswith("user_program.py") for line in errors), done.stdout
    assert errors == [
        'mistake.py:4: error: Incompatible types in assignment (expression has type "str", '
        'variable has type "int")  [assignment]',
        "mistake.py:6: error: Incompatible types in assignment (expression has type "
        '"ErrorCode | None", variable has type "int")  [assignment]',
    ], done.stdout + done.stderr
