"""WHEP for clients that speak nothing else: a plain aiortc peer POSTing raw SDP with a Bearer token.

Also: every way an offer can be wrong gets a 4xx with a reason, and the viewer's sender is fed the
shared encoder's packets (PLI goes to the shared encoder, not to a per-viewer one).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, is_rtcp

from .live_support import live_room

pytestmark = pytest.mark.e2e

FPS = 15


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    with live_room(tmp_path_factory.mktemp("live-whep"), fps=FPS, link_stats_seconds=1.0) as lr:
        yield lr


def admitted_token(room, role: str = "defence") -> tuple[str, str]:
    _client, token, pid = room.redeem(room.invite(role), f"{role} whep")
    room.admit(pid)
    return token, pid


async def offer_sdp(pc: RTCPeerConnection) -> str:
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


def test_whep_only_client_receives_h264_video_and_opus_audio(room):
    token, pid = admitted_token(room)

    async def run() -> dict:
        pc = RTCPeerConnection()
        got = {"video": 0, "audio": 0, "size": None}

        @pc.on("track")
        def on_track(track):
            async def pull():
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:
                        return
                    got[track.kind] += 1
                    if track.kind == "video":
                        got["size"] = (frame.width, frame.height)
            asyncio.ensure_future(pull())

        sdp = await offer_sdp(pc)
        async with httpx.AsyncClient(base_url=room.base) as http:
            r = await http.post(f"/whep/{room.session_id}", content=sdp,
                                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
            assert r.headers["content-type"].startswith("application/sdp")
            location = r.headers["location"]
            assert location.startswith(f"/whep/{room.session_id}/")
            assert r.headers["access-control-allow-origin"] == "*"
            answer = r.text
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.sleep(1.0)
            v0, a0, t0 = got["video"], got["audio"], time.monotonic()
            await asyncio.sleep(3.0)
            rate = (got["video"] - v0) / (time.monotonic() - t0)
            audio_rate = (got["audio"] - a0) / (time.monotonic() - t0)
            streams = len(room.live.peers.for_participant(pid))
            r = await http.delete(location, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            r2 = await http.delete(location, headers={"Authorization": f"Bearer {token}"})
        await pc.close()
        return {"answer": answer, "rate": rate, "audio_rate": audio_rate, "size": got["size"], "streams": streams,
                "second_delete": r2.status_code}

    out = asyncio.run(run())
    rtpmaps = [line.split(" ", 1)[1] for line in out["answer"].splitlines() if line.startswith("a=rtpmap:")]
    assert {m.split("/")[0] for m in rtpmaps} <= {"H264", "opus", "rtx"}, rtpmaps
    assert any(m.startswith("H264/90000") for m in rtpmaps) and any(m.startswith("opus/48000") for m in rtpmaps)
    assert FPS * 0.8 <= out["rate"] <= FPS * 1.2, out
    assert 40 <= out["audio_rate"] <= 60, out  # 20 ms Opus frames
    assert out["size"] == (320, 240)
    assert out["streams"] == 1
    assert room.live.peers.for_participant(pid) == []  # DELETE ended it
    assert out["second_delete"] == 404


def post(room, body: str | bytes, token: str | None, content_type: str = "application/sdp",
         session_id: str | None = None) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{room.base}/whep/{session_id or room.session_id}", content=body, headers=headers)


def test_whep_rejects_bad_offers_with_a_reason(room):
    token, _pid = admitted_token(room, "observer")
    valid = asyncio.run(_valid_offer())

    r = post(room, "hello world", token)
    assert r.status_code == 400 and "malformed SDP" in r.json()["detail"]
    r = post(room, "", token)
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = post(room, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", token)
    assert r.status_code == 400 and "no audio or video" in r.json()["detail"]
    no_ice = "\r\n".join(line for line in valid.splitlines() if not line.startswith(("a=ice-ufrag", "a=ice-pwd")))
    r = post(room, no_ice + "\r\n", token)
    assert r.status_code == 400 and "ICE" in r.json()["detail"]
    vp8_only = valid.replace("H264", "XH26")
    r = post(room, vp8_only, token)
    assert r.status_code == 400 and "H264" in r.json()["detail"]
    r = post(room, b"\xff\xfe\x00bad", token)
    assert r.status_code == 400
    r = post(room, valid, token, content_type="application/json")
    assert r.status_code == 415 and "application/sdp" in r.json()["detail"]
    assert r.headers["accept-post"] == "application/sdp"
    r = post(room, valid, token, session_id="no-such-session")
    assert r.status_code == 404 and "no session" in r.json()["detail"]
    r = post(room, valid, None)
    assert r.status_code == 401
    r = post(room, valid, "not-a-token")
    assert r.status_code == 401

    _client, waiting_token, _ = room.redeem(room.invite("prosecution"), "waiting")
    r = post(room, valid, waiting_token)
    assert r.status_code == 403 and "admitted" in r.json()["detail"]

    r = httpx.options(f"{room.base}/whep/{room.session_id}", headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "Location" in r.headers["access-control-expose-headers"]
    assert r.headers["accept-post"] == "application/sdp"


async def _valid_offer() -> str:
    pc = RTCPeerConnection()
    try:
        return await offer_sdp(pc)
    finally:
        await pc.close()


async def _watch(room, token: str, seconds: float) -> None:
    pc = RTCPeerConnection()
    sdp = await offer_sdp(pc)
    async with httpx.AsyncClient(base_url=room.base) as http:
        r = await http.post(f"/whep/{room.session_id}", content=sdp,
                            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
    await asyncio.sleep(seconds)
    await pc.close()


def test_pli_from_a_viewer_asks_the_shared_encoder_for_a_keyframe(room):
    token, pid = admitted_token(room, "judge")
    client = threading.Thread(target=lambda: asyncio.run(_watch(room, token, seconds=3.0)))
    client.start()
    hub = room.station.hub
    original = hub.on_keyframe_request
    forwarded = []
    try:
        # wait for the viewer's video track to subscribe: subscribing asks for a keyframe of its own
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                p.tracks.get("video") is not None and p.tracks["video"]._sub is not None
                for p in room.live.peers.for_participant(pid)):
            time.sleep(0.05)

        async def send_plis():
            # on the server loop, with no await between patching and the PLIs: only they are counted
            peer = room.live.peers.for_participant(pid)[0]
            video = next(t for t in peer.pc.getTransceivers() if t.kind == "video")
            pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=video.sender._ssrc)
            hub._last_keyframe_request = -1e9  # start outside the rate limit
            hub.on_keyframe_request = lambda: (forwarded.append(time.monotonic()), original())
            try:
                await video.sender._handle_rtcp_packet(pli)
                await video.sender._handle_rtcp_packet(pli)  # a burst of PLIs: rate-limited to one request
            finally:
                hub.on_keyframe_request = original

        room.server.call(send_plis())
    finally:
        hub.on_keyframe_request = original
        client.join(20)
    assert len(forwarded) == 1, "a PLI must reach the shared encoder, once per keyframe_min_gap_s"


class _RawViewer:
    """A WHEP client that speaks nothing else and never hangs up by itself: it only counts what reaches
    it (each RTP packet as it arrives, each decoded frame) until the test closes it."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.rtp: dict[str, list[float]] = {"video": [], "audio": []}
        self.frames: dict[str, list[float]] = {"video": [], "audio": []}
        self.location: str | None = None
        self.headers: httpx.Headers | None = None
        self.post_seconds = 0.0

        @self.pc.on("track")
        def on_track(track):
            async def pull():
                while True:
                    try:
                        await track.recv()
                    except Exception:
                        return
                    self.frames[track.kind].append(time.monotonic())
            asyncio.ensure_future(pull())

    async def connect(self, room, token: str) -> _RawViewer:
        sdp = await offer_sdp(self.pc)
        for transceiver in self.pc.getTransceivers():  # every RTP packet, before the jitter buffer
            receiver, arrivals = transceiver.receiver, self.rtp[transceiver.kind]
            original = receiver._handle_rtp_packet

            async def counted(packet, arrival_time_ms, _original=original, _arrivals=arrivals):
                _arrivals.append(time.monotonic())
                return await _original(packet, arrival_time_ms)

            receiver._handle_rtp_packet = counted
        async with httpx.AsyncClient(base_url=room.base, timeout=20) as http:
            t0 = time.monotonic()
            r = await http.post(f"/whep/{room.session_id}", content=sdp,
                                headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"})
            self.post_seconds = time.monotonic() - t0
        assert r.status_code == 201, r.text
        self.location, self.headers = r.headers["location"], r.headers
        await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return self

    async def close(self) -> None:
        await self.pc.close()


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        await asyncio.sleep(0.05)


def test_a_viewer_that_hangs_up_without_delete_is_closed_and_logged(room):
    token, pid = admitted_token(room, "observer")
    asyncio.run(_watch(room, token, seconds=2.0))  # connects, receives, then closes its side only
    deadline = time.monotonic() + 10
    while room.live.peers.for_participant(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert room.live.peers.for_participant(pid) == [], "a hung-up viewer must not stay listed as streaming"
    events = [json.loads(line) for line in (room.station.session.dir / "events.jsonl").read_text().splitlines()]
    mine = [e for e in events if e.get("participant") == pid and e.get("type") == "presence"]
    assert any("connection closed by the viewer" in json.dumps(e) for e in mine), mine[-3:]


def test_removal_stops_media_at_the_server_within_a_second(room):
    """The client does not close itself: only the server can stop the RTP."""
    token, pid = admitted_token(room, "prosecution")
    hub = room.station.hub

    async def run() -> dict:
        viewer = await _RawViewer().connect(room, token)
        try:
            await _until(lambda: len(viewer.frames["video"]) >= 10 and viewer.rtp["audio"])
            [peer] = room.live.peers.for_participant(pid)
            sent: list[float] = []  # the server's own account: every RTP packet its transport sends
            transports = {t.sender.transport for t in peer.pc.getTransceivers()}
            for transport in transports:
                original = transport._send_rtp

                async def counted(data, _original=original):
                    if not is_rtcp(data):
                        sent.append(time.monotonic())
                    return await _original(data)

                transport._send_rtp = counted
            await _until(lambda: sent)
            subscribers = hub.subscriber_count
            removed_at = time.monotonic()
            await asyncio.to_thread(room.remove, pid)
            returned_at = time.monotonic()
            out = {
                "peers_after": room.live.peers.for_participant(pid),
                "closed": (peer.closed, peer.close_reason, peer.pc.connectionState),
                "tracks": {k: (t.readyState, t._sub) for k, t in peer.tracks.items()},
                "unsubscribed": subscribers - hub.subscriber_count,
                "call_s": returned_at - removed_at,
            }
            await asyncio.sleep(2.5)  # long enough to see any RTP still coming after the 1 s allowance
            for transport in transports:
                vars(transport).pop("_send_rtp", None)
            out["late_sent"] = [t - removed_at for t in sent if t > removed_at + 1.0]
            out["late_rtp"] = [t - removed_at for t in viewer.rtp["video"] if t > removed_at + 1.0]
            out["late_frames"] = [t - removed_at for t in viewer.frames["video"] if t > removed_at + 1.0]
            out["late_audio"] = [t - removed_at for t in viewer.rtp["audio"] if t > removed_at + 1.0]
            return out
        finally:
            await viewer.close()

    out = asyncio.run(run())
    assert out["peers_after"] == [], "the removed participant's peer must be gone when the call returns"
    assert out["closed"] == (True, "removed", "closed"), out["closed"]
    assert out["tracks"] == {"video": ("ended", None), "audio": ("ended", None)}, out["tracks"]
    assert out["unsubscribed"] == 2, "the hub must stop feeding the removed viewer's video and audio"
    assert out["call_s"] < 1.0, out
    assert out["late_rtp"] == [] and out["late_frames"] == [], f"video kept arriving after removal: {out}"
    assert out["late_audio"] == [], f"audio kept arriving after removal: {out}"
    assert out["late_sent"] == [], f"the server kept sending RTP after removal: {out}"
    # a removed party cannot come back with the same token
    assert post(room, asyncio.run(_valid_offer()), token).status_code == 403


def test_viewers_get_the_recorders_packets_and_no_encoder_of_their_own(room):
    """Encode once: two viewers are handed the very packet objects the hub published (one copy of the
    encoder's output, shared by all viewers, byte for byte what the recorder got), and joining creates
    and runs no encoder."""
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.codecs.opus import OpusEncoder

    from kiosk.live.tracks import HubTrack
    from kiosk.media.encoder import VideoEncoder

    viewers = [admitted_token(room, "observer"), admitted_token(room, "defence")]
    hub, pipeline = room.station.hub, room.station.pipeline
    video_encoder = pipeline.video
    published: dict[str, list] = {"video": [], "audio": []}  # strong references: ids stay unique
    recorded: dict[int, bytes] = {}  # pts -> what the recorder was handed
    handed: list[tuple[HubTrack, object]] = []
    calls = {"VideoEncoder()": 0, "H264Encoder.encode": 0, "H264Encoder._encode_frame": 0, "OpusEncoder.encode": 0}

    original_publish, original_record = hub.publish, pipeline._record_video
    original_recv, original_init = HubTrack.recv, VideoEncoder.__init__
    originals = {H264Encoder: (H264Encoder.encode, H264Encoder._encode_frame), OpusEncoder: (OpusEncoder.encode,)}

    def publish(kind, packet):
        published[kind].append(packet)
        original_publish(kind, packet)

    def record_video(packet):
        recorded[packet.pts] = bytes(packet)  # before the muxer takes the packet's data
        original_record(packet)

    async def recv(self):
        packet = await original_recv(self)
        handed.append((self, packet))
        return packet

    def init(self, *args, **kwargs):
        calls["VideoEncoder()"] += 1
        original_init(self, *args, **kwargs)

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    async def run() -> dict:
        clients = [await _RawViewer().connect(room, token) for token, _pid in viewers]
        try:
            await _until(lambda: all(len(c.frames["video"]) >= 5 for c in clients))
            n0, frames0, t0 = len(published["video"]), pipeline.stats.frames_encoded, time.monotonic()
            await asyncio.sleep(2.0)
            window = {"published": len(published["video"]) - n0, "encoded": pipeline.stats.frames_encoded - frames0,
                      "seconds": time.monotonic() - t0}
            senders = [t.sender for _t, pid in viewers for peer in room.live.peers.for_participant(pid)
                       for t in peer.pc.getTransceivers()]
            encoders = [(s.kind, s._RTCRtpSender__encoder) for s in senders]
            return {"window": window, "encoders": encoders,
                    "tracks": {pid: room.live.peers.for_participant(pid)[0].tracks for _t, pid in viewers}}
        finally:
            for c in clients:
                await c.close()

    try:
        hub.publish, pipeline._record_video = publish, record_video
        HubTrack.recv, VideoEncoder.__init__ = recv, init
        H264Encoder.encode = counting("H264Encoder.encode", originals[H264Encoder][0])
        H264Encoder._encode_frame = counting("H264Encoder._encode_frame", originals[H264Encoder][1])
        OpusEncoder.encode = counting("OpusEncoder.encode", originals[OpusEncoder][0])
        out = asyncio.run(run())
    finally:
        vars(hub).pop("publish", None)
        vars(pipeline).pop("_record_video", None)
        HubTrack.recv, VideoEncoder.__init__ = original_recv, original_init
        H264Encoder.encode, H264Encoder._encode_frame = originals[H264Encoder]
        (OpusEncoder.encode,) = originals[OpusEncoder]
    assert hub.publish == original_publish and HubTrack.recv is original_recv

    ids = {kind: {id(p) for p in packets} for kind, packets in published.items()}
    per_viewer: dict[str, dict[str, dict[int, object]]] = {}
    for pid, tracks in out["tracks"].items():
        got = per_viewer[pid] = {}
        for kind, track in tracks.items():
            got[kind] = {p.pts: p for t, p in handed if t is track}
            assert len(got[kind]) >= (2 * FPS if kind == "video" else 100), (pid, kind, len(got[kind]))
            foreign = [pts for pts, p in got[kind].items() if id(p) not in ids[kind]]
            assert not foreign, f"{pid} {kind}: {len(foreign)} packets the hub never published (a second encode?)"
            if kind == "video":
                differ = [pts for pts, p in got[kind].items() if recorded.get(pts) != bytes(p)]
                assert not differ, f"{pid}: {len(differ)} video packets differ from the recorder's"
    a, b = per_viewer.values()
    for kind in ("video", "audio"):
        common = a[kind].keys() & b[kind].keys()
        assert len(common) >= len(a[kind]) // 2, (kind, len(common))
        assert all(a[kind][pts] is b[kind][pts] for pts in common), f"the two viewers got different {kind} packets"

    assert calls == dict.fromkeys(calls, 0), f"an encoder was created or run for a viewer: {calls}"
    assert pipeline.video is video_encoder and room.station.pipeline is pipeline
    # aiortc's per-sender codec objects only pack(): its H.264 one never opened libx264
    assert sorted(kind for kind, _e in out["encoders"]) == ["audio", "audio", "video", "video"], out["encoders"]
    assert all(isinstance(e, H264Encoder) and e.codec is None for kind, e in out["encoders"] if kind == "video")
    w = out["window"]
    # one publish per encoded packet, whatever the number of viewers, at the room's frame rate
    assert abs(w["published"] - w["encoded"]) <= 2, w
    assert FPS * 0.8 <= w["published"] / w["seconds"] <= FPS * 1.2, w


STUN = "stun:stun.invalid:3478"
TURN = "turn:turn.invalid:3478?transport=udp"
TURN_USER, TURN_CREDENTIAL = "kiosk-viewer", "not-a-secret"


@pytest.fixture
def ice_room(tmp_path_factory):
    """A second room whose kiosk.toml names a STUN server and a TURN server (names that never resolve)."""
    from kiosk.config import DEFAULT_SETTINGS

    tmp = tmp_path_factory.mktemp("live-ice")
    text = Path(DEFAULT_SETTINGS).read_text()
    assert "\nstun_urls = []" in text
    text = text.replace("\nstun_urls = []", f'\nstun_urls = ["{STUN}"]\nturn = [ {{ urls = ["{TURN}"], '
                                            f'username = "{TURN_USER}", credential = "{TURN_CREDENTIAL}" }} ]', 1)
    config = tmp / "kiosk.toml"
    config.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIOSK_CONFIG", str(config))
        with live_room(tmp_path_factory.mktemp("live-ice-data"), fps=5) as lr:
            yield lr
            lr.operator.post("/api/session/end")  # while the server still runs: a quick, clean end


def _links(headers: httpx.Headers) -> list[tuple[str, dict[str, str]]]:
    """RFC 8288 Link values: (target, params); params keep quoted-string values unquoted."""
    out = []
    for m in re.finditer(r'<([^>]*)>((?:\s*;\s*[\w*-]+\s*=\s*(?:"[^"]*"|[^;,]*))*)', ", ".join(headers.get_list("link"))):
        params = {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r';\s*([\w*-]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))', m.group(2))}
        out.append((m.group(1), params))
    return out


def _page_config(client: httpx.Client, path: str) -> dict:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code)
    m = re.search(r'<script type="application/json" id="config">(.*?)</script>', r.text, re.S)
    assert m, f"{path} has no config element"
    return json.loads(m.group(1))


def test_stun_and_turn_from_the_config_reach_whep_clients_and_pages(ice_room):
    room = ice_room
    live = room.station.settings.live
    assert live.stun_urls == [STUN] and [t.urls for t in live.turn] == [[TURN]]  # read from the kiosk.toml
    wanted = [{"urls": [STUN]}, {"urls": [TURN], "username": TURN_USER, "credential": TURN_CREDENTIAL}]

    viewer_client, token, pid = room.redeem(room.invite("judge"), "judge ice")
    try:
        # in the lobby a party gets no TURN credential: neither in its page nor from /api/ice
        assert _page_config(viewer_client, "/view")["ice_servers"] is None
        assert viewer_client.get("/api/ice").status_code == 403
        assert TURN_CREDENTIAL not in viewer_client.get("/view").text
        assert _page_config(room.operator, "/console")["ice_servers"] == wanted
        room.admit(pid)
        # once admitted: in the page, and from /api/ice for a page that was opened in the lobby
        assert _page_config(viewer_client, "/view")["ice_servers"] == wanted
        assert viewer_client.get("/api/ice").json() == {"ice_servers": wanted}
    finally:
        viewer_client.close()

    async def run() -> tuple[_RawViewer, list]:
        viewer = _RawViewer()
        try:
            await _until(room.station.media_running)
            await viewer.connect(room, token)
            [peer] = room.live.peers.for_participant(pid)
            server_ice = [(s.urls, s.username, s.credential)
                          for s in peer.pc._RTCPeerConnection__configuration.iceServers]
            async with httpx.AsyncClient(base_url=room.base) as http:
                r = await http.delete(viewer.location, headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200
            return viewer, server_ice
        finally:
            await viewer.close()

    viewer, server_ice = asyncio.run(run())
    # unresolvable servers must not hold the answer back (the server gathers before it answers)
    assert viewer.post_seconds < 3.0, f"WHEP answer took {viewer.post_seconds:.1f} s"
    assert server_ice == [([STUN], None, None), ([TURN], TURN_USER, TURN_CREDENTIAL)]
    assert "Link" in viewer.headers["access-control-expose-headers"]
    links = _links(viewer.headers)
    assert links == [
        (STUN, {"rel": "ice-server"}),
        (TURN, {"rel": "ice-server", "username": TURN_USER, "credential": TURN_CREDENTIAL,
                "credential-type": "password"}),
    ], viewer.headers.get_list("link")


def test_whep_after_the_session_ended_is_409(room):
    token, _pid = admitted_token(room, "observer")
    valid = asyncio.run(_valid_offer())
    sid = room.session_id
    room.operator.post("/api/session/end").raise_for_status()
    r = post(room, valid, token, session_id=sid)
    assert r.status_code == 409 and "ended" in r.json()["detail"]
    assert "retry-after" not in r.headers  # it will not come back
