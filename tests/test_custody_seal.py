"""Sealing: age interop, SSHSIG interop, idempotence, crash recovery (every step and kill -9), and what
the kiosk's data dir may hold afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyrage
import pytest
from pyrage import x25519

from kiosk.config import CourtRecipient, Settings
from kiosk.custody import seal as seal_mod
from kiosk.custody.fixtures import make_session
from kiosk.custody.keys import demo_court_identity, find_age_secret_keys, kiosk_signer, load_identity
from kiosk.custody.ledger import Ledger
from kiosk.custody.manifest import seal_manifest
from kiosk.custody.sealer import Sealer, write_proofs
from kiosk.custody.verify import all_ok, failures, verify_ledger, verify_session
from kiosk.errors import SealError
from kiosk.media import segments

ORIGIN = "testimony-kiosk/ledger"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def court(tmp_path):
    data = tmp_path / "data"
    identity, recipient = demo_court_identity(data)
    return data, identity, recipient


def _settings(data: Path) -> Settings:
    s = Settings()
    s.storage.data_dir = data
    return s


def _segment_entries(ledger: Ledger) -> list[dict]:
    out = []
    for _, leaf in ledger.iter_entries():
        stmt = json.loads(leaf)
        if stmt["type"] == "segment-sealed":
            out.append(stmt)
    return out


def test_sealed_segments_decrypt_with_age_cli_and_match_the_manifest(court):
    data, identity, recipient = court
    session, digests = make_session(data / "sessions", n_segments=3, seg_bytes=70_000)
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    result = sealer.finish_session(session, {"kiosk_id": "kiosk-demo"})
    sealer.close()
    assert result["verified"], result["verify_failures"]
    manifest = json.loads((session.dir / "manifest.json").read_bytes())
    assert [s["index"] for s in manifest["segments"]] == [1, 2, 3]
    for seg in manifest["segments"]:
        out = subprocess.run(["age", "-d", "-i", str(identity), str(session.dir / seg["file"])],
                             capture_output=True, check=True)
        assert hashlib.sha256(out.stdout).hexdigest() == seg["plaintext_sha256"] == digests[seg["index"]]
        assert (session.dir / seg["file"]).read_bytes()[:21] == b"age-encryption.org/v1"
    # the sealed copy of the manifest decrypts to the signed bytes
    out = subprocess.run(["age", "-d", "-i", str(identity), str(session.dir / "manifest.json.age")],
                         capture_output=True, check=True)
    assert out.stdout == (session.dir / "manifest.json").read_bytes()


def _age_identity_file(path: Path, identity) -> Path:
    path.write_text(f"# test court identity\n{identity}\n")
    path.chmod(0o600)
    return path


def test_each_of_several_court_recipients_alone_decrypts_and_an_unrelated_key_does_not(tmp_path):
    """Primary and escrow: every sealed item opens with either court identity on its own, to the plaintext
    whose SHA-256 the seal record, the ledger and the signed manifest name; a third identity opens nothing."""
    data = tmp_path / "data"
    court_dir = tmp_path / "court"  # the court's identities live apart from the kiosk's data dir
    court_dir.mkdir()
    primary, escrow, stranger = (x25519.Identity.generate() for _ in range(3))
    recipients = {"primary": str(primary.to_public()), "escrow": str(escrow.to_public())}
    assert recipients["primary"] != recipients["escrow"]
    settings = _settings(data)
    settings.custody.recipients = [CourtRecipient(name=n, recipient=r) for n, r in recipients.items()]
    session, digests = make_session(data / "sessions", n_segments=2, seg_bytes=50_000)
    sealer = Sealer(settings, data, isolate=False)  # recipients from the kiosk settings, as configured
    result = sealer.finish_session(session, {"kiosk_id": "kiosk-demo"})
    ledger_entries = _segment_entries(sealer.ledger)
    sealer.close()
    assert result["verified"], result["verify_failures"]
    both = sorted(recipients.values())
    manifest = json.loads((session.dir / "manifest.json").read_bytes())
    assert manifest["recipients"] == both
    assert [s["index"] for s in manifest["segments"]] == [1, 2]
    records = {r.index: r for r in seal_mod.load_records(session.dir)}
    assert sorted(records) == [1, 2] and all(r.recipients == both for r in records.values())
    ledgered = {e["body"]["index"]: e["body"] for e in ledger_entries}
    assert all(ledgered[i]["recipients"] == both for i in (1, 2))
    files = {
        "primary": _age_identity_file(court_dir / "primary.txt", primary),
        "escrow": _age_identity_file(court_dir / "escrow.txt", escrow),
        "stranger": _age_identity_file(court_dir / "stranger.txt", stranger),
    }
    age_cli = shutil.which("age")
    for seg in manifest["segments"]:
        i = seg["index"]
        ct_path = session.dir / seg["file"]
        ct = ct_path.read_bytes()
        assert ct.startswith(b"age-encryption.org/v1\n")
        # one X25519 stanza per recipient in the age header
        assert ct.split(b"\n---", 1)[0].count(b"\n-> X25519 ") == 2
        assert hashlib.sha256(ct).hexdigest() == seg["ciphertext_sha256"] == records[i].ciphertext_sha256
        expected = seg["plaintext_sha256"]
        assert expected == records[i].plaintext_sha256 == ledgered[i]["plaintext_sha256"] == digests[i]
        for name, ident in (("primary", primary), ("escrow", escrow)):
            pt = pyrage.decrypt(ct, [ident])
            assert hashlib.sha256(pt).hexdigest() == expected, f"{name} alone, segment {i}"
            if age_cli:
                out = subprocess.run([age_cli, "-d", "-i", str(files[name]), str(ct_path)], capture_output=True)
                assert out.returncode == 0, out.stderr
                assert hashlib.sha256(out.stdout).hexdigest() == expected, f"age CLI with {name}, segment {i}"
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(ct, [stranger])
        if age_cli:
            out = subprocess.run([age_cli, "-d", "-i", str(files["stranger"]), str(ct_path)], capture_output=True)
            assert out.returncode != 0 and out.stdout == b""
    # the sealed manifest, too
    sealed_manifest = (session.dir / "manifest.json.age").read_bytes()
    for ident in (primary, escrow):
        assert pyrage.decrypt(sealed_manifest, [ident]) == (session.dir / "manifest.json").read_bytes()
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed_manifest, [stranger])
    assert find_age_secret_keys(data) == []


def test_manifest_signature_verifies_with_ssh_keygen(court):
    data, _, recipient = court
    session, _ = make_session(data / "sessions", n_segments=2, pause_after=1)
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    sealer.finish_session(session, {"kiosk_id": "kiosk-demo", "cameras": ["synthetic room"]})
    sealer.close()
    cmd = "ssh-keygen -Y verify -f allowed_signers -I kiosk-demo -n testimony-kiosk-manifest -s manifest.json.sig < manifest.json"
    r = subprocess.run(cmd, shell=True, cwd=session.dir, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'Good "testimony-kiosk-manifest" signature for kiosk-demo' in r.stdout
    manifest = json.loads((session.dir / "manifest.json").read_bytes())
    assert [e["type"] for e in manifest["events"]].count("session-pause") == 1
    assert manifest["session"]["interviewee_pseudonym"] == "Child A (synthetic)"
    assert "start" in manifest["clock"] and "end" in manifest["clock"]
    assert manifest["facts"]["cameras"] == ["synthetic room"]
    # a changed manifest is refused by ssh-keygen too
    (session.dir / "manifest.json").write_bytes((session.dir / "manifest.json").read_bytes().replace(b"room1", b"room2"))
    r = subprocess.run(cmd, shell=True, cwd=session.dir, capture_output=True, text=True)
    assert r.returncode != 0


def test_key_files_are_private_openssh_keys(court):
    data, identity, _ = court
    signer = kiosk_signer(data, "kiosk-demo")
    key = data / "keys" / "kiosk_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout
    assert derived.split()[:2] == signer.openssh_public().split()[:2]
    assert identity.read_text().splitlines()[0] == "# DEMO court identity — not for real cases"
    assert kiosk_signer(data, "kiosk-demo").public_raw == signer.public_raw  # loaded, not regenerated
    key.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        kiosk_signer(data, "kiosk-demo")


def test_data_dir_holds_no_plaintext_and_no_court_key_after_a_session(court):
    data, identity, recipient = court
    session, _ = make_session(data / "sessions", n_segments=4, seg_bytes=10_000, holders=("transcriber",))
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    for i in range(1, 5):
        sealer.on_segment_closed(session.dir, i)
    assert sealer.wait(session.dir, timeout=30)
    # the transcriber still holds them: sealed, but plaintext kept
    assert all(segments.media_path(session.dir, i).exists() for i in range(1, 5))
    for i in range(1, 5):
        assert segments.release(segments.media_path(session.dir, i), "transcriber")
    assert sealer.finish_session(session, {})["verified"]
    sealer.close()
    assert not list(data.rglob("*.mp4")), "plaintext media left in the data dir"
    assert not list(data.rglob("*.hold-*"))
    assert find_age_secret_keys(data) == []
    assert not identity.is_relative_to(data.resolve())
    assert find_age_secret_keys(identity.parent) == [identity]  # the scanner does find a key where one is


def test_sealing_twice_adds_no_second_ledger_entry(court):
    data, identity, recipient = court
    session, digests = make_session(data / "sessions", n_segments=2, end=False)
    ledger = Ledger.open(data, ORIGIN)
    signer = kiosk_signer(data, "kiosk-demo")
    ledger.enroll(signer.actor, signer.public_b64)
    seg = segments.read_index(segments.index_path(session.dir, 1))
    first = seal_mod.seal_segment(session.dir, seg, [recipient], ledger, signer)
    again = seal_mod.seal_segment(session.dir, seg, [recipient], ledger, signer)
    assert first == again
    assert len(_segment_entries(ledger)) == 1
    # a different plaintext for an already sealed segment is refused, not ledgered
    (session.dir / "sealed" / "seg-000001.seal.json").unlink()
    segments.media_path(session.dir, 1).write_bytes(b"other bytes")
    (session.dir / "sealed" / "seg-000001.mp4.age").write_bytes(b"garbage")
    with pytest.raises(SealError, match="differs from the ciphertext ledgered"):
        seal_mod.seal_segment(session.dir, seg, [recipient], ledger, signer)
    assert len(_segment_entries(ledger)) == 1
    ledger.close()


class _Crash(BaseException):
    """Stands in for the process dying at one step."""


@pytest.mark.parametrize("step", ["encrypt", "rename", "record", "release", "ledger", "ledger-record"])
def test_recovery_finishes_a_seal_interrupted_at_each_step(court, monkeypatch, step):
    data, identity, recipient = court
    session, digests = make_session(data / "sessions", n_segments=2, end=True, holders=("seal",))
    ledger = Ledger.open(data, ORIGIN)
    signer = kiosk_signer(data, "kiosk-demo")
    ledger.enroll(signer.actor, signer.public_b64)
    seg = segments.read_index(segments.index_path(session.dir, 1))

    def crash(*a, **k):
        raise _Crash

    def partial_encrypt(src, dst, rec):  # killed mid-encryption: a partial temp file is left
        Path(dst).write_bytes(b"age-encryption.org/v1\npartial")
        raise _Crash

    def half_release(media, holder):  # killed inside release: hold dropped, plaintext not yet deleted
        media.with_name(f"{media.name}.hold-{holder}").unlink(missing_ok=True)
        raise _Crash

    saves = []
    real_save = seal_mod.SealRecord.save

    def second_save_crashes(self, path):  # killed after the ledger append, before the record knows it
        saves.append(path)
        if len(saves) == 2:
            raise _Crash
        real_save(self, path)

    encrypt = partial_encrypt if step == "encrypt" else seal_mod.encrypt_and_hash
    with monkeypatch.context() as m:
        if step == "rename":  # ciphertext renamed into place, no record yet
            m.setattr(seal_mod.SealRecord, "save", crash)
        elif step == "record":  # record written, plaintext not yet released
            m.setattr(seal_mod.segments, "release", crash)
        elif step == "release":
            m.setattr(seal_mod.segments, "release", half_release)
        elif step == "ledger":  # plaintext released, ledger not yet told
            m.setattr(ledger, "append", crash)
        elif step == "ledger-record":
            m.setattr(seal_mod.SealRecord, "save", second_save_crashes)
        with pytest.raises(_Crash):
            seal_mod.seal_segment(session.dir, seg, [recipient], ledger, signer, encrypt=encrypt)
    released = step in ("ledger", "ledger-record")
    assert segments.media_path(session.dir, 1).exists() != released, \
        "plaintext is kept until its ciphertext and record are on disk, and not longer"
    report = seal_mod.recover_sealing(session.dir, [recipient], ledger, signer)
    assert not report.failed
    assert sorted(report.sealed + report.already) == [1, 2]
    entries = _segment_entries(ledger)
    assert sorted(e["body"]["index"] for e in entries) == [1, 2]
    assert not list((session.dir / "sealed").glob(".*.tmp"))
    assert not list(session.dir.rglob("*.mp4"))
    ident = load_identity(identity)
    for i in (1, 2):
        pt = pyrage.decrypt((session.dir / "sealed" / f"seg-00000{i}.mp4.age").read_bytes(), [ident])
        assert hashlib.sha256(pt).hexdigest() == digests[i]
    seal_manifest(session.dir, {}, kiosk_id="kiosk-demo", signer=signer, ledger=ledger, recipients=[recipient])
    write_proofs(session.dir, ledger, signer)
    checks = verify_session(session.dir)
    assert all_ok(checks), failures(checks)
    ledger.close()


class _Unreachable:
    """A remote ledger that is down: every call fails as httpx does."""

    def __init__(self, real: Ledger) -> None:
        self.real, self.origin = real, real.origin

    def __getattr__(self, name):
        def fail(*a, **k):
            raise httpx.ConnectError("ledger unreachable")
        return fail


def test_an_unreachable_ledger_never_keeps_plaintext_and_is_caught_up_later(court):
    data, identity, recipient = court
    session, digests = make_session(data / "sessions", n_segments=3)
    ledger = Ledger.open(data, ORIGIN)
    signer = kiosk_signer(data, "kiosk-demo")
    ledger.enroll(signer.actor, signer.public_b64)
    down = _Unreachable(ledger)
    for i in (1, 2, 3):
        seg = segments.read_index(segments.index_path(session.dir, i))
        with pytest.raises(httpx.ConnectError):
            seal_mod.seal_segment(session.dir, seg, [recipient], down, signer)
    assert not list(session.dir.rglob("*.mp4")), "sealed plaintext must go even while the ledger is down"
    assert all(r.ledger_index is None for r in seal_mod.load_records(session.dir))
    with pytest.raises(SealError, match="not yet in the ledger"):
        seal_manifest(session.dir, {}, kiosk_id="kiosk-demo", signer=signer, ledger=ledger, recipients=[recipient])
    report = seal_mod.recover_sealing(session.dir, [recipient], ledger, signer)
    assert report.sealed == [1, 2, 3] and not report.failed
    assert len(_segment_entries(ledger)) == 3
    seal_manifest(session.dir, {}, kiosk_id="kiosk-demo", signer=signer, ledger=ledger, recipients=[recipient])
    write_proofs(session.dir, ledger, signer)
    checks = verify_session(session.dir)
    assert all_ok(checks), failures(checks)
    ledger.close()


KILL_CHILD = r"""
import sys
from pathlib import Path
from kiosk.custody.keys import kiosk_signer
from kiosk.custody.ledger import Ledger
from kiosk.custody.seal import recover_sealing
data, session_dir, recipient = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ledger = Ledger.open(data, "testimony-kiosk/ledger")
signer = kiosk_signer(data, "kiosk-demo")
print("ready", flush=True)
recover_sealing(session_dir, [recipient], ledger, signer)
print("done", flush=True)
"""


def test_kill_9_during_sealing_loses_no_segment_and_adds_no_duplicate(court):
    data, identity, recipient = court
    n = 60
    session, digests = make_session(data / "sessions", n_segments=n, seg_bytes=200_000)
    with Ledger.open(data, ORIGIN) as ledger:
        signer = kiosk_signer(data, "kiosk-demo")
        ledger.enroll(signer.actor, signer.public_b64)
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    kills = 0
    progress: list[int] = []
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(data), str(session.dir), recipient],
                                 stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.08))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        child.stdout.close()
        progress.append(len(list((session.dir / "sealed").glob("*.seal.json"))))
    assert sum(0 < p < n for p in progress) >= 3, f"too few kills landed mid-way: {progress}"
    with Ledger.open(data, ORIGIN) as ledger:
        report = seal_mod.recover_sealing(session.dir, [recipient], ledger, signer)
        assert not report.failed
        entries = _segment_entries(ledger)
        subjects = [e["body"]["subject"] for e in entries]
        assert len(subjects) == len(set(subjects)) == n, "every segment ledgered exactly once"
        by_index = {e["body"]["index"]: e["body"] for e in entries}
        ident = load_identity(identity)
        for i in range(1, n + 1):
            ct = (session.dir / "sealed" / f"{segments.segment_name(i)}.mp4.age").read_bytes()
            assert hashlib.sha256(ct).hexdigest() == by_index[i]["ciphertext_sha256"]
            assert hashlib.sha256(pyrage.decrypt(ct, [ident])).hexdigest() == digests[i] == by_index[i]["plaintext_sha256"]
        assert not list(session.dir.rglob("*.mp4"))
        checks = verify_ledger(ledger.path, [ledger.verifier_key], ORIGIN)
        assert all_ok(checks), failures(checks)


def test_sealer_returns_at_once_and_encrypts_in_a_worker_process(court):
    data, identity, recipient = court
    session, digests = make_session(data / "sessions", n_segments=3, seg_bytes=2_000_000)
    sealer = Sealer(_settings(data), data, recipients=[recipient])  # isolate=True: worker process
    t0 = time.perf_counter()
    for i in range(1, 4):
        sealer.on_segment_closed(session.dir, segments.read_index(segments.index_path(session.dir, i)))
    assert time.perf_counter() - t0 < 0.1, "on_segment_closed must not block the recorder"
    result = sealer.finish_session(session, {"kiosk_id": "kiosk-demo"}, timeout=60)
    assert result["verified"] and result["segments_sealed"] == 3
    assert sealer._worker._proc is not None and sealer._worker._proc.pid != os.getpid()
    sealer.close()


def test_no_court_recipient_is_a_clear_error(tmp_path):
    with pytest.raises(SealError, match="no court recipients configured"):
        Sealer(_settings(tmp_path / "data"), tmp_path / "data", isolate=False)


def test_start_up_recovery_completes_a_session_whose_manifest_was_not_written(court):
    data, identity, recipient = court
    session, _ = make_session(data / "sessions", n_segments=2)
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    sealer.on_segment_closed(session.dir, 1)
    assert sealer.wait(session.dir, 30)
    (session.dir / "facts.json").write_bytes(b'{"kiosk_id":"kiosk-demo"}')  # finish began, then the crash
    sealer.close()
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    reports = sealer.recover()
    sealer.close()
    assert [r.sealed for r in reports] == [[2]]
    checks = verify_session(session.dir)
    assert all_ok(checks), failures(checks)


def test_start_up_recovery_seals_a_session_ended_by_crash_recovery(court):
    data, identity, recipient = court
    session, _ = make_session(data / "sessions", n_segments=2, end=False)
    session.record("recovery", note="the kiosk stopped unexpectedly")
    session.transition("end", reason="interrupted; ended by recovery")
    sealer = Sealer(_settings(data), data, recipients=[recipient], isolate=False)
    assert [r.sealed for r in sealer.recover()] == [[1, 2]]
    assert sealer.recover()[0].already == [1, 2]  # a second start-up finds nothing to do
    sealer.close()
    manifest = json.loads((session.dir / "manifest.json").read_bytes())
    assert manifest["facts"]["recovered"] is True
    checks = verify_session(session.dir)
    assert all_ok(checks), failures(checks)


def test_demo_court_lives_beside_the_data_dir(tmp_path):
    data = tmp_path / "kiosk-data"
    path, recipient = demo_court_identity(data)
    assert path.parent == tmp_path / "demo-court"
    assert recipient.startswith("age1")
    assert demo_court_identity(data) == (path, recipient)  # created once
    shutil.rmtree(path.parent)
