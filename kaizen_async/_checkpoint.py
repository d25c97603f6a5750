"""Signed checkpoints of a session's hash chain: the text that is signed, and how.

A checkpoint says "session S had head H at seq N", signed by a writer. Its canonical text
(UTF-8, every line ending in ``\\n``) is::

    kaizen-checkpoint/v1
    "<session id as a JSON string>"
    <last seq covered>
    <head hash at that seq, 64 lowercase hex>
    <writer's fencing epoch, 0 for a file session>
    "<writer id as a JSON string>"
    <time, RFC 3339 UTC, e.g. 2026-05-09T07:35:25.123456Z>

The two free-text fields are JSON strings (``json.dumps(text, ensure_ascii=False)``), so
a newline in an id can never make two different checkpoints read alike.

The signature is Ed25519 over exactly those bytes when the checkpoint was signed alone
(``tree_size`` 1: a file save, a close, a transaction that held one session). A store
transaction that commits the batches of several sessions signs them together: the
checkpoint texts are the leaves of a Merkle tree (RFC 9162: leaf ``SHA-256(0x00 || text)``,
node ``SHA-256(0x01 || left || right)``) and the signature is over the tree head::

    kaizen-checkpoint-tree/v1
    <number of leaves>
    <root hash, 64 lowercase hex>

Each checkpoint then carries its leaf index, the tree size and its audit path, so it is
checked on its own: one signature per transaction instead of one per session (Ed25519
signs in ~20 µs, about what a whole durable ``set`` costs at 64 callers).

The key id is the first 8 bytes, hex, of SHA-256 of the raw 32-byte public key. Nothing
here needs ``cryptography``; signing and checking signatures live in :mod:`._keys`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ._exceptions import KaizenValidationError

__all__ = [
    "DOMAIN",
    "TREE_DOMAIN",
    "Checkpoint",
    "checkpoint_text",
    "default_writer_id",
    "key_id_of",
    "leaf_hash",
    "proof_from_leaves",
    "sign_heads",
    "sign_texts",
    "timestamp",
    "tree_checkpoints",
    "tree_root",
]

DOMAIN = b"kaizen-checkpoint/v1"
TREE_DOMAIN = b"kaizen-checkpoint-tree/v1"
_TEXT = b"kaizen-checkpoint/v1\n%b\n%d\n%b\n%d\n%b\n%b\n"
_TREE = b"kaizen-checkpoint-tree/v1\n%d\n%b\n"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
_sha256 = hashlib.sha256
_dumps = orjson.dumps


def key_id_of(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: SHA-256's first 8 bytes, hex."""
    return _sha256(public_key).hexdigest()[:16]


def timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: what a checkpoint's time line holds."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_writer_id() -> str:
    """``host:pid`` of this process: who signed, when no writer id is configured."""
    return f"{socket.gethostname()}:{os.getpid()}"


def checkpoint_text(
    session_id: str, seq: int, head_hash: str, epoch: int, writer_id: str, time: str
) -> bytes:
    """The canonical bytes of a checkpoint (module docstring); the fields are trusted."""
    return _TEXT % (
        _dumps(session_id),
        seq,
        head_hash.encode(),
        epoch,
        _dumps(writer_id),
        time.encode(),
    )


# -- Merkle trees (RFC 9162 section 2.1) -------------------------------------------------------


def leaf_hash(text: bytes) -> bytes:
    """A checkpoint text's Merkle leaf hash."""
    return _sha256(b"\x00" + text).digest()


_leaf = leaf_hash


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_and_paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The tree's root and every leaf's audit path (siblings from the leaf upwards)."""
    n = len(leaves)
    if n == 1:
        return leaves[0], [[]]
    k = _split(n)
    left, left_paths = _root_and_paths(leaves[:k])
    right, right_paths = _root_and_paths(leaves[k:])
    for path in left_paths:
        path.append(right)
    for path in right_paths:
        path.append(left)
    return _node(left, right), left_paths + right_paths


def _root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2), or None if malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            node = _node(node, sibling)
        fn >>= 1
        sn >>= 1
    return node if sn == 0 else None


def proof_from_leaves(leaves: Sequence[bytes], index: int) -> bytes:
    """Leaf ``index``'s audit path in the tree of ``leaves`` (concatenated hashes)."""
    return b"".join(_root_and_paths(list(leaves))[1][index])


def tree_head(size: int, root: bytes) -> bytes:
    """The bytes signed for a tree of ``size`` checkpoints."""
    return _TREE % (size, root.hex().encode())


# -- the checkpoint --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint (see the module docstring for what is signed).

    ``tree_index``/``tree_size``/``tree_path`` place it in the tree its signature covers
    (size 1, empty path: signed alone). ``signature`` is the raw 64-byte Ed25519 signature.
    """

    session_id: str
    seq: int
    head_hash: str
    epoch: int
    writer_id: str
    time: str
    key_id: str
    signature: bytes = field(repr=False)
    tree_index: int = 0
    tree_size: int = 1
    tree_path: bytes = field(default=b"", repr=False)

    def text(self) -> bytes:
        """The canonical checkpoint bytes."""
        return checkpoint_text(
            self.session_id, self.seq, self.head_hash, self.epoch, self.writer_id, self.time
        )

    def signed_message(self) -> bytes | None:
        """What the signature covers: the text itself, or the head of its tree (None when
        the tree proof is malformed)."""
        text = self.text()
        if self.tree_size == 1 and not self.tree_path:
            return text
        path = self.tree_path
        if len(path) % 32:
            return None
        root = _root_from_path(
            _leaf(text),
            self.tree_index,
            self.tree_size,
            [path[i : i + 32] for i in range(0, len(path), 32)],
        )
        return None if root is None else tree_head(self.tree_size, root)

    def when(self) -> datetime:
        """The checkpoint's time as an aware datetime."""
        return datetime.fromisoformat(self.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (signature base64, tree path hex): the anchor-file line."""
        data: dict[str, Any] = {
            "v": 1,
            "session_id": self.session_id,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "epoch": self.epoch,
            "writer_id": self.writer_id,
            "time": self.time,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode(),
        }
        if self.tree_size != 1 or self.tree_path:
            data["tree"] = {
                "index": self.tree_index,
                "size": self.tree_size,
                "path": self.tree_path.hex(),
            }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """The inverse of :meth:`to_dict`; :class:`KaizenValidationError` if malformed."""
        try:
            tree = data.get("tree") or {}
            checkpoint = cls(
                session_id=data["session_id"],
                seq=data["seq"],
                head_hash=data["head_hash"],
                epoch=data["epoch"],
                writer_id=data["writer_id"],
                time=data["time"],
                key_id=data["key_id"],
                signature=base64.b64decode(data["signature"], validate=True),
                tree_index=tree.get("index", 0),
                tree_size=tree.get("size", 1),
                tree_path=bytes.fromhex(tree.get("path", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KaizenValidationError(f"malformed checkpoint: {exc!r}") from None
        return checkpoint.checked()

    def checked(self) -> Checkpoint:
        """This checkpoint if every field has its type and form, else
        :class:`KaizenValidationError` (for data read from a file, store or anchor)."""
        problem = _problem(self)
        if problem is not None:
            raise KaizenValidationError(f"malformed checkpoint: {problem}")
        return self


def _is_int(value: object, minimum: int) -> bool:
    return type(value) is int and value >= minimum


def _problem(c: Checkpoint) -> str | None:
    if type(c.session_id) is not str or not c.session_id.strip():
        return "session_id is not a non-blank str"
    if not _is_int(c.seq, 1):
        return f"seq {c.seq!r} is not an int >= 1"
    if type(c.head_hash) is not str or not _HEX64.fullmatch(c.head_hash):
        return "head_hash is not 64 lowercase hex digits"
    if not _is_int(c.epoch, 0):
        return f"epoch {c.epoch!r} is not an int >= 0"
    if type(c.writer_id) is not str or not c.writer_id.strip():
        return "writer_id is not a non-blank str"
    if type(c.time) is not str or not _TIME.fullmatch(c.time):
        return f"time {c.time!r} is not RFC 3339"
    try:
        datetime.fromisoformat(c.time)
    except ValueError:
        return f"time {c.time!r} is not a valid date"
    if type(c.key_id) is not str or not _KEY_ID.fullmatch(c.key_id):
        return "key_id is not 16 lowercase hex digits"
    if type(c.signature) is not bytes or len(c.signature) != 64:
        return "signature is not 64 bytes"
    if not _is_int(c.tree_size, 1) or not _is_int(c.tree_index, 0):
        return "tree size/index are not ints"
    if c.tree_index >= c.tree_size or type(c.tree_path) is not bytes or len(c.tree_path) % 32:
        return "tree proof is malformed"
    try:
        c.session_id.encode()
        c.writer_id.encode()
    except UnicodeEncodeError:
        return "an id is not valid UTF-8"
    return None


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of ``leaves`` (RFC 9162; level by level, an odd last node moves up
    unchanged, which builds the same tree as splitting at the largest power of two)."""
    level = list(leaves)
    sha256 = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(level[::2], level[1::2], strict=False)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def sign_texts(sign: Callable[[bytes], bytes], texts: Sequence[bytes]) -> tuple[list[bytes], bytes]:
    """Sign checkpoint texts with one signature: the leaf hashes and the signature (over
    the text itself for one checkpoint, over the tree head for several)."""
    if len(texts) == 1:
        return [leaf_hash(texts[0])], sign(texts[0])
    leaves = [leaf_hash(text) for text in texts]
    return leaves, sign(tree_head(len(leaves), tree_root(leaves)))


def tree_checkpoints(
    heads: Sequence[tuple[str, int, str, int]],
    writer_id: str,
    time: str,
    key_id: str,
    signature: bytes,
    leaves: Sequence[bytes],
) -> list[Checkpoint]:
    """The checkpoints of one signed tree (``heads`` in leaf order), audit paths included."""
    size = len(heads)
    if size == 1:
        sid, seq, head, epoch = heads[0]
        return [Checkpoint(sid, seq, head, epoch, writer_id, time, key_id, signature)]
    _, paths = _root_and_paths(list(leaves))
    return [
        Checkpoint(
            sid, seq, head, epoch, writer_id, time, key_id, signature, index, size, b"".join(path)
        )
        for index, ((sid, seq, head, epoch), path) in enumerate(zip(heads, paths, strict=True))
    ]


def sign_heads(
    sign: Callable[[bytes], bytes],
    key_id: str,
    heads: Sequence[tuple[str, int, str, int]],
    writer_id: str,
    *,
    time: str | None = None,
    tree: bool = True,
) -> list[Checkpoint]:
    """Checkpoints of ``heads`` (session id, seq, head hash, epoch), signed by ``sign``.

    With ``tree`` (and more than one head) one signature covers them all (module
    docstring); otherwise each is signed alone. ``time`` defaults to now.
    """
    if not heads:
        return []
    stamp = time or timestamp()
    texts = [checkpoint_text(sid, seq, head, ep, writer_id, stamp) for sid, seq, head, ep in heads]
    if not tree:
        return [
            Checkpoint(sid, seq, head, epoch, writer_id, stamp, key_id, sign(text))
            for (sid, seq, head, epoch), text in zip(heads, texts, strict=True)
        ]
    leaves, signature = sign_texts(sign, texts)
    return tree_checkpoints(heads, writer_id, stamp, key_id, signature, leaves)
