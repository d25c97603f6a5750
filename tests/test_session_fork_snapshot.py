from __future__ import annotations

import pytest

from kaizen_async import EntryType, KaizenValidationError, Session, SessionClosedError

pytestmark = pytest.mark.anyio


async def _populate(session: Session) -> None:
    await session.set("a", 1)  # seq 2
    await session.set("b", {"x": [1]})  # seq 3
    await session.write_artifact("f", b"data")  # seq 4
    await session.set("a", 2)  # seq 5
    for i in range(6):
        await session.append("agent", EntryType.SYSTEM_NOTE, {"i": i})  # seqs 6..11


async def test_snapshot_keys_and_depths(session: Session) -> None:
    await _populate(session)
    snap = await session.snapshot_for_agent("agent", depth=3)
    assert set(snap) == {
        "session_id",
        "state",
        "state_version",
        "trajectory",
        "artifacts",
        "snapshot_time",
        "trajectory_total_length",
    }
    assert snap["session_id"] == session.session_id
    assert snap["state"] == {"a": 2, "b": {"x": [1]}}
    assert snap["state_version"] == 3
    assert snap["artifacts"] == ["f"]
    assert snap["trajectory_total_length"] == 11
    assert [e["seq"] for e in snap["trajectory"]] == [9, 10, 11]
    assert isinstance(snap["trajectory"][0]["timestamp"], str)
    assert snap["trajectory"][0]["entry_type"] == "system_note"
    assert len((await session.snapshot_for_agent("agent"))["trajectory"]) == 10
    assert len((await session.snapshot_for_agent("agent", depth=100))["trajectory"]) == 11
    zero = await session.snapshot_for_agent("agent", depth=0)
    assert zero["trajectory"] == []
    assert zero["trajectory_total_length"] == 11
    assert (await session.snapshot_for_agent("agent", depth=-1))["trajectory"] == []


async def test_snapshot_is_a_deep_copy(session: Session) -> None:
    await _populate(session)
    snap = await session.snapshot_for_agent("agent")
    snap["state"]["b"]["x"].append(2)
    snap["artifacts"].append("g")
    snap["trajectory"][-1]["content"]["i"] = 99
    again = await session.snapshot_for_agent("agent")
    assert again["state"]["b"] == {"x": [1]}
    assert again["artifacts"] == ["f"]
    assert again["trajectory"][-1]["content"]["i"] == 5
    assert await session.get_trajectory_length() == 11  # nothing recorded


async def test_fork_at_a_point(session: Session) -> None:
    await _populate(session)
    parent_entries = await session.get_trajectory()
    child = await session.fork(at_seq=3, session_id="child")
    with pytest.raises(SessionClosedError):  # not started yet
        await child.get("a")
    async with child:
        assert child.session_id == "child"
        assert await child.get_all_state() == {"a": 1, "b": {"x": [1]}}
        assert await child.get_state_version() == 2
        entries = await child.get_trajectory()
        assert [e.hash for e in entries[:3]] == [e.hash for e in parent_entries[:3]]
        forked = entries[3]
        assert forked.entry_type is EntryType.SESSION_FORKED
        assert forked.content == {
            "session_id": "child",
            "parent_session_id": session.session_id,
            "forked_at_seq": 3,
            "parent_hash": parent_entries[2].hash,
        }
        assert forked.prev_hash == parent_entries[2].hash
        assert await child.verify() == 4
        await child.set("a", 100)
        assert await child.get_state_version() == 3
    # the parent is unchanged
    assert await session.get_trajectory() == parent_entries
    assert await session.get("a") == 2


async def test_fork_default_is_everything_and_keeps_artifacts(session: Session) -> None:
    await _populate(session)
    child = await session.fork()
    async with child:
        assert child.session_id != session.session_id
        assert await child.get_trajectory_length() == 12
        assert await child.read_artifact("f") == b"data"
        assert await child.get_all_state() == await session.get_all_state()
        await child.write_artifact("g", b"child only")
    assert await session.list_artifacts() == ["f"]


@pytest.mark.parametrize("at_seq", [0, -1, 12, "3", 2.0, True])
async def test_fork_bad_point(session: Session, at_seq: object) -> None:
    await _populate(session)
    with pytest.raises(KaizenValidationError):
        await session.fork(at_seq=at_seq)  # type: ignore[arg-type]
