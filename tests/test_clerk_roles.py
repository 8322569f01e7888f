"""Who may use the clerk portal: only signed-in clerks. With the portal mounted in the room station's
app, an operator or an admitted viewer gets 403 on every clerk route and a clerk gets 403 on the
station's routes (a clerk cannot start a session); the court-side app declares a role on every route
and sends the unauthenticated to sign in."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.routing import APIRoute

from kiosk.clerk.court import Court
from kiosk.clerk.portal import create_clerk_app, mount_portal, router, start_background_portal
from kiosk.config import Settings
from kiosk.live.roles import Role
from kiosk.web.auth import app_routes, declared_roles

from .live_support import live_room

pytestmark = pytest.mark.e2e

CLERK, PASSWORD = "registry-9", "clerk password 123"


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x0", path)


def clerk_routes() -> list[tuple[str, str, frozenset]]:
    out = []
    for path, route in app_routes(router.routes):
        roles = declared_roles(route)
        out.append((sorted(route.methods)[0], path, roles))
    return out


def _court(tmp) -> Court:
    s = Settings()
    s.storage.data_dir = tmp / "court"
    court = Court(s)
    court.add_clerk(CLERK, PASSWORD)
    return court


def test_operator_and_viewer_cannot_reach_clerk_routes_and_the_clerk_cannot_run_the_room(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clerk-roles")
    court = _court(tmp)
    (tmp / "room").mkdir()
    with live_room(tmp / "room") as room:
        mount_portal(room.server.app, court)
        viewer, _token, pid = room.redeem(room.invite("judge"), "Judge T")
        room.admit(pid)
        clerk = httpx.Client(base_url=room.base)
        r = clerk.post("/clerk/login", data={"name": CLERK, "password": PASSWORD})
        assert r.status_code == 303 and clerk.cookies.get("kiosk_clerk")
        try:
            checked = 0
            for method, path, roles in clerk_routes():
                if Role.PUBLIC in roles:
                    continue
                assert roles == frozenset({Role.CLERK}), path
                for who, client in (("operator", room.operator), ("viewer", viewer)):
                    status = client.request(method, concrete(path)).status_code
                    assert status == 403, f"{who} got {status} on {method} {path}"
                    checked += 1
            assert checked >= 20
            assert clerk.get("/clerk").status_code == 200
            # the clerk is known to the room's app, and refused what only an operator may do
            for method, path in (("POST", "/api/session"), ("POST", "/api/session/start"), ("POST", "/api/invites"),
                                 ("GET", "/api/participants"), ("GET", "/console")):
                status = clerk.request(method, path, json={}).status_code
                assert status == 403, f"clerk got {status} on {method} {path}"
            assert room.station.session.info.state.value != "ended"
        finally:
            clerk.close()
            viewer.close()
    court.close()


def test_the_court_side_app_declares_every_route_and_sends_strangers_to_sign_in(tmp_path):
    court = _court(tmp_path)
    app = create_clerk_app(court)
    for path, route in app_routes(app.routes):
        assert isinstance(route, APIRoute) and declared_roles(route), path
    srv = start_background_portal(court)
    try:
        anon = httpx.Client(base_url=srv.base_url)
        for method, path, roles in clerk_routes():
            if Role.PUBLIC not in roles:
                assert anon.request(method, concrete(path)).status_code == 401, path
        page = anon.get("/clerk", headers={"accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == "/clerk/login"
        bad = anon.post("/clerk/login", data={"name": CLERK, "password": "wrong password!"})
        assert bad.status_code == 401 and "not recognised" in bad.text
        # a cross-site form post is refused before it reaches a route
        r = anon.post("/clerk/login", data={"name": CLERK, "password": PASSWORD},
                      headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        anon.close()
    finally:
        srv.stop()
        court.close()
