"""``kaizen keygen``: make an Ed25519 signing key for checkpoints, print its keyring line."""

from __future__ import annotations

import os

import click

from .._keys import ENV_KEY_PASSPHRASE, Ed25519Signer
from ._errors import BadInput, IOFailure

__all__ = ["keygen"]


@click.command()
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Where to write the private key (PKCS#8 PEM, mode 0600); never overwritten.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt the key with a passphrase (from ${ENV_KEY_PASSPHRASE}, else asked for).",
)
def keygen(out: str, encrypt: bool) -> None:
    """Write a new Ed25519 private key for signing checkpoints and print its keyring line.

    Give the key to the writer (SQLiteStore(path, signer=Ed25519Signer.from_pem_file(...)),
    or KAIZEN_SIGNING_KEY_FILE); put the printed line in every verifier's keyring file.
    The private key is written nowhere else and never printed.
    """
    passphrase: str | None = None
    if encrypt:
        passphrase = os.environ.get(ENV_KEY_PASSPHRASE) or click.prompt(
            "passphrase", hide_input=True, confirmation_prompt=True, err=True
        )
    signer = Ed25519Signer.generate()
    pem = signer.private_pem(passphrase)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadInput(f"{out} exists: keygen never overwrites a key") from None
    except OSError as exc:
        raise IOFailure(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
    except OSError as exc:
        raise IOFailure(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(signer.keyring_line())
