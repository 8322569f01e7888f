"""The examination's rules without a browser: who may ask, rule, see and mark what; bad input gets a clear
4xx; the privacy mask's packets; the session record's arithmetic (presence gaps, percentages)."""

from __future__ import annotations

import json
import re
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from markupsafe import escape
from websockets.sync.client import connect as ws_connect

from kiosk.examination import events as ev
from kiosk.examination.mask import PrivacyMask, encode_black_gop
from kiosk.examination.questions import MAX_QUESTION_CHARS
from kiosk.examination.record import build_session_record, clock, record_facts
from kiosk.examination.talkback import TalkbackRefused, check_talkback_offer
from kiosk.session import Session, SessionClock

from .conftest import run_kiosk
from .live_support import OPERATOR, live_room

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    with live_room(tmp_path_factory.mktemp("exam-api")) as lr:
        lr.operator.post("/api/session/start").raise_for_status()
        yield lr


@pytest.fixture(scope="module")
def parties(room):
    out = {}
    for role in ("judge", "defence", "prosecution", "observer", "accused"):
        client, token, pid = room.redeem(room.invite(role, pre_admit=True), f"{role.capitalize()} API")
        out[role] = client
        out[f"{role}-token"] = token
    waiting, _t, _pid = room.redeem(room.invite("defence"), "Waiting defence")
    out["waiting"] = waiting
    yield out
    for c in out.values():
        if hasattr(c, "close"):
            c.close()


def detail(r) -> str:
    return r.json()["detail"]


def test_question_input_is_checked_with_clear_reasons(room, parties):
    d = parties["defence"]
    r = d.post("/api/questions", json={"text": ""})
    assert r.status_code == 422 and "empty" in detail(r)
    r = d.post("/api/questions", json={"text": " \n\t "})
    assert r.status_code == 422 and "empty" in detail(r)
    r = d.post("/api/questions", json={"text": "x" * (MAX_QUESTION_CHARS + 1)})
    assert r.status_code == 422 and f"at most {MAX_QUESTION_CHARS}" in detail(r)
    r = d.post("/api/questions", json={"text": ["not", "text"]})
    assert r.status_code == 422 and "must be text" in detail(r)
    r = d.post("/api/questions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    # nothing of the refused attempts reached the log
    assert not [e for e in room.events(ev.QUESTION) if e["action"] == "submitted" and not e["text"].strip()]
    r = d.post("/api/questions", json={"text": "x" * MAX_QUESTION_CHARS})
    assert r.status_code == 201


def test_only_questioning_parties_submit_and_only_the_judge_rules(room, parties):
    for role in ("observer", "accused", "judge"):
        r = parties[role].post("/api/questions", json={"text": "May I ask?"})
        assert r.status_code == 403, role
        assert "defence, prosecution" in detail(r)
    assert room.operator.post("/api/questions", json={"text": "operator?"}).status_code == 403
    r = parties["waiting"].post("/api/questions", json={"text": "let me in"})
    assert r.status_code == 403 and "not been admitted" in detail(r)
    q = parties["defence"].post("/api/questions", json={"text": "Who else was there?"}).json()
    for who in ("defence", "prosecution", "observer", "accused"):
        r = parties[who].post(f"/api/questions/{q['id']}/ruling", json={"decision": "allow"})
        assert r.status_code == 403, who
    r = room.operator.post(f"/api/questions/{q['id']}/ruling", json={"decision": "allow"})
    assert r.status_code == 403
    judge = parties["judge"]
    r = judge.post("/api/questions/Q999/ruling", json={"decision": "allow"})
    assert r.status_code == 404 and "Q999" in detail(r)
    r = judge.post(f"/api/questions/{q['id']}/ruling", json={"decision": "maybe"})
    assert r.status_code == 422 and "allow" in detail(r)
    r = judge.post(f"/api/questions/{q['id']}/ruling", json={"decision": "disallow"})
    assert r.status_code == 422 and "reason" in detail(r)
    r = judge.post(f"/api/questions/{q['id']}/ruling", json={"decision": "allow", "rephrased": "y" * 1001})
    assert r.status_code == 422
    r = judge.post(f"/api/questions/{q['id']}/ruling", json={"decision": "disallow", "reason": "speculative"})
    assert r.status_code == 200 and r.json()["status"] == "disallowed"
    r = judge.post(f"/api/questions/{q['id']}/ruling", json={"decision": "allow"})
    assert r.status_code == 409 and "already" in detail(r)
    # a disallowed question cannot be asked, nor declined; the interviewer never sees it
    assert room.operator.post(f"/api/questions/{q['id']}/asked").status_code == 409
    assert all(x["id"] != q["id"] for x in room.operator.get("/api/questions").json())
    assert room.operator.post("/api/questions/Q999/asked").status_code == 404


def test_pending_questions_are_seen_by_the_judge_and_the_submitting_side_only(room, parties):
    secret = "Did the defence's pending question leak?"
    q = parties["defence"].post("/api/questions", json={"text": secret}).json()
    assert any(x["id"] == q["id"] for x in parties["judge"].get("/api/questions").json())
    assert any(x["id"] == q["id"] for x in parties["defence"].get("/api/questions").json())
    assert all(x["role"] == "prosecution" for x in parties["prosecution"].get("/api/questions").json())
    for who in ("observer", "accused"):
        assert parties[who].get("/api/questions").status_code == 403
        assert "questions" not in parties[who].get("/api/examination").json()
    assert secret not in json.dumps(room.operator.get("/api/questions").json())
    assert parties["waiting"].get("/api/examination").status_code == 403


def test_interviewer_marks_asked_or_declines_with_a_reason(room, parties):
    a = parties["prosecution"].post("/api/questions", json={"text": "What colour was the car?"}).json()
    b = parties["prosecution"].post("/api/questions", json={"text": "Was it raining?"}).json()
    for q in (a, b):
        assert parties["judge"].post(f"/api/questions/{q['id']}/ruling", json={"decision": "allow"}).status_code == 200
    before = room.station.session.now()
    r = room.operator.post(f"/api/questions/{a['id']}/asked")
    after = room.station.session.now()
    assert r.status_code == 200 and before <= r.json()["asked_at"] <= after
    assert parties["judge"].post(f"/api/questions/{a['id']}/asked").status_code == 403
    r = room.operator.post(f"/api/questions/{b['id']}/decline", json={"reason": ""})
    assert r.status_code == 422 and "reason" in detail(r)
    r = room.operator.post(f"/api/questions/{b['id']}/decline", json={"reason": "already answered"})
    assert r.status_code == 200 and r.json()["status"] == "declined"
    assert room.operator.post(f"/api/questions/{b['id']}/asked").status_code == 409
    actions = [(e["question"], e["action"]) for e in room.events(ev.QUESTION) if e["question"] in (a["id"], b["id"])]
    assert (a["id"], "asked") in actions and (b["id"], "declined") in actions


def test_objections_breaks_and_mask_are_ruled_and_logged(room, parties):
    r = parties["defence"].post("/api/objections", json={"text": "Leading question"})
    assert r.status_code == 201
    oid = r.json()["id"]
    assert parties["accused"].post("/api/objections", json={"text": "x"}).status_code == 403
    assert parties["defence"].post("/api/objections", json={"text": ""}).status_code == 422
    assert parties["defence"].post(f"/api/objections/{oid}/ruling", json={"decision": "sustained"}).status_code == 403
    assert parties["judge"].post(f"/api/objections/{oid}/ruling", json={"decision": "granted"}).status_code == 422
    assert parties["judge"].post("/api/break-requests/O1/ruling", json={"decision": "granted"}).status_code == 404
    r = parties["judge"].post(f"/api/objections/{oid}/ruling", json={"decision": "sustained", "reason": "rephrase it"})
    assert r.status_code == 200 and r.json()["status"] == "sustained"

    rid = parties["prosecution"].post("/api/break-requests", json={"reason": "collect questions"}).json()["id"]
    assert parties["judge"].post(f"/api/break-requests/{rid}/ruling", json={"decision": "granted"}).status_code == 200
    state = parties["observer"].get("/api/examination").json()
    assert state["break"]["active"] and state["break"]["request"] == rid
    assert parties["judge"].post("/api/breaks", json={"reason": "again"}).status_code == 409
    assert parties["defence"].post("/api/breaks/end").status_code == 403
    assert room.operator.post("/api/breaks/end").status_code == 200
    assert room.operator.post("/api/breaks/end").status_code == 409
    assert room.operator.post("/api/breaks/mode", json={"mode": "sometimes"}).status_code == 422
    assert parties["judge"].post("/api/breaks/mode", json={"mode": "pause"}).status_code == 403
    # a break in 'pause' mode pauses the recording and its end resumes it
    assert room.operator.post("/api/breaks/mode", json={"mode": "pause"}).status_code == 200
    assert parties["judge"].post("/api/breaks", json={"reason": "the child is tired"}).status_code == 201
    assert room.station.session.state.value == "paused"
    assert parties["judge"].post("/api/breaks/end").status_code == 200
    assert room.station.session.state.value == "recording"
    room.operator.post("/api/breaks/mode", json={"mode": "mark"}).raise_for_status()
    assert any("called" in e["label"] for e in room.events("marker"))

    assert room.operator.post("/api/mask", json={"video": "yes"}).status_code == 422
    assert room.operator.post("/api/mask", json={"video": True, "recording": "maybe"}).status_code == 422
    assert parties["judge"].post("/api/mask", json={"video": True}).status_code == 403
    r = room.operator.post("/api/mask", json={"video": True, "audio": False, "recording": "pause"})
    assert r.status_code == 200 and r.json()["paused_recording"] is True
    assert room.station.session.state.value == "paused"
    assert parties["observer"].get("/api/examination").json()["mask"] == {"video": True, "audio": False}
    room.operator.post("/api/mask", json={"video": False, "audio": False, "recording": "pause"}).raise_for_status()
    assert room.station.session.state.value == "recording"
    masks = room.events(ev.PRIVACY_MASK)
    assert [(m["video"], m["recording"]) for m in masks[-2:]] == [(True, "pause"), (False, "pause")]


def _section(html: str, title: str) -> str:
    """The printable record's section under <h2>title</h2>, up to the next heading."""
    start = html.index(f"<h2>{title}</h2>")
    end = html.find("<h2>", start + 4)
    return html[start:end if end > 0 else len(html)]


def _row(section: str, *needles: str) -> str:
    rows = [r for r in re.findall(r"<tr[^>]*>.*?</tr>", section, re.S) if all(n in r for n in needles)]
    assert len(rows) == 1, f"one row with {needles!r} expected, got {len(rows)}"
    return rows[0]


def test_record_lists_objections_break_requests_breaks_masks_and_markers_with_times_and_reasons(room, parties):
    """Driven through the real API (service, objections, breaks, mask, station markers): each item lands in its
    own section of the session record, at the session time it happened, with its ruling and reason, and the
    printable record shows every party-written text escaped."""
    session = room.station.session
    judge, defence, prosecution, op = parties["judge"], parties["defence"], parties["prosecution"], room.operator
    slack = 0.001  # the log keeps session time to the millisecond

    def timed(call, status=200):
        lo = session.now()
        r = call()
        hi = session.now()
        assert r.status_code == status, r.text
        return r.json(), (lo - slack, hi + slack)

    def within(t, span):
        return t is not None and span[0] <= t <= span[1]

    op.post("/api/breaks/mode", json={"mode": "mark"}).raise_for_status()
    assert session.state.value == "recording"
    texts = {
        "objection": 'Leading <b>question</b> & "suggestive" <script>alert("objection")</script>',
        "overruled": "<i>relevant</i> & allowed to stand",
        "request": "<img src=x onerror=alert(1)> the child needs water",
        "granted": "<u>five</u> minutes",
        "refused": "<em>not now</em> & 'we just had one'",
        "refused-request": "<svg onload=alert(2)> counsel wants a break",
        "marker": '<a href="javascript:alert(3)">note</a> & the child smiled',
    }
    raw = ("<script>alert(", "<img src=x", "<svg onload", '<a href="javascript', "<b>question", "<i>relevant",
           "<u>five", "<em>not now")

    o, o_raised = timed(lambda: defence.post("/api/objections", json={"text": texts["objection"]}), 201)
    o_ruled = timed(lambda: judge.post(f"/api/objections/{o['id']}/ruling",
                                       json={"decision": "overruled", "reason": texts["overruled"]}))[1]
    req, r_raised = timed(lambda: prosecution.post("/api/break-requests", json={"reason": texts["request"]}), 201)
    r_ruled = timed(lambda: judge.post(f"/api/break-requests/{req['id']}/ruling",
                                       json={"decision": "granted", "reason": texts["granted"]}))[1]
    brk = parties["observer"].get("/api/examination").json()["break"]
    assert brk["active"] and brk["request"] == req["id"]
    b_end = timed(lambda: op.post("/api/breaks/end"))[1]
    ref, f_raised = timed(lambda: defence.post("/api/break-requests", json={"reason": texts["refused-request"]}), 201)
    f_ruled = timed(lambda: judge.post(f"/api/break-requests/{ref['id']}/ruling",
                                       json={"decision": "refused", "reason": texts["refused"]}))[1]
    m_on = timed(lambda: op.post("/api/mask", json={"video": True, "audio": True, "recording": "continue"}))[1]
    assert session.state.value == "recording", "recording continues under a 'continue' mask"
    m_off = timed(lambda: op.post("/api/mask", json={"video": False, "audio": False, "recording": "continue"}))[1]
    mark, k_at = timed(lambda: op.post("/api/session/marker", json={"label": texts["marker"]}))

    record = op.get("/session-record.json").json()
    judge_by, op_by = "judge:Judge API", f"operator:{OPERATOR}"

    [obj] = [x for x in record["objections"] if x["id"] == o["id"]]
    assert (obj["role"], obj["name"], obj["text"]) == ("defence", "Defence API", texts["objection"])
    assert obj["raised_at"] == o["raised_at"] and within(obj["raised_at"], o_raised)
    assert obj["ruling"]["decision"] == "overruled" and obj["ruling"]["reason"] == texts["overruled"]
    assert obj["ruling"]["by"] == judge_by and within(obj["ruling"]["at"], o_ruled)

    requests = {x["id"]: x for x in record["break_requests"]}
    granted, refused = requests[req["id"]], requests[ref["id"]]
    assert (granted["role"], granted["name"], granted["text"]) == ("prosecution", "Prosecution API", texts["request"])
    assert granted["raised_at"] == req["raised_at"] and within(granted["raised_at"], r_raised)
    assert granted["ruling"] == {"decision": "granted", "at": granted["ruling"]["at"], "by": judge_by,
                                 "reason": texts["granted"]}
    assert within(granted["ruling"]["at"], r_ruled)
    assert (refused["role"], refused["text"]) == ("defence", texts["refused-request"])
    assert within(refused["raised_at"], f_raised)
    assert refused["ruling"]["decision"] == "refused" and refused["ruling"]["reason"] == texts["refused"]
    assert within(refused["ruling"]["at"], f_ruled)
    assert not [x for x in record["objections"] if x["id"] in (req["id"], ref["id"])], "requests are not objections"

    [b] = [x for x in record["breaks"] if x["id"] == brk["id"]]
    assert (b["request"], b["reason"], b["mode"]) == (req["id"], texts["request"], "mark")
    assert (b["called_by"], b["ended_by"]) == (judge_by, op_by)
    assert b["from"] == brk["started_at"] and within(b["from"], r_ruled) and within(b["to"], b_end)
    assert not [x for x in record["breaks"] if x.get("request") == ref["id"]], "a refused request calls no break"

    masks = [x for x in record["masks"] if within(x["from"], m_on)]
    assert len(masks) == 1
    mask = masks[0]
    assert within(mask["to"], m_off)
    assert (mask["video"], mask["audio"], mask["recording"], mask["by"], mask["lifted_by"]) == (
        True, True, "continue", op_by, op_by)

    markers = {x["label"]: x for x in record["markers"]}
    assert markers[texts["marker"]] == {"at": mark["t"], "label": texts["marker"], "by": op_by}
    assert within(mark["t"], k_at)
    called = markers[f"Break {brk['id']} called: {texts['request']}"]
    assert within(called["at"], r_ruled) and called["by"] == judge_by
    assert within(markers[f"Break {brk['id']} ended"]["at"], b_end)
    # the summaries count them for the party that raised them
    assert "objection" in record["summaries"]["defence"]["text"]
    assert "break request" in record["summaries"]["prosecution"]["text"]

    r = op.get("/session-record")
    assert r.status_code == 200
    page = r.text
    for bad in raw:
        assert bad not in page, f"unescaped {bad!r} in the printable record"
    apps = _section(page, "Objections and break requests")
    row = _row(apps, f"<td>{o['id']}</td>")
    assert str(escape(texts["objection"])) in row and str(escape(texts["overruled"])) in row
    assert "overruled" in row and clock(obj["raised_at"]) in row and clock(obj["ruling"]["at"]) in row
    row = _row(apps, f"<td>{req['id']}</td>")
    assert str(escape(texts["request"])) in row and str(escape(texts["granted"])) in row and "granted" in row
    assert clock(granted["raised_at"]) in row
    row = _row(apps, f"<td>{ref['id']}</td>")
    assert str(escape(texts["refused-request"])) in row and str(escape(texts["refused"])) in row
    row = _row(_section(page, "Breaks"), f"<td>{b['id']}</td>")
    assert str(escape(texts["request"])) in row and clock(b["from"]) in row and clock(b["to"]) in row
    assert str(escape(judge_by)) in row and "kept recording (marker)" in row
    row = _row(_section(page, "Privacy masks"), f'<td class="t">{clock(mask["from"])}</td>',
               f'<td class="t">{clock(mask["to"])}</td>', "picture and sound")
    assert "continued" in row and str(escape(op_by)) in row
    row = _row(_section(page, "Markers"), str(escape(texts["marker"])))
    assert clock(mark["t"]) in row and str(escape(op_by)) in row


def test_talkback_needs_a_judge_and_an_earpiece(room, parties):
    offer = "v=0\r\n"
    for who in ("defence", "observer", "accused"):
        r = parties[who].post("/api/talkback", content=offer, headers={"content-type": "application/sdp"})
        assert r.status_code == 403, who
    r = parties["judge"].post("/api/talkback", content=offer, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = parties["judge"].post("/api/talkback", content=offer, headers={"content-type": "application/sdp"})
    assert r.status_code == 409 and "earpiece" in detail(r)  # this room has none
    r = parties["judge"].post("/api/talkback/talk", json={"on": True})
    assert r.status_code == 409 and "microphone" in detail(r)
    assert parties["judge"].post("/api/talkback/talk", json={"on": "loud"}).status_code == 422
    for bad, why in (("", "empty"), ("hello", "v=0"), ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "one audio")):
        with pytest.raises(TalkbackRefused, match=why):
            check_talkback_offer(bad)


def test_counsel_messages_are_checked_and_limited_to_counsel_roles(room, parties):
    base = room.base.replace("http", "ws") + "/ws"

    def socket(who):
        return ws_connect(base, additional_headers={"Cookie": f"kiosk_viewer={parties[who + '-token']}"})

    with socket("prosecution") as ws:
        ws.recv()  # hello
        ws.send(json.dumps({"type": "counsel", "text": "hello"}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "error" and reply["status"] == 403
    with socket("defence") as ws, socket("accused") as acc:
        ws.recv(), acc.recv()
        time.sleep(0.3)
        ws.send(json.dumps({"type": "counsel", "text": "z" * 2001}))
        reply = next(m for m in (json.loads(ws.recv()) for _ in range(20)) if m["type"] in ("exam-error", "counsel"))
        assert reply["type"] == "exam-error" and reply["status"] == 422 and "too long" in reply["detail"]
        assert "zzz" not in reply["detail"]


# ---------------------------------------------------------------- units: mask packets, record arithmetic


def _decode_h264(packets: list[bytes]) -> list[np.ndarray]:
    ctx = av.CodecContext.create("h264", "r")
    frames = []
    for data in packets:
        frames += [f.to_ndarray(format="gray") for f in ctx.decode(av.Packet(data))]
    return frames


def test_black_picture_decodes_black_and_viewers_resume_only_on_a_keyframe():
    gop = encode_black_gop(320, 240, 15)
    frames = _decode_h264(gop)
    assert len(frames) >= 14 and max(f.mean() for f in frames) < 20

    requests = []
    mask = PrivacyMask(320, 240, 15, request_keyframe=lambda: requests.append(1))
    gate = mask.gate("video")

    def pkt(pts, key=False):
        p = av.Packet(b"\x00\x00\x00\x01real")
        p.pts, p.dts, p.time_base, p.is_keyframe = pts, pts, Fraction(1, 15), key
        return p

    assert bytes(gate(pkt(0, True))) == b"\x00\x00\x00\x01real"
    mask.set(True, True)
    first = gate(pkt(1))
    assert bytes(first) == gop[0] and first.pts == 1 and first.time_base == Fraction(1, 15)
    assert bytes(gate(pkt(2))) == gop[1]
    mask.set(False, True)
    assert requests, "lifting the mask asks the shared encoder for a keyframe"
    assert bytes(gate(pkt(3))) == gop[2], "no real P-frame before a keyframe"
    assert bytes(gate(pkt(4, True))) == b"\x00\x00\x00\x01real"
    audio = mask.gate("audio")
    opus = av.Packet(b"speech")
    opus.pts, opus.time_base = 960, Fraction(1, 48000)
    silent = audio(opus)
    assert bytes(silent) != b"speech" and silent.pts == 960 and len(bytes(silent)) < 10


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_record_shows_a_gap_in_presence_with_its_times_and_the_pause_it_fell_in(tmp_path: Path):
    mono, wall = FakeClock(), FakeClock()
    wall.now = 1_800_000_000.0
    s = Session.create(tmp_path, "r1", "CASE-9", "Child Z", "Interviewer Z", "en",
                       clock=SessionClock(monotonic=mono, wall=wall))

    def at(t):
        mono.now = 1000.0 + t
        wall.now = 1_800_000_000.0 + t

    def presence(t, action, pid="d1", role="defence", name="Defence Z", **kw):
        at(t)
        s.record("presence", action=action, participant=pid, role=role, name=name, **kw)

    presence(1, "join"), presence(1.5, "admit", by="operator:op")
    presence(2, "media-start", stream="s1")
    at(10), s.transition("start")
    presence(100, "leave"), presence(100, "media-stop", stream="s1", reason="page gone")
    at(105), s.transition("pause")
    at(120), s.transition("resume")
    presence(130, "reconnect"), presence(131, "media-start", stream="s2")
    at(140)
    s.record(ev.QUESTION, action="submitted", question="Q1", role="defence", participant="d1", name="Defence Z",
             text="<script>alert(1)</script> Where?")
    at(150)
    s.record(ev.QUESTION, action="allowed", question="Q1", by="judge:J", rephrased="Where were you?", note=None)
    at(160)
    s.record(ev.QUESTION, action="asked", question="Q1", by="operator:op")
    at(170)
    s.record(ev.COUNSEL_CHANNEL, state="available", defence=["Defence Z"], accused=["Accused Z"])
    at(210), s.transition("end")
    presence(211, "media-stop", stream="s2", reason="session ended")  # after the end: not part of it

    files = build_session_record(s.dir)
    record = json.loads(files.json.read_text())
    assert record["recording"]["intervals"] == [[10.0, 105.0], [120.0, 210.0]]
    assert record["recording"]["pauses"] == [{"from": 105.0, "to": 120.0}]
    defence = record["summaries"]["defence"]
    # recorded 185 s, seen 90 (10-100) + 79 (131-210) = 169 s
    assert defence["connected_pct"] == pytest.approx(100 * 169 / 185, abs=0.05)
    assert defence["gaps"] == [{"from": 100.0, "to": 131.0, "recorded_seconds": 16.0}]
    assert "Gap 00:01:40–00:02:11 (" in defence["text"] and "partly while paused" in defence["text"]
    assert "1 question submitted, 1 allowed (1 rephrased), 0 disallowed, 1 asked" in defence["text"]
    assert "private channel with the accused was available for 21.6%" in defence["text"]
    q = record["questions"][0]
    assert (q["submitted_at"], q["ruling"]["at"], q["asked_at"], q["rephrased"]) == (140.0, 150.0, 160.0, "Where were you?")
    html = files.html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Where?" in html and "<script>alert" not in html
    # deterministic: building again gives the same bytes; facts list both files with their hashes
    first = files.json.read_bytes(), files.html.read_bytes()
    again = build_session_record(s.dir)
    assert (again.json.read_bytes(), again.html.read_bytes()) == first
    facts = record_facts(again, s.dir)
    assert {f["file"] for f in facts["files"]} == {"record/session-record.json", "record/session-record.html"}
    # the same from the command line (e.g. after a crash ended the session before the record was written)
    files.json.unlink()
    out = run_kiosk("session-record", str(s.dir), check=True)
    assert json.loads(out.stdout) == facts and files.json.read_bytes() == first[0]
    bad = run_kiosk("session-record", str(tmp_path / "nowhere"))
    assert bad.returncode != 0 and "not a session folder" in bad.stderr


def test_session_record_pages_are_for_the_operator(room, parties):
    r = room.operator.get("/session-record")
    assert r.status_code == 200 and "Opportunity to examine" in r.text
    assert "style-src 'unsafe-inline'" in r.headers["content-security-policy"]
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script runs
    record = room.operator.get("/session-record.json").json()
    assert record["format"] == "testimony-kiosk/session-record/v1" and record["session"]["ended"] is False
    assert {q["id"] for q in record["questions"]} >= {"Q1", "Q2"}
    for who in ("judge", "defence", "observer", "accused"):
        assert parties[who].get("/session-record").status_code == 403
        assert parties[who].get("/session-record.json").status_code == 403
