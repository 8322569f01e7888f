"""Judge talkback end to end: the judge's (fake) microphone in headless Chromium → WebRTC upstream → the
kiosk → the interviewer's earpiece, a real PyAudio output device (ALSA's file plugin writes what is
played to it into a file) — only while the judge holds the talk button — and kept as its own audio track.

The kiosk runs as `kiosk serve` in a subprocess with HOME pointing at an .asoundrc that defines the
earpiece, because PortAudio reads the ALSA configuration once per process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pyrage
import pytest

from .conftest import REPO, ffprobe
from .live_support import CHROMIUM, CHROMIUM_FLAGS, write_live_room

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TONE_HZ = 440
HOLD_S = 2.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def kiosk(tmp_path):
    """`kiosk serve` on a small synthetic room whose earpiece is an ALSA file PCM; yields (base, raw, data)."""
    for tool in ("sox", "espeak-ng"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    pytest.importorskip("pyaudio")
    raw = tmp_path / "earpiece.raw"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        f'pcm.earpiece {{\n type file\n slave.pcm "null"\n file "{raw}"\n format "raw"\n}}\n')
    room = write_live_room(tmp_path)
    room.write_text(room.read_text() + '\n[earpiece]\ndevice = "earpiece"\nsample_rate = 48000\n')
    court = pyrage.x25519.Identity.generate()  # the court's key: talkback and record are sealed to it
    recipient = court.to_public()
    settings = tmp_path / "kiosk.toml"
    settings.write_text(
        "[transcription]\nenabled = false\n[storage]\nmin_free_mb = 0\nmax_session_minutes = 1\n"
        f'[custody]\nrecipients = [{{ name = "court", recipient = "{recipient}" }}]\n')
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk.cli", "--config", str(settings), "serve", "--room", str(room),
         "--port", str(port), "--data-dir", str(data), "--operator-link"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "HOME": str(home)},
    )
    try:
        link, deadline = None, time.monotonic() + 30
        while link is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"kiosk serve exited with {proc.wait()}")
            if m := re.search(r"(http://\S+/login/once/\S+)", line):
                link = m.group(1)
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.1)
        operator = httpx.Client(base_url=base, timeout=30)
        assert operator.post(link.replace(base, "")).status_code == 303
        yield base, operator, raw, data, court
        operator.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def blocks(pcm: np.ndarray, size: int = 960) -> np.ndarray:
    """RMS of each 20 ms block."""
    n = len(pcm) // size
    return np.sqrt(np.mean(pcm[: n * size].reshape(n, size).astype(np.float64) ** 2, axis=1))


def test_judge_talkback_reaches_the_earpiece_only_while_talk_is_held(kiosk, tmp_path):
    base, operator, raw, data, court = kiosk
    tone = tmp_path / "judge-mic.wav"
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(tone), "synth", "30", "sine",
                    str(TONE_HZ), "vol", "0.5"], check=True)
    operator.post("/api/session", json={"case_reference": "TALK-1", "interviewee_pseudonym": "Child T",
                                        "interviewer": "Interviewer T"}).raise_for_status()
    operator.post("/api/session/start").raise_for_status()
    invite = operator.post("/api/invites", json={"role": "judge", "label": "Judge Talk", "pre_admit": True}).json()

    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={tone}"])
        try:
            page = browser.new_context().new_page()
            page.goto(invite["url"])
            page.fill("input[name=name]", "Judge Talk")
            page.click("#join")
            page.wait_for_url("**/view")
            page.wait_for_selector("#judge-card", state="visible", timeout=15000)
            page.click("#btn-talk-connect")
            page.wait_for_selector("#btn-talk[data-ready=yes]", timeout=15000)
            time.sleep(2.0)  # the microphone streams, but nothing is held: nothing may reach the earpiece
            size_before = raw.stat().st_size if raw.exists() else 0
            page.hover("#btn-talk")
            page.mouse.down()
            time.sleep(HOLD_S)
            page.mouse.up()
            size_at_release = raw.stat().st_size
            time.sleep(2.0)
            size_after = raw.stat().st_size
            page.wait_for_selector("#talk-state")
        finally:
            browser.close()

    pcm = np.frombuffer(raw.read_bytes(), dtype="<i2")
    rms = blocks(pcm)
    loud = np.flatnonzero(rms > 1000)
    assert loud.size, "nothing the judge said reached the earpiece"
    # nothing before the button was held, and nothing after shortly after it was released
    assert loud[0] * 960 * 2 >= size_before, "audio reached the earpiece before talk was held"
    assert (loud[-1] + 1) * 960 * 2 <= size_at_release + 48000 * 2 * 0.5
    assert not np.any(rms[(size_at_release // 2 + 24000) // 960 + 1:] > 1000), "audio after release"
    heard = loud.size * 0.02
    assert HOLD_S * 0.6 <= heard <= HOLD_S * 1.3, f"{heard:.2f} s of talkback for {HOLD_S} s held"
    speech = pcm[loud[0] * 960:(loud[-1] + 1) * 960].astype(np.float64)
    peak_hz = np.argmax(np.abs(np.fft.rfft(speech))) * 48000 / len(speech)
    assert peak_hz == pytest.approx(TONE_HZ, abs=10), "the earpiece got the judge's microphone"
    assert size_after >= size_at_release

    operator.post("/api/session/end").raise_for_status()
    session_dir = next((data / "sessions").glob("*"))
    events = [json.loads(x) for x in (session_dir / "events.jsonl").read_text().splitlines()]
    talk = [e for e in events if e["type"] == "talkback"]
    assert [e["action"] for e in talk] == ["connected", "talk-start", "talk-stop"]
    start, stop = talk[1], talk[2]
    assert stop["reason"] == "released" and HOLD_S * 0.8 <= stop["t"] - start["t"] <= HOLD_S + 1.0
    # kept as its own track: an Opus file per spurt, in the index, the log and the session record
    def court_copy(rel: str) -> Path:
        """Sealed at session end: only the court's identity opens it."""
        out = tmp_path / Path(rel).name
        out.write_bytes(pyrage.decrypt((session_dir / (rel + ".age")).read_bytes(), [court]))
        return out

    assert not (session_dir / "talkback" / "index.json").exists(), "no plaintext talkback left on the kiosk"
    index = json.loads(court_copy("talkback/index.json").read_text())
    (spurt,) = index["spurts"]
    assert (spurt["from"], spurt["to"]) == (start["t"], stop["t"])
    probe = ffprobe(court_copy(spurt["file"]))
    (stream,) = probe["streams"]
    assert stream["codec_name"] == "opus" and stream["channels"] == 1
    assert float(probe["format"]["duration"]) == pytest.approx(spurt["seconds_of_audio"], abs=0.1)
    assert HOLD_S * 0.6 <= spurt["seconds_of_audio"] <= HOLD_S * 1.3
    recorded = [e for e in events if e["type"] == "talkback-recorded"]
    assert recorded and recorded[0]["sha256"] == spurt["sha256"]
    record = json.loads(court_copy("record/session-record.json").read_text())
    assert record["talkback"]["spurts"][0]["sha256"] == spurt["sha256"]
    assert "by talkback 1 time" in record["summaries"]["judge"]["text"]

    # and in the recording itself: its own track in the sealed segments, never in the mix
    tone_s: dict[str, float] = {}
    tone_times: list[float] = []
    for sealed in sorted((session_dir / "sealed").glob("seg-*.mp4.age")):
        seg = tmp_path / sealed.name.removesuffix(".age")
        seg.write_bytes(pyrage.decrypt(sealed.read_bytes(), [court]))
        seg_start = json.loads((session_dir / "segments" / seg.name.replace(".mp4", ".json")).read_text())["start"]
        with av.open(str(seg)) as c:
            names = {a.index: a.metadata.get("handler_name") for a in c.streams.audio}
            for packet in c.demux(*c.streams.audio):
                for frame in packet.decode():
                    pcm = frame.to_ndarray()[0].astype(np.float64)
                    power = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
                    hz = np.fft.rfftfreq(len(pcm), 1 / 48000)
                    # the judge's test tone: nearly all energy within 100 Hz of it (speech spreads wider)
                    tonal = power[np.abs(hz - TONE_HZ) <= 100].sum() > 0.9 * power.sum()
                    if tonal and np.sqrt(np.mean(pcm ** 2)) > 0.05:
                        name = names[packet.stream.index]
                        tone_s[name] = tone_s.get(name, 0.0) + len(pcm) / 48000
                        if name == "judge-talkback":
                            tone_times.append(seg_start + float(frame.time))
    assert "judge-talkback" in tone_s, f"no talkback track with the judge's tone in the segments: {tone_s}"
    assert HOLD_S * 0.6 <= tone_s["judge-talkback"] <= HOLD_S * 1.3
    assert start["t"] - 0.5 <= min(tone_times) and max(tone_times) <= stop["t"] + 0.5, "on the session clock"
    assert tone_s.get("mix", 0.0) < 0.2, "the judge's voice is never mixed into the room's sound"
