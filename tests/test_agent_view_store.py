"""An agent working on a store-backed session sees it as the session itself does: the view
a capability gets keeps the session's own reads (artifact data and history read from the
store once they are no longer in memory) and still records the agent's writes as its own."""

from __future__ import annotations

from typing import Any

import pytest

from kaizen_async import Agent, Dispatcher, EntryType, Session, SessionHub, capability
from kaizen_async._durable import DurableSession
from kaizen_async.stores import MemoryStore

pytestmark = pytest.mark.anyio


class Reader(Agent):
    agent_id = "reader"

    @capability("read_all")
    async def read_all(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        names = await session.list_artifacts()
        data = {name: (await session.read_artifact(name)).decode() for name in names}
        history = await session.get_trajectory(entry_types=[EntryType.ARTIFACT_WRITTEN])
        await session.write_artifact("seen", str(len(data)).encode())
        await session.flush()  # the store-backed session's flush: durable on return
        return {
            "durable_view": isinstance(session, DurableSession),
            "data": data,
            "written": len(history),
        }


async def test_an_agent_reads_what_the_store_holds_beyond_the_memory_cache() -> None:
    async with SessionHub(MemoryStore()) as hub, Dispatcher() as dispatcher:
        dispatcher.register(Reader())
        session_id = await hub.create()
        async with hub.open(session_id) as session:
            for index in range(40):  # far more blobs than a session keeps in memory
                await session.write_artifact(f"a{index:02d}", f"data {index}".encode())
            for index in range(300):  # more entries than its in-memory tail
                await session.set("k", index)
            result = await dispatcher.dispatch_single("read_all", session)
            assert result.success, result.error
            assert result.result["durable_view"] is True
            assert result.result["data"] == {f"a{i:02d}": f"data {i}" for i in range(40)}
            assert result.result["written"] == 40
            (seen,) = await session.get_trajectory(1, entry_types=[EntryType.ARTIFACT_WRITTEN])
            assert seen.agent_id == "reader"  # still the agent's own write
