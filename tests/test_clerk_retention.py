"""Retention per case type (config), when a recording is due for an order, and that only a clerk's
deletion statement excuses a missing recording: the kiosk's own key cannot delete evidence."""

from __future__ import annotations

import datetime as dt

import pytest

from kiosk.clerk.retention import policy_for, retention_status
from kiosk.clerk.store import SessionSummary
from kiosk.config import load_settings
from kiosk.custody.canonical import canonical_json
from kiosk.custody.keys import kiosk_signer
from kiosk.custody.statement import make_statement
from kiosk.custody.verify import verify_session
from kiosk.errors import ConfigError

from .clerk_support import court_copy, open_court

POLICIES = """
[clerk.retention.default]
until_order = true
[clerk.retention.child-protection]
match = ["CP-*", "CHILD-*"]
keep_years = 25
[clerk.retention.demo]
match = ["DEMO-*"]
until = 2030-01-01
"""


def _summary(case: str, date: str) -> SessionSummary:
    return SessionSummary(id="s", case_reference=case, room="r", date=date, created_wall=f"{date}T10:00:00Z",
                          pseudonym="Child A (synthetic)", language="en", segments=1, duration_s=1.0,
                          transcript="complete", state="sealed", states=["sealed"])


def test_a_policy_per_case_type_says_when_a_recording_is_due(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_text(POLICIES)
    settings = load_settings(path)
    assert policy_for(settings, "cp-2027-0001")[0] == "child-protection"
    assert policy_for(settings, "DEMO-0001")[0] == "demo"
    assert policy_for(settings, "TRAF-2027-3")[0] == "default"
    today = dt.date(2040, 6, 1)
    cp = retention_status(settings, _summary("CP-2027-0001", "2016-02-29"), today)
    assert cp["keep_until"] == "2041-02-28" and not cp["due"]
    assert retention_status(settings, _summary("CP-1", "2010-01-01"), today)["due"]
    demo = retention_status(settings, _summary("DEMO-1", "2027-01-01"), today)
    assert demo["keep_until"] == "2030-01-01" and demo["due"] and "due for an order" in demo["text"]
    other = retention_status(settings, _summary("TRAF-9", "1990-01-01"), today)
    assert other["keep_until"] is None and not other["due"] and other["rule"] == "keep until a court order"


@pytest.mark.parametrize("body, key", [
    ("[clerk.retention.x]\nmatch = ['X-*']\nkeep_years = 5\nuntil_order = true\n", "clerk.retention.x"),
    ("[clerk.retention.x]\nmatch = ['X-*']\n", "clerk.retention.x"),
    ("[clerk.retention.x]\nkeep_years = 0\n", "clerk.retention.x.keep_years"),
    ("[clerk]\nidentity = 'x'\n", "clerk.identity"),
])
def test_a_malformed_policy_names_its_key(tmp_path, body, key):
    path = tmp_path / "kiosk.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.key == key and str(path) in str(err.value)


def test_a_deletion_signed_by_the_kiosk_key_does_not_excuse_a_missing_segment(tmp_path_factory):
    root, sid = court_copy(tmp_path_factory, "clerk-kiosk-delete")
    court = open_court(root, with_clerk=False)
    try:
        session_dir = court.store.session_dir(sid)
        kiosk = kiosk_signer(root / "data", "kiosk-demo")
        entry = court.ledger.append(make_statement(kiosk, "deleted-by-order", {
            "subject": f"{sid}/seg-000002", "session": sid, "order": "FAKE-1", "date": "2027-01-01"}))
        bundle = court.ledger.bundle(entry.index)
        (session_dir / "proofs" / "deleted-by-order-seg-000002.json").write_bytes(canonical_json(bundle))
        (session_dir / "sealed" / "seg-000002.mp4.age").unlink()
        checks = {c.item: c for c in verify_session(session_dir, ledger_keys=court.ledger_keys)}
        seg2 = checks["segment 2"]
        assert not seg2.ok and seg2.status == "failed"
        assert "kiosk:kiosk-demo was not enrolled as a clerk" in seg2.detail
        # listing still works, and shows the session as sealed, not deleted
        found = court.search(case="DEMO")
        assert [s.id for s in found] == [sid] and found[0].deleted is None
    finally:
        court.close()


def test_search_by_case_date_room_and_state_including_transcript_pending(tmp_path_factory):
    import json

    from kiosk.clerk.errors import ClerkError

    root, sid = court_copy(tmp_path_factory, "clerk-search")
    court = open_court(root, with_clerk=False)
    try:
        s = court.summary(sid)
        ids = lambda **kw: [x.id for x in court.search(**kw)]  # noqa: E731
        assert ids(state="sealed") == [sid] and ids(state="transcript-pending") == []
        assert ids(case=s.case_reference.lower()) == [sid] and ids(case="NO-SUCH-*") == []
        assert ids(date=s.date) == [sid] and ids(date=s.date[:7]) == [sid] and ids(date="1999-01-01") == []
        assert ids(room=s.room) == [sid] and ids(room="another-room") == []
        status = root / "data" / "sessions" / sid / "transcripts" / "status.json"
        status.write_text(json.dumps({**json.loads(status.read_text()), "state": "pending"}))
        assert ids(state="transcript-pending") == [sid]
        assert court.summary(sid).state == "transcript-pending"
        with pytest.raises(ClerkError, match="unknown state 'lost'; expected one of"):
            court.search(state="lost")
    finally:
        court.close()
