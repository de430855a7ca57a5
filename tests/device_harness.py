"""Real components for the device tests: Xvfb with a Tk window, PulseAudio with a null sink, an
HTTP MJPEG camera, a GStreamer RTSP camera, gpsd; and the timecode their pictures carry.

Imported by the tests (venv Python) and also run as a script by Debian's /usr/bin/python3 for
the parts that need system packages the venv does not have (tkinter, GStreamer through gi):

    /usr/bin/python3 tests/device_harness.py tk-counter --width 640 --height 480 --log FILE
    /usr/bin/python3 tests/device_harness.py rtsp-server --port 8554 --fps 10

So the top level imports only the standard library; numpy and cv2 are imported where used.

Timecode: every test picture is an 8x8 grid of black/white cells over its top area, 64 bits
MSB first: 16-bit frame counter, 40-bit CLOCK_MONOTONIC milliseconds when the picture was made,
8-bit checksum (sum of the first seven bytes). Cells survive JPEG, scaling and x11grab, so a
test can read back what the source delivered and when it was made.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve()
SYSTEM_PYTHON = "/usr/bin/python3"
GRID = 8


# ---------------------------------------------------------------------------------------------
# timecode
def timecode_bits(counter: int, mono_ms: int) -> list[int]:
    """The 64 cell values (0/1) for a picture: counter, monotonic ms, checksum."""
    body = (counter & 0xFFFF).to_bytes(2, "big") + (mono_ms & 0xFF_FFFF_FFFF).to_bytes(5, "big")
    data = body + bytes([sum(body) & 0xFF])
    return [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]


def decode_timecode(image, top_fraction: float = 1.0) -> tuple[int, int] | None:
    """(counter, mono_ms) read from a BGR or gray picture, or None when the checksum fails."""
    import numpy as np
    img = np.asarray(image)
    gray = img.mean(axis=2) if img.ndim == 3 else img.astype(float)
    h = int(gray.shape[0] * top_fraction)
    w = gray.shape[1]
    bits = []
    for r in range(GRID):
        for c in range(GRID):
            y0, y1 = r * h // GRID, (r + 1) * h // GRID
            x0, x1 = c * w // GRID, (c + 1) * w // GRID
            dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
            bits.append(1 if gray[y0 + dy:y1 - dy, x0 + dx:x1 - dx].mean() > 128 else 0)
    data = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, 64, 8))
    if sum(data[:7]) & 0xFF != data[7]:
        return None
    return int.from_bytes(data[:2], "big"), int.from_bytes(data[2:7], "big")


def timecode_gray_bytes(counter: int, mono_ms: int, width: int, height: int) -> bytes:
    """A GRAY8 picture (row-major bytes) carrying the timecode; pure Python for /usr/bin/python3."""
    bits = timecode_bits(counter, mono_ms)
    rows = []
    for r in range(GRID):
        y0, y1 = r * height // GRID, (r + 1) * height // GRID
        row = b"".join(bytes([255 if bits[r * GRID + c] else 0]) * ((c + 1) * width // GRID - c * width // GRID)
                       for c in range(GRID))
        rows.append(row * (y1 - y0))
    return b"".join(rows)


def timecode_bgr(counter: int, mono_ms: int, width: int, height: int):
    import numpy as np
    gray = np.frombuffer(timecode_gray_bytes(counter, mono_ms, width, height), np.uint8).reshape(height, width)
    return np.repeat(gray[:, :, None], 3, axis=2)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


# ---------------------------------------------------------------------------------------------
# Xvfb + a Tk window with a counter
@dataclass
class XServer:
    display: str
    proc: subprocess.Popen
    width: int
    height: int

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def xvfb(width: int = 640, height: int = 480) -> Iterator[XServer]:
    """A fresh Xvfb; -displayfd picks a free display number and tells us when it is ready."""
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    number = ""
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield XServer(f":{number}", proc, width, height)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if number:
            # a killed Xvfb leaves its socket and lock file behind; they would look like a display
            for leftover in (f"/tmp/.X11-unix/X{number}", f"/tmp/.X{number}-lock"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)


@dataclass
class TkCounter:
    """The Tk window process; ``draws()`` reads its log: counter -> (ns before, ns after) the draw."""

    proc: subprocess.Popen
    log: Path

    def draws(self) -> dict[int, tuple[int, int]]:
        out = {}
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out[int(parts[0])] = (int(parts[1]), int(parts[2]))
        return out


@contextlib.contextmanager
def tk_counter(x: XServer, log: Path, interval_ms: int = 50) -> Iterator[TkCounter]:
    env = dict(os.environ, DISPLAY=x.display)
    proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE), "tk-counter", "--width", str(x.width), "--height", str(x.height),
                             "--interval-ms", str(interval_ms), "--log", str(log)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"tk-counter did not start: {line!r} {proc.stderr.read()}")
        yield TkCounter(proc, log)
    finally:
        proc.kill()
        proc.wait()


def _tk_counter_main(args: argparse.Namespace) -> None:
    """Full-screen Tk window: the timecode grid in the top half, the counter as text, a plain
    gray bottom half with the pointer in it. Each tick logs when its drawing began and when the
    X server had certainly processed it (a round trip after the redraw)."""
    import tkinter as tk
    w, h = args.width, args.height
    root = tk.Tk()
    root.overrideredirect(True)
    root.geometry(f"{w}x{h}+0+0")
    canvas = tk.Canvas(root, width=w, height=h, highlightthickness=0, bd=0, bg="#808080")
    canvas.pack()
    cells = []
    gh = h // 2
    for r in range(GRID):
        for c in range(GRID):
            cells.append(canvas.create_rectangle(c * w // GRID, r * gh // GRID, (c + 1) * w // GRID - 1,
                                                 (r + 1) * gh // GRID - 1, width=0, fill="black"))
    text = canvas.create_text(w // 2, gh + 30, text="0", fill="#ffff00", font=("TkFixedFont", 20))
    log = open(args.log, "w", buffering=1)
    state = {"n": 0}

    def tick() -> None:
        state["n"] += 1
        n = state["n"]
        before = time.monotonic_ns()
        for cell, bit in zip(cells, timecode_bits(n, before // 1_000_000)):
            canvas.itemconfigure(cell, fill="white" if bit else "black")
        canvas.itemconfigure(text, text=str(n))
        root.update_idletasks()
        root.winfo_pointerxy()  # round trip: the server has executed the drawing when it returns
        after = time.monotonic_ns()
        log.write(f"{n} {before} {after}\n")
        root.after(args.interval_ms, tick)

    def ready() -> None:
        root.event_generate("<Motion>", warp=True, x=w // 2, y=h * 3 // 4)
        tick()
        print("READY", flush=True)

    root.after(200, ready)
    root.mainloop()


# ---------------------------------------------------------------------------------------------
# PulseAudio with a null sink whose monitor is the default source
@dataclass
class Pulse:
    env: dict[str, str]
    runtime_dir: Path

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def start(self) -> None:
        subprocess.run(["pulseaudio", "--start", "--exit-idle-time=-1", "--disallow-exit"], env=self.env,
                       check=True, capture_output=True, timeout=20)
        if not wait_until(lambda: subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode == 0, 10):
            raise RuntimeError("pulseaudio did not answer")
        self.pactl("load-module", "module-null-sink", "sink_name=v")
        self.pactl("set-default-sink", "v")
        self.pactl("set-default-source", "v.monitor")
        # The first playback stream of a fresh PulseAudio reaches the sink ~0.5 s late (measured
        # with an independent parec); play a second of silence so the test's tones are on time.
        subprocess.run(["pacat", "--playback", "--device=v", "--latency-msec=10", "--raw", "--rate=48000",
                        "--channels=1", "--format=s16le"], input=bytes(96000), env=self.env,
                       capture_output=True, timeout=20)

    def kill(self) -> None:
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        wait_until(lambda: subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0, 5)


@contextlib.contextmanager
def pulseaudio(tmp: Path) -> Iterator[Pulse]:
    """A private PulseAudio (as root: XDG_RUNTIME_DIR mode 700 and HOME of its own). The test
    process's environment points at it, so PortAudio's ALSA 'pulse' plugin finds it."""
    runtime = tmp / "xdg"
    home = tmp / "home"
    runtime.mkdir(mode=0o700)
    home.mkdir()
    os.chmod(runtime, 0o700)
    saved = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "HOME", "PULSE_SERVER")}
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(home))
    env.pop("PULSE_SERVER", None)
    p = Pulse(env, runtime)
    os.environ.update(XDG_RUNTIME_DIR=str(runtime), HOME=str(home))
    os.environ.pop("PULSE_SERVER", None)
    try:
        p.start()
        yield p
    finally:
        p.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TonePlayer:
    """Plays into the null sink through ``pacat``; ``tone_at(t_ns)`` puts a 1 kHz tone at half
    full scale into the stream at the first write at or after ``t_ns``, and ``tone_written_ns``
    records when that write was accepted.

    How late after that the tone is heard is bounded by what can wait between us and the sink:
    the pipe to pacat is shrunk to one page (4096 bytes = 512 stereo s32 frames, 10.7 ms) and
    written with blocking writes, so pacat's consumption paces us and no backlog can build up
    (a normal 64 KiB pipe would hold 0.68 s and a startup hiccup would delay everything after
    it); pacat itself buffers 10 ms.

    Start it before the microphone is opened: a null sink nobody plays into runs with a long
    default latency (a real sound card keeps running, so this is the realistic set-up)."""

    RATE = 48000
    FRAMES = 256                      # 5.3 ms per write

    def __init__(self, pulse: Pulse):
        import fcntl
        self.proc = subprocess.Popen(["pacat", "--playback", "--device=v", "--latency-msec=10", "--raw",
                                      "--rate=48000", "--channels=2", "--format=s32le"],
                                     env=pulse.env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 4096)
        # The player is the test's reference: on a busy 2-core machine it must not be the one
        # that runs late (as root the tests may raise its priority).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, -10)
        self._tone_at: int | None = None
        self._tone_len = 0
        self.tone_written_ns: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def tone_at(self, t_ns: int, seconds: float = 0.5) -> None:
        self._tone_len = int(seconds * self.RATE)
        self._tone_at = t_ns

    def _run(self) -> None:
        import numpy as np
        silence = bytes(8 * self.FRAMES)
        t = np.arange(self.FRAMES)
        played = 0
        fd = self.proc.stdin.fileno()
        while not self._stop.is_set():
            chunk = silence
            tone = self._tone_at is not None and time.monotonic_ns() >= self._tone_at and played < self._tone_len
            if tone:
                x = (0.5 * (2**31 - 1) * np.sin(2 * np.pi * 1000 * (played + t) / self.RATE)).astype("<i4")
                chunk = np.repeat(x, 2).tobytes()
                played += self.FRAMES
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            except (BrokenPipeError, OSError, ValueError):
                return
            if tone and self.tone_written_ns is None:
                self.tone_written_ns = time.monotonic_ns()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.proc.wait()
        self._thread.join(2)
        with contextlib.suppress(Exception):
            self.proc.stdin.close()


# ---------------------------------------------------------------------------------------------
# HTTP MJPEG camera
class MjpegCamera:
    """A multipart/x-mixed-replace JPEG server on loopback, like a cheap IP camera's /video.

    Pictures carry the timecode of the moment they were made. ``stall()`` keeps every
    connection open but stops sending; ``stop()`` closes everything (a camera switched off);
    ``start()`` serves again on the same port.
    """

    def __init__(self, width: int = 320, height: int = 240, fps: float = 10, user: str | None = None,
                 password: str | None = None, content_length: bool = True, port: int = 0):
        self.width, self.height, self.fps = width, height, fps
        self.user, self.password = user, password
        self.content_length = content_length
        self.port = port
        self.stalled = threading.Event()
        self.counter = 0
        self.unauthorized = 0
        self._server: ThreadingHTTPServer | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/video"

    def start(self) -> "MjpegCamera":
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if cam.user is not None:
                    want = "Basic " + base64.b64encode(f"{cam.user}:{cam.password}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        cam.unauthorized += 1
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if self.path != "/video":
                    self.send_error(404)
                    return
                with cam._lock:
                    cam._conns.append(self.connection)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                cam._stream(self.wfile)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _stream(self, wfile) -> None:
        import cv2
        period = 1.0 / self.fps
        next_t = time.monotonic()
        while self._server is not None:
            if self.stalled.is_set():
                time.sleep(0.02)
                next_t = time.monotonic()
                continue
            self.counter += 1
            img = timecode_bgr(self.counter, time.monotonic_ns() // 1_000_000, self.width, self.height)
            jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
            head = b"--frame\r\nContent-Type: image/jpeg\r\n"
            if self.content_length:
                head += f"Content-Length: {len(jpeg)}\r\n".encode()
            try:
                wfile.write(head + b"\r\n" + jpeg + b"\r\n")
                wfile.flush()
            except OSError:
                return
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stall(self) -> None:
        self.stalled.set()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    c.close()
            self._conns.clear()
        self.stalled.clear()


# ---------------------------------------------------------------------------------------------
# GStreamer RTSP camera (Debian's gst-rtsp-server through /usr/bin/python3 and gi)
class RtspCamera:
    """``rtsp://127.0.0.1:PORT/cam`` served by a separate process, so the tests can kill it,
    stop it (SIGSTOP: the connection stays open and nothing more comes) and start it again."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 10, user: str | None = None,
                 password: str | None = None):
        self.width, self.height, self.fps = width, height, fps
        self.user, self.password = user, password
        from sensors.replay import free_port  # here: this file also runs as a script under the system Python
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout_s: float = 15) -> "RtspCamera":
        cmd = [SYSTEM_PYTHON, str(HERE), "rtsp-server", "--port", str(self.port), "--fps", str(self.fps),
               "--width", str(self.width), "--height", str(self.height)]
        env = dict(os.environ)
        if self.user is not None:
            env["RTSP_TEST_AUTH"] = f"{self.user}:{self.password}"  # not on the command line: ps shows that
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        ready = threading.Event()
        lines: list[str] = []

        def wait_ready() -> None:
            line = self.proc.stdout.readline()
            lines.append(line)
            if line.startswith("READY"):
                ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(timeout_s):
            self.kill()
            raise RuntimeError(f"RTSP server did not start: {lines!r}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def _rtsp_server_main(args: argparse.Namespace) -> None:
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
    Gst.init(None)
    w, h, fps = args.width, args.height, args.fps
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # rtpjpegpay carries 4:2:0/4:2:2 JPEG only (RFC 2435), hence the I420 conversion.
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time do-timestamp=true "
        f"caps=video/x-raw,format=GRAY8,width={w},height={h},framerate={fps}/1 "
        f"! videoconvert ! video/x-raw,format=I420 ! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    counter = {"n": 0}

    def configure(_factory, media) -> None:
        src = media.get_element().get_child_by_name("src")

        def push() -> bool:
            counter["n"] += 1
            data = timecode_gray_bytes(counter["n"], time.monotonic_ns() // 1_000_000, w, h)
            ret = src.emit("push-buffer", Gst.Buffer.new_wrapped(data))
            return ret == Gst.FlowReturn.OK

        GLib.timeout_add(int(1000 / fps), push)

    factory.connect("media-configure", configure)
    auth_text = os.environ.get("RTSP_TEST_AUTH")
    if auth_text:
        user, _, password = auth_text.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", "media.factory.access", True)
        permissions.add_permission_for_role("user", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print("FAILED to bind", flush=True)
        sys.exit(1)
    print("READY", flush=True)
    GLib.MainLoop().run()


# ---------------------------------------------------------------------------------------------
# gpsd (Debian's, with no receiver: it still answers with its VERSION line)
@contextlib.contextmanager
def gpsd(tmp: Path) -> Iterator[int]:
    from sensors.replay import free_port
    port = free_port()
    proc = subprocess.Popen(["gpsd", "-N", "-n", "-S", str(port), "-F", str(tmp / "gpsd.sock")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return True
            return False
        if not wait_until(up, 10):
            raise RuntimeError("gpsd did not start")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def require(*programs: str) -> None:
    """Fail (not skip) with the Debian package to install when a program the test runs is missing."""
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).exists()]
    if missing:
        raise RuntimeError(f"missing {missing}: install the packages in .ci/apt-packages")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    tk = sub.add_parser("tk-counter")
    tk.add_argument("--width", type=int, default=640)
    tk.add_argument("--height", type=int, default=480)
    tk.add_argument("--interval-ms", type=int, default=50)
    tk.add_argument("--log", required=True)
    rt = sub.add_parser("rtsp-server")
    rt.add_argument("--port", type=int, required=True)
    rt.add_argument("--fps", type=int, default=10)
    rt.add_argument("--width", type=int, default=320)
    rt.add_argument("--height", type=int, default=240)
    args = parser.parse_args(argv)
    if args.cmd == "tk-counter":
        _tk_counter_main(args)
    else:
        _rtsp_server_main(args)


if __name__ == "__main__":
    main()
