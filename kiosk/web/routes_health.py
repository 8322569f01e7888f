"""Health for monitoring and the console's status strip.

`/healthz` is public (a monitoring probe has no account) and therefore says nothing about the case or the
people: devices by their room-profile names, disk, ledger, clock, transcriber. It answers 503 when
recording is at risk (media stopped, disk full, ledger unreachable) so a probe can alert on the code.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..live.roles import Role
from .auth import Principal, require

router = APIRouter()

PUBLIC = require(Role.PUBLIC)


@router.get("/healthz")
def healthz(request: Request, _: Annotated[Principal | None, Depends(PUBLIC)]):
    health = request.app.state.kiosk.station.health()
    return JSONResponse(health, status_code=503 if health["status"] == "failing" else 200)
