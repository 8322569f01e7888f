"""`kiosk demo` end to end: recorded, sealed, ledgered, transcribed, transcript sealed, verified."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import last_json, run_kiosk

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("demo") / "data"
    proc = run_kiosk("demo", "--seconds", "6", "--data-dir", str(data), "--json", "--no-live", timeout=300,
                     check=True)
    summary = last_json(proc.stdout)
    summary["data_dir"] = data
    return summary


def test_demo_summary_says_sealed_verified_and_transcribed(demo):
    assert demo["verified"] is True and demo["verify_failures"] == []
    assert Path(demo["demo_court_identity"]).exists()
    assert demo["transcript"]["state"] == "complete"
    assert demo["transcript"]["words"] > 0
    assert demo["transcript"]["sealed"]["ledger_index"] >= 0


def test_no_words_and_no_media_are_readable_on_the_kiosk_after_the_session(demo):
    session = Path(demo["session_dir"])
    leftovers = [p for p in session.rglob("*") if p.is_file() and p.suffix in (".mp4", ".vtt", ".srt", ".html", ".json")
                 and p.parent.name in ("segments", "transcripts", "record") and p.name not in ("sealed.json", "status.json")
                 and not p.name.startswith("seg-")]
    assert leftovers == []
    assert (session / "record" / "session-record.json.age").exists(), "the session record is sealed too"
    assert not list(Path(demo["data_dir"]).rglob("court-identity*")), "the court identity lives outside"
    status = json.loads((session / "transcripts" / "status.json").read_text())
    assert status["state"] == "complete"


def test_sealed_transcript_decrypts_with_age_and_a_changed_byte_fails_verify(demo, tmp_path):
    session = Path(demo["session_dir"])
    vtt = session / "transcripts" / "transcript.vtt.age"
    out = subprocess.run(["age", "-d", "-i", demo["demo_court_identity"], str(vtt)], capture_output=True, check=True)
    assert out.stdout.startswith(b"WEBVTT")
    assert b"<v Interviewer>" in out.stdout or b"<v Witness>" in out.stdout
    original = vtt.read_bytes()
    try:
        vtt.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
        proc = run_kiosk("verify", str(session))
        assert proc.returncode != 0
        assert "transcript (sealed)" in proc.stdout and "transcript.vtt.age differs" in proc.stdout
    finally:
        vtt.write_bytes(original)
    assert run_kiosk("verify", str(session)).returncode == 0
