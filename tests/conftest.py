"""Shared test helpers: run the real `kiosk` command, write room profiles and settings, probe media."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
KIOSK = [sys.executable, "-m", "kiosk.cli"]


def run_kiosk(*args: str, env: dict | None = None, timeout: float = 120, check: bool = False,
              cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([*KIOSK, *args], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"kiosk {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-count_packets",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def write_settings(tmp: Path, **sections: dict) -> Path:
    """A kiosk.toml with the given overrides (section -> {key: value}); everything else default."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = tmp / "kiosk.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


SMALL_ROOM = """
[room]
id = "testroom"
name = "Test room"
language = "en"

[video]
width = {width}
height = {height}
fps = {fps}
layout = "{layout}"

[[cameras]]
name = "room-view"
kind = "synthetic"
scene = "room"
flash_every_s = {flash}

[[cameras]]
name = "close-up"
kind = "synthetic"
scene = "closeup"

[[microphones]]
name = "interviewer-mic"
role = "interviewer"
kind = "synthetic"
voice = "en-us+m3"
flash_every_s = {flash}

[[microphones]]
name = "witness-mic"
role = "witness"
kind = "synthetic"
voice = "en-us+f4"

[script.en]
lines = [ {{ at = 0.5, role = "witness", text = "My favourite colour is blue." }} ]
"""


def write_room(tmp: Path, width: int = 320, height: int = 240, fps: int = 15, layout: str = "pip",
               flash: float = 0.0, name: str = "room.toml") -> Path:
    path = tmp / name
    path.write_text(SMALL_ROOM.format(width=width, height=height, fps=fps, layout=layout, flash=flash))
    return path


@pytest.fixture
def tools():
    missing = [t for t in ("ffprobe", "espeak-ng") if not shutil.which(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install ffmpeg espeak-ng)")
