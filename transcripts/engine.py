"""The recogniser for one microphone channel: vosk, word timings on the session clock, cuts only in quiet.

Why cuts are made this way: a worker that is killed must resume without duplicating or losing words.
Each utterance is therefore closed with `FinalResult()`, which decodes every sample fed so far and makes
vosk start its next utterance from a fresh feature pipeline. The state after a cut depends on nothing
but the audio that follows, so a new recogniser fed from the cut point decodes exactly what the old one
would have. Cuts happen where vosk detects an endpoint, but vosk decides ~0.4 s behind the audio it has
been given; a cut is only made when that tail is quiet, so it never splits a word that has just begun.

Audio is fed in fixed chunks on a grid the caller owns (see worker.py), so endpoint decisions, and with
them the cut points, are the same in every run.
"""

from __future__ import annotations

import bisect
import ctypes
import json
import logging
import threading
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .audio import TARGET_RATE

log = logging.getLogger("transcripts.engine")

CHUNK_SAMPLES = TARGET_RATE // 10  # 0.1 s: the grid of endpoint decisions and checkpoint positions
QUIET_TAIL_SAMPLES = TARGET_RATE // 2  # vosk's endpoint lags the audio by up to ~0.4 s
FRAME = TARGET_RATE // 50  # 20 ms frames for the level check
QUIET_ABS = 32768 * 10 ** (-50 / 20)  # below -50 dBFS is quiet whatever the room
QUIET_CAP = 32768 * 10 ** (-30 / 20)  # above -30 dBFS is never quiet, however noisy the utterance
QUIET_OVER_FLOOR = 4.0  # 12 dB over the utterance's own noise floor still counts as quiet
MAX_UTTERANCE_S = 30.0  # past this, cut at the next endpoint even if the tail is not quiet
HARD_MAX_UTTERANCE_S = 45.0  # and past this, cut regardless (bounds memory and resume work)


# vosk (Kaldi) draws on the C library's global rand() while decoding, so the same audio decodes a little
# differently depending on what the process decoded before. Seeding it before every call from the chunk's
# place in its utterance makes an utterance decode the same in any process: a resumed worker reproduces
# what the killed one would have written.
_srand = ctypes.CDLL(None).srand
_srand.argtypes = [ctypes.c_uint]

# Warm recognisers for reuse within a process. A new KaldiRecognizer composes its decoding graph lazily
# and spends ~2 s of CPU warming that cache; after a cut its state is as good as new, so one that a
# finished transcription hands back makes the next one (e.g. `kiosk transcribe` runs in tests) start warm.
_pool: dict[int, list[tuple[object, int]]] = {}
_pool_lock = threading.Lock()


@cache
def load_model(path: str):
    """Load a vosk model from a directory (never vosk's download-by-language path); cached per process."""
    from vosk import Model, SetLogLevel

    SetLogLevel(-1)
    p = Path(path)
    if not (p / "am").is_dir() and not (p / "conf").is_dir():
        raise FileNotFoundError(f"{p} is not a vosk model folder (no am/ or conf/)")
    log.info("loading vosk model %s", p)
    return Model(model_path=str(p))


@dataclass(frozen=True)
class Word:
    start: float  # session time (s)
    end: float
    conf: float
    word: str
    speaker: str  # the channel's label, e.g. "Interviewer"
    channel: int  # microphone index in room order (0 = stream 2 of a segment)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Word:
        return cls(float(d["start"]), float(d["end"]), float(d["conf"]), str(d["word"]), str(d["speaker"]),
                   int(d["channel"]))


def _frame_rms(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // FRAME
    if n == 0:
        return np.zeros(0)
    x = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    return np.sqrt((x * x).mean(axis=1))


class ChannelRecognizer:
    """Feeds one channel's 16 kHz audio to its own KaldiRecognizer and returns finalised words."""

    def __init__(self, model, channel: int, speaker: str) -> None:
        from vosk import KaldiRecognizer

        self.channel, self.speaker = channel, speaker
        self._model = model
        with _pool_lock:
            pooled = _pool.get(id(model))
            rec, fed = pooled.pop() if pooled else (None, 0)
        if rec is None:
            rec = KaldiRecognizer(model, TARGET_RATE)
            rec.SetWords(True)
        self._rec = rec
        self._fed = fed  # samples given to this recogniser over its life: vosk's own time base
        self._anchors: list[tuple[int, float]] = []  # (fed samples, session time) at each discontinuity
        self._utt_start = fed  # fed-sample count where the current utterance began
        self._tail = np.zeros(0, np.int16)
        self._levels: list[float] = []  # 20 ms RMS levels of the current utterance
        self._calls = 0  # vosk calls since the last cut: the seed of the next one

    def _seed(self) -> None:
        _srand(self._calls)
        self._calls += 1

    @property
    def pending(self) -> bool:
        """True if audio has been fed since the last cut (a cut now could produce words)."""
        return self._fed > self._utt_start

    def begin(self, session_time: float) -> None:
        """The next sample fed is at this session time (call at every discontinuity, e.g. a new segment)."""
        if self._anchors and self._anchors[-1][0] == self._fed:
            self._anchors[-1] = (self._fed, session_time)
        else:
            self._anchors.append((self._fed, session_time))

    def accept(self, chunk: np.ndarray) -> list[Word] | None:
        """Feed one chunk; the finalised words (maybe none) if the utterance was cut here, else None."""
        if not self._anchors:
            raise RuntimeError("begin(session_time) must be called before the first chunk")
        self._seed()
        endpoint = self._rec.AcceptWaveform(chunk.tobytes())
        self._fed += len(chunk)
        self._tail = np.concatenate([self._tail, chunk])[-QUIET_TAIL_SAMPLES:]
        self._levels.extend(_frame_rms(chunk).tolist())
        length = (self._fed - self._utt_start) / TARGET_RATE
        if length >= HARD_MAX_UTTERANCE_S or (endpoint and (length >= MAX_UTTERANCE_S or self._tail_quiet())):
            return self.cut()
        return None

    def _tail_quiet(self) -> bool:
        if len(self._tail) < QUIET_TAIL_SAMPLES:
            return False  # too little audio since the last cut to know
        floor = float(np.percentile(self._levels, 10)) if self._levels else 0.0
        threshold = min(QUIET_CAP, max(QUIET_ABS, QUIET_OVER_FLOOR * floor))
        return float(_frame_rms(self._tail).max(initial=0.0)) <= threshold

    def cut(self) -> list[Word]:
        """Finalise the current utterance (all audio fed so far) and return its words on the session clock."""
        self._seed()
        result = json.loads(self._rec.FinalResult())
        self._calls = 0
        self._utt_start = self._fed
        self._tail = np.zeros(0, np.int16)
        self._levels = []
        return [self._word(w) for w in result.get("result", [])]

    def _word(self, w: dict) -> Word:
        return Word(start=round(self.session_time(float(w["start"])), 3),
                    end=round(self.session_time(float(w["end"])), 3),
                    conf=round(float(w.get("conf", 0.0)), 4), word=str(w["word"]),
                    speaker=self.speaker, channel=self.channel)

    def close(self) -> None:
        """Hand the recogniser back for reuse in this process (only between utterances)."""
        if self._rec is not None and not self.pending:
            with _pool_lock:
                _pool.setdefault(id(self._model), []).append((self._rec, self._fed))
        self._rec = None

    def session_time(self, stream_s: float) -> float:
        """Map a time in vosk's stream (seconds of audio fed) to the session clock."""
        samples = stream_s * TARGET_RATE
        keys = [a[0] for a in self._anchors]
        i = max(0, bisect.bisect_right(keys, samples + 1e-6) - 1)
        fed, t = self._anchors[i]
        return t + (samples - fed) / TARGET_RATE
