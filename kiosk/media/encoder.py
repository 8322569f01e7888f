"""The one H.264 encoder and the Opus encoders whose packets feed the recorder and every live viewer.

Video: libx264, tune=zerolatency, regular keyframes (no scene-cut ones, so segments and viewers resync
predictably), SPS/PPS both in the global header (for MP4) and in-band at every keyframe (for WebRTC
joiners). A keyframe can be forced for a new viewer, a PLI/FIR, or a segment boundary.
Audio: Opus at 48 kHz mono in 20 ms frames, the size WebRTC expects.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import cv2
import numpy as np

from ..config import EncoderSettings

OPUS_FRAME = 960  # 20 ms at 48 kHz


class VideoEncoder:
    def __init__(self, width: int, height: int, fps: int, settings: EncoderSettings) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.time_base = Fraction(1, fps)
        keyint = max(1, round(settings.keyframe_interval_s * fps))
        ctx = av.CodecContext.create(settings.video_codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = self.time_base
        ctx.framerate = fps
        ctx.bit_rate = settings.video_bitrate_kbps * 1000
        ctx.thread_count = settings.threads
        ctx.flags |= av.codec.context.Flags.global_header
        ctx.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "profile": "baseline",  # what every browser decodes; no B-frames, so pts == dts
            "forced-idr": "1",
            "x264-params": f"repeat-headers=1:keyint={keyint}:min-keyint={keyint}:scenecut=0:"
                           f"vbv-maxrate={settings.video_bitrate_kbps}:vbv-bufsize={settings.video_bitrate_kbps}",
        }
        ctx.open()
        self.ctx = ctx
        self.frames_encoded = 0
        self._template_stream = None
        self._template_container = None

    def encode(self, bgr: np.ndarray, index: int, keyframe: bool = False) -> list[av.Packet]:
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = index
        frame.time_base = self.time_base
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        packets = self.ctx.encode(frame)
        self.frames_encoded += 1
        for p in packets:
            p.time_base = self.time_base
        return packets

    def template_from(self, keyframe: av.Packet):
        """An input stream describing exactly this encoder's output, to create MP4 streams without a
        second encoder (the raw H.264 demuxer reads SPS/PPS from a real keyframe)."""
        if self._template_stream is None:
            raw = io.BytesIO(bytes(keyframe))
            self._template_container = av.open(raw, format="h264")
            self._template_stream = self._template_container.streams.video[0]
        return self._template_stream

    def close(self) -> None:
        if self._template_container is not None:
            self._template_container.close()


class AudioEncoder:
    """Opus, mono 48 kHz; pts are in samples on the media clock (first packet carries the pre-skip)."""

    def __init__(self, bitrate_kbps: int) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = 48000
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.time_base = Fraction(1, 48000)
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.options = {"application": "voip", "frame_duration": "20"}
        ctx.open()
        self.ctx = ctx
        self.time_base = Fraction(1, 48000)
        self.initial_padding = 312  # libopus pre-skip: packet pts = input sample - 312

    def encode(self, samples: np.ndarray, start_sample: int) -> list[av.Packet]:
        pcm = np.clip(samples * 32767.0, -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = start_sample
        frame.time_base = self.time_base
        packets = self.ctx.encode(frame)
        for p in packets:
            p.time_base = self.time_base
        return packets


def copy_packet(packet: av.Packet) -> av.Packet:
    """A muxer takes ownership of a packet's data; subscribers get their own copy."""
    dup = av.Packet(bytes(packet))
    dup.pts, dup.dts, dup.time_base = packet.pts, packet.dts, packet.time_base
    dup.is_keyframe = packet.is_keyframe
    if packet.duration:
        dup.duration = packet.duration
    return dup
