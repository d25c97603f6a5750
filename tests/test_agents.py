from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from agents import KeyParams, ReverseAgent, UppercaseAgent
from kaizen_async import (
    Agent,
    AgentInfo,
    AgentProtocol,
    CapabilitySpec,
    EntryType,
    ErrorCode,
    InvokeResult,
    Session,
    capability,
)

pytestmark = pytest.mark.anyio


def test_info_is_derived_from_capabilities() -> None:
    info = ReverseAgent().info()
    assert (info.agent_id, info.name, info.version) == (
        "reverse_agent_v1",
        "Reverse Agent",
        "1.0.0",
    )
    assert info.capabilities == ["reverse"]
    spec = info.spec("reverse")
    assert spec.params_schema == KeyParams.model_json_schema()
    assert spec.params_model is KeyParams
    assert spec.streamable is True
    assert "Reverse" in spec.description
    assert UppercaseAgent().info().capabilities == ["uppercase"]
    assert isinstance(ReverseAgent(), AgentProtocol)
    assert repr(ReverseAgent()) == "ReverseAgent(agent_id='reverse_agent_v1')"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"agent_id": "", "name": "n", "version": "1", "capabilities": ["c"]}, "agent_id"),
        ({"agent_id": "a", "name": " ", "version": "1", "capabilities": ["c"]}, "name"),
        ({"agent_id": "a", "name": "n", "version": "1", "capabilities": []}, "capabilities"),
        ({"agent_id": "a", "name": "n", "version": "1", "capabilities": [""]}, "capabilities"),
    ],
)
def test_agent_info_refuses_empty_fields(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AgentInfo(**kwargs)


def test_invoke_result_consistency() -> None:
    ok = InvokeResult.ok({"x": 1}, "a", "cap")
    assert ok.success and ok.result == {"x": 1} and ok.error is None
    failed = InvokeResult.fail(ErrorCode.AGENT_INVALID_PARAMS, "bad", "a", "cap", {"k": 1})
    assert failed.error == {
        "error_code": "agent_invalid_params",
        "message": "bad",
        "details": {"k": 1},
    }
    assert failed.error_code is ErrorCode.AGENT_INVALID_PARAMS
    assert "details" not in InvokeResult.fail("agent_invalid_params", "m").error  # type: ignore[operator]
    with pytest.raises(ValueError):
        InvokeResult(success=True, error={"error_code": "x", "message": "m"})
    with pytest.raises(ValueError):
        InvokeResult(success=False)
    with pytest.raises(AttributeError):
        ok.success = False  # type: ignore[misc]


def test_invoke_result_is_a_value() -> None:
    ok = InvokeResult.ok({"x": [1, 2]}, "a", "cap")
    assert ok == InvokeResult(True, {"x": [1, 2]}, None, "a", "cap")
    assert ok != InvokeResult.ok({"x": [1, 2]}, "a", "other")
    assert pickle.loads(pickle.dumps(ok)) == ok and type(copy.deepcopy(ok)) is InvokeResult
    assert repr(ok) == (
        "InvokeResult(success=True, result={'x': [1, 2]}, error=None, agent_id='a', "
        "capability='cap')"
    )
    match InvokeResult.fail("agent_timeout", "slow"):
        case InvokeResult(success=False, error={"error_code": code}):
            assert code == "agent_timeout"
        case _:
            pytest.fail("a failed result matches by field")


@pytest.mark.parametrize(
    ("text", "reversed_", "upper"),
    [
        ("hello", "olleh", "HELLO"),
        ("", "", ""),
        ("hello 世界 🌍", "🌍 界世 olleh", "HELLO 世界 🌍"),
        ("MiXeD", "DeXiM", "MIXED"),
    ],
)
async def test_reverse_and_uppercase(
    session: Session, text: str, reversed_: str, upper: str
) -> None:
    await session.set("text", text)
    result = await ReverseAgent().invoke("reverse", session, {"key": "text"})
    assert result.success
    assert result.result == {"original": text, "reversed": reversed_}
    assert result.agent_id == "reverse_agent_v1" and result.capability == "reverse"
    assert await session.get("text") == reversed_
    await session.set("text", text)
    result = await UppercaseAgent().invoke("uppercase", session, {"key": "text"})
    assert result.result == {"original": text, "uppercased": upper}
    assert await session.get("text") == upper


async def test_footprint_of_a_successful_call(session: Session) -> None:
    await session.set("text", "abc")
    await ReverseAgent().invoke("reverse", session, {"key": "text"})
    entries = await session.get_trajectory(since_seq=2)
    assert [e.entry_type for e in entries] == [
        EntryType.AGENT_INVOKED,
        EntryType.STATE_SET,
        EntryType.AGENT_COMPLETED,
    ]
    assert [e.agent_id for e in entries] == ["reverse_agent_v1"] * 3  # its state_set too
    assert entries[0].content == {
        "capability": "reverse",
        "params": {"key": "text"},
        "input_value": "abc",
    }
    assert entries[1].content["new_value"] == "cba"
    assert entries[2].content == {"capability": "reverse", "original": "abc", "reversed": "cba"}


@pytest.mark.parametrize(
    ("params", "stored", "message"),
    [
        ({}, "x", "Missing required parameter: key"),
        ({"key": 5}, "x", "Invalid parameter 'key'"),
        ({"key": None}, "x", "Invalid parameter 'key'"),
        ({"key": "text", "extra": 1}, "x", "extra"),
        ({"key": "missing"}, "x", "No value found at key 'missing'"),
        ({"key": "none"}, "x", "No value found at key 'none'"),
        ({"key": "number"}, "x", "not a string"),
    ],
)
async def test_invalid_params_record_nothing(
    session: Session, params: dict[str, Any], stored: str, message: str
) -> None:
    await session.set("text", stored)
    await session.set("none", None)
    await session.set("number", 42)
    length = await session.get_trajectory_length()
    result = await ReverseAgent().invoke("reverse", session, params)
    assert not result.success
    assert result.error_code is ErrorCode.AGENT_INVALID_PARAMS
    assert message in result.error["message"]  # type: ignore[index]
    assert await session.get_trajectory_length() == length
    assert await session.get("text") == stored


async def test_pydantic_details_are_kept(session: Session) -> None:
    result = await ReverseAgent().invoke("reverse", session, {"key": 1})
    errors = result.error["details"]["errors"]  # type: ignore[index]
    assert errors[0]["loc"] == ("key",) or errors[0]["loc"] == ["key"]
    assert errors[0]["type"] == "string_type"


async def test_unknown_capability(session: Session) -> None:
    result = await ReverseAgent().invoke("explode", session, {})
    assert result.error_code is ErrorCode.AGENT_CAPABILITY_NOT_FOUND
    assert "['reverse']" in result.error["message"]  # type: ignore[index]


class Count(BaseModel):
    n: int


class CustomAgent(Agent):
    agent_id = "custom"

    @capability("count", params=Count, streamable=False)
    async def count(self, session: Session, params: Count) -> int:
        """Counts to n."""
        return params.n

    @capability("raw")
    async def raw(self, session: Session, params: dict[str, Any]) -> InvokeResult:
        return self.ok(params, "raw")


async def test_declarative_agent(session: Session) -> None:
    agent = CustomAgent()
    info = agent.info()
    assert info.name == "CustomAgent"
    assert sorted(info.capabilities) == ["count", "raw"]
    assert info.spec("count") == CapabilitySpec(
        name="count",
        description="Counts to n.",
        params_schema=Count.model_json_schema(),
        streamable=False,
        params_model=Count,
    )
    assert (await agent.invoke("count", session, {"n": 3})).result == 3
    strict = await agent.invoke("count", session, {"n": "3"})  # strict: no coercion
    assert strict.error_code is ErrorCode.AGENT_INVALID_PARAMS
    assert (await agent.invoke("raw", session, {"a": [1]})).result == {"a": [1]}


def test_capability_must_be_async() -> None:
    with pytest.raises(TypeError):
        capability("sync")(lambda self, session, params: None)  # type: ignore[type-var]


@pytest.mark.parametrize("key", ["", "   "])
async def test_blank_key_is_invalid_params_and_records_nothing(session: Session, key: str) -> None:
    result = await ReverseAgent().invoke("reverse", session, {"key": key})
    assert result.error_code is ErrorCode.AGENT_INVALID_PARAMS
    assert "key" in result.error["message"]  # type: ignore[index]
    assert await session.get_trajectory_length() == 1
