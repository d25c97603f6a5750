"""``ReverseAgent`` and ``UppercaseAgent``: transform the string at a state key in place.

A successful call records ``agent_invoked``, the ``state_set`` and ``agent_completed`` in
that order, as one transaction (one message to the session, all or nothing). A missing or
non-string value is ``agent_invalid_params`` and records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kaizen_async import Agent, EntryType, InvokeResult, Session, capability

__all__ = ["KeyParams", "ReverseAgent", "UppercaseAgent"]


class KeyParams(BaseModel):
    """Params of a capability that works on the value at one state key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, pattern=r"\S", description="the state key to work on")


async def _transform(
    agent: Agent,
    capability_name: str,
    result_field: str,
    session: Session,
    params: KeyParams,
    transform: Callable[[str], str],
) -> InvokeResult | dict[str, Any]:
    key = params.key
    value = await session.get(key)
    if value is None:
        return agent.invalid_params(f"No value found at key '{key}'", capability_name, {"key": key})
    if not isinstance(value, str):
        return agent.invalid_params(
            f"Value at key '{key}' is {type(value).__name__}, not a string",
            capability_name,
            {"key": key, "value_type": type(value).__name__},
        )
    output = transform(value)
    # queued without waiting: these writes cannot fail once validated, and any later
    # read or write of the session is applied after them
    async with session.transaction(wait=False) as tx:
        tx.append(
            agent.agent_id,
            EntryType.AGENT_INVOKED,
            {"capability": capability_name, "params": {"key": key}, "input_value": value},
        )
        tx.set(key, output)
        tx.append(
            agent.agent_id,
            EntryType.AGENT_COMPLETED,
            {"capability": capability_name, "original": value, result_field: output},
        )
    return {"original": value, result_field: output}


class ReverseAgent(Agent):
    """Reverses a string by code point: ``"hello 世界 🌍"`` -> ``"🌍 界世 olleh"``."""

    agent_id = "reverse_agent_v1"
    name = "Reverse Agent"
    version = "1.0.0"
    description = "Reverses strings stored in session state."

    @capability("reverse", params=KeyParams, description="Reverse the string at state key `key`.")
    async def reverse(self, session: Session, params: KeyParams) -> InvokeResult | dict[str, Any]:
        return await _transform(self, "reverse", "reversed", session, params, lambda s: s[::-1])


class UppercaseAgent(Agent):
    """Upper-cases a string (``str.upper``)."""

    agent_id = "uppercase_agent_v1"
    name = "Uppercase Agent"
    version = "1.0.0"
    description = "Upper-cases strings stored in session state."

    @capability(
        "uppercase", params=KeyParams, description="Upper-case the string at state key `key`."
    )
    async def uppercase(self, session: Session, params: KeyParams) -> InvokeResult | dict[str, Any]:
        return await _transform(self, "uppercase", "uppercased", session, params, str.upper)
