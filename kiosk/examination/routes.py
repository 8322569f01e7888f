"""HTTP routes and WebSocket message handlers of the examination, each declaring its roles.

    GET  /api/examination                     what the caller's page may see (any admitted party, operator)
    POST /api/questions                       defence, prosecution                    201
    GET  /api/questions                       judge (all), defence/prosecution (own side), operator (allowed)
    POST /api/questions/{id}/ruling           judge      {decision: allow|disallow, rephrased?, reason?}
    POST /api/questions/{id}/asked            operator
    POST /api/questions/{id}/decline          operator   {reason}
    POST /api/objections                      defence, prosecution    {text}          201
    POST /api/objections/{id}/ruling          judge      {decision: sustained|overruled, reason?}
    POST /api/break-requests                  defence, prosecution, operator {reason} 201
    POST /api/break-requests/{id}/ruling      judge      {decision: granted|refused, reason?}
    POST /api/breaks                          judge      {reason}                        201
    POST /api/breaks/end                      judge, operator
    POST /api/breaks/mode                     operator   {mode: mark|pause}
    POST /api/mask                            operator   {video, audio, recording: continue|pause}
    POST /api/talkback                        judge      application/sdp send-only audio offer -> 201 answer
    DELETE /api/talkback/{id}                 judge
    POST /api/talkback/talk                   judge      {on}   (the page uses the WebSocket message)
    GET  /earpiece                            operator   the interviewer's large-text tablet page
    GET  /session-record(.json)               operator   the session record (built from the log)

WebSocket messages: `talk` {on} (judge), `counsel` {text} (defence, accused), `question-seen` {id}
(operator pages, when an allowed question is first on screen).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ..errors import KioskError
from ..live.roles import INVITE_ROLES, QUESTIONERS, Role
from ..web.auth import Principal, require
from ..web.routes_pages import page_config
from ..web.routes_ws import register_ws_handler
from .record import build_record, render_html
from .service import ExaminationService

router = APIRouter()

ANY_ADMITTED = require(Role.OPERATOR, *INVITE_ROLES)
QUESTIONER = require(*QUESTIONERS)
JUDGE = require(Role.JUDGE)
OPERATOR = require(Role.OPERATOR)
READERS = require(Role.JUDGE, Role.OPERATOR, *QUESTIONERS)
BREAK_ASKERS = require(Role.OPERATOR, *QUESTIONERS)
BREAK_ENDERS = require(Role.JUDGE, Role.OPERATOR)

RECORD_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


def service(request: Request | WebSocket) -> ExaminationService:
    return request.app.state.examination


class Text(BaseModel):
    text: Any = None


class Ruling(BaseModel):
    decision: Any = None
    rephrased: Any = None
    reason: Any = None


class Reason(BaseModel):
    reason: Any = None


class Mode(BaseModel):
    mode: Any = None


class Mask(BaseModel):
    video: Any = False
    audio: Any = False
    recording: Any = "continue"


class Talk(BaseModel):
    on: Any = None


# ---------------------------------------------------------------- state


@router.get("/api/examination")
def examination_state(request: Request, principal: Annotated[Principal, Depends(ANY_ADMITTED)]):
    return service(request).view(principal)


# ---------------------------------------------------------------- questions


@router.post("/api/questions", status_code=201)
async def submit_question(request: Request, body: Text, principal: Annotated[Principal, Depends(QUESTIONER)]):
    q = await service(request).submit_question(principal, body.text)
    return q.for_parties()


@router.get("/api/questions")
def list_questions(request: Request, principal: Annotated[Principal, Depends(READERS)]):
    return service(request).view(principal)["questions"]


@router.post("/api/questions/{qid}/ruling")
async def rule_question(request: Request, qid: str, body: Ruling, principal: Annotated[Principal, Depends(JUDGE)]):
    q = await service(request).rule_question(principal, qid, body.decision, body.rephrased, body.reason)
    return q.for_parties()


@router.post("/api/questions/{qid}/asked")
async def question_asked(request: Request, qid: str, principal: Annotated[Principal, Depends(OPERATOR)]):
    return (await service(request).question_asked(principal, qid)).for_interviewer()


@router.post("/api/questions/{qid}/decline")
async def question_declined(request: Request, qid: str, body: Reason, principal: Annotated[Principal, Depends(OPERATOR)]):
    return (await service(request).question_declined(principal, qid, body.reason)).for_interviewer()


# ---------------------------------------------------------------- objections, break requests, breaks


@router.post("/api/objections", status_code=201)
async def raise_objection(request: Request, body: Text, principal: Annotated[Principal, Depends(QUESTIONER)]):
    return (await service(request).raise_application(principal, "objection", body.text)).public()


@router.post("/api/objections/{aid}/ruling")
async def rule_objection(request: Request, aid: str, body: Ruling, principal: Annotated[Principal, Depends(JUDGE)]):
    return (await service(request).rule_application(principal, aid, "objection", body.decision, body.reason)).public()


@router.post("/api/break-requests", status_code=201)
async def request_break(request: Request, body: Reason, principal: Annotated[Principal, Depends(BREAK_ASKERS)]):
    return (await service(request).raise_application(principal, "break-request", body.reason)).public()


@router.post("/api/break-requests/{aid}/ruling")
async def rule_break_request(request: Request, aid: str, body: Ruling, principal: Annotated[Principal, Depends(JUDGE)]):
    a = await service(request).rule_application(principal, aid, "break-request", body.decision, body.reason)
    return a.public()


@router.post("/api/breaks", status_code=201)
async def call_break(request: Request, body: Reason, principal: Annotated[Principal, Depends(JUDGE)]):
    return (await service(request).call_break(principal, body.reason)).public()


@router.post("/api/breaks/end")
async def end_break(request: Request, principal: Annotated[Principal, Depends(BREAK_ENDERS)]):
    return (await service(request).end_break(principal)).public()


@router.post("/api/breaks/mode")
async def break_mode(request: Request, body: Mode, principal: Annotated[Principal, Depends(OPERATOR)]):
    return {"mode": await service(request).set_break_mode(principal, body.mode)}


# ---------------------------------------------------------------- privacy mask


@router.post("/api/mask")
async def mask(request: Request, body: Mask, principal: Annotated[Principal, Depends(OPERATOR)]):
    return await service(request).set_mask(principal, body.video, body.audio, body.recording)


# ---------------------------------------------------------------- talkback


@router.post("/api/talkback", status_code=201)
async def talkback_offer(request: Request, principal: Annotated[Principal, Depends(JUDGE)]):
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        raise HTTPException(415, f"expected Content-Type application/sdp, got {content_type or 'none'}")
    try:
        offer = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "malformed SDP: body is not UTF-8 text") from None
    peer, answer = await service(request).talkback_offer(principal, offer)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/api/talkback/{peer.id}"})


@router.delete("/api/talkback/{peer_id}")
async def talkback_close(request: Request, peer_id: str, principal: Annotated[Principal, Depends(JUDGE)]):
    await service(request).talkback_close(principal, peer_id)
    return {"closed": peer_id}


@router.post("/api/talkback/talk")
async def talk(request: Request, body: Talk, principal: Annotated[Principal, Depends(JUDGE)]):
    return await service(request).talk(principal, body.on)


# ---------------------------------------------------------------- pages


@router.get("/earpiece")
def earpiece_page(request: Request, principal: Annotated[Principal, Depends(OPERATOR)]):
    ctx = request.app.state.kiosk
    return ctx.render(request, "earpiece.html", principal=principal, config=page_config(ctx, principal))


def _record(request: Request) -> dict:
    s = request.app.state.kiosk.station.session
    if s is None:
        raise HTTPException(404, "no session in this room yet")
    return build_record(s.dir)


@router.get("/session-record")
def session_record_page(request: Request, _: Annotated[Principal, Depends(OPERATOR)]):
    html = render_html(_record(request))
    return Response(html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": RECORD_CSP})


@router.get("/session-record.json")
def session_record_json(request: Request, _: Annotated[Principal, Depends(OPERATOR)]):
    return JSONResponse(json.loads(json.dumps(_record(request))))


# ---------------------------------------------------------------- WebSocket messages


async def _ws(call, ws: WebSocket, principal: Principal, message: dict) -> dict | None:
    try:
        return await call(service(ws), principal, message)
    except KioskError as exc:
        return {"type": "exam-error", "status": exc.http_status, "detail": str(exc), "for": message.get("type")}


async def _talk(svc: ExaminationService, principal: Principal, message: dict) -> dict:
    return {"type": "talk-state", "talk": await svc.talk(principal, message.get("on"))}


async def _counsel(svc: ExaminationService, principal: Principal, message: dict) -> dict:
    return await svc.counsel_send(principal, message.get("text"))


async def _seen(svc: ExaminationService, principal: Principal, message: dict) -> None:
    qid = message.get("id")
    if isinstance(qid, str):
        await svc.question_shown(principal, qid)
    return None


register_ws_handler("talk", (Role.JUDGE,), lambda ws, pr, m: _ws(_talk, ws, pr, m))
register_ws_handler("counsel", (Role.DEFENCE, Role.ACCUSED), lambda ws, pr, m: _ws(_counsel, ws, pr, m))
register_ws_handler("question-seen", (Role.OPERATOR,), lambda ws, pr, m: _ws(_seen, ws, pr, m))
