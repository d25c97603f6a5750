"""Keys: who signs checkpoints (:class:`Signer`) and whom a verifier trusts (:class:`Keyring`).

A signer is anything with a ``key_id``, a raw 32-byte Ed25519 ``public_key`` and a
``sign(message) -> 64-byte signature`` method, so a KMS or an HSM can sign; the built-in
:class:`Ed25519Signer` holds a private key read from a PKCS#8 PEM file (optionally
encrypted). The private key never leaves the object: it is not in its ``repr``, it cannot
be pickled, and nothing here writes it anywhere except :meth:`Ed25519Signer.private_pem`,
which ``kaizen keygen`` uses to create a key file.

A keyring is the verifier's own list of trusted public keys, kept apart from any session:
a text file with one key per line::

    # key id         base64 raw public key                          valid from   until
    3f2a9c0d11b2e4f7 Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI= 2026-01-01 -

Validity dates are optional (``-`` leaves one end open; a date alone means midnight UTC).
Public keys stored beside a session are never trusted: whoever can rewrite the session can
rewrite them too.

``cryptography`` (the ``signing`` extra) is imported only when a key is used.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, NoReturn, Protocol, runtime_checkable

from ._checkpoint import Checkpoint, key_id_of
from ._exceptions import KaizenValidationError

__all__ = [
    "ENV_KEY_FILE",
    "ENV_KEY_PASSPHRASE",
    "Ed25519Signer",
    "Keyring",
    "Signer",
    "TrustedKey",
    "check_signer",
]

#: the environment variable naming a PKCS#8 PEM private key file (``Ed25519Signer.from_env``)
ENV_KEY_FILE = "KAIZEN_SIGNING_KEY_FILE"
#: the environment variable holding that file's passphrase, if it is encrypted
ENV_KEY_PASSPHRASE = "KAIZEN_SIGNING_KEY_PASSPHRASE"


def _crypto() -> ModuleType:
    """``cryptography``'s Ed25519 module, or an ImportError that says how to install it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise ImportError(
            "signed checkpoints need the 'cryptography' package: "
            "pip install 'kaizen-async[signing]'"
        ) from exc
    return ed25519


@runtime_checkable
class Signer(Protocol):
    """What signs checkpoints: an Ed25519 key, wherever it lives.

    ``sign`` is called from a worker thread by ``SQLiteStore``'s writer and by file saves,
    so it may block (a KMS round trip; ``MemoryStore``, for tests, calls it on the event
    loop); it must return the 64-byte Ed25519 signature of ``message`` under ``public_key``.
    """

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def check_signer(signer: object) -> Signer:
    """``signer`` if it meets :class:`Signer` and its key id matches its public key."""
    if not isinstance(signer, Signer):
        raise KaizenValidationError(
            f"signer must have key_id, public_key and sign(); got {type(signer).__name__}"
        )
    public = signer.public_key
    if type(public) is not bytes or len(public) != 32:
        raise KaizenValidationError("signer.public_key must be the raw 32-byte Ed25519 key")
    if signer.key_id != key_id_of(public):
        raise KaizenValidationError(
            f"signer.key_id {signer.key_id!r} is not the id of its public key ({key_id_of(public)})"
        )
    return signer


class Ed25519Signer:
    """An Ed25519 private key held in memory (see the module docstring)."""

    __slots__ = ("_key", "_key_id", "_public")

    def __init__(self, private_key: Any) -> None:
        ed25519 = _crypto()
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise KaizenValidationError(
                f"expected an Ed25519 private key, got {type(private_key).__name__}"
            )
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        self._public: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._key_id = key_id_of(self._public)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A new random key."""
        return cls(_crypto().Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> Ed25519Signer:
        """The key of a raw 32-byte seed (test vectors)."""
        try:
            return cls(_crypto().Ed25519PrivateKey.from_private_bytes(seed))
        except (ValueError, TypeError) as exc:
            raise KaizenValidationError(f"not an Ed25519 seed: {exc}") from None

    @classmethod
    def from_pem(cls, data: bytes, passphrase: str | bytes | None = None) -> Ed25519Signer:
        """A key from PKCS#8 PEM bytes, decrypted with ``passphrase`` if given."""
        _crypto()
        from cryptography.hazmat.primitives import serialization

        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except (ValueError, TypeError) as exc:
            # the message says "bad decrypt", "password was not given", ...: never the key
            raise KaizenValidationError(f"cannot read the private key: {exc}") from None
        return cls(key)

    @classmethod
    def from_pem_file(
        cls, path: str | os.PathLike[str], passphrase: str | bytes | None = None
    ) -> Ed25519Signer:
        """A key from a PKCS#8 PEM file (see :meth:`from_pem`)."""
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise KaizenValidationError(
                f"cannot read the key file {os.fspath(path)}: {exc.strerror or exc}"
            ) from None
        return cls.from_pem(data, passphrase)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ed25519Signer | None:
        """The key in the file ``KAIZEN_SIGNING_KEY_FILE`` names (its passphrase in
        ``KAIZEN_SIGNING_KEY_PASSPHRASE``), or None when the variable is not set."""
        env = os.environ if environ is None else environ
        path = env.get(ENV_KEY_FILE)
        if not path:
            return None
        return cls.from_pem_file(path, env.get(ENV_KEY_PASSPHRASE) or None)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        signature: bytes = self._key.sign(message)
        return signature

    def private_pem(self, passphrase: str | bytes | None = None) -> bytes:
        """The key as PKCS#8 PEM (encrypted with ``passphrase``): for writing a key file."""
        from cryptography.hazmat.primitives import serialization

        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        encryption: Any = (
            serialization.BestAvailableEncryption(secret)
            if secret
            else serialization.NoEncryption()
        )
        pem: bytes = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        return pem

    def keyring_line(self) -> str:
        """This key's line for a verifier's keyring file."""
        return Keyring.line(self._public)

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self._key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an Ed25519Signer cannot be pickled (it holds a private key)")


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key a verifier trusts, within its validity window (None: open)."""

    key_id: str
    public_key: bytes
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def valid_at(self, when: datetime) -> bool:
        if self.valid_from is not None and when < self.valid_from:
            return False
        return self.valid_until is None or when < self.valid_until

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        ed25519 = _crypto()
        from cryptography.exceptions import InvalidSignature

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


def _date(text: str, where: str) -> datetime | None:
    if text == "-":
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise KaizenValidationError(f"{where}: {text!r} is not an RFC 3339 date") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Keyring:
    """The public keys a verifier trusts, by key id (see the module docstring)."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            if key_id_of(key.public_key) != key.key_id:
                raise KaizenValidationError(
                    f"key id {key.key_id!r} is not the id of its public key"
                )
            self._keys[key.key_id] = key

    @classmethod
    def parse(cls, text: str, *, source: str = "keyring") -> Keyring:
        """A keyring from its text (one key per line; ``#`` starts a comment)."""
        keys = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source} line {number}"
            fields = line.split()
            if not 2 <= len(fields) <= 4:
                raise KaizenValidationError(
                    f"{where}: expected 'key_id base64_public_key [valid_from [valid_until]]'"
                )
            try:
                public = base64.b64decode(fields[1], validate=True)
            except ValueError:
                raise KaizenValidationError(f"{where}: the public key is not base64") from None
            if len(public) != 32:
                raise KaizenValidationError(f"{where}: the public key is not 32 bytes")
            if key_id_of(public) != fields[0]:
                raise KaizenValidationError(
                    f"{where}: key id {fields[0]!r} is not the id of its public key "
                    f"({key_id_of(public)})"
                )
            dates = [_date(value, where) for value in fields[2:]] + [None, None]
            keys.append(TrustedKey(fields[0], public, dates[0], dates[1]))
        return cls(keys)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """A keyring from its file."""
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise KaizenValidationError(
                f"cannot read the keyring {os.fspath(path)}: {exc}"
            ) from None
        return cls.parse(text, source=os.fspath(path))

    @staticmethod
    def line(
        public_key: bytes, valid_from: datetime | None = None, valid_until: datetime | None = None
    ) -> str:
        """One keyring line for ``public_key``."""
        fields = [key_id_of(public_key), base64.b64encode(public_key).decode()]
        if valid_from is not None or valid_until is not None:
            fields += [d.isoformat() if d is not None else "-" for d in (valid_from, valid_until)]
        return " ".join(fields)

    def get(self, key_id: str) -> TrustedKey | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)})"

    def check(self, checkpoint: Checkpoint) -> str | None:
        """Why ``checkpoint``'s signature is not trusted (``"unknown_key"`` or
        ``"checkpoint_invalid"`` and a reason), or None when it verifies."""
        key = self._keys.get(checkpoint.key_id)
        if key is None:
            return "unknown_key"
        if not key.valid_at(checkpoint.when()):
            return "unknown_key"
        message = checkpoint.signed_message()
        if message is None or not key.verify(checkpoint.signature, message):
            return "checkpoint_invalid"
        return None
