"""The court's age identity, as the clerk's machine holds it: a plain identity file (as `age-keygen`
writes) or one protected by a passphrase (as `age -p` writes: the identity file encrypted with an
scrypt passphrase stanza, binary or armored). Plain files must not be readable by others.

The identity lives only in memory for the time of one retrieval; nothing here writes it anywhere."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyrage
from pyrage import x25519

from .errors import IdentityError

AGE_BINARY = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
PASSPHRASE_ENV = "KIOSK_COURT_PASSPHRASE"

Passphrase = str | Callable[[], str] | None


def is_protected(data: bytes) -> bool:
    head = data.lstrip()[:64]
    return head.startswith(AGE_BINARY) or head.startswith(AGE_ARMOR)


def identity_is_protected(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return is_protected(fh.read(128))
    except OSError as exc:
        raise IdentityError(f"court identity {path}: cannot read it ({exc.strerror})") from None


def parse_identities(text: str, where: str) -> list[x25519.Identity]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-1"):
            try:
                out.append(x25519.Identity.from_str(line))
            except Exception:  # pyrage raises its own IdentityError type
                raise IdentityError(f"{where}: malformed AGE-SECRET-KEY line") from None
    if not out:
        raise IdentityError(f"{where}: no AGE-SECRET-KEY line (is this an age identity file?)")
    return out


def load_court_identity(path: Path | str | None, passphrase: Passphrase = None) -> list[x25519.Identity]:
    """The identities in `path`. A protected file needs `passphrase` (a string, or a callable asked only
    when the file turns out to be protected, e.g. a terminal prompt)."""
    if not path:
        raise IdentityError("no court identity given (clerk.identity_file in the settings, or --identity)")
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"court identity {path}: cannot read it ({exc.strerror})") from None
    if not is_protected(data):
        if mode & 0o077:
            raise IdentityError(f"court identity {path} is readable by others (mode {mode & 0o777:o}); "
                                "chmod 600 it or protect it with a passphrase (age -p)")
        return parse_identities(data.decode("utf-8", "replace"), str(path))
    secret = passphrase() if callable(passphrase) else passphrase
    if secret is None:
        secret = os.environ.get(PASSPHRASE_ENV)
    if not secret:
        raise IdentityError(f"court identity {path} is passphrase-protected: give its passphrase "
                            f"(--passphrase-file, ${PASSPHRASE_ENV}, or the prompt)")
    try:
        text = pyrage.passphrase.decrypt(data, secret)
    except Exception as exc:  # pyrage.DecryptError, or OSError from a damaged payload
        raise IdentityError(f"court identity {path}: wrong passphrase (or the file is damaged: {exc})") from None
    return parse_identities(text.decode("utf-8", "replace"), f"{path} (decrypted)")


def recipients_of(identities: list[x25519.Identity]) -> list[str]:
    return [str(i.to_public()) for i in identities]
