"""Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes (Ed25519).

    <origin>\\n<tree size>\\n<base64 root hash>\\n\\n— <key name> <base64(key id || signature)>\\n

The key ID is the first four bytes of SHA-256(name || "\\n" || 0x01 || public key); a verifier key is
written `<name>+<key id hex>+<base64(0x01 || public key)>`, the same as Go's golang.org/x/mod/sumdb/note,
so the checkpoints can be checked by standard transparency-log tools.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .canonical import EncodingError, b64d, b64e
from .keys import Signer, public_from_raw, verify_signature

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash + space
_NAME = re.compile(r"^[^\s+]+$")


class CheckpointError(ValueError):
    """A checkpoint or signed note is malformed or not signed by a trusted key."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def vkey(name: str, public: bytes) -> str:
    """The verifier key string others pin to trust this ledger's checkpoints."""
    if not _NAME.match(name):
        raise CheckpointError(f"key name {name!r} must be non-empty without spaces or '+'")
    return f"{name}+{key_id(name, public).hex()}+{b64e(bytes([ALG_ED25519]) + public)}"


@dataclass(frozen=True)
class VerifierKey:
    name: str
    id: bytes
    public: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.match(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise CheckpointError("verifier key must look like name+8hex+base64")
        try:
            raw = b64d(parts[2], "verifier key", 33)
        except EncodingError as exc:
            raise CheckpointError(str(exc)) from None
        if raw[0] != ALG_ED25519:
            raise CheckpointError("verifier key is not Ed25519")
        name, kid, public = parts[0], bytes.fromhex(parts[1]), raw[1:]
        if key_id(name, public) != kid:
            raise CheckpointError("verifier key ID does not match its name and key")
        public_from_raw(public)  # must be a valid point encoding
        return cls(name, kid, public)

    def __str__(self) -> str:
        return vkey(self.name, self.public)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str  # the whole signed note, as stored and shipped

    def body(self) -> str:
        return checkpoint_body(self.origin, self.size, self.root)


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    if not origin or "\n" in origin or origin != origin.strip():
        raise CheckpointError("checkpoint origin must be one non-empty line")
    return f"{origin}\n{size}\n{b64e(root)}\n"


def sign_note(text: str, name: str, signer: Signer) -> str:
    if not text.endswith("\n") or "\n\n" in text:
        raise CheckpointError("note text must end in a newline and hold no blank line")
    public = signer.public_raw
    sig = signer.sign(text.encode())
    return f"{text}\n{SIG_PREFIX}{name} {b64e(key_id(name, public) + sig)}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, signer: Signer) -> Checkpoint:
    note = sign_note(checkpoint_body(origin, size, root), origin, signer)
    return Checkpoint(origin, size, root, note)


def open_note(note: str, keys: list[VerifierKey]) -> tuple[str, list[str]]:
    """Return (text, names of trusted keys whose signatures verify). Raises unless at least one does,
    or if any signature claiming to be by a trusted key is bad."""
    if not isinstance(note, str) or not note.endswith("\n"):
        raise CheckpointError("signed note must end in a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("signed note has no signature block")
    text, block = note[: split + 1], note[split + 2:]
    if "\n\n" in text or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("signed note text holds a blank line or control characters")
    verified: list[str] = []
    lines = block[:-1].split("\n")
    if not lines or lines == [""]:
        raise CheckpointError("signed note has no signatures")
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError("malformed signature line in signed note")
        parts = line[len(SIG_PREFIX):].split(" ")
        if len(parts) != 2 or not _NAME.match(parts[0]):
            raise CheckpointError("malformed signature line in signed note")
        name = parts[0]
        try:
            raw = b64d(parts[1], "note signature")
        except EncodingError as exc:
            raise CheckpointError(str(exc)) from None
        if len(raw) < 5:
            raise CheckpointError("note signature too short")
        kid, sig = raw[:4], raw[4:]
        for key in keys:
            if key.name == name and key.id == kid:
                if len(sig) != 64 or not verify_signature(key.public, sig, text.encode()):
                    raise CheckpointError(f"signature by {name} on the note does not verify")
                verified.append(name)
    if not verified:
        raise CheckpointError("no signature by a trusted ledger key on the note")
    return text, verified


def parse_checkpoint(note: str) -> Checkpoint:
    """Parse the body without checking signatures (use `verify_checkpoint` for that)."""
    if not isinstance(note, str):
        raise CheckpointError("checkpoint must be text")
    split = note.find("\n\n")
    body = note[: split + 1] if split >= 0 else note
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("checkpoint needs origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size_text):
        raise CheckpointError("checkpoint tree size is not a decimal number")
    try:
        root = b64d(root_text, "checkpoint root hash", 32)
    except EncodingError as exc:
        raise CheckpointError(str(exc)) from None
    size = int(size_text)
    if size >= 1 << 64:
        raise CheckpointError("checkpoint tree size out of range")
    return Checkpoint(origin, size, root, note)


def verify_checkpoint(note: str, keys: list[VerifierKey], origin: str | None = None) -> Checkpoint:
    text, _ = open_note(note, keys)
    cp = parse_checkpoint(note)
    if cp.body() != text[: len(cp.body())] or len(text) < len(cp.body()):
        raise CheckpointError("checkpoint body differs from the signed text")
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not the expected {origin!r}")
    return cp

