"""``kaizen replay``: run a recorded plan again without the model, and compare.

The plan is found by its ``plan_created`` (or ``plan_failed``) entry; its model exchange is
the ``llm_exchange`` recorded before it for the same request. The session is forked just
before the plan's first entry (with a streamed plan the first step starts before the
exchange is recorded), and on that fork a :class:`Planner` answered by
:meth:`ReplayProvider.from_session` plans the same request, configured as the recorded
request was (its system prompt, options and capability order), and a :class:`Dispatcher`
hosting the built-in agents runs the steps as they stream. The steps' outcomes, the final
state and the artifacts are then compared with what the session recorded at the plan's
last entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._canonical import decode, sha256_hex
from .._dispatcher import Dispatcher
from .._planner import Planner
from .._session import Session
from .._state import SessionCore
from .._trajectory import CONTENT, ENTRY_TYPE, SEQ, EntryType, Record
from ..llm import ReplayProvider
from ._diffing import compare_maps
from ._errors import BadInput

__all__ = ["replay_plan"]

_PLAN_KINDS = (EntryType.PLAN_CREATED.value, EntryType.PLAN_FAILED.value)
_STEP_KINDS = (EntryType.PLAN_STEP_STARTED.value, EntryType.PLAN_STEP_COMPLETED.value)
_EXCHANGE = EntryType.LLM_EXCHANGE.value


def _find_plan(records: Sequence[Record], plan_id: str | None) -> tuple[Record, dict[str, Any]]:
    plans = [r for r in records if r[ENTRY_TYPE] in _PLAN_KINDS]
    if plan_id is not None:
        plans = [r for r in plans if decode(r[CONTENT]).get("plan_id") == plan_id]
        if not plans:
            raise BadInput(f"no plan {plan_id!r} is recorded in this session")
    if not plans:
        raise BadInput(
            "no plan is recorded in this session (no plan_created entry): nothing to replay"
        )
    record = plans[-1]
    return record, decode(record[CONTENT])


def _user_text(request: dict[str, Any]) -> str | None:
    messages = request.get("messages") or []
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1].get("content") if users else None


def _find_exchange(records: Sequence[Record], plan: Record, user_input: str) -> Record:
    for record in reversed(records[: plan[SEQ] - 1]):
        if record[ENTRY_TYPE] == _EXCHANGE:
            request = decode(record[CONTENT]).get("request") or {}
            if _user_text(request) == user_input:
                return record
    raise BadInput(
        "the plan's model exchange is not recorded (no llm_exchange before it for its "
        "request): it cannot be replayed without the model"
    )


def _recorded_steps(
    records: Sequence[Record], plan_id: str
) -> tuple[list[dict[str, Any]], int, int]:
    """The plan's completed steps in order, its first step entry's seq and its last."""
    steps: dict[int, dict[str, Any]] = {}
    first = last = 0
    for record in records:
        if record[ENTRY_TYPE] not in _STEP_KINDS:
            continue
        content = decode(record[CONTENT])
        if content.get("plan_id") != plan_id:
            continue
        first = first or record[SEQ]
        last = record[SEQ]
        if record[ENTRY_TYPE] == EntryType.PLAN_STEP_COMPLETED.value:
            steps[content["step_index"]] = {
                "capability": content.get("capability"),
                "success": content.get("success") is True,
            }
    return [steps[i] for i in sorted(steps)], first, last


def _builtin_agents() -> list[Any]:
    try:
        from agents import ReverseAgent, UppercaseAgent
    except ImportError as exc:  # pragma: no cover - installed with the package
        raise BadInput(f"the built-in agents cannot be imported: {exc}") from None
    return [ReverseAgent(), UppercaseAgent()]


async def replay_plan(core: SessionCore, plan_id: str | None) -> dict[str, Any]:
    """Replay plan ``plan_id`` (default: the last) of a verified session; the comparison."""
    records = core.records
    plan, content = _find_plan(records, plan_id)
    plan_id = str(content.get("plan_id"))
    user_input = content.get("user_input")
    if not isinstance(user_input, str):
        raise BadInput(f"plan {plan_id} records no user_input: it cannot be planned again")
    exchange_record = _find_exchange(records, plan, user_input)
    request = decode(exchange_record[CONTENT])["request"]
    recorded_steps, first_step, last_step = _recorded_steps(records, plan_id)
    start = min(s for s in (first_step, exchange_record[SEQ], plan[SEQ]) if s)
    end = max(last_step, plan[SEQ])
    at_seq = start - 1
    if at_seq < 1:
        raise BadInput("the plan starts at the session's first entry: nothing to fork from")
    recorded = SessionCore.replay(
        records[:end], session_id=core.session_id, verify=False
    )  # the session as it stood at the plan's last entry

    agents = _builtin_agents()
    system = next(
        (m.get("content") for m in request.get("messages") or [] if m.get("role") == "system"),
        None,
    )
    wanted = _capability_order(request)
    async with Session._from_core(core.snapshot_copy()) as original:
        provider = await ReplayProvider.from_session(original)
        fork = await original.fork(at_seq)
    async with fork, Dispatcher() as dispatcher:
        for agent in agents:
            dispatcher.register(agent)
        specs = {spec.name: spec for spec in dispatcher.capability_specs()}
        missing = [name for name in wanted if name not in specs]
        if missing:
            raise BadInput(
                f"plan {plan_id} was made for capabilities the built-in agents do not "
                f"provide: {', '.join(missing)} (they provide: {', '.join(specs)})"
            )
        planner = Planner(
            provider,
            [specs[name] for name in wanted] if wanted else list(specs.values()),
            options=request.get("options") or {},
            system_prompt=system,
        )
        async with planner.stream(user_input, fork, plan_id=plan_id) as stream:
            result = await dispatcher.dispatch_stream(stream, fork)
        plan_result = stream.result
        final_state = await fork.get_all_state()
        final_artifacts = {
            name: sha256_hex(await fork.read_artifact(name)) for name in await fork.list_artifacts()
        }

    replayed_steps = [
        {
            "capability": r.capability,
            "success": r.success,
            "error_code": None if r.error is None else r.error.get("error_code"),
        }
        for r in result.results
    ]
    state_differences = compare_maps(recorded.all_state(), final_state)
    artifact_differences = compare_maps(recorded.artifacts, final_artifacts)
    recorded_plan = "created" if plan[ENTRY_TYPE] == EntryType.PLAN_CREATED.value else "failed"
    replayed_plan = "created" if plan_result is not None and plan_result.success else "failed"
    same_steps = [(s["capability"], s["success"]) for s in recorded_steps] == [
        (s["capability"], s["success"]) for s in replayed_steps
    ]
    return {
        "same": (
            same_steps
            and not state_differences
            and not artifact_differences
            and recorded_plan == replayed_plan
        ),
        "plan_id": plan_id,
        "user_input": user_input,
        "forked_at_seq": at_seq,
        "recorded_end_seq": end,
        "exchanges": sum(1 for r in records if r[ENTRY_TYPE] == _EXCHANGE),
        "capabilities": list(wanted) or sorted(specs),
        "plan_outcome": {"recorded": recorded_plan, "replayed": replayed_plan},
        "recorded_steps": recorded_steps,
        "replayed_steps": replayed_steps,
        "state_differences": state_differences,
        "artifact_differences": artifact_differences,
        "final_state": final_state,
    }


def _capability_order(request: dict[str, Any]) -> list[str]:
    """The capability names, in order, of the plan format the recorded request used."""
    try:
        names = request["format"]["properties"]["steps"]["items"]["properties"]["capability"][
            "enum"
        ]
    except (KeyError, TypeError):
        return []
    return [str(name) for name in names]
