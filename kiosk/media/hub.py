"""Fan-out of the one encoder's packets to live subscribers (WebRTC viewers, previews).

The media thread publishes each encoded av.Packet once; every subscriber gets the same packet object
(no re-encode per viewer). Subscribers live on an asyncio loop; publishing never blocks the media thread:
a subscriber that falls behind loses its oldest packets and is asked to resynchronise on a keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av


@dataclass
class Subscription:
    kind: str  # "video" or "audio"
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    dropped: int = 0
    waiting_for_keyframe: bool = True
    closed: bool = False

    async def get(self) -> av.Packet:
        return await self.queue.get()


@dataclass
class PacketHub:
    """One per running pipeline. `request_keyframe` is wired to the shared video encoder."""

    max_queue: int = 120
    keyframe_min_gap_s: float = 0.5
    on_keyframe_request: Callable[[], None] | None = None
    _subs: list[Subscription] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_keyframe_request: float = -1e9
    video_time_base: object = None
    audio_time_base: object = None
    video_extradata: bytes = b""

    def subscribe(self, kind: str, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        if kind not in ("video", "audio"):
            raise ValueError(f"unknown track kind {kind!r}")
        sub = Subscription(kind, loop or asyncio.get_running_loop(), asyncio.Queue(self.max_queue))
        with self._lock:
            self._subs.append(sub)
        if kind == "video":
            self.request_keyframe()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def request_keyframe(self) -> bool:
        """Ask the encoder for a keyframe, at most once per keyframe_min_gap_s. True if forwarded."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_keyframe_request < self.keyframe_min_gap_s:
                return False
            self._last_keyframe_request = now
        if self.on_keyframe_request:
            self.on_keyframe_request()
        return True

    def publish(self, kind: str, packet: av.Packet) -> None:
        """Called from the media thread for every encoded packet."""
        with self._lock:
            subs = [s for s in self._subs if s.kind == kind]
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # loop closed: subscriber is gone
                sub.loop.call_soon_threadsafe(self._deliver, sub, packet)

    def _deliver(self, sub: Subscription, packet: av.Packet) -> None:
        if sub.closed:
            return
        if sub.kind == "video" and sub.waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            sub.waiting_for_keyframe = False
        if sub.queue.full():
            # fell behind: drop what is queued and restart from the next keyframe
            while not sub.queue.empty():
                sub.queue.get_nowait()
                sub.dropped += 1
            if sub.kind == "video":
                sub.waiting_for_keyframe = True
                self.request_keyframe()
                return
        sub.queue.put_nowait(packet)
