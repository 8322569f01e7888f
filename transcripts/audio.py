"""Audio for the recogniser: any PyAV audio (layout, rate, sample format) as 16 kHz mono s16, timed exactly.

vosk models are trained on 16 kHz mono; anything else quietly ruins recognition. PyAV's AudioResampler
(libswresample) does the conversion, so stereo, 44.1/48 kHz, float or planar input all work. Time is
kept by counting output samples from the start of a contiguous run, never from per-frame timestamps,
so a word's time is exact to the sample; a jump in the source timestamps (a pause, lost audio) starts
a new run instead of stretching or squeezing time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

TARGET_RATE = 16000
GAP_TOLERANCE_S = 0.1  # a larger jump in source timestamps is missing audio, not jitter


class MonoConverter:
    """One contiguous run of audio in, 16 kHz mono int16 out (output sample 0 = input sample 0)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        frame.pts = None  # the run's time is counted in samples; do not let the filter graph re-time it
        return _join(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler's filter; call once when the run ends."""
        return _join(self._resampler.resample(None))


def _join(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.int16)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


def frame_from_array(samples: np.ndarray, rate: int) -> av.AudioFrame:
    """An AudioFrame from numpy: shape (n,) or (n, channels); int16, int32 or float (-1..1) samples."""
    a = np.asarray(samples)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"audio must have shape (n,) or (n, channels), got {a.shape}")
    formats = {np.dtype(np.int16): "s16", np.dtype(np.int32): "s32", np.dtype(np.float32): "flt",
               np.dtype(np.float64): "dbl"}
    fmt = formats.get(a.dtype)
    if fmt is None:
        a, fmt = a.astype(np.float32), "flt"
    channels = a.shape[1]
    layout = {1: "mono", 2: "stereo"}.get(channels) or av.AudioLayout(channels).name
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(a).reshape(1, -1), format=fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def to_pcm16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Convert a whole numpy clip (any rate, channels, sample type) to 16 kHz mono int16."""
    conv = MonoConverter()
    return np.concatenate([conv.convert(frame_from_array(samples, rate)), conv.flush()])


@dataclass
class PcmBlock:
    """Converted audio from one stream of a file."""

    stream: int  # stream index in the container
    start: float  # session time of the first sample
    pcm: np.ndarray  # int16, 16 kHz mono
    new_run: bool  # the first block after a gap (or of the file): not contiguous with the previous block


class _Track:
    def __init__(self) -> None:
        self.conv: MonoConverter | None = None
        self.run_start = 0.0  # session time of the run's first sample
        self.run_samples = 0  # 16 kHz samples emitted in this run
        self.expect: float | None = None  # source time where the next frame should begin
        self.fresh = True

    def emit(self, stream: int, pcm: np.ndarray) -> PcmBlock | None:
        if not len(pcm) and not self.fresh:
            return None
        block = PcmBlock(stream, self.run_start + self.run_samples / TARGET_RATE, pcm, self.fresh)
        self.run_samples += len(pcm)
        self.fresh = False
        return block


def read_tracks(path: Path, streams: Sequence[int], offset: float) -> Iterator[PcmBlock]:
    """Decode the given audio streams of a media file in one pass, as 16 kHz mono blocks on the session clock.

    offset: session time of the file's time zero (a segment's `start`). Blocks of different streams come
    interleaved in file order; each stream's blocks are in time order.
    """
    with av.open(str(path)) as container:
        wanted = [container.streams[i] for i in streams]
        tracks = {s.index: _Track() for s in wanted}
        for packet in container.demux(wanted):
            track = tracks[packet.stream.index]
            for frame in packet.decode():
                yield from _frame_blocks(packet.stream.index, track, frame, offset)
        for index, track in tracks.items():
            if track.conv is not None:
                block = track.emit(index, track.conv.flush())
                if block is not None:
                    yield block


def _frame_blocks(index: int, track: _Track, frame: av.AudioFrame, offset: float) -> Iterator[PcmBlock]:
    t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
    if t is None:
        t = track.expect if track.expect is not None else 0.0
    if track.conv is not None and track.expect is not None and t - track.expect > GAP_TOLERANCE_S:
        block = track.emit(index, track.conv.flush())  # the end of the run before the gap
        if block is not None:
            yield block
        track.conv = None
    if track.conv is None:
        track.conv = MonoConverter()
        track.run_start = offset + t
        track.run_samples = 0
        track.fresh = True
        track.expect = t
    track.expect += frame.samples / frame.sample_rate
    block = track.emit(index, track.conv.convert(frame))
    if block is not None:
        yield block
