"""The session state machine, its clock and its event log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiosk.errors import SessionStateError
from kiosk.session import Session, SessionClock, State


class FakeTime:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_800_000_000.0

    def advance(self, s: float) -> None:
        self.mono += s
        self.wall += s


def make(tmp_path: Path, ft: FakeTime | None = None) -> Session:
    clock = SessionClock(monotonic=lambda: ft.mono, wall=lambda: ft.wall) if ft else None
    return Session.create(tmp_path, "demo", "DEMO-1", "Child A", "Interviewer B", "en", clock=clock)


def test_state_machine_allows_only_the_documented_transitions(tmp_path: Path):
    s = make(tmp_path)
    assert s.state is State.PREPARED
    with pytest.raises(SessionStateError, match="cannot pause a session that is prepared"):
        s.transition("pause")
    s.transition("start")
    s.transition("pause")
    s.transition("resume")
    s.transition("end")
    with pytest.raises(SessionStateError, match="cannot start a session that is ended"):
        s.transition("start")
    types = [e["type"] for e in s.events()]
    assert types == ["session-created", "session-start", "session-pause", "session-resume", "session-end"]
    meta = json.loads((s.dir / "session.json").read_text())
    assert meta["state"] == "ended" and "start" in meta["clock"] and "end" in meta["clock"]
    assert "synchronised" in meta["clock"]["start"]["sync"]


def test_events_carry_session_time_and_markers_need_a_running_session(tmp_path: Path):
    ft = FakeTime()
    s = make(tmp_path, ft)
    with pytest.raises(SessionStateError):
        s.marker("too early")
    ft.advance(2.5)
    s.transition("start")
    ft.advance(1.25)
    m = s.marker("child asks for water")
    assert m["t"] == 3.75
    with pytest.raises(SessionStateError, match="label"):
        s.marker("   ")


def test_wall_clock_step_is_logged_and_does_not_bend_session_time(tmp_path: Path):
    ft = FakeTime()
    s = make(tmp_path, ft)
    s.transition("start")
    ft.advance(5.0)
    ft.wall -= 3600.0  # someone set the clock back an hour
    entry = s.marker("after the step")
    assert entry["t"] == 5.0, "session time follows the monotonic clock"
    steps = [e for e in s.events() if e["type"] == "wall-clock-step"]
    assert len(steps) == 1 and steps[0]["step_s"] == -3600.0


def test_public_summary_shows_the_pseudonym_only(tmp_path: Path):
    s = make(tmp_path)
    summary = s.public_summary()
    assert summary["interviewee"] == "Child A"
    assert "name" not in summary


def test_torn_last_event_line_after_a_crash_is_ignored(tmp_path: Path):
    s = make(tmp_path)
    s.transition("start")
    with (s.dir / "events.jsonl").open("a") as fh:
        fh.write('{"seq": 3, "t": 1.0, "ty')
    loaded = Session.load(s.dir)
    assert [e["type"] for e in loaded.events()] == ["session-created", "session-start"]
