"""The room station records what the sources produce: real PyAV encoding, real fMP4 files, real ffprobe."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import av
import numpy as np
import pytest

from kiosk.config import load_room, load_settings
from kiosk.custody.keys import demo_court_identity
from kiosk.media import segments as seg_files
from kiosk.station import Station
from tests.conftest import KIOSK, REPO, ffprobe, last_json, run_kiosk, write_room, write_settings

pytestmark = pytest.mark.e2e


def plaintext_segments(session_dir: Path, tmp: Path) -> list[tuple[seg_files.SegmentIndex, Path]]:
    """Each segment's playable file: the plaintext, or the sealed copy decrypted with the demo court identity."""
    out = []
    for seg in seg_files.list_indexes(session_dir):
        media = seg_files.media_path(session_dir, seg.index)
        copy = tmp / f"plain-{media.name}"
        try:  # copy at once: the sealer or transcriber may release (delete) the plaintext any moment
            shutil.copyfile(media, copy)
            out.append((seg, copy))
            continue
        except FileNotFoundError:
            sealed = session_dir / "sealed" / f"{media.name}.age"
            identity, _ = demo_court_identity(session_dir.parents[1])
            assert sealed.exists() and identity, f"segment {seg.index} neither plaintext nor sealed"
            media = tmp / media.name
            subprocess.run(["age", "-d", "-i", str(identity), "-o", str(media), str(sealed)], check=True)
        out.append((seg, media))
    return out


def test_demo_records_h264_and_audio_of_the_expected_duration(tmp_path: Path, tools):
    cfg = write_settings(tmp_path, recording={"segment_seconds": 2.0})
    data = tmp_path / "data"
    proc = run_kiosk("--config", str(cfg), "demo", "--seconds", "5", "--data-dir", str(data), "--json", "--no-live",
                     timeout=180, check=True)
    summary = last_json(proc.stdout)
    session_dir = Path(summary["session_dir"])
    segs = plaintext_segments(session_dir, tmp_path)
    assert len(segs) >= 3
    room = load_room("demo")
    total = 0.0
    for seg, media in segs:
        info = ffprobe(media)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert video[0]["codec_name"] == "h264"
        assert (video[0]["width"], video[0]["height"]) == (room.video.width, room.video.height)
        assert video[0]["r_frame_rate"] == f"{room.video.fps}/1"
        assert [a["codec_name"] for a in audio] == ["opus"] * 3  # mix + one track per microphone
        assert [a.get("tags", {}).get("handler_name") for a in audio] == ["mix", "interviewer", "witness"]
        assert int(video[0]["nb_read_packets"]) == seg.video_frames
        duration = float(video[0]["duration"])
        assert duration == pytest.approx(seg.end - seg.start, abs=0.1)
        total += duration
    assert total == pytest.approx(5.0, abs=0.5)
    # segments tile the session: each starts where the previous ended
    for (a, _), (b, _) in zip(segs, segs[1:], strict=False):
        assert b.start == pytest.approx(a.end, abs=1e-6)


def _flash_times(media: Path, start: float) -> list[float]:
    times = []
    with av.open(str(media)) as c:
        for frame in c.decode(c.streams.video[0]):
            if frame.to_ndarray(format="gray").mean() > 240:
                times.append(start + float(frame.time))
    return times


def _beep_times(media: Path, start: float, stream: int) -> list[float]:
    with av.open(str(media)) as c:
        s = c.streams[stream]
        chunks, t0 = [], None
        for frame in c.decode(s):
            if t0 is None:
                t0 = float(frame.time)
            chunks.append(frame.to_ndarray().reshape(-1))
    pcm = np.concatenate(chunks)
    loud = np.flatnonzero(np.abs(pcm) > 0.1)
    onsets, last = [], -10**9
    for i in loud:
        if i - last > 0.2 * 48000:
            onsets.append(start + t0 + i / 48000)
        last = i
    return onsets


def test_flash_and_beep_stay_within_one_frame_without_drift(tmp_path: Path, tools):
    settings = load_settings(write_settings(tmp_path, recording={"segment_seconds": 2.0}))
    settings.storage.data_dir = tmp_path / "data"
    settings.storage.min_free_mb = 0
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    room = load_room(write_room(tmp_path, fps=30, layout="single", flash=1.5))
    station = Station(settings, room, seal=False)
    session = station.create_session("SYNC-1", "Synthetic", "Test", "en")
    station.start()
    time.sleep(7.5)
    station.end()
    flashes, beeps = [], []
    for seg, media in plaintext_segments(session.dir, tmp_path):
        flashes += _flash_times(media, seg.start)
        beeps += _beep_times(media, seg.start, seg_files.FIRST_MIC_STREAM)  # interviewer mic carries the beep
    assert len(flashes) >= 4, flashes
    frame = 1 / room.video.fps
    offsets = []
    for f in flashes:
        nearest = min(beeps, key=lambda b: abs(b - f))
        offsets.append(nearest - f)
    assert all(abs(o) <= frame for o in offsets), offsets
    assert max(offsets) - min(offsets) <= 0.002, f"A/V offset drifts: {offsets}"


def _start_wall(session_dir: Path) -> tuple[float, float]:
    meta = json.loads((session_dir / "session.json").read_text())
    start = meta["clock"]["start"]
    wall = datetime.fromisoformat(start["wall"].replace("Z", "+00:00")).timestamp()
    return wall, start["session_time"]


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_killed_recorder_keeps_everything_but_the_last_second(tmp_path: Path, tools, seed: int):
    rnd = random.Random(seed)
    cfg = write_settings(tmp_path, recording={"segment_seconds": 2.0},
                         storage={"min_free_mb": 0, "max_session_minutes": 2})
    room = write_room(tmp_path)
    data = tmp_path / "data"
    proc = subprocess.Popen([*KIOSK, "--config", str(cfg), "demo", "--seconds", "60", "--room", str(room),
                             "--data-dir", str(data), "--no-live"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("recording"):
                break
        time.sleep(rnd.uniform(2.5, 6.5))
        kill_wall = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    session_dir = next(data.glob("sessions/*"))
    start_wall, start_t = _start_wall(session_dir)
    kill_t = start_t + (kill_wall - start_wall)
    segs = seg_files.list_indexes(session_dir)
    open_segs = [s for s in segs if not s.closed]
    assert len(open_segs) <= 1
    recorded_to = 0.0
    for seg, media in plaintext_segments(session_dir, tmp_path):
        if not seg.closed and b"moov" not in media.read_bytes()[:4096]:
            continue  # opened less than one fragment before the kill: nothing to play yet
        info = ffprobe(media)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        frames = int(video.get("nb_read_packets", 0))
        if seg.closed:
            assert frames == seg.video_frames > 0
        recorded_to = max(recorded_to, seg.start + frames / 15)
    assert recorded_to >= kill_t - 1.0, f"lost {kill_t - recorded_to:.2f} s before the kill"

    rec = run_kiosk("--config", str(cfg), "recover", "--data-dir", str(data), check=True)
    assert "recovered session" in rec.stdout
    after = seg_files.list_indexes(session_dir)
    assert all(s.closed for s in after)
    assert [s.index for s in after] == list(range(1, len(after) + 1))
    events = [json.loads(x) for x in (session_dir / "events.jsonl").read_text().splitlines()]
    recovery = [e for e in events if e["type"] == "recovery"]
    assert len(recovery) == 1 and recovery[0]["state_before"] == "recording"
    assert json.loads((session_dir / "session.json").read_text())["state"] == "ended"
    again = run_kiosk("--config", str(cfg), "recover", "--data-dir", str(data), check=True)
    assert "nothing to recover" in again.stdout


def test_pause_closes_the_segment_and_resume_opens_a_new_one(tmp_path: Path, tools):
    settings = load_settings(write_settings(tmp_path))
    settings.storage.data_dir = tmp_path / "data"
    settings.storage.min_free_mb = 0
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    station = Station(settings, load_room(write_room(tmp_path)), seal=False)
    session = station.create_session("PAUSE-1", "Synthetic", "Test")
    station.start()
    time.sleep(1.5)
    station.pause()
    time.sleep(1.0)
    station.resume()
    time.sleep(1.5)
    station.end()
    segs = seg_files.list_indexes(session.dir)
    assert len(segs) == 2 and all(s.closed for s in segs)
    assert segs[1].start - segs[0].end == pytest.approx(1.0, abs=0.3), "the pause shows as a gap"
    types = [e["type"] for e in session.events()]
    assert types.index("session-pause") < types.index("session-resume")


def test_judge_talkback_is_its_own_track_and_never_in_the_live_mix(tmp_path: Path, tools):
    room_path = write_room(tmp_path)
    room_path.write_text(room_path.read_text() + '\n[earpiece]\ndevice = "earpiece"\n')
    settings = load_settings(write_settings(tmp_path))
    settings.storage.data_dir = tmp_path / "data"
    settings.storage.min_free_mb = 0
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    station = Station(settings, load_room(room_path), seal=False)
    session = station.create_session("TALK-1", "Synthetic", "Test")
    station.start()
    time.sleep(0.5)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(960) / 48000)).astype(np.float32)
    for _ in range(50):  # one second of the judge talking, in 20 ms WebRTC-sized blocks
        station.talkback_sink(tone, session.now())
        time.sleep(0.02)
    time.sleep(0.5)
    station.end()
    seg = seg_files.list_indexes(session.dir)[0]
    assert seg.mic_roles == ["interviewer", "witness", "judge-talkback"]
    media = seg_files.media_path(session.dir, seg.index)
    info = ffprobe(media)
    assert [s.get("tags", {}).get("handler_name") for s in info["streams"][1:]] == \
        ["mix", "interviewer", "witness", "judge-talkback"]

    def energy_at_440(stream: int) -> float:
        with av.open(str(media)) as c:
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams[stream])])
        spectrum = np.abs(np.fft.rfft(pcm)) ** 2  # power
        freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
        band = (freqs > 430) & (freqs < 450)
        return float(spectrum[band].sum() / (spectrum.sum() + 1e-9))

    assert energy_at_440(4) > 0.3, "the talkback track carries the judge's audio"
    assert energy_at_440(seg_files.MIX_STREAM) < 0.02, "the judge's voice is not in the live mix"
