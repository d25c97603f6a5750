from __future__ import annotations

import math
import uuid
from datetime import datetime
from typing import Any

import anyio
import pytest

from kaizen_async import (
    EntryType,
    ErrorCode,
    KaizenValidationError,
    Session,
    SessionClosedError,
    StateKeyNotFoundError,
)

pytestmark = pytest.mark.anyio


async def test_new_session_has_one_created_entry(session: Session) -> None:
    entries = await session.get_trajectory()
    assert [e.entry_type for e in entries] == [EntryType.SESSION_CREATED]
    created = entries[0]
    assert created.seq == 1
    assert created.agent_id == "system"
    assert created.content["session_id"] == session.session_id
    assert created.content["max_artifact_size"] == 100 * 1024 * 1024
    assert created.content["schema_version"] == 2
    assert await session.get_state_version() == 0
    assert len(session.session_id) == 36
    uuid.UUID(session.session_id)


async def test_custom_id_and_limit() -> None:
    async with Session("my-id", max_artifact_size=10, workspace_path="/tmp/ws") as s:
        assert s.session_id == "my-id"
        assert s.max_artifact_size == 10
        assert str(s.workspace_file("a", "b.txt")) == "/tmp/ws/a/b.txt"
    async with Session() as s:
        assert s.workspace_file("x") is None


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "",
        0,
        -7,
        2**63 - 1,
        1.5,
        True,
        False,
        None,
        [],
        {},
        [1, "a", None],
        {"nested": {"list": [1, 2, {"deep": "ok"}]}, "emoji": "🌍"},
    ],
)
async def test_set_get_round_trips_every_json_type(session: Session, value: Any) -> None:
    await session.set("k", value)
    assert await session.get("k") == value


async def test_set_returns_version_and_adds_exactly_one(session: Session) -> None:
    assert await session.set("a", 1) == 1
    assert await session.set("a", 1) == 2  # equal value still counts
    assert await session.set("b", "x") == 3
    assert await session.get_state_version() == 3
    await session.get("a")
    assert await session.get_state_version() == 3  # reads do not bump


async def test_state_set_entry_content_is_exact(session: Session) -> None:
    await session.set("k", {"v": 1})
    await session.set("k", [2])
    entries = await session.get_trajectory(entry_types=[EntryType.STATE_SET])
    assert [e.content for e in entries] == [
        {"key": "k", "old_value": None, "new_value": {"v": 1}, "state_version": 1},
        {"key": "k", "old_value": {"v": 1}, "new_value": [2], "state_version": 2},
    ]
    assert all(e.agent_id == "system" for e in entries)


async def test_get_default_and_missing(session: Session) -> None:
    assert await session.get("missing") is None
    assert await session.get("missing", 5) == 5
    default: dict[str, Any] = {"a": []}
    got = await session.get("missing", default)
    assert got == default
    got["a"].append(1)
    assert default == {"a": []}


async def test_values_are_copied_in_and_out(session: Session) -> None:
    value = {"list": [1, 2]}
    await session.set("k", value)
    value["list"].append(3)
    assert await session.get("k") == {"list": [1, 2]}
    out = await session.get("k")
    out["list"].append(99)
    assert await session.get("k") == {"list": [1, 2]}
    everything = await session.get_all_state()
    everything["k"]["list"].clear()
    everything["new"] = 1
    assert await session.get_all_state() == {"k": {"list": [1, 2]}}


async def test_tuples_are_stored_as_lists(session: Session) -> None:
    await session.set("t", (1, 2))
    assert await session.get("t") == [1, 2]


@pytest.mark.parametrize("key", ["", "   ", "\n\t", 0, 123, None, b"bytes", ("t",)])
async def test_bad_keys_are_refused_without_trace(session: Session, key: Any) -> None:
    before = await session.get_trajectory_length()
    with pytest.raises(KaizenValidationError) as info:
        await session.set(key, 1)
    assert isinstance(info.value, ValueError)
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    assert await session.get_state_version() == 0
    assert await session.get_trajectory_length() == before


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1: "int key"},
        {"s": {1, 2}},
        math.nan,
        math.inf,
        [-math.inf],
        {"d": datetime(2020, 1, 1)},
        b"bytes",
        2**70,
    ],
)
async def test_non_json_values_are_refused_without_trace(session: Session, value: Any) -> None:
    with pytest.raises(KaizenValidationError):
        await session.set("k", value)
    assert await session.get_state_version() == 0
    assert await session.get_trajectory_length() == 1
    # the next write has no gap
    assert await session.set("k", 1) == 1
    assert [e.seq for e in await session.get_trajectory()] == [1, 2]


async def test_delete(session: Session) -> None:
    await session.set("k", "v")
    assert await session.delete("k") == 2
    assert await session.get("k") is None
    assert await session.get_all_state() == {}
    last = (await session.get_trajectory(1))[0]
    assert last.entry_type is EntryType.STATE_DELETED
    assert last.content == {"key": "k", "old_value": "v", "state_version": 2}


async def test_delete_absent_key_is_typed_and_changes_nothing(session: Session) -> None:
    await session.set("k", 1)
    with pytest.raises(StateKeyNotFoundError) as info:
        await session.delete("nope")
    assert isinstance(info.value, KeyError)
    assert info.value.code is ErrorCode.STATE_KEY_NOT_FOUND
    assert "nope" in str(info.value)
    assert await session.get_state_version() == 1
    assert await session.get_trajectory_length() == 2


async def test_state_at_replays_history(session: Session) -> None:
    await session.set("a", 1)
    await session.set("b", 2)
    await session.set("a", 3)
    await session.delete("b")
    assert await session.state_at(0) == {}
    assert await session.state_at(1) == {"a": 1}
    assert await session.state_at(2) == {"a": 1, "b": 2}
    assert await session.state_at(3) == {"a": 3, "b": 2}
    assert await session.state_at(4) == {"a": 3}
    with pytest.raises(KaizenValidationError):
        await session.state_at(5)
    with pytest.raises(KaizenValidationError):
        await session.state_at(-1)


async def test_calls_before_start_and_after_close_raise() -> None:
    s = Session()
    with pytest.raises(SessionClosedError):
        await s.set("k", 1)
    with pytest.raises(SessionClosedError):
        await s.get("k")
    async with s:
        await s.set("k", 1)
    with pytest.raises(SessionClosedError) as info:
        await s.set("k", 2)
    assert info.value.code is ErrorCode.SESSION_CLOSED
    with pytest.raises(SessionClosedError):
        await s.get_trajectory()
    with pytest.raises(SessionClosedError):
        await s.save("x.kaizen")
    with pytest.raises(SessionClosedError):
        async with s:
            pass


async def test_statistics_count_batches(session: Session) -> None:
    for i in range(10):
        await session.set("k", i)
    assert session.statistics().batches == 10  # one caller: one write per batch
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(session.set, f"k{i}", i)
    stats = session.statistics()
    assert stats.applied == 60
    assert stats.batches < 10 + 50  # concurrent writes were drained together
    assert stats.state_version == 60
    assert stats.trajectory_length == 61
    assert stats.queued == 0
