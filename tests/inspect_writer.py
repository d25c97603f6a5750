"""A writer process for the inspector's live tests (run by ``inspect_procs.Writer``).

``python inspect_writer.py DB SESSION`` creates SESSION in the SQLite store DB if needed,
prints ``head N``, then for each line ``COUNT DELAY`` on stdin commits COUNT entries, one
awaited write at a time (DELAY seconds apart; every third one a dispatched step, which
records started, the agent's entries and completed), and prints the new ``head N``.
"""

from __future__ import annotations

import contextlib
import sys

import anyio

from agents import ReverseAgent
from kaizen_async import Dispatcher, EntryType, SessionExistsError, SessionHub
from kaizen_async.stores import SQLiteStore


async def main(db: str, session_id: str) -> None:
    async with SessionHub(SQLiteStore(db)) as hub, Dispatcher() as dispatcher:
        dispatcher.register(ReverseAgent())
        with contextlib.suppress(SessionExistsError):
            await hub.create(session_id)
        async with hub.open(session_id) as session:
            await session.set("text", "hello")
            print(f"head {await session.get_trajectory_length()}", flush=True)
            counter = 0
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    return
                count, delay = line.split()
                for _ in range(int(count)):
                    counter += 1
                    if counter % 3 == 0:
                        await dispatcher.dispatch_single("reverse", session, {"key": "text"})
                    else:
                        await session.append("writer", EntryType.SYSTEM_NOTE, {"n": counter})
                    await session.flush()
                    if float(delay):
                        await anyio.sleep(float(delay))
                print(f"head {await session.get_trajectory_length()}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
