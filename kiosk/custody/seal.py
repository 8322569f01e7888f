"""Seal one recorded segment to the court: hash, age-encrypt, hash, let the plaintext go, ledger.

Order of steps, and why it is crash-safe (kill -9 between any two leaves a state recovery finishes):

1. SHA-256 of the plaintext and age encryption in one streaming pass (the hashed bytes are exactly the
   encrypted bytes), ciphertext hashed as it is written, into a private temporary file, fsynced.
2. Rename to sealed/seg-NNNNNN.mp4.age (atomic) and fsync the folder.
3. Seal record sealed/seg-NNNNNN.seal.json (atomic) with both hashes, `ledger_index: null` (pending).
4. Release the plaintext (`segments.release(media, "seal")`): deleted unless the transcriber holds it.
   From here on only the court can read the segment, even if the ledger is unreachable.
5. Ledger statement `segment-sealed`, unique per (session, segment); the record gets its ledger index.
   Appending is idempotent (same subject, same body: the earlier entry comes back), so a crash or an
   unreachable ledger at step 5 is retried later without a duplicate.

A ciphertext on disk without a record means a run died between steps 2 and 3: the ledger is asked
whether that run got further (it cannot have: the record precedes the ledger), and the plaintext, still
there, is sealed again. Nothing is deleted before its ciphertext and hashes are safely on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pyrage
from pyrage import x25519

from ..durable import fsync_dir, write_atomic
from ..errors import LedgerConflict, SealError
from ..logs import event as log_event
from ..media import segments
from ..media.segments import SegmentIndex, segment_name
from .canonical import canonical_json
from .keys import Signer
from .ledger import LedgerAPI
from .statement import SEGMENT_SEALED, make_statement

log = logging.getLogger("kiosk.custody.seal")

SEALED_DIR = "sealed"
HOLDER = "seal"
READ_BUFFER = 1 << 20


@dataclass
class SealRecord:
    """Written once a segment is sealed and ledgered; the manifest lists these."""

    session: str
    index: int
    start: float
    end: float
    plaintext_sha256: str
    plaintext_size: int
    ciphertext_sha256: str
    ciphertext_size: int
    file: str  # relative to the session dir
    recipients: list[str]
    ledger_index: int | None  # None: sealed and plaintext released, ledger entry still pending
    recovered: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SealRecord:
        data = json.loads(path.read_bytes())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, path: Path) -> None:
        write_atomic(path, canonical_json(asdict(self)))


def sealed_dir(session_dir: Path) -> Path:
    return Path(session_dir) / SEALED_DIR


def ciphertext_path(session_dir: Path, index: int) -> Path:
    return sealed_dir(session_dir) / f"{segment_name(index)}.mp4.age"


def record_path(session_dir: Path, index: int) -> Path:
    return sealed_dir(session_dir) / f"{segment_name(index)}.seal.json"


def segment_subject(session_id: str, index: int) -> str:
    return f"{session_id}/{segment_name(index)}"


def session_id_of(session_dir: Path) -> str:
    """The session's id from session.json (falls back to the folder name, which is the id)."""
    try:
        return json.loads((Path(session_dir) / "session.json").read_text())["id"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return Path(session_dir).name


def load_records(session_dir: Path) -> list[SealRecord]:
    return sorted((SealRecord.load(p) for p in sealed_dir(session_dir).glob("seg-*.seal.json")),
                  key=lambda r: r.index)


# ---------------------------------------------------------------- the one streaming pass


class _HashingRaw(io.RawIOBase):
    """Raw reader that hashes every byte handed out; wrapped in a 1 MiB BufferedReader so pyrage's
    small reads cost C calls, not Python ones."""

    def __init__(self, fh) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.fh.readinto(buf)
        if n:
            self.sha.update(memoryview(buf)[:n])
            self.size += n
        return n or 0


class _HashingWriter:
    def __init__(self, fh) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def encrypt_and_hash(src: str | Path, dst: str | Path, recipients: list[str]) -> dict:
    """Encrypt `src` to every recipient (age v1, X25519) into `dst` (fsynced); return both hashes and
    sizes. Top-level and picklable so it can run in a worker process, away from the media threads' GIL."""
    keys = [x25519.Recipient.from_str(r) for r in recipients]
    with open(src, "rb", buffering=0) as fin, open(dst, "wb") as fout:
        raw = _HashingRaw(fin)
        reader = io.BufferedReader(raw, buffer_size=READ_BUFFER)
        writer = _HashingWriter(fout)
        pyrage.encrypt_io(reader, writer, keys)
        fout.flush()
        os.fsync(fout.fileno())
    return {"plaintext_sha256": raw.sha.hexdigest(), "plaintext_size": raw.size,
            "ciphertext_sha256": writer.sha.hexdigest(), "ciphertext_size": writer.size}


def sha256_file(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_BUFFER):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


# ---------------------------------------------------------------- sealing one segment

Encryptor = Callable[[str | Path, str | Path, list[str]], dict]


def seal_segment(
    session_dir: Path,
    segment_index: SegmentIndex,
    recipients: list[str],
    ledger: LedgerAPI,
    signer: Signer,
    *,
    session_id: str | None = None,
    encrypt: Encryptor = encrypt_and_hash,
    recovered: bool = False,
) -> SealRecord:
    """Seal one closed segment (idempotent: calling again after success or after a crash at any step
    completes the job without a second ledger entry). Raises only before the plaintext is released, or
    when the ledger cannot be reached (then the record stays pending and `recover_sealing` retries)."""
    session_dir = Path(session_dir)
    seg = segment_index
    sid = session_id or session_id_of(session_dir)
    media = segments.media_path(session_dir, seg.index)
    ct_path = ciphertext_path(session_dir, seg.index)
    rec_path = record_path(session_dir, seg.index)

    if rec_path.exists():  # sealed before; maybe killed before the release or the ledger entry
        record = SealRecord.load(rec_path)
        segments.release(media, HOLDER)
        return record if record.ledger_index is not None else _ledger_step(record, rec_path, ledger, signer)

    subject = segment_subject(sid, seg.index)
    if ct_path.exists():  # a run died between rename and record: did it reach the ledger? (it cannot have)
        earlier = ledger.find(f"{SEGMENT_SEALED}:{subject}")
        if earlier is not None:
            body = earlier.statement["body"]
            digest, size = sha256_file(ct_path)
            if digest != body["ciphertext_sha256"] or size != body["ciphertext_size"]:
                raise SealError(f"{ct_path.name} differs from the ciphertext ledgered in entry {earlier.index}")
            record = _record(sid, seg, body, recipients, recovered=True)
            record.ledger_index = earlier.index
            record.save(rec_path)
            segments.release(media, HOLDER)
            return record

    if not seg.closed:
        raise SealError(f"segment {seg.index} of {sid} is still open")
    if seg.end is None:
        raise SealError(f"segment {seg.index} of {sid} has no end time")
    if not media.exists():
        raise SealError(f"segment {seg.index} of {sid}: plaintext {media.name} is missing and it was never sealed")
    if not recipients:
        raise SealError("no court recipients configured (custody.recipients)")

    ct_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ct_path.with_name(f".{ct_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        hashes = encrypt(str(media), str(tmp), list(recipients))
        os.replace(tmp, ct_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(ct_path.parent)

    body = {
        "subject": subject,
        "session": sid,
        "index": seg.index,
        "start": seg.start,
        "end": seg.end,
        **hashes,
        "file": f"{SEALED_DIR}/{ct_path.name}",
        "recipients": sorted(recipients),
    }
    record = _record(sid, seg, body, recipients, recovered=recovered)
    record.save(rec_path)
    deleted = segments.release(media, HOLDER)
    log_event(log, "segment sealed", session=sid, segment=seg.index, bytes=hashes["plaintext_size"],
              plaintext_deleted=deleted)
    return _ledger_step(record, rec_path, ledger, signer)


def segment_body(record: SealRecord) -> dict:
    """The `segment-sealed` statement body for a record (the same bytes on every retry)."""
    return {
        "subject": segment_subject(record.session, record.index),
        "session": record.session,
        "index": record.index,
        "start": record.start,
        "end": record.end,
        "plaintext_sha256": record.plaintext_sha256,
        "plaintext_size": record.plaintext_size,
        "ciphertext_sha256": record.ciphertext_sha256,
        "ciphertext_size": record.ciphertext_size,
        "file": record.file,
        "recipients": sorted(record.recipients),
    }


def _ledger_step(record: SealRecord, rec_path: Path, ledger: LedgerAPI, signer: Signer) -> SealRecord:
    try:
        entry = ledger.append(make_statement(signer, SEGMENT_SEALED, segment_body(record)))
    except LedgerConflict as exc:
        raise SealError(f"ledger refused the seal of {segment_subject(record.session, record.index)}: {exc}") from None
    record.ledger_index = entry.index
    record.save(rec_path)
    log_event(log, "segment ledgered", session=record.session, segment=record.index, entry=entry.index,
              existing=entry.existing)
    return record


def _record(sid: str, seg: SegmentIndex, body: dict, recipients: list[str], recovered: bool) -> SealRecord:
    return SealRecord(
        session=sid, index=seg.index, start=body["start"], end=body["end"],
        plaintext_sha256=body["plaintext_sha256"], plaintext_size=body["plaintext_size"],
        ciphertext_sha256=body["ciphertext_sha256"], ciphertext_size=body["ciphertext_size"],
        file=body["file"], recipients=sorted(body.get("recipients", recipients)), ledger_index=None,
        recovered=recovered,
    )


@dataclass
class RecoveryReport:
    session: str
    sealed: list[int] = field(default_factory=list)  # sealed (or completed) now
    already: list[int] = field(default_factory=list)  # were sealed before
    open: list[int] = field(default_factory=list)  # not closed by the recorder: left for its recovery
    failed: dict[int, str] = field(default_factory=dict)
    removed_tmp: int = 0


def recover_sealing(
    session_dir: Path,
    recipients: list[str],
    ledger: LedgerAPI,
    signer: Signer,
    *,
    encrypt: Encryptor = encrypt_and_hash,
) -> RecoveryReport:
    """Finish every half-done seal of a session after a crash (no loss, no duplicate ledger entry)."""
    session_dir = Path(session_dir)
    sid = session_id_of(session_dir)
    report = RecoveryReport(sid)
    sd = sealed_dir(session_dir)
    if sd.is_dir():
        for tmp in sd.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            report.removed_tmp += 1
    for seg in segments.list_indexes(session_dir):
        rec_path = record_path(session_dir, seg.index)
        if rec_path.exists() and SealRecord.load(rec_path).ledger_index is not None:
            media = segments.media_path(session_dir, seg.index)
            if media.exists():
                segments.release(media, HOLDER)
            report.already.append(seg.index)
            continue
        if not seg.closed:
            report.open.append(seg.index)
            continue
        try:
            seal_segment(session_dir, seg, recipients, ledger, signer, session_id=sid, encrypt=encrypt, recovered=True)
            report.sealed.append(seg.index)
        except (SealError, LedgerConflict, OSError, httpx.HTTPError) as exc:
            report.failed[seg.index] = f"{type(exc).__name__}: {exc}"
            log.error("could not seal segment %s of %s: %s", seg.index, sid, exc)
    if report.sealed or report.failed or report.removed_tmp:
        log_event(log, "sealing recovered", session=sid, sealed=report.sealed, failed=sorted(report.failed),
                  removed_tmp=report.removed_tmp)
    return report
