"""Live privacy mask: the operator hides the picture and/or mutes the sound for every remote party.

Masking happens in each viewer's track, after the one shared encoder: a masked video packet is swapped
for a frame of a pre-encoded black picture (a one-second GOP, so a viewer joining during the mask
still gets a keyframe within a second) and a muted audio packet for an Opus silence frame, both with
the original packet's timestamp. The recording never passes through here; whether it continues is the
operator's separate choice (see the service). When the mask lifts, a viewer stays black until the next
real keyframe (asked for at once), so no viewer ever shows a half-decoded picture.

The operator's own preview is not masked: the operator must see the room to know when to lift it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np


def encode_black_gop(width: int, height: int, fps: int) -> list[bytes]:
    """One second of a black picture as baseline H.264 (Annex B, SPS/PPS in-band), IDR first."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, fps)
    ctx.framerate = fps
    ctx.options = {
        "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
        "x264-params": f"repeat-headers=1:keyint={fps}:min-keyint={fps}:scenecut=0",
    }
    ctx.open()
    yuv = np.empty((height * 3 // 2, width), np.uint8)
    yuv[:height] = 16  # video-range black
    yuv[height:] = 128
    packets: list[bytes] = []
    for i in range(fps):
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


def encode_opus_silence() -> bytes:
    """A 20 ms Opus frame of silence (mono, 48 kHz), as the live encoder would send it."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "mono", "s16"
    ctx.time_base = Fraction(1, 48000)
    ctx.bit_rate = 64000
    ctx.options = {"application": "voip", "frame_duration": "20"}
    ctx.open()
    packets: list[bytes] = []
    for i in range(5):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        packets += [bytes(p) for p in ctx.encode(frame)]
    return packets[-1]


def _like(data: bytes, original: av.Packet, keyframe: bool = False) -> av.Packet:
    packet = av.Packet(data)
    packet.pts, packet.dts, packet.time_base = original.pts, original.dts, original.time_base
    packet.is_keyframe = keyframe
    return packet


class PrivacyMask:
    """Room-wide mask state, read by every remote party's tracks (any thread)."""

    def __init__(self, width: int, height: int, fps: int, request_keyframe: Callable[[], object] | None = None) -> None:
        self.size = (width, height, fps)
        self.video = False
        self.audio = False
        self.request_keyframe = request_keyframe or (lambda: None)
        self._black: list[bytes] | None = None
        self._silence: bytes | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Encode the black picture and the silence frame (a fraction of a second; call off the loop)."""
        with self._lock:
            if self._black is None:
                self._black = encode_black_gop(*self.size)
            if self._silence is None:
                self._silence = encode_opus_silence()

    @property
    def ready(self) -> bool:
        return self._black is not None and self._silence is not None

    def set(self, video: bool, audio: bool) -> None:
        if (video or audio) and not self.ready:
            self.prepare()
        lifting_video = self.video and not video
        self.video, self.audio = video, audio
        if lifting_video:
            self.request_keyframe()

    def gate(self, kind: str) -> Callable[[av.Packet], av.Packet]:
        """A per-track filter (each track needs its own place in the black GOP)."""
        return _VideoGate(self) if kind == "video" else _AudioGate(self)


class _VideoGate:
    def __init__(self, mask: PrivacyMask) -> None:
        self.mask = mask
        self.index = 0  # position in the black GOP
        self.black = False  # the viewer currently shows black

    def __call__(self, packet: av.Packet) -> av.Packet:
        mask = self.mask
        if not mask.video and self.black:
            if packet.is_keyframe:
                self.black = False
            else:
                mask.request_keyframe()  # the hub rate-limits these
        if not mask.video and not self.black:
            return packet
        gop = mask._black
        if gop is None:  # cannot happen after set(); never let an unmasked frame through
            raise RuntimeError("privacy mask not prepared")
        if not self.black:
            self.black, self.index = True, 0
        data = gop[self.index % len(gop)]
        self.index += 1
        return _like(data, packet, keyframe=(self.index - 1) % len(gop) == 0)


class _AudioGate:
    def __init__(self, mask: PrivacyMask) -> None:
        self.mask = mask

    def __call__(self, packet: av.Packet) -> av.Packet:
        if not self.mask.audio:
            return packet
        silence = self.mask._silence
        if silence is None:
            raise RuntimeError("privacy mask not prepared")
        return _like(silence, packet)
