"""SSHSIG signatures (OpenSSH PROTOCOL.sshsig) with an Ed25519 key, so a manifest's signature can be
checked by anyone with stock OpenSSH:

    ssh-keygen -Y verify -f allowed_signers -I <kiosk id> -n testimony-kiosk-manifest -s manifest.json.sig < manifest.json

The crypto is cryptography's Ed25519; this module only lays out the SSH wire format and the armor.
Parsing is strict (one spelling per signature) so a flipped byte anywhere in the file is caught.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import EncodingError, b64d, b64e
from .keys import Signer, public_raw, verify_signature

MAGIC = b"SSHSIG"
VERSION = 1
HASH_ALG = "sha512"
KEY_TYPE = b"ssh-ed25519"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
LINE = 70  # ssh-keygen wraps the armored base64 at 70 columns


class SSHSigError(ValueError):
    """The SSH signature is malformed, for another namespace or key, or does not verify."""


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _signed_data(namespace: str, message: bytes) -> bytes:
    digest = hashlib.new(HASH_ALG, message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(HASH_ALG.encode()) + _string(digest)


def _pubkey_blob(raw: bytes) -> bytes:
    return _string(KEY_TYPE) + _string(raw)


def sign(signer: Signer, namespace: str, message: bytes) -> str:
    """Armored SSHSIG over `message` (sha512, Ed25519)."""
    if not namespace:
        raise SSHSigError("an SSH signature needs a namespace")
    sig = signer.sign(_signed_data(namespace, message))
    blob = (MAGIC + struct.pack(">I", VERSION) + _string(_pubkey_blob(signer.public_raw))
            + _string(namespace.encode()) + _string(b"") + _string(HASH_ALG.encode())
            + _string(_string(KEY_TYPE) + _string(sig)))
    text = b64e(blob)
    lines = [text[i:i + LINE] for i in range(0, len(text), LINE)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SSHSigError("SSH signature is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.u32())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise SSHSigError("SSH signature has trailing bytes")


def unarmor(armored: str) -> bytes:
    lines = armored.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise SSHSigError("not an armored SSH signature")
    body = lines[1:-1]
    if any(len(line) != LINE for line in body[:-1]) or not 0 < len(body[-1]) <= LINE:
        raise SSHSigError("SSH signature armor is not wrapped at 70 columns")
    try:
        return b64d("".join(body), "SSH signature")
    except EncodingError as exc:
        raise SSHSigError(str(exc)) from None


def _open(armored: str) -> tuple[_Reader, bytes]:
    """Unarmor, check magic and version, and read the signer's raw Ed25519 key (not yet trusted); the
    reader is left at the namespace field."""
    r = _Reader(unarmor(armored))
    if r.take(6) != MAGIC or r.u32() != VERSION:
        raise SSHSigError("not an SSHSIG v1 signature")
    k = _Reader(r.string())
    if k.string() != KEY_TYPE:
        raise SSHSigError("SSH signature key is not ssh-ed25519")
    raw = k.string()
    k.end()
    if len(raw) != 32:
        raise SSHSigError("malformed ssh-ed25519 key in signature")
    return r, raw


def public_key_of(armored: str) -> bytes:
    """The raw Ed25519 key that claims to have made the signature (not yet trusted)."""
    return _open(armored)[1]


def verify(armored: str, namespace: str, message: bytes, allowed: list[bytes | Ed25519PublicKey]) -> bytes:
    """Check `armored` signs `message` in `namespace` by one of `allowed` keys; return the key (raw)."""
    r, raw = _open(armored)
    ns, reserved, alg = r.string(), r.string(), r.string()
    s = _Reader(r.string())
    sig_type, sig = s.string(), s.string()
    s.end()
    r.end()
    if ns != namespace.encode():
        raise SSHSigError(f"SSH signature is for namespace {ns.decode(errors='replace')!r}, not {namespace!r}")
    if reserved != b"" or alg not in (b"sha512", b"sha256") or sig_type != KEY_TYPE or len(sig) != 64:
        raise SSHSigError("malformed SSH signature fields")
    keys = {k if isinstance(k, bytes) else public_raw(k) for k in allowed}
    if raw not in keys:
        raise SSHSigError("SSH signature is by a key that is not allowed")
    digest = hashlib.new(alg.decode(), message).digest()
    data = MAGIC + _string(ns) + _string(b"") + _string(alg) + _string(digest)
    if not verify_signature(raw, sig, data):
        raise SSHSigError("SSH signature does not verify")
    return raw


def allowed_signers_line(principal: str, namespace: str, signer_public_openssh: str) -> str:
    key = " ".join(signer_public_openssh.split()[:2])
    return f'{principal} namespaces="{namespace}" {key}\n'
