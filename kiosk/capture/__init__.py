"""Capture sources chosen in the room profile: camera, microphone, file, synthetic."""

from __future__ import annotations

from ..config import RoomProfile, SyntheticScript
from .base import SAMPLE_RATE, AudioSource, SourceStatus, VideoSource

__all__ = ["SAMPLE_RATE", "AudioSource", "SourceStatus", "VideoSource", "build_sources", "open_all"]


def build_sources(room: RoomProfile, language: str | None = None) -> tuple[list[VideoSource], list[AudioSource]]:
    """Instantiate (not open) every source of the room; `language` picks the synthetic script."""
    from .camera import Camera
    from .file import FileCamera, FileMicrophone
    from .microphone import Microphone
    from .synthetic import SyntheticCamera, SyntheticMicrophone

    fps = room.video.fps
    cameras: list[VideoSource] = []
    for spec in room.cameras:
        if spec.kind == "camera":
            cameras.append(Camera(spec, fps))
        elif spec.kind == "file":
            cameras.append(FileCamera(spec))
        else:
            cameras.append(SyntheticCamera(spec, fps))
    lang = language or room.room.language
    script: SyntheticScript | None = room.script.get(lang)
    if script is not None and script.language != lang:
        script = script.model_copy(update={"language": lang})
    mics: list[AudioSource] = []
    for spec in room.microphones:
        if spec.kind == "microphone":
            mics.append(Microphone(spec))
        elif spec.kind == "file":
            mics.append(FileMicrophone(spec))
        else:
            mics.append(SyntheticMicrophone(spec, script))
    return cameras, mics


def open_all(cameras: list[VideoSource], mics: list[AudioSource]) -> None:
    """Open every source or none: on the first failure the ones already open are closed again."""
    opened: list = []
    try:
        for src in [*cameras, *mics]:
            src.open()
            opened.append(src)
    except Exception:
        for src in opened:
            src.close()
        raise
