"""Capture + compose + encode + record (+ seal) throughput of the demo room (issue: room station).

Prints one JSON object: frames captured/encoded/dropped, CPU seconds per media second, peak RSS.
Targets at 1280x720 30 fps for 60 s on 2 cores: 0 dropped frames, <= 0.6 CPU-s per media-s.
By default each segment is sealed as it closes (age to a throw-away demo court + ledger), as in a real
room; `--no-seal` measures capture/encode/record alone. Transcription is off (bench/transcribe.py).
    .venv/bin/python bench/capture_encode.py --seconds 60 [--no-seal]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proctree import cpu_between, tree_cpu  # noqa: E402  (bench/ is on sys.path as the script's folder)

from kiosk.config import load_room, load_settings  # noqa: E402
from kiosk.custody.keys import ensure_demo_court  # noqa: E402
from kiosk.station import Station  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--room", default="demo")
    ap.add_argument("--no-seal", action="store_true", help="leave sealing out of the measurement")
    args = ap.parse_args()
    settings = load_settings()
    settings.transcription.enabled = False
    room = load_room(args.room)
    with tempfile.TemporaryDirectory() as tmp:
        settings.storage.data_dir = Path(tmp) / "data"
        settings.storage.max_session_minutes = max(2, int(args.seconds // 60) + 2)
        settings.storage.min_free_mb = 0
        if not args.no_seal:
            ensure_demo_court(settings)  # a throw-away court beside the data dir, as `kiosk demo` does
        station = Station(settings, room, seal=not args.no_seal)
        session = station.create_session("BENCH-1", "Synthetic child", "Bench", room.room.language)
        station.start()
        cpu0, wall0 = tree_cpu(), time.monotonic()
        time.sleep(args.seconds)
        cpu1, wall1 = tree_cpu(), time.monotonic()
        own, children = cpu_between(cpu0, cpu1)
        cameras_read = {c.name: c.frames_read for c in station.pipeline.cameras if hasattr(c, "frames_read")}
        result = station.end()
        station.close()  # reaps the workers, so their peak RSS is known
        stats = station.pipeline.stats
        media_s = wall1 - wall0
        expected = round(media_s * room.video.fps)
        print(json.dumps({
            "bench": "capture_encode",
            "resolution": f"{room.video.width}x{room.video.height}",
            "fps": room.video.fps,
            "media_seconds": round(media_s, 2),
            "frames_expected": expected,
            "frames_encoded": stats.frames_encoded,
            # device cameras count what they read; synthetic ones render each frame on the media clock
            "frames_read_per_camera": cameras_read or "synthetic: one rendered per encoded frame",
            "frames_dropped": stats.frames_dropped,
            "frames_slate": stats.frames_slate,
            "max_lag_s": round(stats.max_lag_s, 3),
            # the kiosk process and its workers (sealing in a child process is part of the cost)
            "cpu_s_per_media_s": round((own + children) / media_s, 3),
            "cpu_s_per_media_s_main": round(own / media_s, 3),
            "cpu_s_per_media_s_workers": round(children / media_s, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "segments": len(list((session.dir / "segments").glob("seg-*.json"))),
            "sealed": not args.no_seal,
            "verified": result.get("seal", {}).get("verified") if not args.no_seal else None,
            "target": {"frames_dropped": 0, "cpu_s_per_media_s": 0.6},
        }))


if __name__ == "__main__":
    main()
