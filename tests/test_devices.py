"""`examrec devices` and the discovery behind it: cameras from a sysfs/udev tree and
v4l2-ctl captures in tests/data/v4l2/, and a real gpsd, a real Xvfb and a real PulseAudio for
the rest."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from capture.v4l2 import CameraCaps, parse_v4l2_ctl
from device_harness import gpsd, pulseaudio, require, xvfb
from sessions.cli import app as cli
from sessions.recorder.devices import discover, format_report, list_v4l2, list_x_displays, probe_gpsd

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "v4l2"
C920_ID = "usb-046d_HD_Pro_Webcam_C920_A1B2C3D4-video-index0"
ELP_PATH = "pci-0000:00:14.0-usb-0:2:1.0-video-index0"


def captured_caps(node: str) -> CameraCaps:
    """What the driver would answer, from the captures: index0 nodes are pictures, index1 metadata."""
    name = Path(node).name
    if name in ("video1", "video3"):
        return CameraCaps(path=node, capture=False)
    text = (DATA / ("c920-list-formats-ext.txt" if name == "video0" else "elp-usbfhd01m-list-formats-ext.txt")).read_text()
    return parse_v4l2_ctl(text, node)


def test_cameras_from_sysfs_and_udev_links() -> None:
    devs = list_v4l2(DATA / "sys", DATA / "dev", captured_caps)
    assert [Path(d.node).name for d in devs] == ["video0", "video1", "video2", "video3"]
    c920, meta, elp, _ = devs
    assert c920.name == "HD Pro Webcam C920" and c920.index == 0 and c920.capture
    assert c920.usb == {"vendor_id": "046d", "product_id": "082d", "product": "HD Pro Webcam C920", "serial": "A1B2C3D4"}
    assert c920.stable_path == str(DATA / "dev" / "v4l" / "by-id" / C920_ID)
    assert c920.by_path == [str(DATA / "dev" / "v4l" / "by-path" / "pci-0000:00:14.0-usb-0:1:1.0-video-index0")]
    assert not meta.capture and meta.index == 1
    # no serial number: identical cameras would share a by-id name, so the USB port names it
    assert "serial" not in elp.usb and elp.stable_path == str(DATA / "dev" / "v4l" / "by-path" / ELP_PATH)
    j = c920.to_json()
    mjpg = next(f for f in j["formats"] if f["fourcc"] == "MJPG")
    assert {"width": 1920, "height": 1080, "fps": [30.0, 24.0, 20.0, 15.0, 10.0, 7.5, 5.0]} in mjpg["sizes"]
    json.dumps(j)
    text = format_report({"cameras": [d.to_json() for d in devs], "audio": {"inputs": [], "error": None},
                          "serial": [], "gpsd": probe_gpsd("127.0.0.1", 1, 0.2), "displays": []})
    assert f'profile: source = "v4l2:{DATA}/dev/v4l/by-id/{C920_ID}"' in text
    assert "MJPG 1920x1080@30/24/20/15/10/7.5/5, 1600x896@30/24/20/15/10/7.5/5" in text
    assert "USB 2.0 Camera: USB Camera [05a3:9230] (no serial number: named by its USB port)" in text
    assert "(video1, video3: metadata nodes of the cameras above, not pictures)" in text


def test_cameras_the_driver_cannot_be_asked_about() -> None:
    def refuse(node: str) -> CameraCaps:
        raise PermissionError(errno.EACCES, "Permission denied")
    devs = list_v4l2(DATA / "sys", DATA / "dev", refuse)
    assert [d.capture for d in devs] == [True, False, True, False]     # from sysfs's index
    assert all(d.error == "Permission denied" and d.caps is None for d in devs)
    assert list_v4l2(DATA / "nowhere", DATA / "dev") == []


def test_gpsd_probe_real_gpsd_and_impostors(tmp_path: Path) -> None:
    require("gpsd")
    with gpsd(tmp_path) as port:
        g = probe_gpsd("127.0.0.1", port)
    assert g["reachable"] and g["version"] and g["version"][0].isdigit() and g["error"] is None, g
    # nothing listening
    closed = probe_gpsd("127.0.0.1", port, timeout_s=0.5)
    assert not closed["reachable"] and "refused" in closed["error"].lower()
    # something else listening (a web server, say)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def answer() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    other = probe_gpsd("127.0.0.1", srv.getsockname()[1])
    srv.close()
    assert not other["reachable"] and "not like gpsd" in other["error"]


def test_x_displays_running_and_stale(tmp_path: Path) -> None:
    require("Xvfb")
    with xvfb(800, 600) as x:
        found = {d["display"]: d for d in list_x_displays()}
        assert found[x.display]["running"] and found[x.display]["size"] == "800x600"
    stale = tmp_path / "x11"
    stale.mkdir()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale / "X7"))
    s.close()                                           # socket file left, nobody listening
    assert list_x_displays(stale) == [{"display": ":7", "socket": str(stale / "X7"), "running": False,
                                       "size": None, "error": None}]


def test_examrec_devices_command(tmp_path: Path) -> None:
    """The real CLI in a subprocess, with a real gpsd, Xvfb and PulseAudio running."""
    require("gpsd", "Xvfb", "pulseaudio")
    assert "sessions.cli.devices" in cli.COMMAND_MODULES
    with gpsd(tmp_path) as port, xvfb(640, 480) as x, pulseaudio(tmp_path) as _:
        base = [sys.executable, "-m", "sessions.cli", "devices", "--gpsd", f"127.0.0.1:{port}",
                "--sys-root", str(DATA / "sys"), "--dev-root", str(DATA / "dev")]
        proc = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ))
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
        text = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ))
    assert text.returncode == 0, text.stderr
    assert [Path(c["node"]).name for c in found["cameras"]] == ["video0", "video1", "video2", "video3"]
    assert found["cameras"][0]["stable_path"].endswith(C920_ID)
    names = {a["name"] for a in found["audio"]["inputs"]}
    assert {"pulse", "default"} <= names and found["audio"]["error"] is None
    assert found["gpsd"]["reachable"] and found["gpsd"]["address"] == f"127.0.0.1:{port}"
    assert {"display": x.display, "running": True, "size": "640x480"}.items() <= \
        next(d for d in found["displays"] if d["display"] == x.display).items()
    assert isinstance(found["serial"], list)
    out = text.stdout
    assert f'profile: gps = "gpsd://127.0.0.1:{port}"' in out
    assert 'profile: audio = "mic:default"' in out
    assert f'{x.display} (640x480)    profile: source = "x11:{x.display}"' in out
    assert f"by-id/{C920_ID}" in out
    bad = subprocess.run([sys.executable, "-m", "sessions.cli", "devices", "--gpsd", "nonsense"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr


def test_discover_is_json_serialisable_on_this_machine() -> None:
    json.dumps(discover(gpsd=("127.0.0.1", 1)))
