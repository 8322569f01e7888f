"""The sealed store as the clerk sees it: one folder per session with its signed manifest. Listing and
search read the manifest (signed facts: case reference, room, date, pseudonym) and ask the ledger what
happened since (exported, deleted by order); nothing here decrypts.

States: `sealed` (every session with a manifest), `transcript-pending` (no complete transcript yet),
`exported` (an "exported" statement is on the ledger), `deleted-by-order` (the session's recording was
deleted by a court order; the manifest and the ledger keep the proof of what existed)."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..custody.canonical import EncodingError, loads_canonical
from ..custody.ledger import LedgerAPI
from ..custody.manifest import FORMAT, MANIFEST
from ..custody.statement import DELETED_BY_ORDER
from .errors import ClerkError, SessionUnknown

SEALED = "sealed"
TRANSCRIPT_PENDING = "transcript-pending"
EXPORTED = "exported"
DELETED = "deleted-by-order"
STATES = (SEALED, TRANSCRIPT_PENDING, EXPORTED, DELETED)
STATE_LABELS = {SEALED: "sealed", TRANSCRIPT_PENDING: "transcript pending", EXPORTED: "exported",
                DELETED: "deleted by order"}
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
ACCESSED_KIND = "accessed"
EXPORTED_KIND = "exported"


def numbered_subject(session_id: str, kind: str, n: int) -> str:
    """Clerk actions on a session are numbered per kind (`<sid>/accessed/3`): the ledger's one-entry-per-
    subject rule then lets anyone count them with lookups alone."""
    return f"{session_id}/{kind}/{n}"


def count_numbered(ledger: LedgerAPI, session_id: str, kind: str) -> list:
    out = []
    n = 1
    while (entry := ledger.find(f"{kind}:{numbered_subject(session_id, kind, n)}")) is not None:
        out.append(entry)
        n += 1
    return out


@dataclass
class SessionSummary:
    id: str
    case_reference: str
    room: str
    date: str
    created_wall: str
    pseudonym: str  # the interviewee is never shown beyond this
    language: str
    segments: int
    duration_s: float
    transcript: str  # complete | pending | none
    state: str
    states: list[str]
    accesses: int = 0
    exports: int = 0
    deleted: dict | None = None  # {"order", "date", "by"}
    retention: dict = field(default_factory=dict)
    dir: Path | None = None

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["dir"] = str(self.dir) if self.dir else None
        d["state_label"] = self.state_label
        return d


def read_manifest(session_dir: Path) -> dict:
    try:
        manifest = loads_canonical((Path(session_dir) / MANIFEST).read_bytes(), "manifest")
    except FileNotFoundError:
        raise SessionUnknown(f"{Path(session_dir).name}: not sealed (no manifest)") from None
    except (OSError, EncodingError) as exc:
        raise ClerkError(f"{Path(session_dir).name}: manifest unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ClerkError(f"{Path(session_dir).name}: not a {FORMAT} manifest")
    return manifest


def transcript_state(session_dir: Path) -> str:
    path = Path(session_dir) / "transcripts" / "status.json"
    try:
        status = json.loads(path.read_text())
    except FileNotFoundError:
        return "none"
    except (OSError, ValueError):
        return "pending"
    return "complete" if status.get("state") == "complete" else "pending"


class SealedStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def session_dir(self, session_id: str) -> Path:
        if not SESSION_ID.match(session_id or ""):
            raise SessionUnknown(f"not a session id: {session_id!r}")
        path = self.root / session_id
        if not (path / MANIFEST).exists():
            raise SessionUnknown(f"no sealed session {session_id} in {self.root}")
        return path

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file() and SESSION_ID.match(p.name))

    def summary(self, session_id: str, ledger: LedgerAPI, retention=None) -> SessionSummary:
        session_dir = self.session_dir(session_id)
        manifest = read_manifest(session_dir)
        info = manifest.get("session") or {}
        segs = [s for s in manifest.get("segments") or [] if isinstance(s, dict)]
        duration = sum(max(0.0, float(s.get("end", 0)) - float(s.get("start", 0))) for s in segs)
        created = info.get("created_wall") or ""
        deleted_entry = ledger.find(f"{DELETED_BY_ORDER}:{session_id}")
        deleted = None
        if deleted_entry is not None:
            body = deleted_entry.statement["body"]
            deleted = {"order": body.get("order"), "date": body.get("date"), "by": deleted_entry.statement["actor"],
                       "index": deleted_entry.index}
        accesses = len(count_numbered(ledger, session_id, ACCESSED_KIND))
        exports = len(count_numbered(ledger, session_id, EXPORTED_KIND))
        transcript = transcript_state(session_dir)
        states = [SEALED]
        if deleted:
            states = [DELETED]
        else:
            if transcript != "complete":
                states.append(TRANSCRIPT_PENDING)
            if exports:
                states.append(EXPORTED)
        primary = next(s for s in (DELETED, EXPORTED, TRANSCRIPT_PENDING, SEALED) if s in states)
        summary = SessionSummary(
            id=session_id, case_reference=str(info.get("case_reference") or ""), room=str(info.get("room_id") or ""),
            date=created[:10], created_wall=created, pseudonym=str(info.get("interviewee_pseudonym") or ""),
            language=str(info.get("language") or ""), segments=len(segs), duration_s=round(duration, 3),
            transcript=transcript, state=primary, states=states, accesses=accesses, exports=exports,
            deleted=deleted, dir=session_dir)
        if retention is not None:
            summary.retention = retention(summary)
        return summary

    def search(self, ledger: LedgerAPI, *, case: str = "", date: str = "", date_from: str = "", date_to: str = "",
               room: str = "", state: str = "", retention=None) -> list[SessionSummary]:
        """Sessions matching every given filter. `case`: substring or shell pattern of the case reference
        (case-insensitive); `date`: YYYY-MM-DD (or a prefix: 2027-03); `state`: one of STATES."""
        if state and state not in STATES:
            raise ClerkError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        out = []
        for sid in self.ids():
            try:
                s = self.summary(sid, ledger, retention)
            except ClerkError:
                continue
            if case:
                ref, want = s.case_reference.lower(), case.lower()
                if not (want in ref or fnmatch.fnmatchcase(ref, want)):
                    continue
            if date and not s.date.startswith(date):
                continue
            if date_from and s.date < date_from:
                continue
            if date_to and s.date > date_to:
                continue
            if room and s.room != room:
                continue
            if state and state not in s.states:
                continue
            out.append(s)
        return sorted(out, key=lambda s: (s.created_wall, s.id), reverse=True)
