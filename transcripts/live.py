"""Station side of live transcription: one worker process per recording session.

The worker is a separate, lower-priority process (transcripts/worker.py), so the capture loop never
waits for speech recognition; when it falls behind it simply catches up after the session ends. The
station creates this once and calls session_created / session_ended; on start-up, resume() restarts
workers for sessions a crash or reboot left unfinished (a worker resumes from its journal).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from kiosk.config import Settings
from kiosk.media import segments as seg_files

from .models import ModelMissing, find_model, transcribe_command
from .source import HOLDER
from .worker import read_status, transcript_dir, write_pending

log = logging.getLogger("transcripts.live")


class LiveTranscriber:
    def __init__(self, settings: Settings, config_path: str | Path | None = None,
                 on_ready: Callable[[Path, dict], None] | None = None) -> None:
        """on_ready(session_dir, status) runs (in a watcher thread) when a session's transcript is complete,
        e.g. to seal and ledger it."""
        self.settings = settings
        self.config_path = str(config_path) if config_path else None
        self.on_ready = on_ready
        self._procs: dict[Path, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def wants_audio(self, language: str) -> bool:
        """Whether segments should be held for the transcriber (a model exists for the language)."""
        try:
            return find_model(self.settings, language) is not None
        except ModelMissing:
            return False

    # ------------------------------------------------------------ lifecycle hooks

    def session_created(self, session) -> dict:
        return self.spawn(session.dir, session.info.language)

    def session_ended(self, session) -> dict:
        """Does not wait: the worker finishes on its own once it has read the last segment."""
        return self.status(session.dir)

    def spawn(self, session_dir: Path, language: str) -> dict:
        session_dir = Path(session_dir).resolve()
        with self._lock:
            proc = self._procs.get(session_dir)
            if proc is not None and proc.poll() is None:
                return self.status(session_dir)
            cmd = [sys.executable, "-m", "transcripts.worker", str(session_dir), "--follow",
                   "--nice", str(self.settings.transcription.nice)]
            if self.config_path:
                cmd += ["--config", self.config_path]
            try:
                model = find_model(self.settings, language)
                if model is None:
                    raise ModelMissing(language, f"no vosk model is installed for '{language}'", str(session_dir))
                cmd += ["--model", str(model.path), "--model-name", model.name]
            except ModelMissing as exc:
                exc.command = transcribe_command(language, str(session_dir))
                write_pending(transcript_dir(session_dir), exc)  # visible at once; the worker only releases
                cmd += ["--pending", exc.reason]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
            self._procs[session_dir] = proc
            log.info("transcription worker %d started for %s", proc.pid, session_dir.name)
        threading.Thread(target=self._watch, args=(session_dir, proc), name="transcriber-watch",
                         daemon=True).start()
        return self.status(session_dir)

    def _watch(self, session_dir: Path, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        status = read_status(transcript_dir(session_dir))
        if rc != 0:
            log.error("transcription worker for %s exited with %d; `kiosk transcribe %s` resumes it",
                      session_dir.name, rc, session_dir)
        elif status.get("state") == "complete" and self.on_ready is not None:
            try:
                self.on_ready(session_dir, status)
            except Exception:
                log.exception("transcript of %s is complete but the on_ready hook failed", session_dir.name)

    def status(self, session_dir: Path) -> dict:
        session_dir = Path(session_dir).resolve()
        status = read_status(transcript_dir(session_dir)) or {"state": "starting"}
        proc = self._procs.get(session_dir)
        if proc is not None:
            status["worker"] = {"pid": proc.pid, "running": proc.poll() is None, "exit": proc.poll()}
        status["dir"] = str(transcript_dir(session_dir))
        return status

    def wait(self, session_dir: Path, timeout: float | None = None) -> dict:
        """Block until the session's worker has finished (for the demo and tests); returns its status."""
        proc = self._procs.get(Path(session_dir).resolve())
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.status(session_dir)

    def resume(self, sessions_root: Path) -> list[Path]:
        """Restart workers for sessions whose transcript is unfinished (segments still held, or a worker
        that was running when the kiosk stopped)."""
        started = []
        if not sessions_root.is_dir():
            return started
        for session_dir in sorted(p for p in sessions_root.iterdir() if (p / "session.json").exists()):
            held = any(seg_files.segments_dir(session_dir).glob(f"*.hold-{HOLDER}"))
            state = read_status(transcript_dir(session_dir)).get("state")
            if held or state in ("running", "starting"):
                language = json.loads((session_dir / "session.json").read_text()).get("language", "und")
                self.spawn(session_dir, language)
                started.append(session_dir)
        if started:
            log.info("resumed transcription of %d session(s)", len(started))
        return started

    def close(self, timeout: float = 5.0) -> None:
        """Workers keep running on their own (they finish the transcript); nothing to stop here."""
        with self._lock:
            self._procs = {k: p for k, p in self._procs.items() if p.poll() is None}
