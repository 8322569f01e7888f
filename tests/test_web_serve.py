"""`kiosk serve --room`: the real command starts the app a person opens in a browser."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pyrage
import pytest

from .conftest import REPO
from .live_support import write_live_room

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kiosk_serve_starts_the_console_and_prints_a_one_time_link(tmp_path):
    recipient = pyrage.x25519.Identity.generate().to_public()  # the station seals to a court key
    settings = tmp_path / "kiosk.toml"
    settings.write_text(
        "[transcription]\nenabled = false\n[storage]\nmin_free_mb = 0\nmax_session_minutes = 1\n"
        f'[custody]\nrecipients = [{{ name = "court", recipient = "{recipient}" }}]\n'
    )
    room = write_live_room(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiosk.cli", "--config", str(settings), "serve", "--room", str(room),
         "--port", str(port), "--data-dir", str(tmp_path / "data"), "--operator-link"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("one-time console link" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"kiosk serve exited: {proc.wait()} {proc.stderr.read()}")
            lines.append(line)
        link = re.search(r"(http://\S+/login/once/\S+)", "".join(lines)).group(1)
        assert any("no operator accounts yet" in x for x in lines)
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.1)
        with httpx.Client(base_url=base) as c:
            assert c.get("/login").status_code == 200
            assert c.post(link.replace(base, "")).status_code == 303
            page = c.get("/console")
            assert page.status_code == 200 and "Live test room" in page.text
            r = c.post("/api/session", json={"case_reference": "SERVE-1", "interviewee_pseudonym": "Child S",
                                             "interviewer": "I"})
            assert r.status_code == 201, r.text
            assert c.post("/api/session/start").status_code == 200
            time.sleep(1.0)
            status = c.get("/api/status").json()
            assert status["recording"] is True and len(status["devices"]) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # stopping the server ends the session cleanly
    events = next((tmp_path / "data" / "sessions").glob("*/events.jsonl")).read_text()
    assert '"session-end"' in events


def _serve_fails(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "serve", "--room", "demo", "--data-dir", str(tmp_path / "data"), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def test_kiosk_serve_refuses_a_bad_port_a_busy_port_and_bad_tls_files_in_one_line(tmp_path):
    out = _serve_fails(tmp_path, "--port", "70000")
    assert out.returncode == 2 and "port must be 0..65535, got 70000" in out.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        out = _serve_fails(tmp_path, "--port", str(taken))
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in out.stderr
    assert "serving room" not in out.stdout and "Traceback" not in out.stderr
    assert not (tmp_path / "demo-court").exists() and not (tmp_path / "data").exists(), "nothing left behind"

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    out = _serve_fails(tmp_path, "--port", "0", "--tls-cert", str(junk), "--tls-key", str(junk))
    assert out.returncode == 2 and "not a PEM certificate and matching key" in out.stderr
    out = _serve_fails(tmp_path, "--port", "0", "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(junk))
    assert out.returncode == 2 and f"TLS file not found: {tmp_path / 'none.pem'}" in out.stderr
    assert "Traceback" not in out.stderr
