"""`examrec serve`: the recorder service (idle between exams), its control socket and the
examiner's console; what the systemd unit runs."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.profile import chosen_profile_path, load_profile
from sessions import exitcodes
from sessions.cli.repair import repair_interrupted
from sessions.recorder.button import InputButton
from sessions.recorder.control import AlreadyRunning, ControlServer, socket_path
from sessions.recorder.sdnotify import Notifier
if TYPE_CHECKING:
    from sessions.recorder.service import RecorderService

log = logging.getLogger(__name__)

TOKEN_ENV = "EXAMREC_CONSOLE_TOKEN"
LOOP_S = 1.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the recorder service and the examiner's console",
                       description="Run the recorder as a service: idle between exams, an exam started with "
                                   "`examrec start` or the console's Start button, controlled with pause/resume/"
                                   "stop/photo. Prints the console's URL as its first line. Under systemd "
                                   "(Type=notify) it reports READY, STATUS and WATCHDOG.")
    p.add_argument("--profile", type=Path, default=None,
                   help="hardware profile (default: $EXAMREC_PROFILE, else /etc/examrec/profile.toml)")
    p.add_argument("--out", type=Path, default=None, help="output root (default: the profile's `out`)")
    p.add_argument("--bind", default=None, metavar="ADDR",
                   help="address of the console (default: the profile's [console] bind, 127.0.0.1); "
                        f"any other than loopback needs a PIN or token ([console] token or ${TOKEN_ENV})")
    p.add_argument("--port", type=int, default=None, help="port of the console (default: [console] port, 8470; 0: any free)")
    p.add_argument("--no-console", action="store_true", help="no web console (control socket and button only)")
    p.add_argument("--language", choices=("uk", "en"), default=None, help="the console's language (default: [console] language)")
    p.add_argument("--examiner", help="default examiner for every exam (else the profile's [exam] examiner)")
    p.add_argument("--plate", help="default plate (else [exam] plate)")
    p.add_argument("--centre", help="default exam centre (else [exam] centre)")
    p.add_argument("--force", action="store_true", help="start exams even when a mandatory check fails (logged)")
    p.add_argument("--button", type=Path, metavar="DEVICE", help="input event device toggling pause/resume "
                                                                  "(else the profile's [button] device)")
    p.add_argument("--gps", metavar="gpsd://HOST:PORT", help="GPS source instead of the profile's")
    p.add_argument("--pedals", metavar="URL", help="pedal sensor port instead of the profile's")
    p.set_defaults(func=cmd_serve)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    # imported here: the recorder brings PyAV, OpenCV and numpy (0.5 s), which other commands don't need
    from sessions.recorder.service import RecorderService, ServiceSettings
    profile = load_profile(chosen_profile_path(args.profile))
    console = profile.section("console")
    host = args.bind or console["bind"]
    port = console["port"] if args.port is None else args.port
    token = os.environ.get(TOKEN_ENV) or console["token"]
    if not args.no_console and not _loopback(host) and not token:
        print(f"examrec: the console on {host} would be reachable by others: set a PIN or token "
              f"([console] token in the profile, or ${TOKEN_ENV}), or bind 127.0.0.1", file=sys.stderr)
        return exitcodes.USAGE
    out_root = args.out or profile.resolve(profile.out)
    settings = ServiceSettings(examiner=args.examiner, plate=args.plate, centre=args.centre, force=args.force,
                               gps_url=args.gps, pedals_url=args.pedals)
    service = RecorderService(profile, out_root, settings)
    control = ControlServer(socket_path(profile), service.dispatch)
    try:
        control.start()
    except AlreadyRunning as exc:
        print(f"examrec: not serving: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    web = None
    button: InputButton | None = None
    idle_checks_stop = threading.Event()
    try:
        if not args.no_console:
            try:
                web = ConsoleServer(service, host, port, token, args.language or console["language"])
            except OSError as exc:
                print(f"examrec: the console cannot listen on {host}:{port}: {exc.strerror}; "
                      f"choose another --port or --bind", file=sys.stderr)
                return exitcodes.USAGE
            service.console_url = web.url
            print(f"console: {web.url}", flush=True)   # the first line of output, always
            web.start()
        else:
            print(f"control: {control.path}", flush=True)
        if out_root.exists():
            for report in repair_interrupted(out_root):
                print(f"examrec: repaired interrupted session {report.session} (last frame kept at "
                      f"{report.last_pts_s} s)", file=sys.stderr)
        service.open_idle_sensors()
        threading.Thread(target=service.keep_warm, args=(idle_checks_stop,), name="standby", daemon=True).start()
        device = args.button or (Path(profile.section("button")["device"]) if profile.section("button")["device"] else None)
        if device is not None:
            button = InputButton(device, lambda code: log.info("button: %s", service.dispatch({"cmd": "toggle"})),
                                 key_code=profile.section("button")["key_code"]).start()
        return _main_loop(service, web, control)
    finally:
        if button is not None:
            button.stop()
        idle_checks_stop.set()
        service.close_standby()  # the warm stream processes end (an idle device check in progress first)
        if web is not None:
            web.stop()
        control.stop()


def _main_loop(service: RecorderService, web: "ConsoleServer | None", control: ControlServer) -> int:
    notifier = Notifier()
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    service.on_state.append(lambda state: notifier.status(_status_text(service)))
    notifier.ready(_status_text(service))
    print(f"examrec: serving {service.profile.name}, idle; control socket {control.path}", file=sys.stderr, flush=True)
    interval = min(LOOP_S, notifier.watchdog_s / 2) if notifier.watchdog_s else LOOP_S
    while not stop.wait(interval):
        # The watchdog is fed only while this loop runs, the console's thread lives and a
        # recording exam's loop comes round: a hang of any stops the pings and systemd restarts
        # the service (the interrupted session is repaired at the next start).
        if (web is None or web.alive()) and service.loop_alive():
            notifier.watchdog()
    notifier.stopping()
    notifier.status("stopping: closing the running exam" if service.recorder else "stopping")
    service.request_stop("signal")
    service.join(timeout=60)
    service.close_idle_sensors()
    return exitcodes.OK


def _status_text(service: RecorderService) -> str:
    rec = service.recorder
    if rec is not None and service.state != "idle":
        return f"{service.state} {rec.session_id} ({rec.details.get('candidate', '')})"
    last = service.last
    return "idle" + (f"; last exam {last.session_id}: {last.state}, verify {last.verify}" if last else "")


class ConsoleServer:
    """uvicorn serving the console app on its own thread, on a socket bound here (so a taken port
    is a clear error before anything else starts, and port 0 picks a free one)."""

    def __init__(self, service: RecorderService, host: str, port: int, token: str | None, language: str):
        import uvicorn
        from sessions.web.console.app import create_app
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        bound = self.sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{bound}/"
        app = create_app(service, token=token, language=language)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="console", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
