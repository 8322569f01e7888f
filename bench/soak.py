"""Soak: the demo room at 720p30 for 20 minutes with 2 live viewers (issue: hardened service).

Targets: 0 dropped frames, RSS growth < 50 MB (after the first minute), and the A/V offset of the sync
probe (white flash + beep every 5 s) the same at the end as at the start (within one frame).

    .venv/bin/python bench/soak.py [--minutes 20] [--viewers 2]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pyrage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiosk.config import load_room, load_settings  # noqa: E402
from kiosk.custody.keys import ensure_demo_court, load_identity  # noqa: E402
from kiosk.custody.seal import ciphertext_path  # noqa: E402
from kiosk.media import segments as seg_files  # noqa: E402
from kiosk.station import Station  # noqa: E402
from kiosk.web.serve import start_background_server  # noqa: E402

FLASH_EVERY_S = 5.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sync_room(tmp: Path) -> Path:
    """The demo room with the sync probe switched on (room camera flashes, interviewer mic beeps)."""
    text = (ROOT / "rooms" / "demo.toml").read_text()
    text = text.replace('scene = "room"', f'scene = "room"\nflash_every_s = {FLASH_EVERY_S}')
    text = text.replace('voice = "en-us+m3"', f'voice = "en-us+m3"\nflash_every_s = {FLASH_EVERY_S}')
    path = tmp / "demo-sync.toml"
    path.write_text(text)
    return path


def segment_media(session_dir: Path, index: int, identity: Path | None, scratch: Path) -> Path:
    """The segment's plaintext: on disk if nothing deleted it yet, else decrypted from its seal as a court
    would (the kiosk itself cannot: the identity is the demo court's, outside the data dir)."""
    media = seg_files.media_path(session_dir, index)
    if media.exists() or identity is None:
        return media
    out = scratch / media.name
    plain = pyrage.decrypt(ciphertext_path(session_dir, index).read_bytes(), [load_identity(identity)])
    out.write_bytes(plain)
    return out


def av_offsets(session_dir: Path, segs: list[seg_files.SegmentIndex], fps: int,
               identity: Path | None, scratch: Path) -> list[float]:
    """Beep time minus flash time (s) for every probe in these segments."""
    offsets = []
    for seg in segs:
        media = segment_media(session_dir, seg.index, identity, scratch)
        flashes, pcm, t0 = [], [], None
        with av.open(str(media)) as c:
            for frame in c.decode(video=0):
                img = frame.to_ndarray(format="gray")
                if img[: img.shape[0] // 3, : img.shape[1] // 3].mean() > 240:
                    flashes.append(float(frame.time))
        with av.open(str(media)) as c:
            for frame in c.decode(c.streams[seg_files.FIRST_MIC_STREAM]):
                t0 = float(frame.time) if t0 is None else t0
                pcm.append(frame.to_ndarray().reshape(-1))
        if not pcm:
            continue
        samples = np.concatenate(pcm)
        loud = np.flatnonzero(np.abs(samples) > 0.3)
        beeps, last = [], -(10**9)
        for i in loud:
            if i - last > 0.3 * 48000:
                beeps.append(t0 + i / 48000)
            last = i
        for f in flashes:
            if beeps:
                b = min(beeps, key=lambda x: abs(x - f))
                if abs(b - f) < 0.5:
                    offsets.append(b - f)
    return offsets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--viewers", type=int, default=2)
    ap.add_argument("--no-seal", action="store_true", help="leave sealing (age + ledger per segment) out")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("bench_live", ROOT / "bench" / "live.py")
    bench_live = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_live)

    settings = load_settings()
    settings.transcription.enabled = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        room = load_room(sync_room(tmp_path))
        settings.storage.data_dir = tmp_path / "data"
        settings.storage.min_free_mb = 0
        settings.storage.max_session_minutes = int(args.minutes) + 2
        identity = None if args.no_seal else ensure_demo_court(settings)  # as `kiosk demo` does
        station = Station(settings, room, seal=not args.no_seal)
        srv = start_background_server(station)
        proc = None
        samples = []
        try:
            session = station.create_session("SOAK-1", "Synthetic child", "Bench", "en")
            station.start()
            import httpx

            tokens = []
            with httpx.Client(base_url=srv.base_url) as http:
                for i in range(args.viewers):
                    url = srv.invite_url("observer", f"soak viewer {i + 1}", pre_admit=True)
                    r = http.post(url.replace(srv.base_url, ""), data={"name": f"soak viewer {i + 1}"})
                    assert r.status_code == 303, f"invite refused: {r.status_code}"
                    tokens.append(http.cookies.get("kiosk_viewer"))
                    http.cookies.clear()
            if tokens:
                proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "live.py"), "client", srv.base_url,
                                         session.info.id, *tokens], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
                ready = json.loads(proc.stdout.readline())["ready"]
            else:
                ready = 0
            t_end = time.monotonic() + args.minutes * 60
            t0 = time.monotonic()
            while time.monotonic() < t_end:
                samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
                time.sleep(10)
            viewers_at_end = len(srv.ctx.live.peers.peers())
            if proc:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.stdout.readline()
                proc.wait(timeout=30)
            ended = station.end()
            stats = station.pipeline.stats
            segs = seg_files.list_indexes(session.dir)
            first = av_offsets(session.dir, segs[:3], room.video.fps, identity, tmp_path)
            last = av_offsets(session.dir, segs[-3:], room.video.fps, identity, tmp_path)
        finally:
            srv.stop()
            station.close()
    baseline = [mb for t, mb in samples if t >= 60] or [samples[-1][1]]
    frame = 1 / room.video.fps
    result = {
        "bench": "soak",
        "minutes": args.minutes,
        "resolution": f"{room.video.width}x{room.video.height}",
        "fps": room.video.fps,
        "sealed": not args.no_seal,
        "verified": ended.get("seal", {}).get("verified") if not args.no_seal else None,
        "viewers_connected": ready,
        "viewers_at_end": viewers_at_end,
        "frames_encoded": stats.frames_encoded,
        "frames_dropped": stats.frames_dropped,
        "max_lag_s": round(stats.max_lag_s, 3),
        "rss_mb_start": baseline[0],
        "rss_mb_end": samples[-1][1],
        "rss_growth_mb": round(samples[-1][1] - baseline[0], 1),
        "av_offset_ms_start": round(1000 * statistics.median(first), 2) if first else None,
        "av_offset_ms_end": round(1000 * statistics.median(last), 2) if last else None,
        "av_offset_change_frames": round(abs(statistics.median(last) - statistics.median(first)) / frame, 3)
        if first and last else None,
        "target": {"frames_dropped": 0, "rss_growth_mb": 50, "av_offset_change_frames": 1},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
