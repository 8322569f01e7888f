"""Synthetic testimony for tests and benchmarks: espeak-ng speech placed at known offsets, muxed into
segment files that follow the recorder's contract (kiosk/media/segments.py).

Only synthetic voices and invented cases are used. Making the files here, from numpy audio, lets the
transcriber be tested without the capture pipeline, with speech exactly where the test says it is.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kiosk.media import segments as seg_files
from kiosk.media.segments import SegmentIndex

from .audio import frame_from_array

RATE = 48000
OPUS_FRAME = 960
ONSET_DBFS = -40.0


def speak(text: str, voice: str = "ko", rate: int = RATE, speed: int = 160) -> np.ndarray:
    """espeak-ng speech as float32 mono at `rate`, trimmed so that sample 0 is where the voice begins."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True,
                       capture_output=True)
        with wave.open(str(wav)) as w:
            src_rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    r = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frames = r.resample(frame_from_array(pcm, src_rate)) + r.resample(None)
    out = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    level = 10 ** (ONSET_DBFS / 20)
    loud = np.nonzero(np.abs(out) > level)[0]
    if not len(loud):
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    return out[loud[0]: loud[-1] + 1]


def place(duration: float, clips: list[tuple[float, np.ndarray]], rate: int = RATE) -> np.ndarray:
    """Silence of `duration` seconds with each clip starting at its offset (seconds)."""
    out = np.zeros(round(duration * rate), np.float32)
    for offset, clip in clips:
        i = round(offset * rate)
        n = min(len(clip), len(out) - i)
        if i < 0 or n <= 0:
            raise ValueError(f"clip at {offset} s does not fit in {duration} s")
        out[i: i + n] += clip[:n]
    return out


def write_mp4(path: Path, mics: list[np.ndarray], roles: list[str], rate: int = RATE, fps: int = 5) -> int:
    """A fragmented MP4 with the segment layout: tiny H.264 video, the mix, then one Opus track per mic.
    All tracks start at pts 0; returns the number of audio samples per track."""
    n = max(len(m) for m in mics)
    mics = [np.pad(m.astype(np.float32), (0, n - len(m))) for m in mics]
    mix = np.clip(np.sum(mics, axis=0), -1.0, 1.0)
    out = av.open(str(path), "w", format="mp4",
                  options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    video.options = {"tune": "zerolatency", "preset": "ultrafast"}
    video.time_base = Fraction(1, fps)
    tracks = []
    for title, samples in [("mix", mix), *zip(roles, mics, strict=True)]:
        s = out.add_stream("libopus", rate=rate)
        s.layout = "mono"
        s.time_base = Fraction(1, rate)
        s.metadata["title"] = title
        s.metadata["handler_name"] = title
        tracks.append((s, samples))
    picture = np.full((48, 64, 3), 90, np.uint8)
    next_frame = 0
    for start in range(0, n, OPUS_FRAME):
        while next_frame / fps <= start / rate:
            vf = av.VideoFrame.from_ndarray(picture, format="rgb24")
            vf.pts = next_frame
            out.mux(video.encode(vf))
            next_frame += 1
        for stream, samples in tracks:
            af = frame_from_array(samples[start: start + OPUS_FRAME], rate)
            af.pts = start
            out.mux(stream.encode(af))
    out.mux(video.encode(None))
    for stream, _ in tracks:
        out.mux(stream.encode(None))
    out.close()
    return n


def write_segment(session_dir: Path, index: int, start: float, mics: list[np.ndarray], roles: list[str],
                  closed: bool = True, holders: tuple[str, ...] = ("transcriber",),
                  rate: int = RATE) -> SegmentIndex:
    """A segment as the recorder leaves it: holds placed first, media written, index last (closed)."""
    seg_files.segments_dir(session_dir).mkdir(parents=True, exist_ok=True)
    media = seg_files.media_path(session_dir, index)
    for holder in holders:
        seg_files.hold(media, holder)
    seg = SegmentIndex(index=index, file=media.name, start=round(start, 6), mic_roles=list(roles),
                       width=64, height=48, fps=5)
    seg_files.write_index(session_dir, seg)
    samples = write_mp4(media, mics, roles, rate)
    seg.audio_samples = samples
    if closed:
        seg.end = round(start + samples / rate, 6)
        seg.closed = True
        seg.bytes = media.stat().st_size
        seg_files.write_index(session_dir, seg)
    return seg


def split_into_segments(session_dir: Path, tracks: list[np.ndarray], roles: list[str],
                        bounds: list[tuple[float, float, float]], holders: tuple[str, ...] = ("transcriber",),
                        first_index: int = 1, rate: int = RATE) -> list[SegmentIndex]:
    """Cut whole-session mic tracks into segments: bounds = [(session start, track from, track to)] in s.
    A session start later than the previous segment's end is a pause."""
    segs = []
    for k, (start, a, b) in enumerate(bounds):
        parts = [t[round(a * rate): round(b * rate)] for t in tracks]
        segs.append(write_segment(session_dir, first_index + k, start, parts, roles, holders=holders, rate=rate))
    return segs

