"""WHEP for clients that speak nothing else: a plain aiortc peer POSTing raw SDP with a Bearer token.

Also: every way an offer can be wrong gets a 4xx with a reason, and the viewer's sender is fed the
shared encoder's packets (PLI goes to the shared encoder, not to a per-viewer one).
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

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


def test_whep_after_the_session_ended_is_409(room):
    token, _pid = admitted_token(room, "observer")
    valid = asyncio.run(_valid_offer())
    sid = room.session_id
    room.operator.post("/api/session/end").raise_for_status()
    r = post(room, valid, token, session_id=sid)
    assert r.status_code == 409 and "ended" in r.json()["detail"]
    assert "retry-after" not in r.headers  # it will not come back
