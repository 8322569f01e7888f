"""Crash-safe recording: encoded packets into fragmented-MP4 segment files.

Each segment starts on a keyframe and is a standalone playable file (timestamps from 0; its index gives
the session-time offset). Fragments are cut at least every `fragment_seconds` and every packet is flushed
to the OS, so a process killed at any moment leaves a file that plays up to its last complete fragment.
Closing a segment fsyncs it and rewrites its index with closed=true before anyone is told.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from . import segments as seg_files
from .segments import SegmentIndex

log = logging.getLogger("kiosk.recorder")

# Audio leads each segment's first frame by up to one Opus frame (the block straddling the cut) plus the
# encoder's pre-skip. Negative timestamps would make the muxer shift the audio track alone (A/V error of up
# to 26 ms), so every segment's media time 0 lies LEAD_SAMPLES before its first video frame instead.
LEAD_SAMPLES = 960 + 312
VIDEO_TIME_BASE = Fraction(1, 90000)

# delay_moov: the moov (with edit lists keeping each track's true start) is written with the first
# fragment; empty_moov would make every track start at 0 and silently shift audio against video.
MP4_OPTIONS = {
    "movflags": "frag_keyframe+delay_moov+default_base_moof",
    "movie_timescale": "48000",
    "flush_packets": "1",
}


class SegmentRecorder:
    """Owned by the media thread; not thread-safe by design (one writer)."""

    def __init__(
        self,
        session_dir: Path,
        video_template,
        fps: int,
        width: int,
        height: int,
        mic_roles: list[str],
        fragment_seconds: float = 1.0,
        first_index: int = 1,
        holders: tuple[str, ...] = (),
        on_closed: Callable[[Path, SegmentIndex], None] | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.template = video_template
        self.fps, self.width, self.height = fps, width, height
        self.mic_roles = mic_roles
        self.fragment_us = int(fragment_seconds * 1_000_000)
        self.next_index = first_index
        self.holders = holders
        self.on_closed = on_closed
        self.current: SegmentIndex | None = None
        self._container = None
        self._streams: list = []
        self._video_base = 0  # video pts (frames) at the segment's start
        self._audio_base = 0  # audio sample at the segment's start
        self._last_video_pts = 0
        seg_files.segments_dir(session_dir).mkdir(parents=True, exist_ok=True)

    @property
    def is_open(self) -> bool:
        return self.current is not None

    def open_segment(self, start_frame: int, media_t0: float) -> SegmentIndex:
        """Start a segment at video frame `start_frame` (a keyframe); media_t0 maps media time to session time."""
        index = self.next_index
        self.next_index += 1
        path = seg_files.media_path(self.session_dir, index)
        for holder in self.holders:
            seg_files.hold(path, holder)
        start = media_t0 + start_frame / self.fps - LEAD_SAMPLES / 48000  # session time of media time 0
        seg = SegmentIndex(index=index, file=path.name, start=round(start, 6), fps=self.fps, width=self.width,
                           height=self.height, mic_roles=list(self.mic_roles))
        seg_files.write_index(self.session_dir, seg)
        options = dict(MP4_OPTIONS, frag_duration=str(self.fragment_us))
        container = av.open(str(path), "w", format="mp4", options=options)
        video = container.add_stream_from_template(self.template)
        video.time_base = VIDEO_TIME_BASE
        video.codec_context.framerate = self.fps
        streams = [video]
        for title in ["mix", *self.mic_roles]:
            audio = container.add_stream("libopus", rate=48000)
            audio.layout = "mono"
            audio.time_base = Fraction(1, 48000)
            audio.metadata["title"] = title
            audio.metadata["handler_name"] = title  # what MP4 keeps (shown as tags.handler_name)
            if title != "mix":
                audio.disposition = 0  # only the mix plays by default
            streams.append(audio)
        container.metadata["comment"] = f"testimony kiosk segment {index}"
        self._container, self._streams = container, streams
        self._video_base = start_frame
        self._audio_base = round(start_frame * 48000 / self.fps) - LEAD_SAMPLES
        self._last_video_pts = start_frame - 1
        self.current = seg
        self._media_t0 = media_t0
        self._aborted = False
        return seg

    def abort_segment(self) -> SegmentIndex | None:
        """A write failed: close what can be closed and keep every whole fragment."""
        if self.current is not None:
            self._aborted = True
        return self.close_segment()

    def segment_age(self, frame: int) -> float:
        """Seconds of media in the open segment if `frame` were added."""
        return (frame - self._video_base) / self.fps

    def write_video(self, packet: av.Packet) -> None:
        assert self.current is not None
        frame = packet.pts
        lead = LEAD_SAMPLES * 90000 // 48000
        packet.pts = round((frame - self._video_base) * 90000 / self.fps) + lead
        packet.dts = packet.pts  # baseline profile: no B-frames
        packet.time_base = VIDEO_TIME_BASE
        packet.stream = self._streams[0]
        self._container.mux(packet)
        self.current.video_frames += 1
        self._last_video_pts = frame

    def write_audio(self, stream: int, packet: av.Packet) -> None:
        """stream: 1 = mix, 2.. = microphones.

        The 20 ms block that straddles the segment's first frame goes here (slightly negative pts), so
        consecutive segments neither lose nor repeat a sample."""
        assert self.current is not None
        packet.pts -= self._audio_base
        packet.dts = packet.pts
        packet.stream = self._streams[stream]
        self._container.mux(packet)
        if stream == seg_files.MIX_STREAM:
            self.current.audio_samples += 960

    def close_segment(self) -> SegmentIndex | None:
        """Finish the open segment: flush, fsync, close its index, tell the sealer. A write error on the
        way (disk full) cuts the file back to its last whole fragment and counts what it really holds."""
        if self.current is None:
            return None
        seg = self.current
        path = seg_files.media_path(self.session_dir, seg.index)
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError) as exc:  # e.g. disk full while writing the last fragment
            log.error("segment %s closed with error: %s", seg.file, exc)
            self._aborted = True
        if self._aborted:
            from .recovery import close_interrupted

            frames, _ = close_interrupted(path)
            seg.video_frames = frames
            self._last_video_pts = self._video_base + frames - 1
            seg.audio_samples = round(frames * 48000 / self.fps)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        seg.end = round(seg.start + (self._last_video_pts + 1 - self._video_base) / self.fps, 6)
        seg.closed = True
        seg.bytes = path.stat().st_size
        seg_files.write_index(self.session_dir, seg)
        self.current = None
        self._container = None
        if self.on_closed:
            self.on_closed(self.session_dir, seg)
        return seg
