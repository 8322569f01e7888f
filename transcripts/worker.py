"""The transcription worker: a separate process that follows a session's segments as they close.

`python -m transcripts.worker SESSION_DIR --follow` is spawned by the station (transcripts/live.py), so
the capture loop never waits for vosk. It reads closed segments in order, one recogniser per microphone,
commits each cut to the journal (checkpoint.py) and only then releases the segments that hold no
unfinalised audio, so their plaintext can be deleted at once. Killed at any moment, a new worker resumes
every channel from its last committed cut: no word is lost or repeated. When the session has ended and
every segment is consumed it writes transcript.{vtt,srt,json,html} and status.json into
SESSION_DIR/transcripts/ and exits. `kiosk transcribe` runs the same loop once, offline.

Without a model for the session's language the worker still releases its holds (the session must seal)
and leaves status.json "pending" with the exact command that produces the transcript later.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from .audio import TARGET_RATE, read_tracks
from .checkpoint import Journal, Position, private_dir, write_private
from .engine import CHUNK_SAMPLES, ChannelRecognizer, Word, load_model
from .formats import TranscriptMeta, write_all
from .models import ModelInfo, ModelMissing, transcribe_command
from .source import AudioSegment, FileSource, SessionSource, probe_mic_streams, speaker_label

log = logging.getLogger("transcripts.worker")

OUT_DIR = "transcripts"
STATUS = "status.json"
LOCK = "worker.lock"
GAP_S = 0.25  # segments further apart than this were split by a pause: utterances end there
POLL_S = 0.5
OPEN_GRACE_S = 60.0  # a segment still open this long after the session ended was left by a crash


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def transcript_dir(session_dir: Path) -> Path:
    return session_dir / OUT_DIR


def read_status(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / STATUS).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_status(out_dir: Path, **fields) -> dict:
    status = {"updated": utc_now(), **fields}
    write_private(private_dir(out_dir) / STATUS, json.dumps(status, ensure_ascii=False, indent=1) + "\n")
    return status


def write_pending(out_dir: Path, missing: ModelMissing) -> dict:
    log.warning("%s", missing)
    return write_status(out_dir, state="pending", language=missing.language, reason=missing.reason,
                        command=missing.command)


class WorkerBusy(RuntimeError):
    pass


def take_lock(out_dir: Path):
    """One worker per transcript folder: a second one (e.g. spawned again after a station restart) exits."""
    fh = (private_dir(out_dir) / LOCK).open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise WorkerBusy(f"another worker is already transcribing into {out_dir}") from None
    return fh


@dataclass
class _SegmentFeed:
    """One channel's reading position inside the segment being decoded."""

    skip_to: int  # segment-relative 16 kHz sample where this channel resumes
    base: int = 0  # samples of this channel's stream seen so far in the segment
    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    buf_start: int = 0  # segment-relative index of buf[0]
    began: bool = False  # the recogniser has been told the session time of buf_start
    end: float = 0.0  # session time just after the last sample seen


class Transcriber:
    """The resumable loop shared by the live worker and `kiosk transcribe`."""

    def __init__(self, source: SessionSource | FileSource, out_dir: Path, model: ModelInfo,
                 progress: Callable[[dict], None] | None = None, poll_s: float = POLL_S) -> None:
        self.source, self.out_dir, self.model = source, out_dir, model
        self.progress, self.poll_s = progress, poll_s
        self.journal = Journal(out_dir, {"engine": "vosk", "language": model.language, "model": model.name,
                                         "chunk_samples": CHUNK_SAMPLES})
        self.recognizers: dict[int, ChannelRecognizer] = {}
        self.roles: list[str] = []
        self._vosk = None
        self._last: AudioSegment | None = None  # the last segment whose audio this process fed
        self._last_end: float | None = None
        self._seen: dict[int, AudioSegment] = {}
        self._open_since: dict[int, float] = {}
        self.audio_seconds = 0.0
        self.busy_seconds = 0.0
        self.total_seconds = 0.0  # audio still to decode when the run started (for progress)
        self._next_tick = 0.0

    # ------------------------------------------------------------ channels

    def _prepare(self, seg: AudioSegment) -> int:
        """The segment's channel count; learns each channel's role the first time it appears."""
        if not seg.mic_streams and seg.media.exists():
            seg.mic_streams, found = probe_mic_streams(seg.media)
            seg.roles = seg.roles or found
        while len(self.roles) < len(seg.mic_streams):
            c = len(self.roles)
            self.roles.append(seg.roles[c] if c < len(seg.roles) else "")
        return len(seg.mic_streams)

    def _rec(self, channel: int) -> ChannelRecognizer:
        """The channel's recogniser, made (and the model loaded) only when there is audio left to decode."""
        rec = self.recognizers.get(channel)
        if rec is None:
            if self._vosk is None:
                self._vosk = load_model(str(self.model.path))
            rec = self.recognizers[channel] = ChannelRecognizer(
                self._vosk, channel, speaker_label(self.roles[channel], channel))
        return rec

    def _pending(self, channel: int) -> bool:
        rec = self.recognizers.get(channel)
        return rec is not None and rec.pending

    def _commit(self, channel: int, words: list[Word], pos: Position) -> None:
        self.journal.commit(channel, words, pos)
        self._release_covered()

    def _cut(self, channel: int) -> list[Word]:
        return self.recognizers[channel].cut() if self._pending(channel) else []

    def _covered(self, seg: AudioSegment) -> bool:
        return all(self.journal.position(c).covers(seg.index) for c in range(len(seg.mic_streams)))

    def _release_covered(self) -> None:
        """Release every closed segment no channel still needs. An unclosed one (left by a crash) is
        never released here: the sealer may not have it yet; recovery closes it and a worker then frees it."""
        for index, seg in list(self._seen.items()):
            if seg.closed and self._covered(seg):
                self.source.release(seg)
                del self._seen[index]

    # ------------------------------------------------------------ the loop

    def run(self, follow: bool = False) -> dict:
        done: int | None = None  # index of the last segment handled by this process
        write_status(self.out_dir, state="running", language=self.model.language, model=self.model.name,
                     pid=os.getpid())
        while True:
            ended = self.source.ended()  # read before listing, so no segment can appear after "ended"
            segs = self.source.segments()
            self.total_seconds = self.audio_seconds + sum(
                (s.end - s.start) * sum(1 for c in range(len(s.mic_streams) or 1)
                                        if not self.journal.position(c).covers(s.index))
                for s in segs if s.end is not None and (done is None or s.index > done))
            progressed = False
            for seg in segs:
                if done is not None and seg.index <= done:
                    continue
                if not seg.closed and not self._treat_as_closed(seg, ended, follow):
                    break
                self._handle(seg)
                done, progressed = seg.index, True
                self._report(seg, segs)
            if not follow or (ended and all(done is not None and s.index <= done for s in segs)):
                return self._finish(segs)
            if not progressed:
                time.sleep(self.poll_s)

    def _treat_as_closed(self, seg: AudioSegment, ended: bool, follow: bool) -> bool:
        if not follow:
            return True  # offline: whatever a crash left is all there will ever be
        if not ended:
            return False
        first = self._open_since.setdefault(seg.index, time.monotonic())
        if time.monotonic() - first < OPEN_GRACE_S:
            return False
        log.warning("segment %d is still open %.0f s after the session ended; reading what it holds",
                    seg.index, OPEN_GRACE_S)
        return True

    def _handle(self, seg: AudioSegment) -> None:
        channels = range(self._prepare(seg))
        self._seen[seg.index] = seg
        need = [c for c in channels if not self.journal.position(c).covers(seg.index)]
        if not need:
            self._release_covered()
            return
        if self._last is not None and self._last_end is not None and seg.start - self._last_end > GAP_S:
            for c in need:  # a pause: the recording stopped, so every utterance ended there
                if self._pending(c):
                    self._commit(c, self._cut(c), Position(self._last.index, 0, complete=True))
        if not seg.media.exists():
            log.error("segment %d: its audio is gone before it was transcribed; the transcript notes the gap",
                      seg.index)
            self.journal.note_missing(seg.index)
            for c in need:
                self._commit(c, self._cut(c), Position(seg.index, 0, complete=True))
            self._last, self._last_end = seg, seg.end
            return
        recs = [self._rec(c) for c in need]
        t0 = time.process_time()
        self._feed_segment(seg, recs)
        self.busy_seconds += time.process_time() - t0
        self._release_covered()

    def _feed_segment(self, seg: AudioSegment, need: list[ChannelRecognizer]) -> None:
        by_stream = {seg.mic_streams[r.channel]: r for r in need}
        feeds: dict[int, _SegmentFeed] = {}
        for r in need:
            pos = self.journal.position(r.channel)
            feeds[r.channel] = _SegmentFeed(skip_to=pos.sample if pos.segment == seg.index else 0)
        end = seg.start
        try:
            self._feed_blocks(seg, by_stream, feeds)
        except av.error.FFmpegError as exc:  # a torn last fragment after a crash: keep what was readable
            log.warning("segment %d is unreadable after its first part (%s); transcribing what was readable",
                        seg.index, exc)
        for rec in need:
            end = max(end, feeds[rec.channel].end)
            self._drain(seg, rec, feeds[rec.channel], last=True)
        self._last, self._last_end = seg, seg.end if seg.end is not None else end

    def _feed_blocks(self, seg: AudioSegment, by_stream: dict[int, ChannelRecognizer],
                     feeds: dict[int, _SegmentFeed]) -> None:
        for block in read_tracks(seg.media, list(by_stream), seg.start):
            rec = by_stream[block.stream]
            feed = feeds[rec.channel]
            n = len(block.pcm)
            if block.new_run and feed.base > 0:  # a hole inside the file: the utterance ends there
                self._drain(seg, rec, feed, last=False)
                if rec.pending:
                    self._commit(rec.channel, rec.cut(), Position(seg.index, feed.base))
                feed.began = False
            lo = max(0, feed.skip_to - feed.base)
            if lo < n:
                if not feed.began:
                    rec.begin(block.start + lo / TARGET_RATE)
                    feed.began, feed.buf_start = True, feed.base + lo
                    feed.buf = block.pcm[lo:]
                else:
                    feed.buf = np.concatenate([feed.buf, block.pcm])
                self._feed_chunks(seg, rec, feed)
            feed.base += n
            feed.end = block.start + n / TARGET_RATE
            self.audio_seconds += n / TARGET_RATE
            if self.progress and self.audio_seconds >= self._next_tick:
                self._next_tick = self.audio_seconds + 30.0
                self.progress(self._info(seg, feed.end))

    def _feed_chunks(self, seg: AudioSegment, rec: ChannelRecognizer, feed: _SegmentFeed) -> None:
        """Feed whole chunks on the segment's grid; the last sample waits, so the segment's final chunk
        is always fed by _drain, which knows it is the end."""
        while True:
            edge = (feed.buf_start // CHUNK_SAMPLES + 1) * CHUNK_SAMPLES
            take = edge - feed.buf_start
            if len(feed.buf) <= take:
                return
            words = rec.accept(feed.buf[:take])
            feed.buf, feed.buf_start = feed.buf[take:], edge
            if words is not None:
                self._commit(rec.channel, words, Position(seg.index, edge))

    def _drain(self, seg: AudioSegment, rec: ChannelRecognizer, feed: _SegmentFeed, last: bool) -> None:
        if not len(feed.buf):
            return
        self._feed_chunks(seg, rec, feed)
        stop = feed.buf_start + len(feed.buf)
        words = rec.accept(feed.buf)
        feed.buf, feed.buf_start = np.zeros(0, np.int16), stop
        if words is not None:
            self._commit(rec.channel, words, Position(seg.index, stop, complete=last))

    def _info(self, seg: AudioSegment, session_time: float) -> dict:
        rtf = self.busy_seconds / self.audio_seconds if self.audio_seconds and self.busy_seconds else None
        return {"segment": seg.index, "session_time": round(session_time, 3),
                "audio_seconds": round(self.audio_seconds, 1), "total_audio_seconds": round(self.total_seconds, 1),
                "rtf": round(rtf, 3) if rtf else None, "words": len(self.journal.words)}

    def _report(self, seg: AudioSegment, segs: list[AudioSegment]) -> None:
        info = {**self._info(seg, self._last_end or seg.start), "segments": len(segs),
                "done": sum(1 for s in segs if s.index <= seg.index)}
        write_status(self.out_dir, state="running", language=self.model.language, model=self.model.name,
                     pid=os.getpid(), transcribed_until=info["session_time"], segments_done=info["done"])
        if self.progress:
            self.progress(info)

    def _finish(self, segs: list[AudioSegment]) -> dict:
        last = max((s.index for s in segs), default=None)
        if last is not None:
            for c in range(len(self.roles)):
                if self._pending(c) or not self.journal.position(c).covers(last):
                    self._commit(c, self._cut(c), Position(last, 0, complete=True))
        for seg in segs:
            self._seen.setdefault(seg.index, seg)
        self._release_covered()
        for rec in self.recognizers.values():
            rec.close()
        self.recognizers.clear()
        roles = self.roles
        meta = TranscriptMeta(
            language=self.model.language, model=self.model.name,
            speakers=[{"channel": c, "speaker": speaker_label(r, c), "role": r} for c, r in enumerate(roles)],
            missing_segments=sorted(self.journal.missing), **self.source.meta())
        paths = write_all(self.out_dir, self.journal.words, meta)
        status = write_status(self.out_dir, state="complete", language=self.model.language, model=self.model.name,
                              words=len(self.journal.words), missing_segments=meta.missing_segments,
                              outputs={k: p.name for k, p in paths.items()})
        log.info("transcript complete: %d words in %s", len(self.journal.words), self.out_dir)
        return {**status, "out_dir": str(self.out_dir), "paths": {k: str(p) for k, p in paths.items()},
                "audio_seconds": round(self.audio_seconds, 1),
                "rtf": round(self.busy_seconds / self.audio_seconds, 3) if self.audio_seconds else None}


def release_until_ended(source: SessionSource, poll_s: float = POLL_S, grace_s: float = OPEN_GRACE_S) -> None:
    """No model: hold nothing back. Release each segment as it closes so the session seals as usual
    (an unclosed one is left for recovery, which closes it; a later worker then releases it)."""
    ended_at = None
    while True:
        ended = source.ended()
        segs = source.segments()
        for seg in segs:
            if seg.closed:
                source.release(seg)
        if ended:
            ended_at = ended_at or time.monotonic()
            if all(s.closed for s in segs) or time.monotonic() - ended_at > grace_s:
                return
        time.sleep(poll_s)


def plaintext_files(session_dir: Path) -> list[Path]:
    """Everything in the transcript folder that holds words (for the sealer to seal, then delete)."""
    out = transcript_dir(session_dir)
    return sorted(p for p in out.glob("*") if p.is_file() and p.name not in (STATUS, LOCK))


# ------------------------------------------------------------------ process entry point


def main(argv: list[str] | None = None) -> int:
    from kiosk.config import load_settings
    from kiosk.errors import KioskError
    from kiosk.logs import setup_logging

    from .models import find_model

    p = argparse.ArgumentParser(prog="python -m transcripts.worker", description=__doc__.splitlines()[0])
    p.add_argument("session_dir", type=Path)
    p.add_argument("--follow", action="store_true", help="wait for new segments until the session has ended")
    p.add_argument("--config", help="kiosk settings file (for the model lookup)")
    p.add_argument("--model", type=Path, help="model folder (the station resolves it; overrides the lookup)")
    p.add_argument("--model-name", help="how the transcript names the model")
    p.add_argument("--pending", metavar="REASON", help="no model: only release holds, leave the transcript pending")
    p.add_argument("--nice", type=int, default=None, help="lower this process's CPU priority by N")
    args = p.parse_args(argv)
    setup_logging()
    session_dir = args.session_dir.resolve()
    try:
        settings = load_settings(args.config)
        nice = settings.transcription.nice if args.nice is None else args.nice
        if nice:
            with contextlib.suppress(OSError):  # a sandbox may refuse it; transcribing matters more
                os.nice(nice)
        source = SessionSource(session_dir)
        out = transcript_dir(session_dir)
        lock = take_lock(out)
        language = source.language or "und"
        try:
            if args.pending:
                raise ModelMissing(language, args.pending, str(session_dir))
            if args.model:
                model = ModelInfo(language, args.model.resolve(), "given", args.model_name or args.model.name)
            else:
                model = find_model(settings, language)
                if model is None:
                    raise ModelMissing(language, f"no vosk model is installed for '{language}'", str(session_dir))
        except ModelMissing as exc:
            if not exc.command.endswith(str(session_dir)):
                exc.command = transcribe_command(language, str(session_dir))
            write_pending(out, exc)
            if args.follow:
                release_until_ended(source)
            return 0
        Transcriber(source, out, model).run(follow=args.follow)
        lock.close()
        return 0
    except WorkerBusy as exc:
        log.info("%s", exc)
        return 0
    except KioskError as exc:
        log.error("%s", exc)
        print(f"transcripts.worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
