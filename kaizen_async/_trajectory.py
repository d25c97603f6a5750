"""Trajectory entries: the entry types, the public frozen entry and the internal record.

Inside a session an entry is a :data:`Record`, an exact tuple holding the canonical content bytes
and the hash; that is what is hashed, saved and shared between a session and its forks.
Callers get :class:`TrajectoryEntry` values built from a record on the way out, with
content decoded afresh, so nothing a caller holds can reach back into the session.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Final, TypeAlias

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
