"""Verify a session where a store keeps it: chain, derived state and signed checkpoints.

What ``session.verify()`` does for a session in memory, done from the store's committed
data alone (no session is opened, nothing is written): every entry is read and replayed
with the hash chain checked, the replayed head, state version, state and artifacts must be
what the store says they are, and the checkpoints are checked as
:mod:`kaizen_async._verification` describes.
"""

from __future__ import annotations

import os

import anyio

from .._exceptions import SessionCorruptedError
from .._keys import Keyring
from .._state import SessionCore
from .._storage import CheckpointStore, SessionStore, StoredSession
from .._trajectory import HASH, Record
from .._verification import AnchorSource, VerifyReport, check_checkpoints, verify_options
from ._common import check_session_id, corrupted

__all__ = ["verify_stored"]


async def verify_stored(
    store: SessionStore,
    session_id: str,
    *,
    keyring: Keyring | str | os.PathLike[str] | None = None,
    require_signed: bool = False,
    max_unsigned_tail: int | None = None,
    anchors: AnchorSource | None = None,
    all_checkpoints: bool = False,
) -> VerifyReport:
    """Verify ``session_id`` in ``store`` (an entered store); the options are those of
    :meth:`kaizen_async.Session.verify`. Returns the report or raises
    :class:`~kaizen_async.SessionCorruptedError` naming the first bad seq.

    Its checkpoints are read first, then its head, and everything is checked up to that
    head: commits that land meanwhile are simply not part of this check.
    """
    check_session_id(session_id)
    options = await anyio.to_thread.run_sync(
        lambda: verify_options(keyring, require_signed, max_unsigned_tail, anchors, all_checkpoints)
    )
    # checkpoints first: each commits with the entries it covers, so all of them lie at or
    # before the head read next (one past it means entries were removed)
    checkpoints = (
        await store.read_checkpoints(session_id) if isinstance(store, CheckpointStore) else []
    )
    stored = await store.load(session_id, tail=0)
    records = await store.read(session_id, until_seq=stored.info.trajectory_length)
    for digest in set(stored.artifacts.values()):
        await store.read_blob(digest)  # checked against its digest by the store

    def check() -> VerifyReport:
        _replay_matches(session_id, records, stored)
        return check_checkpoints(
            session_id, len(records), lambda seq: records[seq - 1][HASH], checkpoints, options
        )

    return await anyio.to_thread.run_sync(check)


def _replay_matches(session_id: str, records: list[Record], stored: StoredSession) -> None:
    """The chain verifies and replays to exactly the head and state the store holds."""
    info = stored.info
    if len(records) != info.trajectory_length:
        raise corrupted(session_id, "entry is missing", len(records) + 1)
    core = SessionCore.replay(
        records,
        session_id=session_id,
        max_artifact_size=stored.max_artifact_size,
        workspace_path=stored.workspace_path,
    )
    if core.head != stored.head_hash:
        raise corrupted(session_id, "the newest entry is not the recorded head", len(records))
    if core.version != info.state_version:
        raise SessionCorruptedError(
            f"session {session_id!r}: stored state_version {info.state_version} differs "
            f"from replay ({core.version})",
            details={"session_id": session_id},
        )
    if core.state != stored.state:
        bad = sorted(set(core.state.items()) ^ set(stored.state.items()))
        raise SessionCorruptedError(
            f"session {session_id!r}: stored state differs from replay of the trajectory at "
            f"key {bad[0][0]!r}",
            details={"session_id": session_id},
        )
    if core.artifacts != stored.artifacts:
        raise SessionCorruptedError(
            f"session {session_id!r}: stored artifacts differ from replay of the trajectory",
            details={"session_id": session_id},
        )
