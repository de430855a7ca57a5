"""`examrec devices`: what is connected, and the profile line for each device."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sessions import exitcodes


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:2947")
    return host or "127.0.0.1", int(port)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list cameras, sound inputs, serial ports, gpsd and X displays",
                       description="List what is connected, in the terms a hardware profile uses: V4L2 cameras "
                                   "with their formats, sizes and rates and their stable /dev/v4l/by-id (or "
                                   "by-path) names, sound inputs, serial ports, whether gpsd answers, and the X "
                                   "displays. Each entry shows the profile line that would use it. Read-only.")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--gpsd", type=_host_port, default=None, metavar="HOST:PORT",
                   help="where to look for gpsd (default 127.0.0.1:2947)")
    # Where sysfs, /dev and the X sockets are: for a copied tree (tests, a rescue system).
    p.add_argument("--sys-root", type=Path, default=Path("/sys"), help=argparse.SUPPRESS)
    p.add_argument("--dev-root", type=Path, default=Path("/dev"), help=argparse.SUPPRESS)
    p.add_argument("--x11-dir", type=Path, default=Path("/tmp/.X11-unix"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_devices)


def cmd_devices(args: argparse.Namespace) -> int:
    # imported here: device discovery brings OpenCV's and PyAV's neighbours (numpy), which other commands don't need
    from sessions.recorder.devices import GPSD_DEFAULT, discover, format_report
    found = discover(sys_root=args.sys_root, dev_root=args.dev_root, gpsd=args.gpsd or GPSD_DEFAULT, x11_dir=args.x11_dir)
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
    else:
        print(format_report(found))
    return exitcodes.OK
