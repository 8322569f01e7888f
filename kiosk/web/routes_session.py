"""The session API (operator) and the admission API (operator, admitted judge).

All station calls are synchronous and thread-safe, so these are `def` endpoints (FastAPI runs them in
its thread pool). Station errors carry their HTTP status and a reason (see app.kiosk_error).
"""

from __future__ import annotations

from typing import Annotated, Literal

import segno
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from ..live.roles import ADMITTERS, INVITE_ROLES, Role, parse_invite_role
from .app import WebContext
from .auth import Principal, require

router = APIRouter(prefix="/api")

OPERATOR = require(Role.OPERATOR)
ADMITTER = require(*ADMITTERS)
ANY_PARTY_LOBBY = require(Role.OPERATOR, *INVITE_ROLES, lobby=True)
ADMITTED = require(Role.OPERATOR, *INVITE_ROLES)


def ctx_of(request: Request) -> WebContext:
    return request.app.state.kiosk


class NewSession(BaseModel):
    case_reference: str = Field(min_length=1, max_length=200)
    interviewee_pseudonym: str = Field(min_length=1, max_length=200)
    interviewer: str = Field(min_length=1, max_length=200)
    language: str | None = Field(None, max_length=16)


class Marker(BaseModel):
    label: str = Field(min_length=1, max_length=500)


class NewInvite(BaseModel):
    role: str
    label: str = Field("", max_length=80)
    pre_admit: bool = False


@router.get("/ice")
def ice_servers(request: Request, _: Annotated[Principal, Depends(ADMITTED)]):
    """STUN/TURN servers for the browser's peer connection: only once admitted, since TURN credentials
    let their holder relay traffic through the court's server."""
    return {"ice_servers": ctx_of(request).live.ice_config()}


@router.get("/status")
def status(request: Request, _: Annotated[Principal | None, Depends(OPERATOR)]):
    return ctx_of(request).station.status()


@router.post("/session", status_code=201)
def create_session(request: Request, body: NewSession, principal: Annotated[Principal, Depends(OPERATOR)]):
    ctx = ctx_of(request)
    session = ctx.station.create_session(
        body.case_reference, body.interviewee_pseudonym, body.interviewer, body.language or None
    )
    session.record("operator-action", action="create", operator=principal.name)
    return session.public_summary()


@router.get("/session")
def current_session(request: Request, _: Annotated[Principal | None, Depends(ANY_PARTY_LOBBY)]):
    s = ctx_of(request).station.session
    if s is None:
        raise HTTPException(404, "no session in this room yet")
    return s.public_summary()


@router.post("/session/marker")
def add_marker(request: Request, body: Marker, principal: Annotated[Principal, Depends(OPERATOR)]):
    return ctx_of(request).station.marker(body.label, by=f"operator:{principal.name}")


@router.post("/session/{action}")
def session_action(
    request: Request, action: Literal["start", "pause", "resume", "end"], principal: Annotated[Principal, Depends(OPERATOR)]
):
    station = ctx_of(request).station
    result = getattr(station, action)()
    if station.session is not None:
        station.session.record("operator-action", action=action, operator=principal.name)
    return result


def qr_svg(url: str) -> str:
    """QR code of an invite link as inline SVG (no external image, no JS library)."""
    return segno.make(url, error="m").svg_inline(scale=6, border=2, dark="#1d2a38", light="#ffffff")


@router.post("/invites", status_code=201)
def issue_invite(request: Request, body: NewInvite, principal: Annotated[Principal, Depends(OPERATOR)]):
    ctx = ctx_of(request)
    try:
        role = parse_invite_role(body.role)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    invite, token = ctx.live.issue_invite(role, body.label, pre_admit=body.pre_admit, by=f"operator:{principal.name}")
    url = f"{ctx.base_url(request)}/join/{token}"
    return {"invite": invite.public(), "url": url, "qr_svg": qr_svg(url)}


@router.get("/invites")
def list_invites(request: Request, _: Annotated[Principal | None, Depends(OPERATOR)]):
    ctx = ctx_of(request)
    s = ctx.station.session
    return [i.public() for i in ctx.live.invites.for_session(s.info.id)] if s else []


@router.get("/participants")
def participants(request: Request, _: Annotated[Principal | None, Depends(ADMITTER)]):
    live = ctx_of(request).live
    return [live.me(p) for p in live.participants()]


def _by(principal: Principal) -> str:
    return f"{principal.role.value}:{principal.name}"


@router.post("/participants/{participant_id}/admit")
async def admit(request: Request, participant_id: str, principal: Annotated[Principal, Depends(ADMITTER)]):
    live = ctx_of(request).live
    return live.me(await live.admit(participant_id, _by(principal)))


@router.post("/participants/{participant_id}/remove")
async def remove(request: Request, participant_id: str, principal: Annotated[Principal, Depends(ADMITTER)]):
    live = ctx_of(request).live
    if principal.participant_id == participant_id:
        raise HTTPException(409, "you cannot remove yourself; close the page to leave")
    return live.me(await live.remove(participant_id, _by(principal)))


@router.get("/me")
def me(request: Request, principal: Annotated[Principal, Depends(require(*INVITE_ROLES, lobby=True))]):
    return ctx_of(request).live.me(principal.participant)


__all__ = ["router", "qr_svg", "OPERATOR", "ADMITTER"]
