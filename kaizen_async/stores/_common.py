"""What every store checks the same way: the arguments it is given and the data it reads.

Arguments are checked before anything is queued or written (a bad one raises a typed
:class:`~kaizen_async.KaizenError` and changes nothing). Data read back from a database
passes the same validators as the API, or raises :class:`SessionCorruptedError` naming
the session and, where there is one, the entry: a store never hands a session a value
the session itself would have refused.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from .._canonical import check_text, encode
from .._exceptions import (
    ErrorCode,
    KaizenTypeError,
    KaizenValidationError,
    PersistError,
    SessionBusyError,
    SessionCorruptedError,
    SessionExistsError,
    SessionFencedError,
    SessionNotFoundError,
)
from .._state import validate_artifact_name, validate_key
from .._storage import Batch
from .._trajectory import HASH, PREV_HASH, SEQ, EntryType, Record, record_hash

__all__ = [
    "ENTRY_TYPES",
    "busy",
    "check_claims",
    "check_lease",
    "check_owner",
    "check_wait",
    "fenced",
    "check_artifact_rows",
    "check_batch",
    "check_entry_types",
    "check_limit",
    "check_metadata",
    "check_metadata_text",
    "check_open_steps",
    "check_optional_text",
    "check_range",
    "check_records",
    "check_session_id",
    "check_state_rows",
    "check_tail",
    "closed_error",
    "conflict",
    "corrupted",
    "exists",
    "is_digest",
    "not_found",
    "now",
]

ENTRY_TYPES = frozenset(kind.value for kind in EntryType)
_HEX = frozenset("0123456789abcdef")


def now() -> str:
    """UTC now as an RFC 3339 string (what ``created_at``/``updated_at`` hold)."""
    return datetime.now(UTC).isoformat()


def closed_error(code: ErrorCode) -> PersistError:
    """The error of a call on a store that is not open (never entered, or left)."""
    return PersistError(
        "the store is not open (use it as `async with store:`)",
        code=code,
        details={"reason": "store_closed"},
    )


def not_found(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(
        f"no session {session_id!r} in the store", details={"session_id": session_id}
    )


def exists(session_id: str) -> SessionExistsError:
    return SessionExistsError(
        f"a session {session_id!r} already exists in the store",
        details={"session_id": session_id},
    )


def conflict(session_id: str, base_seq: int, head_seq: int) -> PersistError:
    """A batch that does not continue the stored head (another writer, or a stale session)."""
    return PersistError(
        f"session {session_id!r}: the batch continues seq {base_seq} but the store's head "
        f"is at seq {head_seq} (or holds another history); reload the session",
        code=ErrorCode.PERSIST_CONFLICT,
        details={"session_id": session_id, "base_seq": base_seq, "head_seq": head_seq},
    )


def busy(session_id: str, owner: str, lease_until: float) -> SessionBusyError:
    return SessionBusyError(
        f"session {session_id!r} is owned by {owner!r}, whose lease runs until "
        f"{datetime.fromtimestamp(lease_until, UTC).isoformat()} (open it with "
        "take_over=True to take it at once)",
        details={"session_id": session_id, "owner": owner, "lease_until": lease_until},
    )


def fenced(session_id: str, epoch: int, current: int, owner: str | None) -> SessionFencedError:
    """A batch of a writer whose ownership ended (the session's epoch moved on)."""
    return SessionFencedError(
        f"session {session_id!r} was taken over (epoch {current}, owner {owner!r}); this "
        f"writer's epoch {epoch} is fenced and its write was not stored",
        details={
            "session_id": session_id,
            "epoch": epoch,
            "current_epoch": current,
            "owner": owner,
        },
    )


# -- arguments -----------------------------------------------------------------------------


def check_session_id(session_id: object) -> str:
    """A session id is a non-empty, non-blank ``str`` (the rule ``Session`` applies)."""
    if not isinstance(session_id, str) or not session_id.strip():
        raise KaizenValidationError(
            f"session_id must be a non-empty, non-blank string, got {session_id!r}"
        )
    return check_text(session_id, "session_id")


def check_optional_text(value: object, what: str) -> str | None:
    """None, or a ``str`` of valid UTF-8 (a filter value, a paging key, a path)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise KaizenValidationError(f"{what} must be a str or None, got {type(value).__name__}")
    return check_text(value, what)


def _check_int(value: object, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise KaizenValidationError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def check_batch(batch: object, *, create: bool = False) -> Batch:
    """The cheap structural checks of a batch: its records continue ``base_seq``.

    The chain inside a batch is the session's own work and is not re-hashed here (a load
    and ``verify`` check it); what is checked is what a store relies on: the first and
    last seqs, and that a created session starts at seq 1 from the zero hash.
    """
    if not isinstance(batch, Batch):
        raise KaizenTypeError(f"expected a Batch, got {type(batch).__name__}")
    check_session_id(batch.session_id)
    base = _check_int(batch.base_seq, "base_seq")
    _check_int(batch.state_version, "state_version")
    records = batch.records
    if records:
        first, last = records[0], records[-1]
        if len(first) != 7 or len(last) != 7:
            raise KaizenValidationError("batch records must be Record tuples")
        if first[0] != base + 1 or last[0] != base + len(records):
            raise KaizenValidationError(
                f"batch records run seq {first[0]}..{last[0]}; after base_seq {base} they "
                f"must run {base + 1}..{base + len(records)}",
                details={"session_id": batch.session_id, "base_seq": base},
            )
    if create:
        if base != 0 or not records:
            raise KaizenValidationError(
                "a session is created from a batch with base_seq 0 and at least one record",
                details={"session_id": batch.session_id},
            )
        if records[0][5] != "0" * 64:
            raise KaizenValidationError("entry 1 of a session must follow the zero hash")
    if batch.epoch is not None:
        _check_int(batch.epoch, "epoch")
    if batch.open_steps is not None and not all(
        isinstance(seq, int) and not isinstance(seq, bool) for seq in batch.open_steps
    ):
        raise KaizenValidationError("open_steps must be a tuple of ints")
    return batch


def check_metadata(metadata: Mapping[str, Any] | None) -> bytes:
    """Session metadata: a JSON object with str keys, stored as canonical JSON."""
    if metadata is None:
        return b"{}"
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise KaizenValidationError("metadata must be a mapping with str keys")
    return encode(dict(metadata), "metadata")


def check_create(
    batch: object,
    max_artifact_size: object,
    workspace_path: object,
    metadata: Mapping[str, Any] | None,
) -> tuple[Batch, int, str | None, bytes]:
    """The arguments of ``create``, checked: the batch, the artifact limit, the workspace
    path and the metadata's canonical JSON."""
    checked = check_batch(batch, create=True)
    meta = check_metadata(metadata)
    if (
        not isinstance(max_artifact_size, int)
        or isinstance(max_artifact_size, bool)
        or max_artifact_size < 0
    ):
        raise KaizenValidationError("max_artifact_size must be a non-negative int")
    workspace = check_optional_text(
        None if workspace_path is None else str(workspace_path), "workspace_path"
    )
    return checked, max_artifact_size, workspace, meta


def check_owner(owner: object) -> str:
    """An owner id: a non-blank ``str`` of printable text (it is shown in errors)."""
    if not isinstance(owner, str) or not owner.strip() or not owner.isprintable():
        raise KaizenValidationError(f"owner must be a non-blank printable str, got {owner!r}")
    return check_text(owner, "owner")


def check_lease(lease_seconds: object) -> float:
    if (
        not isinstance(lease_seconds, int | float)
        or isinstance(lease_seconds, bool)
        or not 0 < lease_seconds < 10**9
    ):
        raise KaizenValidationError(
            f"lease_seconds must be a number of seconds > 0, got {lease_seconds!r}"
        )
    return float(lease_seconds)


def check_wait(after_seq: object, timeout: object) -> tuple[int, float]:
    after = _check_int(after_seq, "after_seq")
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 <= timeout < 10**9
    ):
        raise KaizenValidationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return after, float(timeout)


def check_claims(claims: object) -> dict[str, int]:
    """``session_id -> epoch`` of the sessions an owner renews."""
    if not isinstance(claims, Mapping):
        raise KaizenValidationError("claims must be a mapping of session id to epoch")
    return {check_session_id(sid): _check_int(epoch, "epoch") for sid, epoch in claims.items()}


def check_range(since_seq: object, until_seq: object) -> tuple[int, int | None]:
    since = _check_int(since_seq, "since_seq")
    until = None if until_seq is None else _check_int(until_seq, "until_seq")
    return since, until


def check_limit(limit: object, what: str = "limit") -> int | None:
    return None if limit is None else _check_int(limit, what)


def check_entry_types(entry_types: Collection[str] | None) -> tuple[str, ...] | None:
    """Entry type names (``EntryType`` members or their values); unknown ones are refused."""
    if entry_types is None:
        return None
    if isinstance(entry_types, str):
        raise KaizenValidationError("entry_types must be a collection of types, not one str")
    kinds = []
    for kind in entry_types:
        value = kind.value if isinstance(kind, EntryType) else kind
        if value not in ENTRY_TYPES:
            raise KaizenValidationError(
                f"unknown entry type {kind!r}; expected one of {sorted(ENTRY_TYPES)}"
            )
        kinds.append(value)
    return tuple(sorted(set(kinds)))


# -- data read back ---------------------------------------------------------------------------


def corrupted(session_id: str, message: str, seq: int | None = None) -> SessionCorruptedError:
    where = f"session {session_id!r}" + (f", entry {seq}" if seq is not None else "")
    return SessionCorruptedError(f"{where}: {message}", seq=seq, details={"session_id": session_id})


def check_records(session_id: str, rows: Iterable[tuple[Any, ...]]) -> list[Record]:
    """Rows ``(seq, timestamp, agent_id, entry_type, content, prev_hash, hash)`` as records,
    each field of the right type and vocabulary (the chain is what ``verify`` checks)."""
    records: list[Record] = []
    append = records.append
    types = ENTRY_TYPES
    for row in rows:
        seq, ts, agent, kind, content, prev, digest = row
        if (
            type(seq) is not int
            or type(ts) is not str
            or type(agent) is not str
            or kind not in types
            or type(content) is not bytes
            or type(prev) is not str
            or type(digest) is not str
            or not agent
            or agent.isspace()
        ):
            raise corrupted(session_id, f"malformed entry row {_short(row)}", _seq(seq))
        # a database row that is already an exact tuple is the record as it is
        append(row if type(row) is tuple else (seq, ts, agent, kind, content, prev, digest))
    return records


def check_tail(
    session_id: str, tail: list[Record], head_seq: int, head_hash: str, wanted: int
) -> None:
    """The newest records must end at the head, run without gaps and chain by hash."""
    if tail and tail[-1][SEQ] > head_seq:
        raise corrupted(
            session_id, f"the store holds entries past the recorded head {head_seq}", tail[-1][SEQ]
        )
    for offset in range(1, len(tail) + 1):  # newest first: name the first missing seq
        if tail[-offset][SEQ] != head_seq - offset + 1:
            raise corrupted(session_id, "entry is missing", head_seq - offset + 1)
    if len(tail) != min(wanted, head_seq):
        raise corrupted(session_id, "entry is missing", head_seq - len(tail))
    if not tail:
        if head_seq == 0 and head_hash != "0" * 64:
            raise corrupted(session_id, "an empty session has a head hash")
        return
    prev = tail[0][PREV_HASH]
    for record in tail:
        if record[PREV_HASH] != prev or record_hash(record) != record[HASH]:
            raise corrupted(session_id, "hash chain broken (tampered?)", record[SEQ])
        prev = record[HASH]
    if prev != head_hash:
        raise corrupted(session_id, "the newest entry is not the recorded head", head_seq)


def check_state_rows(session_id: str, rows: Iterable[tuple[Any, Any]]) -> dict[str, bytes]:
    state = {}
    for key, value in rows:
        try:
            validate_key(key)
            if type(value) is not bytes:
                raise TypeError("value is not bytes")
            orjson.loads(value)
        except (KaizenValidationError, TypeError, orjson.JSONDecodeError):
            raise corrupted(session_id, f"malformed state row for key {key!r}") from None
        state[key] = value
    return state


def check_artifact_rows(session_id: str, rows: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    artifacts = {}
    for name, digest in rows:
        try:
            validate_artifact_name(name)
        except KaizenValidationError:
            raise corrupted(session_id, f"bad artifact name {name!r}") from None
        if not is_digest(digest):
            raise corrupted(session_id, f"artifact {name!r} has a malformed digest")
        artifacts[name] = digest
    return artifacts


def check_open_steps(session_id: str, text: Any) -> tuple[int, ...]:
    try:
        steps = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        steps = None
    if not isinstance(steps, list) or not all(type(seq) is int and seq > 0 for seq in steps):
        raise corrupted(session_id, f"malformed open steps {text!r}")
    return tuple(steps)


def check_metadata_text(session_id: str, text: Any) -> dict[str, Any]:
    try:
        metadata = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        metadata = None
    if not isinstance(metadata, dict):
        raise corrupted(session_id, "malformed session metadata")
    return metadata


def is_digest(value: object) -> bool:
    """A lowercase hex SHA-256 digest."""
    return isinstance(value, str) and len(value) == 64 and _HEX.issuperset(value)


def _seq(value: object) -> int | None:
    return value if type(value) is int else None


def _short(row: tuple[Any, ...]) -> str:
    text = repr(row)
    return text if len(text) <= 120 else text[:117] + "..."
