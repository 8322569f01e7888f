"""The roster: who redeemed an invite, who was admitted, who is connected right now.

The roster only keeps state; LiveService turns each change into a presence event in the session log
(join, admit, leave, remove, reconnect) so the court can later show who could see and hear what, when.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import KioskError
from .invites import Invite, new_token, token_hash
from .roles import Role


class Admission(StrEnum):
    WAITING = "waiting"
    ADMITTED = "admitted"
    REMOVED = "removed"


class ParticipantNotFound(KioskError):
    http_status = 404


@dataclass
class Participant:
    id: str
    session_id: str
    role: Role
    name: str
    invite_id: str
    token_hash: str
    joined: float
    admission: Admission = Admission.WAITING
    admitted_by: str | None = None
    connections: int = 0  # open WebSockets from this participant's pages
    ever_connected: bool = False
    left: bool = False  # was connected, then lost every connection
    link: dict = field(default_factory=dict)  # last link stats seen by the server

    @property
    def connected(self) -> bool:
        return self.connections > 0

    def public(self) -> dict:
        return {
            "id": self.id, "role": self.role.value, "name": self.name, "admission": self.admission.value,
            "connected": self.connected, "admitted_by": self.admitted_by, "link": self.link,
        }


def clean_name(name: str, fallback: str) -> str:
    name = " ".join((name or "").split())[:60]
    return name or fallback


class Roster:
    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._by_id: dict[str, Participant] = {}
        self._by_token: dict[str, str] = {}

    def join(self, invite: Invite, name: str) -> tuple[Participant, str]:
        """A redeemed invite becomes a participant with its own viewer token (cookie or WHEP Bearer)."""
        token = new_token()
        p = Participant(
            id=secrets.token_hex(6), session_id=invite.session_id, role=invite.role,
            name=clean_name(name, invite.label), invite_id=invite.id, token_hash=token_hash(token),
            joined=self._clock(),
        )
        with self._lock:
            self._by_id[p.id] = p
            self._by_token[p.token_hash] = p.id
        invite.participant_id = p.id
        return p, token

    def by_token(self, token: str) -> Participant | None:
        with self._lock:
            pid = self._by_token.get(token_hash(token or ""))
            return self._by_id.get(pid) if pid else None

    def get(self, pid: str) -> Participant:
        with self._lock:
            p = self._by_id.get(pid)
        if p is None:
            raise ParticipantNotFound(f"no participant {pid!r}")
        return p

    def for_session(self, session_id: str) -> list[Participant]:
        with self._lock:
            return sorted((p for p in self._by_id.values() if p.session_id == session_id), key=lambda p: p.joined)

    def set_admission(self, pid: str, admission: Admission, by: str) -> tuple[Participant, bool]:
        """Returns the participant and whether anything changed (admitting twice is not an error)."""
        with self._lock:
            p = self.get(pid)
            if p.admission == admission:
                return p, False
            if p.admission == Admission.REMOVED:
                raise ParticipantRemoved(f"{p.name} was removed; issue a new invite to let them back in")
            p.admission = admission
            if admission == Admission.ADMITTED:
                p.admitted_by = by
            return p, True

    def connect(self, pid: str) -> str | None:
        """Count a page connection. Returns 'join' (first ever), 'reconnect' (after a leave) or None."""
        with self._lock:
            p = self.get(pid)
            p.connections += 1
            if p.connections > 1:
                return None
            if not p.ever_connected:
                p.ever_connected = True
                return "join"
            if p.left:
                p.left = False
                return "reconnect"
            return None

    def disconnect(self, pid: str) -> bool:
        """True when this was the participant's last connection (they have left, for now)."""
        with self._lock:
            p = self.get(pid)
            p.connections = max(0, p.connections - 1)
            if p.connections == 0 and not p.left:
                p.left = True
                return True
            return False


class ParticipantRemoved(KioskError):
    http_status = 409
