"""``python inspect_make_store.py DB [LONG]``: an SQLite store with the inspector tests'
sessions (``inspect_data.populate``) and, with LONG, a session ``long`` of LONG notes.

A child process, because the browser tests' Playwright already runs an event loop."""

from __future__ import annotations

import sys

import anyio
from inspect_data import populate, tidy_run

from kaizen_async import EntryType, SessionHub
from kaizen_async.stores import SQLiteStore


async def main(path: str, long_entries: int) -> None:
    async with SessionHub(SQLiteStore(path)) as hub:
        await populate(hub)
        await hub.create("demo-run", metadata={"job": "readme picture"})
        async with hub.open("demo-run") as session:
            await tidy_run(session)
        if long_entries:
            await hub.create("long")
            async with hub.open("long") as session, session.transaction() as tx:
                for index in range(long_entries):
                    tx.append("worker", EntryType.SYSTEM_NOTE, {"n": index})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
