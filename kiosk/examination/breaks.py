"""Breaks called by the judge, e.g. to collect questions from the parties.

What a break does to the recording is the operator's choice, made beforehand: 'mark' keeps recording
and puts a marker in the log (nothing is lost; the default), 'pause' pauses the recording until the
break ends. Either way the break itself is logged with who called it, why, and when it ended.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .questions import MAX_REASON_CHARS, InvalidInput, NotNow, clean_text

BREAK_MODES = ("mark", "pause")


@dataclass(frozen=True)
class Break:
    id: str
    called_by: str
    reason: str
    started_at: float
    mode: str
    paused_recording: bool = False  # this break paused the recording (so its end resumes it)
    request: str | None = None  # the granted break request, if any
    ended_at: float | None = None
    ended_by: str | None = None

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def public(self) -> dict:
        return {**dataclasses.asdict(self), "active": self.active}


class Breaks:
    def __init__(self) -> None:
        self.mode = "mark"
        self.history: list[Break] = []

    @property
    def current(self) -> Break | None:
        return self.history[-1] if self.history and self.history[-1].active else None

    def check_mode(self, mode: object) -> str:
        if mode not in BREAK_MODES:
            raise InvalidInput(f"break mode must be 'mark' (keep recording, add a marker) or 'pause', not {mode!r}")
        return str(mode)

    def start(self, by: str, reason: object, at: float, request: str | None = None) -> Break:
        if self.current is not None:
            raise NotNow(f"a break is already under way (since {self.current.started_at:.0f} s)")
        why = clean_text(reason, "the reason for the break", MAX_REASON_CHARS, required=False)
        return Break(f"B{len(self.history) + 1}", by, why or "break", round(at, 3), self.mode, request=request)

    def end(self, by: str, at: float) -> Break:
        current = self.current
        if current is None:
            raise NotNow("there is no break under way")
        return dataclasses.replace(current, ended_at=round(at, 3), ended_by=by)

    def put(self, b: Break) -> Break:
        if self.history and self.history[-1].id == b.id:
            self.history[-1] = b
        else:
            self.history.append(b)
        return b
