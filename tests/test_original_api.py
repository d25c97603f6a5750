"""The original Kaizen's public API where it costs nothing: constructors, keywords, aliases,
dict round trips, the registry's answers and the original's error wording."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents import ReverseAgent, UppercaseAgent
from kaizen_async import (
    AgentInfo,
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    CapabilityCall,
    CapabilitySpec,
    Dispatcher,
    DispatchResult,
    EntryType,
    ErrorCode,
    InvokeResult,
    KaizenValidationError,
    PlanResult,
    Session,
    StateKeyNotFoundError,
    TrajectoryEntry,
    sync,
)

pytestmark = pytest.mark.anyio


# -- constructors and keywords -----------------------------------------------------------------


def test_capability_call_positional_and_keywords() -> None:
    call = CapabilityCall("reverse", {"key": "text"})
    assert call.capability == "reverse" and call.params == {"key": "text"}
    assert call == CapabilityCall(capability="reverse", params={"key": "text"})
    assert CapabilityCall("reverse").params == {}
    assert CapabilityCall("reverse", None).params == {}
    with pytest.raises(ValueError, match="capability cannot be empty"):
        CapabilityCall("  ")
    with pytest.raises(ValueError):
        CapabilityCall("reverse", {}, extra=1)
    with pytest.raises(ValueError):
        CapabilityCall()


def test_invoke_result_fail_with_the_original_keywords() -> None:
    failed = InvokeResult.fail(
        error_code=ErrorCode.AGENT_INVALID_PARAMS,
        message="Missing required parameter: key",
        agent_id="a",
        capability="c",
        details={"required": ["key"]},
    )
    assert failed.error == {
        "error_code": "agent_invalid_params",
        "message": "Missing required parameter: key",
        "details": {"required": ["key"]},
    }
    positional = InvokeResult.fail(ErrorCode.AGENT_TIMEOUT, "slow", "a", "c")
    assert positional.error_code is ErrorCode.AGENT_TIMEOUT
    ok = InvokeResult.ok(result={"x": 1}, agent_id="a", capability="c")
    assert ok.success and ok.result == {"x": 1}


def test_plan_result_fail_with_the_original_keywords_and_positions() -> None:
    by_keyword = PlanResult.fail(
        error_code=ErrorCode.PLAN_INVALID_FORMAT,
        message="Failed to parse LLM response: x",
        details={"raw_response": "x"},
        raw_response="x",
    )
    assert by_keyword.error_code is ErrorCode.PLAN_INVALID_FORMAT
    assert by_keyword.raw_response == "x" and by_keyword.error is not None
    assert by_keyword.error["details"] == {"raw_response": "x"}
    # the original's positional order: (error_code, message, details, raw_response)
    positional = PlanResult.fail(ErrorCode.PLAN_LLM_ERROR, "LLM error: down", {"s": 1}, "raw")
    assert positional.error == {
        "error_code": "plan_llm_error",
        "message": "LLM error: down",
        "details": {"s": 1},
    }
    assert positional.raw_response == "raw"


def test_dispatch_result_with_defaults() -> None:
    empty = DispatchResult()
    assert empty.results == [] and empty.success and empty.failed_at is None
    assert empty.executed_count == 0 and empty.completed_indices == []
    assert repr(empty) == "DispatchResult(success=True, executed=0)"
    failed = DispatchResult([InvokeResult.ok(1), InvokeResult.fail("agent_timeout", "slow")])
    assert failed.failed_at == 1 and failed.completed_indices == [0]
    assert repr(failed) == "DispatchResult(success=False, failed_at=1, error_code=agent_timeout)"


async def test_trajectory_entry_seq_num_alias(session: Session) -> None:
    seq = await session.append("me", EntryType.USER_INPUT, {"q": 1})
    (entry,) = await session.get_trajectory(since_seq=seq - 1)
    assert entry.seq_num == entry.seq == seq


# -- dict round trips -------------------------------------------------------------------------


def test_capability_call_round_trip() -> None:
    call = CapabilityCall("reverse", {"key": "text", "n": [1, {"a": None}]})
    assert CapabilityCall.from_dict(call.to_dict()) == call


def test_invoke_result_round_trip() -> None:
    for result in (
        InvokeResult.ok({"reversed": "olleh"}, "reverse_agent_v1", "reverse"),
        InvokeResult.fail("agent_timeout", "slow", "a", "c", {"timeout": 1.5}),
    ):
        assert InvokeResult.from_dict(result.to_dict()) == result
    with pytest.raises(KaizenValidationError):
        InvokeResult.from_dict({"success": True, "error": {"error_code": "x", "message": "m"}})
    with pytest.raises(KaizenValidationError):
        InvokeResult.from_dict({"success": "yes"})
    with pytest.raises(KaizenValidationError):
        InvokeResult.from_dict([True])


def test_agent_info_round_trip() -> None:
    info = AgentInfo(
        agent_id="a1",
        name="A",
        version="1.0.0",
        capabilities=["plain", "rich"],
        specs={
            "rich": CapabilitySpec(
                name="rich",
                description="does things",
                params_schema={"type": "object", "properties": {"k": {"type": "string"}}},
                streamable=False,
            )
        },
        description="an agent",
    )
    data = info.to_dict()
    assert data["agent_id"] == "a1" and data["capabilities"] == ["plain", "rich"]
    assert data["description"] == "an agent"
    again = AgentInfo.from_dict(data)
    assert again == info
    assert again.spec("rich").streamable is False
    # an agent's own info (with pydantic params models) round-trips its JSON part only, as
    # the README says: the params model (a class) is not in the dict
    real = ReverseAgent().info()
    restored = AgentInfo.from_dict(real.to_dict())
    assert restored.to_dict() == real.to_dict()
    assert real.spec("reverse").params_model is not None
    assert restored.spec("reverse").params_model is None
    assert restored.spec("reverse").params_schema == real.spec("reverse").params_schema
    assert restored != real
    without_models = real.model_copy(
        update={
            "specs": {
                name: spec.model_copy(update={"params_model": None})
                for name, spec in real.specs.items()
            }
        }
    )
    assert restored == without_models
    with pytest.raises(KaizenValidationError):
        AgentInfo.from_dict({"agent_id": "", "name": "A", "version": "1", "capabilities": ["c"]})


async def test_trajectory_entry_round_trip(session: Session) -> None:
    await session.set("k", {"nested": [1, 2.5, "é"]})
    for entry in await session.get_trajectory():
        data = entry.to_dict()
        again = TrajectoryEntry.from_dict(data)
        assert again == entry
        assert again.compute_hash() == entry.hash
    original_style = {
        "seq_num": 3,
        "timestamp": datetime(2026, 2, 4, tzinfo=UTC).isoformat(),
        "agent_id": "system",
        "entry_type": "state_set",
        "content": {"key": "k"},
        "prev_hash": "0" * 64,
        "hash": "0" * 64,
    }
    assert TrajectoryEntry.from_dict(original_style).seq_num == 3
    with pytest.raises(KaizenValidationError):
        TrajectoryEntry.from_dict({**original_style, "timestamp": "2026-02-04T00:00:00"})
    with pytest.raises(KaizenValidationError):
        TrajectoryEntry.from_dict({**original_style, "entry_type": "no_such_type"})


def test_plan_result_round_trip() -> None:
    for plan in (
        PlanResult.ok([CapabilityCall("reverse", {"key": "text"})], '{"steps": []}'),
        PlanResult.fail("plan_truncated", "cut", {"at": 3}, "raw", plan_id="p1"),
    ):
        assert PlanResult.from_dict(plan.to_dict()) == plan
    with pytest.raises(KaizenValidationError):
        PlanResult.from_dict({"success": False})


def test_dispatch_result_round_trip() -> None:
    results = [
        InvokeResult.ok({"x": 1}, "a", "reverse"),
        InvokeResult.fail("agent_timeout", "slow", "a", "uppercase"),
    ]
    for result in (
        DispatchResult(results, "plan-1"),
        DispatchResult(results[:1], "plan-2", {"error_code": "plan_truncated", "message": "m"}),
        DispatchResult(),
    ):
        again = DispatchResult.from_dict(result.to_dict())
        assert again.to_dict() == result.to_dict()
        assert again.results == result.results and again.plan_error == result.plan_error
    with pytest.raises(KaizenValidationError):
        DispatchResult.from_dict({"results": "nope"})


# -- the registry -------------------------------------------------------------------------------


async def test_get_agent_for_capability_returns_the_agent() -> None:
    reverse, upper = ReverseAgent(), UppercaseAgent()
    async with Dispatcher() as dispatcher:
        dispatcher.register(reverse)
        dispatcher.register(upper)
        assert dispatcher.get_agent_for_capability("reverse") is reverse
        assert dispatcher.get_agent_for_capability("uppercase") is upper
        assert dispatcher.get_agent_for_capability("fly") is None
        assert repr(dispatcher) == (
            "Dispatcher(agents=['reverse_agent_v1', 'uppercase_agent_v1'], "
            "capabilities=['reverse', 'uppercase'])"
        )


def test_sync_dispatcher_registry() -> None:
    reverse = ReverseAgent()
    with sync.Dispatcher() as dispatcher:
        dispatcher.register(reverse)
        assert dispatcher.get_agent_for_capability("reverse") is reverse
        assert dispatcher.get_agent_for_capability("fly") is None
        assert repr(dispatcher) == (
            "sync.Dispatcher(agents=['reverse_agent_v1'], capabilities=['reverse'])"
        )


# -- the original's wording -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "   ", 0, None])
async def test_bad_state_key_message(session: Session, key: Any) -> None:
    with pytest.raises(KaizenValidationError, match="must be a non-empty string"):
        await session.set(key, 1)


@pytest.mark.parametrize("name", ["", "  ", 5])
async def test_bad_artifact_name_message(session: Session, name: Any) -> None:
    with pytest.raises(KaizenValidationError, match="must be a non-empty string"):
        await session.write_artifact(name, b"x")


async def test_bad_agent_id_message(session: Session) -> None:
    with pytest.raises(KaizenValidationError, match="must be a non-empty string"):
        await session.append(" ", EntryType.USER_INPUT, {})


async def test_too_large_artifact_message() -> None:
    async with Session(max_artifact_size=4) as session:
        with pytest.raises(ArtifactTooLargeError, match=r"exceeds maximum \(4 bytes\)"):
            await session.write_artifact("a", b"12345")


async def test_not_found_messages(session: Session) -> None:
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        await session.read_artifact("missing")
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        await session.get_artifact_size("missing")
    with pytest.raises(StateKeyNotFoundError, match="not found"):
        await session.delete("missing")


async def test_dispatch_messages_keep_the_original_wording(session: Session) -> None:
    async with Dispatcher() as dispatcher:
        with pytest.raises(ValueError, match="must be a non-empty string"):
            await dispatcher.dispatch_single("", session)
        result = await dispatcher.dispatch_single("fly", session)
        assert result.error is not None
        assert result.error["message"] == "No agent registered for capability 'fly'"
