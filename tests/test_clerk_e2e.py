"""End to end on a real demo session: a clerk signs in to the portal in Chromium, finds the session,
verifies it item by item, retrieves it with a purpose and an order, watches it and downloads the export
package; then the package is re-checked with public tools only, exactly as its README says. The CLI does
the same round and then deletes the recording by court order: verification reports the deletion, the
ledger stays consistent and the files are gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .clerk_support import CLERK, CLERK_PASSWORD, court_copy, open_court, readme_commands
from .conftest import run_kiosk
from .live_support import chromium

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PUBLIC_TOOLS = ("sha256sum", "age", "ssh-keygen", "ffprobe", "unzip")


def _need_tools():
    missing = [t for t in PUBLIC_TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def _run_readme(package: Path, identity: Path) -> dict[str, subprocess.CompletedProcess]:
    """Every "$ " line of the README, run by bash from the package folder, as a reader would."""
    env = {**os.environ, "COURT_IDENTITY": str(identity),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = {}
    for cmd in readme_commands((package / "README.txt").read_text()):
        proc = subprocess.run(["bash", "-c", cmd], cwd=package, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"README command failed: {cmd}\n{proc.stdout}\n{proc.stderr}"
        out[cmd] = proc
    return out


def sign_in(page) -> None:
    """On the portal's sign-in page: the demo clerk signs in."""
    page.fill("input[name=name]", CLERK)
    page.fill("input[name=password]", CLERK_PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#signed-in")


def test_portal_round_and_public_tools_recheck_the_export_as_its_readme_says(tmp_path_factory):
    _need_tools()
    from kiosk.clerk.portal import start_background_portal

    root, sid = court_copy(tmp_path_factory, "clerk-portal")
    court = open_court(root)
    srv = start_background_portal(court)
    downloads = tmp_path_factory.mktemp("downloads")
    try:
        with chromium() as browser:
            page = browser.new_page(accept_downloads=True)
            page.goto(f"{srv.base_url}/clerk")
            assert page.url.endswith("/clerk/login")
            sign_in(page)

            # find it: search by (part of) the case reference
            page.fill("#search input[name=case]", "demo-0")
            page.click("#search button[type=submit]")
            row = page.locator(f"tr[data-session='{sid}']")
            assert row.count() == 1
            assert "Child A (synthetic)" in row.inner_text()
            assert page.locator(f"tr[data-session='{sid}'] .state[data-state='sealed']").count() == 1
            page.fill("#search input[name=case]", "NO-SUCH-CASE")
            page.click("#search button[type=submit]")
            page.wait_for_selector("#none")
            page.goto(f"{srv.base_url}/clerk?case=DEMO-0001")
            page.click(f"tr[data-session='{sid}'] a")
            page.wait_for_selector("#session")
            assert page.inner_text("#pseudonym") == "Child A (synthetic) (pseudonym)"
            assert page.locator("#segments tbody tr").count() >= 3

            # verify: every item shown, every item holds
            page.click("#verify-link")
            page.wait_for_selector("#verification")
            assert page.get_attribute("#verification", "data-ok") == "true"
            items = page.locator("#checks tbody tr").all_inner_texts()
            assert any(t.startswith("segment 1") for t in items) and any("manifest signature" in t for t in items)
            assert page.locator("#checks tr[data-status='failed']").count() == 0

            # the session record, printable
            page.goto(f"{srv.base_url}/clerk/sessions/{sid}/record")
            assert "Session record" in page.inner_text("body")

            # retrieve with a purpose and an order: the access goes on the ledger, then the package
            size_before = court.ledger.size()
            page.goto(f"{srv.base_url}/clerk/sessions/{sid}")
            page.click("#retrieve-form button[type=submit]")  # empty: the browser refuses (required fields)
            assert page.url.endswith(f"/clerk/sessions/{sid}")
            page.fill("#retrieve-form input[name=purpose]", "Disclosure to the defence")
            page.fill("#retrieve-form input[name=order]", "ORDER-2027-0042")
            page.click("#retrieve-form button[type=submit]")
            page.wait_for_selector("#export", timeout=60_000)
            package = page.get_attribute("#export", "data-package")
            assert court.ledger.size() == size_before + 2  # accessed, exported
            # it plays in the browser
            deadline = time.monotonic() + 20  # polled from here: the page's CSP forbids wait_for_function's eval
            while page.evaluate("document.querySelector('#recording').readyState") < 1:
                assert time.monotonic() < deadline, "the recording never loaded in the browser"
                page.wait_for_timeout(100)
            duration = page.evaluate("document.querySelector('#recording').duration")
            assert 5.0 < duration < 7.5
            assert page.evaluate("document.querySelector('#recording').videoWidth") == 1280
            with page.expect_download() as info:
                page.click("#download")
            zip_path = downloads / f"{package}.zip"
            info.value.save_as(zip_path)
            zip_sha = page.inner_text("#zip-sha")

            # the custody history now shows the access and the export
            page.goto(f"{srv.base_url}/clerk/sessions/{sid}")
            kinds = [page.get_attribute(f"#history tbody tr:nth-child({i + 1})", "data-type") for i in range(2)]
            assert kinds == ["accessed", "exported"]
            assert page.locator(".state[data-state='exported']").count() == 1
    finally:
        srv.stop()
        court.close()

    # ---- from here on only public tools (and `kiosk verify`, as the README says)
    assert subprocess.run(["sha256sum", str(zip_path)], capture_output=True, text=True,
                          check=True).stdout.split()[0] == zip_sha
    unpacked = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["unzip", "-q", str(zip_path), "-d", str(unpacked)], check=True)
    pkg = unpacked / package
    for name in ("recording.mp4", "README.txt", "verification-report.html", "SHA256SUMS", "session/manifest.json",
                 "session/manifest.json.sig", "keys/kiosk.pub", "keys/ledger.vkey", "transcripts/transcript.vtt",
                 "record/session-record.json", "record/session-record.html"):
        assert (pkg / name).is_file(), name
    results = _run_readme(pkg, root / "demo-court" / "court-identity.txt")
    text = "\n".join(p.stdout for p in results.values())
    assert "Good \"testimony-kiosk-manifest\" signature" in "\n".join(p.stdout + p.stderr for p in results.values())
    assert text.count("plaintext matches the manifest") >= 3
    assert "transcripts/transcript.vtt: as sealed" in text and "record/session-record.json: as sealed" in text
    assert "session/transcripts/transcript.vtt.age: plaintext matches the ledger" in text
    streams = [line.split(":")[0] for line in text.splitlines() if line.startswith("stream ")]
    assert len(streams) >= 4 and streams == [f"stream {i}" for i in range(len(streams))]
    assert "verified" in text.splitlines()
    assert len(readme_commands((pkg / "README.txt").read_text())) >= 7
    # the export statement proves SHA256SUMS, the one file it cannot list
    proof = json.loads((pkg / "session" / "proofs" / "exported-1.json").read_text())
    sums = subprocess.run(["sha256sum", "SHA256SUMS"], cwd=pkg, capture_output=True, text=True, check=True)
    assert proof["statement"]["body"]["sha256sums_sha256"] == sums.stdout.split()[0]
    assert proof["statement"]["body"]["purpose"] == "Disclosure to the defence"
    assert proof["statement"]["actor"] == f"clerk:{CLERK}"
    # and a changed byte is caught by the first of them
    with open(pkg / "recording.mp4", "r+b") as fh:
        fh.seek(5000)
        b = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([b[0] ^ 1]))
    bad = subprocess.run(["bash", "-c", readme_commands((pkg / "README.txt").read_text())[0]], cwd=pkg,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "recording.mp4: FAILED" in bad.stdout


def test_cli_round_then_deletion_by_order(tmp_path_factory):
    root, sid = court_copy(tmp_path_factory, "clerk-cli")
    data = root / "data"
    identity = root / "demo-court" / "court-identity.txt"
    env = {"KIOSK_CLERK_PASSWORD": CLERK_PASSWORD}

    def clerk(*args, ok=True):
        proc = run_kiosk("clerk", *args, "--data-dir", str(data), env=env)
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    clerk("add-clerk", CLERK)
    listed = json.loads(clerk("list", "--case", "DEMO-*", "--json").stdout)
    assert [s["id"] for s in listed] == [sid]
    assert listed[0]["states"] == ["sealed"] and listed[0]["transcript"] == "complete"
    assert listed[0]["retention"]["text"] == "default: keep until a court order"
    assert json.loads(clerk("list", "--case", "CP-", "--json").stdout) == []
    assert json.loads(clerk("list", "--room", "demo", "--date", listed[0]["date"], "--json").stdout)[0]["id"] == sid
    assert json.loads(clerk("verify", sid, "--json").stdout)["ok"] is True

    wrong = run_kiosk("clerk", "export", sid, "--clerk", CLERK, "--purpose", "p", "--order", "o",
                      "--identity", str(identity), "--data-dir", str(data), env={"KIOSK_CLERK_PASSWORD": "nope nope nope"})
    assert wrong.returncode == 2 and "name or password not recognised" in wrong.stderr
    exported = json.loads(clerk("export", sid, "--clerk", CLERK, "--purpose", "Appeal bundle",
                                "--order", "ORDER-2027-7", "--identity", str(identity), "--json").stdout)
    assert Path(exported["zip"]).is_file() and Path(exported["dir"], "recording.mp4").is_file()
    assert json.loads(clerk("list", "--state", "exported", "--json").stdout)[0]["id"] == sid
    shown = json.loads(clerk("show", sid, "--json").stdout)
    assert [h["type"] for h in shown["history"]] == ["accessed", "exported"]

    session_dir = data / "sessions" / sid
    ciphertexts = sorted((session_dir / "sealed").glob("*.mp4.age"))
    transcript_ct = sorted((session_dir / "transcripts").glob("*.age"))
    assert len(ciphertexts) >= 3
    refused = clerk("delete", sid, "--clerk", CLERK, "--order", "ORDER-2027-99", ok=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    deleted = json.loads(clerk("delete", sid, "--clerk", CLERK, "--order", "ORDER-2027-99", "--date", "2027-06-30",
                               "--yes", "--json").stdout)
    assert deleted["order"] == "ORDER-2027-99"

    # the files are gone: ciphertexts, transcript, court copies; the signed manifest and proofs stay
    assert not any(p.exists() for p in ciphertexts)
    assert transcript_ct and not [p for p in (session_dir / "transcripts").iterdir()
                                  if p.suffix == ".age" or p.name.startswith("transcript.")]
    assert not Path(exported["dir"]).exists() and not Path(exported["zip"]).exists()
    for kept in ("manifest.json", "manifest.json.sig", "allowed_signers", "proofs/deleted-by-order-session.json",
                 "record/session-record.json.age", "transcripts/sealed.json"):
        assert (session_dir / kept).is_file(), kept

    # verification reports the deletion, not a missing file; with the kiosk's own `kiosk verify` too
    for proc in (clerk("verify", sid, "--json"), run_kiosk("verify", str(session_dir), "--json")):
        report = json.loads(proc.stdout)
        assert report["ok"] is True
        segs = [c for c in report["checks"] if c["item"].startswith("segment ") and c["item"][8:].isdigit()]
        assert len(segs) == len(ciphertexts)
        assert all(c["status"] == "deleted-by-order" and c["detail"] == "deleted by order ORDER-2027-99 on 2027-06-30"
                   for c in segs)
        transcript = next(c for c in report["checks"] if c["item"] == "transcript (sealed)")
        assert transcript["status"] == "deleted-by-order"
        assert next(c for c in report["checks"] if c["item"] == "record (sealed)")["status"] == "ok"
    # the ledger stays consistent
    ledger = run_kiosk("ledger", "verify", "--data-dir", str(data))
    assert ledger.returncode == 0, ledger.stdout
    listed = json.loads(clerk("list", "--state", "deleted-by-order", "--json").stdout)
    assert listed[0]["deleted"]["order"] == "ORDER-2027-99"
    again = clerk("retrieve", sid, "--clerk", CLERK, "--purpose", "p", "--order", "o", "--identity", str(identity),
                  ok=False)
    assert again.returncode == 2 and "deleted by order ORDER-2027-99" in again.stderr
    other = clerk("delete", sid, "--clerk", CLERK, "--order", "ORDER-OTHER", "--yes", ok=False)
    assert other.returncode == 2 and "already deleted by order ORDER-2027-99" in other.stderr


def test_portal_deletion_by_order_asks_for_the_case_reference_and_leaves_the_proof(tmp_path_factory):
    from kiosk.clerk.portal import start_background_portal

    root, sid = court_copy(tmp_path_factory, "clerk-portal-delete")
    court = open_court(root)
    session_dir = root / "data" / "sessions" / sid
    ciphertexts = sorted((session_dir / "sealed").glob("*.mp4.age"))
    case = court.summary(sid).case_reference
    srv = start_background_portal(court)
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{srv.base_url}/clerk/login")
            sign_in(page)
            page.goto(f"{srv.base_url}/clerk/sessions/{sid}")
            size_before = court.ledger.size()

            # a wrong confirmation deletes nothing and says what to type; the form keeps what was entered
            page.fill("#delete-form input[name=order]", "ORDER-2027-5150")
            page.fill("#delete-form input[name=date]", "2027-07-01")
            page.fill("#delete-form input[name=confirm]", "DEMO-9999")
            page.click("#delete-form button[type=submit]")
            page.wait_for_selector("#delete-error")
            assert case in page.inner_text("#delete-error")
            assert page.input_value("#delete-form input[name=order]") == "ORDER-2027-5150"
            assert court.ledger.size() == size_before and all(p.exists() for p in ciphertexts)

            page.fill("#delete-form input[name=confirm]", case)
            page.click("#delete-form button[type=submit]")
            page.wait_for_selector(".state[data-state='deleted-by-order']")
            assert "by order ORDER-2027-5150 on 2027-07-01" in page.inner_text("#session")
            assert page.locator("#delete-form").count() == 0 and page.locator("#retrieve-form").count() == 0
            assert "deleted-by-order" in [page.get_attribute(f"#history tbody tr:nth-child({i + 1})", "data-type")
                                          for i in range(page.locator("#history tbody tr").count())]

            # verification in the portal reports the deletion, item by item, and still holds
            page.click("#verify-link")
            page.wait_for_selector("#verification")
            assert page.get_attribute("#verification", "data-ok") == "true"
            assert page.locator("#checks tr[data-status='deleted-by-order']").count() >= len(ciphertexts)
    finally:
        srv.stop()
        court.close()
    assert ciphertexts and not any(p.exists() for p in ciphertexts)
    assert (session_dir / "manifest.json").is_file()
    court = open_court(root, with_clerk=False)
    try:
        entry = court.ledger.find(f"deleted-by-order:{sid}")
    finally:
        court.close()
    assert entry is not None and entry.statement["actor"] == f"clerk:{CLERK}"
    assert entry.statement["body"]["order"] == "ORDER-2027-5150" and entry.statement["body"]["date"] == "2027-07-01"
    assert run_kiosk("ledger", "verify", "--data-dir", str(root / "data")).returncode == 0
