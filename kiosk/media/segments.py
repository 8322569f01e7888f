"""Segment files of a session and their JSON indexes: the contract between recorder, sealer and transcriber.

A session directory holds `segments/seg-000001.mp4` (fragmented MP4, plaintext while it is needed) and
beside it `seg-000001.json`, the segment's index. Track layout of every segment:

- stream 0: H.264 video, the composed picture;
- stream 1: Opus mono 48 kHz, the live mix of all microphones (what players play by default);
- streams 2..: Opus mono 48 kHz, one per microphone in room-profile order, title = the mic's role
  (these are what the transcriber reads, so each speaker stays on its own channel).

Plaintext may be deleted only when every holder has released it: the sealer always holds it until the
ciphertext is safe; the transcriber adds a hold (a `.hold-<name>` file) before the segment closes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SEGMENT_DIR = "segments"
VIDEO_STREAM = 0
MIX_STREAM = 1
FIRST_MIC_STREAM = 2


def segment_name(index: int) -> str:
    return f"seg-{index:06d}"


@dataclass
class SegmentIndex:
    """What the recorder knows about one segment file; written when it opens and when it closes."""

    index: int
    file: str
    start: float  # session time (s) of the file's media time 0 (session time = start + pts time)
    end: float | None = None  # start + recorded video duration (= next segment's start); None while open
    video_frames: int = 0
    audio_samples: int = 0  # per channel, at sample_rate
    sample_rate: int = 48000
    fps: int = 30
    width: int = 0
    height: int = 0
    mic_roles: list[str] = field(default_factory=list)
    closed: bool = False
    recovered: bool = False  # closed by start-up recovery after a crash
    bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> SegmentIndex:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def segments_dir(session_dir: Path) -> Path:
    return session_dir / SEGMENT_DIR


def index_path(session_dir: Path, index: int) -> Path:
    return segments_dir(session_dir) / f"{segment_name(index)}.json"


def media_path(session_dir: Path, index: int) -> Path:
    return segments_dir(session_dir) / f"{segment_name(index)}.mp4"


def write_index(session_dir: Path, seg: SegmentIndex) -> None:
    """Atomically replace the segment's index (write, fsync, rename), so a crash never leaves half a file."""
    path = index_path(session_dir, seg.index)
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w") as fh:
        fh.write(seg.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_index(path: Path) -> SegmentIndex:
    return SegmentIndex.from_dict(json.loads(path.read_text()))


def list_indexes(session_dir: Path) -> list[SegmentIndex]:
    d = segments_dir(session_dir)
    if not d.is_dir():
        return []
    return sorted((read_index(p) for p in d.glob("seg-*.json")), key=lambda s: s.index)


def hold(media: Path, holder: str) -> None:
    """Keep a segment's plaintext until `holder` releases it."""
    media.with_name(f"{media.name}.hold-{holder}").touch()


def holders(media: Path) -> list[str]:
    prefix = f"{media.name}.hold-"
    return sorted(p.name[len(prefix):] for p in media.parent.glob(f"{media.name}.hold-*"))


def release(media: Path, holder: str) -> bool:
    """Drop `holder`'s hold; delete the plaintext when nobody holds it any more. True if deleted."""
    media.with_name(f"{media.name}.hold-{holder}").unlink(missing_ok=True)
    if holders(media):
        return False
    media.unlink(missing_ok=True)
    return True
