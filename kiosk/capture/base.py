"""The one interface every capture source speaks, whatever the hardware.

The media thread *pulls*: once per output frame it asks each camera for the picture at session time t,
and every 20 ms it asks each microphone for the next block of samples. A source never blocks that
thread: real devices read in their own threads and hand over the latest data; synthetic and file sources
produce exactly the requested instant, so their output is deterministic on the session clock.

A source that loses its device keeps answering: cameras with None (the pipeline draws a "no signal"
slate), microphones with silence; `state` says what happened and the pipeline logs every change.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 48000  # every microphone is delivered at this rate, mono float32 in [-1, 1]


@dataclass
class SourceStatus:
    name: str
    kind: str
    state: str = "closed"  # closed | ok | no-signal | reconnecting | failed
    detail: str = ""
    changes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, state: str, detail: str = "") -> bool:
        """Update; True when the state actually changed (the pipeline logs those)."""
        with self._lock:
            changed = state != self.state
            self.state, self.detail = state, detail
            if changed:
                self.changes += 1
            return changed

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "state": self.state, "detail": self.detail}


class VideoSource(ABC):
    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.status = SourceStatus(name, kind)

    @abstractmethod
    def open(self) -> None:
        """Acquire the device; raise DeviceUnavailable / SourceError with a clear reason."""

    @abstractmethod
    def frame_at(self, t: float, size: tuple[int, int]) -> np.ndarray | None:
        """BGR uint8 picture for session time t, ideally at size (w, h); None while there is no signal."""

    def close(self) -> None:
        self.status.set("closed")

    def facts(self) -> dict:
        """Device facts for the manifest (names, resolutions, never personal data)."""
        return {"name": self.name, "kind": self.status.kind}


class AudioSource(ABC):
    def __init__(self, name: str, kind: str, role: str) -> None:
        self.name = name
        self.role = role
        self.status = SourceStatus(name, kind)
        self.session_offset = 0  # session sample of media sample 0 (set by the pipeline when it starts)

    @abstractmethod
    def open(self) -> None:
        """Acquire the device; raise DeviceUnavailable / SourceError with a clear reason."""

    @abstractmethod
    def pcm(self, start_sample: int, count: int) -> np.ndarray:
        """Mono float32 samples [start_sample, start_sample + count) at SAMPLE_RATE on the media clock.

        Device sources return what they have captured (padding with silence when short)."""

    def close(self) -> None:
        self.status.set("closed")

    def facts(self) -> dict:
        return {"name": self.name, "kind": self.status.kind, "role": self.role}
