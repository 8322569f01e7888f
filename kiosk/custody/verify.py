"""Offline verification of a sealed session (`kiosk verify`) and of a whole ledger (`kiosk ledger verify`).

Both return a list of checks `{item, ok, detail, status}`; the clerk portal shows them as they are, the
CLI prints them and exits 0 only if every check holds. A check names the thing it is about ("segment 3",
"manifest signature", "ledger entry 17") so a failure says what is wrong, not just that something is.

Trust: by default a session is checked against the keys it carries (kiosk key in the manifest, ledger
key in the proofs): that proves internal consistency. Pinning `kiosk_keys` / `ledger_keys` (from the
court's records, or the local data dir when run on the kiosk) anchors it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from . import merkle, sshsig
from .artifacts import verify_artifacts  # noqa: E402 (cycle-safe: artifacts imports verify lazily)
from .canonical import EncodingError, loads_canonical
from .checkpoint import CheckpointError, VerifierKey, verify_checkpoint
from .keys import KeyFileError, parse_openssh_public, public_raw
from .manifest import FORMAT, MANIFEST, NAMESPACE, SIGNATURE
from .proofs import BundleError, ProvenEntry, verify_bundle
from .statement import (
    DELETED_BY_ORDER,
    KEY_ENROLLED,
    MANIFEST_SEALED,
    SEGMENT_SEALED,
    StatementError,
    dedupe_key,
    parse_leaf_unchecked,
    verify_statement_leaf,
)

SPAN_TOLERANCE_S = 0.005  # consecutive segments must meet within this (rounding of session times)
PAUSE_SLACK_S = 1.0  # a pause may stop media up to this far from a segment's end (and resume likewise)
SEGMENT_FIELDS = ("index", "start", "end", "plaintext_sha256", "plaintext_size", "ciphertext_sha256",
                  "ciphertext_size", "file")


@dataclass
class Check:
    item: str
    ok: bool
    detail: str = ""
    status: str = ""  # "ok" | "failed" | "deleted-by-order" | "not-pinned"

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "ok" if self.ok else "failed"

    def as_dict(self) -> dict:
        return asdict(self)


def all_ok(checks: list[Check]) -> bool:
    return bool(checks) and all(c.ok for c in checks)


def failures(checks: list[Check]) -> list[str]:
    return [f"{c.item}: {c.detail}" for c in checks if not c.ok]


# ---------------------------------------------------------------- a sealed session


def verify_session(session_dir: Path, *, kiosk_keys: list[bytes] | None = None,
                   ledger_keys: list[VerifierKey] | None = None) -> list[Check]:
    session_dir = Path(session_dir)
    checks: list[Check] = []
    add = checks.append

    # -- manifest and its signature
    try:
        data = (session_dir / MANIFEST).read_bytes()
        manifest = loads_canonical(data, "manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise EncodingError(f"manifest is not a {FORMAT} document")
        for key in ("session", "segments", "unsealed", "events", "kiosk", "ledger"):
            if key not in manifest:
                raise EncodingError(f"manifest lacks {key!r}")
        add(Check("manifest", True, f"{len(manifest['segments'])} segment(s), session {manifest['session'].get('id')}"))
    except (OSError, EncodingError) as exc:
        add(Check("manifest", False, str(exc)))
        return checks

    sid = manifest["session"].get("id")
    try:
        claimed = parse_openssh_public(manifest["kiosk"]["key"])
        claimed_raw = public_raw(claimed)
    except (KeyFileError, KeyError, TypeError) as exc:
        add(Check("kiosk key", False, f"manifest names no usable kiosk key ({exc})"))
        add(Check("manifest signature", False, "cannot be checked without the kiosk key"))
        return checks
    if kiosk_keys is not None:
        if claimed_raw in kiosk_keys:
            add(Check("kiosk key", True, "matches a pinned kiosk key"))
        else:
            add(Check("kiosk key", False, "manifest is signed by a key that is not a pinned kiosk key"))
    else:
        add(Check("kiosk key", True, "taken from the manifest (pass a kiosk key to pin it)", "not-pinned"))
    try:
        sig_text = (session_dir / SIGNATURE).read_bytes().decode("ascii")
        sshsig.verify(sig_text, NAMESPACE, data, [claimed_raw] if kiosk_keys is None else kiosk_keys)
        add(Check("manifest signature", True, f"SSHSIG ({NAMESPACE}) by {manifest['kiosk'].get('id')}"))
    except (OSError, UnicodeDecodeError, sshsig.SSHSigError) as exc:
        add(Check("manifest signature", False, str(exc) or type(exc).__name__))

    # -- proof bundles
    try:
        manifest_vkey = VerifierKey.parse(manifest["ledger"]["vkey"])
    except (CheckpointError, KeyError, TypeError, AttributeError) as exc:
        add(Check("ledger key", False, f"manifest names no usable ledger key ({exc})"))
        return checks
    if ledger_keys is not None:
        trusted = ledger_keys
        ok = str(manifest_vkey) in {str(k) for k in ledger_keys}
        add(Check("ledger key", ok, "matches a pinned ledger key" if ok else "manifest's ledger key is not pinned"))
    else:
        trusted = [manifest_vkey]
        add(Check("ledger key", True, "taken from the manifest (pass a ledger key to pin it)", "not-pinned"))
    proven: dict[str, ProvenEntry] = {}  # dedupe key -> entry
    deleted: dict[str, ProvenEntry] = {}
    proofs_dir = session_dir / "proofs"
    bundle_files = sorted(proofs_dir.glob("*.json")) if proofs_dir.is_dir() else []
    checkpoint_sizes = set()
    for path in bundle_files:
        try:
            bundle = loads_canonical(path.read_bytes(), f"proof {path.name}")
            entry = verify_bundle(bundle, trusted)
        except (OSError, EncodingError, BundleError) as exc:
            add(Check(f"proof {path.name}", False, str(exc)))
            continue
        checkpoint_sizes.add(entry.checkpoint.size)
        key = dedupe_key(entry.statement)
        if entry.statement["type"] == DELETED_BY_ORDER:
            deleted[entry.statement["body"].get("subject", "")] = entry
        elif key:
            proven[key] = entry
    if not bundle_files:
        add(Check("ledger proofs", False, f"no proof bundles in {proofs_dir}"))
    elif checkpoint_sizes:
        add(Check("checkpoint", True, f"signed by {trusted[0].name}; tree size(s) {sorted(checkpoint_sizes)}"))

    actor = manifest["kiosk"].get("actor", "")
    kiosk_b64 = _b64(claimed_raw)
    enrol = proven.get(f"{KEY_ENROLLED}:{actor}/{kiosk_b64}")
    if enrol is None:
        add(Check("kiosk key enrolment", False, "no proven key-enrolled entry for the manifest's kiosk key"))
    elif enrol.statement["key"] not in {_b64(k.public) for k in trusted}:
        add(Check("kiosk key enrolment", False, "kiosk key was enrolled by a key that is not the ledger's"))
    else:
        add(Check("kiosk key enrolment", True, f"ledger entry {enrol.index}"))

    def by_kiosk(entry: ProvenEntry) -> bool:
        return entry.statement["key"] == kiosk_b64 and entry.statement["actor"] == actor

    # -- the manifest's own ledger entry
    m = proven.get(f"{MANIFEST_SEALED}:{sid}")
    if m is None:
        add(Check("manifest ledger entry", False, "no proven manifest-sealed entry for this session"))
    else:
        body = m.statement["body"]
        problems = []
        if body.get("manifest_sha256") != hashlib.sha256(data).hexdigest():
            problems.append("manifest hash differs from the ledgered one")
        try:
            if body.get("signature_sha256") != hashlib.sha256((session_dir / SIGNATURE).read_bytes()).hexdigest():
                problems.append("signature file differs from the ledgered one")
        except OSError:
            problems.append("signature file missing")
        if body.get("segments") != len(manifest["segments"]):
            problems.append("segment count differs from the ledgered one")
        if not by_kiosk(m):
            problems.append("entry not signed by the manifest's kiosk key")
        sealed_copy = session_dir / "manifest.json.age"
        if sealed_copy.exists() and hashlib.sha256(sealed_copy.read_bytes()).hexdigest() != body.get("ciphertext_sha256"):
            problems.append("manifest.json.age differs from the ledgered ciphertext")
        add(Check("manifest ledger entry", not problems, "; ".join(problems) or f"ledger entry {m.index}"))

    # -- every segment: ciphertext, ledger entry
    segs = manifest["segments"]
    listed_files = set()
    for seg in segs:
        if not isinstance(seg, dict) or any(k not in seg for k in SEGMENT_FIELDS):
            add(Check("segment ?", False, "malformed segment record in the manifest"))
            continue
        name = f"segment {seg['index']}"
        subject = f"{sid}/seg-{seg['index']:06d}"
        listed_files.add(seg["file"])
        path = session_dir / seg["file"]
        order = deleted.get(subject)
        if not path.exists() and order is not None:
            refused = order_problem(order, sid, proven, trusted)
            b = order.statement["body"]
            if refused is None:
                add(Check(name, True, f"deleted by order {b.get('order')} on {b.get('date')}", "deleted-by-order"))
            else:
                add(Check(name, False, f"ciphertext {seg['file']} is missing; its deletion statement does not "
                          f"count: {refused}"))
            continue
        problems = []
        if not path.exists():
            problems.append(f"ciphertext {seg['file']} is missing")
        else:
            digest, size = _sha256_file(path)
            if size != seg["ciphertext_size"]:
                problems.append(f"ciphertext size {size} != manifest {seg['ciphertext_size']}")
            if digest != seg["ciphertext_sha256"]:
                problems.append("ciphertext SHA-256 differs from the manifest")
        led = proven.get(f"{SEGMENT_SEALED}:{subject}")
        if led is None:
            problems.append("no proven ledger entry")
        else:
            body = led.statement["body"]
            differing = [k for k in SEGMENT_FIELDS if body.get(k) != seg[k]]
            if differing:
                problems.append(f"ledger entry {led.index} differs from the manifest in {', '.join(differing)}")
            if body.get("session") != sid:
                problems.append("ledger entry is for another session")
            if not by_kiosk(led):
                problems.append("ledger entry not signed by the manifest's kiosk key")
        add(Check(name, not problems, "; ".join(problems) or
                  f"ciphertext and ledger entry {led.index if led else '?'} match the manifest"))
    sealed_dir = session_dir / "sealed"
    if sealed_dir.is_dir():
        for extra in sorted(sealed_dir.glob("*.age")):
            if f"sealed/{extra.name}" not in listed_files:
                add(Check(f"file sealed/{extra.name}", False, "ciphertext not listed in the manifest"))
    for un in manifest.get("unsealed") or []:
        add(Check(f"segment {un.get('index')}", False, f"never sealed ({un.get('reason')})"))

    # -- transcript and session record, sealed after the manifest
    checks.extend(_deleted_artifacts(verify_artifacts(session_dir, sid, proven, by_kiosk), session_dir, sid,
                                     proven, deleted, trusted))

    # -- order and continuity
    add(_order_check(segs, manifest.get("unsealed") or []))
    checks.extend(_continuity_checks(segs, manifest["events"]))
    checks.extend(_working_copy_checks(session_dir, manifest))
    return checks


# session.json fields that never change once the session is created (its state does)
FIXED_SESSION_FIELDS = ("id", "room_id", "case_reference", "interviewee_pseudonym", "interviewer", "language",
                        "created_wall")


def _working_copy_checks(session_dir: Path, manifest: dict) -> list[Check]:
    """The plain event log and session.json beside the manifest are what people read first: they must say
    what the signed manifest says. Events logged after sealing may follow; an edited one fails."""
    out = []
    path = session_dir / "events.jsonl"
    if path.is_file():
        signed = manifest["events"]
        lines = path.read_bytes().splitlines()
        problem = ""
        for n, expected in enumerate(signed):
            try:
                same = n < len(lines) and json.loads(lines[n]) == expected
            except (json.JSONDecodeError, UnicodeDecodeError):
                same = False
            if not same:
                problem = (f"events.jsonl line {n + 1} differs from the signed manifest's event log"
                           if n < len(lines) else f"events.jsonl ends at line {n}, the manifest lists {len(signed)}")
                break
        later = max(0, len(lines) - len(signed))
        out.append(Check("event log", not problem, problem or f"events.jsonl holds the manifest's {len(signed)} "
                         f"event(s)" + (f" and {later} logged after sealing" if later else "")))
    path = session_dir / "session.json"
    if path.is_file():
        try:
            info = json.loads(path.read_bytes())
            changed = [k for k in FIXED_SESSION_FIELDS if info.get(k) != manifest["session"].get(k)]
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            changed = ["(unreadable)"]
        out.append(Check("session facts", not changed, f"session.json differs from the manifest: {', '.join(changed)}"
                         if changed else "session.json says what the manifest says"))
    return out


def _deleted_artifacts(checks: list[Check], session_dir: Path, sid: str, proven: dict[str, ProvenEntry],
                       deleted: dict[str, ProvenEntry], trusted: list[VerifierKey]) -> list[Check]:
    """A sealed transcript (or talkback) whose ciphertexts are all gone under a proven court order is
    reported as deleted by that order, not as missing."""
    from .artifacts import ARTIFACTS_SEALED, FOLDERS, artifacts_subject

    out = []
    for check in checks:
        kind = check.item.removesuffix(" (sealed)")
        order = deleted.get(artifacts_subject(sid, kind))
        led = proven.get(f"{ARTIFACTS_SEALED}:{artifacts_subject(sid, kind)}")
        if check.ok or kind not in FOLDERS or order is None or led is None:
            out.append(check)
            continue
        files = [i.get("file") for i in led.statement["body"].get("files", [])]
        if any((Path(session_dir) / FOLDERS[kind] / f).exists() for f in files):
            out.append(check)  # some ciphertext is still there: judge it as it is
            continue
        refused = order_problem(order, sid, proven, trusted)
        b = order.statement["body"]
        out.append(Check(check.item, True, f"deleted by order {b.get('order')} on {b.get('date')}", "deleted-by-order")
                   if refused is None else
                   Check(check.item, False, f"ciphertexts are missing; their deletion statement does not count: {refused}"))
    return out


def by_order_ok(entry: ProvenEntry) -> bool:
    body = entry.statement["body"]
    return bool(body.get("order")) and bool(body.get("date"))


def order_problem(entry: ProvenEntry, session_id: str, proven: dict[str, ProvenEntry],
                  trusted: list[VerifierKey]) -> str | None:
    """Why a proven deletion statement does not excuse a missing segment, or None if it does: it must
    name an order and a date, be about this session, and be signed by a key the ledger enrolled as a
    clerk's (proven by a key-enrolled bundle in the proofs), so a kiosk key can never delete evidence."""
    stmt, body = entry.statement, entry.statement["body"]
    if not by_order_ok(entry):
        return "it names no order or date"
    if body.get("session") != session_id:
        return "it is about another session"
    enrol = proven.get(f"{KEY_ENROLLED}:{stmt['actor']}/{stmt['key']}")
    if enrol is None:
        return f"no proven enrolment of the key of {stmt['actor']}"
    if enrol.statement["key"] not in {_b64(k.public) for k in trusted} or enrol.statement["body"].get("role") != "clerk":
        return f"{stmt['actor']} was not enrolled as a clerk by the ledger"
    return None


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _sha256_file(path: Path) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _order_check(segs: list, unsealed: list) -> Check:
    try:
        indices = [s["index"] for s in segs] + [u["index"] for u in unsealed]
    except (TypeError, KeyError):
        return Check("segment order", False, "malformed segment list")
    listed = [s["index"] for s in segs]
    if listed != sorted(listed) or len(set(listed)) != len(listed):
        return Check("segment order", False, f"segments are not in strictly increasing order: {listed}")
    if not indices:
        return Check("segment order", True, "no segments recorded")
    full = sorted(indices)
    missing = sorted(set(range(full[0], full[-1] + 1)) - set(full))
    if missing or full[0] not in (0, 1):
        what = f"missing index(es) {missing}" if missing else f"first index is {full[0]}"
        return Check("segment order", False, what)
    return Check("segment order", True, f"indexes {full[0]}..{full[-1]} without holes")


def _continuity_checks(segs: list, events: list) -> list[Check]:
    out = []
    try:
        pauses = sorted(e["t"] for e in events if e.get("type") == "session-pause")
        resumes = sorted(e["t"] for e in events if e.get("type") == "session-resume")
    except (TypeError, KeyError):
        return [Check("continuity", False, "event log is malformed")]
    problems = 0
    ordered = sorted((s for s in segs if isinstance(s, dict) and "index" in s), key=lambda s: s["index"])
    for seg in ordered:
        if not (isinstance(seg.get("start"), int | float) and isinstance(seg.get("end"), int | float)) \
                or seg["end"] < seg["start"]:
            out.append(Check(f"segment {seg['index']} span", False, f"bad span {seg.get('start')}..{seg.get('end')}"))
            problems += 1
    for cur, nxt in zip(ordered, ordered[1:], strict=False):
        if not all(isinstance(x.get(k), int | float) for x in (cur, nxt) for k in ("start", "end")):
            continue
        gap = nxt["start"] - cur["end"]
        name = f"continuity {cur['index']}->{nxt['index']}"
        if gap < -SPAN_TOLERANCE_S:
            out.append(Check(name, False, f"segments overlap by {-gap:.3f} s"))
            problems += 1
        elif gap > SPAN_TOLERANCE_S:
            paused = any(abs(p - cur["end"]) <= PAUSE_SLACK_S and any(
                p < r and abs(r - nxt["start"]) <= PAUSE_SLACK_S for r in resumes) for p in pauses)
            if paused:
                out.append(Check(name, True, f"gap of {gap:.3f} s during a recorded pause"))
            else:
                out.append(Check(name, False, f"gap of {gap:.3f} s with no pause in the event log"))
                problems += 1
    if not problems:
        out.append(Check("continuity", True, f"{len(ordered)} segment span(s) meet end to start"))
    return out


# ---------------------------------------------------------------- the whole ledger


def verify_ledger(db_path: Path, ledger_keys: list[VerifierKey], origin: str | None = None,
                  workers: int = 1) -> list[Check]:
    """Recompute the tree from every stored leaf, compare every stored node, check every checkpoint's
    signature and root, consistency between consecutive checkpoints, every statement's signature and
    that its key was enrolled (by the ledger's key) before it was used."""
    checks: list[Check] = []
    add = checks.append
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        # read text columns as bytes: a flipped byte must be reported against its row, not crash the read
        leaves = db.execute("SELECT idx, CAST(leaf AS BLOB), CAST(dedupe AS BLOB) FROM entries ORDER BY idx").fetchall()
        stored_nodes = db.execute("SELECT level, idx, hash FROM nodes ORDER BY level, idx").fetchall()
        notes = db.execute("SELECT size, CAST(note AS BLOB) FROM checkpoints ORDER BY size").fetchall()
        db.close()
    except sqlite3.Error as exc:
        return [Check("ledger database", False, f"{db_path}: {exc}")]
    ledger_pubs = {_b64(k.public) for k in ledger_keys}
    tree = merkle.MemoryTree()
    enrolled: set[tuple[str, str]] = set()
    bad_entries = 0
    # Ed25519 verification holds the GIL, so big ledgers are checked in forked worker processes
    # (only when asked: forking is safe in the single-threaded CLI, not inside the running kiosk)
    if workers > 1 and len(leaves) >= 20_000:
        chunks = [leaves[i:i + 4096] for i in range(0, len(leaves), 4096)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parsed = [r for part in pool.map(_check_leaves, chunks) for r in part]
    else:
        parsed = _check_leaves(leaves)
    for expected, ((idx, leaf, dedupe), (stmt, error)) in enumerate(zip(leaves, parsed, strict=True)):
        if idx != expected:
            add(Check(f"ledger entry {expected}", False, f"missing (next stored index is {idx})"))
            bad_entries += 1
            break
        tree.append(merkle.leaf_hash(bytes(leaf)))
        if error is not None:
            add(Check(f"ledger entry {idx}", False, error))
            bad_entries += 1
            continue
        problems = []
        expected_key = dedupe_key(stmt)
        if dedupe != (None if expected_key is None else expected_key.encode()):
            problems.append("stored dedupe key does not match the statement")
        if stmt["type"] == KEY_ENROLLED and stmt["key"] in ledger_pubs:
            body = stmt["body"]
            enrolled.add((body.get("actor"), body.get("key")))
        elif (stmt["actor"], stmt["key"]) not in enrolled:
            problems.append(f"signed by a key of {stmt['actor']} not enrolled before this entry")
        if problems:
            add(Check(f"ledger entry {idx}", False, "; ".join(problems)))
            bad_entries += 1
    if not bad_entries:
        add(Check("ledger entries", True, f"{len(leaves)} statement(s), signatures and enrolment verified"))

    # stored nodes must be exactly the recomputed perfect subtrees
    expected_nodes = sum(len(level) for level in tree.levels)
    mismatched = []
    for level, idx, h in stored_nodes:
        try:
            if tree.node(level, idx) != h:
                mismatched.append((level, idx))
        except IndexError:
            mismatched.append((level, idx))
    if mismatched or len(stored_nodes) != expected_nodes:
        add(Check("tree nodes", False, f"{len(mismatched)} stored node(s) differ from the recomputed tree "
                  f"(first {mismatched[:3]}); {len(stored_nodes)} stored, {expected_nodes} expected"))
    else:
        add(Check("tree nodes", True, f"{len(stored_nodes)} node hashes match the recomputed tree"))

    # checkpoints: signature, root, and consistency between consecutive ones
    previous = None
    for size, note in notes:
        name = f"checkpoint {size}"
        try:
            cp = verify_checkpoint(bytes(note).decode("utf-8"), ledger_keys, origin)
        except UnicodeDecodeError:
            add(Check(name, False, "signed note is not UTF-8 text"))
            continue
        except CheckpointError as exc:
            add(Check(name, False, str(exc)))
            continue
        if cp.size != size:
            add(Check(name, False, f"stored under size {size} but says {cp.size}"))
            continue
        if size > tree.size:
            add(Check(name, False, f"covers {size} entries but the ledger holds {tree.size}"))
            continue
        if tree.root(size) != cp.root:
            add(Check(name, False, "root hash differs from the recomputed tree"))
            continue
        if previous is not None and previous.size > 0:
            try:
                merkle.verify_consistency(previous.size, cp.size, previous.root, cp.root,
                                          tree.consistency_proof(previous.size, cp.size))
            except merkle.ProofError as exc:
                add(Check(f"consistency {previous.size}->{size}", False, str(exc)))
                continue
        add(Check(name, True, "signature, root and consistency with the previous checkpoint hold"))
        previous = cp
    if not notes:
        add(Check("checkpoints", True, "no checkpoints stored yet"))
    return checks


def _check_leaves(rows: list[tuple]) -> list[tuple[dict | None, str | None]]:
    """Parse and verify stored leaves: (statement, None) or (None, what is wrong)."""
    out: list[tuple[dict | None, str | None]] = []
    for _idx, leaf, _dedupe in rows:
        leaf = bytes(leaf)
        try:
            stmt = parse_leaf_unchecked(leaf)
            if verify_statement_leaf(stmt) != leaf:  # canonical form and signature in one pass
                raise StatementError("stored leaf is not the canonical form of its statement")
            out.append((stmt, None))
        except StatementError as exc:
            out.append((None, str(exc)))
    return out


def parse_vkeys(values: list[str]) -> list[VerifierKey]:
    out = []
    for v in values:
        p = Path(v)
        text = p.read_text().strip() if p.exists() else v
        out.append(VerifierKey.parse(text))
    return out

