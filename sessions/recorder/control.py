"""The running recorder's control socket: `examrec status|pause|resume|stop|photo` talk to it.

A Unix domain socket (mode 0600, so only the recorder's user can control it), one JSON request
line, one JSON answer line. The socket also marks the profile as in use: a second recorder on
the same profile finds it answering and refuses to start.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


class AlreadyRunning(Exception):
    """Another recorder answers on this socket."""


class NoRecorder(Exception):
    """No recorder answers (not running, or another socket path)."""


class SeveralRecorders(NoRecorder):
    """More than one recorder answers and the command did not say which: a usage matter (the
    command needs --socket or --profile), not an unreachable recorder."""


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    return Path(base) / "examrec" if base else Path("/run/examrec")


def socket_path(profile) -> Path:
    """Where the recorder for ``profile`` listens: the profile's `control_socket`, or
    `$XDG_RUNTIME_DIR/examrec/<profile>.sock`, or `/run/examrec/<profile>.sock`."""
    if getattr(profile, "control_socket", None):
        return profile.resolve(profile.control_socket)
    return runtime_dir() / f"{profile.name}.sock"


def request(path: Path, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a running recorder and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(payload, ensure_ascii=False).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoRecorder(f"no recorder is running on {path}") from None
    except OSError as exc:
        raise NoRecorder(f"cannot reach the recorder on {path}: {exc}") from None
    return json.loads(data.decode() or "{}")


def find_socket(explicit: Path | None = None) -> Path:
    """The socket to talk to: the one given, else the only one in the runtime folder."""
    if explicit is not None:
        return explicit
    found = sorted(runtime_dir().glob("*.sock")) if runtime_dir().is_dir() else []
    live = []
    for p in found:
        try:
            request(p, {"cmd": "ping"}, timeout=2)
            live.append(p)
        except NoRecorder:
            continue
    if len(live) == 1:
        return live[0]
    if not live:
        raise NoRecorder(f"no recorder is running (no socket answers in {runtime_dir()})")
    raise SeveralRecorders(f"several recorders are running; choose one with --profile or --socket: {', '.join(map(str, live))}")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(1 << 20)
        try:
            req = json.loads(line.decode() or "{}")
            answer = self.server.dispatch(req)  # type: ignore[attr-defined]
        except Exception as exc:  # an answer, never a dead control thread
            log.exception("control request failed")
            answer = {"ok": False, "error": f"internal error: {exc}"}
        self.wfile.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ControlServer:
    """Serves commands to ``dispatch(request) -> answer`` on a Unix socket."""

    def __init__(self, path: Path, dispatch: Callable[[dict[str, Any]], dict[str, Any]]):
        self.path = Path(path)
        self.dispatch = dispatch
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.path.exists():
            try:
                status = request(self.path, {"cmd": "status"}, timeout=2)
            except NoRecorder:
                self.path.unlink()  # left by a recorder that died: nobody listens
            else:
                raise AlreadyRunning(f"another recorder is already running on {self.path} "
                                     f"(state {status.get('state')}, session {status.get('session_id')})")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        old = os.umask(0o177)  # the socket is born 0600: only this user controls the recorder
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._server.dispatch = self.dispatch  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
