"""The shipped hardware profiles (vehicle, theory-room, body-worn) and the systemd unit: they
load through the real validator, ask for what the regulations ask, build the right sources,
and on a machine without the hardware each device is refused with a plain message naming it."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from capture.base import SourceUnavailable
from capture.factory import audio_source, video_source
from capture.ipcam import IPCameraSource
from capture.microphone import MicrophoneSource
from capture.screen import ScreenSource
from capture.v4l2 import V4L2Source
from core.profile import load_profile

PROFILES = Path(__file__).resolve().parent.parent / "hw-profiles"
UNIT = PROFILES / "systemd" / "examrec.service"


def test_vehicle_profile() -> None:
    p = load_profile(PROFILES / "vehicle.toml")
    assert (p.name, p.kind) == ("vehicle", "vehicle")
    assert [s.name for s in p.streams] == ["cabin", "road-front", "controls"]
    assert all(s.source.startswith("v4l2:/dev/v4l/by-") for s in p.streams)   # stable names, never videoN
    assert p.audio_stream.name == "cabin" and p.audio_stream.audio.startswith("mic:")
    assert p.gps == "gpsd://127.0.0.1:2947" and p.pedals == "serial:///dev/ttyUSB0?baud=115200"
    for s in p.streams:
        assert {"datetime", "duration", "name", "pedals", "stage"} <= set(s.overlay.fields)
    assert "speed" in p.stream("cabin").overlay.fields and "speed" in p.stream("road-front").overlay.fields
    assert p.section("retention")["months"] == 3
    assert p.section("photos") == {"candidate": "cabin", "examiner": "cabin"}
    assert all(isinstance(video_source(s, p), V4L2Source) for s in p.streams)
    assert isinstance(audio_source(p.audio_stream, p), MicrophoneSource)


def test_vehicle_rear_camera_block_uncomments_as_documented(tmp_path: Path) -> None:
    text = (PROFILES / "vehicle.toml").read_text()
    block = text[text.index("# [[streams]]"):]
    lines = block.splitlines()
    assert len(lines) == 6 and all(ln.startswith("# ") for ln in lines)
    edited = tmp_path / "vehicle.toml"
    edited.write_text(text.replace(block, "\n".join(ln[2:] for ln in lines) + "\n"))
    p = load_profile(edited)
    assert [s.name for s in p.streams] == ["cabin", "road-front", "controls", "road-rear"]


def test_theory_room_profile() -> None:
    p = load_profile(PROFILES / "theory-room.toml")
    assert (p.name, p.kind) == ("theory-room", "theory-room")
    assert [s.name for s in p.streams] == ["candidate", "examiner", "room", "screen"]
    kinds = [type(video_source(s, p)) for s in p.streams]
    assert kinds == [IPCameraSource, IPCameraSource, IPCameraSource, ScreenSource]
    for s in p.streams:
        assert "speed" not in s.overlay.fields and "pedals" not in s.overlay.fields
        assert {"datetime", "duration", "name"} <= set(s.overlay.fields)
        if s.name != "screen":
            assert s.credentials.startswith(("ENV:", "/")) and "@" not in s.source   # no password in the profile
    assert p.stream("screen").draw_mouse and p.stream("screen").source == "x11::0"
    assert p.audio_stream.name == "candidate"
    assert p.section("photos") == {"candidate": "candidate", "examiner": "examiner"}


def test_body_worn_profile() -> None:
    p = load_profile(PROFILES / "body-worn.toml")
    assert (p.name, p.kind) == ("body-worn", "body-worn")
    assert len(p.streams) == 1 and p.streams[0].audio == "mic:Body Camera"
    assert p.section("retention")["months"] == 36
    assert p.section("upload")["on_charge_only"] is True


def test_missing_devices_are_named_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `examrec check` shows on a machine where the hardware is not plugged in."""
    vehicle = load_profile(PROFILES / "vehicle.toml")
    for s in vehicle.streams:
        path = s.source[len("v4l2:"):]
        with pytest.raises(SourceUnavailable) as err:
            video_source(s, vehicle).open()
        assert str(err.value) == (f"camera {s.name}: {path} not found: is it plugged in? "
                                  "`examrec devices` lists what is connected")
    room = load_profile(PROFILES / "theory-room.toml")
    # credentials are resolved before any connection: nothing is sent to the rig's addresses here
    monkeypatch.delenv("EXAMREC_CAM_CANDIDATE", raising=False)
    with pytest.raises(SourceUnavailable, match="camera candidate: credentials variable EXAMREC_CAM_CANDIDATE is not set"):
        video_source(room.stream("candidate"), room).open()
    if not Path("/etc/examrec/room-camera.secret").exists():
        with pytest.raises(SourceUnavailable, match=r"camera room: credentials file /etc/examrec/room-camera.secret not found"):
            video_source(room.stream("room"), room).open()


def test_systemd_unit() -> None:
    text = UNIT.read_text()
    keys = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert keys["Restart"] == "on-failure" and keys["KillSignal"] == "SIGTERM"
    assert keys["WantedBy"] == "multi-user.target"
    # the service repairs interrupted sessions itself before the first exam
    assert keys["ExecStart"].endswith("serve --profile /etc/examrec/profile.toml")
    assert keys["StandardOutput"] == keys["StandardError"] == "journal"
    # the vehicle profile records into the unit's StateDirectory
    assert keys["StateDirectory"] == "examrec"
    assert load_profile(PROFILES / "vehicle.toml").out == "/var/lib/examrec/recordings"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: install the packages in .ci/apt-packages"
    # verify checks that the programs exist: point them at one that does
    unit = tmp_path / "examrec.service"
    unit.write_text(UNIT.read_text().replace("/opt/examrec/.venv/bin/examrec", "/bin/true"))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "examrec.service" not in proc.stderr, proc.stderr
