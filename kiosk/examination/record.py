"""The session record: who took part, who could see and hear when, and every question, ruling and break.

Built from the session's own log (events.jsonl, up to the session's end) and the talkback index, so it
can be rebuilt and checked from the sealed log at any time. It is what turns "the defence had no chance
to question the child" into a record showing the chance it had: presence intervals and link quality per
participant, every question with its ruling, wording and fate, objections, breaks, privacy masks,
markers and recording pauses, and a one-paragraph "opportunity to examine" summary per party.

    build_session_record(session_dir) -> RecordFiles   writes record/session-record.{json,html}
    record_facts(files) -> dict                        names and SHA-256s, for the sealed manifest

The output is deterministic (no build time inside): building twice gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import events as ev
from .talkback import read_index

FORMAT = "testimony-kiosk/session-record/v1"
RECORD_DIR = "record"
JSON_NAME = "session-record.json"
HTML_NAME = "session-record.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"

LABELS = {"judge": "Judge", "defence": "Defence", "prosecution": "Prosecution", "observer": "Observer",
          "accused": "Accused", "operator": "Operator"}
PARTIES = ("judge", "defence", "prosecution", "accused")
QUESTIONERS = ("defence", "prosecution")
MIN_GAP_S = 0.5  # shorter interruptions (a stream replaced on reconnect) are not gaps

Interval = tuple[float, float]


@dataclass
class RecordFiles:
    json: Path
    html: Path


# ---------------------------------------------------------------- interval arithmetic


def union(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    out = []
    for a, b in union(xs):
        for c, d in union(ys):
            lo, hi = max(a, c), min(b, d)
            if hi > lo:
                out.append((lo, hi))
    return union(out)


def total(intervals: list[Interval]) -> float:
    return sum(b - a for a, b in union(intervals))


def subtract(window: Interval, intervals: list[Interval]) -> list[Interval]:
    out, start = [], window[0]
    for a, b in union(intervals):
        if b <= start or a >= window[1]:
            continue
        if a > start:
            out.append((start, min(a, window[1])))
        start = max(start, b)
    if start < window[1]:
        out.append((start, window[1]))
    return out


# ---------------------------------------------------------------- formatting


def clock(t: float | None) -> str:
    """Session time as H:MM:SS (tenths shown when the time is not on a whole second)."""
    if t is None:
        return ""
    t = max(0.0, t)
    whole = int(t)
    text = f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    tenth = int(round((t - whole) * 10))
    return f"{text}.{tenth}" if 0 < tenth < 10 else text


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _parse_wall(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


class WallClock:
    """Session time → UTC wall time, anchored at the session's start (or creation)."""

    def __init__(self, anchor: dict | None) -> None:
        self.t0 = anchor["t"] if anchor else 0.0
        self.w0 = _parse_wall(anchor.get("wall", "")) if anchor else None

    def at(self, t: float | None) -> str:
        if t is None or self.w0 is None:
            return ""
        return (self.w0 + dt.timedelta(seconds=t - self.t0)).strftime("%H:%M:%S")


# ---------------------------------------------------------------- reading the log


def read_log(session_dir: Path) -> tuple[list[dict], bool, str]:
    """The session's events up to and including its end (later entries, e.g. viewers closed after the end,
    are not part of the session). Returns (events, ended, sha256 of the lines used)."""
    path = Path(session_dir) / "events.jsonl"
    entries, h, ended = [], hashlib.sha256(), False
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line after a crash
            entries.append(entry)
            h.update(line.encode() + b"\n")
            if entry.get("type") == "session-end":
                ended = True
                break
    return entries, ended, h.hexdigest()


def _recording(events: list[dict], end: float) -> tuple[list[Interval], list[dict]]:
    intervals, pauses, since, paused_at = [], [], None, None
    for e in events:
        kind = e["type"]
        if kind in ("session-start", "session-resume") and since is None:
            since = e["t"]
            if paused_at is not None:
                pauses.append({"from": paused_at, "to": e["t"]})
                paused_at = None
        elif kind in ("session-pause", "session-end") and since is not None:
            intervals.append((since, e["t"]))
            since = None
            if kind == "session-pause":
                paused_at = e["t"]
    if since is not None:
        intervals.append((since, end))
    if paused_at is not None:
        pauses.append({"from": paused_at, "to": end, "until_end": True})
    return intervals, pauses


def _link_summary(samples: list[dict]) -> dict:
    if not samples:
        return {"samples": 0}
    rtt = [s["rtt_ms"] for s in samples if s.get("rtt_ms") is not None]
    loss = [s["loss"] for s in samples if s.get("loss") is not None]
    kbps = [s["kbps"] for s in samples if s.get("kbps") is not None]
    out = {
        "samples": len(samples),
        "rtt_ms_median": round(statistics.median(rtt), 1) if rtt else None,
        "rtt_ms_max": round(max(rtt), 1) if rtt else None,
        "loss_mean": round(statistics.fmean(loss), 4) if loss else None,
        "loss_max": round(max(loss), 4) if loss else None,
        "kbps_median": round(statistics.median(kbps), 1) if kbps else None,
        "kbps_min": round(min(kbps), 1) if kbps else None,
    }
    worst_rtt, worst_loss = out["rtt_ms_max"] or 0, out["loss_max"] or 0
    out["quality"] = "poor" if worst_rtt > 800 or worst_loss > 0.1 else (
        "fair" if worst_rtt > 300 or worst_loss > 0.02 else "good")
    return out


def _participants(events: list[dict], end: float) -> list[dict]:
    people: dict[str, dict] = {}
    open_streams: dict[str, tuple[str, float]] = {}
    links: dict[str, list[dict]] = {}
    for e in events:
        if e["type"] == "link-stats" and e.get("participant"):
            links.setdefault(e["participant"], []).append(e)
        if e["type"] != "presence" or not e.get("participant"):
            continue
        pid = e["participant"]
        p = people.setdefault(pid, {
            "id": pid, "role": e.get("role"), "name": e.get("name"), "joined_at": None, "admitted_at": None,
            "admitted_by": None, "removed_at": None, "removed_by": None, "watching": [], "page_left": [],
        })
        action = e.get("action")
        if action == "join":
            p["joined_at"] = e["t"]
        elif action == "admit" and p["admitted_at"] is None:
            p["admitted_at"], p["admitted_by"] = e["t"], e.get("by")
        elif action == "remove":
            p["removed_at"], p["removed_by"] = e["t"], e.get("by")
        elif action == "leave":
            p["page_left"].append(e["t"])
        elif action == "media-start":
            open_streams[e.get("stream", "")] = (pid, e["t"])
        elif action == "media-stop" and e.get("stream") in open_streams:
            owner, since = open_streams.pop(e["stream"])
            people[owner]["watching"].append([since, e["t"]])
    for owner, since in open_streams.values():
        people[owner]["watching"].append([since, end])
    out = []
    for p in people.values():
        p["watching"] = [list(i) for i in union([tuple(i) for i in p["watching"]])]
        p["watched_seconds"] = round(total([tuple(i) for i in p["watching"]]), 3)
        p["link"] = _link_summary(links.get(p["id"], []))
        out.append(p)
    return sorted(out, key=lambda p: (p["joined_at"] if p["joined_at"] is not None else 0.0))


def _questions(events: list[dict]) -> list[dict]:
    qs: dict[str, dict] = {}
    for e in events:
        if e["type"] != ev.QUESTION:
            continue
        action, qid = e.get("action"), e.get("question")
        if action == "submitted":
            qs[qid] = {"id": qid, "role": e.get("role"), "participant": e.get("participant"), "name": e.get("name"),
                       "text": e.get("text"), "submitted_at": e["t"], "ruling": None, "rephrased": None,
                       "shown_at": None, "asked_at": None, "declined": None, "outcome": "not ruled on"}
            continue
        q = qs.get(qid)
        if q is None:
            continue
        if action in ("allowed", "disallowed"):
            q["ruling"] = {"decision": action, "at": e["t"], "by": e.get("by"),
                           "reason": e.get("reason") if action == "disallowed" else e.get("note")}
            q["rephrased"] = e.get("rephrased") if action == "allowed" else None
            q["outcome"] = "disallowed" if action == "disallowed" else "allowed, not asked"
        elif action == "shown" and q["shown_at"] is None:
            q["shown_at"] = e["t"]
        elif action == "asked":
            q["asked_at"], q["outcome"] = e["t"], "asked"
            q["asked_by"] = e.get("by")
        elif action == "declined":
            q["declined"] = {"at": e["t"], "by": e.get("by"), "reason": e.get("reason")}
            q["outcome"] = "not asked"
    return sorted(qs.values(), key=lambda q: q["submitted_at"])


def _applications(events: list[dict], kind: str, key: str, opened: str) -> list[dict]:
    items: dict[str, dict] = {}
    for e in events:
        if e["type"] != kind:
            continue
        if e.get("action") == opened:
            items[e[key]] = {"id": e[key], "role": e.get("role"), "name": e.get("name"),
                             "text": e.get("text", e.get("reason")), "raised_at": e["t"], "ruling": None}
        elif e.get("action") == "ruled" and e.get(key) in items:
            items[e[key]]["ruling"] = {"decision": e.get("decision"), "at": e["t"], "by": e.get("by"),
                                       "reason": e.get("reason")}
    return sorted(items.values(), key=lambda a: a["raised_at"])


def _breaks(events: list[dict], end: float) -> list[dict]:
    out: dict[str, dict] = {}
    for e in events:
        if e["type"] != ev.BREAK:
            continue
        if e.get("action") == "start":
            out[e["break"]] = {"id": e["break"], "from": e["t"], "to": None, "called_by": e.get("by"),
                               "reason": e.get("reason"), "mode": e.get("mode"), "request": e.get("request"),
                               "ended_by": None}
        elif e.get("action") == "end" and e.get("break") in out:
            out[e["break"]].update({"to": e["t"], "ended_by": e.get("by")})
    for b in out.values():
        if b["to"] is None:
            b["to"], b["ended_by"] = end, "session end"
    return sorted(out.values(), key=lambda b: b["from"])


def _masks(events: list[dict], end: float) -> list[dict]:
    out, current = [], None
    for e in events:
        if e["type"] != ev.PRIVACY_MASK:
            continue
        if current is not None:
            current["to"] = e["t"]
            current["lifted_by"] = e.get("by")
            out.append(current)
            current = None
        if e.get("video") or e.get("audio"):
            current = {"from": e["t"], "to": None, "video": bool(e.get("video")), "audio": bool(e.get("audio")),
                       "recording": e.get("recording"), "by": e.get("by"), "lifted_by": None}
    if current is not None:
        current["to"], current["lifted_by"] = end, "session end"
        out.append(current)
    return out


def _talkback(events: list[dict], session_dir: Path, end: float) -> dict:
    spans, open_since, connected = [], None, []
    for e in events:
        if e["type"] != ev.TALKBACK:
            continue
        action = e.get("action")
        if action == "talk-start":
            open_since = (e["t"], e.get("name"), e.get("spurt"))
        elif action == "talk-stop" and open_since is not None:
            spans.append({"from": open_since[0], "to": e["t"], "name": open_since[1], "spurt": open_since[2],
                          "reason": e.get("reason")})
            open_since = None
        elif action in ("connected", "disconnected"):
            connected.append({"at": e["t"], "action": action, "name": e.get("name")})
    if open_since is not None:
        spans.append({"from": open_since[0], "to": end, "name": open_since[1], "spurt": open_since[2],
                      "reason": "session ended"})
    files = {s["number"]: s for s in read_index(session_dir)}
    for s in spans:
        f = files.get(s["spurt"])
        s["file"] = f["file"] if f else None
        s["sha256"] = f["sha256"] if f else None
        s["seconds_of_audio"] = f["seconds_of_audio"] if f else None
    return {"spurts": spans, "total_seconds": round(sum(s["to"] - s["from"] for s in spans), 3),
            "connections": connected,
            "note": "Talkback reached the interviewer's earpiece only; each spurt is kept as its own audio "
                    "file (Ogg Opus) listed here with its SHA-256."}


def _counsel(events: list[dict], end: float) -> list[Interval]:
    spans, since = [], None
    for e in events:
        if e["type"] != ev.COUNSEL_CHANNEL:
            continue
        if e.get("state") == "available" and since is None:
            since = e["t"]
        elif e.get("state") == "unavailable" and since is not None:
            spans.append((since, e["t"]))
            since = None
    if since is not None:
        spans.append((since, end))
    return spans


# ---------------------------------------------------------------- the summaries


def _gap_text(gap: Interval, recording: list[Interval], wall: WallClock, first_seen: float | None) -> str:
    rec = total(intersect([gap], recording))
    span = gap[1] - gap[0]
    if rec <= 0.05:
        when = "while the interview was paused"
    elif rec >= span - 0.05:
        when = "while recording"
    else:
        when = f"partly while paused ({duration(rec)} of it recorded)"
    if first_seen is None or gap[0] < first_seen <= gap[1] + 0.001:
        when = "before first connecting, " + when if first_seen is not None else "never connected, " + when
    w0, w1 = wall.at(gap[0]), wall.at(gap[1])
    walls = f" ({w0}–{w1} UTC)" if w0 else ""
    return f"{clock(gap[0])}–{clock(gap[1])}{walls} {when}"


def _party_summary(role: str, record: dict, recording: list[Interval], wall: WallClock, end: float) -> dict:
    people = [p for p in record["participants"] if p["role"] == role]
    names = ", ".join(p["name"] for p in people)
    watching = union([tuple(i) for p in people for i in p["watching"]])
    recorded = total(recording)
    seen = total(intersect(watching, recording))
    pct = round(100 * seen / recorded, 1) if recorded > 0 else None
    window = (recording[0][0], end) if recording else (0.0, end)
    first_seen = watching[0][0] if watching else None
    gaps = [g for g in subtract(window, watching) if g[1] - g[0] >= MIN_GAP_S]
    label = LABELS[role]
    parts = []
    if recorded <= 0:
        parts.append(f"{label} ({names}): nothing was recorded in this session.")
    elif pct is None or seen <= 0:
        parts.append(f"{label} ({names}) could not see or hear any of the recorded interview.")
    else:
        parts.append(f"{label} ({names}) could see and hear the interview for {pct}% of the recorded time "
                     f"({duration(seen)} of {duration(recorded)}).")
    if gaps:
        shown = [_gap_text(g, recording, wall, first_seen) for g in gaps[:8]]
        more = f"; and {len(gaps) - 8} more" if len(gaps) > 8 else ""
        parts.append(("Gaps: " if len(gaps) > 1 else "Gap ") + "; ".join(shown) + more + ".")
    elif recorded > 0 and seen > 0:
        parts.append("No gaps.")
    stats = {"role": role, "names": [p["name"] for p in people], "connected_pct": pct,
             "seen_seconds": round(seen, 3), "recorded_seconds": round(recorded, 3),
             "gaps": [{"from": round(a, 3), "to": round(b, 3),
                       "recorded_seconds": round(total(intersect([(a, b)], recording)), 3)} for a, b in gaps]}
    if role in QUESTIONERS:
        qs = [q for q in record["questions"] if q["role"] == role]
        allowed = [q for q in qs if q["ruling"] and q["ruling"]["decision"] == "allowed"]
        counts = {
            "submitted": len(qs), "allowed": len(allowed),
            "rephrased": sum(1 for q in allowed if q["rephrased"]),
            "disallowed": sum(1 for q in qs if q["ruling"] and q["ruling"]["decision"] == "disallowed"),
            "asked": sum(1 for q in qs if q["asked_at"] is not None),
            "declined": sum(1 for q in qs if q["declined"]),
            "not_ruled": sum(1 for q in qs if q["ruling"] is None),
        }
        counts["allowed_not_asked"] = counts["allowed"] - counts["asked"] - counts["declined"]
        text = (f"{counts['submitted']} question{'s' if counts['submitted'] != 1 else ''} submitted, "
                f"{counts['allowed']} allowed"
                + (f" ({counts['rephrased']} rephrased)" if counts["rephrased"] else "")
                + f", {counts['disallowed']} disallowed, {counts['asked']} asked")
        if counts["declined"]:
            text += f", {counts['declined']} not asked by the interviewer (reasons recorded)"
        if counts["allowed_not_asked"]:
            text += f", {counts['allowed_not_asked']} allowed but not yet asked at the end"
        if counts["not_ruled"]:
            text += f", {counts['not_ruled']} not ruled on"
        parts.append(text + ".")
        obj = [o for o in record["objections"] if o["role"] == role]
        if obj:
            sustained = sum(1 for o in obj if o["ruling"] and o["ruling"]["decision"] == "sustained")
            parts.append(f"{len(obj)} objection{'s' if len(obj) != 1 else ''} raised, {sustained} sustained.")
        reqs = [r for r in record["break_requests"] if r["role"] == role]
        if reqs:
            granted = sum(1 for r in reqs if r["ruling"] and r["ruling"]["decision"] == "granted")
            parts.append(f"{len(reqs)} break request{'s' if len(reqs) != 1 else ''}, {granted} granted.")
        stats["questions"] = counts
    if role in ("defence", "accused"):
        channel = record["counsel_channel"]["available"]
        avail = total(intersect([tuple(i) for i in channel], recording))
        other = "the accused" if role == "defence" else "defence counsel"
        if recorded > 0:
            parts.append(f"The private channel with {other} was available for "
                         f"{round(100 * avail / recorded, 1)}% of the recorded time.")
        stats["counsel_channel_pct"] = round(100 * avail / recorded, 1) if recorded > 0 else None
    if role == "judge":
        ruled = sum(1 for q in record["questions"] if q["ruling"])
        tb = record["talkback"]["spurts"]
        parts.append(f"Ruled on {ruled} question{'s' if ruled != 1 else ''}; called "
                     f"{sum(1 for b in record['breaks'] if b['called_by'] and b['called_by'].startswith('judge'))} "
                     f"break(s); spoke to the interviewer by talkback {len(tb)} time{'s' if len(tb) != 1 else ''}"
                     + (f" ({duration(record['talkback']['total_seconds'])} in total)." if tb else "."))
    stats["text"] = " ".join(parts)
    return stats


# ---------------------------------------------------------------- building


def build_record(session_dir: Path) -> dict:
    session_dir = Path(session_dir)
    info = json.loads((session_dir / "session.json").read_text())
    events, ended, digest = read_log(session_dir)
    end = events[-1]["t"] if events else 0.0
    recording, pauses = _recording(events, end)
    anchor = next((e for e in events if e["type"] == "session-start"), events[0] if events else None)
    wall = WallClock(anchor)
    record: dict = {
        "format": FORMAT,
        "session": {
            "id": info.get("id"), "case_reference": info.get("case_reference"),
            "interviewee_pseudonym": info.get("interviewee_pseudonym"), "interviewer": info.get("interviewer"),
            "room": info.get("room_id"), "language": info.get("language"), "created_wall": info.get("created_wall"),
            "clock": info.get("clock", {}), "ended": ended, "end_session_time": end,
        },
        "times": "Times are session time: hours:minutes:seconds since the session was created, on one "
                 "monotonic clock (seconds in the JSON). Wall-clock times are UTC.",
        "recording": {"intervals": [list(i) for i in recording], "recorded_seconds": round(total(recording), 3),
                      "pauses": pauses},
        "participants": _participants(events, end),
        "questions": _questions(events),
        "objections": _applications(events, ev.OBJECTION, "objection", "raised"),
        "break_requests": _applications(events, ev.BREAK_REQUEST, "request", "requested"),
        "breaks": _breaks(events, end),
        "break_modes": [{"at": e["t"], "mode": e.get("mode"), "by": e.get("by")}
                        for e in events if e["type"] == ev.BREAK_MODE],
        "masks": _masks(events, end),
        "markers": [{"at": e["t"], "label": e.get("label"), "by": e.get("by")} for e in events if e["type"] == "marker"],
        "talkback": _talkback(events, session_dir, end),
        "counsel_channel": {
            "available": [list(i) for i in _counsel(events, end)],
            "note": "Only the availability of the private defence–accused channel is recorded; its content "
                    "was relayed in memory and never stored.",
        },
        "source": {"events_file": "events.jsonl", "events_used": len(events), "events_sha256": digest},
    }
    parties = [r for r in PARTIES if any(p["role"] == r for p in record["participants"])]
    record["summaries"] = {r: _party_summary(r, record, recording, wall, end) for r in parties}
    return record


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def render_html(record: dict) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    env.filters["clock"] = clock
    env.filters["duration"] = duration
    anchor = record["session"]["clock"].get("start") or record["session"]["clock"].get("created")
    wall = WallClock({"t": anchor.get("session_time", 0.0), "wall": anchor.get("wall", "")} if anchor else None)
    env.filters["wall"] = wall.at
    env.globals["LABELS"] = LABELS
    return env.get_template("session-record.html").render(r=record)


def build_session_record(session_dir: Path) -> RecordFiles:
    """Write SESSION/record/session-record.json and .html from the session log (idempotent).

    Call it after the session's end is logged and before the session is sealed, so the record is sealed,
    signed and ledgered with the recording."""
    session_dir = Path(session_dir)
    record = build_record(session_dir)
    out = session_dir / RECORD_DIR
    files = RecordFiles(out / JSON_NAME, out / HTML_NAME)
    _write(files.json, (json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode())
    _write(files.html, render_html(record).encode())
    return files


def record_facts(files: RecordFiles, session_dir: Path) -> dict:
    """Names, sizes and SHA-256s of the record files and the talkback spurts, relative to the session dir:
    what the sealed manifest should list so the record is bound to the signature and the ledger."""
    session_dir = Path(session_dir)
    out = []
    paths = [files.json, files.html, *sorted((session_dir / "talkback").glob("*"))]
    for path in paths:
        if path.is_file():
            data = path.read_bytes()
            out.append({"file": str(path.relative_to(session_dir)), "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    return {"format": FORMAT, "files": out}
