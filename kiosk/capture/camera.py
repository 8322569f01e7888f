"""Webcams through OpenCV VideoCapture, read in their own thread.

The media thread only takes the latest picture, so a slow or stalled camera never delays the recording;
a picture older than STALE_S counts as lost signal (the pipeline draws a slate) and the reader thread
reopens the device until it comes back. VideoCapture also opens media files, which tests use.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from ..config import CameraSource
from ..errors import DeviceUnavailable
from .base import VideoSource

STALE_S = 1.0
REOPEN_S = 1.0


class Camera(VideoSource):
    def __init__(self, spec: CameraSource, fps: int) -> None:
        super().__init__(spec.name, "camera")
        self.spec = spec
        self.fps = spec.fps or fps
        self._cap: cv2.VideoCapture | None = None
        self._latest: np.ndarray | None = None
        self._latest_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._paced = False  # a media file: pace reads at its frame rate like a live camera
        self.frames_read = 0

    def _open_capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.spec.device)
        if not cap.isOpened():
            cap.release()
            raise DeviceUnavailable(f"camera {self.spec.name!r}: cannot open device {self.spec.device!r}")
        if self.spec.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.spec.width)
        if self.spec.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.spec.height)
        if self.spec.fps:
            cap.set(cv2.CAP_PROP_FPS, self.spec.fps)
        self._paced = cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        return cap

    def open(self) -> None:
        self._cap = self._open_capture()
        ok, frame = self._cap.read()
        if not ok:
            self._cap.release()
            raise DeviceUnavailable(f"camera {self.spec.name!r}: device {self.spec.device!r} gives no pictures")
        self._store(frame)
        w, h = frame.shape[1], frame.shape[0]
        self.status.set("ok", f"{self.spec.device} {w}x{h}")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _store(self, frame: np.ndarray) -> None:
        with self._lock:
            self._latest, self._latest_at = frame, time.monotonic()
            self.frames_read += 1

    def _run(self) -> None:
        interval = 1.0 / self.fps
        next_at = time.monotonic()
        while not self._stop.is_set():
            cap = self._cap
            ok, frame = (cap.read() if cap is not None else (False, None))
            if ok:
                self._store(frame)
                if self._paced:
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                continue
            # lost: release and retry until the device answers again
            self.status.set("reconnecting", f"device {self.spec.device!r} stopped delivering")
            if cap is not None:
                cap.release()
            self._cap = None
            while not self._stop.wait(REOPEN_S):
                try:
                    self._cap = self._open_capture()
                    self.status.set("ok", f"{self.spec.device} reconnected")
                    next_at = time.monotonic()
                    break
                except DeviceUnavailable:
                    continue

    def frame_at(self, t: float, size: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            frame, at = self._latest, self._latest_at
        if frame is None or time.monotonic() - at > STALE_S:
            if self.status.state == "ok":
                self.status.set("no-signal", "no picture for over a second")
            return None
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=3)
        if self._cap is not None:
            self._cap.release()
        super().close()

    def facts(self) -> dict:
        return {**super().facts(), "device": str(self.spec.device), "fps": self.fps}
