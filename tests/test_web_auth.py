"""Who may do what in the web app: operator accounts, sign-in cookies, invites, and a role declaration
on every route and WebSocket (default deny), checked by enumerating the app's routes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from kiosk.config import load_room, load_settings
from kiosk.live.roles import ALL_ROLES, INVITE_ROLES, Role
from kiosk.web.auth import OperatorStore, app_routes, check_routes, declared_roles, require
from kiosk.web.serve import start_background_server

from .live_support import OPERATOR, PASSWORD, live_room, write_live_room

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    with live_room(tmp_path_factory.mktemp("web-auth")) as lr:
        yield lr


@pytest.fixture(scope="module")
def clients(room):
    """An httpx client per role (every participant admitted), plus a waiting judge and an anonymous one."""
    out = {Role.OPERATOR: room.operator}
    for role in INVITE_ROLES:
        client, _token, pid = room.redeem(room.invite(role.value), f"{role.value} tester")
        room.admit(pid)
        out[role] = client
    waiting, _token, _pid = room.redeem(room.invite("judge"), "waiting judge")
    out["waiting"] = waiting
    out["anonymous"] = httpx.Client(base_url=room.base)
    yield out
    for key, client in out.items():
        if key is not Role.OPERATOR:
            client.close()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x0", path)


def routes(app) -> list[tuple[str, object]]:
    return [(p, r) for p, r in app_routes(app.routes) if isinstance(r, APIRoute | APIWebSocketRoute)]


def ws_status(room, path: str, client: httpx.Client) -> int:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    url = room.base.replace("http://", "ws://") + path
    try:
        with ws_connect(url, additional_headers={"Cookie": cookie} if cookie else {}, open_timeout=5) as ws:
            ws.recv(timeout=5)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_every_route_and_websocket_declares_its_roles(room):
    app = room.server.app
    found = routes(app)
    assert len(found) >= 25
    for path, route in found:
        roles = declared_roles(route)
        assert roles, f"{path} declares no roles"
    # the app itself refuses a route without a declaration, and anything that is not a FastAPI route
    bare = FastAPI()

    @bare.get("/open")
    def open_route():
        return {}

    with pytest.raises(RuntimeError, match="/open"):
        check_routes(bare.routes)
    declared = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @declared.get("/fine", dependencies=[Depends(require(Role.OPERATOR))])
    def fine():
        return {}

    check_routes(declared.routes)  # declared: accepted

    from fastapi.staticfiles import StaticFiles

    declared.mount("/files", StaticFiles(directory=str(REPO)))
    with pytest.raises(RuntimeError, match="files"):
        check_routes(declared.routes)


def test_wrong_role_on_any_route_is_403_and_no_credentials_is_401(room, clients):
    checked = 0
    for path, route in routes(room.server.app):
        roles = declared_roles(route)
        if Role.PUBLIC in roles:
            continue
        url = concrete(path)
        for role in ALL_ROLES:
            if role in roles:
                continue
            client = clients[role]
            if isinstance(route, APIWebSocketRoute):
                status = ws_status(room, url, client)
            else:
                method = sorted(route.methods)[0]
                status = client.request(method, url).status_code
            assert status == 403, f"{role.value} on {path}: {status}"
            checked += 1
        anonymous = clients["anonymous"]
        if isinstance(route, APIWebSocketRoute):
            assert ws_status(room, url, anonymous) == 401
        else:
            method = sorted(route.methods)[0]
            r = anonymous.request(method, url, headers={"Accept": "application/json"})
            assert r.status_code == 401, f"anonymous on {path}: {r.status_code}"
    assert checked >= 30


def test_a_participant_waiting_in_the_lobby_reaches_only_lobby_routes(room, clients):
    waiting = clients["waiting"]
    assert waiting.get("/view").status_code == 200
    assert waiting.get("/api/me").json()["admission"] == "waiting"
    assert waiting.get("/api/participants").status_code == 403  # a judge, but not yet admitted
    r = waiting.post("/api/participants/x0/admit")
    assert r.status_code == 403 and "not been admitted" in r.json()["detail"]


def test_websocket_updates_respect_roles(room, clients):
    def hello(client) -> dict:
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        with ws_connect(room.base.replace("http://", "ws://") + "/ws", additional_headers={"Cookie": cookie}) as ws:
            return json.loads(ws.recv(timeout=5))

    judge = hello(clients[Role.JUDGE])
    assert judge["type"] == "hello" and judge["me"]["admission"] == "admitted" and "participants" in judge
    observer = hello(clients[Role.OBSERVER])
    assert "participants" not in observer  # only the judge and the operator see who is there
    operator = hello(room.operator)
    assert operator["session"]["interviewee"] == "Child T (synthetic)" and "participants" in operator
    # a cross-origin page cannot open the socket with someone's cookie
    cookie = "; ".join(f"{k}={v}" for k, v in room.operator.cookies.items())
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(room.base.replace("http://", "ws://") + "/ws",
                   additional_headers={"Cookie": cookie, "Origin": "http://evil.example"})
    assert refused.value.response.status_code == 403


def test_operator_passwords_are_argon2id_hashes_in_a_private_file(tmp_path):
    store = OperatorStore(tmp_path)
    store.add("alice", "a long enough password")
    data = json.loads(store.path.read_text())
    assert data["operators"]["alice"]["hash"].startswith("$argon2id$")
    assert "a long enough password" not in store.path.read_text()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.verify("alice", "a long enough password")
    assert not store.verify("alice", "a long enough passworD")
    assert not store.verify("mallory", "a long enough password")
    from kiosk.web.auth import AuthError

    with pytest.raises(AuthError, match="too short"):
        store.add("bob", "short")
    with pytest.raises(AuthError, match="operator name"):
        store.add("../etc", "a long enough password")
    with pytest.raises(AuthError, match="exists"):
        store.add("alice", "another long password")


def test_operator_add_command_reads_the_password_from_stdin(tmp_path):
    cmd = [sys.executable, "-m", "kiosk.cli", "operator", "add", "clerk1", "--password-stdin", "--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, input="this is clerk one\n", capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert OperatorStore(tmp_path).verify("clerk1", "this is clerk one")
    assert "this is clerk one" not in proc.stdout + proc.stderr
    proc = subprocess.run(cmd, input="short\n", capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "too short" in proc.stderr


def test_sign_in_cookie_is_httponly_and_samesite_strict_and_failures_are_throttled(room):
    with httpx.Client(base_url=room.base) as c:
        r = c.post("/login", data={"name": OPERATOR, "password": PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/console"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert c.get("/console").status_code == 200
        assert c.post("/logout").status_code == 303
        assert c.get("/api/status").status_code == 401
    with httpx.Client(base_url=room.base) as c:
        r = c.post("/login", data={"name": "nobody", "password": "wrong wrong wrong"})
        assert r.status_code == 401 and "not recognised" in r.text
        for _ in range(5):
            c.post("/api/login", json={"name": "target", "password": "guess guess guess"})
        r = c.post("/api/login", json={"name": "target", "password": "guess guess guess"})
        assert r.status_code == 429


def test_one_time_console_link_signs_in_once(room):
    url = room.server.operator_url("demo")
    path = url.replace(room.base, "")
    with httpx.Client(base_url=room.base) as c:
        assert c.get(path).status_code == 200  # opening the page uses nothing up
        r = c.post(path)
        assert r.status_code == 303 and c.get("/console").status_code == 200
    with httpx.Client(base_url=room.base) as c:
        r = c.post(path)
        assert r.status_code == 410 and "already used" in r.text


def test_cross_origin_writes_with_a_cookie_are_refused(room):
    r = room.operator.post("/api/session/marker", json={"label": "x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.text


def test_invites_keep_only_a_hash_of_the_token(room):
    url = room.invite("observer", "hash check")
    token = url.rsplit("/", 1)[1]
    invite = room.live.invites.find(token)
    assert token not in json.dumps(invite.public()) and token not in repr(invite)
    assert token not in (room.station.session.dir / "events.jsonl").read_text()
    client, viewer_token, _pid = room.redeem(url, "hash check")
    assert viewer_token not in (room.station.session.dir / "events.jsonl").read_text()
    client.close()


def test_api_errors_carry_a_reason(room):
    op = room.operator
    r = op.post("/api/session/resume")
    assert r.status_code == 409 and "cannot resume" in r.json()["detail"]
    r = op.post("/api/session", json={"case_reference": "X", "interviewee_pseudonym": "Y", "interviewer": "Z"})
    assert r.status_code == 409 and "still" in r.json()["detail"]
    r = op.post("/api/session/marker", json={"label": "too early"})
    assert r.status_code == 409 and "running session" in r.json()["detail"]
    r = op.post("/api/invites", json={"role": "witness"})
    assert r.status_code == 422 and "unknown invite role" in r.json()["detail"]
    r = op.post("/api/session/explode")
    assert r.status_code == 422
    r = op.post("/api/participants/nobody/admit")
    assert r.status_code == 404


def test_an_admitted_judge_admits_and_removes_others(room, clients):
    judge = clients[Role.JUDGE]
    _c, _t, pid = room.redeem(room.invite("defence"), "admitted by judge")
    r = judge.post(f"/api/participants/{pid}/admit")
    assert r.status_code == 200 and r.json()["admitted_by"].startswith("judge:")
    r = judge.post(f"/api/participants/{pid}/remove")
    assert r.status_code == 200 and r.json()["admission"] == "removed"
    r = judge.post(f"/api/participants/{pid}/admit")
    assert r.status_code == 409 and "new invite" in r.json()["detail"]
    by = [e["by"] for e in room.events("presence") if e.get("participant") == pid and "by" in e]
    assert by == ["judge:judge tester", "judge:judge tester"]


def test_a_party_of_an_earlier_session_hears_nothing_of_the_next(room, clients):
    """Runs last in this module: it ends the module's session."""
    defence = clients[Role.DEFENCE]
    cookie = "; ".join(f"{k}={v}" for k, v in defence.cookies.items())
    messages = []
    with ws_connect(room.base.replace("http://", "ws://") + "/ws", additional_headers={"Cookie": cookie}) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["session"]["case_reference"] == "TEST-0001"
        room.new_session("TEST-0002")
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=1.5)))
        except TimeoutError:
            pass
    assert any(m["type"] == "ended" for m in messages)
    assert not any("TEST-0002" in json.dumps(m) for m in messages)
    assert defence.get("/api/session").status_code == 401
    assert defence.get("/view").status_code == 401


def test_whep_before_the_first_picture_is_409_with_retry_after(tmp_path):
    """Unit test of the 'not live yet' branch (the real pipeline encodes its first frame within ms)."""
    from kiosk.session import Session

    settings = load_settings()
    room_profile = load_room(write_live_room(tmp_path))
    session = Session.create(tmp_path, "liveroom", "C-1", "Child", "I", "en")
    station = SimpleNamespace(settings=settings, room=room_profile, data_dir=tmp_path, session=session, hub=None,
                              pipeline=SimpleNamespace(stats=SimpleNamespace(frames_encoded=0)),
                              status=lambda: {}, media_running=lambda: False)
    server = start_background_server(station)
    try:
        server.ctx.operators.add("op", "long enough password")
        with httpx.Client(base_url=server.base_url) as client:
            client.post("/api/login", json={"name": "op", "password": "long enough password"}).raise_for_status()
            r = client.post(f"/whep/{session.info.id}", content="v=0\r\n", headers={"Content-Type": "application/sdp"})
            assert r.status_code == 409 and r.headers["retry-after"] == "2"
            assert "starting" in r.json()["detail"]
    finally:
        server.stop()


def test_an_invite_opens_once_even_when_two_browsers_race():
    from concurrent.futures import ThreadPoolExecutor

    from kiosk.live.invites import InviteBook, InviteRefused

    book = InviteBook()
    _invite, token = book.issue("S1", Role.DEFENCE, "race", ttl_minutes=5)

    def attempt(_):
        try:
            book.redeem(token)
            return "in"
        except InviteRefused as exc:
            return exc.reason

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(32)))
    assert outcomes.count("in") == 1 and set(outcomes) == {"in", "used"}


def test_healthz_is_public_and_says_nothing_about_the_case(tmp_path: Path):
    """A monitoring probe needs no account; the answer names devices and resources, never people."""
    from kiosk.station import Station

    settings = load_settings()
    settings.storage.data_dir = tmp_path / "data"
    settings.storage.min_free_mb = 0
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    station = Station(settings, load_room(write_live_room(tmp_path)), seal=False)
    station.create_session("CASE-SECRET-42", "Pseudonym Zebra", "Interviewer Q")
    server = start_background_server(station)
    try:
        r = httpx.get(f"{server.base_url}/healthz")
        assert r.status_code == 200, r.text
        body = r.json()
        names = {i["item"] for i in body["items"]}
        assert {"media", "disk", "clock"} <= names
        assert any(n.startswith("device:") for n in names)
        for secret in ("CASE-SECRET-42", "Zebra", "Interviewer Q"):
            assert secret not in r.text
        station.pipeline._stop.set()  # the media thread dies: recording is at risk
        station.pipeline._thread.join(5)
        r = httpx.get(f"{server.base_url}/healthz")
        assert r.status_code == 503 and r.json()["status"] == "failing"
    finally:
        server.stop()
        station.close()
