"""An interview session: its state machine, its one clock, and its append-only event log.

Session time is seconds on the monotonic clock since the session was created; every frame, audio block,
event, question and marker carries it, so nothing depends on a wall clock that may jump. Wall-clock time
and NTP sync state are noted at creation, start and end; a wall-clock step during the session is logged
as an event and never applied to media timestamps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from .errors import SessionNotFound, SessionStateError
from .logs import event as log_event

log = logging.getLogger("kiosk.session")

EVENTS_FILE = "events.jsonl"
META_FILE = "session.json"


class State(StrEnum):
    PREPARED = "prepared"
    RECORDING = "recording"
    PAUSED = "paused"
    ENDED = "ended"


TRANSITIONS: dict[str, dict[State, State]] = {
    "start": {State.PREPARED: State.RECORDING},
    "pause": {State.RECORDING: State.PAUSED},
    "resume": {State.PAUSED: State.RECORDING},
    "end": {State.PREPARED: State.ENDED, State.RECORDING: State.ENDED, State.PAUSED: State.ENDED},
}


def utc_iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def clock_sync_state() -> dict:
    """Kernel NTP discipline state (adjtimex, read-only): synchronised or not, and the max error."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
        sta_unsync = 0x0040
        return {
            "synchronised": rc not in (-1, 5) and not (tx.status & sta_unsync),
            "max_error_us": int(tx.maxerror),
            "source": "adjtimex",
        }
    except (OSError, AttributeError):
        return {"synchronised": False, "max_error_us": None, "source": "unavailable"}


@dataclass
class SessionClock:
    """Monotonic session time, with the wall clock watched for steps (injectable for tests)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    step_tolerance_s: float = 1.0
    t0: float = 0.0
    wall0: float = 0.0

    def __post_init__(self) -> None:
        self.t0 = self.monotonic()
        self.wall0 = self.wall()

    def now(self) -> float:
        return self.monotonic() - self.t0

    def wall_offset_drift(self) -> float:
        """How far the wall clock has moved relative to the monotonic clock since the start (s)."""
        return (self.wall() - self.wall0) - self.now()


@dataclass
class SessionInfo:
    id: str
    room_id: str
    case_reference: str
    interviewee_pseudonym: str
    interviewer: str
    language: str
    state: str = State.PREPARED
    created_wall: str = ""
    clock: dict = field(default_factory=dict)  # wall/ntp facts at create, start, end


class Session:
    """Thread-safe: the web app, the media thread and the CLI may all record events."""

    def __init__(self, directory: Path, info: SessionInfo, clock: SessionClock | None = None) -> None:
        self.dir = directory
        self.info = info
        self.clock = clock or SessionClock()
        self._lock = threading.RLock()
        self._seq = 0
        self._listeners: list[Callable[[dict], None]] = []
        self._last_drift = 0.0

    # ------------------------------------------------------------ creation and loading

    @classmethod
    def create(
        cls,
        sessions_root: Path,
        room_id: str,
        case_reference: str,
        interviewee_pseudonym: str,
        interviewer: str,
        language: str,
        clock: SessionClock | None = None,
    ) -> Session:
        for name, value in (("case_reference", case_reference), ("interviewee_pseudonym", interviewee_pseudonym)):
            if not value.strip() or len(value) > 200:
                raise SessionStateError(f"{name} must be 1-200 characters")
        clock = clock or SessionClock()
        stamp = dt.datetime.fromtimestamp(clock.wall0, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        sid = f"{stamp}-{room_id}-{secrets.token_hex(3)}"
        directory = sessions_root / sid
        directory.mkdir(parents=True)
        info = SessionInfo(
            id=sid, room_id=room_id, case_reference=case_reference.strip(),
            interviewee_pseudonym=interviewee_pseudonym.strip(), interviewer=interviewer.strip(),
            language=language, created_wall=utc_iso(clock.wall0),
        )
        session = cls(directory, info, clock)
        session.info.clock["created"] = {"wall": utc_iso(clock.wall0), "sync": clock_sync_state()}
        session._save()
        session.record("session-created", room=room_id, language=language)
        return session

    @classmethod
    def load(cls, directory: Path) -> Session:
        """Open a session from disk (e.g. for recovery or the clerk); its clock is not running."""
        try:
            data = json.loads((directory / META_FILE).read_text())
        except FileNotFoundError:
            raise SessionNotFound(f"no session at {directory}") from None
        session = cls(directory, SessionInfo(**data))
        session._seq = len(session.events())
        return session

    # ------------------------------------------------------------ state machine

    @property
    def state(self) -> State:
        return State(self.info.state)

    def transition(self, action: str, **fields) -> dict:
        with self._lock:
            allowed = TRANSITIONS[action]
            if self.state not in allowed:
                raise SessionStateError(f"cannot {action} a session that is {self.state.value}")
            self.info.state = allowed[self.state]
            if action in ("start", "end"):
                now = self.clock.wall()
                self.info.clock[action] = {
                    "wall": utc_iso(now), "session_time": round(self.clock.now(), 3), "sync": clock_sync_state()
                }
            self._save()
            entry = self._append(f"session-{action}", None, {"state": self.info.state, **fields})
        self._notify(entry)  # outside the lock: a slow listener must not stall the media thread
        return entry

    # ------------------------------------------------------------ events

    def now(self) -> float:
        return self.clock.now()

    def record(self, kind: str, at: float | None = None, **fields) -> dict:
        """Append one event (fsynced): the session's own account of what happened, in session time."""
        with self._lock:
            entry = self._append(kind, at, fields)
        self._notify(entry)
        return entry

    def _append(self, kind: str, at: float | None, fields: dict) -> dict:
        self._check_wall_clock()
        self._seq += 1
        entry = {"seq": self._seq, "t": round(self.now() if at is None else at, 3),
                 "wall": utc_iso(self.clock.wall()), "type": kind, **fields}
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
        fd = os.open(self.dir / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def _notify(self, entry: dict) -> None:
        log_event(log, entry["type"], session=self.info.id, t=entry["t"])
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(entry)

    def _check_wall_clock(self) -> None:
        drift = self.clock.wall_offset_drift()
        if abs(drift - self._last_drift) > self.clock.step_tolerance_s:
            step = drift - self._last_drift
            self._last_drift = drift
            self._seq += 1
            entry = {"seq": self._seq, "t": round(self.now(), 3), "wall": utc_iso(self.clock.wall()),
                     "type": "wall-clock-step", "step_s": round(step, 3),
                     "note": "media timestamps follow the monotonic session clock and are unaffected"}
            with (self.dir / EVENTS_FILE).open("a") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            log.warning("wall clock stepped by %.3f s during session %s", step, self.info.id)

    def check_clock(self) -> None:
        """Called periodically by the pipeline so a wall-clock step is noticed even when nothing happens."""
        with self._lock:
            self._check_wall_clock()

    def events(self) -> list[dict]:
        path = self.dir / EVENTS_FILE
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash: everything before it stands
        return out

    def add_listener(self, fn: Callable[[dict], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def marker(self, label: str, by: str = "operator") -> dict:
        if self.state not in (State.RECORDING, State.PAUSED):
            raise SessionStateError(f"markers need a running session; this one is {self.state.value}")
        label = label.strip()
        if not label or len(label) > 500:
            raise SessionStateError("a marker needs a label of 1-500 characters")
        return self.record("marker", label=label, by=by)

    def _save(self) -> None:
        tmp = self.dir / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self.info), indent=2, ensure_ascii=False, sort_keys=True))
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / META_FILE)

    def public_summary(self) -> dict:
        """What may appear on screens and in APIs: the pseudonym, never a name."""
        return {
            "id": self.info.id, "room": self.info.room_id, "case_reference": self.info.case_reference,
            "interviewee": self.info.interviewee_pseudonym, "interviewer": self.info.interviewer,
            "language": self.info.language, "state": self.info.state,
            "session_time": round(self.now(), 3) if self.state is not State.ENDED else None,
        }
