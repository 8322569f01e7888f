"""Live participation for one room: invites, the lobby, admission, WebRTC viewers and presence.

The web layer authenticates and checks roles; this service owns what happens next and writes the
account of it into the session's event log in session time (join, admit, leave, remove, reconnect,
link stats every few seconds), which is kept, and later sealed, with the recording. It runs on the web
server's event loop; blocking calls (the session log fsyncs, the station's status) go to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import KioskError, SessionNotFound, SessionStateError
from ..session import Session, State
from .bus import Audience, Bus, everyone, to_participant
from .invites import Invite, InviteBook
from .peers import LivePeer, PeerManager, ice_servers
from .presence import Admission, Participant, Roster
from .roles import ADMITTERS, Role

if TYPE_CHECKING:
    from ..station import Station

log = logging.getLogger("kiosk.live")

RETRY_AFTER_S = 2


class NotAdmitted(KioskError):
    """A participant asked for media before the judge or operator admitted them."""

    http_status = 403


class SessionNotLive(KioskError):
    """The session exists but there is nothing to watch (yet, or any more)."""

    http_status = 409

    def __init__(self, message: str, retry_after: int | None = RETRY_AFTER_S) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Viewer(Protocol):
    """Who asks for media: an operator (preview) or a participant (the web layer's Principal)."""

    role: Role
    name: str
    participant: Participant | None

    @property
    def participant_id(self) -> str | None: ...


def to_admitters(principal: Any) -> bool:
    """Operators, and judges who have themselves been admitted."""
    if principal.role == Role.OPERATOR:
        return True
    p = getattr(principal, "participant", None)
    return principal.role in ADMITTERS and p is not None and p.admission == Admission.ADMITTED


def in_session(session_id: str, audience: Audience = everyone) -> Audience:
    """Operators, and participants of this session only: a party invited to an earlier session never
    hears of the next one (another case, another child)."""

    def check(principal: Any) -> bool:
        p = getattr(principal, "participant", None)
        if principal.role != Role.OPERATOR and (p is None or p.session_id != session_id):
            return False
        return audience(principal)

    return check


class LiveService:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.settings = station.settings
        live = self.settings.live
        self.invites = InviteBook()
        self.roster = Roster()
        self.bus = Bus()
        self.ice = ice_servers(live.stun_urls, live.turn)
        self.peers = PeerManager(lambda: self.station.hub, self.ice, on_closed=self._peer_closed)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._watched: set[str] = set()
        self._status_listeners = 0
        #: called (on the loop) after every roster change: admission, page (dis)connect, stream start/stop
        self.roster_listeners: list = []

    # ------------------------------------------------------------ lifecycle (on the server's loop)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.bus.bind(self.loop)
        self._tasks = [
            asyncio.create_task(self._watch_sessions(), name="live-sessions"),
            asyncio.create_task(self._link_stats_loop(), name="live-link-stats"),
            asyncio.create_task(self._status_loop(), name="live-status"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.peers.close_all("server stopping")

    # ------------------------------------------------------------ sessions

    def current_session(self) -> Session | None:
        return self.station.session

    def session(self, session_id: str) -> Session:
        s = self.station.session
        if s is None or s.info.id != session_id:
            raise SessionNotFound(f"no session {session_id!r} in this room")
        return s

    def running_session(self) -> Session:
        s = self.station.session
        if s is None or s.state is State.ENDED:
            raise SessionStateError("no session is running in this room; create one first")
        return s

    def ice_config(self) -> list[dict]:
        """STUN/TURN servers as the browser's RTCPeerConnection wants them."""
        out = []
        for server in self.ice:
            entry: dict = {"urls": server.urls}
            if server.username:
                entry["username"], entry["credential"] = server.username, server.credential
            out.append(entry)
        return out

    async def record(self, session: Session | None, kind: str, **fields) -> None:
        """Append to the session log without blocking the loop (each event is fsynced)."""
        if session is None or (session.state is State.ENDED and kind != "presence"):
            return
        try:
            await asyncio.to_thread(session.record, kind, **fields)
        except OSError as exc:
            log.error("cannot record %s event: %s", kind, exc)

    async def _watch_sessions(self) -> None:
        """Attach to each new session the station creates (from the console, the demo or the CLI)."""
        while True:
            s = self.station.session
            if s is not None and s.info.id not in self._watched:
                self._watched.add(s.info.id)
                s.add_listener(self._session_event)
                self.bus.publish({"type": "session", "session": s.public_summary()}, in_session(s.info.id))
            await asyncio.sleep(0.25)

    def _session_event(self, entry: dict) -> None:
        """Session listener (any thread): state changes and markers go to every open page."""
        kind = entry.get("type", "")
        if not (kind.startswith("session-") or kind == "marker"):
            return
        s = self.station.session
        if s is None:
            return
        self.bus.publish({"type": "session", "session": s.public_summary(), "event": kind}, in_session(s.info.id))
        if kind == "session-end" and self.loop is not None and not self.loop.is_closed():
            coro = self._session_ended(s)
            try:
                asyncio.run_coroutine_threadsafe(coro, self.loop)
            except RuntimeError:  # the server is shutting down
                coro.close()

    async def _session_ended(self, s: Session) -> None:
        self.invites.revoke_session(s.info.id)
        await self.peers.close_where(lambda p: p.session_id == s.info.id, "session ended")
        self.bus.publish({"type": "ended", "session": s.public_summary()}, in_session(s.info.id))

    # ------------------------------------------------------------ invites and the lobby

    def issue_invite(self, role: Role, label: str = "", pre_admit: bool = False, by: str = "operator") -> tuple[Invite, str]:
        """Sync (the session log is fsynced): call from a thread, or from a `def` endpoint."""
        s = self.running_session()
        ttl = self.settings.live.invite_ttl_minutes
        invite, token = self.invites.issue(s.info.id, role, label, ttl, pre_admit=pre_admit)
        s.record("invite-issued", invite=invite.id, role=role.value, label=invite.label, expires_in_min=ttl,
                 pre_admit=pre_admit, by=by)
        return invite, token

    def check_invite(self, token: str) -> Invite:
        invite = self.invites.check(token)
        s = self.station.session
        if s is None or s.info.id != invite.session_id or s.state is State.ENDED:
            from .invites import InviteRefused

            raise InviteRefused("ended", "The session this invitation was for has ended.")
        return invite

    async def redeem(self, token: str, name: str) -> tuple[Participant, str]:
        self.check_invite(token)
        invite = self.invites.redeem(token)
        participant, viewer_token = self.roster.join(invite, name)
        await self.record(self.session(invite.session_id), "presence", action="join", invite=invite.id,
                          **self._who(participant))
        if invite.pre_admit:
            await self.admit(participant.id, "operator (on arrival)")
        else:
            self._roster_changed(participant)
        return participant, viewer_token

    @staticmethod
    def _who(p: Participant) -> dict:
        return {"participant": p.id, "role": p.role.value, "name": p.name}

    def participants(self, session_id: str | None = None) -> list[Participant]:
        s = self.station.session
        sid = session_id or (s.info.id if s else None)
        return self.roster.for_session(sid) if sid else []

    def me(self, p: Participant) -> dict:
        return {**p.public(), "streaming": bool(self.peers.for_participant(p.id))}

    def _roster_changed(self, p: Participant | None = None) -> None:
        s = self.station.session
        if s is not None:
            self.bus.publish(
                {"type": "participants", "participants": [self.me(x) for x in self.participants()]},
                in_session(s.info.id, to_admitters),
            )
        if p is not None:
            self.bus.publish({"type": "me", "me": self.me(p)}, to_participant(p.id))
        for listener in list(self.roster_listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener's fault must not break admission
                log.exception("roster listener failed")

    async def admit(self, participant_id: str, by: str) -> Participant:
        self.session(self.roster.get(participant_id).session_id)  # only in this room's current session
        p, changed = self.roster.set_admission(participant_id, Admission.ADMITTED, by)
        if changed:
            await self.record(self.station.session, "presence", action="admit", by=by, **self._who(p))
            self._roster_changed(p)
        return p

    async def remove(self, participant_id: str, by: str) -> Participant:
        p, changed = self.roster.set_admission(participant_id, Admission.REMOVED, by)
        # media stops first, the paperwork follows
        await self.peers.close_where(lambda peer: peer.participant_id == p.id, "removed")
        if changed:
            await self.record(self.station.session, "presence", action="remove", by=by, **self._who(p))
            self._roster_changed(p)
        return p

    async def page_connected(self, p: Participant) -> None:
        change = self.roster.connect(p.id)
        if change == "reconnect":
            await self.record(self.station.session, "presence", action="reconnect", **self._who(p))
        self._roster_changed()

    async def page_disconnected(self, p: Participant) -> None:
        if self.roster.disconnect(p.id):
            await self.record(self.station.session, "presence", action="leave", reason="page closed or connection lost", **self._who(p))
            # without its page nobody can answer for the stream: stop it
            await self.peers.close_where(lambda peer: peer.participant_id == p.id, "page gone")
        self._roster_changed()

    # ------------------------------------------------------------ media (WHEP)

    async def open_stream(self, session_id: str, viewer: Viewer, offer: str) -> tuple[LivePeer, str]:
        s = self.session(session_id)
        if s.state is State.ENDED:
            raise SessionNotLive("the session has ended; there is nothing more to watch", retry_after=None)
        p = viewer.participant
        if p is not None:
            if p.session_id != session_id:
                raise NotAdmitted("this invitation belongs to another session")
            if p.admission == Admission.REMOVED:
                raise NotAdmitted("you were removed from this session")
            if p.admission != Admission.ADMITTED:
                raise NotAdmitted("waiting for the judge or the operator to admit you")
        if not self._media_flowing():
            raise SessionNotLive("the room's cameras are starting; try again in a moment")
        # one stream per participant: a reconnecting page replaces its old peer
        if p is not None:
            await self.peers.close_where(lambda peer: peer.participant_id == p.id, "replaced by a new connection")
        peer, answer = await self.peers.answer(
            offer, session_id=session_id, role=viewer.role, participant_id=viewer.participant_id, name=viewer.name
        )
        log.info("live viewer %s (%s) connecting to %s", peer.id, viewer.role.value, session_id)
        if p is not None:
            await self.record(s, "presence", action="media-start", stream=peer.id, **self._who(p))
            self._roster_changed(p)
        return peer, answer

    def _media_flowing(self) -> bool:
        """The station's pipeline has encoded a picture (it starts with the session, before recording)."""
        return self.station.media_running()

    async def close_stream(self, peer_id: str, reason: str = "viewer hung up") -> None:
        await self.peers.close(peer_id, reason)

    async def _peer_closed(self, peer: LivePeer, reason: str) -> None:
        if peer.participant_id is None:
            return
        try:
            p = self.roster.get(peer.participant_id)
        except KioskError:
            return
        await self.record(self.station.session, "presence", action="media-stop", stream=peer.id, reason=reason, **self._who(p))
        self.bus.publish({"type": "media-ended", "reason": reason}, to_participant(p.id))
        self._roster_changed(p)

    # ------------------------------------------------------------ periodic

    async def _link_stats_loop(self) -> None:
        """Every link_stats_seconds: each viewer's RTT, loss, bitrate, frames sent, into the record."""
        period = self.settings.live.link_stats_seconds
        while True:
            await asyncio.sleep(period)
            for peer in self.peers.peers():
                if peer.participant_id is None or peer.pc.connectionState != "connected":
                    continue
                try:
                    stats = await self.peers.link_stats(peer)
                    p = self.roster.get(peer.participant_id)
                except Exception as exc:  # noqa: BLE001 - a closing peer must not end the loop
                    log.debug("link stats for %s failed: %s", peer.id, exc)
                    continue
                p.link = stats
                await self.record(self.station.session, "link-stats", stream=peer.id, participant=p.id, role=p.role.value, **stats)
                self.bus.publish({"type": "link", "link": stats}, to_participant(p.id))
            if self.peers.peers():
                self._roster_changed()

    def want_status(self, delta: int) -> None:
        self._status_listeners += delta

    async def _status_loop(self) -> None:
        """Device state and mic levels for operator consoles (only while one is open)."""
        while True:
            await asyncio.sleep(0.3)
            if self._status_listeners <= 0:
                continue
            try:
                status = await asyncio.to_thread(self.station.status)
            except Exception as exc:  # noqa: BLE001
                status = {"error": str(exc)}
            status["viewers"] = len(self.peers.peers())
            self.bus.publish({"type": "status", "status": status, "at": time.time()}, lambda pr: pr.role == Role.OPERATOR)


__all__ = ["LiveService", "NotAdmitted", "SessionNotLive", "Viewer", "everyone", "in_session", "to_admitters"]
