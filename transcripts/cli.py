"""`kiosk models ...` and `kiosk transcribe ...`: manage vosk models and transcribe a recording offline.

`kiosk transcribe` runs the same resumable loop as the live worker, on a session folder (live kiosk, or
decrypted on the court side) or on one MP4 with the kiosk's track layout (`--start` gives the session
time of its first sample). It resumes from the journal if interrupted, and shows progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from kiosk.config import ROOMS_DIR, load_room, load_settings
from kiosk.errors import ConfigError, KioskError

from . import models as model_store


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("models", help="list, check and install vosk transcription models")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    p = msub.add_parser("list", help="installed models, one per language")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = msub.add_parser("check", help="verify installed models (file hashes) and that every room's language has one")
    p.add_argument("--language", action="append", help="check only this language (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
    p = msub.add_parser("install", help="install a model from a local archive or an https URL, with a pinned SHA-256")
    p.add_argument("source", metavar="ARCHIVE_OR_URL")
    p.add_argument("--sha256", required=True, metavar="HEX", help="the archive's SHA-256 (refused if it differs)")
    p.add_argument("--language", required=True, metavar="LANG", help="language code the model transcribes (en, ko, ...)")
    p.add_argument("--force", action="store_true", help="replace an installed model for this language")
    p.set_defaults(func=cmd_install)
    m.set_defaults(func=lambda args: (m.print_help(), 2)[1])

    t = sub.add_parser("transcribe", help="transcribe a session folder or an exported MP4 offline")
    t.add_argument("path", metavar="SESSION_DIR_OR_MP4", type=Path)
    t.add_argument("--language", help="language of the speech (default: the session's)")
    t.add_argument("--start", type=float, default=0.0,
                   help="MP4 only: session time of the file's first sample (default 0)")
    t.add_argument("--roles", help="MP4 only: comma-separated speaker roles, one per microphone stream")
    t.add_argument("--case-reference", help="MP4 only: case reference for the transcript header")
    t.add_argument("--out", type=Path, help="output folder (default: SESSION_DIR/transcripts, or FILE.transcript/)")
    t.add_argument("--fresh", action="store_true", help="discard earlier progress and start again")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout when done")
    t.set_defaults(func=cmd_transcribe)


# ------------------------------------------------------------------ models


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    found = model_store.list_models(settings)
    if args.json:
        print(json.dumps([m.as_dict() for m in found], indent=1))
        return 0
    if not found:
        print(f"no models installed (models folder: {model_store.models_dir(settings)})")
    for m in found:
        print(f"{m.language:6} {m.name:36} {m.source:28} {m.path}")
    return 0


def _room_languages() -> dict[str, list[str]]:
    needed: dict[str, list[str]] = {}
    for path in sorted(ROOMS_DIR.glob("*.toml")):
        try:
            room = load_room(path)
        except ConfigError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            continue
        needed.setdefault(room.room.language, []).append(room.room.id)
    return needed


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    needed = {lang: [] for lang in args.language} if args.language else _room_languages()
    languages = sorted(set(needed) | (set() if args.language else model_store.installed_languages(settings)))
    report, bad = [], False
    for lang in languages:
        entry: dict = {"language": lang, "rooms": needed.get(lang, [])}
        try:
            info = model_store.find_model(settings, lang)
        except model_store.ModelMissing as exc:
            info, entry["problems"] = None, [exc.reason]
        if info is None:
            entry["state"] = "missing"
            entry["install"] = model_store.install_command(lang)
            bad = True
        else:
            problems, how = model_store.verify(info)
            entry.update(info.as_dict(), verified_by=how, problems=problems,
                         state="ok" if not problems else "damaged")
            bad = bad or bool(problems)
        report.append(entry)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for e in report:
            rooms = f" (rooms: {', '.join(e['rooms'])})" if e["rooms"] else ""
            if e["state"] == "missing":
                print(f"{e['language']}: MISSING{rooms}\n    install with: {e['install']}")
            elif e["state"] == "damaged":
                print(f"{e['language']}: DAMAGED {e['path']}{rooms}")
                for p in e["problems"]:
                    print(f"    {p}")
            else:
                print(f"{e['language']}: ok {e['name']} ({e['verified_by']}){rooms}")
    return 1 if bad else 0


def cmd_install(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    last = [0.0]

    def progress(phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done != total:
            return
        last[0] = now
        pct = f" {100 * done / total:5.1f}%" if total else ""
        print(f"\r{phase}:{pct} {done / 2**20:8.1f} MiB", end="", file=sys.stderr, flush=True)

    info = model_store.install(args.source, args.sha256, args.language, settings, force=args.force, progress=progress)
    print(file=sys.stderr)
    print(f"installed {info.name} for '{info.language}' at {info.path}")
    return 0


# ------------------------------------------------------------------ transcribe


def _progress_printer(json_mode: bool):
    tty = sys.stderr.isatty()

    def show(info: dict) -> None:
        total = info.get("total_audio_seconds") or 0
        pct = f"{min(100.0, 100 * info['audio_seconds'] / total):5.1f}% " if total else ""
        rtf = f" · RTF {info['rtf']:.2f}" if info.get("rtf") else ""
        seg = f"segment {info['done']}/{info['segments']} · " if "segments" in info else ""
        line = (f"transcribe: {pct}{seg}session time {_hms(info['session_time'])} · "
                f"{info['words']} words{rtf}")
        print(("\r" + line + "\x1b[K") if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def _hms(t: float) -> str:
    t = max(0, int(t))
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}"


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .source import FileSource, SessionSource
    from .worker import Transcriber, WorkerBusy, take_lock, transcript_dir, write_pending

    settings = load_settings(args.config)
    path = args.path.resolve()
    if path.is_dir():
        source = SessionSource(path)
        out = args.out or transcript_dir(path)
        if not source.segments():
            raise KioskError(f"{path}: no segments/seg-*.json here; give a session folder or an MP4 file")
    elif path.is_file():
        roles = [r.strip() for r in args.roles.split(",")] if args.roles else None
        try:
            source = FileSource(path, start=args.start, roles=roles, language=args.language,
                                case_reference=args.case_reference)
        except ValueError as exc:
            raise KioskError(str(exc)) from None
        out = args.out or path.with_name(path.stem + ".transcript")
    else:
        raise KioskError(f"{path}: no such session folder or file")
    language = args.language or source.language
    if not language:
        raise KioskError(f"{path}: the recording does not say its language; give --language (e.g. --language ko)")
    try:
        lock = take_lock(out)
    except WorkerBusy as exc:
        raise KioskError(f"{exc}; wait for it to finish (status: {out / 'status.json'})") from None
    try:
        try:
            model = model_store.require_model(settings, language, str(args.path))
        except model_store.ModelMissing as exc:
            write_pending(out, exc)
            raise
        if source.kind == "session":
            gone = [s.index for s in source.segments() if not s.media.exists()]
            if gone and (args.fresh or not (out / "journal.jsonl").exists()):
                raise KioskError(
                    f"{path}: the audio of segment(s) {_ranges(gone)} is not here (sealed and deleted?); "
                    "decrypt the sealed recording and run `kiosk transcribe` on the decrypted copy")
        used = _journal_models(out / "journal.jsonl")
        if used and used[-1] != model.name and not args.fresh:
            raise KioskError(f"{out} was transcribed with {used[-1]}; add --fresh to redo it with {model.name}")
        if args.fresh:
            for name in ("journal.jsonl", "transcript.vtt", "transcript.srt", "transcript.json", "transcript.html"):
                (out / name).unlink(missing_ok=True)
        if not args.verbose:
            logging.getLogger("transcripts").setLevel(logging.WARNING)
        print(f"transcribe: {path.name} · language {language} · model {model.name}", file=sys.stderr)
        t0 = time.monotonic()
        result = Transcriber(source, out, model, progress=_progress_printer(args.json)).run(follow=False)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        result["elapsed_seconds"] = round(time.monotonic() - t0, 1)
    finally:
        lock.close()
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{result['words']} words in {result['out_dir']}: "
              + ", ".join(Path(p).name for p in result["paths"].values()))
    return 0


def _journal_models(path: Path) -> list[str]:
    models = []
    if path.exists():
        for line in path.read_text().splitlines():
            if '"header"' in line:
                try:
                    models.append(json.loads(line)["model"])
                except (ValueError, KeyError):
                    pass
    return models


def _ranges(indexes: list[int]) -> str:
    return ", ".join(str(i) for i in indexes[:10]) + (" ..." if len(indexes) > 10 else "")

