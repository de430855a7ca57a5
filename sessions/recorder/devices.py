"""What is connected to this machine, in the terms a profile uses: V4L2 cameras with their
formats, sizes and rates, sound inputs, serial ports, gpsd, X displays.

Behind `examrec devices`; an installer reads it to write a profile (each entry carries the
line to put in it), and a failed `examrec check` points here. Every probe is read-only and
bounded in time: nothing is opened for streaming, nothing waits more than a second.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from capture.v4l2 import CameraCaps, parse_v4l2_ctl, query_caps

log = logging.getLogger(__name__)

GPSD_DEFAULT = ("127.0.0.1", 2947)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


# --- cameras ---------------------------------------------------------------------------------
@dataclass
class V4L2Device:
    """One /dev/videoN node as sysfs, udev's links and the driver describe it."""

    node: str
    name: str
    index: int
    by_id: list[str] = field(default_factory=list)
    by_path: list[str] = field(default_factory=list)
    usb: dict[str, str] = field(default_factory=dict)
    capture: bool | None = None           # None: the driver could not be asked
    caps: CameraCaps | None = None
    error: str | None = None

    @property
    def stable_path(self) -> str:
        """The name to put in a profile. by-id survives reboots and moving the plug, videoN
        numbers do not; but by-id is built from the serial number, and identical cameras
        without one would share it, so those are named by their USB port (by-path)."""
        if self.by_id and self.usb.get("serial"):
            return self.by_id[0]
        return (self.by_path or self.by_id or [self.node])[0]

    def profile_line(self) -> str:
        return f'source = "v4l2:{self.stable_path}"'

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "caps"}
        out["stable_path"] = self.stable_path
        out["formats"] = [
            {"fourcc": f.fourcc, "description": f.description,
             "sizes": [{"width": s.width, "height": s.height, "fps": list(s.fps),
                        **({"fps_range": list(s.fps_range)} if s.fps_range else {})} for s in f.sizes],
             **({"stepwise": list(f.stepwise)} if f.stepwise else {})}
            for f in (self.caps.formats if self.caps else [])]
        return out


def read_caps(node: str) -> CameraCaps:
    """Ask the driver (ioctls); when that fails and v4l2-ctl is installed, ask v4l2-ctl."""
    try:
        return query_caps(node)
    except OSError as exc:
        tool = shutil.which("v4l2-ctl")
        if tool:
            proc = subprocess.run([tool, "-d", node, "--list-formats-ext"], capture_output=True, text=True, timeout=5)
            if proc.returncode == 0:
                return parse_v4l2_ctl(proc.stdout, node)
        raise exc


def _links_to(target: Path, folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    real = os.path.realpath(target)
    return sorted(str(p) for p in folder.iterdir() if p.is_symlink() and os.path.realpath(p) == real)


def _usb_info(class_entry: Path) -> dict[str, str]:
    # /sys/class/video4linux/videoN -> .../<usb device>/<interface>/video4linux/videoN
    usb = class_entry.resolve().parent.parent.parent
    info = {}
    for key, attr in (("vendor_id", "idVendor"), ("product_id", "idProduct"), ("manufacturer", "manufacturer"),
                      ("product", "product"), ("serial", "serial")):
        value = _read(usb / attr)
        if value:
            info[key] = value
    return info


def list_v4l2(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"),
              caps_reader: Callable[[str], CameraCaps] | None = read_caps) -> list[V4L2Device]:
    """Every video4linux node, with udev's stable links and (when it can be asked) what it offers."""
    class_dir = sys_root / "class" / "video4linux"
    if not class_dir.is_dir():
        return []
    entries = sorted((p for p in class_dir.iterdir() if p.name.startswith("video")),
                     key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 1 << 30)
    out = []
    for entry in entries:
        node = dev_root / entry.name
        index_text = _read(entry / "index")
        dev = V4L2Device(node=str(node), name=_read(entry / "name"), index=int(index_text) if index_text.isdigit() else 0,
                         by_id=_links_to(node, dev_root / "v4l" / "by-id"),
                         by_path=_links_to(node, dev_root / "v4l" / "by-path"), usb=_usb_info(entry))
        if caps_reader is not None:
            try:
                dev.caps = caps_reader(str(node))
                dev.capture = dev.caps.capture
            except OSError as exc:
                dev.error = exc.strerror or str(exc)
            except Exception as exc:  # a broken driver must not break the listing
                dev.error = str(exc)
        if dev.capture is None:
            # UVC gives every camera a second node for metadata; index 0 is the picture.
            dev.capture = dev.index == 0
        out.append(dev)
    return out


# --- sound, serial, gpsd, X ------------------------------------------------------------------
def list_audio_inputs() -> dict[str, Any]:
    try:
        from capture.microphone import input_devices
        return {"inputs": input_devices(), "error": None}
    except Exception as exc:  # PortAudio missing, or no sound system at all
        return {"inputs": [], "error": str(exc)}


def list_serial_ports(dev_root: Path = Path("/dev")) -> list[dict[str, Any]]:
    try:
        from serial.tools import list_ports
    except ImportError as exc:
        return [{"error": f"pyserial missing: {exc}"}]
    out = []
    for p in sorted(list_ports.comports(include_links=False), key=lambda p: p.device):
        by_id = _links_to(Path(p.device), dev_root / "serial" / "by-id")
        if p.hwid in (None, "n/a") and not by_id:
            continue  # the legacy on-board UARTs every PC lists (ttyS0..): nothing plugged in
        out.append({"device": p.device, "description": p.description, "hwid": p.hwid,
                    "manufacturer": p.manufacturer, "serial_number": p.serial_number, "by_id": by_id,
                    "stable_path": (by_id or [p.device])[0]})
    return out


def probe_gpsd(host: str = GPSD_DEFAULT[0], port: int = GPSD_DEFAULT[1], timeout_s: float = 1.0) -> dict[str, Any]:
    """Connect and read gpsd's greeting (its VERSION object); never sends a command."""
    result: dict[str, Any] = {"address": f"{host}:{port}", "reachable": False, "version": None, "error": None}
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        result["error"] = exc.strerror or str(exc) or type(exc).__name__
        return result
    line = data.split(b"\n", 1)[0]
    try:
        msg = json.loads(line)
    except ValueError:
        result["error"] = f"answers, but not like gpsd: {line[:60]!r}"
        return result
    if msg.get("class") != "VERSION":
        result["error"] = f"answers {msg.get('class')!r} instead of gpsd's VERSION"
        return result
    result.update(reachable=True, version=msg.get("release"), protocol=f"{msg.get('proto_major')}.{msg.get('proto_minor')}")
    return result


def list_x_displays(socket_dir: Path = Path("/tmp/.X11-unix")) -> list[dict[str, Any]]:
    from capture.screen import XcbPing, x_server_listening
    out = []
    if not socket_dir.is_dir():
        return out
    for sock in sorted(socket_dir.glob("X*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 1 << 30):
        if not sock.name[1:].isdigit():
            continue
        display = f":{sock.name[1:]}"
        entry: dict[str, Any] = {"display": display, "socket": str(sock), "running": x_server_listening(str(sock)),
                                 "size": None, "error": None}
        if entry["running"]:
            try:
                ping = XcbPing(display)
                size = ping.screen_size()
                ping.close()
                entry["size"] = f"{size[0]}x{size[1]}" if size else None
            except OSError as exc:
                entry["error"] = f"refused us ({exc}): the recorder's user needs access (xhost +si:localuser:USER)"
        out.append(entry)
    return out


# --- everything ------------------------------------------------------------------------------
def discover(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"), gpsd: tuple[str, int] = GPSD_DEFAULT,
             x11_dir: Path = Path("/tmp/.X11-unix"),
             caps_reader: Callable[[str], CameraCaps] | None = read_caps) -> dict[str, Any]:
    """Everything `examrec devices --json` prints."""
    return {
        "cameras": [d.to_json() for d in list_v4l2(sys_root, dev_root, caps_reader)],
        "audio": list_audio_inputs(),
        "serial": list_serial_ports(dev_root),
        "gpsd": probe_gpsd(*gpsd),
        "displays": list_x_displays(x11_dir),
    }


def _sizes_line(fmt: dict) -> str:
    parts = []
    for s in sorted(fmt["sizes"], key=lambda s: -s["width"] * s["height"]):
        rates = "/".join(f"{r:g}" for r in s["fps"]) or ("{:g}-{:g}".format(*s["fps_range"]) if s.get("fps_range") else "?")
        parts.append(f"{s['width']}x{s['height']}@{rates}")
    if fmt.get("stepwise"):
        w0, w1, _, h0, h1, _ = fmt["stepwise"]
        parts.append(f"{w0}x{h0}..{w1}x{h1}")
    return ", ".join(parts)


def format_report(found: dict[str, Any]) -> str:
    """The human-readable listing, each device with the profile line that names it."""
    lines: list[str] = []
    cams = found["cameras"]
    lines.append("Cameras (V4L2)")
    pictures = [c for c in cams if c["capture"]]
    if not pictures:
        lines.append("  none found (is a camera plugged in? `lsusb` shows USB devices)")
    for c in pictures:
        usb = c["usb"]
        ident = f" [{usb['vendor_id']}:{usb['product_id']}]" if "vendor_id" in usb else ""
        serial = f" serial {usb['serial']}" if "serial" in usb else " (no serial number: named by its USB port)"
        lines.append(f"  {c['name']}{ident}{serial if usb else ''}")
        lines.append(f"    {c['stable_path']}" + (f"  ({c['node']})" if c["stable_path"] != c["node"] else ""))
        if c["error"]:
            lines.append(f"    cannot ask the driver: {c['error']}")
        for f in c["formats"]:
            lines.append(f"    {f['fourcc']:<4} {_sizes_line(f)}")
        lines.append(f"    profile: source = \"v4l2:{c['stable_path']}\"")
    others = [c for c in cams if not c["capture"]]
    if others:
        lines.append("  (" + ", ".join(Path(c["node"]).name for c in others) + ": metadata nodes of the cameras above, not pictures)")
    lines.append("")
    lines.append("Sound inputs")
    audio = found["audio"]
    if audio["error"]:
        lines.append(f"  cannot list them: {audio['error']}")
    elif not audio["inputs"]:
        lines.append("  none found")
    for a in audio["inputs"]:
        default = ", default" if a["default"] else ""
        lines.append(f"  {a['name']} ({a['hostapi']}{default}; {a['channels']} ch, {a['default_samplerate']:g} Hz)"
                     f"    profile: audio = \"mic:{a['name']}\"")
    lines.append("")
    lines.append("Serial ports")
    if not found["serial"]:
        lines.append("  none found (USB serial adapters appear as /dev/ttyUSB* or /dev/ttyACM*)")
    for s in found["serial"]:
        if "error" in s:
            lines.append(f"  {s['error']}")
            continue
        lines.append(f"  {s['device']}: {s['description']} ({s['hwid']})")
        lines.append(f"    profile: pedals = \"serial://{s['stable_path']}?baud=115200\"")
    lines.append("")
    g = found["gpsd"]
    lines.append(f"GPS (gpsd at {g['address']})")
    if g["reachable"]:
        lines.append(f"  gpsd {g['version']} answers    profile: gps = \"gpsd://{g['address']}\"")
    else:
        lines.append(f"  not reachable: {g['error']} (is gpsd installed and running? `systemctl status gpsd`)")
    lines.append("")
    lines.append("X displays")
    if not found["displays"]:
        lines.append("  none found")
    for d in found["displays"]:
        if not d["running"]:
            lines.append(f"  {d['display']}: stale socket, no X server")
        elif d["error"]:
            lines.append(f"  {d['display']}: {d['error']}")
        else:
            lines.append(f"  {d['display']} ({d['size']})    profile: source = \"x11:{d['display']}\"")
    return "\n".join(lines)
