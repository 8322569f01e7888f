"""Reassemble decrypted segments into one MP4 that plays anywhere: packets are copied (no re-encode)
onto one continuous timeline, each segment placed at its session-time `start` from the manifest, and
the file is written with faststart (moov first) so players and browsers start at once.

MP4 time 0 is the session time of the first segment's media time 0, so a session time t (transcripts,
session record) is at t - first_start in the file. Pauses stay gaps on that timeline."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .errors import RetrievalError

OUTPUT_OPTIONS = {"movflags": "+faststart", "movie_timescale": "48000"}  # 48k: exact for 90 kHz video and 48 kHz audio starts


@dataclass
class RemuxStats:
    packets: int = 0
    segments: int = 0
    adjusted: int = 0  # packets nudged one tick forward to keep timestamps strictly increasing


def _seconds(value: float) -> Fraction:
    return Fraction(value).limit_denominator(1_000_000)


class Remuxer:
    """Write segments one after the other into `out` (which the caller later renames into place)."""

    def __init__(self, out: Path, first_start: float, metadata: dict[str, str] | None = None) -> None:
        self.out = Path(out)
        self.t0 = _seconds(first_start)
        self.metadata = metadata or {}
        self.container = None
        self.streams: list = []
        self.layout: list[tuple[str, str]] = []
        self.last_dts: dict[int, int] = {}
        self.stats = RemuxStats()

    def _open(self, source) -> None:
        self.container = av.open(str(self.out), "w", format="mp4", options=OUTPUT_OPTIONS)
        for stream in source.streams:
            if stream.type not in ("video", "audio"):
                raise RetrievalError(f"unexpected {stream.type} stream in a segment")
            out = self.container.add_stream_from_template(stream)
            out.time_base = stream.time_base
            title = stream.metadata.get("title") or stream.metadata.get("handler_name")
            if title and stream.type == "audio":
                out.metadata["title"] = title
                out.metadata["handler_name"] = title
            out.disposition = stream.disposition
            self.streams.append(out)
            self.layout.append((stream.type, stream.codec_context.name))
        for key, value in self.metadata.items():
            self.container.metadata[key] = value

    def add(self, media: Path, start: float, label: str) -> None:
        try:
            source = av.open(str(media))
        except av.error.FFmpegError as exc:
            raise RetrievalError(f"{label}: decrypted file is not a readable MP4 ({exc})") from None
        with source:
            if self.container is None:
                self._open(source)
            layout = [(s.type, s.codec_context.name) for s in source.streams]
            if layout != self.layout:
                raise RetrievalError(f"{label}: track layout {layout} differs from the first segment's {self.layout}")
            offset_s = _seconds(start) - self.t0
            try:
                for packet in source.demux():
                    if packet.dts is None:  # flush packets at the end of each stream
                        continue
                    i = packet.stream.index
                    offset = round(offset_s / packet.stream.time_base)
                    packet.dts += offset
                    packet.pts = (packet.pts if packet.pts is not None else packet.dts - offset) + offset
                    last = self.last_dts.get(i)
                    if last is not None and packet.dts <= last:
                        shift = last + 1 - packet.dts
                        packet.dts += shift
                        packet.pts += shift
                        self.stats.adjusted += 1
                    self.last_dts[i] = packet.dts
                    packet.stream = self.streams[i]
                    self.container.mux(packet)
                    self.stats.packets += 1
            except av.error.FFmpegError as exc:
                raise RetrievalError(f"{label}: cannot copy its packets ({exc})") from None
        self.stats.segments += 1

    def close(self) -> RemuxStats:
        if self.container is None:
            raise RetrievalError("no segment to reassemble")
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            raise RetrievalError(f"finishing the MP4 failed ({exc})") from None
        self.container = None
        return self.stats

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
            self.container = None
