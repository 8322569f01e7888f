"""Signing keys of the kiosk and the ledger, and the clearly labelled demo court identity.

Layout under the data dir (DATA):

    DATA/keys/kiosk_ed25519        kiosk signing key, OpenSSH private key format, mode 0600
    DATA/keys/kiosk_ed25519.pub    its public key, one OpenSSH line (goes into allowed_signers)
    DATA/keys/ledger_ed25519(.pub) the in-process ledger's key (signs checkpoints and key enrolments)

The court's keys never live here: the kiosk only knows age *recipients* (public keys) from config. For
the demo, `demo_court_identity` keeps a labelled DEMO court identity in a sibling folder,
DATA/../demo-court/court-identity.txt, so the kiosk's data dir still holds no key that can decrypt.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyrage import x25519

from ..durable import fsync_dir
from ..errors import KioskError

KEYS_DIR = "keys"
KIOSK_KEY = "kiosk_ed25519"
LEDGER_KEY = "ledger_ed25519"
DEMO_COURT_DIR = "demo-court"
DEMO_COURT_FILE = "court-identity.txt"
DEMO_LABEL = "# DEMO court identity — not for real cases"
_AGE_SECRET = re.compile(rb"AGE-SECRET-KEY-1[0-9A-Z]{58}")


class KeyFileError(KioskError):
    """A key file is unreadable, malformed or readable by others."""

    http_status = 500


@dataclass(frozen=True)
class Signer:
    """An actor (kiosk, ledger, clerk) and the Ed25519 key it signs with."""

    actor: str
    key: Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    @property
    def public_raw(self) -> bytes:
        return public_raw(self.public)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def openssh_public(self) -> str:
        return openssh_public_line(self.public, self.actor)


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def openssh_public_line(key: Ed25519PublicKey, comment: str = "") -> str:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


def parse_openssh_public(line: str) -> Ed25519PublicKey:
    """`ssh-ed25519 AAAA... [comment]` -> key (only Ed25519 is used here)."""
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise KeyFileError("not an ssh-ed25519 public key line")
    try:
        key = serialization.load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except ValueError as exc:
        raise KeyFileError(f"malformed ssh-ed25519 public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("not an Ed25519 key")
    return key


def verify_signature(public: bytes | Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    key = public if isinstance(public, Ed25519PublicKey) else public_from_raw(public)
    try:
        key.verify(signature, data)
        return True
    except InvalidSignature:
        return False


# ---------------------------------------------------------------- key files


def write_secret_file(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically and exclusively (link fails if another process won the race)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def load_or_create_key(path: Path, actor: str) -> Signer:
    """The Ed25519 key at `path` (created 0600 on first use, public half beside it as .pub)."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        try:
            write_secret_file(path, pem)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            pub = path.with_name(path.name + ".pub")
            pub.write_text(openssh_public_line(key.public_key(), actor) + "\n")
    return Signer(actor, load_private_key(path))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from None
    if mode & 0o077:
        raise KeyFileError(f"{path}: key file is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted OpenSSH private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def kiosk_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIR / KIOSK_KEY


def ledger_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEYS_DIR / LEDGER_KEY


def kiosk_actor(kiosk_id: str) -> str:
    return f"kiosk:{kiosk_id}"


def kiosk_signer(data_dir: Path, kiosk_id: str) -> Signer:
    return load_or_create_key(kiosk_key_path(data_dir), kiosk_actor(kiosk_id))


def ledger_signer(data_dir: Path, origin: str) -> Signer:
    return load_or_create_key(ledger_key_path(data_dir), f"ledger:{origin}")


# ---------------------------------------------------------------- court recipients and the demo court


def parse_recipient(text: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception as exc:  # pyrage raises its own RecipientError type
        raise KeyFileError(f"not an age X25519 recipient: {text[:12]}... ({exc})") from None


def demo_court_dir(data_dir: Path) -> Path:
    return Path(data_dir).resolve().parent / DEMO_COURT_DIR


def demo_court_identity(data_dir: Path) -> tuple[Path, str]:
    """Create (once) the DEMO court's age identity beside, never inside, the kiosk's data dir.

    Returns (identity file, age recipient). The file is 0600 and says on its first line that it is a
    demo identity; real deployments configure the court's recipients and keep identities off-kiosk.
    """
    path = demo_court_dir(data_dir) / DEMO_COURT_FILE
    if not path.exists():
        identity = x25519.Identity.generate()
        recipient = str(identity.to_public())
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{DEMO_LABEL}\n# created: {created}\n# public key: {recipient}\n{identity}\n"
        try:
            write_secret_file(path, text.encode())
        except FileExistsError:
            pass
    return path, demo_court_recipient(path)


def ensure_demo_court(settings) -> Path:
    """For `kiosk demo` with no configured recipients: make the DEMO court identity (outside the data
    dir) and seal to it. Returns the identity path (the demo prints it so `age -d -i` can be tried)."""
    from ..config import CourtRecipient

    path, recipient = demo_court_identity(settings.storage.data_dir)
    if recipient not in {r.recipient for r in settings.custody.recipients}:
        settings.custody.recipients.append(CourtRecipient(name="demo-court", recipient=recipient))
    return path


def demo_court_recipient(identity_path: Path) -> str:
    return str(load_identity(identity_path).to_public())


def load_identity(path: Path) -> x25519.Identity:
    """Read an age identity file (comments allowed), as the court side does to decrypt."""
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-1"):
            return x25519.Identity.from_str(line)
    raise KeyFileError(f"{path}: no AGE-SECRET-KEY line")


def find_age_secret_keys(root: Path) -> list[Path]:
    """Every file under `root` holding an age secret key: must be empty for a kiosk's data dir."""
    found = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                with path.open("rb") as fh:
                    chunk = fh.read(1 << 20)
            except OSError:
                continue
            if _AGE_SECRET.search(chunk.upper()):
                found.append(path)
    return found
