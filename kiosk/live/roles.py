"""Who may do what: the roles a principal can hold, and the groups the routes are declared with.

Every HTTP route and WebSocket names the roles that may use it (see kiosk.web.auth.require); a role not
named is refused. PUBLIC is the explicit declaration for pages anyone may open (login, an invite's
landing page, health), so "no declaration" is never mistaken for "public".
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"
    JUDGE = "judge"
    DEFENCE = "defence"
    PROSECUTION = "prosecution"
    OBSERVER = "observer"
    ACCUSED = "accused"
    CLERK = "clerk"  # court side: retrieves, verifies and exports sealed recordings (kiosk.clerk)
    PUBLIC = "public"  # declaration only: anyone, signed in or not


#: roles an invite can carry (the remote parties)
INVITE_ROLES: tuple[Role, ...] = (Role.JUDGE, Role.DEFENCE, Role.PROSECUTION, Role.OBSERVER, Role.ACCUSED)
#: every role a signed-in principal of the room station can hold
ALL_ROLES: tuple[Role, ...] = (Role.OPERATOR, *INVITE_ROLES)
#: roles of the court side (the clerk portal); a clerk is never a party to the live session
COURT_ROLES: tuple[Role, ...] = (Role.CLERK,)
#: who may admit a waiting party to the live view, or remove one
ADMITTERS: tuple[Role, ...] = (Role.OPERATOR, Role.JUDGE)
#: parties who may question the witness through the judge (issue 6 builds on this)
QUESTIONERS: tuple[Role, ...] = (Role.DEFENCE, Role.PROSECUTION)

LABELS: dict[Role, str] = {
    Role.OPERATOR: "Operator",
    Role.JUDGE: "Judge",
    Role.DEFENCE: "Defence",
    Role.PROSECUTION: "Prosecution",
    Role.OBSERVER: "Observer",
    Role.ACCUSED: "Accused",
    Role.CLERK: "Court clerk",
    Role.PUBLIC: "Anyone",
}


def parse_invite_role(value: str) -> Role:
    try:
        role = Role(value.strip().lower())
    except ValueError:
        role = None
    if role not in INVITE_ROLES:
        raise ValueError(f"unknown invite role {value!r}; expected one of {[r.value for r in INVITE_ROLES]}")
    return role
