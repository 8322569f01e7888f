"""Seal what a session produces besides media: the transcript, the session record.

They are finished after the manifest (a transcript may catch up long after the interview), so they are
not listed in it. Instead each set is sealed like a segment — hashed, age-encrypted to the court, its
plaintext deleted — and tied to the session by one `artifacts-sealed` ledger statement signed by the
kiosk key, with an offline proof bundle beside the other proofs. `verify_artifacts` checks them.

Layout: `<session>/<folder>/<name>.age` for each file, and `<folder>/sealed.json` listing names, both
hashes and the ledger index. Files that hold no content (status.json) stay readable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..durable import fsync_dir, write_atomic
from ..errors import LedgerConflict, SealError
from .canonical import canonical_json
from .keys import Signer
from .ledger import LedgerAPI
from .seal import encrypt_and_hash, session_id_of
from .statement import make_statement

ARTIFACTS_SEALED = "artifacts-sealed"
RECORD_FILE = "sealed.json"
FOLDERS = {"transcript": "transcripts", "record": "record", "talkback": "talkback"}


def artifacts_subject(session_id: str, kind: str) -> str:
    return f"{session_id}/{kind}"


def record_path(session_dir: Path, kind: str) -> Path:
    return Path(session_dir) / FOLDERS[kind] / RECORD_FILE


def seal_artifacts(session_dir: Path, kind: str, files: list[Path], recipients: list[str], ledger: LedgerAPI,
                   signer: Signer, encrypt: Callable[..., dict] = encrypt_and_hash) -> dict:
    """Encrypt each file beside itself as NAME.age, ledger the set, then delete the plaintext.

    Idempotent: a set already sealed and ledgered is left alone (the ledger keeps one set per session
    and kind); a crash before the ledger step is finished on the next call."""
    if kind not in FOLDERS:
        raise SealError(f"unknown artifact kind {kind!r}")
    session_dir = Path(session_dir)
    sid = session_id_of(session_dir)
    rec_path = record_path(session_dir, kind)
    if rec_path.exists():
        record = json.loads(rec_path.read_text())
        if record.get("ledger_index") is not None:
            return record
    else:
        entries = []
        for path in sorted(files, key=lambda p: p.name):
            if path.parent != rec_path.parent:
                raise SealError(f"{path} is not in {rec_path.parent}")
            dst = path.with_name(path.name + ".age")
            tmp = path.with_name(f".{path.name}.age.tmp")
            info = encrypt(path, tmp, recipients)
            os.replace(tmp, dst)
            entries.append({"name": path.name, "file": dst.name, **info})
        fsync_dir(rec_path.parent)
        record = {"session": sid, "kind": kind, "files": entries, "recipients": sorted(recipients),
                  "ledger_index": None}
        write_atomic(rec_path, canonical_json(record))
    for entry in record["files"]:
        (rec_path.parent / entry["name"]).unlink(missing_ok=True)  # only the court can read it from here on
    body = {"subject": artifacts_subject(sid, kind), "session": sid, "kind": kind,
            "files": [{k: e[k] for k in ("file", "plaintext_sha256", "plaintext_size", "ciphertext_sha256",
                                         "ciphertext_size")} for e in record["files"]],
            "recipients": record["recipients"]}
    try:
        entry = ledger.append(make_statement(signer, ARTIFACTS_SEALED, body))
    except LedgerConflict as exc:
        raise SealError(f"ledger refused the {kind} of {sid}: {exc}") from None
    record["ledger_index"] = entry.index
    write_atomic(rec_path, canonical_json(record))
    return record


def sealed_kinds(session_dir: Path) -> list[str]:
    return [kind for kind in FOLDERS if record_path(session_dir, kind).exists()]


def verify_artifacts(session_dir: Path, sid: str, proven: dict, by_kiosk: Callable[[object], bool]) -> list:
    """Checks for every sealed artifact set: ciphertexts match the proven ledger statement."""
    from .verify import Check

    checks = []
    kinds = set(sealed_kinds(session_dir))
    kinds |= {k for k in FOLDERS if f"{ARTIFACTS_SEALED}:{artifacts_subject(sid, k)}" in proven}
    for kind in sorted(kinds):
        name = f"{kind} (sealed)"
        led = proven.get(f"{ARTIFACTS_SEALED}:{artifacts_subject(sid, kind)}")
        if led is None:
            checks.append(Check(name, False, "no proven artifacts-sealed ledger entry"))
            continue
        problems = []
        if not by_kiosk(led):
            problems.append("ledger entry not signed by the manifest's kiosk key")
        folder = Path(session_dir) / FOLDERS[kind]
        for item in led.statement["body"].get("files", []):
            path = folder / item["file"]
            if not path.exists():
                problems.append(f"{item['file']} is missing")
                continue
            data = path.read_bytes()
            if len(data) != item["ciphertext_size"] or hashlib.sha256(data).hexdigest() != item["ciphertext_sha256"]:
                problems.append(f"{item['file']} differs from the ledgered ciphertext")
        listed = {i["file"] for i in led.statement["body"].get("files", [])}
        for extra in sorted(folder.glob("*.age")):
            if extra.name not in listed:
                problems.append(f"{extra.name} is not in the ledgered set")
        checks.append(Check(name, not problems, "; ".join(problems) or
                            f"{len(listed)} file(s) match ledger entry {led.index}"))
    return checks
