"""Shared fixtures: every async test runs on asyncio and on Trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pgserver import pg_schema, postgres_dsn, postgres_server
from storefakes import ControlledStore

from kaizen_async import Session
from kaizen_async.stores import MemoryStore, SQLiteStore

# PostgreSQL fixtures (tests/pgserver.py): a server for the session, a schema per test
__all__ = ["pg_schema", "postgres_dsn", "postgres_server"]


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with Session() as s:
        yield s


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ControlledStore:
    """A store for hub tests (each kind), wrapped so a test can hold, fail and count calls."""
    if request.param == "memory":
        return ControlledStore(MemoryStore())
    return ControlledStore(SQLiteStore(tmp_path / "sessions.db"))
