"""Browser-facing protections every app of the kiosk shares: refuse cross-origin writes (cookies alone
must never authorise a form posted from another site) and send strict security headers on every answer."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def install_guard(app: FastAPI, csp: str, allow_bearer: bool = False) -> None:
    """`allow_bearer`: a cross-origin write carrying an `Authorization: Bearer` token is fine (WHEP clients
    and the ledger API authenticate by token, not by cookie, so they cannot be forged by another site)."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        origin = request.headers.get("origin")
        if request.method not in SAFE_METHODS and origin and origin != "null":
            same = origin.rstrip("/") == f"{request.url.scheme}://{request.headers.get('host', '')}"
            bearer = allow_bearer and request.headers.get("authorization", "")[:7].lower() == "bearer "
            if not same and not bearer:
                return PlainTextResponse("cross-origin request refused", status_code=403)
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response
