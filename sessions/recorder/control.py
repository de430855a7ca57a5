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

from core.profile import NAME_RE

log = logging.getLogger(__name__)


MAX_REQUEST_BYTES = 64 * 1024  # a request is a command and a few short fields
MAX_FIELD_CHARS = 200
PHOTO_ROLES = ("candidate", "examiner")
# The fields each command may carry, and what each field may hold (None: may be absent or null).
COMMANDS: dict[str, tuple[str, ...]] = {
    "ping": (), "status": (), "stop": (),
    "pause": ("reason", "plate"), "resume": ("plate",),
    "photo": ("role", "stream"),
    # the recorder service's (`examrec serve`): start an exam, acknowledge a fault, the button
    "start": ("details", "force", "wait"), "ack": ("fault", "by"), "toggle": ("reason",),
}
FLAGS = ("force", "wait")
MAX_DETAILS = 16


class RequestError(ValueError):
    """A control request that is not one the recorder understands; the message says why (one line)."""


def _field(req: dict[str, Any], key: str) -> None:
    value = req[key]
    if value is None:
        return
    if key in FLAGS:
        if not isinstance(value, bool):
            raise RequestError(f"{key}: must be true or false")
        return
    if key == "fault":
        if type(value) is not int or not 0 <= value < 2**31:
            raise RequestError("fault: must be a fault number")
        return
    if key == "details":
        if not isinstance(value, dict) or len(value) > MAX_DETAILS:
            raise RequestError(f"details: must be an object of at most {MAX_DETAILS} text fields")
        for name, text in value.items():
            _field({str(name)[:40]: text}, str(name)[:40])
        return
    if not isinstance(value, str):
        raise RequestError(f"{key}: must be text, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise RequestError(f"{key}: {len(value)} characters; at most {MAX_FIELD_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{key}: not valid Unicode text") from None
    if key == "role" and value not in PHOTO_ROLES:
        raise RequestError(f"role {value[:40]!r}: allowed {', '.join(PHOTO_ROLES)}")
    if key == "stream" and not NAME_RE.match(value):
        raise RequestError(f"stream {value[:40]!r} is not a stream name (lowercase letters, digits, '-', '_')")


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a checked dict (``cmd`` and only the fields that command takes); raises
    RequestError for anything else: not JSON, not an object, an unknown command or field, a
    field of the wrong type or too long, a photo role other than candidate/examiner (a role
    becomes part of a file name), a stream that is no stream name."""
    if len(line) > MAX_REQUEST_BYTES:
        raise RequestError(f"request of {len(line)} bytes; at most {MAX_REQUEST_BYTES}")
    if not line.endswith(b"\n"):
        raise RequestError("request not ended by a newline")
    try:
        req = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"not a JSON request ({str(exc)[:80]})") from None
    if not isinstance(req, dict):
        raise RequestError(f"a request is a JSON object, got {type(req).__name__}")
    cmd = req.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise RequestError(f"unknown command {str(cmd)[:40]!r}; known: {', '.join(COMMANDS)}")
    unknown = sorted(k[:40] for k in req if k != "cmd" and k not in COMMANDS[cmd])
    if unknown:
        raise RequestError(f"{cmd}: unknown field(s) {unknown}; it takes {', '.join(COMMANDS[cmd]) or 'none'}")
    for key in COMMANDS[cmd]:
        if key in req:
            _field(req, key)
    return req


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
    timeout = 5.0  # a client that connects and sends nothing does not keep a thread for ever

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            req = parse_request(line)
        except RequestError as exc:
            log.warning("control: refused a malformed request: %s", exc)
            self._answer({"ok": False, "error": f"malformed request: {exc}"})
            return
        except OSError as exc:  # timed out, or the client went away
            log.warning("control: request not read: %s", exc)
            return
        try:
            answer = self.server.dispatch(req)  # type: ignore[attr-defined]
        except Exception as exc:  # an answer, never a dead control thread
            log.error("control: %s request failed: %s: %s", req.get("cmd"), type(exc).__name__, exc)
            log.debug("control request failed", exc_info=True)
            answer = {"ok": False, "error": f"internal error: {exc}"}
        self._answer(answer)

    def _answer(self, answer: dict[str, Any]) -> None:
        try:
            self.wfile.write(json.dumps(answer, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
        except OSError:
            pass  # the client did not wait for the answer


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
