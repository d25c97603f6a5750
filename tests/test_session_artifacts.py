from __future__ import annotations

import hashlib
from typing import Any

import pytest

from kaizen_async import (
    ArtifactNotFoundError,
    ArtifactTooLargeError,
    EntryType,
    ErrorCode,
    KaizenTypeError,
    KaizenValidationError,
    Session,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("data", [b"hello", b"", bytes(range(256)), b"\x00" * (1 << 20)])
async def test_round_trip(session: Session, data: bytes) -> None:
    await session.write_artifact("a.bin", data)
    assert await session.read_artifact("a.bin") == data
    assert await session.get_artifact_size("a.bin") == len(data)


async def test_written_entry_is_content_addressed(session: Session) -> None:
    await session.write_artifact("out/main.go", b"package main")
    await session.write_artifact("out/main.go", b"package main // v2")
    first, second = await session.get_trajectory(entry_types=[EntryType.ARTIFACT_WRITTEN])
    assert first.content == {
        "name": "out/main.go",
        "size": 12,
        "is_update": False,
        "old_size": None,
        "digest": hashlib.sha256(b"package main").hexdigest(),
    }
    assert second.content["is_update"] is True
    assert second.content["old_size"] == 12
    assert second.content["size"] == 18
    assert await session.read_artifact("out/main.go") == b"package main // v2"


async def test_listing_is_sorted_and_case_sensitive(session: Session) -> None:
    for name in ["b", "A", "a", "dir/x y.txt", "b"]:
        await session.write_artifact(name, b"1")
    assert await session.list_artifacts() == ["A", "a", "b", "dir/x y.txt"]


async def test_size_limit_is_inclusive() -> None:
    async with Session(max_artifact_size=1000) as s:
        await s.write_artifact("ok", b"x" * 1000)
        with pytest.raises(ArtifactTooLargeError) as info:
            await s.write_artifact("big", b"x" * 1001)
        assert isinstance(info.value, ValueError)
        assert info.value.code is ErrorCode.ARTIFACT_TOO_LARGE
        assert "exceeds" in str(info.value)
        assert await s.list_artifacts() == ["ok"]
        assert await s.get_trajectory_length() == 2


@pytest.mark.parametrize("data", ["text", bytearray(b"x"), memoryview(b"x"), None, 5])
async def test_non_bytes_is_type_error(session: Session, data: Any) -> None:
    with pytest.raises(KaizenTypeError) as info:
        await session.write_artifact("a", data)
    assert isinstance(info.value, TypeError)
    assert await session.get_trajectory_length() == 1


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "/etc/passwd",
        "\\abs",
        "C:\\x",
        "../up",
        "a/../../b",
        "a/..",
        "nul\x00",
        "tab\there",
        "bell\x07",
        5,
        None,
    ],
)
async def test_bad_names_are_refused(session: Session, name: Any) -> None:
    with pytest.raises(KaizenValidationError):
        await session.write_artifact(name, b"x")
    assert await session.list_artifacts() == []
    assert await session.get_trajectory_length() == 1


@pytest.mark.parametrize("name", ["out/main.go", "a b", "..hidden", "x..y", "dir/.config", "ü.txt"])
async def test_path_like_names_are_fine(session: Session, name: str) -> None:
    await session.write_artifact(name, b"x")
    assert await session.read_artifact(name) == b"x"


async def test_missing_artifact_is_typed_key_error(session: Session) -> None:
    for call in (session.read_artifact, session.get_artifact_size, session.delete_artifact):
        with pytest.raises(ArtifactNotFoundError) as info:
            await call("nope")
        assert isinstance(info.value, KeyError)
        assert info.value.code is ErrorCode.ARTIFACT_NOT_FOUND
    assert await session.get_trajectory_length() == 1


async def test_delete_artifact(session: Session) -> None:
    await session.write_artifact("a", b"data")
    await session.delete_artifact("a")
    assert await session.list_artifacts() == []
    with pytest.raises(ArtifactNotFoundError):
        await session.read_artifact("a")
    last = (await session.get_trajectory(1))[0]
    assert last.entry_type is EntryType.ARTIFACT_DELETED
    assert last.content["name"] == "a"
    await session.write_artifact("a", b"again")
    assert (await session.get_trajectory(1))[0].content["is_update"] is False
    assert await session.verify() == 4
