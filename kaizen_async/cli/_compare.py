"""Commands that compare: ``diff`` (two sessions) and ``replay`` (a plan against its record)."""

from __future__ import annotations

from typing import Any

import click

from .._state import SessionCore
from ._common import SESSION_HELP, json_option, run, session_argument, wide_option
from ._diffing import compare_histories, compare_maps
from ._errors import DIFFERENT, OK
from ._naming import SessionName, parse_session_names
from ._output import compact, emit_json, entry_row, field_table, short_hash, table
from ._replay import replay_plan
from ._sources import open_source

__all__ = ["diff", "replay"]


def _side(name: SessionName, core: SessionCore) -> dict[str, Any]:
    return {
        "source": str(name),
        "session_id": core.session_id,
        "entries": len(core.records),
        "state_version": core.version,
        "head_hash": core.head,
    }


def _artifact_map(core: SessionCore) -> dict[str, Any]:
    return {
        name: {"digest": digest, "size": len(core.blobs[digest])}
        for name, digest in core.artifacts.items()
    }


def _history_line(history: dict[str, Any]) -> str:
    relation, shared = history["relation"], history["common_prefix"]
    a_len, b_len = history["a_entries"], history["b_entries"]
    if relation == "same":
        return f"the same ({shared} entries)"
    if relation == "unrelated":
        return "no common prefix: the sessions differ from seq 1 (unrelated histories)"
    if relation == "b_continues_a":
        return f"B continues A: A's {a_len} entries are B's first; B has {b_len - a_len} more"
    if relation == "a_continues_b":
        return f"A continues B: B's {b_len} entries are A's first; A has {a_len - b_len} more"
    return f"diverge at seq {history['diverged_at_seq']} (seqs 1..{shared} are shared)"


def _shown(entry: dict[str, Any], side: str) -> str:
    return compact(entry[side]) if entry[f"in_{side}"] else "(absent)"


@click.command(epilog=SESSION_HELP)
@session_argument("sessions", metavar="A B")
@wide_option()
@json_option("Print one JSON object.")
def diff(sessions: tuple[str, ...], wide: bool, as_json: bool) -> int:
    """Where two sessions' histories diverge and how their final states differ.

    A and B are each a SESSION. Exits 0 when the histories are the same, 1 when they differ.
    """
    name_a, name_b = parse_session_names(sessions, count=2, what="A B")

    async def body() -> int:
        async with open_source(name_a) as source_a, open_source(name_b) as source_b:
            a, b = await source_a.core(), await source_b.core()
        history = compare_histories(a.records, b.records)
        state_diff = compare_maps(a.all_state(), b.all_state())
        artifact_diff = compare_maps(_artifact_map(a), _artifact_map(b))
        same = history["relation"] == "same"
        if as_json:
            emit_json(
                {
                    "same": same,
                    "a": _side(name_a, a),
                    "b": _side(name_b, b),
                    "history": history,
                    "state": {"same": not state_diff, "differences": state_diff},
                    "artifacts": {"same": not artifact_diff, "differences": artifact_diff},
                }
            )
            return OK if same else DIFFERENT
        field_table(
            [
                (
                    label,
                    f"{name}: session {core.session_id}, {len(core.records)} entries, "
                    f"state version {core.version}, head {short_hash(core.head)}",
                )
                for label, name, core in (("A", name_a, a), ("B", name_b, b))
            ]
        )
        click.echo(f"history: {_history_line(history)}")
        at = history["diverged_at_seq"]
        if at is not None:
            table(
                ("", "SEQ", "TIME", "AGENT", "TYPE", "CONTENT"),
                [["A", *entry_row(a.records[at - 1])], ["B", *entry_row(b.records[at - 1])]],
                wide=wide,
            )
        if state_diff:
            click.echo(f"state: {len(state_diff)} key(s) differ")
            table(
                ("KEY", "A", "B"),
                [[d["key"], _shown(d, "a"), _shown(d, "b")] for d in state_diff],
                wide=wide,
            )
        else:
            click.echo("state: the same")
        if artifact_diff:
            click.echo(f"artifacts: {len(artifact_diff)} differ")
            table(
                ("NAME", "A", "B"),
                [
                    [
                        d["key"],
                        _artifact_cell(d, "a"),
                        _artifact_cell(d, "b"),
                    ]
                    for d in artifact_diff
                ],
            )
        else:
            click.echo("artifacts: the same")
        return OK if same else DIFFERENT

    return run(body)


def _artifact_cell(entry: dict[str, Any], side: str) -> str:
    if not entry[f"in_{side}"]:
        return "(absent)"
    value = entry[side]
    return f"{value['size']} bytes {short_hash(value['digest'])}"


@click.command(epilog=SESSION_HELP)
@session_argument()
@click.option(
    "--plan",
    "plan_id",
    metavar="PLAN_ID",
    help="The plan to replay (default: the last plan recorded).",
)
@wide_option()
@json_option("Print one JSON object.")
def replay(session: tuple[str, ...], plan_id: str | None, wide: bool, as_json: bool) -> int:
    """Re-run a recorded plan without the model and compare the final state.

    \b
    Takes the plan's recorded plan_created (or plan_failed) entry and the model
    exchanges, forks the session just before the plan's first entry, and runs the
    plan again on the fork: a Planner answered by ReplayProvider.from_session (the
    recorded system prompt and options), a Dispatcher hosting the built-in agents
    (reverse, uppercase). Then it compares each step's outcome and the final state
    and artifacts with those recorded at the plan's last entry. Exits 0 when they
    are the same, 1 when they differ.

    \b
    Supported: plans made by Planner (streamed or not) whose capabilities the
    built-in agents provide, on a session that nothing else wrote to while the
    plan ran (another writer's entries show up as a difference). A plan resumed
    later with resume_sequence is replayed as one run.
    """
    name = parse_session_names(session, count=1)[0]

    async def body() -> int:
        async with open_source(name) as source:
            core = await source.core()
        outcome = await replay_plan(core, plan_id)
        same = outcome["same"]
        if as_json:
            emit_json({"source": str(name), **outcome})
            return OK if same else DIFFERENT
        click.echo(
            f"replayed plan {outcome['plan_id']} of {name} "
            f"({compact(outcome['user_input'])}): {len(outcome['replayed_steps'])} step(s) run "
            f"on a fork at seq {outcome['forked_at_seq']}, model answers from "
            f"{outcome['exchanges']} recorded exchange(s), agents: "
            f"{', '.join(outcome['capabilities'])}"
        )
        steps = max(len(outcome["recorded_steps"]), len(outcome["replayed_steps"]))
        rows = []
        for index in range(steps):
            recorded = _step(outcome["recorded_steps"], index)
            replayed = _step(outcome["replayed_steps"], index)
            rows.append(
                [
                    str(index),
                    recorded[0] or replayed[0],
                    recorded[1],
                    replayed[1],
                ]
            )
        table(("STEP", "CAPABILITY", "RECORDED", "REPLAYED"), rows, wide=wide)
        end = outcome["recorded_end_seq"]
        if outcome["state_differences"]:
            click.echo(
                f"state: {len(outcome['state_differences'])} key(s) differ from the state "
                f"recorded at seq {end} (A: recorded, B: replayed)"
            )
            table(
                ("KEY", "RECORDED", "REPLAYED"),
                [[d["key"], _shown(d, "a"), _shown(d, "b")] for d in outcome["state_differences"]],
                wide=wide,
            )
        else:
            click.echo(f"state: the same as recorded at seq {end}")
        if outcome["artifact_differences"]:
            names = ", ".join(d["key"] for d in outcome["artifact_differences"])
            click.echo(f"artifacts: differ ({names})")
        if outcome["plan_outcome"]["recorded"] != outcome["plan_outcome"]["replayed"]:
            click.echo(
                f"plan: recorded {outcome['plan_outcome']['recorded']}, "
                f"replayed {outcome['plan_outcome']['replayed']}"
            )
        click.echo("result: the same" if same else "result: DIFFERENT")
        return OK if same else DIFFERENT

    return run(body)


def _step(steps: list[dict[str, Any]], index: int) -> tuple[str, str]:
    if index >= len(steps):
        return "", "-"
    step = steps[index]
    status = "ok" if step["success"] else f"failed ({step.get('error_code') or 'error'})"
    return str(step["capability"]), status
