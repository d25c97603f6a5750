"""Trajectory entries: the entry types, the public frozen entry and the internal record.

Inside a session an entry is a :data:`Record`, an exact tuple holding the canonical content bytes
and the hash; that is what is hashed, saved and shared between a session and its forks.
Callers get :class:`TrajectoryEntry` values built from a record on the way out, with
content decoded afresh, so nothing a caller holds can reach back into the session.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from enum import Enum
from itertools import chain
from typing import Any, Final, TypeAlias, overload

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ._canonical import decode, encode, entry_hash
from ._exceptions import KaizenValidationError

__all__ = [
    "AGENT_ID",
    "CONTENT",
    "ENTRY_TYPE",
    "HASH",
    "PREV_HASH",
    "SEQ",
    "TIMESTAMP",
    "EntryType",
    "Record",
    "Records",
    "TrajectoryEntry",
    "record_hash",
]


class EntryType(str, Enum):
    """What an entry records. The original Kaizen's values plus this design's additions."""

    AGENT_INVOKED = "agent_invoked"
    AGENT_COMPLETED = "agent_completed"
    AGENT_FAILED = "agent_failed"
    STATE_SET = "state_set"
    STATE_DELETED = "state_deleted"
    ARTIFACT_WRITTEN = "artifact_written"
    ARTIFACT_DELETED = "artifact_deleted"
    SESSION_CREATED = "session_created"
    SESSION_LOADED = "session_loaded"
    SESSION_SAVED = "session_saved"
    SESSION_FORKED = "session_forked"
    PLAN_CREATED = "plan_created"
    PLAN_FAILED = "plan_failed"
    PLAN_STEP_STARTED = "plan_step_started"
    PLAN_STEP_COMPLETED = "plan_step_completed"
    LLM_EXCHANGE = "llm_exchange"
    USER_INPUT = "user_input"
    SYSTEM_NOTE = "system_note"

    def __str__(self) -> str:
        return self.value


Record: TypeAlias = tuple[int, str, str, str, bytes, str, str]
"""One entry as a session holds it: ``(seq, timestamp, agent_id, entry_type, content,
prev_hash, hash)`` with canonical content bytes.

An exact tuple, not a subclass: CPython's garbage collector stops tracking an exact tuple
that holds only ints, strings and bytes the first time it sees it, so a session's 100,000
records cost no collector time (a tuple subclass stays tracked and is traversed at every
older-generation collection). Read fields with the index constants below
(``record[SEQ]``, ``record[HASH]``); building one is a C call.
"""

#: Field positions of a :data:`Record`.
SEQ: Final = 0
TIMESTAMP: Final = 1
AGENT_ID: Final = 2
ENTRY_TYPE: Final = 3
CONTENT: Final = 4
PREV_HASH: Final = 5
HASH: Final = 6


#: records per sealed chunk of :class:`Records` (a power of two: an index splits by shift)
CHUNK_BITS: Final = 8
CHUNK: Final = 1 << CHUNK_BITS


class Records(Sequence[Record]):
    """A session's records in order: a list's reads and appends, held so that a full
    garbage collection does not visit every record.

    A list of records is one tracked container whose every element a full collection
    visits (each a cache miss: ~20 ms for 300,000 records), though the records themselves
    are untracked. Here the records past the newest ``CHUNK`` sit in sealed chunks, exact
    tuples of records, which the collector untracks like the records: a full collection
    visits one pointer per 256 records. ``tail``, the unsealed newest records, is a
    plain list the session actor appends to directly; :meth:`seal` moves full chunks out
    of it in place (so a reference to ``tail`` stays valid). Slices are lists; iteration
    is over a snapshot (records appended meanwhile are not seen).
    """

    __slots__ = ("_chunks", "sealed", "tail")

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._chunks: list[tuple[Record, ...]] = []
        self.sealed = 0  #: how many records the sealed chunks hold (the tail follows them)
        self.tail: list[Record] = list(records)
        self.seal()

    def seal(self) -> None:
        """Move every full chunk from the front of ``tail`` into a sealed chunk."""
        tail = self.tail
        while len(tail) >= CHUNK:
            self._chunks.append(tuple(tail[:CHUNK]))
            del tail[:CHUNK]
            self.sealed += CHUNK

    def append(self, record: Record) -> None:
        tail = self.tail
        tail.append(record)
        if len(tail) >= CHUNK:
            self.seal()

    def copy(self) -> Records:
        """A copy that later appends to either do not affect (the sealed chunks, which
        never change, are shared)."""
        copy = Records()
        copy._chunks, copy.sealed, copy.tail = list(self._chunks), self.sealed, self.tail[:]
        return copy

    def __len__(self) -> int:
        return self.sealed + len(self.tail)

    def _position(self, index: int) -> int:
        length = self.sealed + len(self.tail)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("record index out of range")
        return index

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.sealed + len(self.tail))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._range(start, stop)
        index = self._position(index)
        sealed = self.sealed
        if index >= sealed:
            return self.tail[index - sealed]
        return self._chunks[index >> CHUNK_BITS][index & (CHUNK - 1)]

    def _range(self, start: int, stop: int) -> list[Record]:
        """``records[start:stop]`` for ``0 <= start``, ``stop <= len``, as a new list."""
        sealed = self.sealed
        if start >= sealed:
            return self.tail[start - sealed : stop - sealed]
        out: list[Record] = []
        chunks = self._chunks
        for number in range(start >> CHUNK_BITS, (min(stop, sealed) + CHUNK - 1) >> CHUNK_BITS):
            first = number << CHUNK_BITS
            out += chunks[number][max(start - first, 0) : stop - first]
        if stop > sealed:
            out += self.tail[: stop - sealed]
        return out

    def __setitem__(self, index: int, record: Record) -> None:
        """Replace one record (tests tamper with a chain this way)."""
        index = self._position(index)
        sealed = self.sealed
        if index >= sealed:
            self.tail[index - sealed] = record
            return
        number = index >> CHUNK_BITS
        chunk = list(self._chunks[number])
        chunk[index & (CHUNK - 1)] = record
        self._chunks[number] = tuple(chunk)

    def __delitem__(self, index: slice) -> None:
        """Drop the oldest records (``del records[:n]``, what a store-backed core's tail
        does once they are committed); other deletes are refused."""
        if not isinstance(index, slice) or index.start not in (None, 0) or index.step:
            raise TypeError("only a prefix of the records can be deleted")
        if not self._chunks:  # a store-backed core's short tail: all in the list
            del self.tail[index]
            return
        rest = self[index.stop if index.stop is not None else len(self) :]
        self._chunks, self.sealed, self.tail[:] = [], 0, rest
        self.seal()

    def __iter__(self) -> Iterator[Record]:
        return chain(chain.from_iterable(tuple(self._chunks)), tuple(self.tail))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records | list):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records({len(self)} records)"


def record_hash(record: Record) -> str:
    """The hash a record's fields imply (to compare with ``record[HASH]``)."""
    return entry_hash(*record[:6])


class TrajectoryEntry(BaseModel):
    """One immutable entry of a session's trajectory.

    ``hash`` is SHA-256 over the canonical JSON encoding of every other field;
    ``prev_hash`` is the previous entry's hash (``"0" * 64`` for entry 1).
    """

    model_config = ConfigDict(frozen=True)

    seq: int
    timestamp: datetime
    agent_id: str
    entry_type: EntryType
    content: Any
    prev_hash: str
    hash: str

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware (UTC)")
        return value

    @property
    def seq_num(self) -> int:
        """The original Kaizen's name of :attr:`seq`."""
        return self.seq

    @classmethod
    def from_record(cls, record: Record) -> TrajectoryEntry:
        """Build the public entry from a record (content decoded to a fresh object)."""
        return cls.model_construct(
            seq=record[SEQ],
            timestamp=datetime.fromisoformat(record[TIMESTAMP]),
            agent_id=record[AGENT_ID],
            entry_type=EntryType(record[ENTRY_TYPE]),
            content=decode(record[CONTENT]),
            prev_hash=record[PREV_HASH],
            hash=record[HASH],
        )

    def to_record(self) -> Record:
        """The internal record of this entry (content re-encoded canonically)."""
        return (
            self.seq,
            self.timestamp.isoformat(),
            self.agent_id,
            self.entry_type.value,
            encode(self.content, "content"),
            self.prev_hash,
            self.hash,
        )

    def compute_hash(self) -> str:
        """Recompute the hash from the other fields (equal to ``hash`` when untampered)."""
        return record_hash(self.to_record())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy: ISO timestamp, entry type as its string value."""
        return {
            "seq": self.seq,
            "timestamp": self.timestamp.isoformat(),
            "agent_id": self.agent_id,
            "entry_type": self.entry_type.value,
            "content": decode(encode(self.content)),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Any) -> TrajectoryEntry:
        """The inverse of :meth:`to_dict` (``seq_num`` is read as ``seq``).

        Raises :class:`KaizenValidationError`; the hash is not checked here (see
        :meth:`compute_hash`).
        """
        if not isinstance(data, dict):
            raise KaizenValidationError(
                f"TrajectoryEntry.from_dict needs a dict, got {type(data).__name__}"
            )
        if "seq" not in data and "seq_num" in data:
            data = {**data, "seq": data["seq_num"]}
            del data["seq_num"]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise KaizenValidationError(f"invalid TrajectoryEntry: {exc}") from None
