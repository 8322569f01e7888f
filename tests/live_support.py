"""Helpers for the web and live tests: a real Station on a small synthetic room, served on loopback,
an operator HTTP client, invite/redeem/admit shortcuts, and headless Chromium (Debian's, never a
downloaded one)."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kiosk.config import load_room, load_settings
from kiosk.station import Station
from kiosk.web.serve import BackgroundServer, start_background_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
OPERATOR, PASSWORD = "op-test", "correct horse battery staple"

# Speech every few seconds on both mics, so the live mix is rarely silent for long.
LIVE_ROOM = """
[room]
id = "liveroom"
name = "Live test room"
language = "en"

[video]
width = {width}
height = {height}
fps = {fps}
layout = "single"

[[cameras]]
name = "room-view"
kind = "synthetic"
scene = "room"

[[microphones]]
name = "interviewer-mic"
role = "interviewer"
kind = "synthetic"
voice = "en-us+m3"

[[microphones]]
name = "witness-mic"
role = "witness"
kind = "synthetic"
voice = "en-us+f4"

[script.en]
repeat_every_s = 5.0
lines = [
  {{ at = 0.2, role = "witness", text = "My favourite colour is blue and I like to swim in the sea." }},
  {{ at = 2.6, role = "interviewer", text = "Thank you. Can you tell me more about the sea?" }},
]
"""


def write_live_room(tmp: Path, width: int = 320, height: int = 240, fps: int = 15) -> Path:
    path = tmp / "liveroom.toml"
    path.write_text(LIVE_ROOM.format(width=width, height=height, fps=fps))
    return path


@dataclass
class LiveRoom:
    station: Station
    server: BackgroundServer
    operator: httpx.Client
    data_dir: Path

    @property
    def base(self) -> str:
        return self.server.base_url

    @property
    def live(self):
        return self.server.ctx.live

    @property
    def session_id(self) -> str:
        return self.station.session.info.id

    def new_session(self, case: str = "TEST-0001") -> dict:
        s = self.station.session
        if s is not None and s.state.value != "ended":
            self.operator.post("/api/session/end").raise_for_status()
        r = self.operator.post("/api/session", json={
            "case_reference": case, "interviewee_pseudonym": "Child T (synthetic)", "interviewer": "Interviewer T",
        })
        r.raise_for_status()
        return r.json()

    def invite(self, role: str = "defence", label: str = "", pre_admit: bool = False) -> str:
        r = self.operator.post("/api/invites", json={"role": role, "label": label or role.capitalize(),
                                                     "pre_admit": pre_admit})
        r.raise_for_status()
        return r.json()["url"]

    def redeem(self, url: str, name: str = "") -> tuple[httpx.Client, str, str]:
        """Redeem like a browser would; returns (client with the viewer cookie, viewer token, participant id)."""
        client = httpx.Client(base_url=self.base)
        r = client.post(url.replace(self.base, ""), data={"name": name})
        assert r.status_code == 303, r.text
        token = client.cookies.get("kiosk_viewer")
        me = client.get("/api/me").json()
        return client, token, me["id"]

    def admit(self, participant_id: str) -> dict:
        r = self.operator.post(f"/api/participants/{participant_id}/admit")
        r.raise_for_status()
        return r.json()

    def remove(self, participant_id: str) -> dict:
        r = self.operator.post(f"/api/participants/{participant_id}/remove")
        r.raise_for_status()
        return r.json()

    def events(self, kind: str | None = None) -> list[dict]:
        lines = (self.station.session.dir / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if kind is None or e["type"] == kind]


@contextmanager
def live_room(tmp: Path, *, fps: int = 15, link_stats_seconds: float = 5.0, session: bool = True):
    if not shutil.which("espeak-ng"):
        pytest.skip("needs espeak-ng (apt-get install espeak-ng)")
    settings = load_settings()
    settings.storage.data_dir = tmp
    settings.storage.min_free_mb = 0
    settings.storage.max_session_minutes = 1
    settings.transcription.enabled = False
    settings.live.link_stats_seconds = link_stats_seconds
    room = load_room(write_live_room(tmp, fps=fps))
    station = Station(settings, room, data_dir=tmp, seal=False)
    server = start_background_server(station)
    server.ctx.operators.add(OPERATOR, PASSWORD)
    operator = httpx.Client(base_url=server.base_url, timeout=30)
    operator.post("/api/login", json={"name": OPERATOR, "password": PASSWORD}).raise_for_status()
    lr = LiveRoom(station, server, operator, tmp)
    try:
        if session:
            lr.new_session()
        yield lr
    finally:
        operator.close()
        server.stop()
        station.close()


@contextmanager
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


# JS run in the page: the viewer's inbound-rtp numbers (None before a peer connection exists)
INBOUND_JS = """async () => {
  const v = window.kiosk && window.kiosk.viewer;
  if (!v || !v.pc) return null;
  const out = {frames: 0, videoPackets: 0, audioPackets: 0, audioLevel: 0, codecs: []};
  const report = await v.pc.getStats();
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') { out.frames = s.framesDecoded || 0; out.videoPackets = s.packetsReceived || 0; }
    if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.audioPackets = s.packetsReceived || 0; out.audioLevel = s.audioLevel || 0; }
    if (s.type === 'codec') out.codecs.push(s.mimeType);
  });
  return out;
}"""


def wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    """The predicate's first truthy value, polled; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s")
