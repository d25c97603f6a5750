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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._anchors import AnchorPublisher, AnchorSink, publisher_for
from ._checkpoint import Checkpoint, default_writer_id, sign_heads
from ._exceptions import KaizenValidationError
from ._keys import Signer, check_signer

__all__ = ["CheckpointPolicy", "Checkpointer", "Head"]

#: a session head a transaction committed: (session id, head seq, head hash, epoch,
#: entries committed for it in this transaction)
Head = tuple[str, int, str, int, int]


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When a store signs a session's head.

    Args:
        every_commits: sign at every Nth commit of a session (1: every durable commit).
        every_entries: also sign once this many of a session's entries are unsigned.
        writer_id: the writer named in checkpoints (default ``host:pid``).
        group: one signature per transaction over all its sessions' checkpoints (a
            Merkle tree, see :mod:`kaizen_async.signing`); False signs each alone.

    Whatever the policy, ``store.checkpoint(session_id)`` (a store-backed session's close,
    a file save) signs the head at once.
    """

    every_commits: int = 1
    every_entries: int | None = None
    writer_id: str | None = None
    group: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.every_commits, int) or self.every_commits < 1:
            raise KaizenValidationError("every_commits must be an int >= 1")
        if self.every_entries is not None and (
            not isinstance(self.every_entries, int) or self.every_entries < 1
        ):
            raise KaizenValidationError("every_entries must be None or an int >= 1")
        if self.writer_id is not None and (
            not isinstance(self.writer_id, str) or not self.writer_id.strip()
        ):
            raise KaizenValidationError("writer_id must be a non-blank str")


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
        #: per session since its last checkpoint: (commits, entries)
        self._unsigned: dict[str, tuple[int, int]] = {}
        self.signed = 0

    def due(self, heads: Iterable[Head]) -> list[Head]:
        """The heads to sign now: the newest head of each session in the transaction,
        if the policy says its turn has come."""
        newest: dict[str, Head] = {}
        entries: dict[str, int] = {}
        commits: dict[str, int] = {}
        for head in heads:
            sid = head[0]
            newest[sid] = head
            entries[sid] = entries.get(sid, 0) + head[4]
            commits[sid] = commits.get(sid, 0) + 1
        policy = self.policy
        if policy.every_commits == 1 and policy.every_entries is None:
            return list(newest.values())
        wanted = []
        for sid, head in newest.items():
            done_commits, done_entries = self._unsigned.get(sid, (0, 0))
            if done_commits + commits[sid] >= policy.every_commits or (
                policy.every_entries is not None
                and done_entries + entries[sid] >= policy.every_entries
            ):
                wanted.append(head)
        return wanted

    def sign(self, heads: Sequence[Head]) -> list[Checkpoint]:
        """Checkpoints of ``heads``, signed (blocking: the signer may be remote)."""
        return sign_heads(
            self.signer.sign,
            self.key_id,
            [(sid, seq, head_hash, epoch) for sid, seq, head_hash, epoch, _ in heads],
            self.writer_id,
            tree=self.policy.group,
        )

    def committed(self, heads: Iterable[Head], checkpoints: Sequence[Checkpoint]) -> None:
        """A transaction committed ``heads`` and ``checkpoints``: count the unsigned
        commits and entries per session, and offer the checkpoints to the anchor."""
        policy = self.policy
        if policy.every_commits != 1 or policy.every_entries is not None:
            unsigned = self._unsigned
            for sid, _, _, _, entries in heads:
                commits, count = unsigned.get(sid, (0, 0))
                unsigned[sid] = (commits + 1, count + entries)
            for checkpoint in checkpoints:
                unsigned.pop(checkpoint.session_id, None)
        self.signed += len(checkpoints)
        if checkpoints and self.anchor is not None:
            self.anchor.offer(checkpoints)

    def forget(self, session_id: str) -> None:
        """A deleted session's counters."""
        self._unsigned.pop(session_id, None)
