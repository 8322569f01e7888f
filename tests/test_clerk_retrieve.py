"""Retrieval on a real sealed demo session: the access is on the ledger (and proven) before a byte is
decrypted; the MP4 joins every segment without re-encoding and plays; a wrong identity, a wrong
passphrase, a tampered or truncated segment, or a plaintext that differs from the manifest each give a
clear error and leave no partial file behind."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from kiosk.clerk import retrieve as retrieve_mod
from kiosk.clerk.court import Court
from kiosk.clerk.errors import IdentityError, RetrievalError
from kiosk.clerk.retrieve import retrieve
from kiosk.clerk.store import read_manifest
from kiosk.config import Settings
from kiosk.custody.canonical import canonical_json
from kiosk.custody.ledger import Ledger
from kiosk.custody.ledger_service import _read_tokens, create_app, ensure_tokens

from .clerk_support import CLERK, age_passphrase_encrypt, court_copy, open_court
from .conftest import ffprobe

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root, sid = court_copy(tmp_path_factory, "clerk-retrieve")
    court = open_court(root)
    yield root, sid, court
    court.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_access_is_ledgered_and_proven_before_anything_is_decrypted(demo, tmp_path, monkeypatch):
    root, sid, court = demo
    session_dir = court.store.session_dir(sid)
    out = tmp_path / "out" / "recording.mp4"
    seen = []
    real = retrieve_mod.decrypt_segment

    def observed(ciphertext, plaintext, identities):
        # the instrumented decrypt: the ledger and the session's proofs already hold this access
        entry = court.ledger.find(f"accessed:{sid}/accessed/1")
        assert entry is not None, "decrypting before the access is on the ledger"
        assert entry.statement["body"]["purpose"] == "Preparation of the hearing"
        proof = json.loads((session_dir / "proofs" / "accessed-1.json").read_bytes())
        assert proof["leaf_index"] == entry.index and proof["tree_size"] > entry.index
        assert not out.exists()
        seen.append((entry.index, Path(ciphertext).name))
        return real(ciphertext, plaintext, identities)

    monkeypatch.setattr(retrieve_mod, "decrypt_segment", observed)
    size_before = court.ledger.size()
    result = retrieve(court, CLERK, sid, purpose="Preparation of the hearing", order="ORDER-2027-001", out=out)
    manifest = read_manifest(session_dir)
    assert [name for _, name in seen] == [Path(s["file"]).name for s in manifest["segments"]]
    assert result.accessed_index == size_before  # the access was the next entry
    # the ledger's timestamp of the access precedes the MP4's existence on disk
    stmt_time = court.ledger.entry(result.accessed_index).statement["time"]
    appended = dt.datetime.fromisoformat(stmt_time.replace("Z", "+00:00")).timestamp()
    assert appended <= out.stat().st_mtime
    assert result.clerk == f"clerk:{CLERK}"

    # one MP4, faststart, every segment's packets, playable
    head = out.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < head.find(b"mdat") or head.find(b"mdat") < 0
    info = ffprobe(out)
    codecs = [s["codec_name"] for s in info["streams"]]
    assert codecs[0] == "h264" and set(codecs[1:]) == {"opus"} and len(codecs) >= 4
    roles = [s.get("tags", {}).get("handler_name") for s in info["streams"][1:]]
    assert roles[:3] == ["mix", "interviewer", "witness"]  # the mix, then one track per microphone role
    span = manifest["segments"][-1]["end"] - manifest["segments"][0]["start"]
    assert abs(float(info["format"]["duration"]) - span) < 0.1
    frames = int(info["streams"][0]["nb_read_packets"])
    assert frames >= 30 * span - 2
    assert _leftovers(out.parent) == ["recording.mp4"]
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_a_wrong_identity_is_refused_before_the_ledger_or_the_disk(demo, tmp_path):
    root, sid, court = demo
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    size = court.ledger.size()
    out = tmp_path / "o" / "r.mp4"
    with pytest.raises(IdentityError, match="not one of the recipients"):
        retrieve(court, CLERK, sid, purpose="p", order="o", out=out, identity_file=other)
    assert court.ledger.size() == size and not out.parent.exists()


def test_a_passphrase_protected_identity_from_age_p_opens_and_a_wrong_passphrase_does_not(demo, tmp_path):
    if not shutil.which("age"):
        pytest.skip("needs the age CLI")
    root, sid, court = demo
    protected = tmp_path / "court-identity.age"
    age_passphrase_encrypt(root / "demo-court" / "court-identity.txt", protected, "correct horse battery")
    size = court.ledger.size()
    out = tmp_path / "o" / "r.mp4"
    with pytest.raises(IdentityError, match="wrong passphrase"):
        retrieve(court, CLERK, sid, purpose="p", order="o", out=out, identity_file=protected, passphrase="nope")
    with pytest.raises(IdentityError, match="passphrase-protected"):
        retrieve(court, CLERK, sid, purpose="p", order="o", out=out, identity_file=protected)
    assert court.ledger.size() == size and not out.exists()
    result = retrieve(court, CLERK, sid, purpose="Appeal", order="ORDER-2027-002", out=out,
                      identity_file=protected, passphrase=lambda: "correct horse battery")
    assert result.path == out and out.stat().st_size > 0


def _session_copy(court, sid: str, tmp_path: Path) -> Path:
    """A copy of the sealed session inside the court's store under a new id (same ledger entries)."""
    src = court.store.session_dir(sid)
    dst = court.store.root / f"{sid}-t{len(list(court.store.root.iterdir()))}"
    shutil.copytree(src, dst)
    return dst


def _no_partial(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".retrieve-")] if out.parent.exists() else True


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_a_damaged_segment_is_a_clear_error_and_no_partial_mp4_is_left(demo, tmp_path, damage):
    root, sid, court = demo
    session_dir = court.store.session_dir(sid)
    backup = tmp_path / "seg2.age"
    target = session_dir / "sealed" / "seg-000002.mp4.age"
    shutil.copy(target, backup)
    data = bytearray(backup.read_bytes())
    if damage == "tampered":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) - 1000]
    try:
        target.write_bytes(bytes(data))
        out = tmp_path / "out" / "recording.mp4"
        # by default the pre-flight verification refuses it before the access is even logged
        size = court.ledger.size()
        with pytest.raises(RetrievalError, match="segment 2: ciphertext"):
            retrieve(court, CLERK, sid, purpose="p", order="o", out=out)
        assert court.ledger.size() == size
        _no_partial(out)
        # without it, age itself refuses the segment mid-way: segment 1 was already written, and is gone
        with pytest.raises(RetrievalError, match=r"segment 2 \(sealed/seg-000002.mp4.age\): ciphertext is damaged"):
            retrieve(court, CLERK, sid, purpose="p", order="o", out=out, verify_first=False)
        _no_partial(out)
        assert out.parent.is_dir() and _leftovers(out.parent) == []
    finally:
        shutil.copy(backup, target)


def test_a_plaintext_that_differs_from_the_manifest_is_refused(demo, tmp_path):
    root, sid, court = demo
    copy = _session_copy(court, sid, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_bytes())
    manifest["segments"][2]["plaintext_sha256"] = "0" * 64
    (copy / "manifest.json").write_bytes(canonical_json(manifest))
    out = tmp_path / "out" / "recording.mp4"
    with pytest.raises(RetrievalError, match="does not verify"):
        retrieve(court, CLERK, copy.name, purpose="p", order="o", out=out)
    with pytest.raises(RetrievalError, match="segment 3: decrypted bytes differ from the manifest"):
        retrieve(court, CLERK, copy.name, purpose="p", order="o", out=out, verify_first=False)
    _no_partial(out)
    shutil.rmtree(copy)


def test_purpose_and_order_are_required(demo, tmp_path):
    root, sid, court = demo
    size = court.ledger.size()
    for purpose, order in (("", "ORDER-1"), ("Hearing", "  "), ("x" * 600, "ORDER-1"), ("a\x00b", "ORDER-1")):
        with pytest.raises(Exception, match="purpose|order"):
            retrieve(court, CLERK, sid, purpose=purpose, order=order, out=tmp_path / "r.mp4")
    assert court.ledger.size() == size
    assert not os.path.exists(tmp_path / "r.mp4")


def test_clerk_mode_on_a_court_machine_uses_the_ledger_service(demo, tmp_path):
    """A court machine with its own data dir, a copy of the sealed store and the court ledger as a
    service: the clerk is enrolled through the service and the access is proven by it before decrypting."""
    root, sid, court = demo
    client_path, admin_path = ensure_tokens(root / "data")
    host_ledger = Ledger.open(root / "data", court.ledger.origin)
    app = create_app(host_ledger, _read_tokens(client_path), _read_tokens(admin_path))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    settings = Settings()
    settings.storage.data_dir = tmp_path / "court-machine"
    settings.custody.ledger_url = url
    settings.custody.ledger_vkey = court.ledger.vkey
    settings.custody.ledger_token_file = str(client_path)
    settings.custody.ledger_enrol_token_file = str(admin_path)  # the court's own machine enrols its clerks
    settings.clerk.store_dir = court.store.root
    settings.clerk.identity_file = root / "demo-court" / "court-identity.txt"
    remote = Court(settings)
    try:
        remote.add_clerk("remote-clerk", "remote clerk password")
        assert [s.id for s in remote.search(case="DEMO")] == [sid]
        result = retrieve(remote, "remote-clerk", sid, purpose="Review", order="ORDER-2027-77",
                          out=tmp_path / "remote.mp4")
        entry = court.ledger.find(f"accessed:{result.accessed_subject}")  # on the court's one ledger
        assert entry is not None and entry.statement["actor"] == "clerk:remote-clerk"
        assert all(c.ok for c in remote.verify(sid))
        assert result.path.stat().st_size > 0
        assert not (tmp_path / "court-machine" / "ledger").exists()  # no ledger of its own
    finally:
        remote.close()
        server.should_exit = True
        thread.join(timeout=10)
        host_ledger.close()
