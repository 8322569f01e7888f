"""Shared by the clerk tests: ONE real demo session per test run (`kiosk demo`, 2 s segments so the
recording spans several sealed segments, transcribed by the installed vosk model), copied per module so
each module has its own ledger and store to change; a Court over such a copy; clerk accounts; the
README's "$ " commands."""

from __future__ import annotations

import os
import pty
import select
import shutil
import time
from pathlib import Path

from kiosk.clerk.court import Court
from kiosk.config import Settings

from .conftest import last_json, run_kiosk, write_settings

CLERK, CLERK_PASSWORD = "registry-1", "a long clerk password"
_DEMO: dict = {}


def demo_root(tmp_path_factory) -> tuple[Path, dict]:
    """The one demo run of this pytest process: (root holding data/ and demo-court/, demo summary)."""
    if "root" not in _DEMO:
        root = tmp_path_factory.getbasetemp() / "clerk-demo"
        root.mkdir()
        config = write_settings(root, recording={"segment_seconds": 2.0})
        proc = run_kiosk("--config", str(config), "demo", "--seconds", "6", "--no-live", "--json",
                         "--data-dir", str(root / "data"), timeout=180, check=True)
        summary = last_json(proc.stdout)
        assert summary["verified"] is True and summary["segments_sealed"] >= 3, summary
        _DEMO["root"], _DEMO["summary"] = root, summary
    return _DEMO["root"], _DEMO["summary"]


def court_copy(tmp_path_factory, name: str) -> tuple[Path, str]:
    """A private copy of the demo's data dir and demo court: (root, session id)."""
    src, summary = demo_root(tmp_path_factory)
    dst = tmp_path_factory.mktemp(name)
    shutil.copytree(src / "data", dst / "data", symlinks=True)
    shutil.copytree(src / "demo-court", dst / "demo-court", symlinks=True)
    return dst, summary["session_id"]


def settings_for(root: Path) -> Settings:
    s = Settings()
    s.storage.data_dir = root / "data"
    s.clerk.identity_file = root / "demo-court" / "court-identity.txt"
    return s


def open_court(root: Path, with_clerk: bool = True) -> Court:
    court = Court(settings_for(root))
    if with_clerk and not court.accounts.exists(CLERK):
        court.add_clerk(CLERK, CLERK_PASSWORD)
    return court


def readme_commands(readme: str) -> list[str]:
    """The commands the README tells a reader to run: lines starting with "$ "."""
    return [line[2:] for line in readme.splitlines() if line.startswith("$ ")]


def age_passphrase_encrypt(src: Path, dst: Path, passphrase: str) -> None:
    """`age -p -o dst src` on a pseudo-terminal (age reads passphrases from the terminal only)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execvp("age", ["age", "-p", "-o", str(dst), str(src)])
    out, answered = b"", 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if out.lower().count(b"passphrase") > answered:
            time.sleep(0.05)
            os.write(fd, passphrase.encode() + b"\r")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert status == 0 and dst.exists(), out
