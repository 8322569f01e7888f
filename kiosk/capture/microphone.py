"""Microphones through PyAudio (PortAudio), one channel per microphone with its speaker's role.

PortAudio calls back in its own thread; blocks go into a bounded buffer the media thread drains every
20 ms. Short buffers are padded with silence (and counted), a buffer that runs ahead is trimmed (device
clock drift), and a device that stops is reopened: the recording itself never stops.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import av
import numpy as np

from ..config import MicrophoneSource
from ..errors import DeviceUnavailable
from .base import SAMPLE_RATE, AudioSource

MAX_BUFFER_S = 0.5
STALL_S = 1.0
REOPEN_S = 1.0


def find_device(pa, wanted: int | str, direction: str = "input", purpose: str = "") -> int:
    """A PortAudio device by index or by (part of) its name; the error lists the devices that exist."""
    key = "maxInputChannels" if direction == "input" else "maxOutputChannels"
    count = pa.get_device_count()
    if isinstance(wanted, int):
        if 0 <= wanted < count and pa.get_device_info_by_index(wanted)[key] > 0:
            return wanted
        raise DeviceUnavailable(f"no audio {direction} device with index {wanted}")
    names = []
    for i in range(count):
        info = pa.get_device_info_by_index(i)
        if info[key] > 0:
            names.append(info["name"])
            if wanted == info["name"] or wanted.lower() in info["name"].lower():
                return i
    raise DeviceUnavailable(f"no audio {direction} device matching {wanted!r}{purpose} "
                            f"(have: {', '.join(names) or 'none'})")


def find_input_device(pa, wanted: int | str) -> int:
    return find_device(pa, wanted, "input")


class Microphone(AudioSource):
    def __init__(self, spec: MicrophoneSource) -> None:
        super().__init__(spec.name, "microphone", spec.role)
        self.spec = spec
        self._pa = None
        self._stream = None
        self._buf: deque[np.ndarray] = deque()
        self._buffered = 0
        self._lock = threading.Lock()
        self._last_data = 0.0
        self._next_retry = 0.0
        self._resampler = None
        self.underruns = 0
        self.device_name = ""

    def _open_stream(self) -> None:
        import pyaudio

        if self._pa is None:
            self._pa = pyaudio.PyAudio()
        index = find_input_device(self._pa, self.spec.device)
        info = self._pa.get_device_info_by_index(index)
        channels = self.spec.channel + 1
        if channels > info["maxInputChannels"]:
            raise DeviceUnavailable(f"microphone {self.name!r}: device has {info['maxInputChannels']} channels, "
                                    f"channel {self.spec.channel} requested")
        self.device_name = info["name"]
        self._resampler = None
        if self.spec.sample_rate != SAMPLE_RATE:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            self._stream = self._pa.open(
                format=pyaudio.paInt16, channels=channels, rate=self.spec.sample_rate, input=True,
                input_device_index=index, frames_per_buffer=self.spec.sample_rate // 50,
                stream_callback=self._on_audio(channels),
            )
        except OSError as exc:
            raise DeviceUnavailable(f"microphone {self.name!r}: cannot open {self.device_name!r}: {exc}") from None
        self._last_data = time.monotonic()

    def _on_audio(self, channels: int):
        import pyaudio

        def callback(data, frame_count, time_info, status):
            pcm = np.frombuffer(data, np.int16).reshape(-1, channels)[:, self.spec.channel]
            samples = pcm.astype(np.float32) / 32768.0
            if self._resampler is not None:
                frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
                frame.sample_rate = self.spec.sample_rate
                samples = np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or
                                         [np.zeros(0, np.float32)])
            with self._lock:
                self._buf.append(samples)
                self._buffered += len(samples)
                while self._buffered > MAX_BUFFER_S * SAMPLE_RATE and len(self._buf) > 1:
                    self._buffered -= len(self._buf.popleft())
                self._last_data = time.monotonic()
            return (None, pyaudio.paContinue)

        return callback

    def open(self) -> None:
        self._open_stream()
        self.status.set("ok", self.device_name)

    def _take(self, count: int) -> np.ndarray:
        out = np.zeros(count, np.float32)
        filled = 0
        with self._lock:
            while filled < count and self._buf:
                chunk = self._buf[0]
                n = min(count - filled, len(chunk))
                out[filled:filled + n] = chunk[:n]
                filled += n
                if n == len(chunk):
                    self._buf.popleft()
                else:
                    self._buf[0] = chunk[n:]
                self._buffered -= n
        if filled < count and self.status.state == "ok" and self._buffered == 0:
            self.underruns += 1
        return out

    def pcm(self, start_sample: int, count: int) -> np.ndarray:
        now = time.monotonic()
        if self._stream is not None and (not self._stream.is_active() or now - self._last_data > STALL_S):
            if self.status.set("reconnecting", f"{self.device_name or self.spec.device} stopped delivering audio"):
                self._close_stream()
                self._next_retry = now + REOPEN_S
        if self._stream is None and now >= self._next_retry:
            try:
                self._open_stream()
                self.status.set("ok", f"{self.device_name} reconnected")
            except DeviceUnavailable as exc:
                self.status.set("reconnecting", str(exc))
                self._next_retry = now + REOPEN_S
        return self._take(count)

    def _close_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except OSError:
                pass
        self._stream = None

    def close(self) -> None:
        self._close_stream()
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None
        super().close()

    def facts(self) -> dict:
        return {**super().facts(), "device": self.device_name or str(self.spec.device),
                "sample_rate": self.spec.sample_rate, "channel": self.spec.channel}
