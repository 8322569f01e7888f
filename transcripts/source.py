"""Where the transcriber's audio comes from: a session's segment files, or one exported/decrypted MP4.

Both follow the segment contract (kiosk/media/segments.py): stream 0 video, stream 1 the live mix,
streams 2.. one microphone each, in room order, titled with the mic's role. Session time of a sample is
the segment's `start` plus its timestamp in the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import av

from kiosk.media import segments as seg_files

log = logging.getLogger("transcripts.source")

HOLDER = "transcriber"


@dataclass
class AudioSegment:
    index: int
    media: Path
    start: float  # session time of the file's time zero
    end: float | None
    closed: bool
    roles: list[str] = field(default_factory=list)
    mic_streams: list[int] = field(default_factory=list)  # container stream indexes, one per channel
    releasable: bool = False  # a session segment whose plaintext the transcriber may hold


def speaker_label(role: str, channel: int) -> str:
    role = role.strip()
    return role[:1].upper() + role[1:] if role else f"Microphone {channel + 1}"


def _stream_role(stream) -> str:
    meta = stream.metadata or {}
    for key in ("title", "handler_name", "name"):
        value = meta.get(key, "")
        if value and value not in ("SoundHandler", "mix"):
            return value
    return ""


def probe_mic_streams(media: Path) -> tuple[list[int], list[str]]:
    """Microphone streams of a file and their roles (from stream titles): streams 2.. when the file has
    the kiosk layout, else its only audio stream."""
    with av.open(str(media)) as c:
        audio = [s for s in c.streams if s.type == "audio"]
        mics = [s for s in audio if s.index >= seg_files.FIRST_MIC_STREAM]
        if not mics and len(audio) == 1:
            mics = audio
        return [s.index for s in mics], [_stream_role(s) for s in mics]


class SessionSource:
    """The segments of a session folder (live, or decrypted on the court side)."""

    kind = "session"

    def __init__(self, session_dir: Path) -> None:
        self.dir = session_dir
        self._info = self._read_info()

    def _read_info(self) -> dict:
        path = self.dir / "session.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError:
            log.warning("%s is unreadable; treating the session as ended", path)
            return {}

    def ended(self) -> bool:
        """A session without session.json (e.g. a decrypted copy) is a finished recording."""
        self._info = self._read_info() or self._info
        return self._info.get("state", "ended") == "ended"

    @property
    def language(self) -> str | None:
        return self._info.get("language")

    def meta(self) -> dict:
        info = self._info
        wall = ((info.get("clock") or {}).get("start") or {}).get("wall") or info.get("created_wall") or ""
        return {"case_reference": info.get("case_reference"), "session_id": info.get("id") or self.dir.name,
                "date": wall[:10] or None, "source": f"session {info.get('id') or self.dir.name}"}

    def segments(self) -> list[AudioSegment]:
        out = []
        for idx in seg_files.list_indexes(self.dir):
            media = seg_files.media_path(self.dir, idx.index)
            n = len(idx.mic_roles)
            streams = list(range(seg_files.FIRST_MIC_STREAM, seg_files.FIRST_MIC_STREAM + n))
            out.append(AudioSegment(idx.index, media, float(idx.start), idx.end, bool(idx.closed),
                                    list(idx.mic_roles), streams, releasable=True))
        return out

    def held(self, seg: AudioSegment) -> bool:
        return HOLDER in seg_files.holders(seg.media)

    def release(self, seg: AudioSegment) -> None:
        if seg.releasable and self.held(seg):
            deleted = seg_files.release(seg.media, HOLDER)
            log.info("released segment %d%s", seg.index, " (plaintext deleted)" if deleted else "")


class FileSource:
    """One MP4 with the segment layout (e.g. an export decrypted on the court side)."""

    kind = "file"

    def __init__(self, path: Path, start: float = 0.0, roles: list[str] | None = None,
                 language: str | None = None, case_reference: str | None = None) -> None:
        self.path = path
        self.start = start
        self.language = language
        self.case_reference = case_reference
        streams, found = probe_mic_streams(path)
        with av.open(str(path)) as c:
            self.duration = float(c.duration / 1_000_000) if c.duration else None
        if not streams:
            raise ValueError(f"{path} has no microphone audio streams")
        if roles and len(roles) != len(streams):
            raise ValueError(f"--roles names {len(roles)} speakers but {path.name} has {len(streams)} microphone streams")
        self.streams, self.roles = streams, roles or found

    def ended(self) -> bool:
        return True

    def meta(self) -> dict:
        date = None
        try:
            with av.open(str(self.path)) as c:
                created = c.metadata.get("creation_time", "")
                date = created[:10] or None
        except av.error.FFmpegError:
            pass
        if date is None:
            date = dt.datetime.fromtimestamp(self.path.stat().st_mtime, dt.UTC).date().isoformat() + " (file date)"
        return {"case_reference": self.case_reference, "session_id": None, "date": date,
                "source": self.path.name}

    def segments(self) -> list[AudioSegment]:
        end = self.start + self.duration if self.duration else None
        return [AudioSegment(0, self.path, self.start, end, True, list(self.roles), list(self.streams))]

    def held(self, seg: AudioSegment) -> bool:
        return False

    def release(self, seg: AudioSegment) -> None:
        pass
