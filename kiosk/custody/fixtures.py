"""Synthetic sessions for custody tests and benches: closed segments of random bytes with indexes, and an
event log, laid out exactly as the recorder leaves them (no camera needed, no real person involved)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..media import segments
from ..session import Session


class FakeClock:
    """A session clock the test moves by hand (monotonic and wall together)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = 0.0
        self.wall0 = start
        self.monotonic = lambda: self.t
        self.wall = lambda: self.wall0 + self.t
        self.step_tolerance_s = 1.0
        self.t0 = 0.0

    def now(self) -> float:
        return self.t

    def wall_offset_drift(self) -> float:
        return 0.0


def make_session(sessions_root: Path, n_segments: int = 3, seg_bytes: int = 4096, seg_seconds: float = 10.0,
                 pause_after: int | None = None, pause_seconds: float = 5.0, end: bool = True,
                 holders: tuple[str, ...] = ()) -> tuple[Session, dict[int, str]]:
    """A session with `n_segments` closed segments; optionally paused after segment `pause_after`.
    Returns the session and the plaintext SHA-256 of every segment (to check decryption against)."""
    clock = FakeClock()
    session = Session.create(Path(sessions_root), "room1", "CASE-0001", "Child A (synthetic)", "Interviewer",
                             "en", clock=clock)
    session.transition("start")
    segments.segments_dir(session.dir).mkdir(parents=True, exist_ok=True)
    digests: dict[int, str] = {}
    for index in range(1, n_segments + 1):
        start = clock.t
        media = segments.media_path(session.dir, index)
        data = os.urandom(seg_bytes)
        media.write_bytes(data)
        digests[index] = hashlib.sha256(data).hexdigest()
        for holder in holders:
            segments.hold(media, holder)
        clock.t += seg_seconds
        segments.write_index(session.dir, segments.SegmentIndex(
            index=index, file=media.name, start=round(start, 6), end=round(clock.t, 6), closed=True,
            bytes=seg_bytes))
        if pause_after == index:
            session.transition("pause")
            clock.t += pause_seconds
            session.transition("resume")
    if end:
        session.transition("end")
    return session, digests
