"""Property tests: random operation sequences agree with a plain-dict model."""

from __future__ import annotations

import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaizen_async import EntryType, ErrorCode, KaizenError, PersistError, Session

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from(["a", "b", "c", "d e", "ü"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, json_values),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("append"), json_values),
        st.tuples(st.just("write"), st.sampled_from(["x", "y/z"]), st.binary(max_size=16)),
        st.tuples(st.just("fork")),
        st.tuples(st.just("save_load")),
    ),
    max_size=25,
)


async def _run(ops: list[tuple[Any, ...]], directory: Path) -> None:
    """Apply ``ops`` to a session and to a dict model; after every op they must agree.

    ``fork`` and ``save_load`` switch to the forked or reloaded session and carry on there,
    so later ops also exercise a forked or loaded session (and save_load always saves to
    the same file: incremental saves; a fork's first save there is a conflict until it
    overwrites the file of the session it forked from).
    """
    model: dict[str, Any] = {}
    history: list[dict[str, Any]] = [{}]  # history[v] = state right after version v
    artifacts: dict[str, bytes] = {}
    path = directory / "s.kaizen"
    forked = False  # the file (if any) holds another session than `current`
    async with AsyncExitStack() as stack:
        current = await stack.enter_async_context(Session())
        for op in ops:
            kind = op[0]
            if kind == "set":
                await current.set(op[1], op[2])
                model[op[1]] = op[2]
                history.append(dict(model))
            elif kind == "delete":
                if op[1] in model:
                    await current.delete(op[1])
                    del model[op[1]]
                    history.append(dict(model))
                else:
                    with pytest.raises(KaizenError):
                        await current.delete(op[1])
            elif kind == "append":
                await current.append("prop", EntryType.SYSTEM_NOTE, op[1])
            elif kind == "write":
                await current.write_artifact(op[1], op[2])
                artifacts[op[1]] = op[2]
            elif kind == "fork":
                length = await current.get_trajectory_length()
                current = await stack.enter_async_context(await current.fork())
                assert await current.get_trajectory_length() == length + 1
                forked = path.exists()
            elif kind == "save_load":
                length = await current.get_trajectory_length()
                if forked:
                    with pytest.raises(PersistError) as info:
                        await current.save(path)
                    assert info.value.code is ErrorCode.PERSIST_CONFLICT
                await current.save(path, overwrite=forked)
                forked = False
                current = await stack.enter_async_context(Session.load(path))
                assert await current.get_trajectory_length() == length + 2  # saved, loaded
            assert await current.get_all_state() == model
        assert await current.get_state_version() == len(history) - 1
        for version, expected in enumerate(history):
            assert await current.state_at(version) == expected
        for name, data in artifacts.items():
            assert await current.read_artifact(name) == data
        await current.verify()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_state_at_matches_a_dict_model(backend: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(_run, ops, Path(directory), backend=backend)
