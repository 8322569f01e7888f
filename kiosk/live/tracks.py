"""A viewer's tracks: the shared encoder's packets, handed to aiortc unchanged.

aiortc's RTCRtpSender packetises an `av.Packet` returned by `recv()` with the negotiated codec's `pack()`
(H.264 FU-A/STAP-A, Opus as is) instead of encoding, so a viewer costs packetising and SRTP, not an
encode. RTP timestamps come from the packet's pts and time_base plus the sender's random origin, so no
per-viewer rebasing is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..media.hub import PacketHub, Subscription


class HubTrack(MediaStreamTrack):
    """Subscribes to the hub lazily on the first `recv()` (when the sender starts, i.e. once DTLS is up),
    so a viewer starts on a fresh keyframe instead of a backlog queued while ICE was connecting."""

    def __init__(self, hub: PacketHub, kind: str, gate: Callable[[av.Packet], av.Packet] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._hub = hub
        # the privacy mask (kiosk.examination.mask): may swap a packet for a black picture or silence
        self._gate = gate
        self._sub: Subscription | None = None
        self.packets_sent = 0
        self.keyframes_sent = 0
        self.first_packet_at: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            self._sub = self._hub.subscribe(self.kind)
        packet = await self._sub.get()
        if self.readyState != "live":
            raise MediaStreamError
        if self._gate is not None:
            packet = self._gate(packet)
        self.packets_sent += 1
        if self.kind == "video" and packet.is_keyframe:
            self.keyframes_sent += 1
        if self.first_packet_at is None:
            self.first_packet_at = time.monotonic()
        return packet

    def stop(self) -> None:
        super().stop()
        if self._sub is not None:
            self._hub.unsubscribe(self._sub)
            self._sub = None
