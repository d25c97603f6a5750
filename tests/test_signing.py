"""Signed checkpoints: the format (golden vectors), keys and keyrings, anchors, and what a
verifier detects in ``.kaizen`` files and stores that an attacker rewrote.

Every attack here is real: the file or database is rewritten with sqlite3 exactly as
someone with write access (and no key) could, every hash recomputed (see
``signing_helpers``); the tests first show that the unkeyed chain accepts the result.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from signing_helpers import (
    KEY_A,
    KEY_B,
    KEY_EVIL,
    rewrite_file_entry,
    rewrite_store_entry,
    ring,
)
from test_stores import Driver, created

from kaizen_async import (
    ErrorCode,
    KaizenValidationError,
    PersistError,
    Session,
    SessionCorruptedError,
)
from kaizen_async._checkpoint import (
    leaf_hash,
    sign_heads,
    tree_head,
    tree_root,
)
from kaizen_async._state import SessionCore
from kaizen_async._verification import check_checkpoints, verify_options
from kaizen_async.signing import (
    AnchorPublisher,
    Checkpoint,
    CheckpointPolicy,
    Ed25519Signer,
    JsonlAnchor,
    Keyring,
    Signer,
    VerifyReport,
    checkpoint_text,
    key_id_of,
    read_anchors,
)
from kaizen_async.stores import MemoryStore, PostgresStore, SQLiteStore, verify_stored

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def code_of(info: pytest.ExceptionInfo[SessionCorruptedError]) -> ErrorCode:
    return info.value.code


async def signed_file(path: Path, signer: Signer = KEY_A, **kwargs: Any) -> Session:
    """A session with a few state writes, saved twice with ``signer``: returns it closed."""
    session = Session("order-42", signer=signer, **kwargs)
    async with session:
        await session.set("status", "new")
        await session.set("total", 10)
        await session.save(path)
        await session.set("status", "paid")
        await session.append("clerk", "user_input", {"note": "ok"})
        await session.save(path)
    return session


# -- the format --------------------------------------------------------------------------------


def test_golden_vector_single_checkpoint() -> None:
    text = checkpoint_text("order-42", 17, "ab" * 32, 3, "api-1", "2026-05-09T07:35:25.123456Z")
    assert text == (
        b'kaizen-checkpoint/v1\n"order-42"\n17\n' + b"ab" * 32 + b'\n3\n"api-1"\n'
        b"2026-05-09T07:35:25.123456Z\n"
    )
    assert KEY_A.public_key.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert KEY_A.key_id == hashlib.sha256(KEY_A.public_key).hexdigest()[:16] == "56475aa75463474c"
    assert KEY_A.sign(text).hex() == (
        "acee82cfb18211be076c7112b4ebc5a4831bced4b4b58817a1f0a242e197fdaa"
        "6497edaa7fe4c34009f723cb533d9d7d850d009c7ce9a016f3f018b65ccd790b"
    )
    (alone,) = sign_heads(
        KEY_A.sign,
        KEY_A.key_id,
        [("order-42", 17, "ab" * 32, 3)],
        "api-1",
        time="2026-05-09T07:35:25.123456Z",
    )
    assert alone.signed_message() == text and alone.signature == KEY_A.sign(text)


def test_golden_vector_tree_of_three() -> None:
    heads = [("a", 1, "11" * 32, 0), ("b", 2, "22" * 32, 0), ("c", 3, "33" * 32, 1)]
    stamp = "2026-05-09T07:35:25.000000Z"
    made = sign_heads(KEY_A.sign, KEY_A.key_id, heads, "w", time=stamp)
    leaves = [leaf_hash(checkpoint_text(s, q, h, e, "w", stamp)) for s, q, h, e in heads]
    # RFC 9162 by hand: split at 2, so root = H(1 || H(1 || L0 || L1) || L2)
    node = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    root = hashlib.sha256(b"\x01" + node + leaves[2]).digest()
    assert root == tree_root(leaves)
    assert root.hex() == "421e4eda724f010abdd59d92dd401320f87eef828f6a776c5f94ebeb7ce61989"
    assert {c.signature for c in made} == {KEY_A.sign(tree_head(3, root))}
    assert made[0].signature.hex() == (
        "9427e617b3096606bd5eba4fb9feda6d540d869d791b5048e23b9da94bbe3284"
        "f1a4b656aba925e27d3ec4d6109ab268940062d1eb11f0c5b044fca9dfdf680e"
    )
    assert made[2].tree_path == node  # leaf 2's only sibling is the left subtree
    for c in made:
        assert c.signed_message() == tree_head(3, root)
        assert ring(KEY_A).check(c) is None


def test_every_leaf_of_trees_up_to_33_proves_its_inclusion() -> None:
    for size in range(1, 34):
        heads = [(f"s{i}", i + 1, f"{i:064x}", 0) for i in range(size)]
        made = sign_heads(KEY_A.sign, KEY_A.key_id, heads, "w")
        keys = ring(KEY_A)
        for c in made:
            assert keys.check(c) is None, (size, c.tree_index)
        if size > 1:  # a proof for another index, or a cut path, does not verify
            bad = Checkpoint(**{**_fields(made[0]), "tree_index": size - 1})
            assert keys.check(bad) == "checkpoint_invalid"
            cut = Checkpoint(**{**_fields(made[0]), "tree_path": made[0].tree_path[:-32]})
            assert keys.check(cut) == "checkpoint_invalid"


def _fields(c: Checkpoint) -> dict[str, Any]:
    return {name: getattr(c, name) for name in Checkpoint.__slots__}


def test_ids_with_newlines_are_json_strings_so_texts_never_collide() -> None:
    a = checkpoint_text("x\n1", 2, "ab" * 32, 0, "w", "2026-01-01T00:00:00Z")
    b = checkpoint_text("x", 1, "ab" * 32, 0, "w", "2026-01-01T00:00:00Z")
    assert a.count(b"\n") == b.count(b"\n") == 7 and a != b
    assert b'"x\\n1"' in a


def test_checkpoint_round_trips_as_json_and_refuses_malformed_fields() -> None:
    (c,) = sign_heads(KEY_A.sign, KEY_A.key_id, [("s", 1, "ab" * 32, 0)], "w")
    assert Checkpoint.from_dict(c.to_dict()) == c
    for bad in (
        {"seq": 0},
        {"head_hash": "AB" * 32},
        {"time": "yesterday"},
        {"key_id": "xyz"},
        {"signature": base64.b64encode(b"short").decode()},
        {"epoch": -1},
    ):
        with pytest.raises(KaizenValidationError):
            Checkpoint.from_dict({**c.to_dict(), **bad})


# -- keys --------------------------------------------------------------------------------------


def test_signer_from_encrypted_pem_file_env_and_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519Signer.generate()
    path = tmp_path / "key.pem"
    path.write_bytes(key.private_pem("s3cret"))
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert Ed25519Signer.from_pem_file(path, "s3cret").key_id == key.key_id
    with pytest.raises(KaizenValidationError):
        Ed25519Signer.from_pem_file(path, "wrong")
    with pytest.raises(KaizenValidationError):
        Ed25519Signer.from_pem_file(path)  # no passphrase for an encrypted key
    with pytest.raises(KaizenValidationError):
        Ed25519Signer.from_pem_file(tmp_path / "missing.pem")
    monkeypatch.delenv("KAIZEN_SIGNING_KEY_FILE", raising=False)
    assert Ed25519Signer.from_env() is None
    monkeypatch.setenv("KAIZEN_SIGNING_KEY_FILE", str(path))
    monkeypatch.setenv("KAIZEN_SIGNING_KEY_PASSPHRASE", "s3cret")
    env_key = Ed25519Signer.from_env()
    assert env_key is not None and env_key.key_id == key.key_id
    assert isinstance(key, Signer)
    assert repr(key) == f"Ed25519Signer(key_id={key.key_id!r})"
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_keyring_parses_lines_checks_ids_and_validity(tmp_path: Path) -> None:
    line = KEY_A.keyring_line()
    assert line == f"{KEY_A.key_id} {base64.b64encode(KEY_A.public_key).decode()}"
    text = f"# trusted\n{line}  2026-01-01 2027-01-01\n\n{KEY_B.keyring_line()} # rotated in\n"
    (tmp_path / "ring.txt").write_text(text)
    keys = Keyring.load(tmp_path / "ring.txt")
    assert KEY_A.key_id in keys and KEY_B.key_id in keys and len(keys) == 2
    key_a = keys.get(KEY_A.key_id)
    assert key_a is not None
    assert key_a.valid_at(datetime(2026, 6, 1, tzinfo=UTC))
    assert not key_a.valid_at(datetime(2027, 6, 1, tzinfo=UTC))
    wrong_id = f"{KEY_B.key_id} {base64.b64encode(KEY_A.public_key).decode()}"
    for bad in (wrong_id, "nonsense", f"{KEY_A.key_id} !!!", f"{line} someday"):
        with pytest.raises(KaizenValidationError):
            Keyring.parse(bad)
    with pytest.raises(KaizenValidationError):
        Keyring.load(tmp_path / "missing.txt")


def test_a_signer_whose_key_id_lies_is_refused() -> None:
    class Liar:
        key_id = "0" * 16
        public_key = KEY_A.public_key

        def sign(self, message: bytes) -> bytes:
            return KEY_A.sign(message)

    with pytest.raises(KaizenValidationError):
        Session(signer=Liar())
    with pytest.raises(KaizenValidationError):
        Session(signer="key.pem")  # type: ignore[arg-type]


# -- .kaizen files -----------------------------------------------------------------------------


async def test_unsigned_sessions_save_files_exactly_as_before(tmp_path: Path) -> None:
    async with Session() as session:
        await session.set("k", 1)
        await session.save(tmp_path / "plain.kaizen")
        report = await session.verify()
    conn = sqlite3.connect(tmp_path / "plain.kaizen")
    try:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("SELECT value FROM metadata WHERE key='schema_version'").fetchone()
    finally:
        conn.close()
    assert tables == {"metadata", "trajectory", "state", "blobs"} and version == ("2",)
    assert report == 3 and isinstance(report, int) and report.checkpoints == 0
    assert report.last_signed_seq is None and report.unsigned_tail == 3
    assert "the session has no signed checkpoints" in report.problems


async def test_signed_save_verifies_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    session = await signed_file(path)
    assert [c.seq for c in session.checkpoints] == [4, 7]
    async with Session.load(path, keyring=ring(KEY_A), require_signed=True, max_unsigned_tail=0):
        pass
    async with Session.load(path) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A), all_checkpoints=True)
    assert isinstance(report, VerifyReport) and report == 8  # + session_loaded
    assert report.signatures_checked == 2 and report.last_signed_seq == 7
    assert report.unsigned_tail == 1  # the session_loaded entry, not in the file
    assert report.key_ids == (KEY_A.key_id,) and report.epochs == (0,)
    assert report.rollback_checked is False
    assert any("rollback" in p for p in report.problems)
    assert report.to_dict()["last_signed_seq"] == 7
    # the private key is nowhere in the file
    data = path.read_bytes()
    assert KEY_A.private_pem() not in data
    assert bytes(range(32)) not in data


async def test_rewritten_file_entry_is_accepted_unsigned_but_detected_signed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path)
    rewrite_file_entry(path, 2, "refunded")  # entry 2 set status to "new"
    # what the unkeyed chain says: fine (the file without its checkpoints is what an
    # unsigned file is, and that is all there was before checkpoints)
    bare = tmp_path / "bare.kaizen"
    shutil.copyfile(path, bare)
    conn = sqlite3.connect(bare, isolation_level=None)
    conn.execute("DROP TABLE checkpoints")
    conn.close()
    async with Session.load(bare) as loaded:
        assert await loaded.verify() == 8
        assert await loaded.get("status") == "paid"
    async with Session.load(bare) as loaded:  # the rewritten value is in the history
        assert (await loaded.get_trajectory(entry_types=["state_set"]))[0].content[
            "new_value"
        ] == "refunded"
    with pytest.raises(SessionCorruptedError) as caught:  # stored heads: checked always
        async with Session.load(path):
            pass
    assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A)):
            pass
    assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH
    assert caught.value.seq == 1  # no checkpoint before the rewrite matched: from seq 1


async def test_rewrite_after_a_matching_checkpoint_names_the_first_unsigned_seq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path)
    rewrite_file_entry(path, 5, "stolen")  # entry 5 set status to "paid", after seq 4
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A)):
            pass
    assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH and caught.value.seq == 5


def _resign_file(path: Path, signer: Ed25519Signer) -> None:
    """The attacker replaces the file's checkpoints with ones signed by their own key over
    the (rewritten) chain, and stores that key beside the session."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = conn.execute("SELECT seq, hash FROM trajectory ORDER BY seq").fetchall()
        marks = [seq for (seq,) in conn.execute("SELECT seq FROM checkpoints")]
        conn.execute("DELETE FROM checkpoints")
        for seq in marks:
            (c,) = sign_heads(
                signer.sign, signer.key_id, [("order-42", seq, rows[seq - 1][1], 0)], "attacker"
            )
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    c.seq,
                    c.head_hash,
                    c.epoch,
                    c.writer_id,
                    c.time,
                    c.key_id,
                    c.signature,
                    0,
                    1,
                    b"",
                    c.session_id,
                ),
            )
        conn.execute("CREATE TABLE public_keys (line TEXT)")
        conn.execute("INSERT INTO public_keys VALUES (?)", (signer.keyring_line(),))
    finally:
        conn.close()


async def test_checkpoints_resigned_with_another_key_are_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path)
    rewrite_file_entry(path, 2, "refunded")
    _resign_file(path, KEY_EVIL)
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A)):
            pass
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY and caught.value.seq == 7
    assert caught.value.details["key_id"] == KEY_EVIL.key_id


async def test_a_forged_signature_is_checkpoint_invalid(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE checkpoints SET signature = ? WHERE seq = 7", (b"\x01" * 64,))
    conn.close()
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A)):
            pass
    assert code_of(caught) is ErrorCode.CHECKPOINT_INVALID and caught.value.seq == 7
    # by default only the latest is checked: a forged older one needs all_checkpoints
    path = tmp_path / "older.kaizen"
    await signed_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE checkpoints SET signature = ? WHERE seq = 4", (b"\x01" * 64,))
    conn.close()
    async with Session.load(path, keyring=ring(KEY_A)):
        pass
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A), all_checkpoints=True):
            pass
    assert code_of(caught) is ErrorCode.CHECKPOINT_INVALID and caught.value.seq == 4


async def test_unsigned_entries_after_the_last_checkpoint_are_the_unsigned_tail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path)
    async with Session.load(path) as loaded:  # no signer: saves append unsigned entries
        await loaded.set("status", "shipped")
        await loaded.save(path)
    async with Session.load(path, keyring=ring(KEY_A)) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A))
    assert report.last_signed_seq == 7 and report.unsigned_tail == 4  # 3 in the file + 1
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(
            path, keyring=ring(KEY_A), require_signed=True, max_unsigned_tail=0
        ):
            pass
    assert code_of(caught) is ErrorCode.UNSIGNED_TAIL and caught.value.seq == 8
    async with Session.load(path, keyring=ring(KEY_A), max_unsigned_tail=3):
        pass


async def test_require_signed_refuses_an_unsigned_file(tmp_path: Path) -> None:
    async with Session() as session:
        await session.save(tmp_path / "u.kaizen")
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(tmp_path / "u.kaizen", keyring=ring(KEY_A), require_signed=True):
            pass
    assert code_of(caught) is ErrorCode.UNSIGNED_TAIL and caught.value.seq == 1


async def test_restoring_an_older_copy_is_rollback_detected_with_an_anchor(
    tmp_path: Path,
) -> None:
    path, old, anchors = tmp_path / "s.kaizen", tmp_path / "old.kaizen", tmp_path / "a.jsonl"
    async with Session("order-42", signer=KEY_A, anchor=JsonlAnchor(anchors)) as session:
        await session.set("status", "new")
        await session.save(path)
        shutil.copyfile(path, old)
        await session.set("status", "paid")
        await session.save(path)
    assert [c.seq for c in read_anchors(anchors)[0]] == [3, 5]
    shutil.copyfile(old, path)  # the attacker restores the older, genuinely signed copy
    async with Session.load(path, keyring=ring(KEY_A), require_signed=True) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A))  # signed, but: rolled back?
    assert report.rollback_checked is False
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A), anchors=anchors):
            pass
    assert code_of(caught) is ErrorCode.ROLLBACK_DETECTED and caught.value.seq == 4
    # restored and written on: another head at the anchored seq
    async with Session.load(path, signer=KEY_A) as loaded:
        await loaded.save(path)  # its session_loaded + session_saved take seqs 4 and 5
        with pytest.raises(SessionCorruptedError) as caught:
            await loaded.verify(keyring=ring(KEY_A), anchors=anchors)
    assert code_of(caught) is ErrorCode.ROLLBACK_DETECTED and caught.value.seq == 5


async def test_anchors_report_when_intact_and_flag_equivocation(tmp_path: Path) -> None:
    path, anchors = tmp_path / "s.kaizen", tmp_path / "a.jsonl"
    await signed_file(path, anchor=JsonlAnchor(anchors))
    async with Session.load(path, keyring=ring(KEY_A), anchors=anchors) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A), anchors=JsonlAnchor(anchors))
    assert report.rollback_checked and report.anchored_seq == 7
    assert not any("rollback" in p for p in report.problems)
    # a second, validly signed head for seq 7 (a split brain): equivocation
    (other,) = sign_heads(KEY_A.sign, KEY_A.key_id, [("order-42", 7, "cd" * 32, 0)], "other")
    (bogus,) = sign_heads(KEY_EVIL.sign, KEY_EVIL.key_id, [("order-42", 9, "ef" * 32, 0)], "x")
    _append(anchors, b"not json\n")
    JsonlAnchor(anchors).publish([bogus])  # untrusted key: ignored, noted
    async with Session.load(path, keyring=ring(KEY_A), anchors=anchors) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A), anchors=anchors)
        assert any("ignored" in p for p in report.problems)
        assert any("skipped" in p for p in report.problems)
        JsonlAnchor(anchors).publish([other])
        with pytest.raises(SessionCorruptedError) as caught:
            await loaded.verify(keyring=ring(KEY_A), anchors=anchors)
    assert code_of(caught) is ErrorCode.ROLLBACK_DETECTED and "equivocation" in str(caught.value)


async def test_key_rotation_verifies_with_a_keyring_holding_both(tmp_path: Path) -> None:
    path = tmp_path / "s.kaizen"
    await signed_file(path, signer=KEY_A)
    async with Session.load(path, signer=KEY_B) as loaded:
        await loaded.set("status", "rotated")
        await loaded.save(path)
    async with Session.load(path, keyring=ring(KEY_A, KEY_B), all_checkpoints=True) as loaded:
        report = await loaded.verify(keyring=ring(KEY_A, KEY_B), all_checkpoints=True)
    assert report.key_ids == (KEY_A.key_id, KEY_B.key_id) and report.signatures_checked == 3
    async with Session.load(path, keyring=ring(KEY_B)):  # default: the latest only
        pass
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_B), all_checkpoints=True):
            pass
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY and caught.value.seq == 4
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=ring(KEY_A)):
            pass
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY
    # a key the keyring dates as expired before the checkpoint was made is not trusted
    expired = Keyring.parse(f"{KEY_B.keyring_line()} 2000-01-01 2001-01-01")
    with pytest.raises(SessionCorruptedError) as caught:
        async with Session.load(path, keyring=expired):
            pass
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY


async def test_bad_verify_options_raise_and_change_nothing(tmp_path: Path) -> None:
    async with Session() as session:
        await session.set("k", 1)
        for options in (
            {"require_signed": True},
            {"max_unsigned_tail": 0},
            {"keyring": ring(KEY_A), "max_unsigned_tail": -1},
            {"keyring": 42},
            {"keyring": tmp_path / "missing.txt"},
            {"anchors": tmp_path / "missing.jsonl"},
            {"anchors": [1, 2]},
        ):
            with pytest.raises(KaizenValidationError):
                await session.verify(**options)
        assert await session.get_trajectory_length() == 2
    with pytest.raises(KaizenValidationError):
        async with Session.load(tmp_path / "x.kaizen", require_signed=True):
            pass


async def test_a_failed_signed_save_leaves_session_and_file_unchanged(tmp_path: Path) -> None:
    class Broken:
        key_id = KEY_A.key_id
        public_key = KEY_A.public_key

        def sign(self, message: bytes) -> bytes:
            raise PersistError("the KMS is down")

    async with Session(signer=Broken()) as session:
        await session.set("k", 1)
        with pytest.raises(PersistError):
            await session.save(tmp_path / "s.kaizen")
        assert session.checkpoints == [] and await session.get_trajectory_length() == 2
    assert not (tmp_path / "s.kaizen").exists()


# -- anchors -----------------------------------------------------------------------------------


async def test_anchor_publisher_retries_coalesces_and_is_never_fatal() -> None:
    calls: list[list[int]] = []
    failures = [2]

    class Flaky:
        def publish(self, checkpoints: Any) -> None:
            if failures[0]:
                failures[0] -= 1
                raise OSError("the other host is down")
            calls.append([c.seq for c in checkpoints])

    made = sign_heads(KEY_A.sign, KEY_A.key_id, [("s", n, "ab" * 32, 0) for n in (1,)], "w")
    later = sign_heads(KEY_A.sign, KEY_A.key_id, [("s", 5, "ab" * 32, 0)], "w")
    publisher = AnchorPublisher(Flaky(), interval=0.01, retry_initial=0.001, retry_max=0.002)
    async with anyio.create_task_group() as tg:
        tg.start_soon(publisher.run)
        publisher.offer(made)
        publisher.offer(later)  # newer for the same session and writer: replaces seq 1
        with anyio.fail_after(5):
            while not calls:
                await anyio.sleep(0.001)
        publisher.close()
    assert calls == [[5]] and publisher.failures == 2 and publisher.delivered == 1

    class Dead:
        def publish(self, checkpoints: Any) -> None:
            raise OSError("gone")

    dead = AnchorPublisher(Dead(), interval=0, retry_initial=10, retry_max=10)
    with anyio.fail_after(5):  # a close does not wait out the backoff
        async with anyio.create_task_group() as tg:
            tg.start_soon(dead.run)
            dead.offer(made)
            await anyio.sleep(0.05)
            dead.close()
    assert dead.failures >= 1 and dead.delivered == 0
    with pytest.raises(KaizenValidationError):
        AnchorPublisher(object())  # type: ignore[arg-type]


# -- stores ------------------------------------------------------------------------------------


async def _commit_sets(store: Any, driver: Driver, values: list[Any]) -> None:
    for value in values:
        driver.set("status", value)
        await driver.commit(store)


async def test_sqlite_rewritten_entry_accepted_unsigned_detected_signed(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SQLiteStore(path, signer=KEY_A) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["new", "paid"])
        driver.set("total", 10)
        await driver.commit(store)
    rewrite_store_entry(path, "s", 3, "refunded")  # seq 3 set status to "paid"
    async with SQLiteStore(path) as store:
        # the store kept the session's first checkpoint (seq 1) and its latest (seq 4)
        # the unkeyed chain: the store opens it and its replay verifies to the stored state
        stored = await store.load("s")
        core = SessionCore.replay(await store.read("s"), session_id="s")
        assert core.head == stored.head_hash and core.state == stored.state
        assert core.all_state()["status"] == "refunded"
        with pytest.raises(SessionCorruptedError) as caught:
            await verify_stored(store, "s", keyring=ring(KEY_A))
    assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH and caught.value.seq == 2


async def test_sqlite_checkpoints_resigned_by_another_key_are_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SQLiteStore(path, signer=KEY_A) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["new", "paid"])
    rewrite_store_entry(path, "s", 3, "refunded")
    conn = sqlite3.connect(path, isolation_level=None)  # re-sign the latest with the evil key
    head = conn.execute("SELECT head_seq, head_hash FROM sessions").fetchone()
    (c,) = sign_heads(KEY_EVIL.sign, KEY_EVIL.key_id, [("s", head[0], head[1], 0)], "attacker")
    conn.execute("DELETE FROM checkpoints")
    conn.execute(
        "INSERT INTO checkpoint_trees VALUES (999, ?, ?, ?, ?, ?)",
        (c.key_id, c.writer_id, c.time, c.signature, json.dumps([["s", head[0], head[1], 0]])),
    )
    conn.execute("UPDATE sessions SET checkpoint_tree = 999, checkpoint_index = 0")
    conn.execute("CREATE TABLE public_keys (line TEXT)")
    conn.execute("INSERT INTO public_keys VALUES (?)", (KEY_EVIL.keyring_line(),))
    conn.close()
    async with SQLiteStore(path) as store:
        with pytest.raises(SessionCorruptedError) as caught:
            await verify_stored(store, "s", keyring=ring(KEY_A))
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY and caught.value.seq == 3


async def test_sqlite_unsigned_tail_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SQLiteStore(path, signer=KEY_A) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["new", "paid"])
    async with SQLiteStore(path) as store:  # a writer without its key (or killed before)
        await _commit_sets(store, driver, ["lost", "found"])
        report = await verify_stored(store, "s", keyring=ring(KEY_A))
        assert report.last_signed_seq == 3 and report.unsigned_tail == 2 and report == 5
        with pytest.raises(SessionCorruptedError) as caught:
            await verify_stored(
                store, "s", keyring=ring(KEY_A), require_signed=True, max_unsigned_tail=0
            )
    assert code_of(caught) is ErrorCode.UNSIGNED_TAIL and caught.value.seq == 4


def _signed_store(request: pytest.FixtureRequest, tmp_path: Path, kind: str, **kw: Any) -> Any:
    """A store of ``kind`` with a signer (postgres: a schema of its own on the test server)."""
    if kind == "memory":
        return MemoryStore(signer=KEY_A, **kw)
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "s.db", signer=KEY_A, **kw)
    dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    return PostgresStore(dsn, schema=schema, signer=KEY_A, **kw)


_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("kind", _KINDS)
async def test_store_signs_every_commit_groups_sessions_and_verifies(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    store = _signed_store(request, tmp_path, kind)
    async with store:
        drivers = [await created(store, f"s{i}") for i in range(5)]
        for round_ in range(3):
            async with anyio.create_task_group() as tg:
                for driver in drivers:
                    driver.set("k", round_)
                    tg.start_soon(driver.commit, store)
        for driver in drivers:
            report = await verify_stored(
                store,
                driver.session_id,
                keyring=ring(KEY_A),
                all_checkpoints=True,
                require_signed=True,
                max_unsigned_tail=0,
            )
            assert report.last_signed_seq == 4 and report.writers
        made = await store.read_checkpoints("s0")
        assert made[-1].seq == 4
        if kind != "memory":  # concurrent commits shared one signature
            assert max(c.tree_size for c in made) > 1
        assert await store.checkpoint("s0") is None  # the head is signed already
        assert await store.delete("s1")
        with pytest.raises(Exception):  # noqa: B017 - SessionNotFoundError
            await store.read_checkpoints("s1")


async def test_sqlite_interval_policy_and_explicit_checkpoint(tmp_path: Path) -> None:
    policy = CheckpointPolicy(every_commits=3, writer_id="api-1", history_every=1)
    async with SQLiteStore(tmp_path / "s.db", signer=KEY_A, checkpoints=policy) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, list(range(7)))
        assert [c.seq for c in await store.read_checkpoints("s")] == [1, 4, 7]
        driver.set("status", "last")
        await driver.commit(store)
        report = await verify_stored(store, "s", keyring=ring(KEY_A))
        assert report.unsigned_tail == 2  # seqs 8 and 9: two commits since seq 7
        made = await store.checkpoint("s")  # what a close does
        assert made is not None and made.seq == 9 and made.writer_id == "api-1"
        assert await store.checkpoint("s") is None
        report = await verify_stored(store, "s", keyring=ring(KEY_A), max_unsigned_tail=0)
        assert report.writers == ("api-1",)
    async with SQLiteStore(tmp_path / "s.db") as store:  # default: first and latest kept
        pass
    for bad in (
        {"every_commits": 0},
        {"every_entries": 0},
        {"writer_id": " "},
        {"history_every": 0},
    ):
        with pytest.raises(KaizenValidationError):
            CheckpointPolicy(**bad)


async def test_sqlite_refused_or_failed_commits_leave_no_checkpoint(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db", signer=KEY_A) as store:
        driver = await created(store, "s")
        stale = Driver("s")  # another history of the same session: refused
        stale.set("k", "x")
        with pytest.raises(PersistError) as refused:
            await store.commit(stale.batch())
        assert refused.value.code is ErrorCode.PERSIST_CONFLICT

        def read_only(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA query_only = 1")
            store._writer_hook = None

        store._writer_hook = read_only
        driver.set("k", 1)
        with pytest.raises(PersistError):
            await driver.commit(store)
        assert [c.seq for c in await store.read_checkpoints("s")] == [1]


async def test_sqlite_anchor_receives_checkpoints_off_the_write_path(tmp_path: Path) -> None:
    anchors = tmp_path / "a.jsonl"
    async with SQLiteStore(tmp_path / "s.db", signer=KEY_A, anchor=JsonlAnchor(anchors)) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["a", "b"])
    found, notes = read_anchors(anchors)
    assert notes == [] and found[-1].seq == 3 and found[-1].session_id == "s"
    async with SQLiteStore(tmp_path / "s.db") as store:
        report = await verify_stored(store, "s", keyring=ring(KEY_A), anchors=anchors)
        assert report.anchored_seq == 3 and report.rollback_checked


@pytest.mark.postgres
async def test_postgres_fenced_writer_commits_no_checkpoint(
    postgres_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A writer fenced by a newer epoch has its batch refused by the round statement, and
    the checkpoint signed for it before the statement is neither stored nor anchored; a
    batch of another session in the same statement commits with its checkpoint."""
    anchors = tmp_path / "a.jsonl"
    old_owner = PostgresStore(
        postgres_dsn, schema=pg_schema, signer=KEY_A, anchor=JsonlAnchor(anchors)
    )
    new_owner = PostgresStore(postgres_dsn, schema=pg_schema, signer=KEY_B)
    async with old_owner, new_owner:
        fenced_driver = await created(old_owner, "s")
        other = await created(old_owner, "t")
        first = await old_owner.acquire("s", "hub-a", lease_seconds=30)
        fenced_driver.set("k", "a")
        await old_owner.commit(dataclasses.replace(fenced_driver.batch(), epoch=first.epoch))
        taken = await new_owner.acquire("s", "hub-b", lease_seconds=30, take_over=True)
        assert taken.epoch == first.epoch + 1
        stale = dataclasses.replace(fenced_driver.set("k", "stale").batch(), epoch=first.epoch)
        other.set("k", "fine")
        errors: list[BaseException] = []

        async def commit_stale() -> None:
            try:
                await old_owner.commit(stale)
            except PersistError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:  # one group, likely one statement
            tg.start_soon(commit_stale)
            tg.start_soon(other.commit, old_owner)
        assert [type(e).__name__ for e in errors] == ["SessionFencedError"]
        made = await old_owner.read_checkpoints("s")
        assert [(c.seq, c.epoch, c.key_id) for c in made] == [
            (1, 0, KEY_A.key_id),
            (2, first.epoch, KEY_A.key_id),
        ]
        assert [c.seq for c in await old_owner.read_checkpoints("t")] == [1, 2]
        # the new owner continues from the stored head: its checkpoint carries its epoch
        resumed = Driver("s")
        resumed.core = SessionCore.replay(await new_owner.read("s"), session_id="s")
        resumed.cut = len(resumed.core.records)
        resumed.set("k", "b")
        await new_owner.commit(dataclasses.replace(resumed.batch(), epoch=taken.epoch))
        latest = (await new_owner.read_checkpoints("s", since_seq=2))[-1]
        assert (latest.seq, latest.epoch, latest.key_id) == (3, taken.epoch, KEY_B.key_id)
        for sid in ("s", "t"):
            report = await verify_stored(
                new_owner, sid, keyring=ring(KEY_A, KEY_B), require_signed=True
            )
            assert report.unsigned_tail == 0
    found, notes = read_anchors(anchors)  # the refused head was never offered to the anchor
    assert notes == []
    assert sorted((c.session_id, c.seq) for c in found if c.session_id == "s") == [
        ("s", 1),
        ("s", 2),
    ]


@pytest.mark.postgres
async def test_postgres_explicit_checkpoint_and_interval_policy(
    postgres_dsn: str, pg_schema: str
) -> None:
    policy = CheckpointPolicy(every_commits=3, writer_id="api-1")
    async with PostgresStore(
        postgres_dsn, schema=pg_schema, signer=KEY_A, checkpoints=policy
    ) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["a", "b", "c", "d"])
        assert [c.seq for c in await store.read_checkpoints("s")] == [1, 4]
        made = await store.checkpoint("s")
        assert made is not None and made.seq == 5 and made.writer_id == "api-1"
        assert await store.checkpoint("s") is None
        assert [c.seq for c in await store.read_checkpoints("s", since_seq=1)] == [4, 5]
        report = await verify_stored(
            store,
            "s",
            keyring=ring(KEY_A),
            all_checkpoints=True,
            max_unsigned_tail=0,
            require_signed=True,
        )
        assert report.last_signed_seq == 5
    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:  # no signer: none
        assert await store.checkpoint("s") is None
        await _commit_sets(store, driver, ["e"])
        assert [c.seq for c in await store.read_checkpoints("s")] == [1, 4, 5]


_WRITER = """
import sys, anyio
from kaizen_async._state import SessionCore
from kaizen_async.signing import CheckpointPolicy, Ed25519Signer
from kaizen_async.stores import Batch, SQLiteStore

async def main(path, seed, writer):
    key = Ed25519Signer.from_private_bytes(bytes.fromhex(seed))
    async with SQLiteStore(path, signer=key, checkpoints=CheckpointPolicy(writer_id=writer)) as s:
        stored = await s.load("shared", tail=1_000)
        core = SessionCore.replay(await s.read("shared"), session_id="shared")
        for i in range(3):
            n = len(core.records)
            core.set("by", f"{writer}-{i}")
            await s.commit(Batch("shared", n, core.records[n:], core.version,
                                 {"by": core.state["by"]}))

anyio.run(main, *sys.argv[1:])
"""


async def test_two_processes_with_different_keys_on_one_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path, signer=KEY_A) as store:
        await created(store, "shared")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key, writer in ((KEY_A, "proc-a"), (KEY_B, "proc-b")):
        seed = bytes(range(32)) if key is KEY_A else bytes(range(32, 64))
        result = await anyio.run_process(
            [sys.executable, "-c", _WRITER, str(path), seed.hex(), writer], env=env, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
    async with SQLiteStore(path) as store:
        report = await verify_stored(
            store,
            "shared",
            keyring=ring(KEY_A, KEY_B),
            all_checkpoints=True,
            max_unsigned_tail=0,
        )
    assert report == 7 and report.last_signed_seq == 7
    assert {"proc-a", "proc-b"} <= set(report.writers)
    assert set(report.key_ids) == {KEY_A.key_id, KEY_B.key_id}


# -- the checker on its own ----------------------------------------------------------------------


def test_a_checkpoint_beyond_the_end_is_truncation() -> None:
    (c,) = sign_heads(KEY_A.sign, KEY_A.key_id, [("s", 9, "ab" * 32, 0)], "w")
    with pytest.raises(SessionCorruptedError) as caught:
        check_checkpoints("s", 5, lambda seq: "ab" * 32, [c], verify_options(ring(KEY_A)))
    assert code_of(caught) is ErrorCode.ROLLBACK_DETECTED and caught.value.seq == 6
    (other,) = sign_heads(KEY_A.sign, KEY_A.key_id, [("t", 1, "ab" * 32, 0)], "w")
    with pytest.raises(SessionCorruptedError) as caught:
        check_checkpoints("s", 5, lambda seq: "ab" * 32, [other], verify_options(ring(KEY_A)))
    assert code_of(caught) is ErrorCode.CHECKPOINT_INVALID


def test_verify_report_is_the_entry_count_and_pickles() -> None:
    report = check_checkpoints("s", 3, lambda seq: "ab" * 32, [], verify_options())
    assert report == 3 and report + 1 == 4 and report.entries == 3 and str(report) == "3"
    again = pickle.loads(pickle.dumps(report))
    assert again == 3 and again.to_dict() == report.to_dict()
    assert key_id_of(KEY_A.public_key) == KEY_A.key_id


def test_readme_tamper_evidence_example_runs_as_written(tmp_path: Path) -> None:
    from test_readme import ENV, _examples

    done = subprocess.run(
        [sys.executable, "-c", _examples()["tamper evidence"]],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # created, set, saved, loaded; signed up to the save; the loaded entry is the tail
    assert done.stdout.split() == ["4", "3", "1", "True"]
    assert [c.seq for c in read_anchors(tmp_path / "anchors.jsonl")[0]] == [3]


def test_blocking_facade_verify_takes_the_same_options(tmp_path: Path) -> None:
    import kaizen_async.sync

    path = tmp_path / "s.kaizen"
    anyio.run(signed_file, path)
    loaded = kaizen_async.sync.Session.load(path)
    report = loaded.verify(keyring=ring(KEY_A), all_checkpoints=True)
    assert report == 8 and report.last_signed_seq == 7 and report.signatures_checked == 2
    with pytest.raises(SessionCorruptedError) as caught:
        loaded.verify(keyring=ring(KEY_B))
    assert code_of(caught) is ErrorCode.UNKNOWN_KEY


async def test_a_head_signed_by_a_retired_and_a_new_key_verifies_with_the_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SQLiteStore(path, signer=KEY_A) as store:
        driver = await created(store, "s")
        await _commit_sets(store, driver, ["a"])
    async with SQLiteStore(path, signer=KEY_B) as store:
        made = await store.checkpoint("s")  # the new key signs the same head again
        assert made is not None and made.seq == 2 and made.key_id == KEY_B.key_id
        assert await store.checkpoint("s") is None
        report = await verify_stored(store, "s", keyring=ring(KEY_B), max_unsigned_tail=0)
        assert report.last_signed_seq == 2 and report.signatures_checked == 1
        with pytest.raises(SessionCorruptedError) as caught:
            await verify_stored(store, "s", keyring=ring(KEY_B), all_checkpoints=True)
        assert code_of(caught) is ErrorCode.UNKNOWN_KEY
        with pytest.raises(SessionCorruptedError) as caught:
            await verify_stored(store, "s", keyring=ring(KEY_EVIL))
        assert code_of(caught) is ErrorCode.UNKNOWN_KEY


def test_a_writers_per_session_counters_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from kaizen_async import _checkpointing

    monkeypatch.setattr(_checkpointing, "_MAX_TRACKED", 3)
    signer = _checkpointing.Checkpointer(KEY_A, CheckpointPolicy(every_commits=2))
    for i in range(10):
        heads = [(f"s{i}", 1, "ab" * 32, 0)]
        signer.history(heads, 1, True, (), ())
        signer.committed([(f"s{i}", 1, "ab" * 32, 0, 1)], [])
    assert len(signer._made) <= 4 and len(signer._unsigned) <= 4


# -- store-backed sessions (SessionHub) ----------------------------------------------------------


async def test_hub_sessions_sign_at_close_and_verify_through_the_hub(tmp_path: Path) -> None:
    from kaizen_async import SessionHub

    path = tmp_path / "s.db"
    rarely = CheckpointPolicy(every_commits=1000)  # only the close signs
    async with SessionHub(SQLiteStore(path, signer=KEY_A, checkpoints=rarely)) as hub:
        sid = await hub.create("order-42")
        async with hub.open(sid) as session:
            await session.set("status", "new")
            await session.set("status", "paid")
            report = await session.verify(keyring=ring(KEY_A))
            assert report.last_signed_seq == 1 and report.unsigned_tail == 2  # created only
            await session.save(tmp_path / "export.kaizen")  # exports the store's checkpoints
    async with SQLiteStore(path) as store:  # the hub's close signed the last seq
        report = await verify_stored(store, sid, keyring=ring(KEY_A), max_unsigned_tail=0)
        assert report.last_signed_seq == 4  # session_saved is seq 4
    async with Session.load(tmp_path / "export.kaizen", keyring=ring(KEY_A)) as loaded:
        assert [c.seq for c in loaded.checkpoints] == [1]
    rewrite_store_entry(path, sid, 3, "refunded")
    async with SessionHub(SQLiteStore(path)) as hub:
        async with hub.open(sid) as session:  # an open without options reads no history
            assert await session.get("status") == "refunded"
        with pytest.raises(SessionCorruptedError) as caught:
            async with hub.open(sid, keyring=ring(KEY_A)):
                pass
        assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH
        with pytest.raises(SessionCorruptedError) as caught:
            async with hub.open(sid, keyring=ring(KEY_B)):
                pass
        assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH  # heads first
        assert hub.statistics().leased == 0  # the failed opens gave their leases back


async def test_hub_open_requires_signed_and_checks_rotation(tmp_path: Path) -> None:
    from kaizen_async import SessionHub

    path = tmp_path / "s.db"
    async with SessionHub(SQLiteStore(path, signer=KEY_A)) as hub:
        sid = await hub.create("s")
        async with hub.open(sid) as session:
            await session.set("k", 1)
    async with SessionHub(SQLiteStore(path)) as hub:  # a writer without the key
        async with hub.open(sid, keyring=ring(KEY_A), max_unsigned_tail=0) as session:
            await session.set("k", 2)
        with pytest.raises(SessionCorruptedError) as caught:
            async with hub.open(sid, keyring=ring(KEY_A), require_signed=True, max_unsigned_tail=0):
                pass
        assert code_of(caught) is ErrorCode.UNSIGNED_TAIL
    async with SessionHub(SQLiteStore(path, signer=KEY_B)) as hub:  # rotated in: closes sign
        async with hub.open(sid) as session:
            await session.set("k", 3)
        async with hub.open(
            sid, keyring=ring(KEY_A, KEY_B), all_checkpoints=True, max_unsigned_tail=0
        ) as session:
            report = await session.verify(keyring=ring(KEY_A, KEY_B), all_checkpoints=True)
    assert set(report.key_ids) == {KEY_A.key_id, KEY_B.key_id} and report.unsigned_tail == 0


async def test_import_file_refuses_a_file_whose_checkpoints_do_not_match(tmp_path: Path) -> None:
    from kaizen_async import SessionHub

    path = tmp_path / "s.kaizen"
    await signed_file(path)
    rewrite_file_entry(path, 2, "refunded")
    async with SessionHub(SQLiteStore(tmp_path / "s.db", signer=KEY_A)) as hub:
        with pytest.raises(SessionCorruptedError) as caught:
            await hub.import_file(path)
        assert code_of(caught) is ErrorCode.CHECKPOINT_HEAD_MISMATCH
        assert await hub.list_sessions() == []
