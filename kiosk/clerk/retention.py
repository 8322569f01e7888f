"""Retention: how long each case type's recordings are kept, and deletion by court order.

A case type's policy (config [clerk.retention.<type>]) says keep N years from the recording date, keep
until a date, or keep until an order; it applies to case references matching its patterns, "default"
to the rest. The policy only says when a recording is *due*: deletion always needs a court order
reference, and is allowed at any time with one (a court may order earlier deletion).

Deleting by order, in this order so a crash at any point is finished by running it again:
1. "deleted-by-order" statements on the ledger, signed by the clerk: one per segment (what verification
   looks for) and one for the session listing every file removed with its SHA-256; then their proofs
   (and the clerk's key enrolment) go into the session's proofs folder.
   Sealed transcript and talkback sets get one statement each.
2. The ciphertexts go, with any plaintext of the recording on this machine: decrypted segments, the
   transcript (it holds the words), talkback audio, retrieved copies and export packages of the session.
What stays: the signed manifest, segment indexes and seal records, the event log, the sealed session
record (the record of the proceedings, not of the testimony), the proofs. They
show what existed and that it was deleted, by which order, on which date; `kiosk verify` then reports
"deleted by order X on date" for each segment instead of "missing".
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RetentionPolicy, Settings
from ..custody.artifacts import FOLDERS as ARTIFACT_FOLDERS
from ..custody.artifacts import RECORD_FILE as ARTIFACT_RECORD
from ..custody.artifacts import artifacts_subject
from ..custody.artifacts import record_path as artifact_record
from ..custody.keys import Signer
from ..custody.seal import segment_subject
from ..custody.statement import DELETED_BY_ORDER, make_statement
from ..durable import fsync_dir
from ..logs import event as log_event
from ..media import segments as seg_files
from .court import Court
from .errors import ClerkError
from .retrieve import clean_text
from .store import SessionSummary, read_manifest

log = logging.getLogger("kiosk.clerk.retention")

DEFAULT = "default"
DELETED_KINDS = ("transcript", "talkback")  # sealed sets that hold what was said; the session record stays
KEEP_FILES = ("status.json", ARTIFACT_RECORD, "worker.lock")  # no content; the sealed set's index stays
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def policy_for(settings: Settings, case_reference: str) -> tuple[str, RetentionPolicy]:
    """(case type, policy) for a case reference: the first type whose patterns match, else "default",
    else keep until an order."""
    ref = (case_reference or "").upper()
    for name, policy in settings.clerk.retention.items():
        if name != DEFAULT and any(fnmatch.fnmatchcase(ref, p.upper()) for p in policy.match):
            return name, policy
    if DEFAULT in settings.clerk.retention:
        return DEFAULT, settings.clerk.retention[DEFAULT]
    return DEFAULT, RetentionPolicy(until_order=True)


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def retention_status(settings: Settings, summary: SessionSummary, today: dt.date | None = None) -> dict:
    today = today or dt.datetime.now(dt.UTC).date()
    case_type, policy = policy_for(settings, summary.case_reference)
    keep_until = None
    if policy.keep_years is not None:
        try:
            recorded = dt.date.fromisoformat(summary.date)
        except ValueError:
            recorded = today
        keep_until = _add_years(recorded, policy.keep_years)
        rule = f"keep {policy.keep_years} year(s) from the recording date"
    elif policy.until is not None:
        keep_until = policy.until
        rule = f"keep until {policy.until.isoformat()}"
    else:
        rule = "keep until a court order"
    due = keep_until is not None and today >= keep_until
    return {"case_type": case_type, "rule": rule, "keep_until": keep_until.isoformat() if keep_until else None,
            "due": due, "text": f"{case_type}: {rule}" + (" (due for an order)" if due else "")}


@dataclass
class Deletion:
    session_id: str
    order: str
    date: str
    clerk: str
    entries: list[int]
    removed: list[str] = field(default_factory=list)
    already: bool = False

    def as_dict(self) -> dict:
        return {"session_id": self.session_id, "order": self.order, "date": self.date, "clerk": self.clerk,
                "entries": self.entries, "removed": self.removed, "already": self.already}


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _court_copies(court: Court, session_id: str) -> list[Path]:
    """Retrieved recordings and export packages of the session on this machine (all hold plaintext)."""
    root = Path(court.exports_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{session_id}-*") if p.name.startswith(f"{session_id}-")]
    found += [p for p in (root / "retrieved").glob(f"{session_id}-*")] if (root / "retrieved").is_dir() else []
    return sorted(found)


def _to_remove(court: Court, session_dir: Path, manifest: dict) -> list[Path]:
    out = [session_dir / s["file"] for s in manifest["segments"]]
    out += [seg_files.media_path(session_dir, s["index"]) for s in manifest["segments"]]
    for kind in DELETED_KINDS:
        folder = session_dir / ARTIFACT_FOLDERS[kind]
        if folder.is_dir():
            out += sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in KEEP_FILES)
    out += _court_copies(court, session_dir.name)
    return out


def _artifact_statements(signer: Signer, session_dir: Path, sid: str, order: str, date: str) -> list[tuple]:
    """One deletion statement per sealed artifact set that goes (transcript, talkback): what verification
    looks for to report "deleted by order" instead of "missing"."""
    out = []
    for kind in DELETED_KINDS:
        rec = artifact_record(session_dir, kind)
        if not rec.is_file():
            continue
        files = [f.get("file") for f in json.loads(rec.read_text()).get("files", [])]
        body = {"subject": artifacts_subject(sid, kind), "session": sid, "kind": kind, "order": order,
                "date": date, "files": sorted(files)}
        out.append((make_statement(signer, DELETED_BY_ORDER, body), f"{DELETED_BY_ORDER}-{kind}.json"))
    return out


def delete_by_order(court: Court, clerk: str | Signer, session_id: str, *, order: str, date: str | None = None,
                    note: str = "") -> Deletion:
    order = clean_text(order, "court order reference")
    date = date or dt.datetime.now(dt.UTC).date().isoformat()
    if not _DATE.match(date):
        raise ClerkError(f"order date {date!r}: expected YYYY-MM-DD")
    signer = clerk if isinstance(clerk, Signer) else court.clerk(clerk)
    session_dir = court.store.session_dir(session_id)
    manifest = read_manifest(session_dir)
    ledger = court.ledger
    sid = manifest["session"].get("id") or session_id
    if sid != session_id:
        raise ClerkError(f"folder {session_id} holds the manifest of session {sid}; delete it under its own id")

    existing = ledger.find(f"{DELETED_BY_ORDER}:{session_id}")
    if existing is not None:
        body = existing.statement["body"]
        if body.get("order") != order:
            raise ClerkError(f"session {session_id} was already deleted by order {body.get('order')} on "
                             f"{body.get('date')}")
        date = body["date"]  # finishing an interrupted deletion: same statements, same bytes
        session_body = body
    else:
        summary = court.store.summary(session_id, ledger)
        files = []
        for path in _to_remove(court, session_dir, manifest):
            rel = path.relative_to(session_dir).as_posix() if path.is_relative_to(session_dir) else \
                f"court copy: {path.name}"
            files.append({"file": rel, "sha256": _sha256(path) if path.is_file() else None})
        session_body = {"subject": session_id, "session": session_id, "order": order, "date": date,
                        "segments": [s["index"] for s in manifest["segments"]], "removed": files,
                        "retention": retention_status(court.settings, summary)["text"]}
        if note:
            session_body["note"] = clean_text(note, "note")
    stmts = [make_statement(signer, DELETED_BY_ORDER, {
        "subject": segment_subject(session_id, s["index"]), "session": session_id, "index": s["index"],
        "order": order, "date": date, "ciphertext_sha256": s["ciphertext_sha256"], "file": s["file"]})
        for s in manifest["segments"]]
    names = [f"{DELETED_BY_ORDER}-{seg_files.segment_name(s['index'])}.json" for s in manifest["segments"]]
    for stmt, name in _artifact_statements(signer, session_dir, sid, order, date):
        stmts.append(stmt)
        names.append(name)
    stmts.append(make_statement(signer, DELETED_BY_ORDER, session_body) if existing is None else existing.statement)
    names.append(f"{DELETED_BY_ORDER}-session.json")
    entries = ledger.append_many(stmts)  # all or nothing; a re-run gets the earlier entries back
    court.prove(entries, session_dir, names)
    court.prove_enrolment(signer, session_dir)
    log_event(log, "deletion ledgered", session=session_id, order=order, entries=[e.index for e in entries])

    removed = []
    for path in _to_remove(court, session_dir, manifest):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    for folder in {session_dir / "sealed", session_dir / "segments",
                   *(session_dir / ARTIFACT_FOLDERS[k] for k in DELETED_KINDS)}:
        if folder.is_dir():
            fsync_dir(folder)
    log_event(log, "deleted by order", session=session_id, order=order, files=len(removed))
    return Deletion(session_id=session_id, order=order, date=date, clerk=signer.actor,
                    entries=[e.index for e in entries], removed=removed, already=existing is not None)
