"""The session manifest: one canonical (RFC 8785) JSON document that lists every sealed segment in order
with both hashes, the session's event log, clock facts and device/software facts, signed by the kiosk
key in SSHSIG form, encrypted to the court like the media, and ledgered.

Files written in the session dir:

    manifest.json        canonical JSON (the exact signed bytes)
    manifest.json.sig    armored SSHSIG, namespace `testimony-kiosk-manifest`
    allowed_signers      `<kiosk id> namespaces="testimony-kiosk-manifest" ssh-ed25519 ...`
    manifest.json.age    the manifest sealed to the court recipients

Check with stock OpenSSH:
    ssh-keygen -Y verify -f allowed_signers -I <kiosk id> -n testimony-kiosk-manifest -s manifest.json.sig < manifest.json
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pyrage
from pyrage import x25519

from ..durable import write_atomic
from ..errors import LedgerConflict, SealError
from ..logs import event as log_event
from ..media import segments
from . import sshsig
from .canonical import EncodingError, canonical_json, loads_canonical
from .keys import Signer
from .ledger import LedgerAPI
from .seal import load_records, record_path, session_id_of
from .statement import MANIFEST_SEALED, make_statement

log = logging.getLogger("kiosk.custody.manifest")

FORMAT = "testimony-kiosk/manifest/v1"
NAMESPACE = "testimony-kiosk-manifest"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
SEALED_MANIFEST = "manifest.json.age"
ALLOWED_SIGNERS = "allowed_signers"
SESSION_FIELDS = ("id", "room_id", "case_reference", "interviewee_pseudonym", "interviewer", "language",
                  "state", "created_wall")


def read_events(session_dir: Path) -> list[dict]:
    """The session's event log; a torn last line (crash mid-write) ends it, as in Session.events."""
    path = Path(session_dir) / "events.jsonl"
    out: list[dict] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def build_manifest(session_dir: Path, facts: dict, kiosk_id: str, signer: Signer, ledger: LedgerAPI,
                   recipients: list[str]) -> dict:
    session_dir = Path(session_dir)
    info = json.loads((session_dir / "session.json").read_text())
    records = load_records(session_dir)
    pending = [r.index for r in records if r.ledger_index is None]
    if pending:
        raise SealError(f"segments {pending} of {session_dir.name} are sealed but not yet in the ledger (is it "
                        "reachable?); `kiosk seal recover` or the next start-up completes the session")
    sealed = {r.index for r in records}
    unsealed = [
        {"index": seg.index, "reason": "still open" if not seg.closed else "not sealed"}
        for seg in segments.list_indexes(session_dir)
        if seg.index not in sealed and not record_path(session_dir, seg.index).exists()
    ]
    return {
        "format": FORMAT,
        "session": {k: info.get(k) for k in SESSION_FIELDS},
        "clock": info.get("clock", {}),
        "segments": [
            {"index": r.index, "start": r.start, "end": r.end, "file": r.file,
             "plaintext_sha256": r.plaintext_sha256, "plaintext_size": r.plaintext_size,
             "ciphertext_sha256": r.ciphertext_sha256, "ciphertext_size": r.ciphertext_size,
             "ledger_index": r.ledger_index}
            for r in records
        ],
        "unsealed": unsealed,
        "events": read_events(session_dir),
        "facts": facts,
        "kiosk": {"id": kiosk_id, "actor": signer.actor, "key": signer.openssh_public()},
        "recipients": sorted(recipients),
        "ledger": {"origin": ledger.origin, "vkey": ledger.vkey},
    }


def seal_manifest(
    session_dir: Path,
    facts: dict,
    *,
    kiosk_id: str,
    signer: Signer,
    ledger: LedgerAPI,
    recipients: list[str],
) -> Path:
    """Write, sign, encrypt and ledger the manifest (idempotent: a manifest already signed by this kiosk
    is kept, so a restart after a crash ledgers exactly the bytes it signed)."""
    session_dir = Path(session_dir)
    sid = session_id_of(session_dir)
    path, sig_path = session_dir / MANIFEST, session_dir / SIGNATURE
    data = _existing_manifest(path, sig_path, signer)
    if data is None:
        try:
            data = canonical_json(build_manifest(session_dir, facts, kiosk_id, signer, ledger, recipients))
        except (TypeError, ValueError) as exc:
            raise SealError(f"manifest facts are not JSON-serialisable: {exc}") from None
        sig = sshsig.sign(signer, NAMESPACE, data)
        write_atomic(path, data)
        write_atomic(sig_path, sig.encode())
    sig_bytes = sig_path.read_bytes()
    write_atomic(session_dir / ALLOWED_SIGNERS,
                 sshsig.allowed_signers_line(kiosk_id, NAMESPACE, signer.openssh_public()).encode())
    keys = [x25519.Recipient.from_str(r) for r in recipients]
    sealed_path = session_dir / SEALED_MANIFEST
    existing = ledger.find(f"{MANIFEST_SEALED}:{sid}")
    manifest_sha = hashlib.sha256(data).hexdigest()
    if existing is not None:
        body = existing.statement["body"]
        if body["manifest_sha256"] != manifest_sha:
            raise SealError(f"ledger entry {existing.index} holds a different manifest for {sid}")
        if sealed_path.exists() and hashlib.sha256(sealed_path.read_bytes()).hexdigest() == body["ciphertext_sha256"]:
            return path
        raise SealError(f"{SEALED_MANIFEST} differs from the one ledgered in entry {existing.index}")
    ciphertext = pyrage.encrypt(data, keys)
    write_atomic(sealed_path, ciphertext)
    body = {
        "subject": sid,
        "session": sid,
        "manifest_sha256": manifest_sha,
        "manifest_size": len(data),
        "signature_sha256": hashlib.sha256(sig_bytes).hexdigest(),
        "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
        "ciphertext_size": len(ciphertext),
        "segments": len(json.loads(data)["segments"]),
        "recipients": sorted(recipients),
    }
    try:
        entry = ledger.append(make_statement(signer, MANIFEST_SEALED, body))
    except LedgerConflict as exc:
        raise SealError(f"ledger refused the manifest of {sid}: {exc}") from None
    log_event(log, "manifest sealed", session=sid, entry=entry.index, segments=body["segments"])
    return path


def _existing_manifest(path: Path, sig_path: Path, signer: Signer) -> bytes | None:
    if not (path.exists() and sig_path.exists()):
        return None
    data = path.read_bytes()
    try:
        loads_canonical(data, "manifest")
        sshsig.verify(sig_path.read_text(), NAMESPACE, data, [signer.public_raw])
    except (EncodingError, sshsig.SSHSigError, UnicodeDecodeError):
        log.warning("discarding an unsigned or damaged manifest in %s", path.parent)
        return None
    return data
