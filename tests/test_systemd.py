"""The service units are valid for systemd once installed (paths filled in as `make install` does)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_units_pass_systemd_analyze_verify(tmp_path: Path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not present on this machine")
    units = sorted((REPO / "systemd").glob("*.service"))
    assert units, "systemd/ must hold the kiosk unit"
    rendered = []
    for unit in units:
        text = unit.read_text().replace("/opt/testimony-kiosk", str(REPO))
        assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
        assert "SystemCallFilter=@system-service" in text and "Restart=on-failure" in text
        target = tmp_path / unit.name
        target.write_text(text)
        rendered.append(str(target))
    kiosk = (REPO / "systemd" / "testimony-kiosk.service").read_text()
    for directive in ("User=testimony-kiosk", "PrivateTmp=yes", "ReadWritePaths=/var/lib/testimony-kiosk",
                      "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "DevicePolicy=closed",
                      "DeviceAllow=char-video4linux rw", "DeviceAllow=char-alsa rw", "Type=notify", "WatchdogSec=",
                      "StandardOutput=journal", "ProtectHome=yes", "SystemCallErrorNumber=EPERM"):
        assert directive in kiosk, f"testimony-kiosk.service lacks {directive}"
    denied = [ln for ln in kiosk.splitlines() if ln.startswith("SystemCallFilter=~")]
    assert denied and not any("@resources" in ln for ln in denied), \
        "the workers call os.nice (setpriority, in @resources): denying it would kill them with SIGSYS"
    proc = subprocess.run(["systemd-analyze", "verify", *rendered], capture_output=True, text=True)
    problems = [ln for ln in proc.stderr.splitlines() if any(u.name in ln for u in units)]
    assert proc.returncode == 0 and not problems, proc.stderr
