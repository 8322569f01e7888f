"""File sources: any media file PyAV opens, played at real-time pace on the session clock.

Used for rehearsals and tests. The file's own timeline is mapped onto session time from the moment the
source is first asked for media, so a file's second 3.0 is always recorded at (first call + 3.0 s).
A file that becomes unreadable behaves like an unplugged device: no signal / silence, then reopen.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np

from ..config import FileAudioSource, FileVideoSource
from ..errors import SourceError
from .base import SAMPLE_RATE, AudioSource, VideoSource

RETRY_S = 1.0


def _open_container(path: Path, want: str):
    if not path.exists():
        raise SourceError(f"media file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot read media file {path}: {exc}") from None
    streams = container.streams.video if want == "video" else container.streams.audio
    if not streams:
        container.close()
        raise SourceError(f"media file {path} has no {want} stream")
    return container, streams[0]


def decode_audio_file(path: Path, channel: int = 0) -> np.ndarray:
    """Whole file as mono float32 at SAMPLE_RATE (one channel picked, not mixed)."""
    container, stream = _open_container(Path(path), "audio")
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=SAMPLE_RATE)
    chunks = []
    with container:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray()[min(channel, out.to_ndarray().shape[0] - 1)])
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray()[min(channel, out.to_ndarray().shape[0] - 1)])
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


class FileCamera(VideoSource):
    def __init__(self, spec: FileVideoSource) -> None:
        super().__init__(spec.name, "file")
        self.spec = spec
        self._container = None
        self._frames = None
        self._origin: float | None = None  # session time at which file time 0 plays
        self._current: np.ndarray | None = None
        self._current_time = -1.0
        self._next_retry = 0.0
        self._next_check = 0.0
        self._size = (0, 0)

    def open(self) -> None:
        self._container, stream = _open_container(self.spec.path, "video")
        stream.thread_type = "AUTO"
        self._size = (stream.codec_context.width, stream.codec_context.height)
        self._frames = self._container.decode(stream)
        self._current, self._current_time = None, -1.0
        self.status.set("ok", f"{self.spec.path.name} {self._size[0]}x{self._size[1]}")

    def _fail(self, reason: str) -> None:
        self.status.set("no-signal", reason)
        if self._container:
            self._container.close()
        self._container = self._frames = None
        self._next_retry = time.monotonic() + RETRY_S

    def frame_at(self, t: float, size: tuple[int, int]) -> np.ndarray | None:
        if self._frames is None:
            if time.monotonic() < self._next_retry:
                return None
            try:
                self.open()
                self._origin = t
            except SourceError as exc:
                self._fail(str(exc))
                return None
        if self._origin is None:
            self._origin = t
        now = time.monotonic()
        if now >= self._next_check:  # an unplugged disk or a deleted file is a lost device
            self._next_check = now + RETRY_S
            if not self.spec.path.exists():
                self._fail(f"file {self.spec.path.name} disappeared")
                return None
        want = t - self._origin
        try:
            while self._current_time < want:
                frame = next(self._frames)
                self._current = frame.to_ndarray(format="bgr24")
                self._current_time = float(frame.time or 0.0)
        except StopIteration:
            if not self.spec.loop:
                self._fail("end of file")
                return None
            self._container.close()
            self.open()
            self._origin = t
        except (av.error.FFmpegError, OSError) as exc:
            self._fail(f"read error: {exc}")
            return None
        img = self._current
        if img is not None and (img.shape[1], img.shape[0]) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return img

    def close(self) -> None:
        if self._container:
            self._container.close()
        self._container = self._frames = None
        super().close()

    def facts(self) -> dict:
        return {**super().facts(), "file": self.spec.path.name, "size": list(self._size)}


class FileMicrophone(AudioSource):
    """Plays one channel of a file's audio; loops or falls silent at the end."""

    def __init__(self, spec: FileAudioSource) -> None:
        super().__init__(spec.name, "file", spec.role)
        self.spec = spec
        self._pcm = np.zeros(0, np.float32)
        self._origin: int | None = None

    def open(self) -> None:
        self._pcm = decode_audio_file(self.spec.path, self.spec.channel)
        if len(self._pcm) == 0:
            raise SourceError(f"media file {self.spec.path} has no audio samples")
        self.status.set("ok", f"{self.spec.path.name} {len(self._pcm) / SAMPLE_RATE:.1f} s")

    def pcm(self, start_sample: int, count: int) -> np.ndarray:
        if self._origin is None:
            self._origin = start_sample
        pos = start_sample - self._origin
        n = len(self._pcm)
        if self.spec.loop:
            idx = (np.arange(pos, pos + count) % n)
            return self._pcm[idx]
        out = np.zeros(count, np.float32)
        lo, hi = min(pos, n), min(pos + count, n)
        out[: hi - lo] = self._pcm[lo:hi]
        if hi >= n:
            self.status.set("no-signal", "end of file")
        return out
