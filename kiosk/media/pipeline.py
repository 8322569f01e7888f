"""The media thread: pull from sources on the session clock, compose, encode once, record and fan out.

Audio and video share one media clock (session time minus the pipeline's start): video frame n is
the picture at n/fps, audio block k holds samples [960k, 960k + 960) at 48 kHz. Audio blocks that end
before a video frame's time are always encoded before that frame, so a segment cut on a video keyframe
splits audio without loss or repetition, and flash/beep offsets in the file are exactly the sources'.
Nothing here waits on the network or on disk syncs longer than one fragment write.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..capture.base import AudioSource, VideoSource
from ..config import RoomProfile, Settings
from ..session import Session
from . import segments as seg_files
from .compose import Compositor
from .encoder import OPUS_FRAME, AudioEncoder, VideoEncoder, copy_packet
from .hub import PacketHub
from .recorder import SegmentRecorder
from .segments import SegmentIndex

log = logging.getLogger("kiosk.pipeline")

STALL_LIMIT_S = 10.0  # a media loop that has not turned for this long is stuck (watchdog, health)
MAX_LAG_S = 1.0  # further behind than this, frames are skipped (and counted as dropped)
OVERHEAD = 1.10  # container overhead on top of the encoder bitrates


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the file system holding `path` (the pipeline's default free-space reader)."""
    return shutil.disk_usage(path).free


def recording_bytes_per_second(settings: Settings, room: RoomProfile) -> float:
    """Worst-case bytes per recorded second: video bitrate + the mix and one Opus track per microphone,
    plus container overhead. Station.bytes_per_second (console minutes of recording) uses it too."""
    enc = settings.encoder
    return (enc.video_bitrate_kbps + enc.audio_bitrate_kbps * (1 + len(room.microphones))) * 125 * OVERHEAD


class TalkbackBuffer:
    """The judge's push-to-talk audio on its way into the recording (its own track, never the live mix)."""

    MAX_SAMPLES = 48000 // 2

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._size = 0
        self._lock = threading.Lock()

    def push(self, pcm: np.ndarray) -> None:
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        with self._lock:
            self._chunks.append(pcm)
            self._size += len(pcm)
            while self._size > self.MAX_SAMPLES and len(self._chunks) > 1:  # never more than 0.5 s behind
                self._size -= len(self._chunks.pop(0))

    def take(self, count: int) -> np.ndarray:
        out = np.zeros(count, np.float32)
        filled = 0
        with self._lock:
            while filled < count and self._chunks:
                chunk = self._chunks[0]
                n = min(count - filled, len(chunk))
                out[filled:filled + n] = chunk[:n]
                filled += n
                self._size -= n
                if n == len(chunk):
                    self._chunks.pop(0)
                else:
                    self._chunks[0] = chunk[n:]
        return out


TALKBACK_ROLE = "judge-talkback"


@dataclass
class PipelineStats:
    frames_encoded: int = 0
    frames_dropped: int = 0
    frames_slate: int = 0
    audio_blocks: int = 0
    max_lag_s: float = 0.0
    segments_closed: int = 0
    levels_dbfs: dict[str, float] = field(default_factory=dict)


class MediaPipeline:
    def __init__(
        self,
        room: RoomProfile,
        settings: Settings,
        session: Session,
        hub: PacketHub,
        cameras: list[VideoSource],
        mics: list[AudioSource],
        holders: tuple[str, ...] = (),
        on_segment_closed: Callable[[Path, SegmentIndex], None] | None = None,
    ) -> None:
        self.room, self.settings, self.session, self.hub = room, settings, session, hub
        self.cameras, self.mics = cameras, mics
        self.holders = holders
        self.on_segment_closed = on_segment_closed
        v = room.video
        self.fps = v.fps
        self.compositor = Compositor(v, [c.name for c in cameras])
        self.video = VideoEncoder(v.width, v.height, v.fps, settings.encoder)
        self.mix_encoder = AudioEncoder(settings.encoder.audio_bitrate_kbps)
        self.mic_encoders = [AudioEncoder(settings.encoder.audio_bitrate_kbps) for _ in mics]
        # rooms with an earpiece record the judge's talkback as one more track after the microphones
        self.talkback = TalkbackBuffer() if room.earpiece is not None else None
        self.track_roles = [m.role for m in mics] + ([TALKBACK_ROLE] if self.talkback else [])
        if self.talkback is not None:
            self.mic_encoders.append(AudioEncoder(settings.encoder.audio_bitrate_kbps))
        self.stats = PipelineStats()
        self.recorder: SegmentRecorder | None = None
        self._commands: queue.Queue = queue.Queue()
        self._want_recording = False
        self._keyframe_requested = threading.Event()
        self._stop = threading.Event()
        self._beat = time.monotonic()  # the media thread's last turn of its loop
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.media_t0 = 0.0
        self.disk_full = False
        self.disk_low = False  # the disk-low warning was logged (once per session)
        # free-space reader for the disk checks; tests replace it to simulate a filling disk
        self.free_bytes: Callable[[Path], int] = disk_free_bytes
        self.bytes_per_second = recording_bytes_per_second(settings, room)
        hub.video_time_base = self.video.time_base
        hub.audio_time_base = self.mix_encoder.time_base
        hub.keyframe_min_gap_s = settings.encoder.keyframe_min_gap_s
        hub.on_keyframe_request = self._keyframe_requested.set
        self._source_changes = {s.name: -1 for s in [*cameras, *mics]}

    # ------------------------------------------------------------ control (any thread)

    def start(self) -> None:
        # frames fall on the session's 1/fps grid, so a flash and a beep scheduled at the same session
        # time coincide exactly (and sample offsets are whole numbers)
        self.media_t0 = math.ceil(self.session.now() * self.fps) / self.fps
        for mic in self.mics:
            mic.session_offset = round(self.media_t0 * 48000)
        self._thread = threading.Thread(target=self._run, name="media", daemon=True)
        self._thread.start()

    def _call(self, command: str, timeout: float = 10.0) -> None:
        done = threading.Event()
        self._commands.put((command, done))
        if not self.alive:  # the media thread is gone (failed or stopped): act here, nobody else will
            self._drain_commands(0)
            return
        if not done.wait(timeout) and self._thread and self._thread.is_alive():
            raise TimeoutError(f"media thread did not {command} within {timeout} s")

    def start_recording(self) -> None:
        self._call("record")

    def stop_recording(self) -> None:
        """Close the open segment (pause or end); returns once it is closed and fsynced."""
        self._call("stop-recording")

    def stop(self) -> None:
        if self._thread and self._thread.is_alive():
            self._call("stop-recording")
            self._stop.set()
            self._thread.join(timeout=10)
        for src in [*self.cameras, *self.mics]:
            src.close()
        self.video.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def progressing(self) -> bool:
        """Alive and turning: a media thread stuck in a call (a hung driver, a frozen disk) is alive but
        records nothing; the service watchdog must see that and let systemd restart and recover."""
        return self.alive and time.monotonic() - self._beat < STALL_LIMIT_S

    @property
    def recording(self) -> bool:
        return self.recorder is not None and self.recorder.is_open

    def levels(self) -> dict[str, float]:
        return dict(self.stats.levels_dbfs)

    # ------------------------------------------------------------ the media thread

    def _run(self) -> None:
        n = 0  # next video frame
        k = 0  # next audio block
        last_housekeeping = 0.0
        try:
            while not self._stop.is_set():
                self._beat = time.monotonic()
                mt = self.session.now() - self.media_t0
                self._drain_commands(n)
                while (k + 1) * OPUS_FRAME / 48000 <= mt:
                    self._audio_block(k)
                    k += 1
                due = n / self.fps
                if due <= mt:
                    lag = mt - due
                    self.stats.max_lag_s = max(self.stats.max_lag_s, lag)
                    if lag > MAX_LAG_S:
                        skip = int(lag * self.fps) - 1
                        self.stats.frames_dropped += skip
                        log.warning("media thread %.2f s behind: skipping %d frames", lag, skip)
                        n += skip
                    self._video_frame(n)
                    n += 1
                    continue
                if mt - last_housekeeping >= 0.5:
                    last_housekeeping = mt
                    self._housekeeping()
                next_event = min(due, (k + 1) * OPUS_FRAME / 48000)
                time.sleep(max(0.0, min(next_event - mt, 0.02)))
        except BaseException as exc:  # noqa: BLE001 - the session must learn why media stopped
            self._failure = exc
            log.exception("media thread failed")
            self.session.record("pipeline-failed", error=f"{type(exc).__name__}: {exc}")
            self._close_segment()
        finally:
            self._drain_commands(n, final=True)

    def _drain_commands(self, n: int, final: bool = False) -> None:
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "record" and not final:
                self._want_recording = True
            elif command == "stop-recording":
                self._want_recording = False
                self._close_segment()
            done.set()

    def _close_segment(self) -> None:
        if self.recorder and self.recorder.is_open:
            try:
                self.recorder.close_segment()
                self.stats.segments_closed += 1
            except OSError as exc:
                log.error("closing segment failed: %s", exc)
                self.session.record("recording-error", error=str(exc))

    def _housekeeping(self) -> None:
        self.session.check_clock()
        self._check_disk()
        for src in [*self.cameras, *self.mics]:
            if src.status.changes != self._source_changes[src.name]:
                first = self._source_changes[src.name] == -1
                self._source_changes[src.name] = src.status.changes
                if not first:
                    self.session.record("device-state", source=src.name, state=src.status.state,
                                        detail=src.status.detail)

    def _video_frame(self, n: int) -> None:
        t = self.media_t0 + n / self.fps
        frames = []
        for cam, size in zip(self.cameras, self.compositor.sizes(), strict=False):  # "single" shows camera 0
            try:
                img = cam.frame_at(t, size)
            except Exception as exc:  # noqa: BLE001 - a broken source must not stop the recording
                cam.status.set("failed", f"{type(exc).__name__}: {exc}")
                img = None
            if img is not None and cam.status.state == "failed":
                cam.status.set("ok", "signal restored")
            frames.append(img)
        if any(f is None for f in frames):
            self.stats.frames_slate += 1
        canvas = self.compositor.compose(frames)
        rec = self.recorder
        force = self._keyframe_requested.is_set()
        if self._want_recording and (rec is None or not rec.is_open):
            force = True
        elif rec is not None and rec.is_open and rec.segment_age(n) >= self.settings.recording.segment_seconds - 1e-6:
            force = True
        self._keyframe_requested.clear()
        for packet in self.video.encode(canvas, n, keyframe=force):
            self.stats.frames_encoded += 1
            self.hub.publish("video", copy_packet(packet))
            self._record_video(packet)

    def _record_video(self, packet) -> None:
        if not self._want_recording:
            return
        if self.recorder is None:
            if not packet.is_keyframe:
                return
            self.recorder = SegmentRecorder(
                self.session.dir, self.video.template_from(packet), self.fps, self.room.video.width,
                self.room.video.height, self.track_roles,
                fragment_seconds=self.settings.recording.fragment_seconds,
                first_index=len(seg_files.list_indexes(self.session.dir)) + 1,
                holders=self.holders, on_closed=self._segment_closed,
            )
        rec = self.recorder
        try:
            if packet.is_keyframe:
                if rec.is_open and rec.segment_age(packet.pts) >= self.settings.recording.segment_seconds - 1e-6:
                    rec.close_segment()
                    self.stats.segments_closed += 1
                if not rec.is_open:
                    rec.open_segment(packet.pts, self.media_t0)
            if rec.is_open:
                rec.write_video(packet)
        except (OSError, Exception) as exc:  # noqa: BLE001 - disk full, I/O error: stop cleanly, keep what exists
            self._recording_failed(exc)

    def _recording_failed(self, exc: BaseException) -> None:
        log.error("recording stopped: %s", exc)
        self._want_recording = False
        if self.recorder and self.recorder.is_open:
            try:
                self.recorder.abort_segment()
                self.stats.segments_closed += 1
            except Exception:  # noqa: BLE001 - recovery at next start closes it
                log.exception("could not close the failed segment; start-up recovery will")
        try:
            self.session.record("recording-error", error=f"{type(exc).__name__}: {exc}",
                                note="recording stopped; every complete fragment is kept and sealed")
        except OSError:
            log.error("could not log the recording error (disk full?)")

    def _check_disk(self) -> None:
        """Stop cleanly while there is still room to close, seal and log, rather than at ENOSPC; log one
        `disk-low` event when the space left holds fewer than storage.warn_free_minutes of recording."""
        if not (self.recorder and self.recorder.is_open):
            return
        free = self.free_bytes(self.session.dir)
        reserve = self.settings.storage.min_free_mb * 2**20
        if free < reserve:
            self._want_recording = False
            self._close_segment()
            self.disk_full = True
            self.session.record("disk-full", free_bytes=free, reserve_bytes=reserve,
                                note="recording stopped cleanly; recorded segments closed and sealed")
            return
        minutes_left = free / self.bytes_per_second / 60
        warn_below = self.settings.storage.warn_free_minutes
        if not self.disk_low and minutes_left < warn_below:
            self.disk_low = True
            log.warning("disk low: about %.1f minutes of recording left", minutes_left)
            try:
                self.session.record("disk-low", minutes_left=round(minutes_left, 1), free_bytes=free,
                                    warn_free_minutes=warn_below,
                                    note=f"about {minutes_left:.1f} minutes of recording left "
                                         f"(warning below {warn_below} minutes); recording continues")
            except OSError:
                log.error("could not log the disk-low warning (disk full?)")

    def _segment_closed(self, session_dir: Path, seg: SegmentIndex) -> None:
        self.session.record("segment-closed", index=seg.index, start=seg.start, end=seg.end,
                            video_frames=seg.video_frames, bytes=seg.bytes)
        if self.on_segment_closed:
            self.on_segment_closed(session_dir, seg)

    def _audio_block(self, k: int) -> None:
        start = k * OPUS_FRAME
        blocks = []
        for mic in self.mics:
            try:
                pcm = mic.pcm(start, OPUS_FRAME)
                if mic.status.state == "failed":
                    mic.status.set("ok", "signal restored")
            except Exception as exc:  # noqa: BLE001 - a broken microphone gives silence, not a stop
                mic.status.set("failed", f"{type(exc).__name__}: {exc}")
                pcm = np.zeros(OPUS_FRAME, np.float32)
            blocks.append(pcm)
            rms = float(np.sqrt(np.mean(pcm * pcm))) if len(pcm) else 0.0
            self.stats.levels_dbfs[mic.name] = round(20 * math.log10(rms + 1e-9), 1)
        mix = np.clip(np.sum(blocks, axis=0), -1.0, 1.0) if blocks else np.zeros(OPUS_FRAME, np.float32)
        self.stats.audio_blocks += 1
        recording = self.recorder is not None and self.recorder.is_open
        for packet in self.mix_encoder.encode(mix, start):
            self.hub.publish("audio", copy_packet(packet))
            if recording:
                self._record_audio(seg_files.MIX_STREAM, packet)
        if self.talkback is not None:
            blocks.append(self.talkback.take(OPUS_FRAME))  # recorded, not mixed into the live sound
        if recording:
            for i, (enc, pcm) in enumerate(zip(self.mic_encoders, blocks, strict=True)):
                for packet in enc.encode(pcm, start):
                    self._record_audio(seg_files.FIRST_MIC_STREAM + i, packet)

    def _record_audio(self, stream: int, packet) -> None:
        try:
            if self.recorder is not None and self.recorder.is_open:
                self.recorder.write_audio(stream, packet)
        except (OSError, Exception) as exc:  # noqa: BLE001
            self._recording_failed(exc)
