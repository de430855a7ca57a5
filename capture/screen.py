"""The candidate workstation's screen, grabbed from X11 with PyAV's x11grab.

``source = "x11::0"`` is ``x11:`` followed by the DISPLAY (``:0``, ``:0.0``). x11grab paces the
grabs at the profile's rate and grabs the whole screen; frames are scaled to the profile's size
when the screen is bigger, and the cursor is drawn when the profile says ``draw_mouse = true``.

Two things x11grab does not do, done here:

* It stamps a packet with the wall clock (``av_gettime``) at the grab, and PyAV's probing at
  open already grabs a few packets that ``read`` hands over later. The stamp is that wall time
  mapped onto CLOCK_MONOTONIC right away (offset measured at each read), trusted only when it
  lies before the packet reached us and not absurdly earlier (a wall-clock step).
* When the X server dies, x11grab keeps returning the last picture from its shared-memory
  segment. A second, tiny XCB connection of our own pings the server before every grab (one
  GetInputFocus round trip, ~0.1 ms); no answer within the stall timeout, or a closed
  connection, raises :class:`SourceLost` instead of recording a frozen screen.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import select
import socket
import struct
import time
from typing import TYPE_CHECKING

import numpy as np

from capture.base import Frame, SourceInfo, SourceLost, SourceUnavailable, VideoSource

if TYPE_CHECKING:
    from core.profile import Profile, StreamSpec

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT_S = 2.0
MAX_PACKET_AGE_NS = 10_000_000_000   # a grab stamped earlier than this is a wall-clock step, not a grab
X11_SOCKET_DIR = "/tmp/.X11-unix"
_DISPLAY_RE = re.compile(r"^(?P<host>[^:]*):(?P<number>\d+)(?:\.(?P<screen>\d+))?$")


class _Cookie(ctypes.Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _ScreenIterator(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rem", ctypes.c_int), ("index", ctypes.c_int)]


class XcbPing:
    """Our own XCB connection to a display, used only to ask "are you alive?" without blocking.

    libxcb never calls exit() on a lost connection (Xlib does), which is why it is used here.
    """

    _lib: ctypes.CDLL | None = None

    @classmethod
    def _load(cls) -> ctypes.CDLL:
        if cls._lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("xcb") or "libxcb.so.1")
            lib.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
            lib.xcb_connect.restype = ctypes.c_void_p
            lib.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
            lib.xcb_connection_has_error.restype = ctypes.c_int
            lib.xcb_get_file_descriptor.argtypes = [ctypes.c_void_p]
            lib.xcb_get_file_descriptor.restype = ctypes.c_int
            lib.xcb_get_input_focus.argtypes = [ctypes.c_void_p]
            lib.xcb_get_input_focus.restype = _Cookie
            lib.xcb_flush.argtypes = [ctypes.c_void_p]
            lib.xcb_flush.restype = ctypes.c_int
            lib.xcb_poll_for_reply.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p),
                                               ctypes.POINTER(ctypes.c_void_p)]
            lib.xcb_poll_for_reply.restype = ctypes.c_int
            lib.xcb_get_setup.argtypes = [ctypes.c_void_p]
            lib.xcb_get_setup.restype = ctypes.c_void_p
            lib.xcb_setup_roots_iterator.argtypes = [ctypes.c_void_p]
            lib.xcb_setup_roots_iterator.restype = _ScreenIterator
            lib.xcb_disconnect.argtypes = [ctypes.c_void_p]
            lib.xcb_disconnect.restype = None
            cls._lib = lib
        return cls._lib

    def __init__(self, display: str):
        self.lib = self._load()
        self._free = ctypes.CDLL(None).free
        self._free.argtypes = [ctypes.c_void_p]
        self.conn = self.lib.xcb_connect(display.encode(), None)
        if not self.conn or self.lib.xcb_connection_has_error(self.conn):
            code = self.lib.xcb_connection_has_error(self.conn) if self.conn else -1
            self.close()
            raise ConnectionError(f"XCB connection error {code}")
        self.fd = self.lib.xcb_get_file_descriptor(self.conn)

    def alive(self, timeout_s: float) -> bool:
        """One round trip; False when the connection is closed or no answer comes in time."""
        if not self.conn or self.lib.xcb_connection_has_error(self.conn):
            return False
        cookie = self.lib.xcb_get_input_focus(self.conn)
        if self.lib.xcb_flush(self.conn) <= 0:
            return False
        deadline = time.monotonic() + timeout_s
        while True:
            reply, error = ctypes.c_void_p(), ctypes.c_void_p()
            if self.lib.xcb_poll_for_reply(self.conn, cookie.sequence, ctypes.byref(reply), ctypes.byref(error)):
                self._free(reply)
                self._free(error)
                return True
            if self.lib.xcb_connection_has_error(self.conn):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([self.fd], [], [], left)

    def screen_size(self) -> tuple[int, int] | None:
        """Width and height of the display's first screen, from the connection setup."""
        if not self.conn:
            return None
        it = self.lib.xcb_setup_roots_iterator(self.lib.xcb_get_setup(self.conn))
        if not it.data:
            return None
        # xcb_screen_t: root, default_colormap, white_pixel, black_pixel, current_input_masks
        # (5 x uint32), then width_in_pixels and height_in_pixels (uint16 each).
        w, h = struct.unpack_from("=HH", ctypes.string_at(it.data + 20, 4))
        return w, h

    def close(self) -> None:
        if self.conn:
            self.lib.xcb_disconnect(self.conn)
            self.conn = None


def display_socket(display: str) -> str | None:
    """The Unix socket of a local display (``:97`` -> /tmp/.X11-unix/X97); None for a remote one."""
    m = _DISPLAY_RE.match(display)
    if not m or m.group("host") not in ("", "unix", "localhost"):
        return None
    return os.path.join(X11_SOCKET_DIR, f"X{m.group('number')}")


def x_server_listening(sock_path: str) -> bool:
    """True when something accepts connections on a display's socket (a killed server leaves
    its socket file behind, so the file alone proves nothing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(sock_path)
        except OSError:
            return False
    return True


class ScreenSource(VideoSource):
    """An X11 screen as a video source (see the module docstring)."""

    def __init__(self, spec: "StreamSpec", profile: "Profile", *, stall_timeout_s: float | None = None):
        super().__init__(spec.name, spec.width, spec.height, spec.fps)
        self.display = spec.source[len("x11:"):] or os.environ.get("DISPLAY", ":0")
        self.draw_mouse = bool(spec.draw_mouse)
        self.stall_timeout_s = (stall_timeout_s or getattr(spec, "stall_timeout_s", None)
                                or max(DEFAULT_STALL_TIMEOUT_S, 3.0 / spec.fps))
        self._period_ns = int(1e9 / spec.fps)
        self._container = None
        self._packets = None
        self._ping: XcbPing | None = None
        self._last_ns = 0
        self.screen_size: tuple[int, int] | None = None
        self.frames_read = 0
        self.skipped = 0

    @property
    def label(self) -> str:
        return f"screen {self.name} (X display {self.display})"

    def open(self) -> None:
        """Connect to the display; SourceUnavailable names the display and what is wrong."""
        self.close()
        if not _DISPLAY_RE.match(self.display):
            raise SourceUnavailable(f"{self.label}: {self.display!r} is not an X display name; use e.g. x11::0")
        sock = display_socket(self.display)
        if sock is not None and not x_server_listening(sock):
            raise SourceUnavailable(
                f"{self.label}: no X server is running on {self.display} (nothing listens on {sock}): is the "
                f"workstation on and logged in? `examrec devices` lists the displays")
        try:
            self._ping = XcbPing(self.display)
        except OSError as exc:
            raise SourceUnavailable(
                f"{self.label}: cannot connect ({exc}): the X server refused us; give the recorder's user access "
                f"(`xhost +si:localuser:examrec` in the session, or XAUTHORITY pointing at the session's cookie)") from None
        import av  # heavy: only for the streams that use it
        options = {"framerate": f"{self.fps:g}", "draw_mouse": "1" if self.draw_mouse else "0"}
        try:
            self._container = av.open(self.display, format="x11grab", options=options)
        except Exception as exc:
            self.close()
            raise SourceUnavailable(f"{self.label}: x11grab cannot grab it: {exc}") from None
        stream = self._container.streams.video[0]
        self.screen_size = (stream.codec_context.width, stream.codec_context.height)
        self._pix_fmt = stream.codec_context.pix_fmt
        self._packets = self._container.demux(stream)
        self._last_ns = 0
        if self.screen_size != (self.width, self.height):
            log.info("%s is %dx%d; scaling to the profile's %dx%d", self.label, *self.screen_size, self.width, self.height)

    def read(self) -> Frame:
        if self._packets is None:
            raise SourceLost(f"{self.label}: not open")
        while True:
            if not self._ping.alive(self.stall_timeout_s):
                raise SourceLost(f"{self.label}: the X server stopped answering (display closed or hung)")
            try:
                packet = next(self._packets)
            except StopIteration:
                raise SourceLost(f"{self.label}: x11grab ended") from None
            except Exception as exc:
                raise SourceLost(f"{self.label}: grab failed: {exc}") from None
            after = time.monotonic_ns()
            if packet.size == 0 or packet.pts is None:
                continue
            # x11grab's pts is the wall clock (µs) of the grab: map it onto the monotonic clock.
            grabbed = packet.pts * 1000 + (time.monotonic_ns() - time.time_ns())
            capture_ns = grabbed if after - MAX_PACKET_AGE_NS < grabbed <= after else after
            if self._last_ns and capture_ns - self._last_ns < self._period_ns // 2:
                # x11grab catching up after a delay hands over grabs back to back: the same
                # picture twice a few ms apart is not a frame of the stream.
                self.skipped += 1
                continue
            self._last_ns = capture_ns
            image = self._to_bgr(packet)
            self.frames_read += 1
            return Frame(image=image, capture_ns=capture_ns)

    def _to_bgr(self, packet) -> np.ndarray:
        w, h = self.screen_size
        if self._pix_fmt in ("bgr0", "bgra") and packet.size == w * h * 4:
            # The raw grab is 32-bit BGRx rows; dropping the padding byte is the whole conversion.
            bgr = np.frombuffer(packet, np.uint8).reshape(h, w, 4)[:, :, :3]
        else:
            frame = next(iter(packet.decode()))
            bgr = frame.to_ndarray(format="bgr24")
        if (w, h) != (self.width, self.height):
            import cv2
            return cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(bgr)

    def close(self) -> None:
        container, self._container, self._packets = self._container, None, None
        if container is not None:
            try:
                container.close()
            except Exception:  # the display may already be gone
                pass
        if self._ping is not None:
            self._ping.close()
            self._ping = None

    def info(self) -> SourceInfo:
        return SourceInfo(kind="screen", device=self.display, details={
            "screen_size": self.screen_size, "draw_mouse": self.draw_mouse, "frames": self.frames_read,
            "skipped": self.skipped})
