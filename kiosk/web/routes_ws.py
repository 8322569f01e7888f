"""One WebSocket per open page for live updates (session state, admission, participants, link quality,
device status). Actions go through the HTTP API; the socket only pushes, plus handlers that later
features register by message type (`register_ws_handler`), each stating the roles it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect

from ..live.roles import INVITE_ROLES, Role
from ..live.service import to_admitters
from .auth import Principal, require

router = APIRouter()

PAGES = require(Role.OPERATOR, *INVITE_ROLES, lobby=True)

Handler = Callable[[WebSocket, Principal, dict], Awaitable[dict | None]]
#: message type -> (roles allowed, handler); extended by later features (questions, rulings, ...)
WS_HANDLERS: dict[str, tuple[frozenset[Role], Handler]] = {}


def register_ws_handler(kind: str, roles: tuple[Role, ...], handler: Handler) -> None:
    WS_HANDLERS[kind] = (frozenset(roles), handler)


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin")
    if not origin:
        return True  # not a browser
    scheme = "https" if ws.url.scheme == "wss" else "http"
    return origin.rstrip("/") == f"{scheme}://{ws.headers.get('host', '')}"


@router.websocket("/ws")
async def live_updates(ws: WebSocket, principal: Annotated[Principal, Depends(PAGES)]):
    if not _same_origin(ws):
        await ws.close(code=1008, reason="cross-origin WebSocket refused")
        return
    ctx = ws.app.state.kiosk
    live = ctx.live
    await ws.accept()
    channel = live.bus.open(principal)
    p = principal.participant
    if p is not None:
        await live.page_connected(p)
    if principal.role == Role.OPERATOR:
        live.want_status(+1)
    s = ctx.station.session
    hello = {"type": "hello", "session": s.public_summary() if s else None, "role": principal.role.value}
    if p is not None:
        hello["me"] = live.me(p)
    if to_admitters(principal):
        hello["participants"] = [live.me(x) for x in live.participants()]

    async def pump() -> None:
        while True:
            await ws.send_json(await channel.queue.get())

    sender = asyncio.create_task(pump())
    try:
        await ws.send_json(hello)
        while True:
            message = await ws.receive_json()
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "ping":
                await ws.send_json({"type": "pong", "t": message.get("t")})
                continue
            entry = WS_HANDLERS.get(kind)
            if entry is None:
                await ws.send_json({"type": "error", "detail": f"unknown message type {kind!r}"})
            elif principal.role not in entry[0] or not principal.admitted:
                await ws.send_json({"type": "error", "status": 403, "detail": f"{kind!r} is not allowed for your role"})
            else:
                reply = await entry[1](ws, principal, message)
                if reply is not None:
                    await ws.send_json(reply)
    except (WebSocketDisconnect, RuntimeError, ValueError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        live.bus.close(channel)
        if principal.role == Role.OPERATOR:
            live.want_status(-1)
        if p is not None:
            await live.page_disconnected(p)
