"""Start-up recovery of sessions interrupted by a crash, kill or power cut.

A segment whose index says `closed: false` was being written when the process died. Its fragmented MP4
plays up to the last complete fragment; recovery cuts off the torn fragment in place (no re-encode,
no free space needed), closes the index with the true end time, ends the session, and says so in its event log.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av

from ..session import META_FILE, Session, State
from . import segments as seg_files
from .fragments import truncate_to_complete

log = logging.getLogger("kiosk.recovery")


def close_interrupted(path: Path) -> tuple[int, float]:
    """Cut a segment back to its last whole fragment and count what it holds: (video frames, seconds)."""
    truncate_to_complete(path)
    frames, end = 0, 0.0
    with av.open(str(path)) as src:
        stream = src.streams.video[0]
        for packet in src.demux(stream):
            if packet.dts is None or packet.size == 0:
                continue
            frames += 1
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return frames, end


def recover_session(session_dir: Path) -> dict | None:
    """Close what a dead process left open in one session. Returns a summary, or None if nothing to do."""
    session = Session.load(session_dir)
    open_segments = [s for s in seg_files.list_indexes(session_dir) if not s.closed]
    if session.state is State.ENDED and not open_segments:
        return None
    last_t = max([e.get("t", 0.0) for e in session.events()] + [s.end or s.start for s in
                                                                  seg_files.list_indexes(session_dir)])
    recovered = []
    for seg in open_segments:
        media = seg_files.media_path(session_dir, seg.index)
        frames, seconds = 0, 0.0
        if media.exists() and media.stat().st_size > 0:
            try:
                frames, seconds = close_interrupted(media)
            except (av.error.FFmpegError, OSError) as exc:
                log.error("segment %s unreadable: %s", media.name, exc)
        if frames == 0:
            media.unlink(missing_ok=True)
            seg_files.index_path(session_dir, seg.index).unlink(missing_ok=True)
            recovered.append({"index": seg.index, "frames": 0, "kept": False})
            continue
        seg.video_frames = frames
        seg.audio_samples = round(seconds * seg.sample_rate)
        seg.end = round(seg.start + frames / Fraction(seg.fps), 6) if seg.fps else seg.start + seconds
        seg.end = float(seg.end)
        seg.closed = True
        seg.recovered = True
        seg.bytes = media.stat().st_size
        seg_files.write_index(session_dir, seg)
        last_t = max(last_t, seg.end)
        recovered.append({"index": seg.index, "frames": frames, "end": seg.end, "kept": True})
    summary = {"session": session.info.id, "segments": recovered, "state_before": session.state.value}
    session.record("recovery", at=last_t, segments=recovered, state_before=session.state.value,
                   note="the kiosk stopped unexpectedly; segments were closed up to their last complete fragment")
    if session.state is not State.ENDED:
        session.info.state = State.ENDED
        session.info.clock["end"] = {"recovered": True, "session_time": round(last_t, 3)}
        session._save()
        session.record("session-end", at=last_t, state="ended", reason="interrupted; ended by recovery")
    log.warning("recovered session %s: %s", session.info.id, json.dumps(recovered))
    return summary


def recover_sessions(sessions_root: Path) -> list[dict]:
    out = []
    if not sessions_root.is_dir():
        return out
    for d in sorted(sessions_root.iterdir()):
        if (d / META_FILE).exists():
            try:
                summary = recover_session(d)
            except Exception:  # noqa: BLE001 - one broken session must not stop the kiosk starting
                log.exception("recovery of %s failed", d.name)
                continue
            if summary:
                out.append(summary)
    return out


def register(sub) -> None:
    p = sub.add_parser("recover", help="close and keep what an interrupted session left (runs at every start too)")
    p.add_argument("--data-dir", type=Path, help="kiosk data dir (default: from settings)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..config import load_settings

    settings = load_settings(args.config)
    data_dir = (args.data_dir or settings.storage.data_dir).resolve()
    found = recover_sessions(data_dir / "sessions")
    for rec in found:
        kept = sum(1 for s in rec["segments"] if s.get("kept"))
        print(f"recovered session {rec['session']} (was {rec['state_before']}): {kept} segment(s) closed and kept")
    if not found:
        print("nothing to recover")
    return 0
