from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from kaizen_async import (
    EntryType,
    KaizenValidationError,
    Session,
    SessionCorruptedError,
    TrajectoryEntry,
)
from kaizen_async._canonical import ZERO_HASH

pytestmark = pytest.mark.anyio


async def test_first_append_is_seq_2_with_fields(session: Session) -> None:
    before = datetime.now(UTC)
    seq = await session.append("agent-1", EntryType.USER_INPUT, {"text": "hi"})
    assert seq == 2
    entry = (await session.get_trajectory())[-1]
    assert entry.seq == 2
    assert entry.agent_id == "agent-1"
    assert entry.entry_type is EntryType.USER_INPUT
    assert entry.content == {"text": "hi"}
    assert entry.timestamp.tzinfo is not None
    assert before - timedelta(seconds=1) <= entry.timestamp <= datetime.now(UTC)


async def test_str_entry_types_are_accepted_and_unknown_refused(session: Session) -> None:
    assert await session.append("a", "system_note", {"n": 1}) == 2
    with pytest.raises(KaizenValidationError):
        await session.append("a", "not_a_type", {})
    with pytest.raises(KaizenValidationError):  # state entries only via set/delete
        await session.append("a", EntryType.STATE_SET, {"key": "x"})
    assert await session.get_trajectory_length() == 2


@pytest.mark.parametrize("agent_id", ["", "   ", None, 5])
async def test_bad_agent_id_leaves_no_gap(session: Session, agent_id: Any) -> None:
    with pytest.raises(KaizenValidationError):
        await session.append(agent_id, EntryType.SYSTEM_NOTE, {})
    assert await session.append("ok", EntryType.SYSTEM_NOTE, {}) == 2


async def test_non_json_content_leaves_no_gap(session: Session) -> None:
    with pytest.raises(KaizenValidationError):
        await session.append("a", EntryType.SYSTEM_NOTE, {"x": object()})
    assert await session.append("a", EntryType.SYSTEM_NOTE, {"x": 1}) == 2


async def test_seqs_are_consecutive_and_chained(session: Session) -> None:
    for i in range(10):
        await session.append("a", EntryType.SYSTEM_NOTE, {"i": i})
    entries = await session.get_trajectory()
    assert [e.seq for e in entries] == list(range(1, 12))
    assert entries[0].prev_hash == ZERO_HASH
    for previous, entry in itertools.pairwise(entries):
        assert entry.prev_hash == previous.hash
    for entry in entries:
        assert entry.compute_hash() == entry.hash
        assert len(entry.hash) == 64


async def test_hash_is_sha256_of_sorted_compact_json(session: Session) -> None:
    import hashlib

    await session.append("a", EntryType.SYSTEM_NOTE, {"b": 1, "a": ["é", 2.5, None]})
    entry = (await session.get_trajectory())[-1]
    fields = entry.to_dict()
    del fields["hash"]
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    assert hashlib.sha256(canonical).hexdigest() == entry.hash


async def test_limit_semantics(session: Session) -> None:
    for i in range(10):
        await session.append("a", EntryType.SYSTEM_NOTE, {"i": i})
    assert len(await session.get_trajectory()) == 11
    last3 = await session.get_trajectory(3)
    assert [e.seq for e in last3] == [9, 10, 11]
    assert len(await session.get_trajectory(100)) == 11
    assert await session.get_trajectory(0) == []
    assert await session.get_trajectory(-5) == []


async def test_filters_combine(session: Session) -> None:
    await session.append("alice", EntryType.USER_INPUT, {"n": 1})  # 2
    await session.append("bob", EntryType.USER_INPUT, {"n": 2})  # 3
    await session.append("alice", EntryType.SYSTEM_NOTE, {"n": 3})  # 4
    await session.set("k", 1)  # 5
    await session.append("alice", EntryType.USER_INPUT, {"n": 4})  # 6

    def seqs(entries: list[TrajectoryEntry]) -> list[int]:
        return [e.seq for e in entries]

    assert seqs(await session.get_trajectory(agent_id="alice")) == [2, 4, 6]
    assert seqs(await session.get_trajectory(entry_types=["user_input"])) == [2, 3, 6]
    assert seqs(
        await session.get_trajectory(entry_types=[EntryType.USER_INPUT], agent_id="alice")
    ) == [2, 6]
    assert seqs(await session.get_trajectory(since_seq=4)) == [5, 6]
    assert seqs(await session.get_trajectory(1, agent_id="alice", since_seq=1)) == [6]
    assert seqs(
        await session.get_trajectory(
            entry_types=[EntryType.STATE_SET, EntryType.USER_INPUT], since_seq=3
        )
    ) == [5, 6]
    assert await session.get_trajectory_length() == 6


async def test_entries_are_frozen_and_isolated(session: Session) -> None:
    await session.append("a", EntryType.SYSTEM_NOTE, {"list": [1]})
    entry = (await session.get_trajectory())[-1]
    with pytest.raises(ValidationError):
        entry.seq = 99
    entry.content["list"].append(2)
    assert (await session.get_trajectory())[-1].content == {"list": [1]}
    await session.verify()


async def test_content_passed_in_is_copied(session: Session) -> None:
    content = {"list": [1]}
    await session.append("a", EntryType.SYSTEM_NOTE, content)
    content["list"].append(2)
    assert (await session.get_trajectory())[-1].content == {"list": [1]}


async def test_verify_counts_and_detects_tampering(session: Session) -> None:
    await session.set("k", 1)
    await session.append("a", EntryType.SYSTEM_NOTE, {"x": 1})
    assert await session.verify() == 3
    core = session._core
    seq, ts, agent, kind, _content, prev, digest = core.records[1]
    core.records[1] = (
        seq,
        ts,
        agent,
        kind,
        b'{"key":"k","new_value":2,"old_value":null,"state_version":1}',
        prev,
        digest,
    )
    with pytest.raises(SessionCorruptedError) as info:
        await session.verify()
    assert info.value.seq == 2
    assert "2" in str(info.value)


async def test_verify_detects_state_drift(session: Session) -> None:
    await session.set("k", 1)
    session._core.state["k"] = b"2"
    with pytest.raises(SessionCorruptedError, match="'k'"):
        await session.verify()


def test_trajectory_entry_requires_aware_timestamp() -> None:
    with pytest.raises(ValidationError):
        TrajectoryEntry(
            seq=1,
            timestamp=datetime(2020, 1, 1),
            agent_id="a",
            entry_type=EntryType.SYSTEM_NOTE,
            content={},
            prev_hash=ZERO_HASH,
            hash="x",
        )


async def test_transaction_applies_all_in_order(session: Session) -> None:
    await session.set("gone", 1)
    async with session.transaction() as tx:
        tx.append("agent", EntryType.AGENT_INVOKED, {"n": 1})
        tx.set("k", "v")
        tx.delete("gone")
        tx.write_artifact("a", b"x")
        tx.append("agent", EntryType.AGENT_COMPLETED, {"n": 2})
    assert tx.results == [3, 2, 3, 6, 7]
    types = [e.entry_type for e in await session.get_trajectory(since_seq=2)]
    assert types == [
        EntryType.AGENT_INVOKED,
        EntryType.STATE_SET,
        EntryType.STATE_DELETED,
        EntryType.ARTIFACT_WRITTEN,
        EntryType.AGENT_COMPLETED,
    ]
    assert await session.get_all_state() == {"k": "v"}
    await session.verify()


async def test_a_transaction_is_one_message_with_one_timestamp(session: Session) -> None:
    async with session.transaction() as tx:  # awaited: applied as one batch
        tx.set("a", 1)
        tx.append("agent", EntryType.SYSTEM_NOTE, {"n": 1})
        tx.set("b", 2)
    assert tx.results == [1, 3, 2]
    async with session.transaction(wait=False) as posted:
        posted.append("agent", EntryType.SYSTEM_NOTE, {"n": 2})
        posted.set("a", 3)
        posted.append("agent", EntryType.SYSTEM_NOTE, {"n": 3})
    assert posted.results is None
    assert session.statistics().queued == 1  # queued as one message
    assert await session.get("a") == 3  # the read waits for the posted state write
    entries = await session.get_trajectory(since_seq=1)
    assert [e.seq for e in entries] == [2, 3, 4, 5, 6, 7]
    assert len({e.timestamp for e in entries[:3]}) == 1
    assert len({e.timestamp for e in entries[3:]}) == 1
    assert entries[4].content == {"key": "a", "new_value": 3, "old_value": 1, "state_version": 3}
    assert await session.verify() == 7


async def test_transaction_is_all_or_nothing(session: Session) -> None:
    from kaizen_async import StateKeyNotFoundError

    await session.set("k", 1)
    with pytest.raises(KaizenValidationError):  # refused when added: nothing applied
        async with session.transaction() as tx:
            tx.set("k", 2)
            tx.set("bad", object())
    with pytest.raises(StateKeyNotFoundError):  # refused when applied: nothing applied
        async with session.transaction() as tx:
            tx.set("k", 3)
            tx.delete("k")
            tx.delete("k")
    with pytest.raises(RuntimeError):
        async with session.transaction() as tx:
            tx.set("k", 4)
            raise RuntimeError("changed my mind")
    assert await session.get("k") == 1
    assert await session.get_trajectory_length() == 2
    assert await session.set("k", 5) == 2


async def test_append_nowait_is_validated_and_ordered(session: Session) -> None:
    with pytest.raises(KaizenValidationError):
        session.append_nowait("a", EntryType.SYSTEM_NOTE, {"x": object()})
    session.append_nowait("a", EntryType.SYSTEM_NOTE, {"first": True})
    assert await session.set("k", 1) == 1
    entries = await session.get_trajectory()
    assert [e.entry_type for e in entries[1:]] == [EntryType.SYSTEM_NOTE, EntryType.STATE_SET]


async def test_unknown_entry_type_filter_is_typed(session: Session) -> None:
    with pytest.raises(KaizenValidationError):
        await session.get_trajectory(entry_types=["bogus"])
