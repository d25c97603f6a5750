"""Writes are all or nothing, refuse text that is not UTF-8, are attributed to the agent
that made them, and keep compact bytes; capability results must be JSON (issue 7, Writes)."""

from __future__ import annotations

import dataclasses
import enum
import gc
import math
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents import ReverseAgent
from kaizen_async import (
    Agent,
    AgentInfo,
    Dispatcher,
    DispatchError,
    EntryType,
    ErrorCode,
    InvokeResult,
    KaizenError,
    KaizenValidationError,
    Session,
    Transaction,
    capability,
)
from kaizen_async._canonical import check_json, encode
from kaizen_async._trajectory import CONTENT

pytestmark = pytest.mark.anyio

BAD = "\ud800"  # a lone surrogate: a str that is not valid UTF-8


async def _unchanged(session: Session, length: int = 1, version: int = 0) -> None:
    """Nothing was recorded or applied, and the next write leaves no gap."""
    assert await session.get_trajectory_length() == length
    assert await session.get_state_version() == version
    assert session.statistics().queued == 0
    assert await session.set("after", 1) == version + 1
    assert (await session.get_trajectory(1))[0].seq == length + 1
    await session.verify()


# -- 1. all or nothing ----------------------------------------------------------------------


async def test_transaction_with_one_invalid_key_applies_none_of_it(session: Session) -> None:
    # the key used to be encoded only when the batch was applied, after "a" was in
    with pytest.raises(KaizenValidationError):
        async with session.transaction() as tx:
            tx.set("a", 1)
            tx.set(BAD, 2)
    assert await session.get_all_state() == {}
    await _unchanged(session)


#: one invalid call of each Transaction method, applied to a transaction
BAD_TX_WRITES: list[tuple[str, Callable[[Transaction], None]]] = [
    ("set key", lambda tx: tx.set(BAD, 1)),
    ("set key in value", lambda tx: tx.set("k", {BAD: 1})),
    ("set value", lambda tx: tx.set("k", [BAD])),
    ("set non-JSON", lambda tx: tx.set("k", object())),
    ("set NaN", lambda tx: tx.set("k", math.nan)),
    ("delete key", lambda tx: tx.delete(BAD)),
    ("delete blank key", lambda tx: tx.delete(" ")),
    ("append agent", lambda tx: tx.append(BAD, EntryType.SYSTEM_NOTE, {})),
    ("append content", lambda tx: tx.append("a", EntryType.SYSTEM_NOTE, {"t": BAD})),
    ("append type", lambda tx: tx.append("a", "bogus", {})),
    ("artifact name", lambda tx: tx.write_artifact(BAD, b"x")),
    ("artifact path", lambda tx: tx.write_artifact("../x", b"x")),
    ("artifact data", lambda tx: tx.write_artifact("x", "text")),  # type: ignore[arg-type]
    ("artifact size", lambda tx: tx.write_artifact("x", b"x" * 101)),
    ("delete artifact name", lambda tx: tx.delete_artifact(BAD)),
]


@pytest.mark.parametrize(("what", "bad_write"), BAD_TX_WRITES, ids=[w for w, _ in BAD_TX_WRITES])
async def test_a_refused_write_spoils_the_transaction_even_if_caught(
    what: str, bad_write: Callable[[Transaction], None]
) -> None:
    async with Session(max_artifact_size=100) as session:
        await session.set("k", 0)
        await session.write_artifact("old", b"o")
        refused: list[Exception] = []
        with pytest.raises(KaizenValidationError, match="not applied") as info:
            async with session.transaction() as tx:
                tx.set("k", 1)
                tx.write_artifact("new", b"n")
                tx.delete_artifact("old")
                try:
                    bad_write(tx)
                except Exception as exc:  # the caller catches it and goes on
                    refused.append(exc)
                tx.append("a", EntryType.SYSTEM_NOTE, {"after": True})
        assert len(refused) == 1
        assert info.value.__cause__ is refused[0]
        assert tx.results is None
        assert await session.get("k") == 0
        assert await session.list_artifacts() == ["old"]
        await _unchanged(session, length=3, version=1)


async def test_a_refused_write_spoils_a_transaction_that_does_not_wait(session: Session) -> None:
    with pytest.raises(KaizenValidationError, match="not applied"):
        async with session.transaction(wait=False) as tx:
            tx.set("k", 1)
            with pytest.raises(KaizenValidationError):
                tx.delete("k")  # may fail when applied: refused in a transaction that won't wait
    await _unchanged(session)


async def test_a_transaction_left_with_an_exception_still_raises_that_exception(
    session: Session,
) -> None:
    with pytest.raises(RuntimeError, match="mine"):
        async with session.transaction() as tx:
            tx.set("k", 1)
            with pytest.raises(KaizenValidationError):
                tx.set(BAD, 2)
            raise RuntimeError("mine")
    await _unchanged(session)


@pytest.mark.parametrize(
    ("agent_id", "entry_type", "content"),
    [
        (BAD, EntryType.SYSTEM_NOTE, {}),
        (f"agent-{BAD}", EntryType.SYSTEM_NOTE, {}),
        ("a", EntryType.SYSTEM_NOTE, {"t": BAD}),
        ("a", EntryType.SYSTEM_NOTE, {BAD: 1}),
        ("a", EntryType.SYSTEM_NOTE, {"x": math.inf}),
        ("a", EntryType.SYSTEM_NOTE, {"x": object()}),
        ("", EntryType.SYSTEM_NOTE, {}),
        (None, EntryType.SYSTEM_NOTE, {}),
        ("a", "bogus", {}),
        ("a", EntryType.STATE_SET, {}),
    ],
    ids=[
        "agent",
        "agent suffix",
        "content",
        "content key",
        "infinity",
        "object",
        "blank agent",
        "no agent",
        "unknown type",
        "state type",
    ],
)
async def test_append_nowait_raises_at_once_and_queues_nothing(
    session: Session, agent_id: Any, entry_type: Any, content: Any
) -> None:
    with pytest.raises(KaizenValidationError):
        session.append_nowait(agent_id, entry_type, content)
    assert session.statistics().queued == 0  # nothing reached the actor, to be lost there
    await _unchanged(session)


#: one invalid call of each awaited write of a session
BAD_WRITES: list[tuple[str, Callable[[Session], Any]]] = [
    ("set key", lambda s: s.set(BAD, 1)),
    ("set value", lambda s: s.set("k", object())),
    ("delete key", lambda s: s.delete(BAD)),
    ("append agent", lambda s: s.append(BAD, EntryType.SYSTEM_NOTE, {})),
    ("append content", lambda s: s.append("a", EntryType.SYSTEM_NOTE, {"x": math.nan})),
    ("write artifact name", lambda s: s.write_artifact(BAD, b"x")),
    ("write artifact data", lambda s: s.write_artifact("a", "text")),  # type: ignore[arg-type]
    ("delete artifact name", lambda s: s.delete_artifact(BAD)),
]


@pytest.mark.parametrize(("what", "write"), BAD_WRITES, ids=[w for w, _ in BAD_WRITES])
async def test_an_invalid_write_is_refused_before_it_is_queued(
    session: Session, what: str, write: Callable[[Session], Any]
) -> None:
    before = session.statistics()
    with pytest.raises(KaizenError):  # KaizenValidationError, KaizenTypeError for the data
        await write(session)
    after = session.statistics()
    assert (after.applied, after.batches) == (before.applied, before.batches)  # never queued
    await _unchanged(session)


# -- 2. text that is not valid UTF-8 ----------------------------------------------------------

#: every session entry point that takes text, each given a lone surrogate somewhere
SESSION_CALLS: list[tuple[str, Callable[[Session], Any]]] = [
    ("set key", lambda s: s.set(BAD, 1)),
    ("set key suffix", lambda s: s.set("key" + BAD, 1)),
    ("set value", lambda s: s.set("k", BAD)),
    ("set nested value", lambda s: s.set("k", {"a": [1, {"b": BAD}]})),
    ("set dict key", lambda s: s.set("k", {BAD: 1})),
    ("delete", lambda s: s.delete(BAD)),
    ("get", lambda s: s.get(BAD)),
    ("append agent", lambda s: s.append(BAD, EntryType.SYSTEM_NOTE, {})),
    ("append content", lambda s: s.append("a", EntryType.SYSTEM_NOTE, {"t": BAD})),
    ("write artifact", lambda s: s.write_artifact(BAD, b"x")),
    ("write artifact in dir", lambda s: s.write_artifact(f"dir/{BAD}.txt", b"x")),
    ("read artifact", lambda s: s.read_artifact(BAD)),
    ("artifact size", lambda s: s.get_artifact_size(BAD)),
    ("delete artifact", lambda s: s.delete_artifact(BAD)),
]


@pytest.mark.parametrize(("what", "call"), SESSION_CALLS, ids=[w for w, _ in SESSION_CALLS])
async def test_text_that_is_not_utf8_is_a_validation_error(
    session: Session, what: str, call: Callable[[Session], Any]
) -> None:
    with pytest.raises(KaizenValidationError) as info:
        await call(session)
    assert info.value.code is ErrorCode.VALIDATION_ERROR
    await _unchanged(session)


def test_a_session_id_that_is_not_utf8_is_a_validation_error() -> None:
    with pytest.raises(KaizenValidationError):
        Session(BAD)


async def test_dispatch_refuses_text_that_is_not_utf8_before_anything_runs(
    session: Session,
) -> None:
    good = {"capability": "reverse", "params": {"key": "text"}}
    await session.set("text", "abc")
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        attempts: list[Callable[[], Any]] = [
            lambda: d.dispatch_single("rev" + BAD, session, {"key": "text"}),
            lambda: d.dispatch_single("reverse", session, {"key": BAD}),
            lambda: d.dispatch_single("reverse", session, {BAD: "text"}),
            lambda: d.dispatch_sequence([good, {"capability": BAD}], session),
            lambda: d.dispatch_sequence(
                [good, {"capability": "reverse", "params": {BAD: 1}}], session
            ),
            lambda: d.dispatch_parallel([good, {"capability": "x" + BAD}], session),
            lambda: d.resume_sequence([good, {"capability": BAD}], session, plan_id="p"),
        ]
        for attempt in attempts:
            with pytest.raises(KaizenValidationError):
                await attempt()
    assert await session.get("text") == "abc"
    await _unchanged(session, length=2, version=1)


async def _calls(*calls: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for call in calls:
        yield call


@pytest.mark.parametrize("plan_id", [BAD, "p" + BAD, 5, b"p", "", "  "])
async def test_dispatch_refuses_a_bad_plan_id_before_anything_runs(
    session: Session, plan_id: Any
) -> None:
    # a lone surrogate used to be a raw TypeError from the step's encoding; 5 and "" were
    # recorded (resume_sequence) as the plan's id
    good = {"capability": "reverse", "params": {"key": "text"}}
    await session.set("text", "abc")
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        attempts: list[Callable[[], Any]] = [
            lambda: d.dispatch_single("reverse", session, {"key": "text"}, plan_id=plan_id),
            lambda: d.dispatch_sequence([good], session, plan_id=plan_id),
            lambda: d.dispatch_parallel([good, good], session, plan_id=plan_id),
            lambda: d.resume_sequence([good], session, plan_id=plan_id),
            lambda: d.dispatch_stream(_calls(good), session, plan_id=plan_id),
        ]
        for attempt in attempts:
            with pytest.raises(DispatchError, match="plan_id"):
                await attempt()
    assert await session.get("text") == "abc"
    await _unchanged(session, length=2, version=1)


class SurrogateAgent(Agent):
    agent_id = "agent" + BAD

    @capability("noop")
    async def noop(self, session: Session, params: dict[str, Any]) -> None:
        await session.set("k", 1)


async def test_an_agent_id_that_is_not_utf8_is_refused_when_registered(session: Session) -> None:
    async with Dispatcher() as d:
        with pytest.raises(KaizenValidationError):
            d.register(SurrogateAgent())
        assert d.get_capabilities() == []
    with pytest.raises(KaizenValidationError):  # invoked directly: refused as a writer
        await SurrogateAgent().invoke("noop", session, {})
    await _unchanged(session)


class Raiser(Agent):
    agent_id = "raiser"

    @capability("raise")
    async def raise_(self, session: Session, params: dict[str, Any]) -> None:
        raise ValueError(f"bad {BAD} text")


async def test_an_exception_message_that_is_not_utf8_is_still_recorded(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(Raiser())
        result = await d.dispatch_single("raise", session)
    assert result.error_code is ErrorCode.AGENT_INVOCATION_FAILED
    failed = await session.get_trajectory(entry_types=[EntryType.AGENT_FAILED])
    assert len(failed) == 1  # it used to be dropped: its content could not be encoded
    assert failed[0].content["exception_message"] == "bad \\ud800 text"
    await session.verify()


# -- 3. agent-attributed writes -----------------------------------------------------------------


class Writer(Agent):
    """Makes every kind of state and artifact write through the session it is handed."""

    agent_id = "writer_v1"

    def __init__(self) -> None:
        self.seen: list[Session] = []

    @capability("write")
    async def write(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(session)
        before = await session.get("outside")  # reads are the session's own
        await session.set("k", 1)
        await session.write_artifact("a.txt", b"a")
        await session.delete("k")
        await session.delete_artifact("a.txt")
        async with session.transaction() as tx:
            tx.set("t", 2)
            tx.write_artifact("b.txt", b"b")
            tx.append("writer_v1", EntryType.SYSTEM_NOTE, {"n": 1})
        return {"before": before, "version": await session.get_state_version()}


class ProtocolWriter:
    """An agent that is not an ``Agent`` subclass: only info() and invoke()."""

    def info(self) -> AgentInfo:
        return AgentInfo(agent_id="protocol_writer", name="P", version="1", capabilities=["pwrite"])

    async def invoke(
        self, capability: str, session: Session, params: dict[str, Any]
    ) -> InvokeResult:
        await session.set("p", 1)
        return InvokeResult.ok(None, "protocol_writer", capability)


WRITES = {
    EntryType.STATE_SET,
    EntryType.STATE_DELETED,
    EntryType.ARTIFACT_WRITTEN,
    EntryType.ARTIFACT_DELETED,
}


async def _writers(session: Session) -> list[tuple[str, str]]:
    return [
        (e.agent_id, e.entry_type.value) for e in await session.get_trajectory(entry_types=WRITES)
    ]


async def test_a_capability_s_writes_are_recorded_under_its_agent_id(session: Session) -> None:
    agent = Writer()
    await session.set("outside", "x")
    async with Dispatcher() as d:
        d.register(agent)
        d.register(ProtocolWriter())
        result = await d.dispatch_single("write", session)
        assert result.success and result.result == {"before": "x", "version": 4}
        assert (await d.dispatch_single("pwrite", session)).success
    await session.set("outside", "y")
    assert await _writers(session) == [
        ("system", "state_set"),
        ("writer_v1", "state_set"),
        ("writer_v1", "artifact_written"),
        ("writer_v1", "state_deleted"),
        ("writer_v1", "artifact_deleted"),
        ("writer_v1", "state_set"),
        ("writer_v1", "artifact_written"),
        ("protocol_writer", "state_set"),
        ("system", "state_set"),  # the session itself, outside any agent, stays system
    ]
    view = agent.seen[0]
    assert isinstance(view, Session) and view is not session
    assert view.session_id == session.session_id
    assert await view.get_all_state() == await session.get_all_state()  # the same state
    assert await session.verify() == await session.get_trajectory_length()


async def test_an_agent_invoked_directly_writes_under_its_own_id(session: Session) -> None:
    await session.set("outside", "x")
    assert (await Writer().invoke("write", session, {})).success
    writers = {agent for agent, _ in await _writers(session)}
    assert writers == {"system", "writer_v1"}
    await session.set("again", 1)
    assert (await session.get_trajectory(1))[0].agent_id == "system"


async def test_builtin_agents_record_their_state_set_under_their_id(session: Session) -> None:
    await session.set("text", "abc")
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        assert (await d.dispatch_single("reverse", session, {"key": "text"})).success
    step = await session.get_trajectory(since_seq=2)
    assert [(e.agent_id, e.entry_type) for e in step] == [
        ("dispatcher", EntryType.PLAN_STEP_STARTED),
        ("reverse_agent_v1", EntryType.AGENT_INVOKED),
        ("reverse_agent_v1", EntryType.STATE_SET),
        ("reverse_agent_v1", EntryType.AGENT_COMPLETED),
        ("dispatcher", EntryType.PLAN_STEP_COMPLETED),
    ]


class Saver(Agent):
    agent_id = "saver"

    @capability("save")
    async def save(self, session: Session, params: dict[str, Any]) -> int:
        await session.set("k", "v")
        return await session.save(params["path"])


async def test_the_agent_view_shares_the_session_files(session: Session, tmp_path: Path) -> None:
    path = str(tmp_path / "s.kaizen")
    async with Dispatcher() as d:
        d.register(Saver())
        assert (await d.dispatch_single("save", session, {"path": path})).success
    await session.set("k2", 2)
    await session.save(path)  # continues the save made through the view
    async with Session.load(path) as loaded:
        assert await loaded.get_all_state() == {"k": "v", "k2": 2}
        entries = await loaded.get_trajectory(entry_types=[EntryType.STATE_SET])
        assert [e.agent_id for e in entries] == ["saver", "system"]


# -- 4. results are JSON ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    LOW = 1


class Mode(enum.StrEnum):
    FAST = "fast"


@dataclasses.dataclass
class Point:
    x: int = 1


class Text(str):
    pass


class Mapping(dict[str, Any]):
    pass


#: values orjson writes (some natively: UUID, enums, Fragment) but that are not JSON values:
#: stored, they would come back as something else (a UUID as a str, an enum as its value)
NOT_PLAIN_JSON: list[Any] = [
    uuid.UUID(int=1),
    {"id": uuid.UUID(int=2)},
    [1, {"ids": (uuid.UUID(int=3),)}],
    Color.RED,
    Level.LOW,
    {"mode": Mode.FAST},
    orjson.Fragment(b'{"raw": 1}'),
    [orjson.Fragment(b"1,2")],
    date(2020, 1, 1),
    time(12, 0),
    {"at": datetime(2020, 1, 1)},
    Point(),
    Text("x"),
    Mapping(a=1),
]


def _value_id(value: Any) -> str:
    """A stable test id: repr() unless it holds an address."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text


class Returner(Agent):
    agent_id = "returner"

    def __init__(self, value: Any) -> None:
        self.value = value

    @capability("give")
    async def give(self, session: Session, params: dict[str, Any]) -> Any:
        return self.value


@pytest.mark.parametrize(
    "value",
    [
        object(),
        math.nan,
        math.inf,
        {"x": [-math.inf]},
        {1: "int key"},
        {"s": {1, 2}},
        2**70,
        datetime(2020, 1, 1),
        b"bytes",
        BAD,
        InvokeResult.ok(object(), "returner", "give"),
        InvokeResult.ok({"n": math.nan}, "returner", "give"),
        *NOT_PLAIN_JSON,
    ],
    ids=_value_id,
)
async def test_a_result_that_is_not_json_fails_the_step(session: Session, value: Any) -> None:
    async with Dispatcher() as d:
        d.register(Returner(value))
        result = await d.dispatch_single("give", session)
    assert not result.success
    assert result.error_code is ErrorCode.AGENT_INVALID_RESULT
    assert result.agent_id == "returner" and result.capability == "give"
    completed = (await session.get_trajectory(1))[0]
    assert completed.entry_type is EntryType.PLAN_STEP_COMPLETED
    assert completed.content["success"] is False
    assert "agent_invalid_result" in completed.content["result_summary"]
    await session.verify()


@pytest.mark.parametrize(
    "value", [None, 0, "text", [1, "a", None], (1, 2), {"a": {"b": [1.5, True]}}], ids=repr
)
async def test_json_results_succeed(session: Session, value: Any) -> None:
    async with Dispatcher() as d:
        d.register(Returner(value))
        result = await d.dispatch_single("give", session)
    assert result.success and result.result == value


@pytest.mark.parametrize("value", NOT_PLAIN_JSON, ids=_value_id)
async def test_values_and_contents_must_be_plain_json(session: Session, value: Any) -> None:
    # a UUID stored as a value used to come back as a str, an enum member as its value, and
    # a Fragment went into the file as raw, unchecked bytes
    writes: list[Callable[[], Any]] = [
        lambda: session.set("k", value),
        lambda: session.set("k", {"nested": [value]}),
        lambda: session.append("a", EntryType.SYSTEM_NOTE, value),
        lambda: session.append("a", EntryType.SYSTEM_NOTE, {"v": value}),
    ]
    for write in writes:
        with pytest.raises(KaizenValidationError, match="not JSON"):
            await write()
    with pytest.raises(KaizenValidationError, match="not JSON"):
        session.append_nowait("a", EntryType.SYSTEM_NOTE, {"v": value})
    with pytest.raises(KaizenValidationError):
        async with session.transaction() as tx:
            tx.set("ok", 1)
            tx.set("k", value)
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        with pytest.raises(DispatchError, match="not JSON"):
            await d.dispatch_single("reverse", session, {"key": value})
    await _unchanged(session)


def test_numpy_numbers_are_not_json_values() -> None:
    np = pytest.importorskip("numpy")
    for value in (np.float64(1.5), np.int64(3), np.bool_(True), np.array([1, 2])):
        with pytest.raises(KaizenValidationError):
            encode(value)
        with pytest.raises(KaizenValidationError):
            check_json({"v": [value]})


# -- 5. memory per entry --------------------------------------------------------------------------

#: what one small entry may cost beyond its content bytes (record, hash, timestamp, seq...)
MAX_OVERHEAD_PER_ENTRY = 400


async def _bytes_per_entry(session: Session, run: Callable[[], Any]) -> float:
    """Memory kept per entry added by ``run``, beyond the entries' content bytes."""
    length = await session.get_trajectory_length()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await run()
        await session.get_trajectory_length()  # everything queued is applied
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    added = session._core.records[length:]
    content = sum(len(record[CONTENT]) for record in added)
    return (after - before - content) / len(added)


async def test_appends_keep_compact_bytes(session: Session) -> None:
    async def run() -> None:
        for i in range(20_000):
            await session.append("agent-1", EntryType.SYSTEM_NOTE, {"text": f"hello {i:08d}"})

    assert await _bytes_per_entry(session, run) <= MAX_OVERHEAD_PER_ENTRY  # was ~4,400


async def test_dispatched_steps_keep_compact_bytes(session: Session) -> None:
    async with Dispatcher() as d:
        d.register(ReverseAgent())
        await session.set("text", "hello world")
        await d.dispatch_single("reverse", session, {"key": "text"})  # warm up

        async def run() -> None:
            for _ in range(2_000):
                await d.dispatch_single("reverse", session, {"key": "text"})

        assert await _bytes_per_entry(session, run) <= MAX_OVERHEAD_PER_ENTRY  # was ~1,700


async def test_state_values_keep_compact_bytes(session: Session) -> None:
    async def run() -> None:
        for i in range(2_000):
            await session.set(f"key{i}", {"v": i})

    # an entry, plus a new key and value held in the state (its dict slot, key, value)
    assert await _bytes_per_entry(session, run) <= MAX_OVERHEAD_PER_ENTRY + 400  # was ~8,500
