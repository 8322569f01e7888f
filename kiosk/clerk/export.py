"""Export package: everything a judge or party needs, and everything anyone needs to re-check it with
public tools (sha256sum, age, ssh-keygen, ffprobe) and `kiosk verify`.

    <name>/README.txt              what is here and the commands that re-check it ("$ " lines)
    <name>/recording.mp4           the reassembled recording (faststart)
    <name>/transcripts/            unedited machine transcript (VTT, SRT, JSON, printable HTML), if any
    <name>/record/                 session record (JSON + printable HTML), if any
    <name>/verification-report.html
    <name>/session/                the sealed session as `kiosk verify` reads it: signed manifest,
                                   SSHSIG signature, allowed_signers, sealed segments (age), offline
                                   ledger proofs (including this access and this export)
    <name>/keys/                   kiosk and ledger public keys, court recipients, the clerk's key
    <name>/ciphertexts.sha256      the manifest's ciphertext hashes, in sha256sum form
    <name>/SHA256SUMS              every file above (but the export's own ledger proof, which names it)
    <name>.zip                     the same, zipped

Order: retrieve (access ledgered first), build in a private temporary folder, ledger the "exported"
statement (naming the SHA-256 of SHA256SUMS) and wait for its proof, then move into place and zip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import av
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..custody.artifacts import ARTIFACTS_SEALED, artifacts_subject
from ..custody.artifacts import FOLDERS as ARTIFACT_FOLDERS
from ..custody.artifacts import RECORD_FILE as ARTIFACT_RECORD
from ..custody.artifacts import record_path as artifact_record
from ..custody.canonical import canonical_json
from ..custody.keys import Signer
from ..custody.manifest import ALLOWED_SIGNERS, MANIFEST, NAMESPACE, SEALED_MANIFEST, SIGNATURE
from ..custody.sealer import PROOFS_DIR
from ..custody.statement import utc_now_iso
from ..custody.verify import all_ok, verify_session
from ..durable import fsync_dir
from ..logs import event as log_event
from .court import Court
from .errors import ClerkError, RetrievalError
from .identity import Passphrase, load_court_identity
from .retrieve import Retrieval, check_identity, clean_text, decrypt_segment, retrieve
from .store import EXPORTED_KIND, read_manifest

log = logging.getLogger("kiosk.clerk.export")

TEMPLATES = Path(__file__).resolve().parent / "templates"
RECORDING = "recording.mp4"
README = "README.txt"
REPORT = "verification-report.html"
SUMS = "SHA256SUMS"
CIPHERTEXT_SUMS = "ciphertexts.sha256"
TRANSCRIPT_FILES = ("transcript.vtt", "transcript.srt", "transcript.json", "transcript.html")
RECORD_FILES = ("session-record.json", "session-record.html")
STORED_SUFFIXES = (".mp4", ".age", ".zip")  # already compressed: zip them as they are


@dataclass
class ExportResult:
    session_id: str
    name: str
    dir: Path
    zip: Path
    zip_sha256: str
    sums_sha256: str
    exported_index: int
    exported_subject: str
    retrieval: Retrieval
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"session_id": self.session_id, "name": self.name, "dir": str(self.dir), "zip": str(self.zip),
                "zip_sha256": self.zip_sha256, "sums_sha256": self.sums_sha256,
                "exported_index": self.exported_index, "exported_subject": self.exported_subject,
                "retrieval": self.retrieval.as_dict(), "notes": self.notes}


def templates() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       keep_trailing_newline=True)


def sha256_path(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def probe(path: Path) -> dict:
    """Streams and duration of the exported MP4, for the report (what ffprobe will show)."""
    with av.open(str(path)) as c:
        streams = [{"index": s.index, "type": s.type, "codec": s.codec_context.name,
                    "title": s.metadata.get("handler_name") or s.metadata.get("title") or "",
                    "detail": (f"{s.codec_context.width}x{s.codec_context.height}" if s.type == "video"
                               else f"{s.codec_context.sample_rate} Hz")}
                   for s in c.streams]
        duration = c.duration / 1_000_000 if c.duration else None
    return {"streams": streams, "duration": duration}


def sealed_artifacts(court: Court, session_dir: Path, sid: str, kind: str) -> dict | None:
    """The ledgered `artifacts-sealed` body of a session's transcript/record/talkback, if it was sealed."""
    if not artifact_record(session_dir, kind).exists():
        return None
    entry = court.ledger.find(f"{ARTIFACTS_SEALED}:{artifacts_subject(sid, kind)}")
    if entry is None:
        raise ClerkError(f"the {kind} of {sid} is sealed but not on the ledger (yet): try again later")
    return entry.statement["body"]


def _open_sealed(body: dict, src: Path, dst: Path, identities: list, wanted: tuple[str, ...]) -> list[str]:
    """Decrypt the wanted files of a sealed set, each checked against the ledgered plaintext hash."""
    opened = []
    for item in body.get("files", []):
        name = item["file"].removesuffix(".age")
        if name not in wanted:
            continue
        dst.mkdir(parents=True, exist_ok=True)
        try:
            digest, size = decrypt_segment(src / item["file"], dst / name, identities)
        except Exception as exc:  # pyrage.DecryptError, OSError
            raise RetrievalError(f"{src.name}/{item['file']}: does not decrypt ({exc})") from None
        if digest != item["plaintext_sha256"] or size != item["plaintext_size"]:
            raise RetrievalError(f"{src.name}/{item['file']}: decrypted bytes differ from the ledgered statement")
        opened.append(name)
    return opened


def _transcripts(court: Court, session_dir: Path, sid: str, pkg: Path, identities: list,
                 notes: list[str], sealed_folders: list[str]) -> list[str]:
    src = session_dir / "transcripts"
    body = sealed_artifacts(court, session_dir, sid, "transcript")
    if body is not None:
        copied = _open_sealed(body, src, pkg / "transcripts", identities, TRANSCRIPT_FILES)
        sealed_folders.append("transcripts")
    else:
        copied = []
        for name in TRANSCRIPT_FILES:
            if (src / name).is_file():
                _copy(src / name, pkg / "transcripts" / name)
                copied.append(name)
    try:
        state = json.loads((src / "status.json").read_text()).get("state", "unknown")
    except (OSError, ValueError):
        state = "none"
    if state != "complete":
        notes.append(f"transcript: {state} (the package holds what exists now; a complete transcript can be "
                     "exported later)")
    return copied


def _record_hashes(manifest: dict) -> dict[str, str]:
    """File -> SHA-256 of the session record as the signed manifest lists it (facts entry in the session
    record's format), if the kiosk bound it there."""
    from ..examination.record import FORMAT as RECORD_FORMAT

    facts = manifest.get("facts") or {}
    for value in facts.values() if isinstance(facts, dict) else []:
        if isinstance(value, dict) and value.get("format") == RECORD_FORMAT:
            return {f.get("file"): f.get("sha256") for f in value.get("files", []) if isinstance(f, dict)}
    return {}


def _record(court: Court, session_dir: Path, sid: str, manifest: dict, pkg: Path, identities: list,
            notes: list[str], sealed_folders: list[str]) -> list[str]:
    src = session_dir / "record"
    out = pkg / "record"
    body = sealed_artifacts(court, session_dir, sid, "record")
    if body is not None:
        sealed_folders.append("record")
        return _open_sealed(body, src, out, identities, RECORD_FILES)
    if all((src / n).is_file() for n in RECORD_FILES):
        listed = _record_hashes(manifest)
        if not listed:
            notes.append("session record: copied from the store; nothing signed or ledgered lists its hashes")
        for name in RECORD_FILES:
            _copy(src / name, out / name)
            want = listed.get(f"record/{name}")
            if want and want != sha256_path(out / name):
                raise ClerkError(f"record/{name} differs from the hash in the signed manifest")
        return list(RECORD_FILES)
    # no record written at the kiosk: build it from the session's log, which the signed manifest holds
    from ..custody.manifest import read_events
    from ..examination.record import build_record, render_html

    if read_events(session_dir) != manifest.get("events"):
        notes.append("session record: not included (the event log differs from the signed manifest's)")
        return []
    record = build_record(session_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "session-record.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    (out / "session-record.html").write_text(render_html(record))
    notes.append("session record: built at export from the event log in the signed manifest")
    return list(RECORD_FILES)


def _session_copy(session_dir: Path, manifest: dict, pkg: Path) -> None:
    dst = pkg / "session"
    for name in (MANIFEST, SIGNATURE, ALLOWED_SIGNERS, SEALED_MANIFEST):
        if (session_dir / name).is_file():
            _copy(session_dir / name, dst / name)
    for seg in manifest["segments"]:
        _copy(session_dir / seg["file"], dst / seg["file"])
    for proof in sorted((session_dir / PROOFS_DIR).glob("*.json")):
        _copy(proof, dst / PROOFS_DIR / proof.name)
    for folder in ARTIFACT_FOLDERS.values():  # sealed transcript, record, talkback: as verify reads them
        if (session_dir / folder / ARTIFACT_RECORD).is_file():
            for path in [session_dir / folder / ARTIFACT_RECORD, *sorted((session_dir / folder).glob("*.age"))]:
                _copy(path, dst / folder / path.name)


def _keys(court: Court, manifest: dict, signer: Signer, session_dir: Path, pkg: Path) -> None:
    keys = pkg / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "kiosk.pub").write_text(manifest["kiosk"]["key"].strip() + "\n")
    _copy(session_dir / ALLOWED_SIGNERS, keys / ALLOWED_SIGNERS)
    (keys / "ledger.vkey").write_text(str(court.ledger_keys[0]) + "\n")
    (keys / "court-recipients.txt").write_text("".join(f"{r}\n" for r in manifest.get("recipients") or []))
    (keys / f"{signer.actor.replace(':', '-')}.pub").write_text(signer.openssh_public() + "\n")


def _write_sums(pkg: Path, skip: set[str]) -> str:
    lines = []
    for path in sorted(p for p in pkg.rglob("*") if p.is_file()):
        rel = path.relative_to(pkg).as_posix()
        if rel not in skip:
            lines.append(f"{sha256_path(path)}  {rel}\n")
    data = "".join(lines).encode()
    (pkg / SUMS).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _zip(pkg: Path, target: Path) -> str:
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for path in sorted(p for p in pkg.rglob("*") if p.is_file()):
                arc = f"{pkg.name}/{path.relative_to(pkg).as_posix()}"
                method = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                zf.write(path, arc, compress_type=method)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha256_path(target)


def export_session(court: Court, clerk: str | Signer, session_id: str, *, purpose: str, order: str,
                   passphrase: Passphrase = None, identity_file: Path | None = None) -> ExportResult:
    purpose = clean_text(purpose, "stated purpose")
    order = clean_text(order, "order or reference")
    signer = clerk if isinstance(clerk, Signer) else court.clerk(clerk)
    session_dir = court.store.session_dir(session_id)
    manifest = read_manifest(session_dir)
    identities = load_court_identity(identity_file or court.identity_file, passphrase)
    check_identity(identities, manifest, session_id)

    court.exports_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(court.exports_dir) / f".export-{secrets.token_hex(6)}"
    work.mkdir(mode=0o700)
    notes: list[str] = []
    try:
        name = f"{session_id}-{secrets.token_hex(4)}"  # renamed once the request id is known
        pkg = work / name
        pkg.mkdir(mode=0o700)
        retrieval = retrieve(court, signer, session_id, purpose=purpose, order=order, out=pkg / RECORDING,
                             identities=identities, also=["transcript", "session record"])
        final_name = f"{session_id}-{retrieval.request}"
        pkg = pkg.rename(work / final_name)
        recording = pkg / RECORDING

        sid = manifest["session"].get("id") or session_id
        sealed_folders: list[str] = []
        transcripts = _transcripts(court, session_dir, sid, pkg, identities, notes, sealed_folders)
        record = _record(court, session_dir, sid, manifest, pkg, identities, notes, sealed_folders)
        _session_copy(session_dir, manifest, pkg)
        _keys(court, manifest, signer, session_dir, pkg)
        (pkg / CIPHERTEXT_SUMS).write_text("".join(f"{s['ciphertext_sha256']}  {s['file']}\n"
                                                   for s in manifest["segments"]))
        checks = verify_session(pkg / "session", kiosk_keys=court.kiosk_keys, ledger_keys=court.ledger_keys)
        if not all_ok(checks):
            raise ClerkError("the package's copy of the sealed session does not verify: "
                             + "; ".join(f"{c.item}: {c.detail}" for c in checks if not c.ok))
        media = probe(recording)
        exported_at = utc_now_iso()
        info = manifest["session"]
        context = {
            "session": info, "session_id": session_id, "manifest": manifest, "kiosk_id": manifest["kiosk"]["id"],
            "namespace": NAMESPACE, "retrieval": retrieval, "checks": checks, "ok": all_ok(checks),
            "media": media, "transcripts": transcripts, "record": record, "notes": notes,
            "exported_at": exported_at, "clerk": signer.actor, "ledger_vkey": str(court.ledger_keys[0]),
            "recording_sha256": retrieval.sha256, "name": final_name,
            "segments": manifest["segments"],
            "last_end": max(s["end"] for s in manifest["segments"]),
            "pinned_kiosk": court.kiosk_keys is not None,
            "sealed_folders": sealed_folders,
        }
        env = templates()
        (pkg / REPORT).write_text(env.get_template("report.html").render(**context))
        (pkg / README).write_text(env.get_template("readme.txt").render(**context))
        sums_sha = _write_sums(pkg, skip={SUMS})

        # the export goes on the ledger (and is proven) before the package is handed out
        entry = court.record(signer, EXPORTED_KIND, session_id, {
            "purpose": purpose, "order": order, "request": retrieval.request, "package": final_name,
            "sha256sums_sha256": sums_sha, "recording_sha256": retrieval.sha256,
            "accessed": retrieval.accessed_subject})
        subject = entry.statement["body"]["subject"]
        proof_name = f"{EXPORTED_KIND}-{subject.rsplit('/', 1)[1]}.json"
        court.prove([entry], session_dir, [proof_name])
        _copy(session_dir / PROOFS_DIR / proof_name, pkg / "session" / PROOFS_DIR / proof_name)

        target = court.exports_dir / final_name
        if target.exists():
            raise ClerkError(f"{target} exists already")
        os.replace(pkg, target)
        fsync_dir(court.exports_dir)
        retrieval.path = target / RECORDING
    finally:
        shutil.rmtree(work, ignore_errors=True)
    zip_path = court.exports_dir / f"{final_name}.zip"
    zip_sha = _zip(target, zip_path)
    (court.exports_dir / f"{final_name}.json").write_bytes(canonical_json({
        "session": session_id, "package": final_name, "zip_sha256": zip_sha, "sums_sha256": sums_sha,
        "exported": subject, "ledger_index": entry.index, "clerk": signer.actor, "time": exported_at}))
    log_event(log, "session exported", session=session_id, package=final_name, entry=entry.index, clerk=signer.actor)
    return ExportResult(session_id=session_id, name=final_name, dir=target, zip=zip_path, zip_sha256=zip_sha,
                        sums_sha256=sums_sha, exported_index=entry.index, exported_subject=subject,
                        retrieval=retrieval, notes=notes)


def list_exports(court: Court, session_id: str | None = None) -> list[dict]:
    out = []
    root = Path(court.exports_dir)
    if not root.is_dir():
        return out
    for meta in sorted(root.glob("*.json")):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if session_id and data.get("session") != session_id:
            continue
        data["zip_present"] = (root / f"{data.get('package')}.zip").is_file()
        out.append(data)
    return out


def export_zip(court: Court, session_id: str, package: str) -> Path:
    """The zip of one of the session's exports (for download); refuses names outside the exports folder."""
    for data in list_exports(court, session_id):
        if data.get("package") == package and data["zip_present"]:
            return Path(court.exports_dir) / f"{package}.zip"
    raise ClerkError(f"no export {package!r} of session {session_id}")


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()
