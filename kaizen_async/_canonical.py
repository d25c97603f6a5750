"""Canonical JSON: the one encoding that state values, entry contents and hashes use.

Canonical means orjson with sorted keys and no whitespace, UTF-8, non-ASCII kept as is.
Only JSON values are accepted (dict with str keys, list/tuple, str, int within 64 bits,
finite float, bool, None, each exactly that type); anything else (a UUID, an enum member, a
datetime, a dataclass, a numpy number, a subclass, ``orjson.Fragment``) raises
:class:`KaizenValidationError` before any state changes, and so does text that is not valid
UTF-8 (a lone surrogate such as ``"\ud800"``), in a value or in a key, name or agent id
(:func:`check_text`). Because a value is encoded exactly once on its way in, the same bytes
serve as the stored copy, the hashed form and the saved form: no second encoding on the hot
path.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, NoReturn

import orjson

from ._exceptions import KaizenValidationError

__all__ = [
    "ENTRY_TEMPLATE",
    "ZERO_HASH",
    "check_json",
    "check_text",
    "decode",
    "encode",
    "entry_bytes",
    "entry_hash",
    "sha256_hex",
]

#: ``prev_hash`` of entry 1.
ZERO_HASH = "0" * 64
#: an entry's canonical JSON without its hash: sorted keys, JSON-encoded agent id and type,
#: the already canonical content, then prev_hash, seq and timestamp
ENTRY_TEMPLATE = (
    b'{"agent_id":%b,"content":%b,"entry_type":%b,"prev_hash":"%b","seq":%d,"timestamp":"%b"}'
)

_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_dumps = orjson.dumps
_join = b"".join
decode = orjson.loads
_sha256 = hashlib.sha256


#: the exact types of the JSON scalars that need no check once orjson took them
#: (subclasses such as enum members are not JSON values; a float may be NaN or infinite)
_SAFE = frozenset({str, int, bool, type(None)})
_all_safe = _SAFE.issuperset
_isfinite = math.isfinite


def _check_plain(value: Any, what: str) -> None:
    """Refuse what orjson writes but is not a JSON value: a ``uuid.UUID`` (it would come
    back as a str), an enum member (as its value), an ``orjson.Fragment`` (raw bytes,
    unchecked) and a NaN or infinite float (written as null: a silent change). The other
    non-JSON types orjson already refuses (see ``_OPTIONS``). Runs after a successful
    encoding, so nesting is bounded by orjson's own limit; a container of strings, ints,
    bools and None is one C-level check."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        if not _isfinite(value):
            raise KaizenValidationError(f"{what} is not JSON: {value!r} is not a finite number")
        return
    elif kind in _SAFE:
        return
    else:
        name = f"{kind.__module__}.{kind.__qualname__}"
        raise KaizenValidationError(
            f"{what} is not JSON: {value!r:.80} is a {name}, not a JSON value "
            "(dict, list, tuple, str, int, float, bool or None); convert it first"
        )
    if not _all_safe(map(type, items)):
        for item in items:
            if type(item) not in _SAFE:
                _check_plain(item, what)


def _reject(obj: object) -> NoReturn:
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def check_json(value: Any, what: str = "value") -> bytes:
    """:func:`encode` for a value that is only checked, not kept: returns orjson's own
    output (no exact-size copy), for a use that ends soon."""
    try:
        data = _dumps(value, default=_reject, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise KaizenValidationError(f"{what} is not JSON-serializable: {exc}") from None
    if type(value) not in _SAFE:
        _check_plain(value, what)
    return data


def encode(value: Any, what: str = "value") -> bytes:
    """Encode one JSON value canonically, or raise :class:`KaizenValidationError`.

    The result is an exact-size copy: orjson's own output keeps its whole working buffer
    (4 KiB for a tiny value, several times the length of a large one), and these bytes are
    kept for the life of the session (entry contents, state values).
    """
    kind = type(value)
    if kind is str:  # the commonest value: no options, nothing else to check
        try:
            return _join((_dumps(value), b""))
        except orjson.JSONEncodeError as exc:  # a lone surrogate
            raise KaizenValidationError(f"{what} is not JSON-serializable: {exc}") from None
    try:
        data = _dumps(value, default=_reject, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise KaizenValidationError(f"{what} is not JSON-serializable: {exc}") from None
    if kind not in _SAFE:
        _check_plain(value, what)
    return _join((data, b""))  # a join of two parts allocates exactly; ~40-100 ns


def check_text(text: str, what: str) -> str:
    """Refuse a ``str`` that is not valid UTF-8 (a lone surrogate): it cannot be stored,
    hashed or saved, so it is a :class:`KaizenValidationError` up front, never a raw
    ``TypeError``/``UnicodeEncodeError`` later (or a write lost inside the session actor)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise KaizenValidationError(
                f"{what} {text[:80]!r} is not valid UTF-8 text (it holds a lone surrogate)"
            ) from None
    return text


def entry_bytes(
    seq: int,
    timestamp: str,
    agent_id: str,
    entry_type: str,
    content: bytes,
    prev_hash: str,
) -> bytes:
    """The canonical encoding of an entry without its hash.

    Equal to ``encode({...})`` of the entry's fields with sorted keys, but built from the
    already-canonical content bytes so content is never encoded twice.
    """
    return ENTRY_TEMPLATE % (
        _dumps(agent_id),
        content,
        _dumps(entry_type),
        prev_hash.encode(),
        seq,
        timestamp.encode(),
    )


def sha256_hex(data: bytes) -> str:
    """SHA-256 hex digest."""
    return _sha256(data).hexdigest()


def entry_hash(
    seq: int,
    timestamp: str,
    agent_id: str,
    entry_type: str,
    content: bytes,
    prev_hash: str,
) -> str:
    """SHA-256 over :func:`entry_bytes`."""
    return _sha256(
        entry_bytes(seq, timestamp, agent_id, entry_type, content, prev_hash)
    ).hexdigest()
