"""The clerk portal: a FastAPI router and pages for court clerks (sign in, list and search, a session's
manifest, session record and verification item by item, retrieval with a stated purpose and order,
export download). Every route declares its roles (clerk, or public for sign-in and the stylesheet).

Two ways to run it:
- `create_clerk_app(court)` / `kiosk clerk serve`: the court-side app, nothing else in it.
- `mount_portal(app, court)`: the same router in another app (e.g. the room station's). Clerk sign-ins
  are a principal source of their own, so an operator or viewer gets 403 on clerk routes and a clerk
  gets 403 on the station's routes.

Pages never show the interviewee beyond the pseudonym the manifest carries.
"""

from __future__ import annotations

import logging
import mimetypes
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from ..errors import KioskError
from ..live.roles import Role
from ..web.auth import PRINCIPAL_SOURCES_ATTR, Principal, SignIns, check_routes, require
from ..web.guard import install_guard
from .court import Court
from .errors import ClerkError

log = logging.getLogger("kiosk.clerk.portal")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CLERK_COOKIE = "kiosk_clerk"
SIGN_IN_SECONDS = 8 * 3600
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
DOCUMENT_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"  # printable records (inline CSS, no script)

PUBLIC = require(Role.PUBLIC)
CLERK = require(Role.CLERK)


@dataclass
class Portal:
    court: Court
    sign_ins: SignIns = field(default_factory=SignIns)
    templates: Environment = field(default_factory=lambda: Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True)))

    def render(self, name: str, status: int = 200, **context) -> Response:
        html = self.templates.get_template(name).render(**context)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP})

    def principal(self, conn: HTTPConnection) -> Principal | None:
        name = self.sign_ins.lookup(conn.cookies.get(CLERK_COOKIE))
        return Principal(Role.CLERK, name) if name else None

    @property
    def identity_configured(self) -> bool:
        return bool(self.court.identity_file)

    def identity_protected(self) -> bool:
        from .identity import identity_is_protected

        try:
            return bool(self.court.identity_file) and identity_is_protected(self.court.identity_file)
        except ClerkError:
            return False


def portal_of(request: Request) -> Portal:
    return request.app.state.clerk


router = APIRouter(prefix="/clerk")


@router.get("/static/{name}")
def static(name: str, _: Annotated[Principal | None, Depends(PUBLIC)]):
    path = (STATIC / name).resolve()
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404, "no such file")
    return Response(path.read_bytes(), media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                    headers={"Cache-Control": "no-cache"})


@router.get("/login")
def login_page(request: Request, _: Annotated[Principal | None, Depends(PUBLIC)]):
    return portal_of(request).render("login.html", error=None)


@router.post("/login")
async def login(request: Request, _: Annotated[Principal | None, Depends(PUBLIC)],
                name: Annotated[str, Form()] = "", password: Annotated[str, Form()] = ""):
    portal = portal_of(request)
    name = name.strip()
    if portal.sign_ins.throttled(name):
        return portal.render("login.html", status=429, error="Too many failed sign-ins; wait a few minutes.")
    ok = await run_in_threadpool(portal.court.accounts.verify, name, password)
    if not ok:
        portal.sign_ins.failed(name)
        return portal.render("login.html", status=401, error="Name or password not recognised.")
    response = RedirectResponse("/clerk", status_code=303)
    response.set_cookie(CLERK_COOKIE, portal.sign_ins.open(name), max_age=SIGN_IN_SECONDS, httponly=True,
                        samesite="strict", path="/", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request, _: Annotated[Principal, Depends(CLERK)]):
    portal_of(request).sign_ins.close(request.cookies.get(CLERK_COOKIE))
    response = RedirectResponse("/clerk/login", status_code=303)
    response.delete_cookie(CLERK_COOKIE, path="/")
    return response


@router.get("")
def sessions(request: Request, principal: Annotated[Principal, Depends(CLERK)], case: str = "", date: str = "",
             room: str = "", state: str = ""):
    from .store import STATE_LABELS

    portal = portal_of(request)
    error = None
    try:
        found = portal.court.search(case=case.strip(), date=date.strip(), room=room.strip(), state=state)
    except ClerkError as exc:
        found, error = [], str(exc)
    return portal.render("sessions.html", principal=principal, sessions=found, error=error,
                         query={"case": case, "date": date, "room": room, "state": state}, states=STATE_LABELS)


def _session_page(request: Request, principal: Principal, session_id: str, status: int = 200, **extra) -> Response:
    from .export import list_exports
    from .store import read_manifest

    portal = portal_of(request)
    summary = portal.court.summary(session_id)
    manifest = read_manifest(summary.dir)
    return portal.render(
        "session.html", status=status, principal=principal, s=summary, manifest=manifest,
        segments=manifest["segments"], history=portal.court.history(session_id),
        exports=list_exports(portal.court, session_id), identity=portal.identity_configured,
        protected=portal.identity_protected(), **extra)


@router.get("/sessions/{session_id}")
def session_page(request: Request, session_id: str, principal: Annotated[Principal, Depends(CLERK)]):
    return _session_page(request, principal, session_id)


@router.get("/sessions/{session_id}/manifest.json")
def manifest_json(request: Request, session_id: str, _: Annotated[Principal, Depends(CLERK)]):
    path = portal_of(request).court.store.session_dir(session_id) / "manifest.json"
    return Response(path.read_bytes(), media_type="application/json")


@router.get("/sessions/{session_id}/verify")
async def verify_page(request: Request, session_id: str, principal: Annotated[Principal, Depends(CLERK)]):
    portal = portal_of(request)
    summary = portal.court.summary(session_id)
    checks = await run_in_threadpool(portal.court.verify, session_id)
    return portal.render("verify.html", principal=principal, s=summary, checks=checks,
                         ok=bool(checks) and all(c.ok for c in checks))


@router.get("/sessions/{session_id}/record")
async def record_page(request: Request, session_id: str, _: Annotated[Principal, Depends(CLERK)]):
    """The printable session record: the one the kiosk wrote, or one built now from the session's log."""
    portal = portal_of(request)
    session_dir = portal.court.store.session_dir(session_id)
    html_path = session_dir / "record" / "session-record.html"
    if html_path.is_file():
        html = html_path.read_text()
    else:
        from ..examination.record import build_record, render_html

        html = await run_in_threadpool(lambda: render_html(build_record(session_dir)))
    return Response(html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": DOCUMENT_CSP})


@router.post("/sessions/{session_id}/retrieve")
async def retrieve_action(request: Request, session_id: str, principal: Annotated[Principal, Depends(CLERK)],
                          purpose: Annotated[str, Form()] = "", order: Annotated[str, Form()] = "",
                          passphrase: Annotated[str, Form()] = ""):
    """Retrieve for a stated purpose under an order: access ledgered first, then an export package
    (the MP4 and everything to check it) to download."""
    from .export import export_session

    portal = portal_of(request)
    try:
        signer = portal.court.clerk(principal.name)
        result = await run_in_threadpool(lambda: export_session(
            portal.court, signer, session_id, purpose=purpose, order=order, passphrase=passphrase or None))
    except ClerkError as exc:
        return _session_page(request, principal, session_id, status=exc.http_status, error=str(exc),
                             form={"purpose": purpose, "order": order})
    return RedirectResponse(f"/clerk/sessions/{session_id}/exports/{result.name}", status_code=303)


@router.post("/sessions/{session_id}/delete")
async def delete_action(request: Request, session_id: str, principal: Annotated[Principal, Depends(CLERK)],
                        order: Annotated[str, Form()] = "", date: Annotated[str, Form()] = "",
                        note: Annotated[str, Form()] = "", confirm: Annotated[str, Form()] = ""):
    """Delete the recording under a court order. Irreversible, so the clerk types the case reference to
    confirm; the deletion statements go on the ledger (signed by the clerk) before any file is removed."""
    from .retention import delete_by_order

    portal = portal_of(request)
    summary = portal.court.summary(session_id)
    form = {"order": order, "date": date, "note": note}
    if confirm.strip() != summary.case_reference:
        return _session_page(request, principal, session_id, status=400, delete_form=form,
                             delete_error=f"type the case reference {summary.case_reference} to confirm the deletion")
    try:
        signer = portal.court.clerk(principal.name)
        await run_in_threadpool(lambda: delete_by_order(portal.court, signer, session_id, order=order,
                                                        date=date.strip() or None, note=note))
    except ClerkError as exc:
        return _session_page(request, principal, session_id, status=exc.http_status, delete_form=form,
                             delete_error=str(exc))
    return RedirectResponse(f"/clerk/sessions/{session_id}", status_code=303)


@router.get("/sessions/{session_id}/exports/{package}")
def export_page(request: Request, session_id: str, package: str, principal: Annotated[Principal, Depends(CLERK)]):
    from .export import export_zip, list_exports

    portal = portal_of(request)
    export_zip(portal.court, session_id, package)  # 404-like error unless it is this session's export
    meta = next(e for e in list_exports(portal.court, session_id) if e["package"] == package)
    summary = portal.court.summary(session_id)
    readme = (portal.court.exports_dir / package / "README.txt")
    return portal.render("exported.html", principal=principal, s=summary, export=meta,
                         readme=readme.read_text() if readme.is_file() else "")


@router.get("/sessions/{session_id}/exports/{package}/download")
def export_download(request: Request, session_id: str, package: str, _: Annotated[Principal, Depends(CLERK)]):
    from .export import export_zip

    path = export_zip(portal_of(request).court, session_id, package)
    return FileResponse(path, media_type="application/zip", filename=path.name)


@router.get("/sessions/{session_id}/exports/{package}/recording.mp4")
def export_recording(request: Request, session_id: str, package: str, _: Annotated[Principal, Depends(CLERK)]):
    from .export import RECORDING, export_zip

    court = portal_of(request).court
    export_zip(court, session_id, package)
    path = court.exports_dir / package / RECORDING
    if not path.is_file():
        raise HTTPException(404, "the package's recording is no longer here")
    return FileResponse(path, media_type="video/mp4")


# ---------------------------------------------------------------- apps


def mount_portal(app: FastAPI, court: Court) -> Portal:
    """Add the clerk portal to `app` (its routes, and clerk sign-ins as a principal source)."""
    portal = Portal(court)
    app.state.clerk = portal
    sources = list(getattr(app.state, PRINCIPAL_SOURCES_ATTR, ()))
    sources.append(portal.principal)
    setattr(app.state, PRINCIPAL_SOURCES_ATTR, sources)
    app.include_router(router)
    check_routes(app.routes)
    return portal


def create_clerk_app(court: Court) -> FastAPI:
    app = FastAPI(title="Testimony kiosk - clerk portal", docs_url=None, redoc_url=None, openapi_url=None)

    install_guard(app, CSP)

    def wants_html(request: Request) -> bool:
        return "text/html" in request.headers.get("accept", "")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if wants_html(request):
            if exc.status_code == 401:
                return RedirectResponse("/clerk/login", status_code=303)
            return app.state.clerk.render("message.html", status=exc.status_code, title="Not available",
                                          message=str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(KioskError)
    async def kiosk_error(request: Request, exc: KioskError):
        if wants_html(request):
            return app.state.clerk.render("message.html", status=exc.http_status, title="Not possible",
                                          message=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.get("/")
    def root(_: Annotated[Principal | None, Depends(PUBLIC)]):
        return RedirectResponse("/clerk", status_code=303)

    mount_portal(app, court)
    return app


@dataclass
class PortalServer:
    app: FastAPI
    base_url: str
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_background_portal(court: Court, host: str = "127.0.0.1", port: int = 0) -> PortalServer:
    """Serve the clerk app on a thread (tests, demos); port 0 picks a free one."""
    from ..web.serve import serve_on_thread

    app, base, server, thread = serve_on_thread(lambda _base: create_clerk_app(court), host, port, "clerk-portal")
    return PortalServer(app, base, server, thread)


def serve(court: Court, host: str, port: int) -> None:
    import uvicorn

    if not court.identity_file:
        log.warning("no court identity configured (clerk.identity_file or --identity): listing and "
                    "verification work, retrieval does not")
    print(f"clerk portal on http://{host}:{port}/clerk (add clerks with `kiosk clerk add-clerk NAME`)")
    uvicorn.run(create_clerk_app(court), host=host, port=port, log_level="warning", access_log=False)
