"""Bad room profiles and settings are refused with the file, the key and the expected form."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.config import load_room, load_settings
from kiosk.errors import ConfigError
from tests.conftest import REPO, run_kiosk, write_room


def test_shipped_profiles_and_settings_load():
    settings = load_settings(REPO / "config" / "kiosk.toml")
    assert settings.recording.segment_seconds == 10.0
    demo = load_room("demo")
    assert [c.kind for c in demo.cameras] == ["synthetic", "synthetic"]
    standard = load_room(REPO / "rooms" / "standard.toml")
    assert [c.kind for c in standard.cameras] == ["camera", "camera"]
    assert [m.role for m in standard.microphones] == ["interviewer", "witness"]


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (lambda s: s.replace('kind = "synthetic"\nscene = "room"', 'kind = "hologram"\nscene = "room"'),
         "cameras[0]", "unknown source kind 'hologram'"),
        (lambda s: s.replace("fps = 15", "fps = 'fast'"), "video.fps", "valid integer"),
        (lambda s: s.replace("width = 320", "width = 321"), "video.width", "multiple of 2"),
        (lambda s: s.replace('layout = "pip"', 'layout = "pip"\nzoom = 3'), "video.zoom", "unknown key"),
        (lambda s: s.replace('role = "witness"\nkind', 'kind'), "microphones[1].role", "Field required"),
        (lambda s: s.replace("[room]", "[room"), "", "not valid TOML"),
    ],
)
def test_malformed_room_profile_names_file_and_key(tmp_path: Path, edit, key, words):
    path = write_room(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as err:
        load_room(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert words in str(err.value)


def test_malformed_settings_name_the_key(tmp_path: Path):
    path = tmp_path / "kiosk.toml"
    path.write_text("[recording]\nsegment_seconds = -3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.key == "recording.segment_seconds"
    assert "greater than or equal to 1" in str(err.value)
    path.write_text("[custody]\nrecipients = [{ name = 'court', recipient = 'age1notakey' }]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.key == "custody.recipients[0].recipient"
    path.write_text("[custody]\nledger_url = 'htp:/ledger.court.example'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert err.value.key == "custody.ledger_url" and "http:// or https:// URL" in str(err.value)
    path.write_text("[custody]\nledger_url = 'https://ledger.court.example:8443/v1'\n")
    assert load_settings(path).custody.ledger_url == "https://ledger.court.example:8443/v1"


@pytest.mark.parametrize("seconds", ["0", "-5", "ten"])
def test_demo_refuses_a_recording_length_that_is_not_positive(tmp_path: Path, seconds):
    data = tmp_path / "data"
    proc = run_kiosk("demo", "--seconds", seconds, "--data-dir", str(data), "--no-live")
    assert proc.returncode == 2 and "--seconds" in proc.stderr and "Traceback" not in proc.stderr
    assert not data.exists()


def test_cli_refuses_bad_profile_with_one_line_and_writes_nothing(tmp_path: Path):
    room = write_room(tmp_path)
    room.write_text(room.read_text().replace('kind = "synthetic"\nscene = "room"', 'kind = "hologram"'))
    data = tmp_path / "data"
    proc = run_kiosk("demo", "--seconds", "1", "--room", str(room), "--data-dir", str(data), "--no-live")
    assert proc.returncode == 2
    assert f"{room}: cameras[0]: unknown source kind 'hologram'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(data.rglob("session.json")), "a refused profile must not leave a session behind"


@pytest.mark.parametrize(
    ("camera", "words"),
    [
        ('kind = "camera"\ndevice = "/dev/video9"', "cannot open device '/dev/video9'"),
        ('kind = "file"\npath = "missing.mp4"', "media file not found"),
        ('kind = "file"\npath = "notmedia.mp4"', "cannot read media file"),
    ],
)
def test_missing_device_or_unreadable_file_is_refused_before_recording(tmp_path: Path, camera, words):
    (tmp_path / "notmedia.mp4").write_text("this is not a video")
    room = write_room(tmp_path)
    room.write_text(room.read_text().replace('kind = "synthetic"\nscene = "room"\nflash_every_s = 0.0', camera))
    data = tmp_path / "data"
    proc = run_kiosk("demo", "--seconds", "1", "--room", str(room), "--data-dir", str(data), "--no-live")
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert not any(data.rglob("session.json"))
