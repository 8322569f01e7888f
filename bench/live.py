"""Live fan-out cost and glass-to-glass latency (issue: live remote participation).

1. Kiosk process CPU (capture + one encode + recorder + web app + N WebRTC senders) with 0, 1, 4 and 8
   viewers. The viewers are aiortc WHEP clients in another process (RTP/RTCP/SRTP and jitter buffer run,
   decoding is switched off there so they do not compete with the kiosk for the 2 cores).
   Target: CPU(8) / CPU(1) <= 1.3 (a viewer costs packetising, never an encode).
2. Glass-to-glass latency to headless Chromium on loopback: the synthetic scene burns a frame-number
   barcode; the viewer page reads it from each displayed frame (requestVideoFrameCallback + canvas) and
   compares the display time with the frame's capture time (session clock: frame n is made at n / fps).
   Target: median <= 250 ms.

    .venv/bin/python bench/live.py [--seconds 20] [--room demo] [--viewers 0,1,4,8] [--latency-seconds 10]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]


# ---------------------------------------------------------------- viewer process (aiortc WHEP clients)


async def run_clients(base: str, session_id: str, tokens: list[str]) -> None:
    import httpx
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.codecs import h264, opus

    # receive like a viewer, but skip decoding: this process must not steal the kiosk's CPU
    h264.H264Decoder.decode = lambda self, encoded_frame: []
    opus.OpusDecoder.decode = lambda self, encoded_frame: []

    peers = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for token in tokens:
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            r = await http.post(f"/whep/{session_id}", content=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            r.raise_for_status()
            await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            peers.append((pc, r.headers["location"], token))
        deadline = time.monotonic() + 20
        while any(pc.connectionState != "connected" for pc, _, _ in peers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        print(json.dumps({"ready": sum(pc.connectionState == "connected" for pc, _, _ in peers)}), flush=True)
        loop = asyncio.get_running_loop()
        while True:  # report until told to stop
            line = await loop.run_in_executor(None, sys.stdin.readline)
            stats = []
            for pc, _, _ in peers:
                report = await pc.getStats()
                got = {s.kind: s.packetsReceived for s in report.values() if s.type == "inbound-rtp"}
                stats.append(got)
            print(json.dumps({"stats": stats}), flush=True)
            if not line or line.strip() == "quit":
                break
        for pc, location, token in peers:
            await http.delete(location, headers={"Authorization": f"Bearer {token}"})
            await pc.close()


# ---------------------------------------------------------------- kiosk side


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def measure_viewers(srv, station, n: int, seconds: float, warmup: float) -> dict:
    import httpx

    live = srv.ctx.live
    tokens = []
    with httpx.Client(base_url=srv.base_url) as http:
        for i in range(n):
            url = srv.invite_url("observer", f"bench viewer {i + 1}", pre_admit=True)
            r = http.post(url.replace(srv.base_url, ""), data={"name": f"bench viewer {i + 1}"})
            assert r.status_code == 303, r.text
            tokens.append(http.cookies.get("kiosk_viewer"))
            http.cookies.clear()
    proc = None
    if n:
        proc = subprocess.Popen([sys.executable, __file__, "client", srv.base_url, station.session.info.id, *tokens],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(proc.stdout.readline())["ready"]
        assert ready == n, f"only {ready} of {n} viewers connected"
    time.sleep(warmup)
    if proc:
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        before = json.loads(proc.stdout.readline())["stats"]
    frames0 = station.pipeline.stats.frames_encoded
    dropped0 = station.pipeline.stats.frames_dropped
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = cpu_seconds(), time.monotonic()
    out = {
        "viewers": n,
        "cpu_s_per_s": round((cpu1 - cpu0) / (wall1 - wall0), 3),
        "frames_encoded": station.pipeline.stats.frames_encoded - frames0,
        "frames_dropped": station.pipeline.stats.frames_dropped - dropped0,
        "peers": len(live.peers.peers()),
    }
    if proc:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        after = json.loads(proc.stdout.readline())["stats"]
        proc.wait(timeout=30)
        rates = [(a.get("video", 0) - b.get("video", 0)) / (wall1 - wall0) for a, b in zip(after, before, strict=True)]
        out["video_packets_per_s_per_viewer"] = [round(r, 1) for r in rates]
    srv.call(live.peers.close_all("bench phase done"))
    return out


LATENCY_JS = """(fps) => new Promise((resolve) => {
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const samples = [];
  window.latencySamples = samples;
  const onFrame = (now, meta) => {
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      canvas.width = w; canvas.height = h;
      ctx.drawImage(video, 0, 0, w, h);
      const cell = Math.max(4, Math.floor(8 * w / 1280));
      const row = ctx.getImageData(0, Math.floor(cell / 2), 20 * cell, 1).data;
      let n = 0;
      for (let bit = 0; bit < 20; bit++) {
        const x = bit * cell + Math.floor(cell / 2);
        const v = (row[4 * x] + row[4 * x + 1] + row[4 * x + 2]) / 3;
        if (v > 127) n |= (1 << bit);
      }
      samples.push([n, performance.timeOrigin + (meta.expectedDisplayTime || now)]);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  resolve(true);
})"""


def measure_latency(srv, station, seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        return {"skipped": "no /usr/bin/chromium"}
    session = station.session
    fps = station.room.video.fps
    url = srv.invite_url("observer", "latency probe", pre_admit=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.click("#join")
        page.wait_for_function("() => { const v = document.getElementById('video'); return v && v.videoWidth > 0; }",
                               timeout=20000)
        time.sleep(2.0)  # let the jitter buffer settle
        page.evaluate(LATENCY_JS, fps)
        time.sleep(seconds)
        samples = page.evaluate("window.latencySamples")
        browser.close()
    wall0 = session.clock.wall0
    latencies = []
    for frame_no, shown_ms in samples:
        captured_ms = (wall0 + frame_no / fps) * 1000
        lat = shown_ms - captured_ms
        if 0 < lat < 5000:  # a misread barcode (e.g. a cell blurred by the encoder) is not a latency
            latencies.append(lat)
    if not latencies:
        return {"frames": len(samples), "error": "no readable frame numbers"}
    latencies.sort()
    return {
        "frames_read": len(samples),
        "frames_used": len(latencies),
        "median_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        "min_ms": round(latencies[0], 1),
        "max_ms": round(latencies[-1], 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        asyncio.run(run_clients(sys.argv[2], sys.argv[3], sys.argv[4:]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--room", default="demo")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement per viewer count")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--viewers", default="0,1,4,8")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    args = ap.parse_args()

    import logging

    from kiosk.config import load_room, load_settings
    from kiosk.station import Station
    from kiosk.web.serve import start_background_server

    logging.basicConfig(level=logging.ERROR)
    settings = load_settings()
    settings.transcription.enabled = False
    room = load_room(args.room)
    with tempfile.TemporaryDirectory() as tmp:
        settings.storage.data_dir = Path(tmp)
        settings.storage.min_free_mb = 0
        settings.storage.max_session_minutes = 10
        station = Station(settings, room, data_dir=Path(tmp), seal=False)
        srv = start_background_server(station)
        try:
            station.create_session("BENCH-LIVE", "Synthetic child", "Bench", room.room.language)
            station.start()
            phases = [measure_viewers(srv, station, int(n), args.seconds, args.warmup)
                      for n in args.viewers.split(",")]
            latency = measure_latency(srv, station, args.latency_seconds) if args.latency_seconds > 0 else {}
        finally:
            srv.stop()
            station.close()
    by_n = {p["viewers"]: p["cpu_s_per_s"] for p in phases}
    result = {
        "bench": "live",
        "resolution": f"{room.video.width}x{room.video.height}",
        "fps": room.video.fps,
        "bitrate_kbps": settings.encoder.video_bitrate_kbps,
        "cores": os.cpu_count(),
        "phases": phases,
        "cpu_ratio_8_to_1": round(by_n[8] / by_n[1], 3) if 8 in by_n and 1 in by_n and by_n[1] else None,
        "latency": latency,
        "target": {"cpu_ratio_8_to_1": 1.3, "latency_median_ms": 250},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
