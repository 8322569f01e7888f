"""`kiosk session-record SESSION_DIR`: (re)build a session's record from its log, e.g. after a crash that
ended the session before the record was written, and print the files with their SHA-256s."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import SessionNotFound


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("session-record", help="build a session's record (JSON + printable HTML) from its event log")
    p.add_argument("session_dir", type=Path, help="the session's folder (DATA/sessions/<id>)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .record import build_session_record, record_facts

    session_dir = args.session_dir.resolve()
    if not (session_dir / "session.json").is_file() or not (session_dir / "events.jsonl").is_file():
        raise SessionNotFound(f"{session_dir}: not a session folder (needs session.json and events.jsonl)")
    files = build_session_record(session_dir)
    print(json.dumps(record_facts(files, session_dir), indent=2))
    return 0
