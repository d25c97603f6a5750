"""Signed checkpoints: tamper evidence that holds against whoever can rewrite the storage.

A session's hash chain is unkeyed: rewrite an entry, recompute every later hash and the
stored state, and the chain verifies again. A *checkpoint* signs the chain's head with an
Ed25519 key; a verifier holding only the public key (in its own :class:`Keyring`) then
detects any rewrite of what the checkpoint covers, and an *anchor* (checkpoints copied to
another host) detects rollback and truncation::

    from kaizen_async import Session
    from kaizen_async.signing import Ed25519Signer, JsonlAnchor, Keyring

    signer = Ed25519Signer.from_pem_file("key.pem")          # or from_env(), or a KMS
    async with Session(signer=signer, anchor=JsonlAnchor("/mnt/anchors.jsonl")) as s:
        await s.set("status", "paid")
        await s.save("order.kaizen")                             # signed checkpoint

    async with Session.load("order.kaizen") as s:
        report = await s.verify(keyring=Keyring.load("keyring.txt"),
                                anchors="/mnt/anchors.jsonl")
        report.last_signed_seq, report.unsigned_tail, report.problems

Stores sign at their commits: ``SQLiteStore(path, signer=signer)`` (see
:class:`CheckpointPolicy`). ``cryptography`` is needed (``pip install
"kaizen-async[signing]"``) to sign with :class:`Ed25519Signer` and to check signatures.
"""

from __future__ import annotations

from ._anchors import AnchorPublisher as AnchorPublisher
from ._anchors import AnchorSink as AnchorSink
from ._anchors import JsonlAnchor as JsonlAnchor
from ._anchors import read_anchors as read_anchors
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import checkpoint_text as checkpoint_text
from ._checkpoint import key_id_of as key_id_of
from ._checkpointing import CheckpointPolicy as CheckpointPolicy
from ._keys import ENV_KEY_FILE as ENV_KEY_FILE
from ._keys import ENV_KEY_PASSPHRASE as ENV_KEY_PASSPHRASE
from ._keys import Ed25519Signer as Ed25519Signer
from ._keys import Keyring as Keyring
from ._keys import Signer as Signer
from ._keys import TrustedKey as TrustedKey
from ._verification import VerifyReport as VerifyReport

__all__ = [
    "ENV_KEY_FILE",
    "ENV_KEY_PASSPHRASE",
    "AnchorPublisher",
    "AnchorSink",
    "Checkpoint",
    "CheckpointPolicy",
    "Ed25519Signer",
    "JsonlAnchor",
    "Keyring",
    "Signer",
    "TrustedKey",
    "VerifyReport",
    "checkpoint_text",
    "key_id_of",
    "read_anchors",
]
