"""Is each device of the room there? A cheap look for the idle station's status strip and /healthz.

Between sessions no device is open, yet the operator must see a missing camera or microphone before the
child is in the room, not when "create session" fails. Cameras and files are looked up on the file
system; microphones by one PortAudio enumeration. Results are kept a few seconds so that a health probe
every second costs nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import CameraSource, FileAudioSource, FileVideoSource, MicrophoneSource, RoomProfile
from ..errors import DeviceUnavailable

CACHE_S = 5.0


@dataclass(frozen=True)
class Presence:
    name: str
    present: bool
    detail: str


def _camera(spec: CameraSource) -> tuple[bool, str]:
    device = spec.device
    path = Path(f"/dev/video{device}") if isinstance(device, int) else Path(device)
    return (True, f"{path} present") if path.exists() else (False, f"{path} not found")


def _microphones(specs: list[MicrophoneSource]) -> dict[str, tuple[bool, str]]:
    if not specs:
        return {}
    from .microphone import find_input_device

    try:
        import pyaudio

        pa = pyaudio.PyAudio()
    except Exception as exc:  # noqa: BLE001 - no sound system is exactly what we report
        return {s.name: (False, f"no audio system ({type(exc).__name__})") for s in specs}
    try:
        out = {}
        for spec in specs:
            try:
                index = find_input_device(pa, spec.device)
                out[spec.name] = (True, f"present ({pa.get_device_info_by_index(index)['name']})")
            except DeviceUnavailable as exc:
                out[spec.name] = (False, str(exc))
        return out
    finally:
        pa.terminate()


def look(room: RoomProfile) -> list[Presence]:
    """One entry per camera and microphone of the room, in profile order."""
    mics = _microphones([m for m in room.microphones if isinstance(m, MicrophoneSource)])
    out = []
    for spec in [*room.cameras, *room.microphones]:
        if isinstance(spec, CameraSource):
            present, detail = _camera(spec)
        elif isinstance(spec, FileVideoSource | FileAudioSource):
            present = spec.path.is_file()
            detail = "media file present" if present else f"media file not found: {spec.path}"
        elif isinstance(spec, MicrophoneSource):
            present, detail = mics[spec.name]
        else:
            present, detail = True, "synthetic"
        out.append(Presence(spec.name, present, detail))
    return out


class PresenceCache:
    """`look(room)`, at most once per CACHE_S seconds."""

    def __init__(self, room: RoomProfile) -> None:
        self.room = room
        self._lock = threading.Lock()
        self._at = -1e9
        self._last: list[Presence] = []

    def get(self) -> list[Presence]:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_S:
                self._last = look(self.room)
                self._at = time.monotonic()
            return self._last
