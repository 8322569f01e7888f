"""The private counsel channel between the defence lawyer and the accused.

Its content is relayed in memory, straight from one WebSocket to the other side's pages, and is never
stored, logged, or shown to anyone else (not the judge, not the operator). What the court may later need
to know is only that the channel was there: when both sides were connected and admitted, which is
written to the session log as availability changes.

Nothing here may pass message text to a logger or to the session log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..live.presence import Admission, Participant
from ..live.roles import Role
from .questions import InvalidInput

COUNSEL_ROLES = (Role.DEFENCE, Role.ACCUSED)
MAX_MESSAGE_CHARS = 2000


def counsel_audience(session_id: str):
    """Admitted defence and accused participants of this session, and nobody else (no operator)."""

    def check(principal: Any) -> bool:
        p = getattr(principal, "participant", None)
        return (
            principal.role in COUNSEL_ROLES and p is not None and p.session_id == session_id
            and p.admission == Admission.ADMITTED
        )

    return check


def clean_message(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput("a message must be text")
    text = "".join(ch for ch in value.replace("\r\n", "\n") if ch in "\n\t" or ch >= " ").strip()
    if not text:
        raise InvalidInput("the message is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"the message is too long: {len(text)} characters, at most {MAX_MESSAGE_CHARS}")
    return text


@dataclass
class CounselChannel:
    """Availability of the channel in one session (content never passes through here)."""

    session_id: str
    available: bool = False
    defence: list[str] = field(default_factory=list)  # names of the connected, admitted parties
    accused: list[str] = field(default_factory=list)

    def update(self, participants: list[Participant]) -> bool:
        """Recompute from the roster; True when availability changed (to be logged)."""
        here = [p for p in participants if p.session_id == self.session_id and p.connected
                and p.admission == Admission.ADMITTED]
        self.defence = [p.name for p in here if p.role == Role.DEFENCE]
        self.accused = [p.name for p in here if p.role == Role.ACCUSED]
        now = bool(self.defence and self.accused)
        changed = now != self.available
        self.available = now
        return changed

    def public(self) -> dict:
        return {"available": self.available, "defence": self.defence, "accused": self.accused}
