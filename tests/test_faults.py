"""Recording survives what rooms do to it: dead sources, vanished files, full disks, torn files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pyrage
import pytest

from kiosk.capture.base import SAMPLE_RATE, AudioSource, VideoSource
from kiosk.config import load_room, load_settings
from kiosk.custody.keys import ensure_demo_court, load_identity
from kiosk.custody.seal import ciphertext_path, load_records
from kiosk.custody.verify import failures, verify_session
from kiosk.errors import DiskFull
from kiosk.media import segments as seg_files
from kiosk.media.fragments import complete_length, truncate_to_complete
from kiosk.station import Station
from tests.conftest import ffprobe, write_room, write_settings

pytestmark = pytest.mark.e2e


def make_station(tmp_path: Path, room_path: Path, data: Path | None = None, seal: bool = False,
                 **settings_over) -> Station:
    settings = load_settings(write_settings(tmp_path, recording={"segment_seconds": 2.0}, **settings_over))
    settings.storage.data_dir = data or tmp_path / "data"
    settings.storage.min_free_mb = settings_over.get("storage", {}).get("min_free_mb", 0)
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    if seal:
        ensure_demo_court(settings)  # seal to the labelled DEMO court, kept beside the data dir
    return Station(settings, load_room(room_path), seal=seal)


class DyingCamera(VideoSource):
    """Wraps a real source and raises like a broken driver during [die_at, die_at + dead_for)."""

    def __init__(self, inner: VideoSource, die_at: float, dead_for: float) -> None:
        super().__init__(inner.name, "injected")
        self.inner, self.die_at, self.dead_for = inner, die_at, dead_for

    def open(self) -> None:
        self.inner.open()
        self.status.set("ok")

    def frame_at(self, t, size):
        if self.die_at <= t < self.die_at + self.dead_for:
            raise OSError("injected: device vanished")
        return self.inner.frame_at(t, size)


class DyingMicrophone(AudioSource):
    """Wraps a real microphone and raises like an unplugged USB device during [die_at, die_at + dead_for)."""

    def __init__(self, inner: AudioSource, die_at: float, dead_for: float) -> None:
        super().__init__(inner.name, "injected", inner.role)
        self.inner, self.die_at, self.dead_for = inner, die_at, dead_for
        self.session_offset = inner.session_offset  # already set: the pipeline started with the inner one
        self.status.set("ok", "wrapping an open microphone")

    def open(self) -> None:
        self.inner.open()
        self.status.set("ok")

    def pcm(self, start_sample: int, count: int) -> np.ndarray:
        t = (self.session_offset + start_sample) / SAMPLE_RATE
        if self.die_at <= t < self.die_at + self.dead_for:
            raise OSError("injected: microphone unplugged")
        return self.inner.pcm(start_sample, count)


@dataclass
class Recorded:
    """What the segment files hold, decoded with PyAV, on the session clock."""

    video_seconds: float = 0.0  # decoded video frames / fps
    audio_seconds: dict[str, float] = field(default_factory=dict)  # track name -> decoded samples / 48 kHz
    audio: dict[str, list[tuple[float, np.ndarray]]] = field(default_factory=dict)  # (session t, pcm)


def _decode(session_dir: Path, fps: int = 15, media: dict[int, Path] | None = None) -> Recorded:
    out = Recorded()
    for seg in seg_files.list_indexes(session_dir):
        path = (media or {}).get(seg.index) or seg_files.media_path(session_dir, seg.index)
        with av.open(str(path)) as c:
            out.video_seconds += sum(1 for _ in c.decode(video=0)) / fps
        with av.open(str(path)) as c:
            names = {s.index: s.metadata.get("handler_name", str(s.index)) for s in c.streams.audio}
            for packet in c.demux(*c.streams.audio):  # one pass over every audio track
                for frame in packet.decode():
                    name, pcm = names[packet.stream.index], frame.to_ndarray()[0].astype(np.float32)
                    out.audio.setdefault(name, []).append((seg.start + float(frame.time), pcm))
                    out.audio_seconds[name] = out.audio_seconds.get(name, 0.0) + len(pcm) / SAMPLE_RATE
    return out


def _peak_between(chunks: list[tuple[float, np.ndarray]], lo: float, hi: float) -> float:
    """Largest sample magnitude of a decoded track within session times [lo, hi)."""
    peak = 0.0
    for t0, pcm in chunks:
        times = t0 + np.arange(len(pcm)) / SAMPLE_RATE
        sel = pcm[(times >= lo) & (times < hi)]
        if len(sel):
            peak = max(peak, float(np.abs(sel).max()))
    return peak


def _slate_frames(session_dir: Path) -> tuple[list[float], float]:
    """Session times of slate frames (uniform grey) and total recorded seconds."""
    slates, total = [], 0.0
    for seg in seg_files.list_indexes(session_dir):
        with av.open(str(seg_files.media_path(session_dir, seg.index))) as c:
            for frame in c.decode(video=0):
                img = frame.to_ndarray(format="gray")
                if abs(float(img[img.shape[0] // 3].mean()) - 96) < 6 and img[: img.shape[0] // 3].std() < 12:
                    slates.append(seg.start + float(frame.time))
        total += seg.end - seg.start
    return slates, total


def test_source_dead_for_five_seconds_shows_as_slate_and_event(tmp_path: Path, tools):
    station = make_station(tmp_path, write_room(tmp_path, layout="single"))
    session = station.create_session("FAULT-1", "Synthetic", "Test")
    cam = station.pipeline.cameras[0]
    t_start = session.now()
    station.pipeline.cameras[0] = DyingCamera(cam, die_at=t_start + 2.0, dead_for=5.0)
    station.start()
    wall0 = time.monotonic()
    time.sleep(9.0)
    station.end()
    wall = time.monotonic() - wall0
    slates, total = _slate_frames(session.dir)
    assert total == pytest.approx(wall, abs=0.5), "recording continued through the fault"
    assert len(slates) / 15 == pytest.approx(5.0, abs=0.3)
    assert min(slates) == pytest.approx(t_start + 2.0, abs=0.2)
    events = [e for e in session.events() if e["type"] == "device-state"]
    assert [e["state"] for e in events] == ["failed", "ok"]
    assert "device vanished" in events[0]["detail"]


def test_file_source_whose_file_disappears_records_slate_then_resumes(tmp_path: Path, tools):
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15", "-t", "30",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    room = write_room(tmp_path, layout="single")
    room.write_text(room.read_text().replace('kind = "synthetic"\nscene = "room"\nflash_every_s = 0.0',
                                             f'kind = "file"\npath = "{clip}"'))
    station = make_station(tmp_path, room)
    session = station.create_session("FAULT-2", "Synthetic", "Test")
    station.start()
    wall0 = time.monotonic()
    time.sleep(1.5)
    hidden = tmp_path / "hidden.mp4"
    t_hidden = session.now()
    clip.rename(hidden)
    time.sleep(5.0)
    t_back = session.now()
    hidden.rename(clip)
    time.sleep(2.5)
    station.end()
    wall = time.monotonic() - wall0
    slates, span = _slate_frames(session.dir)
    # the source notices a vanished file, and retries a missing one, once a second
    assert 4.0 <= len(slates) / 15 <= 6.0
    assert t_hidden <= min(slates) <= t_hidden + 1.1 and t_back - 0.1 <= max(slates) <= t_back + 1.1
    recorded = _decode(session.dir)
    assert recorded.video_seconds == pytest.approx(wall, abs=0.5), "video continued through the gap"
    assert span == pytest.approx(wall, abs=0.5)
    assert recorded.audio_seconds["mix"] == pytest.approx(wall, abs=0.5)
    states = [(e["state"], e["detail"]) for e in session.events() if e["type"] == "device-state"]
    assert states[0][0] == "no-signal" and "disappeared" in states[0][1]
    assert states[-1][0] == "ok"


def test_microphone_dead_for_five_seconds_records_silence_and_events(tmp_path: Path, tools):
    station = make_station(tmp_path, write_room(tmp_path, flash=1.0))  # the interviewer mic beeps every 1 s
    session = station.create_session("FAULT-5", "Synthetic", "Test")
    t_start = session.now()
    die_at, dead_for = t_start + 2.0, 5.0
    mic = station.pipeline.mics[0]
    assert mic.role == "interviewer"
    station.pipeline.mics[0] = DyingMicrophone(mic, die_at=die_at, dead_for=dead_for)
    station.start()
    wall0 = time.monotonic()
    time.sleep(9.0)
    station.end()
    wall = time.monotonic() - wall0
    recorded = _decode(session.dir)
    assert recorded.video_seconds == pytest.approx(wall, abs=0.5), "recording continued through the fault"
    for track in ("mix", "interviewer", "witness"):  # no track has a hole: the gap is filled with silence
        assert recorded.audio_seconds[track] == pytest.approx(wall, abs=0.5), track
    interviewer = recorded.audio["interviewer"]
    assert _peak_between(interviewer, die_at + 0.1, die_at + dead_for - 0.1) < 0.01, "silence while unplugged"
    assert _peak_between(interviewer, die_at - 1.5, die_at) > 0.2, "beeps before the fault"
    assert _peak_between(interviewer, die_at + dead_for, die_at + dead_for + 1.5) > 0.2, "beeps after it"
    events = [e for e in session.events() if e["type"] == "device-state"]
    assert [(e["source"], e["state"]) for e in events] == [("interviewer-mic", "failed"), ("interviewer-mic", "ok")]
    assert "microphone unplugged" in events[0]["detail"] and events[1]["detail"] == "signal restored"
    assert events[0]["t"] == pytest.approx(die_at, abs=0.6)
    assert events[1]["t"] == pytest.approx(die_at + dead_for, abs=0.6)


def test_disk_filling_mid_session_stops_cleanly_and_keeps_segments(tmp_path: Path, tools):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    try:
        station = make_station(tmp_path, write_room(tmp_path), data=mnt / "data", storage={"min_free_mb": 2})
        session = station.create_session("FAULT-3", "Synthetic", "Test")
        station.start()
        time.sleep(3.0)
        free = shutil.disk_usage(mnt).free
        filler = mnt / "someone-elses-file"
        with filler.open("wb") as fh:  # another program eats the disk, leaving less than the reserve
            fh.write(b"\0" * (free - int(1.5 * 2**20)))
        time.sleep(2.0)
        assert station.pipeline.disk_full
        station.end()
        events = session.events()
        full = [e for e in events if e["type"] == "disk-full"]
        assert len(full) == 1 and "stopped cleanly" in full[0]["note"]
        segs = seg_files.list_indexes(session.dir)
        assert segs and all(s.closed for s in segs)
        for seg in segs:
            info = ffprobe(seg_files.media_path(session.dir, seg.index))
            video = next(s for s in info["streams"] if s["codec_type"] == "video")
            assert int(video["nb_read_packets"]) == seg.video_frames
        assert segs[-1].end == pytest.approx(full[0]["t"], abs=0.6)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_session_that_cannot_fit_on_disk_is_refused_before_anything_is_written(tmp_path: Path):
    minutes = 10**9  # no disk holds this long a recording
    settings = load_settings(write_settings(tmp_path, storage={"max_session_minutes": minutes, "min_free_mb": 0}))
    settings.storage.data_dir = tmp_path / "data"
    settings.transcription.enabled = False
    station = Station(settings, load_room(write_room(tmp_path)), seal=False)
    before = sorted(station.data_dir.rglob("*"))
    with pytest.raises(DiskFull) as refused:
        station.create_session("FAULT-6", "Synthetic", "Test")
    message = str(refused.value)
    assert message.startswith(f"not enough free space in {station.data_dir}: ")
    assert re.search(rf"\d+ MiB free, \d+ MiB needed for a {minutes}-minute session$", message), message
    assert refused.value.http_status == 507
    assert list(station.sessions_root.iterdir()) == [], "no session folder"
    assert sorted(station.data_dir.rglob("*")) == before
    assert station.session is None and station.pipeline is None
    settings.storage.max_session_minutes = 1  # the guard is about the size: a session that fits starts
    session = station.create_session("FAULT-6", "Synthetic", "Test")
    assert [p.name for p in station.sessions_root.iterdir()] == [session.dir.name]
    station.close()


def test_disk_low_warning_is_logged_once_with_the_minutes_left(tmp_path: Path, tools):
    station = make_station(tmp_path, write_room(tmp_path), storage={"warn_free_minutes": 10})
    session = station.create_session("FAULT-7", "Synthetic", "Test")
    pipeline = station.pipeline
    bps = station.bytes_per_second()
    assert pipeline.bytes_per_second == pytest.approx(bps), "the same minutes as the console shows"
    minutes_free = [60.0]
    asked: set[Path] = set()

    def free_bytes(path: Path) -> int:  # a disk that another program is filling
        asked.add(path)
        return int(minutes_free[0] * 60 * bps)

    pipeline.free_bytes = free_bytes
    station.start()
    time.sleep(1.5)
    assert not [e for e in session.events() if e["type"] == "disk-low"], "no warning above the threshold"
    t_low = session.now()
    minutes_free[0] = 8.0
    time.sleep(1.5)
    minutes_free[0] = 3.0  # lower still: still one warning
    time.sleep(1.5)
    station.end()
    events = session.events()
    low = [e for e in events if e["type"] == "disk-low"]
    assert len(low) == 1
    assert low[0]["minutes_left"] == pytest.approx(8.0, abs=0.05)
    assert low[0]["warn_free_minutes"] == 10
    assert low[0]["free_bytes"] == int(8.0 * 60 * bps)
    assert "8.0 minutes of recording left" in low[0]["note"] and "recording continues" in low[0]["note"]
    assert t_low <= low[0]["t"] <= t_low + 0.7
    assert asked == {session.dir}
    assert not pipeline.disk_full and not [e for e in events if e["type"] == "disk-full"]
    segs = seg_files.list_indexes(session.dir)
    assert sum(s.end - s.start for s in segs) == pytest.approx(4.5, abs=0.5), "recording went on"


def test_disk_filling_mid_sealed_session_stops_cleanly_and_every_segment_is_sealed(tmp_path: Path, tools):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root)")
    station = None
    try:
        station = make_station(tmp_path, write_room(tmp_path), data=mnt / "data", seal=True,
                               storage={"min_free_mb": 3})
        identity = mnt / "demo-court" / "court-identity.txt"
        assert identity.exists() and station.custody is not None
        session = station.create_session("FAULT-8", "Synthetic", "Test")
        station.start()
        time.sleep(3.0)
        free = shutil.disk_usage(mnt).free
        with (mnt / "someone-elses-file").open("wb") as fh:  # another program eats the disk past the reserve
            fh.write(b"\0" * (free - int(2.5 * 2**20)))
        time.sleep(2.0)
        assert station.pipeline.disk_full
        result = station.end()

        events = session.events()
        full = [e for e in events if e["type"] == "disk-full"]
        assert len(full) == 1 and "stopped cleanly" in full[0]["note"]
        assert full[0]["free_bytes"] < full[0]["reserve_bytes"] == 3 * 2**20
        low = [e for e in events if e["type"] == "disk-low"]  # ~1 minute fits in 32 MiB: below 30 at once
        assert len(low) == 1 and low[0]["seq"] < full[0]["seq"]
        assert not [e for e in events if e["type"] in ("recording-error", "seal-incomplete", "pipeline-failed")]
        segs = seg_files.list_indexes(session.dir)
        assert len(segs) >= 2 and all(s.closed for s in segs)
        assert segs[-1].end == pytest.approx(full[0]["t"], abs=0.6)

        manifest = json.loads((session.dir / "manifest.json").read_bytes())
        assert manifest["unsealed"] == []
        listed = {m["index"]: m for m in manifest["segments"]}
        records = {r.index: r for r in load_records(session.dir)}
        assert sorted(listed) == sorted(records) == [s.index for s in segs], "every closed segment is sealed"
        court = load_identity(identity)
        for seg in segs:
            sealed = ciphertext_path(session.dir, seg.index)
            assert sealed.exists() and sealed.suffix == ".age"
            assert not seg_files.media_path(session.dir, seg.index).exists(), "plaintext gone once sealed"
            plain = tmp_path / f"seg-{seg.index}.mp4"
            plain.write_bytes(pyrage.decrypt(sealed.read_bytes(), [court]))
            digest = hashlib.sha256(plain.read_bytes()).hexdigest()
            assert digest == records[seg.index].plaintext_sha256 == listed[seg.index]["plaintext_sha256"]
            video = next(s for s in ffprobe(plain)["streams"] if s["codec_type"] == "video")
            assert int(video["nb_read_packets"]) == seg.video_frames
        checks = verify_session(session.dir)
        assert failures(checks) == [], "kiosk verify passes on what was kept"
        assert result["seal"]["verified"] is True
    finally:
        if station is not None:
            station.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_torn_fragment_is_cut_back_to_the_last_whole_one(tmp_path: Path, tools):
    station = make_station(tmp_path, write_room(tmp_path))
    session = station.create_session("FAULT-4", "Synthetic", "Test")
    station.start()
    time.sleep(1.8)
    station.end()
    media = seg_files.media_path(session.dir, 1)
    whole = media.stat().st_size
    assert complete_length(media) == whole
    with media.open("r+b") as fh:
        fh.truncate(whole - 700)  # tear the last fragment
    removed = truncate_to_complete(media)
    assert removed > 0
    with av.open(str(media)) as c:
        frames = sum(1 for p in c.demux(video=0) if p.size)
    assert 0 < frames < seg_files.list_indexes(session.dir)[0].video_frames


def test_wall_clock_step_mid_recording_is_logged_and_media_times_do_not_bend(tmp_path: Path, tools):
    from kiosk.session import SessionClock

    step = [0.0]
    settings = load_settings(write_settings(tmp_path, recording={"segment_seconds": 2.0}))
    settings.storage.data_dir = tmp_path / "data"
    settings.storage.min_free_mb, settings.storage.max_session_minutes = 0, 1
    settings.transcription.enabled = False
    station = Station(settings, load_room(write_room(tmp_path, layout="single")), seal=False,
                      clock_factory=lambda: SessionClock(wall=lambda: time.time() + step[0]))
    session = station.create_session("FAULT-CLOCK", "Synthetic", "Test")
    station.start()
    wall0 = time.monotonic()
    time.sleep(2.5)
    t_step = session.now()
    step[0] = -3600.0  # someone sets the room PC's clock back an hour mid-interview
    time.sleep(3.0)
    station.end()
    wall = time.monotonic() - wall0
    steps = [e for e in session.events() if e["type"] == "wall-clock-step"]
    assert len(steps) == 1 and steps[0]["step_s"] == pytest.approx(-3600.0, abs=0.5)
    assert t_step <= steps[0]["t"] <= t_step + 1.5, "noticed within a second or so, on the session clock"
    segs = seg_files.list_indexes(session.dir)
    assert all(b.start == pytest.approx(a.end, abs=1 / 15) for a, b in zip(segs, segs[1:], strict=False)), \
        [(s.start, s.end) for s in segs]
    assert segs[-1].end - segs[0].start == pytest.approx(wall, abs=0.5), "spans follow the monotonic clock"
    recorded = _decode(session.dir)
    assert recorded.video_seconds == pytest.approx(wall, abs=0.5)
    assert recorded.audio_seconds["mix"] == pytest.approx(wall, abs=0.5)
    for seg in segs:  # inside every segment, frame times run on the 1/fps grid without a jump
        with av.open(str(seg_files.media_path(session.dir, seg.index))) as c:
            times = [float(f.time) for f in c.decode(video=0)]
        gaps = np.diff(times)
        assert np.allclose(gaps, 1 / 15, atol=1e-3), (seg.index, gaps.min(), gaps.max())


class FreezingCamera(VideoSource):
    """Wraps a real source; at `freeze_at` its driver call hangs for `for_s` seconds (the media thread with it)."""

    def __init__(self, inner: VideoSource, freeze_at: float, for_s: float) -> None:
        super().__init__(inner.name, "injected")
        self.inner, self.freeze_at, self.for_s, self.frozen = inner, freeze_at, for_s, False

    def open(self) -> None:
        self.inner.open()
        self.status.set("ok")

    def frame_at(self, t, size):
        if t >= self.freeze_at and not self.frozen:
            self.frozen = True
            time.sleep(self.for_s)
        return self.inner.frame_at(t, size)


def test_a_stuck_media_thread_shows_as_stalled_and_silences_the_watchdog(tmp_path: Path, tools, monkeypatch):
    from kiosk.media import pipeline as pipeline_mod

    monkeypatch.setattr(pipeline_mod, "STALL_LIMIT_S", 1.0)
    station = make_station(tmp_path, write_room(tmp_path, layout="single"))
    session = station.create_session("FAULT-STUCK", "Synthetic", "Test")
    cam = station.pipeline.cameras[0]
    station.pipeline.cameras[0] = FreezingCamera(cam, freeze_at=session.now() + 1.0, for_s=3.0)
    station.start()
    try:
        media = lambda: next(i for i in station.health()["items"] if i["item"] == "media")  # noqa: E731
        assert media() == {"item": "media", "ok": True, "detail": "running"}
        time.sleep(2.8)  # frozen since about 1.0 s: over the 1 s stall limit
        assert station.pipeline.alive and not station.pipeline.progressing
        assert media() == {"item": "media", "ok": False, "detail": "stalled"}
        assert station.health()["status"] == "failing"
        time.sleep(2.5)  # the call returned: the loop turns again
        assert station.pipeline.progressing and media()["ok"] is True
    finally:
        station.end()
