"""The data of a store-backed session as its actor holds it: state, head, a bounded tail.

:class:`StoredCore` is a :class:`~kaizen_async._state.SessionCore` whose ``records`` are only
the newest entries (``records[i]`` has seq ``base + i + 1``; ``length`` is the head's seq),
whose artifact data is read from the store (a few small blobs are cached), and which notes
what changed since its last commit (new records, state keys, artifact names, new blobs, the
open plan steps) so that a commit sends only that. An in-memory session uses the plain core
and pays nothing for any of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ._exceptions import SessionCorruptedError
from ._state import DISPATCHER, Op, SessionCore
from ._steps import COMPLETED, STARTED, OpenSteps
from ._storage import Batch, SessionStore, StoredSession
from ._trajectory import CONTENT, HASH, SEQ, EntryType, Record, Records

__all__ = ["DEFAULT_TAIL", "StoredCore", "load_core", "step_records"]

#: entries a store-backed session keeps in memory (it trims back to this many once it
#: holds twice as many, so trimming costs O(1) per entry)
DEFAULT_TAIL = 256
#: artifact data kept in memory after it is committed: at most this many blobs, each small
_CACHE_BLOBS = 16
_CACHE_BLOB_BYTES = 256 * 1024
#: what a batch holds for state, artifacts or blobs that did not change (read-only)
_NOTHING: Mapping[Any, Any] = MappingProxyType({})


class StoredCore(SessionCore):
    """State, head and a bounded tail of a store-backed session, and what changed since
    its last commit (tracked only here, so an in-memory session pays nothing for it)."""

    __slots__ = (
        "base",
        "committed",
        "epoch",
        "interrupted",
        "names",
        "new_blobs",
        "open_steps",
        "sizes",
        "steps_changed",
        "steps_committed",
        "steps_sent",
        "tail_max",
    )

    def __init__(
        self, stored: StoredSession, steps: Mapping[int, Record], tail_max: int = DEFAULT_TAIL
    ) -> None:
        super().__init__(
            stored.info.session_id,
            max_artifact_size=stored.max_artifact_size,
            workspace_path=stored.workspace_path,
            created=False,
        )
        self.tail_max = tail_max
        #: the hub's ownership epoch of the session (None: not owned); every batch
        #: carries it, so the store refuses it once another hub has taken the session over
        self.epoch: int | None = None
        self.sizes: dict[str, int] = {}  # digest -> size: known sizes outlive reloads
        self.reset(stored, steps)

    def reset(self, stored: StoredSession, steps: Mapping[int, Record]) -> None:
        """Take the store's snapshot as the session (at open, and to reload after a failed
        commit): everything applied but not committed is dropped."""
        info = stored.info
        tail = list(stored.tail)
        length = info.trajectory_length
        base = length - len(tail)
        if length < 1 or base < 0:
            raise SessionCorruptedError(
                f"session {info.session_id}: the store holds {length} entries and a tail of "
                f"{len(tail)}"
            )
        for offset, record in enumerate(tail, base + 1):
            if record[SEQ] != offset:
                raise SessionCorruptedError(
                    f"session {info.session_id}: the stored tail has seq {record[SEQ]} where "
                    f"{offset} was expected",
                    seq=offset,
                )
        if tail and tail[-1][HASH] != stored.head_hash:
            raise SessionCorruptedError(
                f"session {info.session_id}: the stored head differs from the last entry",
                seq=length,
            )
        self.records = Records(tail)
        self.base = base
        self.committed = length
        self.state = dict(stored.state)
        self.version = info.state_version
        self.artifacts = dict(stored.artifacts)
        self.head = stored.head_hash
        self.blobs: dict[str, bytes] = {}  # a small cache; the store holds every blob
        self.keys: set[str] = set()
        self.names: set[str] = set()
        self.new_blobs: dict[str, bytes] = {}
        self.open_steps = OpenSteps()
        self.steps_changed = False
        #: the open steps as the store holds them, and as the batch under way sends them
        self.steps_committed: tuple[int, ...] = tuple(sorted(stored.open_steps))
        self.steps_sent: tuple[int, ...] | None = None
        #: the started records of the steps that were open when the store was read
        self.interrupted: list[Record] = []
        for seq in stored.open_steps:
            started = steps.get(seq)
            if started is None or not self.open_steps.started(seq, started[CONTENT]):
                raise SessionCorruptedError(
                    f"session {info.session_id}: open step at seq {seq} is not a readable "
                    "plan_step_started entry",
                    seq=seq,
                )
            self.interrupted.append(started)

    @property
    def length(self) -> int:
        return self.base + len(self.records)

    def _push(self, agent_id: str, entry_type: str, content: bytes) -> Record:
        # SessionCore._push (from seq base + 1), plus the open-step bookkeeping
        record = SessionCore._push(self, agent_id, entry_type, content)
        if entry_type == STARTED:
            self.steps_changed |= self.open_steps.started(record[0], content)
        elif entry_type == COMPLETED:
            self.steps_changed |= self.open_steps.completed(content)
        return record

    keys: set[str]

    def append_op(self, agent_id: str, entry_type: EntryType | str, content: Any) -> Op:
        # an append that starts or ends a step goes through _push (open steps); the rest
        # are chained inline
        checked = self.check_append(agent_id, entry_type, content)
        if checked[1] == STARTED or checked[1] == COMPLETED:
            return (self.apply_append, checked)
        return (None, checked)

    def step_op(self, kind: str, content: bytes, key: tuple[str, int]) -> Op:
        return (self._push_step, (kind, content, key))

    def _push_step(self, kind: str, content: bytes, key: tuple[str, int]) -> None:
        """:meth:`_push` of a dispatched step's start or end, its step key known (its
        content is not decoded for it)."""
        record = SessionCore._push(self, DISPATCHER, kind, content)
        if kind == STARTED:
            self.steps_changed |= self.open_steps.started(record[0], content, key)
        else:
            self.steps_changed |= self.open_steps.completed(content, key)

    def apply_set(self, key: str, *args: Any, **kwargs: Any) -> int:
        self.keys.add(key)
        return super().apply_set(key, *args, **kwargs)

    def apply_delete(self, key: str, *args: Any, **kwargs: Any) -> int:
        self.keys.add(key)
        return super().apply_delete(key, *args, **kwargs)

    def apply_write_artifact(
        self, name: str, data: bytes, digest: str, *args: Any, **kwargs: Any
    ) -> int:
        self.names.add(name)
        self.sizes[digest] = len(data)
        self.new_blobs[digest] = data
        return super().apply_write_artifact(name, data, digest, *args, **kwargs)

    def apply_delete_artifact(self, name: str, *args: Any, **kwargs: Any) -> int:
        self.names.add(name)
        return super().apply_delete_artifact(name, *args, **kwargs)

    def _blob_size(self, digest: str) -> int | None:
        size = self.sizes.get(digest)
        if size is None:
            data = self.blobs.get(digest)
            size = None if data is None else len(data)
        return size  # None only if the session never learned it (see DurableSession)

    # -- commits ---------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether entries were applied since the last commit."""
        return self.base + len(self.records) != self.committed

    def batch(self) -> Batch:
        """Everything applied since the last commit, as one batch (what did not change
        shares one empty mapping: a commit round allocates little)."""
        keys, names, blobs = self.keys, self.names, self.new_blobs
        if keys:
            state = self.state
            changed: Mapping[str, bytes | None] = {key: state.get(key) for key in keys}
        else:
            changed = _NOTHING
        if names:
            artifacts = self.artifacts
            named: Mapping[str, str | None] = {name: artifacts.get(name) for name in names}
        else:
            named = _NOTHING
        committed = self.committed
        steps = None
        if self.steps_changed:  # sent only if it differs from the store's (a whole step
            # in one batch opens and closes it: no change)
            seqs = self.open_steps.seqs() if self.open_steps.steps else ()
            if seqs != self.steps_committed:
                steps = seqs
        self.steps_sent = steps
        return Batch(
            self.session_id,
            committed,
            self.records[committed - self.base :],
            self.version,
            changed,
            named,
            dict(blobs) if blobs else _NOTHING,
            steps,
            self.epoch,
        )

    def committed_ok(self) -> None:
        """The batch is durable: forget what it changed, trim the tail and the blob cache."""
        self.committed = self.base + len(self.records)
        self.keys.clear()
        self.names.clear()
        self.new_blobs.clear()
        if self.steps_sent is not None:
            self.steps_committed = self.steps_sent
        self.steps_changed = False
        records = self.records
        excess = len(records) - self.tail_max
        if excess >= self.tail_max:
            del records[:excess]
            self.base += excess
        blobs = self.blobs
        if blobs and (
            len(blobs) > _CACHE_BLOBS or any(len(b) > _CACHE_BLOB_BYTES for b in blobs.values())
        ):
            kept = [(d, b) for d, b in blobs.items() if len(b) <= _CACHE_BLOB_BYTES]
            self.blobs = dict(kept[-_CACHE_BLOBS:])

    def trim(self) -> None:
        """Drop every committed entry from memory (the session went idle: its history is
        in the store, and a warm session should hold little beyond its state). Entries not
        yet committed stay; ``base + len(records)`` is unchanged, so a commit under way is
        not disturbed."""
        committed = self.committed - self.base
        if committed:
            self.records = Records(self.records[committed:])
            self.base = self.committed

    def tail(self) -> tuple[int, int, list[Record]]:
        """``(head seq, base, committed tail records)`` right now."""
        return self.committed, self.base, self.records[: self.committed - self.base]


async def step_records(store: SessionStore, stored: StoredSession) -> dict[int, Record]:
    """The ``plan_step_started`` records of the open steps (from the tail, else one read)."""
    wanted = set(stored.open_steps)
    found = {r[SEQ]: r for r in stored.tail if r[SEQ] in wanted}
    missing = wanted - found.keys()
    if missing:
        for record in await store.read(
            stored.info.session_id,
            since_seq=min(missing) - 1,
            until_seq=max(missing),
            entry_types=[STARTED],
        ):
            if record[SEQ] in missing:
                found[record[SEQ]] = record
    return found


async def load_core(store: SessionStore, session_id: str, tail: int = DEFAULT_TAIL) -> StoredCore:
    """Open ``session_id`` from ``store``: state, head, tail and open steps, no history."""
    stored = await store.load(session_id, tail=tail)
    return StoredCore(stored, await step_records(store, stored), tail)
