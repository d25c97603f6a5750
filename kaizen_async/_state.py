"""The session's data and the deterministic fold that derives it from the trajectory.

:class:`SessionCore` is plain synchronous code with no I/O and no tasks: the session actor
owns one and calls it from a single task, so every method runs to completion before the
next message is looked at. Each write validates everything first and only then appends
its entry and applies it, so a rejected write leaves no trace and no gap in the seqs.

State values are held as their canonical JSON bytes: the bytes encoded on the way in are
the stored copy, the hashed form and the saved form, and every read decodes a fresh copy.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from ._canonical import ENTRY_TEMPLATE as _ENTRY
from ._canonical import ZERO_HASH, check_text, decode, encode, entry_hash, sha256_hex
from ._checkpoint import Checkpoint
from ._exceptions import (
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    KaizenTypeError,
    KaizenValidationError,
    SessionCorruptedError,
    StateKeyNotFoundError,
)
from ._trajectory import (
    CHUNK,
    CONTENT,
    ENTRY_TYPE,
    HASH,
    PREV_HASH,
    SEQ,
    EntryType,
    Record,
    Records,
    TrajectoryEntry,
)

__all__ = ["DEFAULT_MAX_ARTIFACT_SIZE", "SCHEMA_VERSION", "SessionCore", "validate_key"]

SCHEMA_VERSION = 2
DEFAULT_MAX_ARTIFACT_SIZE = 100 * 1024 * 1024

_SYSTEM = "system"
#: the agent id of the entries a dispatcher records (a step's start and end)
DISPATCHER = "dispatcher"
_STATE_SET = EntryType.STATE_SET.value
_STATE_DELETED = EntryType.STATE_DELETED.value
_ARTIFACT_WRITTEN = EntryType.ARTIFACT_WRITTEN.value
_ARTIFACT_DELETED = EntryType.ARTIFACT_DELETED.value
_SESSION_LOADED = EntryType.SESSION_LOADED.value
#: entry types that replay passes over: they record work, not state or artifact changes
_NO_STATE_EFFECT = frozenset(
    kind.value
    for kind in EntryType
    if kind
    not in (
        EntryType.STATE_SET,
        EntryType.STATE_DELETED,
        EntryType.ARTIFACT_WRITTEN,
        EntryType.ARTIFACT_DELETED,
        EntryType.SESSION_LOADED,
    )
)
_ENTRY_TYPES = {member.value for member in EntryType}
_dumps = orjson.dumps
_join = b"".join
_SORTED = orjson.OPT_SORT_KEYS
_sha256 = hashlib.sha256
_time_ns = time.time_ns
_second_prefix: list[tuple[int, str]] = [(-1, "")]  # one tuple: swapped atomically


def _timestamp() -> str:
    """UTC now, exactly as ``datetime.isoformat()`` renders it, without building a datetime.

    The ``YYYY-MM-DDTHH:MM:SS`` prefix is cached per second; this runs once per entry.
    """
    micros = _time_ns() // 1000
    second, micro = divmod(micros, 1_000_000)
    cached, prefix = _second_prefix[0]
    if cached != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_prefix[0] = (second, prefix)
    if micro:
        return f"{prefix}.{micro:06d}+00:00"
    return f"{prefix}+00:00"


#: the applier of a set in an op: ``(SET, (key, new, agent_id))`` is ``apply_set``, chained
#: inline by the session actor's loop like an append
SET = "set"

#: a checked write as the session actor applies it: ``(applier, args)``, an ``apply_*``
#: call of the core, ``(None, (agent_id, kind, content))``, an append, or a ``SET``
Op = tuple[Callable[..., Any] | str | None, tuple[Any, ...]]

#: the canonical content of ``state_set``: key, new value, old value (null if none), version
_SET_CONTENT = b'{"key":%b,"new_value":%b,"old_value":%b,"state_version":%d}'


def _discard(_: object) -> None:
    """What replay appends to when it keeps no records."""


def validate_key(key: object) -> str:
    """A state key is a non-empty, non-blank ``str`` of valid UTF-8."""
    if type(key) is not str and not isinstance(key, str):
        raise KaizenValidationError(
            f"state key must be a non-empty string, got {type(key).__name__}"
        )
    if not key.strip():
        raise KaizenValidationError("state key must be a non-empty string, not blank")
    return check_text(key, "state key")


def _validate_agent_id(agent_id: object) -> str:
    """An agent id is a non-empty, non-blank ``str`` of valid UTF-8 (the few ids a process
    uses are remembered once valid: every entry is checked)."""
    if type(agent_id) is str and agent_id in _VALID_AGENT_IDS:
        return agent_id
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise KaizenValidationError("agent_id must be a non-empty string, not blank")
    check_text(agent_id, "agent_id")
    if type(agent_id) is str and len(_VALID_AGENT_IDS) < 4096:
        _VALID_AGENT_IDS.add(agent_id)
    return agent_id


_VALID_AGENT_IDS: set[str] = set()

#: the kinds of entry ``append`` may write, by member and by value (the others are written
#: by set/delete/write_artifact/delete_artifact only)
_APPENDABLE: dict[object, str] = {
    key: member.value
    for member in EntryType
    if member.value not in (_STATE_SET, _STATE_DELETED, _ARTIFACT_WRITTEN, _ARTIFACT_DELETED)
    for key in (member, member.value)
}
_KIND_TYPES = (EntryType, str)


_JSON_STRINGS: dict[str, bytes] = {kind: _dumps(kind) for kind in _ENTRY_TYPES}


def _json_string(text: str) -> bytes:
    """JSON of an agent id, remembered (there are few): one dict lookup per entry."""
    encoded = _join((_dumps(text), b""))  # exact size: orjson's own output holds 4 KiB
    if len(_JSON_STRINGS) < 4096:
        _JSON_STRINGS[text] = encoded
    return encoded


def _validate_entry_type(entry_type: object) -> str:
    if type(entry_type) is EntryType:
        return entry_type._value_
    value = entry_type.value if isinstance(entry_type, EntryType) else entry_type
    if not isinstance(value, str) or value not in _ENTRY_TYPES:
        raise KaizenValidationError(
            f"unknown entry type {entry_type!r}; expected one of {sorted(_ENTRY_TYPES)}"
        )
    return value


def _valid(check: Callable[[Any], object], value: object) -> bool:
    try:
        check(value)
    except KaizenValidationError:
        return False
    return True


def _check_read(check: Callable[[Any], object], value: object, record: Record) -> None:
    """What a trajectory says passes the API's own validation, or it is corrupted."""
    try:
        check(value)
    except KaizenValidationError as exc:
        raise SessionCorruptedError(
            f"entry {record[SEQ]} ({record[ENTRY_TYPE]}): {exc.message}",
            seq=record[SEQ],
            details={"value": value if isinstance(value, str) else repr(value)},
        ) from None


def validate_artifact_name(name: object) -> str:
    """Names may be path-like (``out/main.go``) but not absolute, ``..``, control chars
    or text that is not valid UTF-8."""
    if not isinstance(name, str) or not name.strip():
        raise KaizenValidationError("artifact name must be a non-empty string, not blank")
    check_text(name, "artifact name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise KaizenValidationError(f"artifact name {name!r} contains NUL or control characters")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise KaizenValidationError(f"artifact name {name!r} must not be an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise KaizenValidationError(f"artifact name {name!r} must not contain '..' segments")
    return name


class SessionCore:
    """State, trajectory and artifacts of one session, and the writes that change them."""

    __slots__ = (
        "artifacts",
        "blobs",
        "checkpoints",
        "head",
        "keys",
        "max_artifact_size",
        "records",
        "session_id",
        "stamp",
        "state",
        "version",
        "workspace_path",
    )

    def __init__(
        self,
        session_id: str | None = None,
        *,
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        workspace_path: str | None = None,
        created: bool = True,
    ) -> None:
        if session_id is not None and (not isinstance(session_id, str) or not session_id.strip()):
            raise KaizenValidationError("session_id must be a non-empty string")
        if not isinstance(max_artifact_size, int) or max_artifact_size < 0:
            raise KaizenValidationError("max_artifact_size must be a non-negative int")
        self.session_id: str = session_id or str(uuid.uuid4())
        self.max_artifact_size = max_artifact_size
        self.workspace_path = None if workspace_path is None else str(workspace_path)
        self.records = Records()
        self.state: dict[str, bytes] = {}
        self.version = 0
        self.artifacts: dict[str, str] = {}  # name -> digest
        self.blobs: dict[str, bytes] = {}  # digest -> data (every version ever written)
        self.head = ZERO_HASH
        #: the state keys set or deleted since the last commit (a store-backed core; None:
        #: not tracked, as a session in memory has nothing to commit)
        self.keys: set[str] | None = None
        #: the timestamp the entries of the message being applied share (None: each its own)
        self.stamp: str | None = None
        #: signed checkpoints of this chain (beside it, not in it): loaded and saved
        self.checkpoints: list[Checkpoint] = []
        if created:
            self.append(
                _SYSTEM,
                EntryType.SESSION_CREATED,
                {
                    "session_id": self.session_id,
                    "max_artifact_size": max_artifact_size,
                    "schema_version": SCHEMA_VERSION,
                    "workspace_path": self.workspace_path,
                },
            )

    #: the seq before ``records[0]``: 0 here, as the whole trajectory is in memory (a
    #: store-backed core keeps only its tail: there it is a slot)
    base: int = 0

    # -- the chain ---------------------------------------------------------------------

    @property
    def length(self) -> int:
        """The head's seq: how many entries the trajectory holds (a store-backed core keeps
        only the newest of them in ``records``)."""
        return len(self.records)

    def _push(self, agent_id: str, entry_type: str, content: bytes) -> Record:
        """Chain one validated entry on; the hot path of every write (see entry_bytes)."""
        records = self.records
        tail = records.tail
        seq = self.base + records.sealed + len(tail) + 1
        ts = self.stamp or _timestamp()
        prev = self.head
        agent = _JSON_STRINGS.get(agent_id)
        if agent is None:
            agent = _json_string(agent_id)
        digest = _sha256(
            _ENTRY % (agent, content, _JSON_STRINGS[entry_type], prev.encode(), seq, ts.encode())
        ).hexdigest()
        record = (seq, ts, agent_id, entry_type, content, prev, digest)
        tail.append(record)  # Records.append, inlined
        if len(tail) >= CHUNK:
            records.seal()
        self.head = digest
        return record

    # Every write comes in two halves: ``check_*`` validates and encodes (may raise, changes
    # nothing) and ``apply_*`` appends the entry and applies it (cannot fail). A transaction
    # checks all its writes first, so a batch is applied whole or not at all.

    def check_append(
        self, agent_id: str, entry_type: EntryType | str, content: Any
    ) -> tuple[Any, ...]:
        if type(agent_id) is not str or agent_id not in _VALID_AGENT_IDS:
            agent_id = _validate_agent_id(agent_id)
        kind = _APPENDABLE.get(entry_type) if type(entry_type) in _KIND_TYPES else None
        if kind is not None:  # the common case, in one lookup
            return (agent_id, kind, encode(content, "entry content"))
        kind = _validate_entry_type(entry_type)
        if kind in (_STATE_SET, _STATE_DELETED, _ARTIFACT_WRITTEN, _ARTIFACT_DELETED):
            raise KaizenValidationError(
                f"{kind} entries are written by set/delete/write_artifact/delete_artifact only"
            )
        return (agent_id, kind, encode(content, "entry content"))

    def append_op(self, agent_id: str, entry_type: EntryType | str, content: Any) -> Op:
        """A checked append as an op (chained inline by the session actor's loop)."""
        return (None, self.check_append(agent_id, entry_type, content))

    def step_op(self, kind: str, content: bytes, key: tuple[str, int]) -> Op:
        """The op of a dispatched step's ``plan_step_started``/``completed`` (an append by
        the dispatcher); ``key``: the step's ``(plan_id, step_index)``, for a core that
        keeps its open steps (see StoredCore)."""
        return (None, (DISPATCHER, kind, content))

    def apply_append(self, agent_id: str, kind: str, content: bytes) -> int:
        return self._push(agent_id, kind, content)[SEQ]

    def append(self, agent_id: str, entry_type: EntryType | str, content: Any) -> int:
        """Append a free-form entry (validated first); returns its seq."""
        return self.apply_append(*self.check_append(agent_id, entry_type, content))

    # -- state ---------------------------------------------------------------------------

    def check_set(self, key: str, value: Any) -> tuple[str, bytes]:
        if type(key) is not str or not key or key.isspace() or not key.isascii():
            validate_key(key)
        return (key, encode(value))

    def apply_set(self, key: str, new: bytes, agent_id: str = _SYSTEM) -> int:
        version = self.version + 1
        content = _SET_CONTENT % (_dumps(key), new, self.state.get(key, b"null"), version)
        self._push(agent_id, _STATE_SET, content)
        self.state[key] = new
        self.version = version
        return version

    def set(self, key: str, value: Any, agent_id: str = _SYSTEM) -> int:
        return self.apply_set(*self.check_set(key, value), agent_id)

    def check_delete(self, key: str) -> tuple[str]:
        key = validate_key(key)
        if key not in self.state:
            raise StateKeyNotFoundError(f"state key not found: {key!r}", details={"key": key})
        return (key,)

    def apply_delete(self, key: str, agent_id: str = _SYSTEM) -> int:
        version = self.version + 1
        content = b'{"key":%b,"old_value":%b,"state_version":%d}' % (
            _dumps(key),
            self.state[key],
            version,
        )
        self._push(agent_id, _STATE_DELETED, content)
        del self.state[key]
        self.version = version
        return version

    def delete(self, key: str, agent_id: str = _SYSTEM) -> int:
        return self.apply_delete(*self.check_delete(key), agent_id)

    def get(self, key: str, default: Any = None) -> Any:
        data = self.state.get(key)
        if data is None:
            return decode(encode(default)) if isinstance(default, dict | list) else default
        return decode(data)

    def all_state(self) -> dict[str, Any]:
        return {key: decode(data) for key, data in self.state.items()}

    # -- artifacts -----------------------------------------------------------------------

    def check_write_artifact(self, name: str, data: bytes) -> tuple[str, bytes, str]:
        name = validate_artifact_name(name)
        if not isinstance(data, bytes):
            raise KaizenTypeError(f"artifact data must be bytes, got {type(data).__name__}")
        size = len(data)
        if size > self.max_artifact_size:
            raise ArtifactTooLargeError(
                f"artifact {name!r} size ({size} bytes) exceeds maximum "
                f"({self.max_artifact_size} bytes)",
                details={"name": name, "size": size, "max_artifact_size": self.max_artifact_size},
            )
        return (name, data, sha256_hex(data))

    def apply_write_artifact(
        self, name: str, data: bytes, digest: str, agent_id: str = _SYSTEM
    ) -> int:
        old_digest = self.artifacts.get(name)
        content = encode(
            {
                "name": name,
                "size": len(data),
                "is_update": old_digest is not None,
                "old_size": None if old_digest is None else self._blob_size(old_digest),
                "digest": digest,
            }
        )
        record = self._push(agent_id, _ARTIFACT_WRITTEN, content)
        self.blobs.setdefault(digest, data)
        self.artifacts[name] = digest
        return record[SEQ]

    def write_artifact(self, name: str, data: bytes, agent_id: str = _SYSTEM) -> int:
        return self.apply_write_artifact(*self.check_write_artifact(name, data), agent_id)

    def check_delete_artifact(self, name: str) -> tuple[str]:
        self._artifact_digest(name)
        return (name,)

    def apply_delete_artifact(self, name: str, agent_id: str = _SYSTEM) -> int:
        digest = self.artifacts.pop(name)
        content = encode({"name": name, "size": self._blob_size(digest), "digest": digest})
        return self._push(agent_id, _ARTIFACT_DELETED, content)[SEQ]

    def delete_artifact(self, name: str, agent_id: str = _SYSTEM) -> int:
        return self.apply_delete_artifact(*self.check_delete_artifact(name), agent_id)

    def apply_batch(
        self,
        ops: list[Op],
        names: list[tuple[str, str]] | None = None,
    ) -> list[Any]:
        """Apply checked writes all or none, sharing one timestamp; returns each one's
        result (an append's seq, a set's version, ...). ``ops``: ``(applier, args)`` pairs
        as :meth:`apply_step` takes them.

        Only deletes can still fail (the key or artifact may have gone since the check),
        so a batch that holds one gives ``names``, the ``(kind, name)`` of its key and
        artifact writes, which are re-checked against the batch's own effects before
        anything is applied."""
        if names:
            self._check_deletes(names)
        results: list[Any] = []
        error = self._apply_ops(ops, results)
        if error is not None:
            raise error
        return results

    def _check_deletes(self, names: list[tuple[str, str]]) -> None:
        """Refuse a batch whose delete finds its key or artifact gone (by then)."""
        keys: dict[str, bool] = {}
        artifacts: dict[str, bool] = {}
        for kind, name in names:
            if kind == "set":
                keys[name] = True
            elif kind == "write_artifact":
                artifacts[name] = True
            elif kind == "delete":
                if not keys.get(name, name in self.state):
                    raise StateKeyNotFoundError(
                        f"state key not found: {name!r}", details={"key": name}
                    )
                keys[name] = False
            elif kind == "delete_artifact":
                if not artifacts.get(name, name in self.artifacts):
                    raise ArtifactNotFoundError(
                        f"artifact not found: {name!r}", details={"name": name}
                    )
                artifacts[name] = False

    def apply_step(self, ops: list[Op]) -> None:
        """Apply posted writes as one message: a dispatched step's entries, say. Each op is
        ``(applier, args)``: a checked ``apply_*`` call, which cannot fail, or ``(None,
        (agent_id, kind, content))``, a checked append. They share one timestamp.

        Should one fail all the same (a bug), the rest are still applied and the first
        error is raised afterwards, as each would have been applied on its own."""
        error = self._apply_ops(ops, None)
        if error is not None:
            raise error

    def _apply_ops(self, ops: list[Op], results: list[Any] | None) -> Exception | None:
        """The session actor's tight loop: apply ``ops`` in order under one timestamp,
        chaining appends right here (``_push``, inlined: no call per entry); the first
        error of an op, if any (the others are applied all the same)."""
        outer = self.stamp  # a nested dispatch's step inside the outer one's message
        ts = outer if outer is not None else _timestamp()
        self.stamp = ts
        ts_bytes = ts.encode()
        records = self.records
        tail = records.tail  # appended to directly; sealed once the batch is applied
        keep = tail.append
        strings = _JSON_STRINGS
        state = self.state
        changed = self.keys
        # the head and the last seq live in locals while appends are chained, and are
        # written back before any other op runs (it chains through self.head itself)
        head, seq = self.head, self.base + records.sealed + len(tail)
        error: Exception | None = None
        try:
            for fn, args in ops:
                if fn is None or fn is SET:
                    if fn is None:
                        agent_id, kind, content = args
                        value: Any = seq + 1
                    else:  # apply_set, inlined
                        key, new, agent_id = args
                        kind, value = _STATE_SET, self.version + 1
                        content = _SET_CONTENT % (
                            _dumps(key),
                            new,
                            state.get(key, b"null"),
                            value,
                        )
                        state[key] = new
                        self.version = value
                        if changed is not None:
                            changed.add(key)
                    seq += 1
                    agent = strings.get(agent_id) or _json_string(agent_id)
                    digest = _sha256(
                        _ENTRY % (agent, content, strings[kind], head.encode(), seq, ts_bytes)
                    ).hexdigest()
                    keep((seq, ts, agent_id, kind, content, head, digest))
                    head = digest
                else:
                    self.head = head
                    try:
                        value = fn(*args)  # type: ignore[operator]
                    except Exception as exc:
                        error = error or exc
                        value = None
                    head, seq = self.head, self.base + records.sealed + len(tail)
                if results is not None:
                    results.append(value)
        finally:
            self.head = head
            self.stamp = outer
            if len(tail) >= CHUNK:
                records.seal()
        return error

    def _blob_size(self, digest: str) -> int | None:
        """The size of an artifact version (a store-backed core may not hold its data)."""
        return len(self.blobs[digest])

    def _artifact_digest(self, name: str) -> str:
        digest = self.artifacts.get(name) if isinstance(name, str) else None
        if digest is None:
            validate_artifact_name(name)  # a name that could never exist is a validation error
            raise ArtifactNotFoundError(f"artifact not found: {name!r}", details={"name": name})
        return digest

    def read_artifact(self, name: str) -> bytes:
        return self.blobs[self._artifact_digest(name)]

    def artifact_size(self, name: str) -> int:
        return len(self.read_artifact(name))

    # -- replay --------------------------------------------------------------------------

    def apply_record(self, record: Record) -> None:
        """Fold one already-written record into state (replay); checks what it can."""
        kind = record[ENTRY_TYPE]
        if kind not in _ENTRY_TYPES:
            raise SessionCorruptedError(
                f"entry {record[SEQ]} has unknown entry type {kind!r}", seq=record[SEQ]
            )
        if kind in (_STATE_SET, _STATE_DELETED):
            content = decode(record[CONTENT])
            try:
                key = content["key"]
                stated = content["state_version"]
            except (KeyError, TypeError):
                raise SessionCorruptedError(
                    f"entry {record[SEQ]} ({kind}) has malformed content", seq=record[SEQ]
                ) from None
            _check_read(validate_key, key, record)
            if stated != self.version + 1:
                raise SessionCorruptedError(
                    f"entry {record[SEQ]} says state_version {stated}, replay is at "
                    f"{self.version + 1}",
                    seq=record[SEQ],
                )
            if kind == _STATE_SET:
                self.state[key] = encode(content.get("new_value"))
            else:
                self.state.pop(key, None)
            self.version += 1
        elif kind in (_ARTIFACT_WRITTEN, _ARTIFACT_DELETED):
            content = decode(record[CONTENT])
            if not isinstance(content, dict) or "name" not in content:
                raise SessionCorruptedError(
                    f"entry {record[SEQ]} ({kind}) has malformed content", seq=record[SEQ]
                )
            _check_read(validate_artifact_name, content["name"], record)
            digest = content.get("digest")
            if digest is None:
                return  # written by the original Kaizen: the import entry carries the map
            if kind == _ARTIFACT_WRITTEN:
                self.artifacts[content["name"]] = digest
            else:
                self.artifacts.pop(content["name"], None)
        elif kind == _SESSION_LOADED:
            content = decode(record[CONTENT])
            if isinstance(content, dict) and isinstance(content.get("artifacts"), dict):
                for name in content["artifacts"]:
                    _check_read(validate_artifact_name, name, record)
                self.artifacts = dict(content["artifacts"])

    @classmethod
    def replay(
        cls,
        records: Iterable[Record],
        *,
        session_id: str,
        max_artifact_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        workspace_path: str | None = None,
        verify: bool = True,
        until_version: int | None = None,
        keep: bool = True,
    ) -> SessionCore:
        """Rebuild a core from records, checking seqs and (with ``verify``) the hash chain.

        ``keep=False`` folds the records without holding them (``records`` stays empty):
        verifying a long stored history page by page in bounded memory.
        """
        core = cls(
            session_id,
            max_artifact_size=max_artifact_size,
            workspace_path=workspace_path,
            created=False,
        )
        kept = core.records.tail  # sealed at the end
        append = kept.append if keep else _discard
        prev = ZERO_HASH
        state = core.state
        strings = _JSON_STRINGS
        agents: set[Any] = set()  # agent ids checked so far: each distinct one once
        version = 0
        # one pass, kept tight: it runs once per entry on every load (100k entries < 1 s)
        for expected, record in enumerate(records, 1):
            if until_version is not None and version >= until_version:
                break
            seq, ts, agent_id, kind, content, prev_hash, digest = record
            if seq != expected:
                raise SessionCorruptedError(
                    f"trajectory has seq {seq} where {expected} was expected", seq=expected
                )
            if agent_id not in agents:
                _check_read(_validate_agent_id, agent_id, record)
                agents.add(agent_id)
            if verify:
                if prev_hash != prev:
                    raise SessionCorruptedError(
                        f"entry {seq}: prev_hash does not match the hash of entry {seq - 1}",
                        seq=seq,
                    )
                agent = strings.get(agent_id) or _json_string(agent_id)
                kind_bytes = strings.get(kind) or _dumps(kind)
                computed = _sha256(
                    _ENTRY % (agent, content, kind_bytes, prev.encode(), seq, ts.encode())
                ).hexdigest()
                if computed != digest:
                    raise SessionCorruptedError(
                        f"entry {seq}: hash does not match its contents (tampered?)", seq=seq
                    )
            if kind in _NO_STATE_EFFECT:
                pass
            elif kind == _STATE_SET:  # the common write, inline; the rest in apply_record
                body = decode(content)
                try:
                    key, stated, value = body["key"], body["state_version"], body["new_value"]
                except (KeyError, TypeError):
                    raise SessionCorruptedError(
                        f"entry {seq} (state_set) has malformed content", seq=seq
                    ) from None
                if (
                    stated != version + 1
                    or type(key) is not str
                    or (key not in state and not _valid(validate_key, key))  # once per key
                ):
                    core.version = version
                    core.apply_record(record)  # raises the precise error
                state[key] = _dumps(value, option=_SORTED)  # decoded JSON: always valid
                version = stated
            else:
                core.version = version
                core.apply_record(record)
                version = core.version
            append(record)
            prev = digest
        core.records.seal()
        for key, data in state.items():  # keep exact-size bytes (see _canonical.encode)
            state[key] = _join((data, b""))
        core.version = version
        core.head = prev
        return core

    @staticmethod
    def identity(records: list[Record]) -> dict[str, Any]:
        """Session id, artifact limit and workspace as the hash-chained entries record them:
        ``session_created`` (entry 1), the id overridden by the last ``session_forked``."""
        if not records or records[0][ENTRY_TYPE] != EntryType.SESSION_CREATED.value:
            raise SessionCorruptedError("entry 1 is not session_created", seq=1)
        created = decode(records[0][CONTENT])
        identity = {
            "session_id": created.get("session_id"),
            "max_artifact_size": created.get("max_artifact_size"),
            "workspace_path": created.get("workspace_path"),
        }
        forked = EntryType.SESSION_FORKED.value
        for record in records:
            if record[ENTRY_TYPE] == forked:
                identity["session_id"] = decode(record[CONTENT]).get("session_id")
        return identity

    def verify(self) -> int:
        """Recompute chain and derived state; returns the number of entries checked."""
        check = SessionCore.replay(
            self.records,
            session_id=self.session_id,
            max_artifact_size=self.max_artifact_size,
        )
        if check.version != self.version:
            raise SessionCorruptedError(
                f"state_version {self.version} differs from replay ({check.version})"
            )
        if check.state != self.state:
            bad = sorted(set(check.state.items()) ^ set(self.state.items()))
            raise SessionCorruptedError(
                f"state differs from replay of the trajectory at key {bad[0][0]!r}"
            )
        if check.artifacts != self.artifacts:
            raise SessionCorruptedError("artifacts differ from replay of the trajectory")
        for name, digest in self.artifacts.items():
            data = self.blobs.get(digest)
            if data is None or sha256_hex(data) != digest:
                raise SessionCorruptedError(f"artifact {name!r} does not match its digest")
        return len(self.records)

    def state_at(self, version: int) -> dict[str, Any]:
        if not isinstance(version, int) or isinstance(version, bool):
            raise KaizenValidationError("version must be an int")
        if version < 0 or version > self.version:
            raise KaizenValidationError(
                f"version {version} is out of range 0..{self.version}",
                details={"version": version, "state_version": self.version},
            )
        if version == self.version:
            return self.all_state()
        past = SessionCore.replay(
            self.records, session_id=self.session_id, verify=False, until_version=version
        )
        return past.all_state()

    def next_record(self, agent_id: str, entry_type: EntryType, content: Any) -> Record:
        """The record an append would add now, without adding it (a save writes its own
        ``session_saved`` into the file first and adds it only once the file is written)."""
        kind = entry_type.value
        seq, prev, ts = self.length + 1, self.head, _timestamp()
        data = encode(content, "entry content")
        digest = entry_hash(seq, ts, agent_id, kind, data, prev)
        return (seq, ts, agent_id, kind, data, prev, digest)

    def add_record(self, record: Record) -> None:
        """Append a record made by :meth:`next_record` (nothing was appended since)."""
        if record[SEQ] != self.length + 1 or record[PREV_HASH] != self.head:
            raise SessionCorruptedError("the trajectory moved on since this record was made")
        self.records.append(record)
        self.head = record[HASH]

    def snapshot_copy(self) -> SessionCore:
        """A shallow copy that later writes to this core do not affect (for worker threads)."""
        copy = SessionCore(
            self.session_id,
            max_artifact_size=self.max_artifact_size,
            workspace_path=self.workspace_path,
            created=False,
        )
        copy.records = self.records.copy()
        copy.state = dict(self.state)
        copy.version = self.version
        copy.artifacts = dict(self.artifacts)
        copy.blobs = dict(self.blobs)
        copy.head = self.head
        copy.checkpoints = list(self.checkpoints)
        return copy

    # -- forks and snapshots -------------------------------------------------------------

    def fork(self, at_seq: int | None, session_id: str | None) -> SessionCore:
        last = len(self.records)
        if at_seq is None:
            at_seq = last
        if not isinstance(at_seq, int) or isinstance(at_seq, bool) or not 1 <= at_seq <= last:
            raise KaizenValidationError(f"at_seq must be an int in 1..{last}, got {at_seq!r}")
        child = SessionCore.replay(
            self.records[:at_seq],
            session_id=session_id or str(uuid.uuid4()),
            max_artifact_size=self.max_artifact_size,
            workspace_path=self.workspace_path,
            verify=False,
        )
        child.blobs = dict(self.blobs)
        child.append(
            _SYSTEM,
            EntryType.SESSION_FORKED,
            {
                "session_id": child.session_id,
                "parent_session_id": self.session_id,
                "forked_at_seq": at_seq,
                "parent_hash": self.records[at_seq - 1][HASH],
            },
        )
        return child

    def snapshot(self, depth: int) -> dict[str, Any]:
        tail = self.records[-depth:] if depth > 0 else []
        return {
            "session_id": self.session_id,
            "state": self.all_state(),
            "state_version": self.version,
            "trajectory": [TrajectoryEntry.from_record(r).to_dict() for r in tail],
            "artifacts": sorted(self.artifacts),
            "snapshot_time": _timestamp(),
            "trajectory_total_length": len(self.records),
        }
