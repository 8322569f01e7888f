"""WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP offer, gets 201 + answer + Location; DELETE ends.

The Bearer token is a participant's viewer token (from a redeemed, admitted invite); the console's
preview and the viewer page use their cookies instead. CORS is open without credentials, so a foreign
page can only use the endpoint with a token it was given.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from ..live.roles import INVITE_ROLES, Role
from .app import WebContext
from .auth import Principal, require

router = APIRouter(prefix="/whep")

VIEWERS = require(Role.OPERATOR, *INVITE_ROLES)
HANG_UP = require(Role.OPERATOR, *INVITE_ROLES, lobby=True)  # a removed party may still say goodbye
PUBLIC = require(Role.PUBLIC)

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, Retry-After",
    "Access-Control-Max-Age": "600",
}


def ctx_of(request: Request) -> WebContext:
    return request.app.state.kiosk


def _quoted(value: str) -> str:
    """An RFC 8288 quoted-string: a quote or backslash in a TURN credential must not end the parameter."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_links(ctx: WebContext) -> str:
    """STUN/TURN servers as WHEP Link headers (rel="ice-server")."""
    links = []
    for server in ctx.live.ice_config():
        for url in server["urls"]:
            link = f'<{url}>; rel="ice-server"'
            if server.get("username"):
                link += (f'; username={_quoted(server["username"])}; credential={_quoted(server["credential"])}'
                         '; credential-type="password"')
            links.append(link)
    return ", ".join(links)


@router.options("/{session_id}")
def whep_options(request: Request, session_id: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    headers = {**CORS, "Accept-Post": "application/sdp"}
    return Response(status_code=204, headers=headers)


@router.post("/{session_id}", status_code=201)
async def whep_offer(request: Request, session_id: str, principal: Annotated[Principal, Depends(VIEWERS)]):
    ctx = ctx_of(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        raise HTTPException(415, f"expected Content-Type application/sdp, got {content_type or 'none'}",
                            headers={**CORS, "Accept-Post": "application/sdp"})
    body = await request.body()
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "malformed SDP: body is not UTF-8 text", headers=CORS) from None
    peer, answer = await ctx.live.open_stream(session_id, principal, offer)
    headers = {**CORS, "Location": f"/whep/{session_id}/{peer.id}", "ETag": f'"{peer.id}"'}
    if links := ice_links(ctx):
        headers["Link"] = links
    return Response(answer, status_code=201, media_type="application/sdp", headers=headers)


@router.options("/{session_id}/{stream_id}")
def whep_resource_options(request: Request, session_id: str, stream_id: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    return Response(status_code=204, headers=CORS)


@router.delete("/{session_id}/{stream_id}")
async def whep_delete(request: Request, session_id: str, stream_id: str, principal: Annotated[Principal, Depends(HANG_UP)]):
    ctx = ctx_of(request)
    peer = ctx.live.peers.get(stream_id)
    if peer is None or peer.session_id != session_id:
        raise HTTPException(404, "no such stream (already ended?)", headers=CORS)
    if principal.role != Role.OPERATOR and peer.participant_id != principal.participant_id:
        raise HTTPException(403, "this stream belongs to someone else", headers=CORS)
    await ctx.live.close_stream(stream_id, "viewer hung up")
    return Response(status_code=200, headers=CORS)
