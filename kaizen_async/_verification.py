"""Checking a verified chain against its signed checkpoints and external anchors.

The hash chain proves the entries are consistent with one another; it is unkeyed, so
whoever can rewrite the storage can rewrite every hash too. What a verifier holding an
external :class:`~kaizen_async.signing.Keyring` adds here, in this order:

1. every checkpoint stored beside the session names this session and a seq the chain
   holds, with the chain's head at that seq (``checkpoint_head_mismatch``; a checkpoint
   past the end means the session was truncated: ``rollback_detected``);
2. the latest checkpoint (each one with ``all_checkpoints``) is signed by a trusted key
   valid at its time (``unknown_key``) and its signature verifies (``checkpoint_invalid``);
   the chain carries that signature back over the whole prefix;
3. with anchors: no anchored seq lies beyond the end, every anchored head is the chain's
   head at its seq, and no two validly signed checkpoints give one seq two heads
   (``rollback_detected``);
4. with ``require_signed``/``max_unsigned_tail``: enough of the chain is signed
   (``unsigned_tail``).

The result is a :class:`VerifyReport`, an ``int`` (the number of entries checked, what
``verify()`` returned before checkpoints existed) carrying the rest as attributes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._anchors import JsonlAnchor, read_anchors
from ._checkpoint import Checkpoint
from ._exceptions import ErrorCode, KaizenValidationError, SessionCorruptedError
from ._keys import Keyring

__all__ = ["VerifyOptions", "VerifyReport", "check_checkpoints", "verify_options"]

#: what ``anchors=`` takes: a JSON-lines file (path or JsonlAnchor) or checkpoints
AnchorSource = str | os.PathLike[str] | JsonlAnchor | Iterable[Checkpoint]


class VerifyReport(int):
    """What ``verify()`` found. Its ``int`` value is the number of entries checked.

    Attributes:
        session_id: the session verified.
        entries: entries checked (the chain and the derived state: intact, or verify raised).
        chain_intact: always True in a returned report (a broken chain raises).
        checkpoints: checkpoints stored beside the session.
        signatures_checked: checkpoint signatures verified against the keyring (0 without one).
        last_signed_seq: the newest seq covered by a verified signature (None: none).
        unsigned_tail: entries after ``last_signed_seq`` (all of them when nothing verified).
        key_ids / writers / epochs: distinct values over the stored checkpoints, oldest first.
        rollback_checked: whether anchors were given (rollback and truncation checked).
        anchored_seq: the newest seq anchored for this session (None: none).
        problems: what could not be checked or is worth knowing (never a detected attack:
            those raise :class:`~kaizen_async.SessionCorruptedError`).
    """

    session_id: str
    chain_intact: bool
    checkpoints: int
    signatures_checked: int
    last_signed_seq: int | None
    unsigned_tail: int
    key_ids: tuple[str, ...]
    writers: tuple[str, ...]
    epochs: tuple[int, ...]
    rollback_checked: bool
    anchored_seq: int | None
    problems: tuple[str, ...]

    def __new__(
        cls,
        entries: int,
        *,
        session_id: str,
        checkpoints: Sequence[Checkpoint] = (),
        signatures_checked: int = 0,
        last_signed_seq: int | None = None,
        rollback_checked: bool = False,
        anchored_seq: int | None = None,
        problems: Iterable[str] = (),
    ) -> VerifyReport:
        report = super().__new__(cls, entries)
        report.session_id = session_id
        report.chain_intact = True
        report.checkpoints = len(checkpoints)
        report.signatures_checked = signatures_checked
        report.last_signed_seq = last_signed_seq
        report.unsigned_tail = entries - (last_signed_seq or 0)
        report.key_ids = tuple(dict.fromkeys(c.key_id for c in checkpoints))
        report.writers = tuple(dict.fromkeys(c.writer_id for c in checkpoints))
        report.epochs = tuple(dict.fromkeys(c.epoch for c in checkpoints))
        report.rollback_checked = rollback_checked
        report.anchored_seq = anchored_seq
        report.problems = tuple(problems)
        return report

    @property
    def entries(self) -> int:
        return int(self)

    @property
    def signed(self) -> bool:
        """Whether a verified signature covers the session (up to ``last_signed_seq``)."""
        return self.last_signed_seq is not None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``kaizen verify --json``)."""
        return {
            "session_id": self.session_id,
            "entries": int(self),
            "chain_intact": self.chain_intact,
            "checkpoints": self.checkpoints,
            "signatures_checked": self.signatures_checked,
            "signed": self.signed,
            "last_signed_seq": self.last_signed_seq,
            "unsigned_tail": self.unsigned_tail,
            "key_ids": list(self.key_ids),
            "writers": list(self.writers),
            "epochs": list(self.epochs),
            "rollback_checked": self.rollback_checked,
            "anchored_seq": self.anchored_seq,
            "problems": list(self.problems),
        }

    def __repr__(self) -> str:
        return (
            f"VerifyReport(entries={int(self)}, last_signed_seq={self.last_signed_seq}, "
            f"unsigned_tail={self.unsigned_tail}, problems={len(self.problems)})"
        )

    def __str__(self) -> str:  # prints as the number it always was
        return int.__repr__(self)

    def __reduce__(self) -> Any:
        return (_rebuild, (int(self), dict(self.__dict__)))


def _rebuild(entries: int, fields: dict[str, Any]) -> VerifyReport:
    report = int.__new__(VerifyReport, entries)
    report.__dict__.update(fields)
    return report


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """The checkpoint options of ``verify()`` / ``load()``, checked (see verify_options)."""

    keyring: Keyring | None = None
    require_signed: bool = False
    max_unsigned_tail: int | None = None
    anchors: tuple[tuple[Checkpoint, ...], tuple[str, ...]] | None = None
    all_checkpoints: bool = False

    @property
    def active(self) -> bool:
        """Whether anything beyond the chain is asked for."""
        return self != _NONE


_NONE = VerifyOptions()


def verify_options(
    keyring: Keyring | str | os.PathLike[str] | None = None,
    require_signed: bool = False,
    max_unsigned_tail: int | None = None,
    anchors: AnchorSource | None = None,
    all_checkpoints: bool = False,
) -> VerifyOptions:
    """Check the options and read the files they name (a keyring or anchor path):
    blocking, so call it in a worker thread when paths are given."""
    if isinstance(keyring, str | os.PathLike):
        keyring = Keyring.load(keyring)
    elif keyring is not None and not isinstance(keyring, Keyring):
        raise KaizenValidationError(
            f"keyring must be a Keyring or a path, got {type(keyring).__name__}"
        )
    if not isinstance(require_signed, bool) or not isinstance(all_checkpoints, bool):
        raise KaizenValidationError("require_signed and all_checkpoints must be bools")
    if max_unsigned_tail is not None and (
        not isinstance(max_unsigned_tail, int)
        or isinstance(max_unsigned_tail, bool)
        or max_unsigned_tail < 0
    ):
        raise KaizenValidationError("max_unsigned_tail must be None or an int >= 0")
    if (require_signed or max_unsigned_tail is not None) and keyring is None:
        raise KaizenValidationError(
            "require_signed/max_unsigned_tail need a keyring: only a trusted key can "
            "say what is signed"
        )
    loaded: tuple[tuple[Checkpoint, ...], tuple[str, ...]] | None = None
    if anchors is not None:
        if isinstance(anchors, str | os.PathLike):
            found, notes = read_anchors(anchors)
            loaded = (tuple(found), tuple(notes))
        elif isinstance(anchors, JsonlAnchor):
            found, notes = anchors.read()
            loaded = (tuple(found), tuple(notes))
        else:
            items = tuple(anchors)
            if not all(isinstance(c, Checkpoint) for c in items):
                raise KaizenValidationError("anchors must be a path or Checkpoint objects")
            loaded = (items, ())
    return VerifyOptions(keyring, require_signed, max_unsigned_tail, loaded, all_checkpoints)


def _fail(code: ErrorCode, message: str, seq: int | None, **details: Any) -> SessionCorruptedError:
    return SessionCorruptedError(message, seq=seq, details=details, code=code)


def check_checkpoints(
    session_id: str,
    length: int,
    hash_at: Callable[[int], str],
    checkpoints: Sequence[Checkpoint],
    options: VerifyOptions,
) -> VerifyReport:
    """Check ``checkpoints`` of a chain of ``length`` entries already verified, whose hash
    at seq ``n`` (1..length) is ``hash_at(n)``; returns the report or raises
    :class:`~kaizen_async.SessionCorruptedError` with the code of the first failure."""
    where = f"session {session_id!r}"
    ordered = sorted(checkpoints, key=lambda c: (c.seq, c.time))
    problems: list[str] = []
    # 1. each stored checkpoint against the chain
    matched = 0  # the newest seq at which a stored checkpoint matched the chain
    for c in ordered:
        if c.session_id != session_id:
            raise _fail(
                ErrorCode.CHECKPOINT_INVALID,
                f"{where}: the checkpoint at seq {c.seq} names session {c.session_id!r}",
                c.seq,
                session_id=session_id,
            )
        if c.seq > length:
            raise _fail(
                ErrorCode.ROLLBACK_DETECTED,
                f"{where}: a checkpoint covers seq {c.seq} but the session ends at {length} "
                "(entries were removed)",
                length + 1,
                session_id=session_id,
                checkpoint_seq=c.seq,
            )
        if hash_at(c.seq) != c.head_hash:
            raise _fail(
                ErrorCode.CHECKPOINT_HEAD_MISMATCH,
                f"{where}: entries {matched + 1}..{c.seq} are not what was signed at seq "
                f"{c.seq} (its head differs from the chain's): rewritten",
                matched + 1,
                session_id=session_id,
                checkpoint_seq=c.seq,
            )
        matched = c.seq
    # 2. signatures
    keyring = options.keyring
    last_signed: int | None = None
    checked = 0
    if keyring is None:
        if ordered:
            problems.append("no keyring given: checkpoint signatures were not checked")
    elif options.all_checkpoints:
        for c in ordered:
            _check_signature(keyring, c, where)
            checked += 1
        last_signed = ordered[-1].seq
    elif ordered:
        # the latest seq: one trusted signature of it is enough (after a key rotation the
        # same head may be signed by a retired key and by the new one)
        latest = ordered[-1].seq
        first_error: SessionCorruptedError | None = None
        for c in reversed([c for c in ordered if c.seq == latest]):
            try:
                _check_signature(keyring, c, where)
            except SessionCorruptedError as exc:
                first_error = first_error or exc
                continue
            checked = 1
            break
        if not checked:
            assert first_error is not None
            raise first_error
        last_signed = latest
    if not ordered:
        problems.append("the session has no signed checkpoints")
    # 3. anchors
    anchored_seq: int | None = None
    if options.anchors is None:
        problems.append("no anchors given: rollback and truncation could not be checked")
    else:
        anchored, notes = options.anchors
        problems.extend(notes)
        trusted = _trusted_anchors(keyring, session_id, anchored, problems)
        anchored_seq = max((a.seq for a in trusted), default=None)
        _check_anchors(where, session_id, length, hash_at, trusted)
    # 4. how much is signed
    tail = length - (last_signed or 0)
    if options.require_signed and last_signed is None:
        raise _fail(
            ErrorCode.UNSIGNED_TAIL,
            f"{where}: no signed checkpoint covers it ({length} unsigned entries)",
            1,
            session_id=session_id,
            unsigned_tail=length,
        )
    limit = options.max_unsigned_tail
    if limit is not None and tail > limit:
        raise _fail(
            ErrorCode.UNSIGNED_TAIL,
            f"{where}: {tail} entries after the last signed checkpoint (seq "
            f"{last_signed or 0}) are unsigned; at most {limit} allowed",
            (last_signed or 0) + 1,
            session_id=session_id,
            unsigned_tail=tail,
        )
    if tail and last_signed is not None:
        problems.append(f"{tail} entries after seq {last_signed} are not covered by a signature")
    return VerifyReport(
        length,
        session_id=session_id,
        checkpoints=ordered,
        signatures_checked=checked,
        last_signed_seq=last_signed,
        rollback_checked=options.anchors is not None,
        anchored_seq=anchored_seq,
        problems=problems,
    )


def _check_signature(keyring: Keyring, c: Checkpoint, where: str) -> None:
    key = keyring.get(c.key_id)
    if key is None:
        raise _fail(
            ErrorCode.UNKNOWN_KEY,
            f"{where}: the checkpoint at seq {c.seq} is signed by key {c.key_id}, which the "
            "keyring does not hold",
            c.seq,
            key_id=c.key_id,
        )
    if not key.valid_at(c.when()):
        raise _fail(
            ErrorCode.UNKNOWN_KEY,
            f"{where}: the checkpoint at seq {c.seq} ({c.time}) is signed by key {c.key_id} "
            "outside the validity the keyring gives it",
            c.seq,
            key_id=c.key_id,
        )
    message = c.signed_message()
    if message is None or not key.verify(c.signature, message):
        raise _fail(
            ErrorCode.CHECKPOINT_INVALID,
            f"{where}: the signature of the checkpoint at seq {c.seq} does not verify",
            c.seq,
            key_id=c.key_id,
        )


def _trusted_anchors(
    keyring: Keyring | None,
    session_id: str,
    anchored: Sequence[Checkpoint],
    problems: list[str],
) -> list[Checkpoint]:
    """This session's anchored checkpoints whose signature verifies (all of them, noted,
    without a keyring); the others are noted and ignored."""
    mine = [a for a in anchored if a.session_id == session_id]
    if keyring is None:
        if mine:
            problems.append("no keyring given: anchored checkpoints were used unverified")
        return mine
    trusted = []
    for a in mine:
        if keyring.check(a) is None:
            trusted.append(a)
        else:
            problems.append(
                f"anchored checkpoint at seq {a.seq} (key {a.key_id}) ignored: its signature "
                "does not verify with the keyring"
            )
    return trusted


def _check_anchors(
    where: str,
    session_id: str,
    length: int,
    hash_at: Callable[[int], str],
    anchored: Sequence[Checkpoint],
) -> None:
    """Anchors agree with each other and with the chain (stored checkpoints already do)."""
    heads: dict[int, set[str]] = {}
    for a in anchored:
        heads.setdefault(a.seq, set()).add(a.head_hash)
    for seq in sorted(heads):
        if len(heads[seq]) > 1:
            raise _fail(
                ErrorCode.ROLLBACK_DETECTED,
                f"{where}: equivocation: validly signed checkpoints give seq {seq} "
                f"{len(heads[seq])} different heads (two histories were written)",
                seq,
                session_id=session_id,
                heads=sorted(heads[seq]),
            )
    for seq in sorted(heads):
        head = next(iter(heads[seq]))
        if seq > length:
            raise _fail(
                ErrorCode.ROLLBACK_DETECTED,
                f"{where}: an anchor holds seq {seq} but the session ends at {length}: it "
                "was rolled back or truncated",
                length + 1,
                session_id=session_id,
                anchored_seq=seq,
            )
        if hash_at(seq) != head:
            raise _fail(
                ErrorCode.ROLLBACK_DETECTED,
                f"{where}: the anchored head at seq {seq} differs from the chain's: another "
                "history was restored or written over it",
                seq,
                session_id=session_id,
                anchored_seq=seq,
            )
