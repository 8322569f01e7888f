"""Retrieve a sealed recording: the access goes on the ledger first, then the court identity opens it.

Order, and why:
1. Check the request (purpose and order/reference are required), the session (not deleted by order),
   the court identity (opens, and is one of the recipients the session was sealed to) and, unless told
   otherwise, the full `kiosk verify` of the sealed session. Nothing is on the ledger yet: nothing was
   accessed.
2. Append an "accessed" statement signed by the clerk's own key, and wait for its inclusion: a fresh
   signed checkpoint and an inclusion proof, checked here against the pinned ledger key and kept in the
   session's proofs. If the ledger cannot show the entry, nothing is decrypted.
3. Decrypt segment by segment (age, streaming) into a private temporary folder, check each plaintext's
   SHA-256 and size against the manifest as it is written, and copy its packets into one MP4. The MP4 is
   written under a temporary name and renamed only when every segment has checked out: any error (wrong
   identity, wrong passphrase, tampered or truncated ciphertext) leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyrage

from ..custody.keys import Signer
from ..custody.verify import all_ok, failures
from ..durable import fsync_dir
from ..logs import event as log_event
from .court import Court
from .errors import ClerkError, DeletedByOrder, IdentityError, RetrievalError
from .identity import Passphrase, load_court_identity, recipients_of
from .reassemble import Remuxer
from .store import ACCESSED_KIND, read_manifest

log = logging.getLogger("kiosk.clerk.retrieve")

MAX_TEXT = 500
READ_BUFFER = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(value: str | None, what: str) -> str:
    text = " ".join((value or "").split())
    if not text:
        raise ClerkError(f"a {what} is required")
    if len(text) > MAX_TEXT or _CONTROL.search(text):
        raise ClerkError(f"{what}: at most {MAX_TEXT} printable characters")
    return text


@dataclass
class Retrieval:
    session_id: str
    path: Path
    sha256: str
    size: int
    segments: int
    first_start: float  # session time at MP4 time 0
    duration_s: float
    accessed_index: int
    accessed_subject: str
    request: str
    purpose: str
    order: str
    clerk: str
    proof: str  # proof bundle file in the session's proofs folder
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


class _HashingWriter(io.RawIOBase):
    """What pyrage writes the plaintext into: a file, with SHA-256 and size kept as it goes."""

    def __init__(self, fh) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)


def decrypt_segment(ciphertext: Path, plaintext: Path, identities: list) -> tuple[str, int]:
    """age-decrypt one sealed segment into `plaintext`; return (SHA-256, size) of what was written."""
    with open(ciphertext, "rb") as fin, open(plaintext, "wb") as fout:
        writer = _HashingWriter(fout)
        pyrage.decrypt_io(io.BufferedReader(fin, READ_BUFFER), writer, identities)
        fout.flush()
    return writer.sha.hexdigest(), writer.size


def check_identity(identities: list, manifest: dict, session_id: str) -> None:
    sealed_to = set(manifest.get("recipients") or [])
    mine = recipients_of(identities)
    if sealed_to and not sealed_to.intersection(mine):
        raise IdentityError(f"this court identity ({', '.join(mine)}) is not one of the recipients session "
                            f"{session_id} was sealed to ({', '.join(sorted(sealed_to))})")


def retrieve(court: Court, clerk: str | Signer, session_id: str, *, purpose: str, order: str,
             out: Path | None = None, passphrase: Passphrase = None, identity_file: Path | None = None,
             identities: list | None = None, verify_first: bool = True, also: list[str] | None = None) -> Retrieval:
    """Ledger the access, wait for its proof, then decrypt and reassemble (see the module docstring).
    `identities` (already opened) skips loading the identity file; `verify_first=False` skips the
    pre-flight `kiosk verify` (the per-segment hash checks still run); `also` names what else the caller
    decrypts under the same access (an export: transcript, session record)."""
    purpose = clean_text(purpose, "stated purpose")
    order = clean_text(order, "order or reference")
    signer = clerk if isinstance(clerk, Signer) else court.clerk(clerk)
    session_dir = court.store.session_dir(session_id)
    manifest = read_manifest(session_dir)
    summary = court.store.summary(session_id, court.ledger)
    if summary.deleted:
        raise DeletedByOrder(f"session {session_id} was deleted by order {summary.deleted['order']} on "
                             f"{summary.deleted['date']}: there is no recording to retrieve")
    segments = sorted((s for s in manifest["segments"]), key=lambda s: s["index"])
    if not segments:
        raise RetrievalError(f"session {session_id} has no sealed segments")
    if identities is None:
        identities = load_court_identity(identity_file or court.identity_file, passphrase)
    check_identity(identities, manifest, session_id)
    if verify_first:
        checks = court.verify(session_id)
        if not all_ok(checks):
            raise RetrievalError(f"session {session_id} does not verify, nothing was decrypted: "
                                 + "; ".join(failures(checks)))
    missing = [s["file"] for s in segments if not (session_dir / s["file"]).is_file()]
    if missing:
        raise RetrievalError(f"session {session_id}: sealed file(s) missing: {', '.join(missing)}")

    if out is not None and Path(out).exists():
        raise ClerkError(f"{out} exists; choose another output path")

    # -- 2. the access, on the ledger and proven, before any byte is decrypted
    request = secrets.token_hex(8)
    entry = court.record(signer, ACCESSED_KIND, session_id, {
        "purpose": purpose, "order": order, "request": request, "what": ["recording", *(also or [])],
        "segments": [s["index"] for s in segments]})
    subject = entry.statement["body"]["subject"]
    proof_name = f"{ACCESSED_KIND}-{subject.rsplit('/', 1)[1]}.json"
    court.prove([entry], session_dir, [proof_name])
    court.prove_enrolment(signer, session_dir)
    log_event(log, "access ledgered", session=session_id, entry=entry.index, clerk=signer.actor)

    # -- 3. decrypt, check, reassemble; rename into place only at the end
    out = Path(out) if out else court.exports_dir / "retrieved" / f"{session_id}-{subject.rsplit('/', 1)[1]}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".retrieve-", dir=out.parent))  # 0700, same file system
    tmp_mp4 = tmp_dir / "recording.mp4"
    first = segments[0]["start"]
    sid_info = manifest["session"]
    remux = Remuxer(tmp_mp4, first, {
        "comment": f"testimony kiosk session {session_id}: {len(segments)} sealed segment(s) remuxed; "
                   f"MP4 time 0 = session time {first} s",
        "creation_time": str(sid_info.get("created_wall") or ""),
    })
    try:
        for seg in segments:
            label = f"segment {seg['index']}"
            plain = tmp_dir / f"seg-{seg['index']:06d}.mp4"
            try:
                digest, size = decrypt_segment(session_dir / seg["file"], plain, identities)
            except pyrage.DecryptError as exc:
                raise RetrievalError(f"{label} ({seg['file']}): the court identity does not open it ({exc})") from None
            except OSError as exc:
                raise RetrievalError(f"{label} ({seg['file']}): ciphertext is damaged, tampered with or truncated "
                                     f"(age: {exc})") from None
            if size != seg["plaintext_size"] or digest != seg["plaintext_sha256"]:
                raise RetrievalError(f"{label}: decrypted bytes differ from the manifest (SHA-256 {digest[:16]}..., "
                                     f"{size} bytes; manifest {seg['plaintext_sha256'][:16]}..., "
                                     f"{seg['plaintext_size']} bytes)")
            remux.add(plain, seg["start"], label)
            plain.unlink()
        stats = remux.close()
        with open(tmp_mp4, "rb+") as fh:
            os.fsync(fh.fileno())
        sha, size = hashlib.sha256(), 0
        with open(tmp_mp4, "rb") as fh:
            while chunk := fh.read(READ_BUFFER):
                sha.update(chunk)
                size += len(chunk)
        os.chmod(tmp_mp4, 0o600)
        os.replace(tmp_mp4, out)
        fsync_dir(out.parent)
    except BaseException:
        remux.abort()
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    duration = max(s["end"] for s in segments) - first
    log_event(log, "recording retrieved", session=session_id, entry=entry.index, segments=len(segments),
              bytes=size, adjusted_packets=stats.adjusted)
    return Retrieval(
        session_id=session_id, path=out, sha256=sha.hexdigest(), size=size, segments=len(segments),
        first_start=first, duration_s=round(duration, 3), accessed_index=entry.index, accessed_subject=subject,
        request=request, purpose=purpose, order=order, clerk=signer.actor, proof=proof_name,
        warnings=[f"{stats.adjusted} packet timestamp(s) nudged to stay increasing"] if stats.adjusted else [])
