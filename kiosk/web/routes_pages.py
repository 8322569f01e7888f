"""Pages: sign-in, the operator console, an invite's landing page, the viewer/judge page, static files."""

from __future__ import annotations

import json
import mimetypes
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..live.invites import InviteRefused
from ..live.roles import INVITE_ROLES, LABELS, Role
from .app import STATIC, WebContext
from .auth import OPERATOR_COOKIE, VIEWER_COOKIE, Principal, require

router = APIRouter()

PUBLIC = require(Role.PUBLIC)
OPERATOR = require(Role.OPERATOR)
ANY_PARTY_LOBBY = require(*INVITE_ROLES, lobby=True)


def ctx_of(request: Request) -> WebContext:
    return request.app.state.kiosk


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https",
    )


# ---------------------------------------------------------------- public


@router.get("/")
def root(principal: Annotated[Principal | None, Depends(PUBLIC)]):
    if principal is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/console" if principal.role == Role.OPERATOR else "/view", status_code=303)


@router.get("/static/{name}")
def static(name: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404, "no such file")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/login")
def login_page(request: Request, _: Annotated[Principal | None, Depends(PUBLIC)]):
    return ctx_of(request).render(request, "login.html", error=None)


async def _sign_in(request: Request, name: str, password: str) -> str | None:
    ctx = ctx_of(request)
    if ctx.sign_ins.throttled(name):
        raise HTTPException(429, "too many failed sign-ins; wait a few minutes")
    ok = await run_in_threadpool(ctx.operators.verify, name, password)
    if not ok:
        ctx.sign_ins.failed(name)
        return None
    return ctx.sign_ins.open(name)


@router.post("/login")
async def login(
    request: Request,
    _: Annotated[Principal | None, Depends(PUBLIC)],
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
):
    ctx = ctx_of(request)
    token = await _sign_in(request, name.strip(), password)
    if token is None:
        return ctx.render(request, "login.html", status=401, error="Name or password not recognised.")
    response = RedirectResponse("/console", status_code=303)
    set_cookie(request, response, OPERATOR_COOKIE, token, 12 * 3600)
    return response


class Credentials(BaseModel):
    name: str
    password: str


@router.post("/api/login")
async def api_login(request: Request, body: Credentials, _: Annotated[Principal | None, Depends(PUBLIC)]):
    token = await _sign_in(request, body.name.strip(), body.password)
    if token is None:
        raise HTTPException(401, "name or password not recognised")
    response = JSONResponse({"operator": body.name.strip()})
    set_cookie(request, response, OPERATOR_COOKIE, token, 12 * 3600)
    return response


@router.get("/login/once/{token}")
def one_time_page(request: Request, token: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    return ctx_of(request).render(request, "once.html", token=token)


@router.post("/login/once/{token}")
def one_time_login(request: Request, token: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    ctx = ctx_of(request)
    name = ctx.sign_ins.redeem_link_token(token)
    if name is None:
        return ctx.render(request, "message.html", status=410, title="Link no longer valid",
                          message="This sign-in link was already used or has expired.")
    response = RedirectResponse("/console", status_code=303)
    set_cookie(request, response, OPERATOR_COOKIE, ctx.sign_ins.open(name), 12 * 3600)
    return response


@router.post("/logout")
def logout(request: Request, _: Annotated[Principal | None, Depends(OPERATOR)]):
    ctx_of(request).sign_ins.close(request.cookies.get(OPERATOR_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(OPERATOR_COOKIE, path="/")
    return response


# ---------------------------------------------------------------- invites


@router.get("/join/{token}")
def join_page(request: Request, token: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    """Landing page of an invite link. Opening it uses nothing up (link previews must not burn it)."""
    ctx = ctx_of(request)
    try:
        invite = ctx.live.check_invite(token)
    except InviteRefused as exc:
        # the same browser coming back to its own, already used link goes on to its page
        used = ctx.live.invites.find(token)
        mine = ctx.live.roster.by_token(request.cookies.get(VIEWER_COOKIE, ""))
        if used and mine and used.participant_id == mine.id and exc.reason == "used":
            return RedirectResponse("/view", status_code=303)
        return ctx.render(request, "refused.html", status=410, reason=exc.reason, message=str(exc))
    s = ctx.live.session(invite.session_id)
    return ctx.render(request, "join.html", token=token, role=LABELS[invite.role], label=invite.label,
                      case_reference=s.info.case_reference)


@router.post("/join/{token}")
async def join(
    request: Request, token: str, _: Annotated[Principal | None, Depends(PUBLIC)], name: Annotated[str, Form()] = ""
):
    ctx = ctx_of(request)
    try:
        participant, viewer_token = await ctx.live.redeem(token, name)
    except InviteRefused as exc:
        return ctx.render(request, "refused.html", status=410, reason=exc.reason, message=str(exc))
    response = RedirectResponse("/view", status_code=303)
    set_cookie(request, response, VIEWER_COOKIE, viewer_token, 24 * 3600)
    return response


# ---------------------------------------------------------------- console and viewer pages


def page_config(ctx: WebContext, principal: Principal) -> str:
    s = ctx.station.session
    text = json.dumps({
        "role": principal.role.value,
        "name": principal.name,
        "participant": principal.participant_id,
        "session": s.public_summary() if s else None,
        # a party still in the lobby fetches them from /api/ice once admitted (TURN credentials)
        "ice_servers": ctx.live.ice_config() if principal.admitted else None,
        "invite_roles": [r.value for r in INVITE_ROLES],
        "labels": {r.value: v for r, v in LABELS.items()},
        "language": ctx.station.room.room.language,
    })
    # safe inside <script type="application/json">: no "</script>" can close the element
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/console")
def console(request: Request, principal: Annotated[Principal, Depends(OPERATOR)]):
    ctx = ctx_of(request)
    return ctx.render(request, "console.html", principal=principal, config=page_config(ctx, principal),
                      invite_roles=[(r.value, LABELS[r]) for r in INVITE_ROLES])


@router.get("/view")
def view(request: Request, principal: Annotated[Principal, Depends(ANY_PARTY_LOBBY)]):
    ctx = ctx_of(request)
    return ctx.render(request, "view.html", principal=principal, role_label=LABELS[principal.role],
                      config=page_config(ctx, principal), is_judge=principal.role == Role.JUDGE)


@router.get("/judge")
def judge(request: Request, principal: Annotated[Principal, Depends(require(Role.JUDGE, lobby=True))]):
    """The judge's page is the viewer page with the admission panel."""
    return RedirectResponse("/view", status_code=303)
