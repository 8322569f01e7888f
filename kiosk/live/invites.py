"""Invites: single-use, expiring, session-bound, role-bound capabilities for the remote parties.

Only a SHA-256 of each token is kept (tokens are 192-bit random, so a fast hash is enough): a copy of the
kiosk's memory or logs never yields a usable link. Redeeming marks the invite used at once, under a lock,
so two browsers racing with one link cannot both get in.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from ..errors import KioskError
from .roles import Role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class InviteRefused(KioskError):
    """An invite link that cannot be used: unknown, expired, already used, or its session is over."""

    http_status = 410

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass
class Invite:
    id: str
    session_id: str
    role: Role
    label: str
    token_hash: str
    created: float
    expires: float
    used_at: float | None = None
    participant_id: str | None = None
    revoked: bool = False
    pre_admit: bool = False  # let in on arrival (decided by the operator when issuing)

    def public(self) -> dict:
        return {
            "id": self.id, "session_id": self.session_id, "role": self.role.value, "label": self.label,
            "expires": self.expires, "used": self.used_at is not None, "revoked": self.revoked,
            "participant_id": self.participant_id,
            "pre_admit": self.pre_admit,
        }


class InviteBook:
    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._by_hash: dict[str, Invite] = {}
        self._lock = threading.Lock()

    def issue(
        self, session_id: str, role: Role, label: str, ttl_minutes: float, pre_admit: bool = False
    ) -> tuple[Invite, str]:
        label = " ".join(label.split())[:80] or role.value.capitalize()
        token = new_token()
        now = self._clock()
        invite = Invite(
            id=secrets.token_hex(6), session_id=session_id, role=role, label=label,
            token_hash=token_hash(token), created=now, expires=now + ttl_minutes * 60, pre_admit=pre_admit,
        )
        with self._lock:
            self._by_hash[invite.token_hash] = invite
        return invite, token

    def check(self, token: str) -> Invite:
        """The invite a token names, if it can still be redeemed; InviteRefused says why not."""
        with self._lock:
            return self._usable(token)

    def redeem(self, token: str) -> Invite:
        with self._lock:
            invite = self._usable(token)
            invite.used_at = self._clock()
            return invite

    def _usable(self, token: str) -> Invite:
        invite = self._by_hash.get(token_hash(token or ""))
        if invite is None:
            raise InviteRefused("unknown", "This invitation link is not valid. Please ask the court for a new one.")
        if invite.revoked:
            raise InviteRefused("revoked", "This invitation was withdrawn. Please ask the court for a new one.")
        if invite.used_at is not None:
            raise InviteRefused(
                "used", "This invitation has already been used. Each link works once; please ask the court for a new one."
            )
        if self._clock() >= invite.expires:
            raise InviteRefused("expired", "This invitation has expired. Please ask the court for a new one.")
        return invite

    def find(self, token: str) -> Invite | None:
        with self._lock:
            return self._by_hash.get(token_hash(token or ""))

    def revoke_session(self, session_id: str) -> None:
        """At session end every unused invite of it stops working."""
        with self._lock:
            for invite in self._by_hash.values():
                if invite.session_id == session_id and invite.used_at is None:
                    invite.revoked = True

    def for_session(self, session_id: str) -> list[Invite]:
        with self._lock:
            return sorted((i for i in self._by_hash.values() if i.session_id == session_id), key=lambda i: i.created)
