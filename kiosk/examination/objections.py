"""Objections and break requests: a party raises one, the judge rules on it, the log keeps both.

Like questions, each step returns the changed item; the service logs it, then stores it.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from .questions import MAX_REASON_CHARS, InvalidInput, NotNow, UnknownItem, clean_text

MAX_OBJECTION_CHARS = 500

OBJECTION_DECISIONS = ("sustained", "overruled")
REQUEST_DECISIONS = ("granted", "refused")


@dataclass(frozen=True)
class Application:
    """An objection (kind 'objection') or a request for a break (kind 'break-request')."""

    id: str
    kind: str
    role: str
    participant: str | None  # None when the operator asks (the interviewer's side)
    name: str
    text: str
    raised_at: float
    status: str = "pending"  # then one of the decisions
    ruled_at: float | None = None
    ruled_by: str | None = None
    reason: str | None = None

    def public(self) -> dict:
        return dataclasses.asdict(self)


class Applications:
    """Objections and break requests of one session, numbered O1.. and R1.."""

    PREFIX = {"objection": "O", "break-request": "R"}

    def __init__(self) -> None:
        self._by_id: dict[str, Application] = {}
        self._count = {"objection": 0, "break-request": 0}
        self._lock = threading.Lock()

    def get(self, aid: str) -> Application:
        with self._lock:
            a = self._by_id.get(aid)
        if a is None:
            raise UnknownItem(f"no objection or break request {aid!r} in this session")
        return a

    def all(self) -> list[Application]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda a: a.raised_at)

    def put(self, a: Application) -> Application:
        with self._lock:
            self._by_id[a.id] = a
        return a

    def raise_(self, kind: str, role: str, participant: str | None, name: str, text: object, at: float) -> Application:
        if kind == "objection":
            body = clean_text(text, "the objection", MAX_OBJECTION_CHARS)
        else:
            body = clean_text(text, "the reason for a break", MAX_REASON_CHARS, required=False)
        with self._lock:
            self._count[kind] += 1
            aid = f"{self.PREFIX[kind]}{self._count[kind]}"
        return Application(aid, kind, role, participant, name, body, round(at, 3))

    def rule(self, aid: str, decision: object, reason: object, by: str, at: float) -> Application:
        a = self.get(aid)
        allowed = OBJECTION_DECISIONS if a.kind == "objection" else REQUEST_DECISIONS
        if decision not in allowed:
            raise InvalidInput(f"decision must be one of {list(allowed)}, not {decision!r}")
        if a.status != "pending":
            raise NotNow(f"{aid} was already ruled on ({a.status})")
        why = clean_text(reason, "the reason", MAX_REASON_CHARS, required=False)
        return dataclasses.replace(a, status=decision, ruled_at=round(at, 3), ruled_by=by, reason=why or None)
