"""WebRTC peers for live viewers: answer a WHEP offer, feed the shared packets, measure, close.

A peer is created only for a principal that may watch (an admitted participant or an operator), so no
media can reach anyone before admission; closing it stops RTP at once. The negotiated codecs are pinned
to H.264 and Opus because the packets are already encoded in those; an offer without them is refused.
A PLI/FIR from a viewer asks the shared encoder for a keyframe (the hub rate-limits it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)

from ..errors import KioskError
from ..media.hub import PacketHub
from .roles import Role
from .tracks import HubTrack

log = logging.getLogger("kiosk.live.peers")

CODECS = {"video": "video/H264", "audio": "audio/opus"}
MAX_OFFER_BYTES = 64 * 1024


class OfferRejected(KioskError):
    """A WHEP offer that cannot be answered: malformed SDP, wrong direction, no H.264/Opus."""

    http_status = 400


def check_offer(text: str) -> sdp.SessionDescription:
    """Parse and sanity-check an SDP offer; OfferRejected names what is wrong."""
    if not text or not text.strip():
        raise OfferRejected("empty body: expected an SDP offer")
    if len(text) > MAX_OFFER_BYTES:
        raise OfferRejected(f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    if not text.lstrip().startswith("v=0"):
        raise OfferRejected("malformed SDP: an offer must begin with 'v=0'")
    try:
        desc = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise OfferRejected(f"malformed SDP: {type(exc).__name__} {exc}".strip()) from None
    media = [m for m in desc.media if m.kind in ("audio", "video")]
    if not media:
        raise OfferRejected("malformed SDP: no audio or video m-line")
    for m in media:
        if m.direction in ("sendonly", "inactive"):
            raise OfferRejected(f"{m.kind} m-line is {m.direction}; a WHEP viewer offers recvonly")
        if not (m.ice.usernameFragment and m.ice.password):
            raise OfferRejected(f"malformed SDP: {m.kind} m-line has no ICE credentials (a=ice-ufrag/a=ice-pwd)")
        if not (m.dtls and m.dtls.fingerprints):
            raise OfferRejected(f"malformed SDP: {m.kind} m-line has no DTLS fingerprint")
        wanted = CODECS[m.kind].split("/")[1].lower()
        if not any(c.name.lower() == wanted for c in m.rtp.codecs):
            raise OfferRejected(f"the {m.kind} m-line does not offer {wanted.upper()}; the live stream is H.264 + Opus")
    return desc


def ice_servers(stun_urls: list[str], turn: list) -> list[RTCIceServer]:
    servers = [RTCIceServer(urls=list(stun_urls))] if stun_urls else []
    for t in turn:
        servers.append(RTCIceServer(urls=list(t.urls), username=t.username or None, credential=t.credential or None))
    return servers


@dataclass(eq=False)
class LivePeer:
    id: str
    session_id: str
    role: Role
    participant_id: str | None  # None for an operator's preview
    name: str
    pc: RTCPeerConnection
    tracks: dict[str, HubTrack] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    closed: bool = False
    close_reason: str = ""
    _last_bytes: int = 0
    _last_time: float = 0.0
    link: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.pc.connectionState


ClosedCallback = Callable[[LivePeer, str], Awaitable[None] | None]


class PeerManager:
    def __init__(
        self,
        hub: Callable[[], PacketHub],
        ice: list[RTCIceServer] | None = None,
        on_closed: ClosedCallback | None = None,
    ) -> None:
        self._hub = hub
        self._ice = ice or []
        self._on_closed = on_closed
        self._peers: dict[str, LivePeer] = {}
        #: kind -> per-track packet gate for remote parties' tracks (the privacy mask); None: no gate
        self.gate_factory: Callable[[str], Callable] | None = None

    # ------------------------------------------------------------ lifecycle

    async def answer(
        self, offer: str, *, session_id: str, role: Role, participant_id: str | None, name: str
    ) -> tuple[LivePeer, str]:
        desc = check_offer(offer)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice))
        peer = LivePeer(secrets.token_hex(8), session_id, role, participant_id, name, pc)
        hub = self._hub()
        try:
            for kind in dict.fromkeys(m.kind for m in desc.media if m.kind in CODECS):
                gate = self.gate_factory(kind) if self.gate_factory and participant_id else None
                track = HubTrack(hub, kind, gate)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                prefs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == CODECS[kind]]
                transceiver.setCodecPreferences(prefs)
                # PLI/FIR: the sender would ask its own encoder; there is none, ask the shared one
                transceiver.sender._send_keyframe = hub.request_keyframe
                peer.tracks[kind] = track
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except OfferRejected:
            await pc.close()
            raise
        except Exception as exc:
            await pc.close()
            raise OfferRejected(f"cannot answer this offer: {exc}") from None
        self._peers[peer.id] = peer

        @pc.on("connectionstatechange")
        async def _state() -> None:
            log.debug("peer %s %s", peer.id, pc.connectionState)
            if pc.connectionState == "failed":
                await self.close(peer.id, "connection lost")
            elif pc.connectionState == "closed":  # the viewer hung up without a WHEP DELETE
                await self.close(peer.id, "connection closed by the viewer")

        return peer, pc.localDescription.sdp

    async def close(self, peer_id: str, reason: str) -> LivePeer | None:
        peer = self._peers.pop(peer_id, None)
        if peer is None or peer.closed:
            return None
        peer.closed, peer.close_reason = True, reason
        for track in peer.tracks.values():
            track.stop()
        with contextlib.suppress(Exception):
            await peer.pc.close()
        if self._on_closed:
            result = self._on_closed(peer, reason)
            if asyncio.iscoroutine(result):
                await result
        return peer

    async def close_where(self, predicate: Callable[[LivePeer], bool], reason: str) -> list[LivePeer]:
        closed = []
        for peer in [p for p in self._peers.values() if predicate(p)]:
            if await self.close(peer.id, reason):
                closed.append(peer)
        return closed

    async def close_all(self, reason: str) -> None:
        await self.close_where(lambda p: True, reason)

    def get(self, peer_id: str) -> LivePeer | None:
        return self._peers.get(peer_id)

    def peers(self) -> list[LivePeer]:
        return list(self._peers.values())

    def for_participant(self, participant_id: str) -> list[LivePeer]:
        return [p for p in self._peers.values() if p.participant_id == participant_id]

    # ------------------------------------------------------------ link quality

    async def link_stats(self, peer: LivePeer) -> dict:
        """The server's view of a viewer's link: RTT and loss from its receiver reports, send bitrate."""
        report = await peer.pc.getStats()
        rtt, lost, fraction, sent_bytes, sent_packets = [], 0, [], 0, 0
        for stats in report.values():
            if stats.type == "outbound-rtp":
                sent_bytes += stats.bytesSent or 0
                sent_packets += stats.packetsSent or 0
            elif stats.type == "remote-inbound-rtp":
                if stats.roundTripTime is not None:
                    rtt.append(stats.roundTripTime)
                lost += max(0, stats.packetsLost or 0)
                if stats.fractionLost is not None:
                    fraction.append(stats.fractionLost / 256 if stats.fractionLost > 1 else stats.fractionLost)
        now = time.monotonic()
        dt = now - (peer._last_time or peer.created)
        kbps = (sent_bytes - peer._last_bytes) * 8 / 1000 / dt if dt > 0 else 0.0
        peer._last_bytes, peer._last_time = sent_bytes, now
        video = peer.tracks.get("video")
        peer.link = {
            "state": peer.pc.connectionState,
            "rtt_ms": round(max(rtt) * 1000, 1) if rtt else None,
            "packets_lost": lost,
            "loss": round(max(fraction), 4) if fraction else None,
            "kbps": round(kbps, 1),
            "packets_sent": sent_packets,
            "frames_sent": video.packets_sent if video else 0,
        }
        return peer.link
