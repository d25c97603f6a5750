"""Shared fixtures: every async test runs on asyncio and on Trio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from storefakes import ControlledStore, FakeStore

from kaizen_async import Session


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


@pytest.fixture(params=[pytest.param("fake", id="fake-store")])
def store(request: pytest.FixtureRequest) -> ControlledStore:
    """A store for hub tests, wrapped so a test can hold, fail and count its calls."""
    return ControlledStore(FakeStore())
