"""Kiosk settings and room profiles: TOML files validated into typed models.

Every mistake in a file is reported as a ConfigError naming the file, the dotted key and the expected
form, so a technician can fix a room without reading code. Unknown keys are errors (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = REPO_ROOT / "config" / "kiosk.toml"
ROOMS_DIR = REPO_ROOT / "rooms"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ---------------------------------------------------------------- kiosk settings


class StorageSettings(Strict):
    data_dir: Path = Path("data")
    min_free_mb: int = Field(512, ge=0)
    max_session_minutes: int = Field(180, ge=1)
    warn_free_minutes: int = Field(30, ge=0)


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=1, le=65535)
    public_url: str = ""


class RecordingSettings(Strict):
    segment_seconds: float = Field(10.0, ge=1.0, le=600.0)
    fragment_seconds: float = Field(0.5, gt=0.0, le=1.0)


class EncoderSettings(Strict):
    video_codec: Literal["libx264"] = "libx264"
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    video_bitrate_kbps: int = Field(2500, ge=100, le=50000)
    keyframe_interval_s: float = Field(2.0, gt=0.0, le=10.0)
    keyframe_min_gap_s: float = Field(0.5, ge=0.0, le=10.0)
    audio_codec: Literal["opus"] = "opus"
    audio_bitrate_kbps: int = Field(64, ge=16, le=510)
    threads: int = Field(2, ge=1, le=16)


class CourtRecipient(Strict):
    name: str
    recipient: str = Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")


class CustodySettings(Strict):
    kiosk_id: str = "kiosk-demo"
    recipients: list[CourtRecipient] = []
    ledger_url: str = ""  # empty: in-process ledger in the data dir; else the court ledger service
    ledger_origin: str = Field("testimony-kiosk/ledger", pattern=r"^[^\s+]+$")
    ledger_vkey: str = ""  # pin the remote ledger's checkpoint key (name+id+key); empty: trust on first use
    ledger_token_file: str = ""  # file (0600) with the ledger service's client token: append and look up
    ledger_enrol_token_file: str = ""  # file (0600) with its admin token, sent only to enrol this kiosk's key

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url(cls, value: str) -> str:
        """A typo here would leave every segment unledgered until someone noticed: refuse it at start."""
        if value and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError("expected the ledger service's http:// or https:// URL, e.g. "
                             "https://ledger.court.example/")
        return value


class TranscriptionSettings(Strict):
    enabled: bool = True
    models_dir: Path = Path("models")
    models: dict[str, Path] = {}  # language -> model directory (overrides models_dir/<lang>)
    nice: int = Field(10, ge=0, le=19)  # the worker yields CPU to capture and encoding; it catches up later


class TurnServer(Strict):
    urls: list[str]
    username: str = ""
    credential: str = ""


class LiveSettings(Strict):
    stun_urls: list[str] = []
    turn: list[TurnServer] = []
    invite_ttl_minutes: int = Field(120, ge=1, le=7 * 24 * 60)
    link_stats_seconds: float = Field(5.0, ge=1.0, le=60.0)


class RetentionPolicy(Strict):
    """How long the court keeps a case type's recordings: exactly one of keep_years, until, until_order.
    Deletion always needs an order reference; the policy says when a recording is due for one."""

    match: list[str] = []  # case-reference patterns (shell-style, e.g. "CP-*"); "default" needs none
    keep_years: int | None = Field(None, ge=1, le=200)  # from the session's recording date
    until: dt.date | None = None
    until_order: bool = False

    @model_validator(mode="after")
    def _one_rule(self) -> RetentionPolicy:
        rules = [self.keep_years is not None, self.until is not None, self.until_order]
        if sum(rules) != 1:
            raise ValueError("a retention policy sets exactly one of keep_years, until or until_order = true")
        return self


class ClerkSettings(Strict):
    """Clerk mode (court side): where the sealed store and the court identity are; retention per case type."""

    store_dir: Path | None = None  # copy of the sealed store (session folders); default: <data_dir>/sessions
    identity_file: Path | None = None  # the court's age identity (plain or passphrase-protected, as `age -p` makes)
    exports_dir: Path | None = None  # export packages and retrieved recordings; default: <data_dir>/clerk/exports
    kiosk_keys: list[str] = []  # pin: kiosk OpenSSH public keys (lines or files); empty: anchored by the ledger
    retention: dict[str, RetentionPolicy] = {"default": RetentionPolicy(until_order=True)}


class Settings(Strict):
    storage: StorageSettings = StorageSettings()
    server: ServerSettings = ServerSettings()
    recording: RecordingSettings = RecordingSettings()
    encoder: EncoderSettings = EncoderSettings()
    custody: CustodySettings = CustodySettings()
    transcription: TranscriptionSettings = TranscriptionSettings()
    live: LiveSettings = LiveSettings()
    clerk: ClerkSettings = ClerkSettings()


# ---------------------------------------------------------------- room profiles


class RoomInfo(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    name: str
    language: str = "en"


class VideoLayout(Strict):
    width: int = Field(1280, ge=160, le=3840, multiple_of=2)
    height: int = Field(720, ge=120, le=2160, multiple_of=2)
    fps: int = Field(30, ge=1, le=60)
    layout: Literal["pip", "side_by_side", "single"] = "pip"
    pip_scale: float = Field(0.3, gt=0.05, lt=0.9)


class CameraSource(Strict):
    name: str
    kind: Literal["camera"]
    device: int | str = 0  # index, /dev/videoN, or a media path (VideoCapture opens both)
    width: int | None = None
    height: int | None = None
    fps: int | None = None


class FileVideoSource(Strict):
    name: str
    kind: Literal["file"]
    path: Path
    loop: bool = True


class SyntheticVideoSource(Strict):
    name: str
    kind: Literal["synthetic"]
    scene: Literal["room", "closeup"] = "room"
    flash_every_s: float = Field(0.0, ge=0.0)  # A/V sync probe: white frame + beep


VideoSourceSpec = Annotated[CameraSource | FileVideoSource | SyntheticVideoSource, Field(discriminator="kind")]


class MicrophoneSource(Strict):
    name: str
    role: str
    kind: Literal["microphone"]
    device: int | str = "default"  # PortAudio index or (part of) the device name
    sample_rate: int = 48000
    channel: int = Field(0, ge=0)  # which channel of a multi-channel device


class FileAudioSource(Strict):
    name: str
    role: str
    kind: Literal["file"]
    path: Path
    loop: bool = True
    channel: int = Field(0, ge=0)


class SyntheticAudioSource(Strict):
    name: str
    role: str
    kind: Literal["synthetic"]
    voice: str = "en"  # espeak-ng voice
    flash_every_s: float = Field(0.0, ge=0.0)  # beeps in step with the synthetic camera's flash


AudioSourceSpec = Annotated[
    MicrophoneSource | FileAudioSource | SyntheticAudioSource, Field(discriminator="kind")
]


class ScriptLine(Strict):
    at: float = Field(ge=0.0)
    role: str
    text: str


class SyntheticScript(Strict):
    language: str = "en"
    repeat_every_s: float = Field(0.0, ge=0.0)
    lines: list[ScriptLine] = []


class EarpieceOutput(Strict):
    device: int | str  # PortAudio output device for judge talkback; never the room speaker
    sample_rate: int = 48000


class RoomProfile(Strict):
    room: RoomInfo
    video: VideoLayout = VideoLayout()
    cameras: list[VideoSourceSpec] = Field(min_length=1, max_length=4)
    microphones: list[AudioSourceSpec] = Field(min_length=1, max_length=8)
    script: dict[str, SyntheticScript] = {}  # language -> scripted interview for synthetic mics
    earpiece: EarpieceOutput | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> RoomProfile:
        for group in (self.cameras, self.microphones):
            names = [s.name for s in group]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"source names must be unique, repeated: {sorted(dup)}")
        return self


# ---------------------------------------------------------------- loading


def _format_loc(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("camera", "file", "synthetic", "microphone"):
            continue  # discriminator tags pydantic adds to the path
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except PermissionError:
        raise ConfigError(str(path), "", "file not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


def _validate(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _format_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config/kiosk.toml or rooms/demo.toml)"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown source kind {err.get('input', {}).get('kind')!r}; expected one of {err['ctx']['expected_tags']}"
        elif "input" in err and not isinstance(err["input"], dict | list):
            msg = f"{msg} (got {err['input']!r})"
        raise ConfigError(str(path), key, msg) from None


def load_settings(path: Path | str | None = None) -> Settings:
    """Read kiosk settings; KIOSK_CONFIG names the file when no path is given."""
    p = Path(path or os.environ.get("KIOSK_CONFIG") or DEFAULT_SETTINGS)
    settings = _validate(Settings, _read_toml(p), p)
    if env_dir := os.environ.get("KIOSK_DATA_DIR"):
        settings.storage.data_dir = Path(env_dir)
    return settings


def resolve_room_path(name_or_path: str | Path) -> Path:
    """Accept `demo`, `rooms/demo.toml` or an absolute path."""
    p = Path(name_or_path)
    if p.suffix != ".toml" and not p.exists():
        p = ROOMS_DIR / f"{p}.toml"
    return p


def load_room(name_or_path: str | Path) -> RoomProfile:
    path = resolve_room_path(name_or_path)
    room = _validate(RoomProfile, _read_toml(path), path)
    # relative media paths in a room profile are relative to the profile's folder
    for spec in [*room.cameras, *room.microphones]:
        if spec.kind == "file" and not spec.path.is_absolute():
            spec.path = (path.parent / spec.path).resolve()
    return room
