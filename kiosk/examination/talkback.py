"""Judge talkback: push-to-talk audio from the judge's browser to the interviewer's earpiece.

As in Barnahus practice, the judge (or the parties through the judge) can speak to the interviewer
through headphones the child does not hear. The judge's page sends its microphone upstream over its own
WebRTC connection (a WHIP-like POST of a send-only audio offer); the kiosk decodes it and forwards it
only while the judge holds the talk button: the page sends `talk on` when pressed and every second
while held, `talk off` when released; silence from the page for TALK_TIMEOUT_S ends the talk anyway,
so a lost release can never leave the earpiece open.

Output is a PyAudio device named in the room profile (`[earpiece] device`), never the room speaker.
Every talk spurt is also kept as its own audio track of the session: an Ogg Opus file per spurt in
SESSION/talkback/ with its session-time span and SHA-256 in talkback/index.json and in the session log
(`talkback-recorded`); and, if the station offers `talkback_sink(pcm, session_time)`, the same decoded
PCM (float32, 48 kHz mono) is handed to it so the recorder can carry it as a track of the segments.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.mediastreams import MediaStreamError

from ..config import EarpieceOutput
from ..errors import DeviceUnavailable, KioskError

log = logging.getLogger("kiosk.examination.talkback")

TALK_TIMEOUT_S = 2.5
SAMPLE_RATE = 48000
MAX_OFFER_BYTES = 64 * 1024
TALKBACK_DIR = "talkback"
INDEX_FILE = "index.json"


class TalkbackRefused(KioskError):
    """A talkback offer that cannot be answered (malformed, not send-only audio, no Opus)."""

    http_status = 400


class NoEarpiece(KioskError):
    http_status = 409


class NotYours(KioskError):
    """A judge closing another judge's talkback connection."""

    http_status = 403


def check_talkback_offer(text: str) -> None:
    if not text or not text.strip():
        raise TalkbackRefused("empty body: expected an SDP offer")
    if len(text) > MAX_OFFER_BYTES:
        raise TalkbackRefused(f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    if not text.lstrip().startswith("v=0"):
        raise TalkbackRefused("malformed SDP: an offer must begin with 'v=0'")
    try:
        desc = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise TalkbackRefused(f"malformed SDP: {type(exc).__name__}") from None
    media = [m for m in desc.media if m.kind in ("audio", "video")]
    if len(media) != 1 or media[0].kind != "audio":
        raise TalkbackRefused("a talkback offer has exactly one audio m-line (the judge's microphone)")
    m = media[0]
    if m.direction not in ("sendonly", "sendrecv"):
        raise TalkbackRefused(f"the audio m-line is {m.direction}; talkback sends the judge's microphone")
    if not (m.ice.usernameFragment and m.ice.password) or not (m.dtls and m.dtls.fingerprints):
        raise TalkbackRefused("malformed SDP: no ICE credentials or DTLS fingerprint")
    if not any(c.name.lower() == "opus" for c in m.rtp.codecs):
        raise TalkbackRefused("the audio m-line does not offer Opus")


# ---------------------------------------------------------------- the earpiece (PyAudio output)

_pa = None
_pa_lock = threading.Lock()


def _pyaudio():
    """One PortAudio instance per process (it reads the ALSA configuration once, when created)."""
    global _pa
    with _pa_lock:
        if _pa is None:
            import pyaudio

            _pa = pyaudio.PyAudio()
        return _pa


def find_output_device(pa, wanted: int | str) -> int:
    """A PortAudio output device by index or (part of) its name. 'default' is refused: on a room
    station the default output may be the room speaker, and the child must never hear talkback."""
    if isinstance(wanted, str) and wanted.strip().lower() in ("default", "sysdefault", ""):
        raise DeviceUnavailable("[earpiece] device must name the earpiece output explicitly, not the default "
                                "output (which may be the room speaker)")
    from ..capture.microphone import find_device

    return find_device(pa, wanted, "output", " for the earpiece")


class Earpiece:
    """The interviewer's earpiece: 16-bit mono PCM written from its own thread (writes block)."""

    def __init__(self, spec: EarpieceOutput) -> None:
        self.spec = spec
        self.device_name = ""
        self._stream = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=100)  # 2 s of 20 ms blocks
        self._thread: threading.Thread | None = None
        self.bytes_written = 0
        self.dropped = 0

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    def open(self) -> None:
        if self._stream is not None:
            return
        import pyaudio

        pa = _pyaudio()
        index = find_output_device(pa, self.spec.device)
        self.device_name = pa.get_device_info_by_index(index)["name"]
        try:
            self._stream = pa.open(format=pyaudio.paInt16, channels=1, rate=self.spec.sample_rate, output=True,
                                   output_device_index=index, frames_per_buffer=self.spec.sample_rate // 50)
        except OSError as exc:
            raise DeviceUnavailable(f"cannot open the earpiece {self.device_name!r}: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="earpiece", daemon=True)
        self._thread.start()
        log.info("earpiece open on %s", self.device_name)

    def write(self, pcm: bytes) -> None:
        try:
            self._queue.put_nowait(pcm)
        except queue.Full:  # the device stalled: drop rather than delay the judge by seconds
            self.dropped += 1

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            try:
                self._stream.write(data)
                self.bytes_written += len(data)
            except OSError as exc:
                log.warning("earpiece write failed: %s", exc)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.stop_stream()
                self._stream.close()
            self._stream = None


# ---------------------------------------------------------------- talk spurts as a track of the session


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


class SpurtFile:
    """One talk spurt as Ogg Opus (48 kHz mono); pts count samples from the spurt's start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        self._stream.bit_rate = 32000
        self.samples = 0

    def write(self, pcm: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self.samples
        self.samples += pcm.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


def read_index(session_dir: Path) -> list[dict]:
    path = Path(session_dir) / TALKBACK_DIR / INDEX_FILE
    try:
        return json.loads(path.read_text())["spurts"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def _write_index(session_dir: Path, spurts: list[dict]) -> None:
    path = Path(session_dir) / TALKBACK_DIR / INDEX_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": "testimony-kiosk/talkback/v1", "sample_rate": SAMPLE_RATE,
                               "channels": 1, "codec": "opus", "spurts": spurts}, indent=2))
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------- the judge's upstream


@dataclass(eq=False)
class TalkbackPeer:
    id: str
    participant_id: str
    name: str
    pc: RTCPeerConnection
    task: asyncio.Task | None = None
    frames: int = 0
    closed: bool = False


@dataclass
class _Spurt:
    number: int
    participant: str
    name: str
    start: float
    file: SpurtFile | None = None
    end: float | None = None


Recorder = Callable[..., object]  # session.record(kind, **fields), called from a thread


@dataclass
class Talkback:
    """Talkback for one session: upstream peers, the talk flag, the earpiece, the spurt files.

    Loop-side methods (offer, talk, frames) never block; the earpiece and the files are written by
    one worker thread fed through a queue.
    """

    session: object  # kiosk.session.Session
    earpiece: Earpiece | None
    sink: Callable[[np.ndarray, float], None] | None = None
    peers: dict[str, TalkbackPeer] = field(default_factory=dict)
    talker: str | None = None  # participant id of the judge holding talk
    deadline: float = 0.0
    spurts: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = Path(self.session.dir) / TALKBACK_DIR
        self.spurts = read_index(self.session.dir)
        self._count = len(self.spurts)
        self._queue: queue.Queue = queue.Queue()
        self._current: _Spurt | None = None
        self._thread = threading.Thread(target=self._run, name="talkback", daemon=True)
        self._thread.start()
        self._resamplers: dict[str, av.AudioResampler] = {}
        self.frames_forwarded = 0

    # ------------------------------------------------------------ peers (on the loop)

    async def answer(self, offer: str, participant_id: str, name: str, ice) -> tuple[TalkbackPeer, str]:
        from aiortc import RTCConfiguration

        check_talkback_offer(offer)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        peer = TalkbackPeer(secrets.token_hex(8), participant_id, name, pc)

        @pc.on("track")
        def _track(track) -> None:
            if track.kind == "audio" and peer.task is None:
                peer.task = asyncio.ensure_future(self._consume(peer, track))

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close_peer(peer.id, "connection lost")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            raise TalkbackRefused(f"cannot answer this talkback offer: {exc}") from None
        # one upstream per judge: a reconnecting page replaces the old one
        for old in [p for p in self.peers.values() if p.participant_id == participant_id]:
            await self.close_peer(old.id, "replaced by a new connection")
        self.peers[peer.id] = peer
        return peer, pc.localDescription.sdp

    async def _consume(self, peer: TalkbackPeer, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            peer.frames += 1
            if self.talker == peer.participant_id and self._current is not None:
                self._queue.put(("pcm", frame, self.session.now()))
                self.frames_forwarded += 1

    async def close_peer(self, peer_id: str, reason: str) -> TalkbackPeer | None:
        peer = self.peers.pop(peer_id, None)
        if peer is None or peer.closed:
            return None
        peer.closed = True
        if peer.task is not None:
            peer.task.cancel()
        with contextlib.suppress(Exception):
            await peer.pc.close()
        return peer

    def has_peer(self, participant_id: str) -> bool:
        return any(p.participant_id == participant_id for p in self.peers.values())

    # ------------------------------------------------------------ the talk flag (on the loop)

    def start_talk(self, participant_id: str, name: str, at: float) -> int:
        """Open the gate; returns the spurt number. The caller logs talk-start with the same time."""
        self._count += 1
        self.talker = participant_id
        self.deadline = time.monotonic() + TALK_TIMEOUT_S
        spurt = _Spurt(self._count, participant_id, name, round(at, 3))
        self._current = spurt
        self._queue.put(("start", spurt))
        return spurt.number

    def keep_talking(self) -> None:
        self.deadline = time.monotonic() + TALK_TIMEOUT_S

    def stop_talk(self, at: float, on_recorded: Callable[[dict], None] | None = None) -> None:
        spurt = self._current
        self.talker = None
        self._current = None
        if spurt is not None:
            spurt.end = round(at, 3)
            self._queue.put(("stop", spurt, on_recorded))

    def expired(self) -> bool:
        return self.talker is not None and time.monotonic() > self.deadline

    # ------------------------------------------------------------ the worker thread

    def _resample(self, frame: av.AudioFrame, rate: int) -> np.ndarray:
        key = f"{frame.format.name}/{frame.layout.name}/{frame.sample_rate}->{rate}"
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = av.AudioResampler(format="s16", layout="mono", rate=rate)
        out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def _run(self) -> None:
        spurt: _Spurt | None = None
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if item[0] == "start":
                    spurt = item[1]
                    spurt.file = SpurtFile(self.dir / f"talk-{spurt.number:04d}.ogg")
                elif item[0] == "pcm" and spurt is not None and spurt.file is not None:
                    _tag, frame, at = item
                    pcm = self._resample(frame, SAMPLE_RATE)
                    if self.earpiece is not None and self.earpiece.is_open:
                        rate = self.earpiece.spec.sample_rate
                        out = pcm if rate == SAMPLE_RATE else self._resample(frame, rate)
                        self.earpiece.write(out.tobytes())
                    spurt.file.write(pcm)
                    if self.sink is not None:
                        self.sink(pcm.astype(np.float32) / 32768.0, at)
                elif item[0] == "stop":
                    _tag, stopped, on_recorded = item
                    entry = self._finish(stopped)
                    spurt = None
                    if on_recorded is not None and entry is not None:
                        on_recorded(entry)
                elif item[0] == "flush":
                    item[1].set()
            except Exception:  # noqa: BLE001 - a bad frame must not end talkback
                log.exception("talkback worker: %s failed", item[0])

    def _finish(self, spurt: _Spurt) -> dict | None:
        if spurt.file is None:
            return None
        spurt.file.close()
        path = spurt.file.path
        entry = {
            "number": spurt.number, "file": f"{TALKBACK_DIR}/{path.name}", "from": spurt.start, "to": spurt.end,
            "participant": spurt.participant, "name": spurt.name,
            "seconds_of_audio": round(spurt.file.samples / SAMPLE_RATE, 3),
            "bytes": path.stat().st_size, "sha256": sha256_file(path),
        }
        self.spurts.append(entry)
        _write_index(self.session.dir, self.spurts)
        return entry

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (e.g. before the session record is built)."""
        if not self._thread.is_alive():  # closed: the worker wrote everything before it stopped
            return True
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout)

    async def close(self) -> None:
        for peer_id in list(self.peers):
            await self.close_peer(peer_id, "talkback closed")
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 10)
