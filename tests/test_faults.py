"""Recording survives what rooms do to it: dead sources, vanished files, full disks, torn files."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest

from kiosk.capture.base import VideoSource
from kiosk.config import load_room, load_settings
from kiosk.media import segments as seg_files
from kiosk.media.fragments import complete_length, truncate_to_complete
from kiosk.station import Station
from tests.conftest import ffprobe, write_room, write_settings

pytestmark = pytest.mark.e2e


def make_station(tmp_path: Path, room_path: Path, data: Path | None = None, **settings_over) -> Station:
    settings = load_settings(write_settings(tmp_path, recording={"segment_seconds": 2.0}, **settings_over))
    settings.storage.data_dir = data or tmp_path / "data"
    settings.storage.min_free_mb = settings_over.get("storage", {}).get("min_free_mb", 0)
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    return Station(settings, load_room(room_path), seal=False)


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
    time.sleep(1.5)
    hidden = tmp_path / "hidden.mp4"
    clip.rename(hidden)
    time.sleep(3.0)
    hidden.rename(clip)
    time.sleep(2.5)
    station.end()
    slates, _ = _slate_frames(session.dir)
    assert 1.5 <= len(slates) / 15 <= 4.5
    states = [(e["state"], e["detail"]) for e in session.events() if e["type"] == "device-state"]
    assert states[0][0] == "no-signal" and "disappeared" in states[0][1]
    assert states[-1][0] == "ok"


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
