"""Live updates to open pages: one queue per WebSocket, each message addressed to an audience.

An audience is a predicate over the receiving principal, so each message states who may see it
(e.g. only the judge and operator see the participant list; a participant sees only its own admission).
Later features (questions, rulings, talkback) publish here with their own audiences.
Publishing is thread-safe: the media thread and request threads hand messages to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .roles import Role

Audience = Callable[[Any], bool]


def everyone(_principal: Any) -> bool:
    return True


def to_roles(*roles: Role) -> Audience:
    wanted = frozenset(roles)
    return lambda principal: principal.role in wanted


def to_participant(participant_id: str) -> Audience:
    return lambda principal: getattr(principal, "participant_id", None) == participant_id


@dataclass(eq=False)
class Channel:
    principal: Any
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(256))
    dropped: int = 0


class Bus:
    def __init__(self) -> None:
        self._channels: list[Channel] = []
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def open(self, principal: Any) -> Channel:
        channel = Channel(principal)
        with self._lock:
            self._channels.append(channel)
        return channel

    def close(self, channel: Channel) -> None:
        with self._lock:
            if channel in self._channels:
                self._channels.remove(channel)

    def channels(self) -> list[Channel]:
        with self._lock:
            return list(self._channels)

    def publish(self, message: dict, audience: Audience = everyone) -> None:
        """Queue `message` for every open channel whose principal is in `audience` (any thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(message, audience)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, message, audience)

    def _deliver(self, message: dict, audience: Audience) -> None:
        for channel in self.channels():
            if not audience(channel.principal):
                continue
            if channel.queue.full():  # a page that stopped reading: keep the newest
                channel.queue.get_nowait()
                channel.dropped += 1
            channel.queue.put_nowait(message)
