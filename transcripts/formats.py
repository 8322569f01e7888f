"""Transcript outputs: WebVTT with voice tags, SRT, JSON words and a printable HTML page.

All four are made from the same words on the session clock, so a cue's time, a word's time and the
recording point at the same instant. Cues never span two speakers; they are ordered by start time
(speakers may overlap, as people do). Text is escaped for each format: a word is data, never markup.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .checkpoint import private_dir, write_private
from .engine import Word

LABEL = "Unedited machine transcript"
FORMAT_ID = "testimony-kiosk/transcript-1"
TEMPLATES = Path(__file__).resolve().parent / "templates"

MAX_CUE_WORDS = 12
MAX_CUE_SECONDS = 6.0
MAX_WORD_GAP = 1.0  # a longer pause between words starts a new cue
LINE_WIDTH = 72  # characters per numbered line in the HTML transcript


@dataclass
class Cue:
    start: float
    end: float
    speaker: str
    channel: int
    words: list[Word]

    @property
    def text(self) -> str:
        return " ".join(w.word for w in self.words)


@dataclass
class TranscriptMeta:
    """What the header says: never the interviewee's name, only the case reference and the session."""

    language: str
    model: str
    case_reference: str | None = None
    date: str | None = None  # YYYY-MM-DD (UTC) the session was recorded
    session_id: str | None = None
    source: str = ""
    speakers: list[dict] = field(default_factory=list)  # {"channel", "speaker", "role"}
    missing_segments: list[int] = field(default_factory=list)
    generated: str = ""


def sort_words(words: Iterable[Word]) -> list[Word]:
    return sorted(words, key=lambda w: (w.start, w.channel, w.end))


def build_cues(words: Iterable[Word]) -> list[Cue]:
    """Group each channel's words into short cues, then order all cues by start time."""
    by_channel: dict[int, list[Word]] = {}
    for w in sort_words(words):
        by_channel.setdefault(w.channel, []).append(w)
    cues: list[Cue] = []
    for channel_words in by_channel.values():
        current: list[Word] = []
        for w in channel_words:
            if current and (len(current) >= MAX_CUE_WORDS or w.start - current[-1].end > MAX_WORD_GAP
                            or w.end - current[0].start > MAX_CUE_SECONDS):
                cues.append(_cue(current))
                current = []
            current.append(w)
        if current:
            cues.append(_cue(current))
    return sorted(cues, key=lambda c: (c.start, c.channel))


def _cue(words: list[Word]) -> Cue:
    start = max(0.0, words[0].start)
    end = max(start + 0.01, max(w.end for w in words))
    return Cue(start, end, words[0].speaker, words[0].channel, words)


def clock(t: float, sep: str = ".", hours_width: int = 2) -> str:
    ms = max(0, round(t * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:0{hours_width}d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def to_vtt(words: Iterable[Word], meta: TranscriptMeta) -> str:
    out = ["WEBVTT", "", "NOTE", _vtt_escape(f"{LABEL}. Times are session time, the clock of the recording."), ""]
    for n, cue in enumerate(build_cues(words), 1):
        out += [str(n), f"{clock(cue.start)} --> {clock(cue.end)}",
                f"<v {_vtt_escape(cue.speaker)}>{_vtt_escape(cue.text)}", ""]
    return "\n".join(out)


def to_srt(words: Iterable[Word]) -> str:
    out = []
    for n, cue in enumerate(build_cues(words), 1):
        text = f"{cue.speaker}: {cue.text}".replace("\r", " ").replace("\n", " ")
        out += [str(n), f"{clock(cue.start, ',')} --> {clock(cue.end, ',')}", text, ""]
    return "\n".join(out)


def to_json(words: Iterable[Word], meta: TranscriptMeta) -> str:
    doc = {
        "format": FORMAT_ID,
        "label": LABEL,
        "clock": "session time in seconds: the same clock as the recording's segments",
        **{k: v for k, v in asdict(meta).items()},
        "words": [{"start": w.start, "end": w.end, "conf": w.conf, "speaker": w.speaker, "word": w.word,
                   "channel": w.channel} for w in sort_words(words)],
    }
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


@dataclass
class Turn:
    stamp: str
    speaker: str
    lines: list[tuple[int, str]]  # (line number, text)


def turns(words: Iterable[Word], width: int = LINE_WIDTH) -> list[Turn]:
    """Consecutive cues of one speaker make a turn; its text is wrapped into numbered lines."""
    grouped: list[list[Cue]] = []
    for cue in build_cues(words):
        if grouped and grouped[-1][-1].channel == cue.channel:
            grouped[-1].append(cue)
        else:
            grouped.append([cue])
    result, n = [], 0
    for group in grouped:
        text = " ".join(c.text for c in group)
        lines = []
        for line in textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]:
            n += 1
            lines.append((n, line))
        result.append(Turn(clock(group[0].start, hours_width=1)[:-4], group[0].speaker, lines))
    return result


def to_html(words: Iterable[Word], meta: TranscriptMeta) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    words = list(words)
    return env.get_template("transcript.html").render(
        label=LABEL, meta=meta, turns=turns(words), word_count=len(words))


OUTPUTS = {"vtt": "transcript.vtt", "srt": "transcript.srt", "json": "transcript.json", "html": "transcript.html"}


def write_all(out_dir: Path, words: Iterable[Word], meta: TranscriptMeta) -> dict[str, Path]:
    """Write all four outputs atomically (a reader never sees half a transcript); returns their paths."""
    words = sort_words(words)
    if not meta.generated:
        meta.generated = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    texts = {"vtt": to_vtt(words, meta), "srt": to_srt(words), "json": to_json(words, meta),
             "html": to_html(words, meta)}
    paths = {}
    private_dir(out_dir)
    for kind, name in OUTPUTS.items():
        paths[kind] = out_dir / name
        write_private(paths[kind], texts[kind])
    return paths
