"""The examination of one room: questions, rulings, objections, breaks, privacy mask, talkback and the
private counsel channel, for the room's current session.

Each change is checked, written to the session log (in session time, fsynced), then applied and pushed
to exactly the pages allowed to see it:

    questions      the judge (all), the submitting party (its own side's), the operator (allowed ones,
                   in the wording to ask, without the ruling)
    objections,    the judge, both questioning parties and the operator
    break requests
    breaks, mask   everyone admitted to the session
    talk state     judges and the operator
    counsel text   admitted defence and accused only; never stored, never logged

At the session's end the session record is built from the log before the station seals the session
(see record.build_session_record). Runs on the web server's event loop; blocking work goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import KioskError, SessionStateError
from ..live.bus import Audience
from ..live.presence import Admission
from ..live.roles import QUESTIONERS, Role
from ..live.service import in_session
from ..session import Session, State
from . import events as ev
from .breaks import Break, Breaks
from .counsel import COUNSEL_ROLES, CounselChannel, clean_message, counsel_audience
from .mask import PrivacyMask
from .objections import Application, Applications
from .questions import OPEN_FOR_INTERVIEWER, InvalidInput, NotNow, Question, QuestionBook, UnknownItem
from .record import RecordFiles, build_session_record
from .talkback import Earpiece, NoEarpiece, NotYours, Talkback

if TYPE_CHECKING:
    from ..web.app import WebContext
    from ..web.auth import Principal

log = logging.getLogger("kiosk.examination")

MASK_RECORDING = ("continue", "pause")
APPLICATION_AUDIENCE = (Role.JUDGE, Role.OPERATOR, *QUESTIONERS)


def by(principal: Principal) -> str:
    return f"{principal.role.value}:{principal.name}"


def admitted(session_id: str, *roles: Role) -> Audience:
    """Admitted principals of this session holding one of `roles` (operators count as admitted)."""
    wanted = frozenset(roles)
    return in_session(session_id, lambda pr: pr.role in wanted and pr.admitted)


@dataclass
class SessionExam:
    session: Session
    talkback: Talkback
    questions: QuestionBook = field(default_factory=QuestionBook)
    applications: Applications = field(default_factory=Applications)
    breaks: Breaks = field(default_factory=Breaks)
    counsel: CounselChannel | None = None
    record_files: RecordFiles | None = None
    mask_paused_recording: bool = False
    mask_recording: str = "continue"

    @property
    def id(self) -> str:
        return self.session.info.id


class ExaminationService:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.station = ctx.station
        self.live = ctx.live
        self.bus = ctx.live.bus
        v = self.station.room.video
        self.mask = PrivacyMask(v.width, v.height, v.fps, request_keyframe=lambda: self.station.hub.request_keyframe())
        self.live.peers.gate_factory = self.mask.gate
        spec = self.station.room.earpiece
        self.earpiece = Earpiece(spec) if spec is not None else None
        self.exams: dict[str, SessionExam] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self.live.roster_listeners.append(self._roster_changed)
        self._tasks = [asyncio.create_task(self._watch(), name="examination")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for exam in self.exams.values():
            await exam.talkback.close()
        if self.earpiece is not None:
            await asyncio.to_thread(self.earpiece.close)

    async def _watch(self) -> None:
        """Attach to each new session; end talk whose page went quiet."""
        while True:
            with contextlib.suppress(KioskError):
                self.current()
            for exam in list(self.exams.values()):
                if exam.talkback.expired():
                    await self._stop_talk(exam, "released: no signal from the judge's page")
            await asyncio.sleep(0.2)

    def current(self) -> SessionExam:
        s = self.station.session
        if s is None:
            raise SessionStateError("no session in this room yet")
        exam = self.exams.get(s.info.id)
        if exam is None:
            sink = getattr(self.station, "talkback_sink", None)
            exam = SessionExam(s, Talkback(s, self.earpiece, sink if callable(sink) else None),
                               counsel=CounselChannel(s.info.id))
            self.exams[s.info.id] = exam
            self.mask.set(False, False)  # a new session starts unmasked
            s.add_listener(lambda entry, exam=exam: self._session_event(exam, entry))
        return exam

    def running(self) -> SessionExam:
        exam = self.current()
        if exam.session.state is State.ENDED:
            raise SessionStateError("the session has ended")
        return exam

    async def _log(self, exam: SessionExam, kind: str, at: float | None = None, **fields) -> dict:
        return await asyncio.to_thread(exam.session.record, kind, at=at, **fields)

    # ------------------------------------------------------------ session end (listener, any thread)

    def _session_event(self, exam: SessionExam, entry: dict) -> None:
        if entry.get("type") != "session-end":
            return
        tb = exam.talkback
        if tb.talker is not None:
            tb.stop_talk(entry["t"])
        tb.flush(5.0)
        try:
            exam.record_files = build_session_record(exam.session.dir)
        except Exception:  # noqa: BLE001 - the session must still end and be sealed
            log.exception("session record of %s could not be built", exam.id)
        self.mask.set(False, False)
        loop = self.loop
        if loop is not None and not loop.is_closed():
            coro = tb.close()
            try:
                asyncio.run_coroutine_threadsafe(coro, loop)
            except RuntimeError:
                coro.close()

    # ------------------------------------------------------------ what a page may see

    def view(self, principal: Principal) -> dict:
        exam = self.current()
        sid = exam.id
        role = principal.role
        out: dict[str, Any] = {
            "session": sid,
            "break": self._break_view(exam),
            "mask": {"video": self.mask.video, "audio": self.mask.audio},
        }
        if role == Role.JUDGE:
            out["questions"] = [q.for_parties() for q in exam.questions.all()]
        elif role in QUESTIONERS:
            out["questions"] = [q.for_parties() for q in exam.questions.all() if q.role == role.value]
        elif role == Role.OPERATOR:
            out["questions"] = [q.for_interviewer() for q in exam.questions.all()
                                if q.status not in ("submitted", "disallowed")]
        if role in APPLICATION_AUDIENCE:
            out["applications"] = [a.public() for a in exam.applications.all()]
        if role == Role.OPERATOR:
            out["mask"]["recording"] = exam.mask_recording
            out["break_mode"] = exam.breaks.mode
            out["earpiece"] = self.earpiece is not None
        if role in (Role.JUDGE, Role.OPERATOR):
            out["talk"] = self._talk_view(exam, principal)
        if role in COUNSEL_ROLES:
            out["counsel"] = exam.counsel.public()
        return out

    def _break_view(self, exam: SessionExam) -> dict | None:
        b = exam.breaks.current
        return b.public() if b else None

    def _talk_view(self, exam: SessionExam, principal: Principal | None = None) -> dict:
        tb = exam.talkback
        talker = None
        if tb.talker is not None:
            with contextlib.suppress(KioskError):
                talker = self.live.roster.get(tb.talker).name
        out = {"talking": talker, "earpiece": self.earpiece is not None}
        if principal is not None and principal.participant_id:
            out["connected"] = tb.has_peer(principal.participant_id)
        return out

    def _publish_question(self, exam: SessionExam, q: Question) -> None:
        full = {"type": "question", "question": q.for_parties()}
        self.bus.publish(full, admitted(exam.id, Role.JUDGE))
        self.bus.publish(full, admitted(exam.id, Role(q.role)))
        if q.status not in ("submitted", "disallowed"):
            self.bus.publish({"type": "question", "question": q.for_interviewer()}, admitted(exam.id, Role.OPERATOR))

    def _publish_application(self, exam: SessionExam, a: Application) -> None:
        self.bus.publish({"type": "application", "application": a.public()}, admitted(exam.id, *APPLICATION_AUDIENCE))

    def _publish_break(self, exam: SessionExam) -> None:
        self.bus.publish({"type": "break", "break": self._break_view(exam), "mode": exam.breaks.mode},
                         in_session(exam.id, lambda pr: pr.admitted))

    def _publish_talk(self, exam: SessionExam) -> None:
        self.bus.publish({"type": "talk", "talk": self._talk_view(exam)}, admitted(exam.id, Role.JUDGE, Role.OPERATOR))

    # ------------------------------------------------------------ questions

    async def submit_question(self, principal: Principal, text: object) -> Question:
        async with self._lock:
            exam = self.running()
            s = exam.session
            q = exam.questions.submit(principal.role.value, principal.participant_id, principal.name, text, s.now())
            await self._log(exam, ev.QUESTION, at=q.submitted_at, action="submitted", question=q.id, role=q.role,
                            participant=q.participant, name=q.name, text=q.text)
            exam.questions.put(q)
        self._publish_question(exam, q)
        return q

    async def rule_question(self, principal: Principal, qid: str, decision: object, rephrased: object,
                            reason: object) -> Question:
        async with self._lock:
            exam = self.running()
            q = exam.questions.rule(qid, decision, rephrased, reason, by(principal), exam.session.now())
            if q.status == "allowed":
                await self._log(exam, ev.QUESTION, at=q.ruled_at, action="allowed", question=q.id, by=q.ruled_by,
                                rephrased=q.rephrased, note=q.reason)
            else:
                await self._log(exam, ev.QUESTION, at=q.ruled_at, action="disallowed", question=q.id, by=q.ruled_by,
                                reason=q.reason)
            exam.questions.put(q)
        self._publish_question(exam, q)
        return q

    async def question_shown(self, principal: Principal, qid: str) -> Question | None:
        async with self._lock:
            exam = self.running()
            q = exam.questions.shown(qid, exam.session.now())
            if q is None:
                return None
            await self._log(exam, ev.QUESTION, at=q.shown_at, action="shown", question=q.id, by=by(principal))
            exam.questions.put(q)
        self._publish_question(exam, q)
        return q

    async def question_asked(self, principal: Principal, qid: str) -> Question:
        async with self._lock:
            exam = self.running()
            q = exam.questions.asked(qid, by(principal), exam.session.now())
            await self._log(exam, ev.QUESTION, at=q.asked_at, action="asked", question=q.id, by=q.asked_by)
            exam.questions.put(q)
        self._publish_question(exam, q)
        return q

    async def question_declined(self, principal: Principal, qid: str, reason: object) -> Question:
        async with self._lock:
            exam = self.running()
            q = exam.questions.decline(qid, reason, by(principal), exam.session.now())
            await self._log(exam, ev.QUESTION, at=q.declined_at, action="declined", question=q.id, by=q.declined_by,
                            reason=q.declined_reason)
            exam.questions.put(q)
        self._publish_question(exam, q)
        return q

    # ------------------------------------------------------------ objections and break requests

    async def raise_application(self, principal: Principal, kind: str, text: object) -> Application:
        async with self._lock:
            exam = self.running()
            a = exam.applications.raise_(kind, principal.role.value, principal.participant_id, principal.name, text,
                                         exam.session.now())
            if kind == "objection":
                await self._log(exam, ev.OBJECTION, at=a.raised_at, action="raised", objection=a.id, role=a.role,
                                participant=a.participant, name=a.name, text=a.text)
            else:
                await self._log(exam, ev.BREAK_REQUEST, at=a.raised_at, action="requested", request=a.id, role=a.role,
                                participant=a.participant, name=a.name, reason=a.text)
            exam.applications.put(a)
        self._publish_application(exam, a)
        return a

    async def rule_application(self, principal: Principal, aid: str, kind: str, decision: object,
                               reason: object) -> Application:
        async with self._lock:
            exam = self.running()
            if exam.applications.get(aid).kind != kind:
                raise UnknownItem(f"no {kind.replace('-', ' ')} {aid!r} in this session")
            a = exam.applications.rule(aid, decision, reason, by(principal), exam.session.now())
            if kind == "objection":
                await self._log(exam, ev.OBJECTION, at=a.ruled_at, action="ruled", objection=a.id, by=a.ruled_by,
                                decision=a.status, reason=a.reason)
            else:
                await self._log(exam, ev.BREAK_REQUEST, at=a.ruled_at, action="ruled", request=a.id, by=a.ruled_by,
                                decision=a.status, reason=a.reason)
            exam.applications.put(a)
        self._publish_application(exam, a)
        if kind == "break-request" and a.status == "granted":
            await self.call_break(principal, a.text or f"break requested by the {a.role}", request=a.id)
        return a

    # ------------------------------------------------------------ breaks

    async def set_break_mode(self, principal: Principal, mode: object) -> str:
        async with self._lock:
            exam = self.running()
            exam.breaks.mode = exam.breaks.check_mode(mode)
            await self._log(exam, ev.BREAK_MODE, mode=exam.breaks.mode, by=by(principal))
        self._publish_break(exam)
        return exam.breaks.mode

    async def call_break(self, principal: Principal, reason: object, request: str | None = None) -> Break:
        async with self._lock:
            exam = self.running()
            s = exam.session
            b = exam.breaks.start(by(principal), reason, s.now(), request=request)
            await self._log(exam, ev.BREAK, at=b.started_at, action="start", **{"break": b.id}, by=b.called_by,
                            reason=b.reason, mode=b.mode, request=request)
            if b.mode == "pause" and s.state is State.RECORDING:
                await asyncio.to_thread(self.station.pause)
                b = dataclasses.replace(b, paused_recording=True)
            elif b.mode == "mark" and s.state in (State.RECORDING, State.PAUSED):
                await asyncio.to_thread(self.station.marker, f"Break {b.id} called: {b.reason}", by(principal))
            exam.breaks.put(b)
        self._publish_break(exam)
        return b

    async def end_break(self, principal: Principal) -> Break:
        async with self._lock:
            exam = self.running()
            s = exam.session
            b = exam.breaks.end(by(principal), s.now())
            await self._log(exam, ev.BREAK, at=b.ended_at, action="end", **{"break": b.id}, by=b.ended_by)
            if b.paused_recording and s.state is State.PAUSED:
                await asyncio.to_thread(self.station.resume)
            elif b.mode == "mark" and s.state in (State.RECORDING, State.PAUSED):
                await asyncio.to_thread(self.station.marker, f"Break {b.id} ended", by(principal))
            exam.breaks.put(b)
        self._publish_break(exam)
        return b

    # ------------------------------------------------------------ privacy mask

    async def set_mask(self, principal: Principal, video: object, audio: object, recording: object) -> dict:
        if not isinstance(video, bool) or not isinstance(audio, bool):
            raise InvalidInput("video and audio must be true or false")
        if recording not in MASK_RECORDING:
            raise InvalidInput("recording must be 'continue' (keep recording while masked) or 'pause'")
        async with self._lock:
            exam = self.running()
            s = exam.session
            if (video or audio) and not self.mask.ready:
                await asyncio.to_thread(self.mask.prepare)
            at = s.now()
            await self._log(exam, ev.PRIVACY_MASK, at=at, video=video, audio=audio, recording=recording,
                            by=by(principal))
            self.mask.set(video, audio)  # viewers' tracks see it with their next packet
            exam.mask_recording = str(recording)
            masked = video or audio
            if masked and recording == "pause" and s.state is State.RECORDING:
                await asyncio.to_thread(self.station.pause)
                exam.mask_paused_recording = True
            elif exam.mask_paused_recording and (not masked or recording == "continue"):
                if s.state is State.PAUSED:
                    await asyncio.to_thread(self.station.resume)
                exam.mask_paused_recording = False
        state = {"video": video, "audio": audio}
        self.bus.publish({"type": "mask", "mask": state}, in_session(exam.id, lambda pr: pr.admitted))
        return {**state, "recording": exam.mask_recording, "paused_recording": exam.mask_paused_recording}

    # ------------------------------------------------------------ talkback

    async def talkback_offer(self, principal: Principal, offer: str):
        exam = self.running()
        if self.earpiece is None:
            raise NoEarpiece("this room has no earpiece for talkback ([earpiece] device in the room profile)")
        if not self.earpiece.is_open:
            await asyncio.to_thread(self.earpiece.open)
        peer, answer = await exam.talkback.answer(offer, principal.participant_id, principal.name, self.live.ice)
        await self._log(exam, ev.TALKBACK, action="connected", participant=principal.participant_id,
                        name=principal.name, stream=peer.id)
        self._publish_talk(exam)
        return peer, answer

    async def talkback_close(self, principal: Principal, peer_id: str) -> None:
        exam = self.current()
        peer = exam.talkback.peers.get(peer_id)
        if peer is None:
            raise UnknownItem("no such talkback connection (already closed?)")
        if peer.participant_id != principal.participant_id:
            raise NotYours("this talkback connection belongs to someone else")
        if exam.talkback.talker == principal.participant_id:
            await self._stop_talk(exam, "microphone disconnected")
        await exam.talkback.close_peer(peer_id, "judge hung up")
        if exam.session.state is not State.ENDED:
            await self._log(exam, ev.TALKBACK, action="disconnected", participant=principal.participant_id,
                            name=principal.name, stream=peer_id)
        self._publish_talk(exam)

    async def talk(self, principal: Principal, on: object) -> dict:
        if not isinstance(on, bool):
            raise InvalidInput("talk needs on: true or false")
        exam = self.running()
        tb = exam.talkback
        me = principal.participant_id
        if on:
            if tb.talker == me:
                tb.keep_talking()
                return self._talk_view(exam, principal)
            if tb.talker is not None:
                raise NotNow("another judge is speaking to the interviewer")
            if not tb.has_peer(me):
                raise NotNow("connect your microphone first")
            at = exam.session.now()
            number = tb.start_talk(me, principal.name, at)
            await self._log(exam, ev.TALKBACK, at=at, action="talk-start", participant=me, name=principal.name,
                            spurt=number)
        elif tb.talker == me:
            await self._stop_talk(exam, "released")
        self._publish_talk(exam)
        return self._talk_view(exam, principal)

    async def _stop_talk(self, exam: SessionExam, reason: str) -> None:
        tb = exam.talkback
        if tb.talker is None:
            return
        who = tb.talker
        name = ""
        with contextlib.suppress(KioskError):
            name = self.live.roster.get(who).name
        at = exam.session.now()
        session = exam.session

        def recorded(entry: dict) -> None:
            # worker thread: the spurt's file is complete. Logged from the loop, never from the worker, which
            # must not wait for the session lock (Station.end holds it while the record flushes the worker).
            fields = {"spurt": entry["number"], "file": entry["file"], "from": entry["from"], "to": entry["to"],
                      "seconds_of_audio": entry["seconds_of_audio"], "bytes": entry["bytes"], "sha256": entry["sha256"]}

            def log_it() -> None:
                if session.state is not State.ENDED:
                    asyncio.ensure_future(self._log(exam, ev.TALKBACK_RECORDED, **fields))

            with contextlib.suppress(RuntimeError):  # the loop is gone: the index still has it
                self.loop.call_soon_threadsafe(log_it)

        tb.stop_talk(at, recorded)
        if session.state is not State.ENDED:
            await self._log(exam, ev.TALKBACK, at=at, action="talk-stop", participant=who, name=name, reason=reason)
        self._publish_talk(exam)

    # ------------------------------------------------------------ counsel channel

    async def counsel_send(self, principal: Principal, text: object) -> dict:
        exam = self.running()
        if not exam.counsel.available:
            other = "the accused is" if principal.role == Role.DEFENCE else "defence counsel is"
            raise NotNow(f"the private channel is not available: {other} not connected")
        body = clean_message(text)
        message = {"type": "counsel", "id": secrets.token_hex(4), "from_role": principal.role.value,
                   "from_name": principal.name, "from": principal.participant_id, "text": body}
        self.bus.publish(message, counsel_audience(exam.id))  # memory only: no log, no file
        return {"type": "counsel-sent", "id": message["id"]}

    # ------------------------------------------------------------ roster changes (on the loop)

    def _roster_changed(self) -> None:
        s = self.station.session
        if s is None:
            return
        exam = self.exams.get(s.info.id)
        if exam is None or s.state is State.ENDED:
            return
        if exam.counsel.update(self.live.participants(s.info.id)):
            c = exam.counsel
            asyncio.ensure_future(self._log(exam, ev.COUNSEL_CHANNEL, state="available" if c.available else "unavailable",
                                            defence=c.defence, accused=c.accused))
            self.bus.publish({"type": "counsel-state", "counsel": c.public()}, counsel_audience(exam.id))
        # a judge who left or was removed can no longer talk, and loses the microphone connection
        tb = exam.talkback
        for peer in list(tb.peers.values()):
            try:
                p = self.live.roster.get(peer.participant_id)
            except KioskError:
                continue
            if p.admission == Admission.REMOVED:
                asyncio.ensure_future(self._drop_talkback(exam, peer.id, "removed"))
            elif not p.connected and tb.talker == p.id:
                asyncio.ensure_future(self._stop_talk(exam, "the judge's page closed"))

    async def _drop_talkback(self, exam: SessionExam, peer_id: str, reason: str) -> None:
        peer = exam.talkback.peers.get(peer_id)
        if peer is None:
            return
        if exam.talkback.talker == peer.participant_id:
            await self._stop_talk(exam, reason)
        await exam.talkback.close_peer(peer_id, reason)

    # ------------------------------------------------------------ for the interviewer's screens

    def open_questions(self) -> list[dict]:
        exam = self.current()
        return [q.for_interviewer() for q in exam.questions.all() if q.status in OPEN_FOR_INTERVIEWER]
