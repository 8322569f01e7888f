"""The room station: one per room, owning the current session, its sources and its media pipeline.

Everything the console, the API, the demo and the CLI do to a session goes through here, so the rules
(one session at a time, recording only in the recording state, seal and transcribe when segments close)
live in one place. All methods are synchronous and thread-safe.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from . import __version__
from .capture import build_sources, open_all
from .capture.presence import PresenceCache
from .config import RoomProfile, Settings
from .errors import DiskFull, SealError, SessionStateError
from .media.hub import PacketHub
from .media.pipeline import MediaPipeline, recording_bytes_per_second
from .media.recovery import recover_sessions
from .session import Session, SessionClock, State

log = logging.getLogger("kiosk.station")


class Station:
    def __init__(self, settings: Settings, room: RoomProfile, data_dir: Path | None = None,
                 clock_factory=SessionClock, seal: bool = True) -> None:
        self.settings = settings
        self.room = room
        self.data_dir = Path(data_dir or settings.storage.data_dir).resolve()
        self.sessions_root = self.data_dir / "sessions"
        self.sessions_root.mkdir(parents=True, exist_ok=True)
        self.hub = PacketHub(keyframe_min_gap_s=settings.encoder.keyframe_min_gap_s)
        self.presence = PresenceCache(room)  # devices between sessions, when none is open
        self.session: Session | None = None
        self.pipeline: MediaPipeline | None = None
        self._lock = threading.RLock()
        self._clock_factory = clock_factory
        self.custody = self._load_custody() if seal else None  # seal=False: recording-only tests and benches
        self._artifact_lock = threading.Lock()
        self.transcriber = self._load_transcriber()
        self.recovered = recover_sessions(self.sessions_root)
        if self.custody is not None:
            self.custody.recover(self.data_dir)
            self._seal_finished_transcripts()
            self._finish_records()
        if self.transcriber is not None:
            self.transcriber.resume(self.sessions_root)

    # ------------------------------------------------------------ optional capabilities

    def _load_custody(self):
        try:
            from .custody.sealer import Sealer
        except ImportError:
            return None
        return Sealer(self.settings, self.data_dir)

    def _load_transcriber(self):
        if not self.settings.transcription.enabled:
            return None
        try:
            from transcripts.live import LiveTranscriber
        except ImportError:
            return None
        return LiveTranscriber(self.settings, on_ready=self.seal_transcript)

    def seal_transcript(self, session_dir: Path, status: dict | None = None) -> dict | None:
        """Seal a complete transcript to the court and ledger it; the plaintext words leave the kiosk.
        Called by the transcriber's watcher when a worker finishes, by the demo, and at start-up."""
        if self.custody is None:
            return None
        from transcripts.worker import plaintext_files

        with self._artifact_lock:
            files = plaintext_files(Path(session_dir))
            from .custody.artifacts import record_path

            if not files and not record_path(Path(session_dir), "transcript").exists():
                return None
            try:
                return self.custody.seal_artifacts(Path(session_dir), "transcript", files)
            except SealError as exc:
                log.error("transcript of %s not sealed yet: %s", Path(session_dir).name, exc)
                return None

    def _finish_records(self) -> None:
        """Sessions that ended by crash recovery, or whose record was not sealed: build and seal it now."""
        from .custody.artifacts import record_path

        for d in sorted(p for p in self.sessions_root.iterdir() if (p / "manifest.json").exists()):
            if record_path(d, "record").exists():
                continue
            if not (d / "record").is_dir():
                session = Session.load(d)
                if self._build_record(session, {}) is None:
                    continue
            self._seal_record(d)

    def _seal_finished_transcripts(self) -> None:
        """A transcript finished while the kiosk was down (or before a crash) is sealed now."""
        try:
            from transcripts.worker import read_status, transcript_dir
        except ImportError:
            return
        for d in sorted(p for p in self.sessions_root.iterdir() if (p / "session.json").exists()):
            if read_status(transcript_dir(d)).get("state") == "complete":
                self.seal_transcript(d)

    # ------------------------------------------------------------ disk

    def bytes_per_second(self) -> float:
        return recording_bytes_per_second(self.settings, self.room)

    def disk_status(self) -> dict:
        usage = shutil.disk_usage(self.data_dir)
        minutes = usage.free / self.bytes_per_second() / 60
        return {"free_bytes": usage.free, "minutes_left": round(minutes, 1),
                "warn": minutes < self.settings.storage.warn_free_minutes}

    def _check_disk(self) -> None:
        st = self.settings.storage
        need = st.max_session_minutes * 60 * self.bytes_per_second() + st.min_free_mb * 2**20
        free = shutil.disk_usage(self.data_dir).free
        if free < need:
            raise DiskFull(f"not enough free space in {self.data_dir}: {free / 2**20:.0f} MiB free, "
                           f"{need / 2**20:.0f} MiB needed for a {st.max_session_minutes}-minute session")

    # ------------------------------------------------------------ session lifecycle

    def create_session(self, case_reference: str, interviewee_pseudonym: str, interviewer: str,
                       language: str | None = None) -> Session:
        """Prepare a session: sources open and the picture is live (preview), nothing is recorded yet."""
        with self._lock:
            if self.session is not None and self.session.state is not State.ENDED:
                raise SessionStateError(f"session {self.session.info.id} is still {self.session.state.value}")
            self._check_disk()
            language = language or self.room.room.language
            cameras, mics = build_sources(self.room, language)
            open_all(cameras, mics)  # raises DeviceUnavailable / SourceError before anything is written
            session = Session.create(self.sessions_root, self.room.room.id, case_reference,
                                     interviewee_pseudonym, interviewer, language, clock=self._clock_factory())
            session.record("devices", cameras=[c.facts() for c in cameras], microphones=[m.facts() for m in mics])
            # holds are taken when a segment opens, so no release can delete plaintext that is not sealed
            transcribe = self.transcriber is not None and self.transcriber.wants_audio(language)
            holders = tuple(name for name, on in (("seal", self.custody is not None),
                                                  ("transcriber", transcribe)) if on)
            self.pipeline = MediaPipeline(self.room, self.settings, session, self.hub, cameras, mics,
                                          holders=holders, on_segment_closed=self._segment_closed)
            self.pipeline.start()
            self.session = session
            if self.transcriber is not None:
                self.transcriber.session_created(session)
            return session

    def _require(self) -> Session:
        if self.session is None:
            raise SessionStateError("no session: create one first")
        return self.session

    def _segment_closed(self, session_dir: Path, seg) -> None:
        if self.custody is not None:
            self.custody.on_segment_closed(session_dir, seg)

    def start(self) -> dict:
        with self._lock:
            session = self._require()
            entry = session.transition("start")
            self.pipeline.start_recording()
            return entry

    def pause(self) -> dict:
        with self._lock:
            session = self._require()
            if session.state is not State.RECORDING:
                raise SessionStateError(f"cannot pause a session that is {session.state.value}")
            self.pipeline.stop_recording()
            return session.transition("pause")

    def resume(self) -> dict:
        with self._lock:
            session = self._require()
            entry = session.transition("resume")
            self.pipeline.start_recording()
            return entry

    def marker(self, label: str, by: str = "operator") -> dict:
        with self._lock:
            return self._require().marker(label, by)

    def end(self) -> dict:
        """Stop recording, close sources, then seal what was recorded (manifest, ledger) and transcribe."""
        with self._lock:
            session = self._require()
            if session.state is State.ENDED:
                raise SessionStateError("the session has already ended")
            self.pipeline.stop_recording()
            stats = self.pipeline.stats
            entry = session.transition("end", frames_encoded=stats.frames_encoded,
                                       frames_dropped=stats.frames_dropped, segments=stats.segments_closed)
            facts = self.facts()
            self.pipeline.stop()
            result = {"event": entry, "session_dir": str(session.dir)}
            record = self._build_record(session, facts)
            if self.transcriber is not None:
                result["transcript"] = self.transcriber.session_ended(session)
            if self.custody is not None:
                try:
                    result["seal"] = self.custody.finish_session(session, facts)
                except SealError as exc:  # e.g. remote ledger down: completed at next start-up
                    session.record("seal-incomplete", error=str(exc),
                                   note="sealing is finished at the next start or by `kiosk seal recover`")
                    result["seal"] = {"verified": False, "error": str(exc)}
                else:
                    result["sealed_artifacts"] = self._seal_record(session.dir)
            if record is not None:
                result["record"] = str(record.json)
            return result

    def _build_record(self, session: Session, facts: dict):
        """The session record (who was present, every question and ruling) goes into the signed facts."""
        try:
            from .examination.record import build_session_record, record_facts
        except ImportError:
            return None
        try:
            files = build_session_record(session.dir)
        except Exception:  # noqa: BLE001 - a record bug must not stop the recording from being sealed
            log.exception("session record of %s could not be built; `kiosk session-record` rebuilds it",
                          session.info.id)
            return None
        facts["session_record"] = record_facts(files, session.dir)
        return files

    def _seal_record(self, session_dir: Path) -> list[str]:
        """Seal the record and the judge's talkback spurts (question text and a voice: court-only)."""
        sealed = []
        for kind, folder in (("record", "record"), ("talkback", "talkback")):
            files = [p for p in sorted((session_dir / folder).glob("*"))
                     if p.is_file() and not p.name.endswith(".age") and p.name != "sealed.json"]
            from .custody.artifacts import record_path

            if not files and not record_path(session_dir, kind).exists():
                continue
            with self._artifact_lock:
                try:
                    self.custody.seal_artifacts(session_dir, kind, files)
                    sealed.append(kind)
                except SealError as exc:
                    log.error("%s of %s not sealed yet: %s", kind, session_dir.name, exc)
        return sealed

    def talkback_sink(self, pcm, session_time: float) -> None:
        """The judge's push-to-talk audio (float32 mono 48 kHz): recorded as its own track. Never blocks."""
        p = self.pipeline
        if p is not None and p.talkback is not None:
            p.talkback.push(pcm)

    def facts(self) -> dict:
        """Device and software facts for the manifest."""
        p = self.pipeline
        return {
            "kiosk_id": self.settings.custody.kiosk_id,
            "software": {"name": "testimony-kiosk", "version": __version__},
            "room": {"id": self.room.room.id, "name": self.room.room.name},
            "cameras": [c.facts() for c in p.cameras] if p else [],
            "microphones": [m.facts() for m in p.mics] if p else [],
            "encoder": self.settings.encoder.model_dump(),
            "video": self.room.video.model_dump(),
            "recording": self.settings.recording.model_dump(),
        }

    def status(self) -> dict:
        p = self.pipeline
        running = p is not None and self.session is not None and self.session.state is not State.ENDED
        return {
            "session": self.session.public_summary() if self.session else None,
            "devices": [s.status.as_dict() for s in [*p.cameras, *p.mics]] if running else [],
            "audio_levels": p.levels() if running else {},
            "recording": bool(running and p.recording),
            "disk": self.disk_status(),
            "viewers": self.hub.subscriber_count,
            "health": self.health(),
        }

    def media_running(self) -> bool:
        """True while the media thread produces pictures (live viewers can be fed)."""
        p = self.pipeline
        return bool(p and p.alive and p.stats.frames_encoded > 0)

    def health(self) -> dict:
        """What /healthz and the console status strip show: no names, no case data, no secrets."""
        from .session import clock_sync_state

        items: list[dict] = []
        p = self.pipeline
        running = p is not None and self.session is not None and self.session.state is not State.ENDED
        if running:
            for src in [*p.cameras, *p.mics]:
                items.append({"item": f"device:{src.name}", "ok": src.status.state == "ok",
                              "detail": src.status.state})
            items.append({"item": "media", "ok": p.progressing,
                          "detail": "running" if p.progressing else ("stalled" if p.alive else "stopped")})
        else:
            for seen in self.presence.get():
                items.append({"item": f"device:{seen.name}", "ok": seen.present, "detail": f"idle, {seen.detail}"})
        disk = self.disk_status()
        items.append({"item": "disk", "ok": not disk["warn"] and not (p and p.disk_full),
                      "detail": f"{disk['free_bytes'] / 2**30:.1f} GiB free, ~{disk['minutes_left']:.0f} min of recording"})
        if self.custody is not None:
            try:
                size = self.custody.ledger.size()
                items.append({"item": "ledger", "ok": True, "detail": f"reachable, {size} entries"})
            except Exception as exc:  # noqa: BLE001 - unreachable service is exactly what we report
                items.append({"item": "ledger", "ok": False, "detail": f"unreachable: {type(exc).__name__}"})
        sync = clock_sync_state()
        items.append({"item": "clock", "ok": bool(sync["synchronised"]),
                      "detail": "synchronised" if sync["synchronised"] else "not synchronised (NTP)"})
        if self.transcriber is not None:
            alive = self.transcriber.alive() if hasattr(self.transcriber, "alive") else True
            items.append({"item": "transcriber", "ok": alive, "detail": "alive" if alive else "not running"})
        critical = [i for i in items if not i["ok"] and i["item"] in ("media", "disk", "ledger")]
        return {"status": "ok" if all(i["ok"] for i in items) else ("failing" if critical else "degraded"),
                "recording": bool(running and p.recording), "items": items,
                "disk": {"free_bytes": disk["free_bytes"], "minutes_left": disk["minutes_left"]}}

    def wait_transcript(self, session_dir: Path, timeout: float = 300) -> dict | None:
        """Block until the session's transcript is finished and sealed (demo, tests); returns its status."""
        if self.transcriber is None:
            return None
        status = self.transcriber.wait(session_dir, timeout)
        if status.get("state") == "complete":
            sealed = self.seal_transcript(session_dir)
            if sealed is not None:
                status["sealed"] = {"ledger_index": sealed["ledger_index"],
                                    "files": [f["file"] for f in sealed["files"]]}
        return status

    def close(self) -> None:
        with self._lock:
            if self.session is not None and self.session.state is not State.ENDED:
                self.end()
            elif self.pipeline is not None:
                self.pipeline.stop()
            if self.custody is not None:
                self.custody.close()
