"""The FastAPI app of one room station: operator console, viewer pages, session API, WHEP, WebSocket.

`create_app(station)` wires the routers; every route declares its roles (auth.require) and the app
refuses to start if one does not. Domain errors become 4xx/5xx with the message as the reason; pages
get a calm HTML message instead of JSON.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..errors import KioskError
from ..live.service import LiveService, SessionNotLive
from .auth import OperatorStore, SignIns, check_routes
from .guard import install_guard

if TYPE_CHECKING:
    from ..station import Station

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


@dataclass
class WebContext:
    station: Station
    live: LiveService
    operators: OperatorStore
    sign_ins: SignIns
    templates: Environment
    public_url: str = ""

    def render(self, request: Request, name: str, status: int = 200, **context) -> Response:
        html = self.templates.get_template(name).render(request=request, room=self.station.room, **context)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")

    def base_url(self, request: Request) -> str:
        return (self.public_url or str(request.base_url)).rstrip("/")


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/whep/", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def create_app(station: Station, *, data_dir: Path | None = None, public_url: str | None = None) -> FastAPI:
    """One app per station. `data_dir` (default: the station's) holds operators.json."""
    from . import routes_health, routes_pages, routes_session, routes_whep, routes_ws

    settings = station.settings
    data = Path(data_dir or getattr(station, "data_dir", None) or settings.storage.data_dir)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    ctx = WebContext(
        station=station, live=LiveService(station), operators=OperatorStore(data), sign_ins=SignIns(),
        templates=env, public_url=public_url if public_url is not None else settings.server.public_url,
    )

    from ..examination import routes as routes_examination
    from ..examination.service import ExaminationService

    examination = ExaminationService(ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await ctx.live.start()
        await examination.start()
        try:
            yield
        finally:
            await examination.stop()
            await ctx.live.stop()

    app = FastAPI(title="Testimony kiosk", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.kiosk = ctx
    app.state.examination = examination

    install_guard(app, CSP, allow_bearer=True)  # a WHEP client with a Bearer token is not a forged form

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if _wants_html(request):
            if exc.status_code == 401 and request.url.path.startswith("/console"):
                return RedirectResponse("/login", status_code=303)
            return ctx.render(request, "message.html", status=exc.status_code, title=_title(exc.status_code),
                              message=str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(KioskError)
    async def kiosk_error(request: Request, exc: KioskError):
        headers = {}
        if isinstance(exc, SessionNotLive) and exc.retry_after:
            headers["Retry-After"] = str(exc.retry_after)
        if _wants_html(request):
            return ctx.render(request, "message.html", status=exc.http_status, title=_title(exc.http_status),
                              message=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status, headers=headers)

    for module in (routes_pages, routes_session, routes_whep, routes_ws, routes_health, routes_examination):
        app.include_router(module.router)
    check_routes(app.routes)
    return app


def _title(status: int) -> str:
    return {401: "Please sign in", 403: "Not available", 404: "Not found", 409: "Not possible right now",
            410: "Link no longer valid"}.get(status, "Something went wrong")
