"""``kaizen keygen`` and the checkpoint options of ``kaizen verify``, through the installed
script (see test_cli.py), with the exit codes verifiers rely on: 0 verified, 1 tampered or
invalid, 2 unverifiable, 3 usage or I/O error."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import anyio
from signing_helpers import KEY_A, KEY_B, rewrite_file_entry, ring
from test_cli import kaizen

from kaizen_async import Session
from kaizen_async._state import SessionCore
from kaizen_async.signing import Ed25519Signer, JsonlAnchor, Keyring
from kaizen_async.stores import Batch, SQLiteStore


def _keyring(path: Path, *keys: Ed25519Signer) -> Path:
    path.write_text("\n".join(key.keyring_line() for key in keys) + "\n")
    return path


async def _signed(path: Path, anchors: Path | None = None, old: Path | None = None) -> None:
    anchor = None if anchors is None else JsonlAnchor(anchors)
    async with Session("order-42", signer=KEY_A, anchor=anchor) as session:
        await session.set("status", "new")
        await session.save(path)
        if old is not None:
            shutil.copyfile(path, old)
        await session.set("status", "paid")
        await session.save(path)


def test_keygen_writes_a_private_key_and_prints_its_keyring_line(tmp_path: Path) -> None:
    out = tmp_path / "key.pem"
    done = kaizen("keygen", "--out", out)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    signer = Ed25519Signer.from_pem_file(out)
    assert done.stdout.strip() == signer.keyring_line()
    assert Keyring.parse(done.stdout).get(signer.key_id) is not None
    assert "PRIVATE" not in done.stdout + done.stderr
    again = kaizen("keygen", "--out", out)
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert Ed25519Signer.from_pem_file(out).key_id == signer.key_id


def test_keygen_encrypts_with_the_passphrase_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "key.pem"
    os.environ["KAIZEN_SIGNING_KEY_PASSPHRASE"] = "s3cret"
    try:
        done = kaizen("keygen", "--out", out, "--encrypt")
    finally:
        del os.environ["KAIZEN_SIGNING_KEY_PASSPHRASE"]
    assert done.returncode == 0, done.stderr
    assert b"ENCRYPTED PRIVATE KEY" in out.read_bytes()
    assert Ed25519Signer.from_pem_file(out, "s3cret").keyring_line() == done.stdout.strip()


def test_verify_signed_file_and_its_exit_codes(tmp_path: Path) -> None:
    path, anchors, old = tmp_path / "s.kaizen", tmp_path / "a.jsonl", tmp_path / "old.kaizen"
    anyio.run(_signed, path, anchors, old)
    keys = _keyring(tmp_path / "ring.txt", KEY_A)
    ok = kaizen("verify", path, "--keyring", keys, "--anchors", anchors, "--max-unsigned-tail", "0")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signed: up to seq 5" in ok.stdout and "anchors: consistent" in ok.stdout
    report = json.loads(kaizen("verify", path, "--keyring", keys, "--json").stdout)
    assert report["ok"] is True and report["last_signed_seq"] == 5
    assert report["unsigned_tail"] == 0 and report["key_ids"] == [KEY_A.key_id]
    assert report["rollback_checked"] is False
    # 1: rolled back (the older, genuinely signed copy restored)
    shutil.copyfile(old, tmp_path / "restored.kaizen")
    back = kaizen("verify", tmp_path / "restored.kaizen", "--keyring", keys, "--anchors", anchors)
    assert back.returncode == 1 and "rollback_detected" in back.stdout
    # 1: an entry rewritten and every hash recomputed
    rewritten = tmp_path / "rewritten.kaizen"
    shutil.copyfile(path, rewritten)
    rewrite_file_entry(rewritten, 2, "refunded")
    bad = json.loads(kaizen("verify", rewritten, "--keyring", keys, "--json").stdout)
    assert bad["ok"] is False and bad["code"] == "checkpoint_head_mismatch"
    assert kaizen("verify", rewritten).returncode == 1
    # 2: signed by a key the keyring does not hold
    other = _keyring(tmp_path / "other.txt", KEY_B)
    unknown = kaizen("verify", path, "--keyring", other)
    assert unknown.returncode == 2 and "unknown_key" in unknown.stdout
    # 3: usage and I/O errors
    assert kaizen("verify", path, "--keyring", tmp_path / "missing.txt").returncode == 3
    assert kaizen("verify", path, "--max-unsigned-tail", "-1").returncode == 3
    assert kaizen("verify", path, "--max-unsigned-tail", "0").returncode == 3  # no keyring
    assert kaizen("verify", tmp_path / "missing.kaizen").returncode == 3
    assert kaizen("verify", path, "--anchors", tmp_path / "none.jsonl").returncode == 3


async def _store_with_unsigned_tail(path: Path) -> None:
    core = SessionCore("s")
    async with SQLiteStore(path, signer=KEY_A) as store:
        await store.create(
            Batch("s", 0, list(core.records), 0), max_artifact_size=1 << 20, workspace_path=None
        )
        for value in ("a", "b"):
            n = len(core.records)
            core.set("k", value)
            await store.commit(
                Batch("s", n, core.records[n:], core.version, {"k": core.state["k"]})
            )
    async with SQLiteStore(path) as store:  # a writer without the key: an unsigned tail
        n = len(core.records)
        core.set("k", "c")
        await store.commit(Batch("s", n, core.records[n:], core.version, {"k": core.state["k"]}))


def test_verify_store_session_unsigned_tail(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    anyio.run(_store_with_unsigned_tail, db)
    keys = _keyring(tmp_path / "ring.txt", KEY_A, KEY_B)
    url = f"sqlite:///{db}"
    done = kaizen("verify", url, "s", "--keyring", keys, "--all-checkpoints", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["last_signed_seq"] == 3 and report["unsigned_tail"] == 1
    strict = kaizen("verify", url, "s", "--keyring", keys, "--max-unsigned-tail", "0")
    assert strict.returncode == 2 and "unsigned_tail" in strict.stdout
    assert ring(KEY_A).get(KEY_A.key_id) is not None
