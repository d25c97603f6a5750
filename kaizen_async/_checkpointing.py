"""The store-independent half of signing at commit: which heads to sign, and signing them.

A store with a signer asks its :class:`Checkpointer`, inside each transaction and after its
batches were accepted (the guarded head update, and the fencing condition where there is
one, already passed), which session heads are due for a checkpoint; it signs them (one
signature for the whole transaction, see :mod:`._checkpoint`) and the store writes the
rows in that same transaction. A batch that was refused, or a transaction that rolled
back, leaves no checkpoint; a fenced writer therefore never commits one. Once the
transaction has committed, the store reports it back (:meth:`Checkpointer.committed`),
which advances the per-session counters and hands the checkpoints to the anchor hook.

Blocking parts (:meth:`Checkpointer.due`, :meth:`Checkpointer.sign`) run in the store's
writer thread; :meth:`Checkpointer.committed` runs on the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from ._anchors import AnchorPublisher, AnchorSink, publisher_for
from ._checkpoint import (
    Checkpoint,
    default_writer_id,
    timestamp,
    tree_checkpoints,
    tree_head,
    tree_root,
)
from ._exceptions import KaizenValidationError
from ._keys import Signer, check_signer

__all__ = ["CheckpointPolicy", "Checkpointer", "Head", "SignedTree"]

#: sessions whose counters a writer keeps before it starts afresh (memory stays bounded)
_MAX_TRACKED = 65_536
#: a session head a transaction committed: (session id, head seq, head hash, epoch,
#: entries committed for it in this transaction)
Head = tuple[str, int, str, int, int]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When a store signs a session's head, and which checkpoints it keeps.

    Args:
        every_commits: sign at every Nth commit of a session (1: every durable commit).
        every_entries: also sign once this many of a session's entries are unsigned.
        writer_id: the writer named in checkpoints (default ``host:pid``).
        group: one signature per transaction over all its sessions' checkpoints (a
            Merkle tree, see :mod:`kaizen_async.signing`); False signs each alone.
        history_every: a store that keeps only each session's latest checkpoint in its
            row (``SQLiteStore``) also keeps, as history, the first checkpoint each writer
            makes for a session, every Nth after it and every explicit one
            (``store.checkpoint``); ``MemoryStore`` keeps all.

    Whatever the policy, ``store.checkpoint(session_id)`` (a store-backed session's close)
    signs the head at once.
    """

    every_commits: int = 1
    every_entries: int | None = None
    writer_id: str | None = None
    group: bool = True
    history_every: int = 64

    def __post_init__(self) -> None:
        for name in ("every_commits", "history_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise KaizenValidationError(f"{name} must be an int >= 1")
        if self.every_entries is not None and (
            not isinstance(self.every_entries, int)
            or isinstance(self.every_entries, bool)
            or self.every_entries < 1
        ):
            raise KaizenValidationError("every_entries must be None or an int >= 1")
        if self.writer_id is not None and (
            not isinstance(self.writer_id, str) or not self.writer_id.strip()
        ):
            raise KaizenValidationError("writer_id must be a non-blank str")
        if not isinstance(self.group, bool):
            raise KaizenValidationError("group must be a bool")


class SignedTree(NamedTuple):
    """Session heads signed together: in leaf order, with the time, leaves and signature."""

    heads: list[tuple[str, int, str, int]]
    time: str
    leaves: list[bytes]
    signature: bytes


class Checkpointer:
    """Signs session heads for one store's writer (module docstring)."""

    def __init__(
        self,
        signer: Signer,
        policy: CheckpointPolicy | None = None,
        anchor: AnchorSink | AnchorPublisher | None = None,
    ) -> None:
        self.signer = check_signer(signer)
        self.policy = policy or CheckpointPolicy()
        if not isinstance(self.policy, CheckpointPolicy):
            raise KaizenValidationError("checkpoints must be a CheckpointPolicy")
        self.writer_id = self.policy.writer_id or default_writer_id()
        self.key_id = self.signer.key_id
        self.anchor = publisher_for(anchor)
        self.every = self.policy.every_commits == 1 and self.policy.every_entries is None
        #: per session since its last checkpoint: (commits, entries)
        self._unsigned: dict[str, tuple[int, int]] = {}
        #: per session: checkpoints this writer made (for the history rows)
        self._made: dict[str, int] = {}
        self.signed = 0

    def due(self, session_id: str, commits: int, entries: int) -> bool:
        """Whether a session's head is due after ``commits`` commits of ``entries``
        entries in this transaction (blocking side: the writer thread)."""
        if self.every:
            return True
        policy = self.policy
        done_commits, done_entries = self._unsigned.get(session_id, (0, 0))
        return done_commits + commits >= policy.every_commits or (
            policy.every_entries is not None and done_entries + entries >= policy.every_entries
        )

    def history(
        self,
        heads: Sequence[tuple[str, int, str, int]],
        first_tree: int,
        group: bool,
        explicit: Collection[int],
        deleted: Collection[str],
    ) -> list[tuple[str, int, int, int]]:
        """The history rows ``(session, seq, tree id, leaf index)`` to keep of heads signed
        in leaf order (see CheckpointPolicy.history_every)."""
        made, every = self._made, self.policy.history_every
        if len(made) > _MAX_TRACKED:  # bounded: a session seen again gets a "first" row
            made.clear()
        rows = []
        for n, (sid, seq, _, _) in enumerate(heads):
            count = made.get(sid, 0)
            made[sid] = count + 1
            if (not count % every or n in explicit) and sid not in deleted:
                tree_id, leaf = (first_tree, n) if group else (first_tree + n, 0)
                rows.append((sid, seq, tree_id, leaf))
        return rows

    def sign(self, heads: Sequence[tuple[str, int, str, int]]) -> list[SignedTree]:
        """Sign ``heads`` (one tree, or one each without ``group``); blocking."""
        if not heads:
            return []
        stamp = timestamp()
        # checkpoint_text, with the writer and time lines encoded once for all heads, and
        # each text hashed to its leaf (0x00 || text) as it is made: the hot path of a
        # signed commit (one pass over the transaction's heads)
        tail = b"%b\n%b\n" % (orjson.dumps(self.writer_id), stamp.encode())
        line = b"\x00kaizen-checkpoint/v1\n%b\n%d\n%b\n%d\n" + tail
        dumps, sha256 = orjson.dumps, hashlib.sha256
        sign = self.signer.sign
        if not self.policy.group:
            trees = []
            for head in heads:
                sid, seq, head_hash, epoch = head
                text = line % (dumps(sid), seq, head_hash.encode(), epoch)
                trees.append(SignedTree([head], stamp, [sha256(text).digest()], sign(text[1:])))
            return trees
        group = list(heads)
        if len(group) == 1:
            sid, seq, head_hash, epoch = group[0]
            text = line % (dumps(sid), seq, head_hash.encode(), epoch)
            return [SignedTree(group, stamp, [sha256(text).digest()], sign(text[1:]))]
        leaves = [
            sha256(line % (dumps(sid), seq, head_hash.encode(), epoch)).digest()
            for sid, seq, head_hash, epoch in group
        ]
        return [SignedTree(group, stamp, leaves, sign(tree_head(len(leaves), tree_root(leaves))))]

    def checkpoints(self, trees: Iterable[SignedTree]) -> list[Checkpoint]:
        """The checkpoint objects of signed trees (audit paths included)."""
        made: list[Checkpoint] = []
        for tree in trees:
            made.extend(
                tree_checkpoints(
                    tree.heads, self.writer_id, tree.time, self.key_id, tree.signature, tree.leaves
                )
            )
        return made

    def committed(
        self,
        heads: Iterable[Head],
        trees: Sequence[SignedTree],
        accepted: Collection[tuple[str, int, str]] | None = None,
    ) -> None:
        """A transaction committed ``heads`` and ``trees``: count the unsigned commits and
        entries per session, and offer the checkpoints to the anchor (event loop).

        ``accepted``: the ``(session, seq, head)`` of the trees' heads that were committed,
        when a store signs before it knows (``PostgresStore``: the others' leaves stay in
        the tree, but their checkpoints were never stored and are not offered)."""
        if accepted is not None:
            made = [
                c for c in self.checkpoints(trees) if (c.session_id, c.seq, c.head_hash) in accepted
            ]
            if not self.every:
                unsigned = self._unsigned
                if len(unsigned) > _MAX_TRACKED:
                    unsigned.clear()
                for sid, _, _, _, entries in heads:
                    commits, count = unsigned.get(sid, (0, 0))
                    unsigned[sid] = (commits + 1, count + entries)
                for checkpoint in made:
                    unsigned.pop(checkpoint.session_id, None)
            self.signed += len(made)
            if made and self.anchor is not None:
                self.anchor.offer(made)
            return
        if not self.every:
            unsigned = self._unsigned
            if len(unsigned) > _MAX_TRACKED:  # bounded: counting restarts (later checkpoints)
                unsigned.clear()
            for sid, _, _, _, entries in heads:
                commits, count = unsigned.get(sid, (0, 0))
                unsigned[sid] = (commits + 1, count + entries)
            for tree in trees:
                for head in tree.heads:
                    unsigned.pop(head[0], None)
        self.signed += sum(len(tree.heads) for tree in trees)
        if trees and self.anchor is not None:
            self.anchor.offer(self.checkpoints(trees))

    def forget(self, session_id: str) -> None:
        """A deleted session's counters."""
        self._unsigned.pop(session_id, None)
        self._made.pop(session_id, None)
