"""The one entry point the station uses: seal segments as they close, finish a session with a signed
manifest and offline proofs, and recover half-done work at start-up.

Sealing runs on a background thread (the caller never blocks); the CPU-heavy hash+encrypt pass runs
in a single lower-priority worker process by default, so the media threads never compete with it for the GIL.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..config import Settings
from ..durable import write_atomic
from ..errors import KioskError, LedgerConflict, SealError
from ..logs import event as log_event
from ..media import segments
from .artifacts import ARTIFACTS_SEALED, artifacts_subject, seal_artifacts, sealed_kinds
from .canonical import canonical_json
from .keys import Signer, kiosk_signer
from .ledger import LedgerAPI, enrolment_subject
from .manifest import seal_manifest
from .seal import (
    HOLDER,
    RecoveryReport,
    encrypt_and_hash,
    load_records,
    recover_sealing,
    seal_segment,
    session_id_of,
)
from .statement import KEY_ENROLLED, MANIFEST_SEALED, SEGMENT_SEALED
from .worker import EncryptWorker

log = logging.getLogger("kiosk.custody.sealer")

SESSIONS_DIR = "sessions"
PROOFS_DIR = "proofs"
FACTS_FILE = "facts.json"


def open_ledger(settings: Settings, data_dir: Path) -> LedgerAPI:
    """The configured ledger: HTTP when custody.ledger_url is set, else in-process in the data dir."""
    c = settings.custody
    if c.ledger_url:
        from .ledger_service import LedgerClient

        return LedgerClient(c.ledger_url, token=read_token_file(c.ledger_token_file, "custody.ledger_token_file"),
                            expect_vkey=c.ledger_vkey or None,
                            enrol_token=read_token_file(c.ledger_enrol_token_file, "custody.ledger_enrol_token_file"))
    from .ledger import Ledger

    return Ledger.open(data_dir, c.ledger_origin)


def read_token_file(path: str, key: str) -> str | None:
    """A bearer token from a file only its owner can read; a readable-by-others file is refused, since a
    token that leaked from it would let anyone append to (or, the admin token, enrol keys on) the ledger."""
    if not path:
        return None
    p = Path(path)
    try:
        mode = p.stat().st_mode & 0o777
        token = p.read_text().strip()
    except OSError as exc:
        raise KioskError(f"{key}: cannot read {p}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise KioskError(f"{key}: {p} is readable by others (mode {mode:04o}); chmod 600 it")
    if not token:
        raise KioskError(f"{key}: {p} is empty")
    return token


def ensure_enrolled(ledger: LedgerAPI, signer: Signer, role: str = "kiosk") -> None:
    if ledger.is_enrolled(signer.actor, signer.public_b64):
        return
    try:
        ledger.enroll(signer.actor, signer.public_b64, role)
    except LedgerConflict as exc:
        raise LedgerConflict(
            f"{exc}. The key of {signer.actor} is not enrolled at the ledger: on the ledger host run "
            f"`kiosk ledger enrol --actor {signer.actor} --key <kiosk_ed25519.pub>`, or point "
            "custody.ledger_enrol_token_file at its admin token") from None


def proof_name(stmt_type: str, subject_tail: str) -> str:
    return f"{stmt_type}-{subject_tail}.json"


def write_proofs(session_dir: Path, ledger: LedgerAPI, signer: Signer) -> list[Path]:
    """Offline proof bundles for every ledger entry of the session, all against one fresh checkpoint."""
    session_dir = Path(session_dir)
    sid = session_id_of(session_dir)
    wanted: list[tuple[str, int]] = []
    enrol = ledger.find(f"{KEY_ENROLLED}:{enrolment_subject(signer.actor, signer.public_b64)}")
    if enrol is None:
        raise SealError(f"kiosk key of {signer.actor} is not enrolled at the ledger")
    wanted.append((proof_name(KEY_ENROLLED, "kiosk"), enrol.index))
    for rec in load_records(session_dir):
        wanted.append((proof_name(SEGMENT_SEALED, segments.segment_name(rec.index)), rec.ledger_index))
    manifest_entry = ledger.find(f"{MANIFEST_SEALED}:{sid}")
    if manifest_entry is None:
        raise SealError(f"manifest of {sid} is not in the ledger")
    wanted.append((proof_name(MANIFEST_SEALED, "session"), manifest_entry.index))
    for kind in sealed_kinds(session_dir):
        entry = ledger.find(f"{ARTIFACTS_SEALED}:{artifacts_subject(sid, kind)}")
        if entry is not None:
            wanted.append((proof_name(ARTIFACTS_SEALED, kind), entry.index))
    note = ledger.checkpoint()
    out_dir = session_dir / PROOFS_DIR
    written = []
    for name, index in wanted:
        bundle = ledger.bundle(index, note)
        path = out_dir / name
        write_atomic(path, canonical_json(bundle))
        written.append(path)
    return written


@dataclass
class _SessionWork:
    pending: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)


class Sealer:
    """Seal-as-you-go for one kiosk.

    Sealer(settings, data_dir, ledger=None, recipients=None, isolate=True)
      .on_segment_closed(session_dir, seg_index)   enqueue; returns at once; thread-safe
      .wait(session_dir, timeout=None) -> bool      True when nothing of the session is pending
      .finish_session(session, facts) -> dict       {"manifest", "verified", ...} (waits, seals, signs, proves)
      .recover(data_dir=None) -> list[RecoveryReport]
      .close()
    """

    def __init__(self, settings: Settings, data_dir: Path | None = None, *, ledger: LedgerAPI | None = None,
                 recipients: list[str] | None = None, isolate: bool = True) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir or settings.storage.data_dir)
        self.kiosk_id = settings.custody.kiosk_id
        self.signer = kiosk_signer(self.data_dir, self.kiosk_id)
        self.recipients = list(recipients if recipients is not None else
                               [r.recipient for r in settings.custody.recipients])
        if not self.recipients:
            raise SealError("no court recipients configured (custody.recipients in the kiosk settings)")
        self._own_ledger = ledger is None
        self.ledger = ledger or open_ledger(settings, self.data_dir)
        self._enrolled = False
        self._ensure_enrolled()  # an unreachable remote ledger must not stop recording: retried later
        self._worker = EncryptWorker() if isolate else None
        self._queue: queue.Queue[tuple[Path, int] | None] = queue.Queue()
        self._cond = threading.Condition()
        self._work: dict[Path, _SessionWork] = {}
        self._thread = threading.Thread(target=self._run, name="sealer", daemon=True)
        self._thread.start()

    def _ensure_enrolled(self) -> bool:
        if self._enrolled:
            return True
        try:
            ensure_enrolled(self.ledger, self.signer)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("ledger unreachable (%s): segments are sealed now and ledgered when it answers", exc)
            return False
        self._enrolled = True
        return True

    # ------------------------------------------------------------ seal as you go

    def on_segment_closed(self, session_dir: Path, seg: int | segments.SegmentIndex) -> None:
        """Called by the recorder when a segment file is complete. Never blocks (one file touch: the
        seal hold, so no other holder's release can delete the plaintext before it is sealed)."""
        index = seg if isinstance(seg, int) else seg.index
        key = Path(session_dir).resolve()
        media = segments.media_path(key, index)
        if media.exists():
            segments.hold(media, HOLDER)
        with self._cond:
            work = self._work.setdefault(key, _SessionWork())
            if index in work.pending:
                return
            work.pending.add(index)
        self._queue.put((key, index))

    def _encrypt(self, src, dst, recipients) -> dict:
        if self._worker is None:
            return encrypt_and_hash(src, dst, recipients)
        return self._worker(src, dst, recipients)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            session_dir, index = job
            error = None
            try:
                self._ensure_enrolled()
                seg = segments.read_index(segments.index_path(session_dir, index))
                seal_segment(session_dir, seg, self.recipients, self.ledger, self.signer, encrypt=self._encrypt)
            except Exception as exc:  # kept for finish_session/recovery; plaintext stays in place
                error = f"{type(exc).__name__}: {exc}"
                log.error("sealing segment %s of %s failed: %s", index, session_dir.name, error)
            with self._cond:
                work = self._work[session_dir]
                work.pending.discard(index)
                if error:
                    work.failed[index] = error
                else:
                    work.failed.pop(index, None)
                self._cond.notify_all()

    def wait(self, session_dir: Path, timeout: float | None = None) -> bool:
        key = Path(session_dir).resolve()
        with self._cond:
            return self._cond.wait_for(lambda: not self._work.get(key, _SessionWork()).pending, timeout)

    def failures(self, session_dir: Path) -> dict[int, str]:
        with self._cond:
            return dict(self._work.get(Path(session_dir).resolve(), _SessionWork()).failed)

    # ------------------------------------------------------------ session end

    def finish_session(self, session, facts: dict, timeout: float | None = None) -> dict:
        """Wait for pending seals, seal anything left, write and ledger the signed manifest and the offline
        proofs, then verify the sealed session. `session` is a kiosk.session.Session or its directory.

        Returns {"manifest": path, "verified": bool, "verify_failures": [...], "segments_sealed": n,
        "ledger_size": n}: the demo summary merges it."""
        session_dir = Path(getattr(session, "dir", session)).resolve()
        write_atomic(session_dir / FACTS_FILE, canonical_json(facts))  # lets recovery redo the manifest
        if not self._ensure_enrolled():
            raise SealError(f"ledger unreachable: {session_dir.name} is sealed to the court but its manifest and "
                            "ledger entries will be completed by `kiosk seal recover` or the next start-up")
        if not self.wait(session_dir, timeout):
            raise SealError(f"sealing of {session_dir.name} did not finish in {timeout} s")
        report = recover_sealing(session_dir, self.recipients, self.ledger, self.signer, encrypt=self._encrypt)
        if report.failed:
            log.error("session %s ends with unsealed segments: %s", session_dir.name, report.failed)
        path = seal_manifest(session_dir, facts, kiosk_id=self.kiosk_id, signer=self.signer,
                             ledger=self.ledger, recipients=self.recipients)
        write_proofs(session_dir, self.ledger, self.signer)
        from .checkpoint import VerifierKey
        from .verify import all_ok, failures, verify_session

        checks = verify_session(session_dir, kiosk_keys=[self.signer.public_raw],
                                ledger_keys=[VerifierKey.parse(self.ledger.vkey)])
        result = {"manifest": str(path), "verified": all_ok(checks), "verify_failures": failures(checks),
                  "segments_sealed": len(load_records(session_dir)), "ledger_size": self.ledger.size()}
        log_event(log, "session sealed", session=session_dir.name, verified=result["verified"],
                  segments=result["segments_sealed"])
        return result

    def seal_artifacts(self, session_dir: Path, kind: str, files: list[Path]) -> dict:
        """Seal a finished transcript or session record (see artifacts.py) and refresh the session's
        offline proofs so they include it. Runs in the caller's thread."""
        session_dir = Path(session_dir).resolve()
        if not self._ensure_enrolled():
            raise SealError(f"ledger unreachable: the {kind} of {session_dir.name} stays unsealed until it answers")
        record = seal_artifacts(session_dir, kind, files, self.recipients, self.ledger, self.signer,
                                encrypt=self._encrypt)
        if (session_dir / "manifest.json").exists():
            write_proofs(session_dir, self.ledger, self.signer)
        log_event(log, "artifacts sealed", session=session_dir.name, kind=kind, files=len(record["files"]))
        return record

    # ------------------------------------------------------------ start-up

    def recover(self, data_dir: Path | None = None) -> list[RecoveryReport]:
        """Finish half-done seals in every session, and write the manifest and proofs of every ended
        session that lacks them (including sessions ended by the recorder's crash recovery)."""
        import json

        root = Path(data_dir or self.data_dir) / SESSIONS_DIR
        reports = []
        ledger_ok = self._ensure_enrolled()
        for session_dir in sorted(p for p in root.glob("*") if (p / "session.json").exists()):
            report = recover_sealing(session_dir, self.recipients, self.ledger, self.signer, encrypt=self._encrypt)
            reports.append(report)
            try:
                state = json.loads((session_dir / "session.json").read_text()).get("state")
            except json.JSONDecodeError:
                state = None
            facts_path = session_dir / FACTS_FILE
            done = (session_dir / PROOFS_DIR / proof_name(MANIFEST_SEALED, "session")).exists()
            if state == "ended" and not done and ledger_ok and not report.failed:
                facts = json.loads(facts_path.read_bytes()) if facts_path.exists() else self._fallback_facts()
                try:
                    seal_manifest(session_dir, facts, kiosk_id=self.kiosk_id, signer=self.signer,
                                  ledger=self.ledger, recipients=self.recipients)
                    write_proofs(session_dir, self.ledger, self.signer)
                except (SealError, LedgerConflict, OSError, httpx.HTTPError) as exc:
                    log.error("could not complete the manifest of %s: %s", session_dir.name, exc)
                    report.failed[0] = f"manifest: {exc}"
                    continue
                log_event(log, "session manifest completed after restart", session=session_dir.name)
        return reports

    def _fallback_facts(self) -> dict:
        """Facts for a session the kiosk did not end itself (ended by crash recovery)."""
        from .. import __version__

        return {"kiosk_id": self.kiosk_id, "software": {"name": "testimony-kiosk", "version": __version__},
                "recovered": True,
                "note": "device facts were not recorded: the kiosk stopped before the session ended normally"}

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self._worker is not None:
            self._worker.close()
        if self._own_ledger and hasattr(self.ledger, "close"):
            self.ledger.close()

