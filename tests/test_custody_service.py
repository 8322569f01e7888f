"""The ledger as an HTTP service: roles on every route, the client's same interface, a kiosk sealing a
session against a remote ledger, and a client that notices a ledger rewriting its history."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from kiosk.config import Settings
from kiosk.custody.checkpoint import VerifierKey, vkey
from kiosk.custody.fixtures import make_session
from kiosk.custody.keys import demo_court_identity, kiosk_signer
from kiosk.custody.ledger import Ledger
from kiosk.custody.ledger_service import ROUTE_ROLES, LedgerClient, _read_tokens, create_app, ensure_tokens
from kiosk.custody.sealer import Sealer, ensure_enrolled
from kiosk.custody.statement import make_statement
from kiosk.custody.verify import all_ok, failures, verify_ledger, verify_session
from kiosk.errors import KioskError, LedgerConflict, SealError

ORIGIN = "court.example/ledger"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, data, port: int | None = None) -> None:
        client_path, admin_path = ensure_tokens(data)
        self.client_token = _read_tokens(client_path)[0]
        self.admin_token = _read_tokens(admin_path)[0]
        self.ledger = Ledger.open(data, ORIGIN)
        self.app = create_app(self.ledger, [self.client_token], [self.admin_token])
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "ledger service did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.ledger.close()


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path / "ledger-host")
    yield svc
    svc.stop()


def test_every_route_declares_its_role_and_tokens_are_enforced(service):
    declared = {(m, p) for m, p in ROUTE_ROLES}
    served = {(m, r.path) for r in service.app.routes if hasattr(r, "methods") for m in r.methods}
    assert served == declared
    with httpx.Client(base_url=service.url) as http:
        assert http.get("/v1/checkpoint").status_code == 200
        r = http.post("/v1/statements", json={"statements": [{}]})
        assert r.status_code == 401 and "client bearer token" in r.json()["detail"]
        r = http.post("/v1/enrol", json={}, headers={"authorization": f"Bearer {service.client_token}"})
        assert r.status_code == 403
        assert http.get("/v1/entries/0", headers={"authorization": "Bearer wrong"}).status_code == 403
        r = http.post("/v1/statements", json={"statements": "nope"},
                      headers={"authorization": f"Bearer {service.client_token}"})
        assert r.status_code == 400 and "signed statements" in r.json()["detail"]
        r = http.post("/v1/statements", json={"statements": [{"v": 1}]},
                      headers={"authorization": f"Bearer {service.client_token}"})
        assert r.status_code == 409 and "refused statement" in r.json()["detail"]
        assert http.get("/v1/proof/inclusion", params={"index": 5, "size": 1}).status_code == 400


def test_client_has_the_in_process_interface_and_checks_what_it_is_told(service, tmp_path):
    signer = kiosk_signer(tmp_path / "kiosk", "room-3")
    admin = LedgerClient(service.url, token=service.admin_token)
    assert not admin.is_enrolled(signer.actor, signer.public_b64)
    admin.enroll(signer.actor, signer.public_b64)
    client = LedgerClient(service.url, token=service.client_token, expect_vkey=service.ledger.vkey)
    with pytest.raises(LedgerConflict, match="denied"):
        client.enroll("kiosk:x", signer.public_b64)
    entries = client.append_many([make_statement(signer, "accessed", {"n": i}) for i in range(20)])
    assert [e.index for e in entries] == list(range(1, 21))
    again = client.append(make_statement(signer, "segment-sealed", {"subject": "s/1", "n": 1}))
    assert client.append(make_statement(signer, "segment-sealed", {"subject": "s/1", "n": 1})).existing
    assert client.find("segment-sealed:s/1").index == again.index
    assert client.find("segment-sealed:nothing") is None
    assert client.entry(3).statement == service.ledger.entry(3).statement
    assert client.size() == service.ledger.size() == 22
    assert client.bundle(5) == service.ledger.bundle(5)
    impostor = vkey(ORIGIN, kiosk_signer(tmp_path / "impostor", "x").public_raw)
    with pytest.raises(LedgerConflict, match="pinned"):
        LedgerClient(service.url, expect_vkey=impostor).checkpoint()


def test_a_kiosk_seals_a_session_against_the_remote_ledger(service, tmp_path):
    data = tmp_path / "kiosk-data"
    _, recipient = demo_court_identity(data)
    token_file, admin_file = tmp_path / "ledger-token", tmp_path / "ledger-admin-token"
    for path, token in ((token_file, service.client_token), (admin_file, service.admin_token)):
        path.write_text(token + "\n")
        path.chmod(0o600)
    settings = Settings()
    settings.storage.data_dir = data
    settings.custody.ledger_url = service.url
    settings.custody.ledger_token_file = str(token_file)
    settings.custody.ledger_enrol_token_file = str(admin_file)  # the kiosk enrols itself, once
    settings.custody.ledger_vkey = service.ledger.vkey
    session, _ = make_session(data / "sessions", n_segments=3)
    sealer = Sealer(settings, data, recipients=[recipient], isolate=False)
    for i in (1, 2, 3):
        sealer.on_segment_closed(session.dir, i)
    result = sealer.finish_session(session, {"kiosk_id": "kiosk-demo"})
    sealer.close()
    assert result["verified"], result["verify_failures"]
    assert not (data / "ledger").exists(), "a kiosk pointed at a remote ledger keeps no ledger of its own"
    assert service.admin_token not in str(sealer.ledger._http.headers), "the admin token goes with enrolment only"
    checks = verify_session(session.dir, ledger_keys=[VerifierKey.parse(service.ledger.vkey)])
    assert all_ok(checks), failures(checks)
    checks = verify_ledger(service.ledger.path, [service.ledger.verifier_key], ORIGIN)
    assert all_ok(checks), failures(checks)


def test_client_notices_a_ledger_that_rewrote_its_history(tmp_path):
    data = tmp_path / "ledger-host"
    svc = Service(data)
    signer = kiosk_signer(tmp_path / "kiosk", "room-3")
    svc.ledger.enroll(signer.actor, signer.public_b64)
    for i in range(5):
        svc.ledger.append(make_statement(signer, "accessed", {"n": i}))
    snapshot = tmp_path / "snapshot.sqlite"
    svc.ledger._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(svc.ledger.path, snapshot)
    client = LedgerClient(svc.url, token=svc.client_token)
    client.checkpoint()  # the client remembers size 6
    svc.stop()
    # the operator restores an old copy and writes a different history with the same key
    for suffix in ("", "-wal", "-shm"):
        (data / "ledger" / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(snapshot, data / "ledger" / "ledger.sqlite")
    db = Ledger.open(data, ORIGIN)
    db._db.execute("DELETE FROM entries WHERE idx >= 3")
    db._db.execute("DELETE FROM nodes WHERE (idx + 1) << level > 3")
    db._db.execute("DELETE FROM checkpoints")
    db.close()
    svc2 = Service(data)
    try:
        svc2.ledger.append_many([make_statement(signer, "accessed", {"n": f"forged {i}"}) for i in range(5)])
        client._http = httpx.Client(base_url=svc2.url, headers={"authorization": f"Bearer {svc2.client_token}"})
        with pytest.raises(LedgerConflict, match="inconsistent"):
            client.checkpoint()
    finally:
        svc2.stop()


def test_recording_goes_on_while_the_remote_ledger_is_down(tmp_path):
    data = tmp_path / "kiosk-data"
    _, recipient = demo_court_identity(data)
    port = _free_port()
    ledger_host = tmp_path / "ledger-host"
    client_path, admin_path = ensure_tokens(ledger_host)
    token_file = tmp_path / "ledger-token"
    token_file.write_text(_read_tokens(admin_path)[0])
    token_file.chmod(0o600)
    settings = Settings()
    settings.storage.data_dir = data
    settings.custody.ledger_url = f"http://127.0.0.1:{port}"
    settings.custody.ledger_token_file = str(token_file)
    session, _ = make_session(data / "sessions", n_segments=2)
    sealer = Sealer(settings, data, recipients=[recipient], isolate=False)  # ledger down: no error
    for i in (1, 2):
        sealer.on_segment_closed(session.dir, i)
    assert sealer.wait(session.dir, 30)
    assert not list(session.dir.rglob("*.mp4")), "plaintext goes even while the ledger is down"
    assert set(sealer.failures(session.dir)) == {1, 2}
    with pytest.raises(SealError, match="ledger unreachable"):
        sealer.finish_session(session, {"kiosk_id": "kiosk-demo"})
    svc = Service(ledger_host, port=port)
    try:
        reports = sealer.recover()
        assert reports[0].sealed == [1, 2] and not reports[0].failed
        checks = verify_session(session.dir, ledger_keys=[svc.ledger.verifier_key])
        assert all_ok(checks), failures(checks)
    finally:
        sealer.close()
        svc.stop()


def test_ledger_token_files_must_be_private_and_the_admin_token_goes_only_with_enrolment(service, tmp_path):
    from kiosk.custody.sealer import open_ledger

    settings = Settings()
    settings.custody.ledger_url = service.url
    token_file = tmp_path / "token"
    token_file.write_text(service.client_token + "\n")
    token_file.chmod(0o644)
    settings.custody.ledger_token_file = str(token_file)
    with pytest.raises(KioskError, match=r"custody.ledger_token_file: .* is readable by others \(mode 0644\); chmod 600"):
        open_ledger(settings, tmp_path)
    token_file.chmod(0o600)
    settings.custody.ledger_enrol_token_file = str(tmp_path / "missing")
    with pytest.raises(KioskError, match="custody.ledger_enrol_token_file: cannot read"):
        open_ledger(settings, tmp_path)

    signer = kiosk_signer(tmp_path / "kiosk", "room-9")
    settings.custody.ledger_enrol_token_file = ""
    client = open_ledger(settings, tmp_path)
    with pytest.raises(LedgerConflict):  # the client token cannot enrol
        ensure_enrolled(client, signer)
    admin_file = tmp_path / "admin"
    admin_file.write_text(service.admin_token)
    admin_file.chmod(0o600)
    settings.custody.ledger_enrol_token_file = str(admin_file)
    client = open_ledger(settings, tmp_path)
    ensure_enrolled(client, signer)
    assert client.is_enrolled(signer.actor, signer.public_b64)
    assert client.append(make_statement(signer, "accessed", {"subject": "t/1"})).index > 0
