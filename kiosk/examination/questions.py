"""Questions put to the witness through the judge.

A party with question rights (defence, prosecution) submits a question; it reaches the judge only. The
judge allows it, optionally rephrased for a child (the original is kept), or disallows it with a reason.
An allowed question is shown to the interviewer, who asks it (the operator marks the session time) or
declines it with a reason. Every step carries session time, so the record can show who asked what,
what the court did with it, and when the child heard it.

The book only holds state and checks the rules; the examination service writes each change into the
session log before applying it here, so the log and the screens never disagree.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from enum import StrEnum

from ..errors import KioskError

MAX_QUESTION_CHARS = 1000
MAX_REASON_CHARS = 500


class InvalidInput(KioskError):
    """A question, reason or ruling that cannot be accepted as sent (empty, too long, unknown choice)."""

    http_status = 422


class UnknownItem(KioskError):
    """No question, objection or request with that id in the current session."""

    http_status = 404


class NotNow(KioskError):
    """The item is not in a state that allows this step (e.g. ruling twice, asking a disallowed question)."""

    http_status = 409


def clean_text(value: object, what: str, limit: int, required: bool = True) -> str:
    """Trimmed text with line breaks kept and other control characters removed; InvalidInput says why not."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or ch >= " ").strip()
    if required and not text:
        raise InvalidInput(f"{what} is empty; please write it out")
    if len(text) > limit:
        raise InvalidInput(f"{what} is too long: {len(text)} characters, at most {limit}")
    return text


class Status(StrEnum):
    SUBMITTED = "submitted"  # waiting for the judge
    ALLOWED = "allowed"  # waiting to be shown to the interviewer
    DISALLOWED = "disallowed"
    SHOWN = "shown"  # on the interviewer's screen
    ASKED = "asked"
    DECLINED = "declined"  # the interviewer did not ask it (reason noted)


OPEN_FOR_INTERVIEWER = (Status.ALLOWED, Status.SHOWN)


@dataclass(frozen=True)
class Question:
    id: str
    role: str  # the submitting party (defence / prosecution)
    participant: str
    name: str  # the submitter's display name (pseudonymous, as on the invite)
    text: str  # exactly as submitted
    submitted_at: float
    status: Status = Status.SUBMITTED
    rephrased: str | None = None  # the judge's wording for the child, if changed
    ruled_at: float | None = None
    ruled_by: str | None = None
    reason: str | None = None  # why disallowed (or a note with the allowance)
    shown_at: float | None = None
    asked_at: float | None = None
    asked_by: str | None = None
    declined_at: float | None = None
    declined_by: str | None = None
    declined_reason: str | None = None

    @property
    def to_ask(self) -> str:
        return self.rephrased or self.text

    def for_parties(self) -> dict:
        """The full account: for the judge and for the submitting party."""
        return {**dataclasses.asdict(self), "status": self.status.value, "to_ask": self.to_ask}

    def for_interviewer(self) -> dict:
        """What the interviewer needs: the wording to ask and who wants it asked, nothing of the ruling."""
        return {
            "id": self.id, "role": self.role, "status": self.status.value, "to_ask": self.to_ask,
            "ruled_at": self.ruled_at, "shown_at": self.shown_at, "asked_at": self.asked_at,
            "declined_at": self.declined_at, "declined_reason": self.declined_reason,
        }


class QuestionBook:
    """The questions of one session. Each step returns the changed question without storing it;
    `put` stores it once the service has logged the change."""

    def __init__(self) -> None:
        self._by_id: dict[str, Question] = {}
        self._lock = threading.Lock()
        self._count = 0

    def get(self, qid: str) -> Question:
        with self._lock:
            q = self._by_id.get(qid)
        if q is None:
            raise UnknownItem(f"no question {qid!r} in this session")
        return q

    def all(self) -> list[Question]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda q: q.submitted_at)

    def put(self, q: Question) -> Question:
        with self._lock:
            self._by_id[q.id] = q
        return q

    def submit(self, role: str, participant: str, name: str, text: object, at: float) -> Question:
        text = clean_text(text, "the question", MAX_QUESTION_CHARS)
        with self._lock:
            self._count += 1
            qid = f"Q{self._count}"
        return Question(qid, role, participant, name, text, round(at, 3))

    def rule(self, qid: str, decision: object, rephrased: object, reason: object, by: str, at: float) -> Question:
        q = self.get(qid)
        if decision not in ("allow", "disallow"):
            raise InvalidInput(f"decision must be 'allow' or 'disallow', not {decision!r}")
        if q.status is not Status.SUBMITTED:
            raise NotNow(f"question {qid} was already ruled on ({q.status.value})")
        if decision == "allow":
            wording = clean_text(rephrased, "the rephrased question", MAX_QUESTION_CHARS, required=False)
            note = clean_text(reason, "the note", MAX_REASON_CHARS, required=False)
            return dataclasses.replace(
                q, status=Status.ALLOWED, rephrased=wording if wording and wording != q.text else None,
                ruled_at=round(at, 3), ruled_by=by, reason=note or None,
            )
        why = clean_text(reason, "the reason for disallowing", MAX_REASON_CHARS)
        return dataclasses.replace(q, status=Status.DISALLOWED, ruled_at=round(at, 3), ruled_by=by, reason=why)

    def shown(self, qid: str, at: float) -> Question | None:
        """None when there is nothing to note (already shown, or not for the interviewer)."""
        q = self.get(qid)
        if q.status is not Status.ALLOWED:
            return None
        return dataclasses.replace(q, status=Status.SHOWN, shown_at=round(at, 3))

    def asked(self, qid: str, by: str, at: float) -> Question:
        q = self.get(qid)
        if q.status not in OPEN_FOR_INTERVIEWER:
            raise NotNow(f"question {qid} is {q.status.value}; only an allowed question can be marked asked")
        return dataclasses.replace(q, status=Status.ASKED, asked_at=round(at, 3), asked_by=by,
                                   shown_at=q.shown_at if q.shown_at is not None else round(at, 3))

    def decline(self, qid: str, reason: object, by: str, at: float) -> Question:
        q = self.get(qid)
        why = clean_text(reason, "the reason for not asking", MAX_REASON_CHARS)
        if q.status not in OPEN_FOR_INTERVIEWER:
            raise NotNow(f"question {qid} is {q.status.value}; only an allowed question can be declined")
        return dataclasses.replace(q, status=Status.DECLINED, declined_at=round(at, 3), declined_by=by,
                                   declined_reason=why)
