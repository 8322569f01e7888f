"""`kiosk verify`: a tamper campaign over every sealed file, deleted and reordered segments, time-span
continuity with and without pauses, the deleted-by-order status, and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from kiosk.cli import main as kiosk_main
from kiosk.config import Settings
from kiosk.custody.canonical import canonical_json
from kiosk.custody.fixtures import make_session
from kiosk.custody.keys import Signer, demo_court_identity, kiosk_signer
from kiosk.custody.ledger import Ledger
from kiosk.custody.sealer import Sealer
from kiosk.custody.statement import make_statement
from kiosk.custody.verify import _continuity_checks, _order_check, all_ok, failures, verify_session
from kiosk.media import segments

ORIGIN = "testimony-kiosk/ledger"


def _seal(data: Path, **session_kw) -> Path:
    _, recipient = demo_court_identity(data)
    settings = Settings()
    settings.storage.data_dir = data
    session, _ = make_session(data / "sessions", **session_kw)
    sealer = Sealer(settings, data, recipients=[recipient], isolate=False)
    result = sealer.finish_session(session, {"kiosk_id": "kiosk-demo", "software": {"version": "test"}})
    sealer.close()
    return Path(result["manifest"]).parent


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Path:
    return _seal(tmp_path_factory.mktemp("kiosk") / "data", n_segments=4, seg_bytes=3000, pause_after=2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _failed(checks) -> list[str]:
    return [c.item for c in checks if not c.ok]


def test_an_untouched_session_verifies_including_its_pause(sealed):
    checks = verify_session(sealed)
    assert all_ok(checks), failures(checks)
    items = {c.item: c for c in checks}
    assert items["continuity 2->3"].ok and "pause" in items["continuity 2->3"].detail
    assert [f"segment {i}" for i in range(1, 5)] == [c.item for c in checks if c.item.startswith("segment ")
                                                     and c.item[8:].isdigit()]


def _flip_in(path: Path, rng: random.Random, region: tuple[int, int] | None = None) -> int:
    data = bytearray(path.read_bytes())
    lo, hi = region or (0, len(data))
    pos = rng.randrange(lo, hi)
    data[pos] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))
    return pos


def _targets(session: Path) -> list[tuple[str, set[str], tuple[int, int] | None]]:
    """(file, acceptable failing item names, byte region or None for anywhere)."""
    out = [(f"sealed/{segments.segment_name(i)}.mp4.age", {f"segment {i}"}, None) for i in range(1, 5)]
    out += [("manifest.json", {"manifest", "manifest signature"}, None),
            ("manifest.json.sig", {"manifest signature"}, None),
            ("manifest.json.age", {"manifest ledger entry"}, None)]
    for proof in sorted((session / "proofs").glob("*.json")):
        name = f"proofs/{proof.name}"
        out.append((name, {f"proof {proof.name}"}, None))
        raw = proof.read_bytes()  # and aimed at the signed checkpoint inside the bundle
        note = json.loads(raw)["checkpoint"]
        start = raw.index(json.dumps(note, ensure_ascii=False).encode()[:40])
        out.append((name, {f"proof {proof.name}"}, (start, start + len(note.encode()))))
    return out


def test_tamper_campaign_one_flipped_byte_anywhere_is_caught_and_named(sealed, tmp_path):
    rng = random.Random(int(os.environ.get("TAMPER_SEED", "2027")))
    trials = 0
    for rel, names, region in _targets(sealed):
        for _ in range(6):
            copy = _copy(sealed, tmp_path / f"trial-{trials}")
            pos = _flip_in(copy / rel, rng, region)
            checks = verify_session(copy)
            failed = _failed(checks)
            assert failed, f"flip at byte {pos} of {rel} went unnoticed"
            assert names & set(failed), f"flip at byte {pos} of {rel}: failing items {failed}, expected one of {names}"
            shutil.rmtree(copy)
            trials += 1
    assert trials >= 80


def test_a_deleted_segment_is_named_missing(sealed, tmp_path):
    copy = _copy(sealed, tmp_path / "s")
    (copy / "sealed" / "seg-000003.mp4.age").unlink()
    checks = verify_session(copy)
    bad = {c.item: c.detail for c in checks if not c.ok}
    assert list(bad) == ["segment 3"] and "missing" in bad["segment 3"]


def test_reordered_segments_are_caught(sealed, tmp_path):
    copy = _copy(sealed, tmp_path / "s")
    a, b = copy / "sealed" / "seg-000001.mp4.age", copy / "sealed" / "seg-000002.mp4.age"
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    assert set(_failed(verify_session(copy))) == {"segment 1", "segment 2"}


def test_a_missing_proof_or_an_unlisted_ciphertext_is_caught(sealed, tmp_path):
    copy = _copy(sealed, tmp_path / "s")
    (copy / "proofs" / "segment-sealed-seg-000004.json").unlink()
    shutil.copy(copy / "sealed" / "seg-000001.mp4.age", copy / "sealed" / "seg-000009.mp4.age")
    checks = verify_session(copy)
    bad = {c.item: c.detail for c in checks if not c.ok}
    assert "no proven ledger entry" in bad["segment 4"]
    assert "file sealed/seg-000009.mp4.age" in bad


def test_pinned_keys_must_match(sealed, tmp_path):
    stranger = kiosk_signer(tmp_path / "other", "kiosk-other")
    checks = verify_session(sealed, kiosk_keys=[stranger.public_raw])
    assert {"kiosk key", "manifest signature"} <= set(_failed(checks))
    data = sealed.parent.parent
    own = kiosk_signer(data, "kiosk-demo")
    with Ledger.open(data, ORIGIN) as led:
        vkey = led.verifier_key
    checks = verify_session(sealed, kiosk_keys=[own.public_raw], ledger_keys=[vkey])
    assert all_ok(checks) and not any(c.status == "not-pinned" for c in checks)


def test_a_gap_without_a_pause_is_caught(tmp_path):
    data = tmp_path / "data"
    _, recipient = demo_court_identity(data)
    session, _ = make_session(data / "sessions", n_segments=3, end=True)
    seg = segments.read_index(segments.index_path(session.dir, 3))
    seg.start += 4.0
    seg.end += 4.0
    segments.write_index(session.dir, seg)
    settings = Settings()
    settings.storage.data_dir = data
    sealer = Sealer(settings, data, recipients=[recipient], isolate=False)
    result = sealer.finish_session(session, {})
    sealer.close()
    assert not result["verified"]
    assert any("continuity 2->3" in f and "no pause" in f for f in result["verify_failures"])


def test_continuity_rules():
    seg = lambda i, s, e: {"index": i, "start": s, "end": e}  # noqa: E731
    ok = _continuity_checks([seg(1, 0, 10), seg(2, 10, 20)], [])
    assert [c.ok for c in ok] == [True]
    overlap = _continuity_checks([seg(1, 0, 10), seg(2, 9.5, 20)], [])
    assert not overlap[0].ok and "overlap" in overlap[0].detail
    pause = [{"t": 10.0, "type": "session-pause"}, {"t": 40.0, "type": "session-resume"}]
    assert all(c.ok for c in _continuity_checks([seg(1, 0, 10), seg(2, 40.02, 50)], pause))
    # a pause that does not cover the gap does not excuse it
    early = [{"t": 3.0, "type": "session-pause"}, {"t": 4.0, "type": "session-resume"}]
    assert not all(c.ok for c in _continuity_checks([seg(1, 0, 10), seg(2, 40, 50)], early))
    assert not _order_check([seg(1, 0, 1), seg(3, 2, 3)], []).ok
    assert not _order_check([seg(2, 0, 1), seg(1, 2, 3)], []).ok
    assert _order_check([seg(1, 0, 1), seg(2, 1, 2)], []).ok


def test_a_segment_deleted_by_court_order_is_reported_as_such(tmp_path):
    data = tmp_path / "data"
    session_dir = _seal(data, n_segments=3, seg_bytes=2000)
    sid = json.loads((session_dir / "manifest.json").read_bytes())["session"]["id"]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    clerk = Signer("clerk:registry-1", Ed25519PrivateKey.generate())
    with Ledger.open(data, ORIGIN) as led:
        enrolled = led.enroll(clerk.actor, clerk.public_b64, "clerk")
        entry = led.append(make_statement(clerk, "deleted-by-order", {
            "subject": f"{sid}/seg-000002", "session": sid, "order": "ORDER-2027-17", "date": "2027-01-02"}))
        bundle = led.bundle(entry.index)
        enrolment = led.bundle(enrolled.index)
    (session_dir / "proofs" / "deleted-by-order-seg-000002.json").write_bytes(canonical_json(bundle))
    (session_dir / "proofs" / "key-enrolled-clerk-registry-1.json").write_bytes(canonical_json(enrolment))
    (session_dir / "sealed" / "seg-000002.mp4.age").unlink()
    checks = verify_session(session_dir)
    assert all_ok(checks), failures(checks)
    seg2 = next(c for c in checks if c.item == "segment 2")
    assert seg2.status == "deleted-by-order"
    assert seg2.detail == "deleted by order ORDER-2027-17 on 2027-01-02"


def test_kiosk_verify_cli_exit_codes_and_json(sealed, tmp_path, capsys):
    assert kiosk_main(["verify", str(sealed)]) == 0
    assert "verified" in capsys.readouterr().out
    copy = _copy(sealed, tmp_path / "s")
    (copy / "sealed" / "seg-000002.mp4.age").write_bytes(b"not the ciphertext")
    assert kiosk_main(["verify", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [c["item"] for c in bad] == ["segment 2"]
    assert set(bad[0]) == {"item", "ok", "detail", "status"}
    assert kiosk_main(["verify", str(tmp_path / "nowhere")]) == 2
    assert kiosk_main(["verify", str(tmp_path)]) == 2
    assert "is not a session directory (no session.json or manifest.json)" in capsys.readouterr().err


def test_an_edited_plain_event_log_or_session_file_beside_the_manifest_is_named(sealed, tmp_path):
    events = (sealed / "events.jsonl").read_bytes().splitlines(keepends=True)
    assert _failed(verify_session(sealed)) == []
    later = _copy(sealed, tmp_path / "later")
    with (later / "events.jsonl").open("ab") as fh:  # logged after sealing: allowed, and said
        fh.write(b'{"t": 99.0, "type": "marker", "note": "after sealing"}\n')
    check = next(c for c in verify_session(later) if c.item == "event log")
    assert check.ok and "1 logged after sealing" in check.detail

    rng = random.Random(7)
    for trial in range(8):
        copy = _copy(sealed, tmp_path / f"events{trial}")
        line = rng.randrange(len(events))
        body = bytearray(events[line])
        body[rng.randrange(len(body) - 1)] ^= 1 << rng.randrange(7)
        (copy / "events.jsonl").write_bytes(b"".join(events[:line] + [bytes(body)] + events[line + 1:]))
        failed = [c for c in verify_session(copy) if not c.ok]
        assert [c.item for c in failed] == ["event log"], (trial, failed)
        assert f"line {line + 1}" in failed[0].detail

    short = _copy(sealed, tmp_path / "short")
    (short / "events.jsonl").write_bytes(b"".join(events[:-1]))
    assert _failed(verify_session(short)) == ["event log"]

    renamed = _copy(sealed, tmp_path / "renamed")
    info = json.loads((renamed / "session.json").read_text())
    info["interviewee_pseudonym"] = "someone else"
    (renamed / "session.json").write_text(json.dumps(info))
    failed = [c for c in verify_session(renamed) if not c.ok]
    assert [c.item for c in failed] == ["session facts"] and "interviewee_pseudonym" in failed[0].detail
