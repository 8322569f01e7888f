"""Real device code paths on a machine without devices: VideoCapture on a file, PyAudio on ALSA file PCMs.

ALSA's `file` plugin over the `null` slave is not paced like a sound card (it delivers as fast as it is
read), so the microphone test reads the device directly rather than through a timed recording.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from kiosk.config import load_room, load_settings
from kiosk.media import segments as seg_files
from kiosk.station import Station
from tests.conftest import REPO, write_room, write_settings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory) -> Path:
    if not shutil.which("ffmpeg"):
        pytest.skip("needs ffmpeg (apt-get install ffmpeg)")
    path = tmp_path_factory.mktemp("cam") / "cam.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15", "-t", "10",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_camera_source_records_a_videocapture_device_at_its_pace(tmp_path: Path, camera_file: Path):
    room_path = write_room(tmp_path, layout="single")
    room_path.write_text(room_path.read_text().replace(
        'kind = "synthetic"\nscene = "room"\nflash_every_s = 0.0', f'kind = "camera"\ndevice = "{camera_file}"'))
    settings = load_settings(write_settings(tmp_path, storage={"min_free_mb": 0, "max_session_minutes": 1}))
    settings.storage.data_dir = tmp_path / "data"
    settings.transcription.enabled = False
    station = Station(settings, load_room(room_path), seal=False)
    session = station.create_session("CAM-1", "Synthetic", "Test")
    cam = station.pipeline.cameras[0]
    station.start()
    time.sleep(3.0)
    read = cam.frames_read
    station.end()
    assert 15 * 2.5 <= read <= 15 * 3.5 + 2, f"camera read {read} frames in 3 s of a 15 fps device"
    assert station.pipeline.stats.frames_slate == 0
    seg = seg_files.list_indexes(session.dir)[0]
    with av.open(str(seg_files.media_path(session.dir, seg.index))) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    # testsrc has saturated colour bars; the synthetic scene and the slate do not
    assert frame.std() > 40


MIC_PROBE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from kiosk.config import MicrophoneSource
    from kiosk.capture.microphone import Microphone
    from kiosk.errors import DeviceUnavailable
    out = {}
    try:
        Microphone(MicrophoneSource(name="x", role="witness", kind="microphone", device="no-such-mic")).open()
    except DeviceUnavailable as exc:
        out["missing"] = str(exc)
    mic = Microphone(MicrophoneSource(name="witness-mic", role="witness", kind="microphone",
                                      device="witness_mic", sample_rate=48000))
    mic.open()
    time.sleep(0.05)
    pcm = mic.pcm(0, 4800)
    out["state"] = mic.status.state
    out["device"] = mic.device_name
    spectrum = np.abs(np.fft.rfft(pcm))
    out["peak_hz"] = float(np.argmax(spectrum) * 48000 / len(pcm))
    out["rms"] = float(np.sqrt(np.mean(pcm ** 2)))
    mic.close()
    print(json.dumps(out))
""")


def test_microphone_source_reads_an_alsa_device_through_pyaudio(tmp_path: Path):
    if not shutil.which("sox"):
        pytest.skip("needs sox (apt-get install sox)")
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        pytest.skip("needs pyaudio (portaudio19-dev)")
    raw = tmp_path / "witness.raw"
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", "-e", "signed", str(raw),
                    "synth", "600", "sine", "440", "vol", "0.5"], check=True)
    (tmp_path / ".asoundrc").write_text(
        f'pcm.witness_mic {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{raw}"\n format "raw"\n}}\n')
    proc = subprocess.run([sys.executable, "-c", MIC_PROBE], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "no audio input device matching 'no-such-mic'" in out["missing"]
    assert "witness_mic" in out["missing"], "the error lists the devices that do exist"
    assert out["device"] == "witness_mic" and out["state"] == "ok"
    assert out["peak_hz"] == pytest.approx(440, abs=15)
    assert out["rms"] > 0.2
    assert np.isfinite(out["rms"])


def test_camera_that_vanishes_shows_slate_and_reconnects_when_it_returns(tmp_path: Path):
    if not shutil.which("ffmpeg"):
        pytest.skip("needs ffmpeg")
    clip = tmp_path / "cam.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15", "-t", "2",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    room_path = write_room(tmp_path, layout="single")
    room_path.write_text(room_path.read_text().replace(
        'kind = "synthetic"\nscene = "room"\nflash_every_s = 0.0', f'kind = "camera"\ndevice = "{clip}"'))
    settings = load_settings(write_settings(tmp_path, storage={"min_free_mb": 0, "max_session_minutes": 1}))
    settings.storage.data_dir = tmp_path / "data"
    settings.transcription.enabled = False
    station = Station(settings, load_room(room_path), seal=False)
    session = station.create_session("CAM-2", "Synthetic", "Test")
    station.start()
    time.sleep(0.8)
    unplugged = tmp_path / "unplugged.mp4"
    clip.rename(unplugged)  # the device goes away; the open handle runs dry at the end of the clip
    time.sleep(3.5)
    unplugged.rename(clip)
    time.sleep(2.5)
    station.end()
    states = [e["state"] for e in session.events() if e["type"] == "device-state"]
    assert "reconnecting" in states or "no-signal" in states, states
    assert states[-1] == "ok", states
    assert station.pipeline.stats.frames_slate > 10


PRESENCE_PROBE = textwrap.dedent("""
    import json, sys
    from kiosk.config import load_room, Settings
    from kiosk.station import Station
    settings = Settings()
    settings.storage.data_dir = sys.argv[2]
    settings.transcription.enabled = False
    station = Station(settings, load_room(sys.argv[1]), seal=False)
    health = station.health()
    print(json.dumps({i["item"]: [i["ok"], i["detail"]] for i in health["items"]} | {"status": health["status"]}))
""")


def test_idle_station_health_says_which_devices_are_there_before_a_session(tmp_path: Path, camera_file: Path):
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        pytest.skip("needs pyaudio (portaudio19-dev)")
    (tmp_path / ".asoundrc").write_text(
        'pcm.witness_mic {\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "/dev/zero"\n format "raw"\n}\n')
    room = tmp_path / "room.toml"
    room.write_text(textwrap.dedent(f"""
        [room]
        id = "devroom"
        name = "Device room"
        language = "en"
        [video]
        width = 320
        height = 240
        fps = 15
        layout = "side_by_side"
        [[cameras]]
        name = "room-view"
        kind = "camera"
        device = 9
        [[cameras]]
        name = "close-up"
        kind = "camera"
        device = "{camera_file}"
        [[microphones]]
        name = "witness-mic"
        role = "witness"
        kind = "microphone"
        device = "witness_mic"
        [[microphones]]
        name = "interviewer-mic"
        role = "interviewer"
        kind = "microphone"
        device = "no-such-mic"
    """))
    proc = subprocess.run([sys.executable, "-c", PRESENCE_PROBE, str(room), str(tmp_path / "data")], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(proc.stdout.strip().splitlines()[-1])
    assert items["device:room-view"] == [False, "idle, /dev/video9 not found"]
    assert items["device:close-up"] == [True, f"idle, {camera_file} present"]
    assert items["device:witness-mic"][0] is True and "witness_mic" in items["device:witness-mic"][1]
    assert items["device:interviewer-mic"][0] is False
    assert "no audio input device matching 'no-such-mic'" in items["device:interviewer-mic"][1]
    assert items["status"] == "degraded", "a missing device between sessions is a warning, not a failure"
