"""Showing ``.kaizen`` files: each is read (and verified) once and put as it is into an
in-memory store, so the inspector reads files and stores the same way.

Unlike :meth:`SessionHub.import_file` nothing is appended (no ``session_loaded``): the
inspector shows the file's entries, its head hash and its length exactly, and the file
itself is only read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import anyio.to_thread

from .._persistence import read_session
from .._state import SessionCore
from .._steps import find_open_steps
from .._storage import Batch, SessionStore
from .._trajectory import SEQ

__all__ = ["load_files", "store_core"]


async def store_core(
    store: SessionStore, core: SessionCore, metadata: Mapping[str, Any] | None = None
) -> str:
    """Create a session in ``store`` holding exactly ``core``'s entries, state and
    artifacts; returns its id."""
    open_steps = tuple(record[SEQ] for record in find_open_steps(core.records))
    await store.create(
        Batch(
            core.session_id,
            0,
            core.records[:],
            core.version,
            state=dict(core.state),
            artifacts=dict(core.artifacts),
            blobs=dict(core.blobs),
            open_steps=open_steps or None,
        ),
        max_artifact_size=core.max_artifact_size,
        workspace_path=core.workspace_path,
        metadata=None if metadata is None else dict(metadata),
    )
    return core.session_id


async def load_files(store: SessionStore, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Read and verify each ``.kaizen`` file and add it to ``store``; returns the session
    ids in order. Raises what reading raises (``FileNotFoundError``,
    :class:`SessionCorruptedError`, :class:`SchemaMismatchError`) and
    :class:`SessionExistsError` when two files hold the same session id."""
    ids = []
    for path in paths:
        name = os.fspath(path)
        core, version = await anyio.to_thread.run_sync(read_session, name)
        where = await anyio.to_thread.run_sync(os.path.abspath, name)
        ids.append(await store_core(store, core, {"file": where, "schema_version": version}))
    return ids
