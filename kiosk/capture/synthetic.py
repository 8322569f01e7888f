"""Synthetic room: an OpenCV-drawn scene and an espeak-ng scripted interview, for demos and tests.

Both are pure functions of session time, so a test knows exactly what the room "saw" and "heard" at
any instant: the scene burns in the session clock and a frame-number barcode (read back by latency
tests), and an optional sync probe flashes a white frame exactly when the microphone beeps.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..config import ScriptLine, SyntheticAudioSource, SyntheticScript, SyntheticVideoSource
from ..errors import DeviceUnavailable
from .base import SAMPLE_RATE, AudioSource, VideoSource

BARCODE_BITS = 20
BARCODE_CELL = 8  # px per bit at 1280 wide; scaled with the frame


def draw_barcode(img: np.ndarray, number: int) -> None:
    """Frame number as black/white cells along the top-left edge (bit 0 first), readable from a canvas."""
    h, w = img.shape[:2]
    cell = max(4, int(BARCODE_CELL * w / 1280))
    for bit in range(BARCODE_BITS):
        value = 255 if (number >> bit) & 1 else 0
        img[0:cell, bit * cell:(bit + 1) * cell] = value


def read_barcode(img: np.ndarray) -> int:
    """Inverse of draw_barcode for a BGR/RGB(A) picture (samples the middle of each cell)."""
    h, w = img.shape[:2]
    cell = max(4, int(BARCODE_CELL * w / 1280))
    number = 0
    for bit in range(BARCODE_BITS):
        px = img[cell // 2, bit * cell + cell // 2][:3]
        if float(np.mean(px)) > 127:
            number |= 1 << bit
    return number


class SyntheticCamera(VideoSource):
    """A calm room with a slowly moving figure; no alarming content, labelled as synthetic."""

    def __init__(self, spec: SyntheticVideoSource, fps: int) -> None:
        super().__init__(spec.name, "synthetic")
        self.spec = spec
        self.fps = fps
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}

    def open(self) -> None:
        self.status.set("ok", f"synthetic scene '{self.spec.scene}'")

    def _background(self, size: tuple[int, int]) -> np.ndarray:
        if size not in self._backgrounds:
            w, h = size
            bg = np.empty((h, w, 3), np.uint8)
            if self.spec.scene == "room":
                bg[:] = (200, 222, 236)  # warm wall (BGR)
                cv2.rectangle(bg, (0, int(h * 0.72)), (w, h), (140, 170, 190), -1)  # floor
                cv2.rectangle(bg, (int(w * 0.08), int(h * 0.15)), (int(w * 0.3), int(h * 0.45)), (235, 215, 170), -1)
                cv2.rectangle(bg, (int(w * 0.55), int(h * 0.55)), (int(w * 0.9), int(h * 0.75)), (90, 120, 160), -1)
            else:
                bg[:] = (170, 200, 215)
                cv2.circle(bg, (w // 2, int(h * 1.1)), int(h * 0.6), (120, 140, 110), -1)
            self._backgrounds[size] = bg
        return self._backgrounds[size]

    def frame_at(self, t: float, size: tuple[int, int]) -> np.ndarray | None:
        w, h = size
        period = self.spec.flash_every_s
        if period > 0 and (t % period) < (1.0 / self.fps) - 1e-9:
            return np.full((h, w, 3), 255, np.uint8)  # sync probe: a white frame, in step with the beep
        img = self._background(size).copy()
        x = int(w * (0.5 + 0.25 * math.sin(t * 0.4)))
        y = int(h * 0.55)
        r = max(6, h // 14)
        colour = (110, 160, 230) if self.spec.scene == "room" else (120, 170, 235)
        cv2.circle(img, (x, y - 2 * r), r, colour, -1)
        cv2.ellipse(img, (x, y + r), (int(r * 1.1), int(r * 2)), 0, 0, 360, (150, 110, 90), -1)
        frame_no = round(t * self.fps)
        draw_barcode(img, frame_no)
        scale = h / 720
        label = f"{int(t // 3600):02d}:{int(t // 60) % 60:02d}:{t % 60:06.3f}  #{frame_no}"
        cv2.putText(img, label, (int(10 * scale) + 2, h - int(14 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8 * scale, (60, 60, 60), max(1, int(2 * scale)), cv2.LINE_AA)
        cv2.putText(img, "SYNTHETIC", (w - int(170 * scale), h - int(14 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.7 * scale, (90, 90, 90), max(1, int(2 * scale)), cv2.LINE_AA)
        return img

    def facts(self) -> dict:
        return {**super().facts(), "scene": self.spec.scene}


def speak(text: str, voice: str, out_dir: Path) -> np.ndarray:
    """Render text with espeak-ng and return mono float32 at SAMPLE_RATE."""
    if not shutil.which("espeak-ng"):
        raise DeviceUnavailable("synthetic microphone needs espeak-ng (apt-get install espeak-ng)")
    wav = out_dir / "line.wav"
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not wav.exists():
        raise DeviceUnavailable(f"espeak-ng could not speak with voice {voice!r}: {proc.stderr.strip()}")
    from .file import decode_audio_file

    return decode_audio_file(wav)


class SyntheticMicrophone(AudioSource):
    """Speaks its role's lines of the scripted interview at their session times (and beeps for sync)."""

    BEEP_S = 0.05

    def __init__(self, spec: SyntheticAudioSource, script: SyntheticScript | None) -> None:
        super().__init__(spec.name, "synthetic", spec.role)
        self.spec = spec
        self.script = script
        self._lines: list[tuple[int, np.ndarray]] = []  # (start sample within one script cycle, pcm)
        self._cycle = 0

    def voice(self) -> str:
        language = self.script.language if self.script else "en"
        if language == "en":
            return self.spec.voice
        variant = self.spec.voice.partition("+")[2]
        return f"{language}+{variant}" if variant else language

    def open(self) -> None:
        lines: list[ScriptLine] = [ln for ln in (self.script.lines if self.script else []) if ln.role == self.spec.role]
        with tempfile.TemporaryDirectory() as tmp:
            self._lines = [(int(ln.at * SAMPLE_RATE), speak(ln.text, self.voice(), Path(tmp))) for ln in lines]
        self._cycle = int((self.script.repeat_every_s if self.script else 0) * SAMPLE_RATE)
        self.status.set("ok", f"synthetic voice '{self.voice()}', {len(self._lines)} lines")

    def pcm(self, start_sample: int, count: int) -> np.ndarray:
        """Script lines and beeps are placed in session time, like the camera's picture."""
        out = np.zeros(count, np.float32)
        start_sample += self.session_offset
        end = start_sample + count
        for line_start, pcm in self._lines:
            starts = [line_start]
            if self._cycle:
                first = max(0, (start_sample - line_start - len(pcm)) // self._cycle)
                starts = [line_start + k * self._cycle for k in range(first, (end - line_start) // self._cycle + 1)]
            for s in starts:
                lo, hi = max(s, start_sample), min(s + len(pcm), end)
                if lo < hi:
                    out[lo - start_sample:hi - start_sample] += pcm[lo - s:hi - s]
        period = self.spec.flash_every_s
        if period > 0:
            p = int(round(period * SAMPLE_RATE))
            beep_len = int(self.BEEP_S * SAMPLE_RATE)
            k0 = start_sample // p
            for k in range(k0, end // p + 1):
                lo, hi = max(k * p, start_sample), min(k * p + beep_len, end)
                if lo < hi:
                    n = np.arange(lo, hi) - k * p
                    out[lo - start_sample:hi - start_sample] += 0.5 * np.sin(2 * np.pi * 1000 * n / SAMPLE_RATE)
        return out

    def facts(self) -> dict:
        return {**super().facts(), "voice": self.voice()}
