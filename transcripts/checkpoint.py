"""The transcriber's durable checkpoint: an append-only journal of finalised words and resume positions.

Each line records one cut of one channel: its words and the position up to which that channel's audio
is now consumed *and* finalised. A line is written and fsynced before the segment it covers is released,
so a killed worker loses nothing; on restart each channel resumes from its last position, so nothing is
decoded twice. Appending one line per cut (instead of rewriting a state file) keeps a three-hour session
cheap. A torn last line (killed mid-write) was never committed and is cut off on open.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kiosk.durable import fsync_dir, write_atomic
from kiosk.errors import KioskError

from .engine import Word

log = logging.getLogger("transcripts.checkpoint")

JOURNAL = "journal.jsonl"


class JournalCorrupt(KioskError):
    """A committed journal line cannot be read: resuming would silently lose or repeat words."""


@dataclass(frozen=True)
class Position:
    """Everything before `sample` (16 kHz, counted from the segment's first decoded sample) of `segment`
    is consumed and finalised; `complete` means the whole segment is."""

    segment: int
    sample: int
    complete: bool = False

    def covers(self, segment: int) -> bool:
        return self.segment > segment or (self.segment == segment and self.complete)

    def to_dict(self) -> dict:
        return {"segment": self.segment, "sample": self.sample, "complete": self.complete}


START = Position(segment=-1, sample=0, complete=True)  # nothing consumed yet


def private_dir(path: Path) -> Path:
    """The transcript folder: words are testimony, so only the kiosk user may read them."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Replace a transcript file whole (crash-safe), readable by the owner only."""
    write_atomic(path, data, mode=0o600)


class Journal:
    def __init__(self, directory: Path, header: dict) -> None:
        self.path = private_dir(directory) / JOURNAL
        self.positions: dict[int, Position] = {}
        self.words: list[Word] = []
        self.missing: list[int] = []  # segments whose audio was gone before it could be transcribed
        self.headers: list[dict] = []
        self._load()
        if not self.headers or {k: self.headers[-1].get(k) for k in header} != header:
            if self.headers:
                log.warning("transcription settings changed since the journal began: %s -> %s",
                            {k: self.headers[-1].get(k) for k in header}, header)
            self._append({"type": "header", **header})
            self.headers.append(header)

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good = 0
        lines = raw.split(b"\n")
        for n, line in enumerate(lines, 1):
            last = n == len(lines)
            if not line:
                if not last:
                    good += 1
                continue
            try:
                entry = json.loads(line)
                if last:
                    raise ValueError("no newline: the write was interrupted")
            except ValueError as exc:
                if last:
                    log.warning("journal %s: dropping a torn last line (%d bytes) left by an interrupted write",
                                self.path, len(line))
                    break
                raise JournalCorrupt(f"{self.path}: line {n} is unreadable ({exc}); refusing to resume") from None
            self._apply(entry)
            good += len(line) + 1
        if good < len(raw):
            with self.path.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())

    def _apply(self, entry: dict) -> None:
        kind = entry.get("type")
        if kind == "header":
            self.headers.append({k: v for k, v in entry.items() if k != "type"})
        elif kind == "cut":
            self.positions[int(entry["channel"])] = Position(int(entry["segment"]), int(entry["sample"]),
                                                             bool(entry["complete"]))
            self.words.extend(Word.from_dict(w) for w in entry["words"])
        elif kind == "missing":
            self.missing.append(int(entry["segment"]))

    def position(self, channel: int) -> Position:
        return self.positions.get(channel, START)

    def commit(self, channel: int, words: list[Word], position: Position) -> None:
        """Durably record a cut: after this returns, the words survive a kill and are never redone."""
        entry = {"type": "cut", "channel": channel, **position.to_dict(), "words": [w.to_dict() for w in words]}
        self._append(entry)
        self._apply(entry)

    def note_missing(self, segment: int) -> None:
        if segment not in self.missing:
            entry = {"type": "missing", "segment": segment}
            self._append(entry)
            self._apply(entry)

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode()
        created = not self.path.exists()
        with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as fh:
            fh.write(line)  # one write of one line: a kill leaves at most a torn last line
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            fsync_dir(self.path.parent)
