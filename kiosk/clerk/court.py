"""The court side in one object: settings, the sealed store, the ledger, clerk accounts, the keys the
court trusts, and the court identity's location. `kiosk clerk ...` and the clerk portal both hold one.

Clerk mode runs on a court machine with its own data dir (DATA): the court's ledger (in-process at
DATA/ledger, or the ledger service named by custody.ledger_url), clerk accounts (DATA/clerks.json) and
their signing keys (DATA/clerk/keys), exports (DATA/clerk/exports), and a copy of the sealed store
(clerk.store_dir, default DATA/sessions). The court identity file stays where the court keeps it."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Settings
from ..custody.canonical import canonical_json
from ..custody.checkpoint import VerifierKey
from ..custody.keys import Signer, parse_openssh_public, public_raw
from ..custody.ledger import LedgerAPI, enrolment_subject
from ..custody.proofs import BundleError, verify_bundle
from ..custody.sealer import PROOFS_DIR, open_ledger
from ..custody.statement import KEY_ENROLLED
from ..custody.verify import Check, verify_session
from ..durable import write_atomic
from ..errors import LedgerConflict
from ..logs import event as log_event
from .accounts import ClerkAccounts
from .errors import ClerkError
from .store import SealedStore

log = logging.getLogger("kiosk.clerk")

CLERK_ROLE = "clerk"


class Court:
    def __init__(self, settings: Settings, *, data_dir: Path | None = None, ledger: LedgerAPI | None = None,
                 identity_file: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir or settings.storage.data_dir)
        c = settings.clerk
        self.store = SealedStore(Path(c.store_dir) if c.store_dir else self.data_dir / "sessions")
        self.exports_dir = Path(c.exports_dir) if c.exports_dir else self.data_dir / "clerk" / "exports"
        self.identity_file = Path(identity_file) if identity_file else c.identity_file
        self._own_ledger = ledger is None
        self.ledger = ledger or open_ledger(settings, self.data_dir)
        self.accounts = ClerkAccounts(self.data_dir)
        self.ledger_keys = [VerifierKey.parse(self.ledger.vkey)]
        self.kiosk_keys = self._kiosk_keys(c.kiosk_keys)

    @staticmethod
    def _kiosk_keys(items: list[str]) -> list[bytes] | None:
        if not items:
            return None
        out = []
        for item in items:
            p = Path(item)
            text = p.read_text() if len(item) < 4096 and "\n" not in item and p.exists() else item
            out.append(public_raw(parse_openssh_public(text)))
        return out

    def close(self) -> None:
        if self._own_ledger and hasattr(self.ledger, "close"):
            self.ledger.close()

    def __enter__(self) -> Court:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ clerks

    def add_clerk(self, name: str, password: str, replace: bool = False) -> Signer:
        """Create (or re-password) a clerk account and enrol its signing key at the ledger as a clerk."""
        self.accounts.add(name, password, replace=replace)
        signer = self.accounts.signer(name)
        self.enrol(signer)
        return signer

    def enrol(self, signer: Signer) -> None:
        if self.ledger.is_enrolled(signer.actor, signer.public_b64):
            return
        try:
            self.ledger.enroll(signer.actor, signer.public_b64, CLERK_ROLE)
        except LedgerConflict as exc:
            raise ClerkError(
                f"{exc}. Enrol the clerk's key on the ledger host: `kiosk ledger enrol --actor {signer.actor} "
                f"--role clerk --key {self.accounts.key_path(signer.actor.split(':', 1)[1])}.pub`") from None

    def clerk(self, name: str) -> Signer:
        """The signing key of an existing clerk, enrolled at the ledger (enrolled now if needed)."""
        signer = self.accounts.signer(name)
        self.enrol(signer)
        return signer

    # ------------------------------------------------------------ proofs and verification

    def prove(self, entries: list, session_dir: Path, names: list[str]) -> list[dict]:
        """Wait for the entries' inclusion: one fresh signed checkpoint, an inclusion proof per entry,
        each checked here against the pinned ledger key, then kept in the session's proofs folder (so
        `kiosk verify` and exports carry them)."""
        note = self.ledger.checkpoint()
        bundles = []
        for entry, name in zip(entries, names, strict=True):
            bundle = self.ledger.bundle(entry.index, note)
            try:
                proven = verify_bundle(bundle, self.ledger_keys)
            except BundleError as exc:
                raise ClerkError(f"the ledger's proof for entry {entry.index} does not verify: {exc}") from None
            if proven.index != entry.index or proven.statement != entry.statement:
                raise ClerkError(f"the ledger proved another statement than entry {entry.index}")
            write_atomic(Path(session_dir) / PROOFS_DIR / name, canonical_json(bundle))
            bundles.append(bundle)
        return bundles

    def prove_enrolment(self, signer: Signer, session_dir: Path) -> None:
        entry = self.ledger.find(f"{KEY_ENROLLED}:{enrolment_subject(signer.actor, signer.public_b64)}")
        if entry is None:
            raise ClerkError(f"the key of {signer.actor} is not enrolled at the ledger")
        tail = signer.actor.replace(":", "-")
        self.prove([entry], session_dir, [f"{KEY_ENROLLED}-{tail}.json"])

    def verify(self, session_id: str) -> list[Check]:
        checks = verify_session(self.store.session_dir(session_id), kiosk_keys=self.kiosk_keys,
                                ledger_keys=self.ledger_keys)
        log_event(log, "session verified", session=session_id, ok=all(c.ok for c in checks))
        return checks

    def record(self, signer: Signer, kind: str, session_id: str, body: dict):
        """Append a numbered clerk statement (`<sid>/<kind>/<n>`, n = next free number) and return its entry.
        Two clerks racing for the same number: the ledger refuses the second, which takes the next one."""
        from ..custody.statement import make_statement
        from .store import count_numbered, numbered_subject

        for _ in range(50):
            n = len(count_numbered(self.ledger, session_id, kind)) + 1
            subject = numbered_subject(session_id, kind, n)
            stmt = make_statement(signer, kind, {"subject": subject, "session": session_id, **body})
            try:
                entry = self.ledger.append(stmt)
            except LedgerConflict:
                if self.ledger.find(f"{kind}:{subject}") is not None:
                    continue  # taken meanwhile
                raise
            if not entry.existing:
                return entry
        raise ClerkError(f"could not number the {kind} statement of {session_id} (ledger busy); try again")

    # ------------------------------------------------------------ the store, with retention

    def retention(self, summary) -> dict:
        from .retention import retention_status

        return retention_status(self.settings, summary)

    def summary(self, session_id: str):
        return self.store.summary(session_id, self.ledger, self.retention)

    def search(self, **filters) -> list:
        return self.store.search(self.ledger, retention=self.retention, **filters)

    def history(self, session_id: str) -> list[dict]:
        """The clerk statements about a session on the ledger (accesses, exports, deletion), oldest first."""
        from ..custody.statement import DELETED_BY_ORDER
        from .store import ACCESSED_KIND, EXPORTED_KIND, count_numbered

        entries = count_numbered(self.ledger, session_id, ACCESSED_KIND)
        entries += count_numbered(self.ledger, session_id, EXPORTED_KIND)
        deleted = self.ledger.find(f"{DELETED_BY_ORDER}:{session_id}")
        if deleted is not None:
            entries.append(deleted)
        out = []
        for e in sorted(entries, key=lambda e: e.index):
            s = e.statement
            b = s["body"]
            out.append({"index": e.index, "type": s["type"], "time": s["time"], "actor": s["actor"],
                        "purpose": b.get("purpose"), "order": b.get("order"), "date": b.get("date"),
                        "package": b.get("package"), "subject": b.get("subject")})
        return out
