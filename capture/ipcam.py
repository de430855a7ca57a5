"""Network cameras: RTSP (through PyAV's FFmpeg) and HTTP MJPEG (multipart/x-mixed-replace).

One reader thread per camera drains the connection as fast as the camera sends, stamps each
frame the moment it arrives, and keeps only the newest few (dropping and counting the rest), so
a slow consumer never turns into growing latency and wrong stamps. ``read()`` waits at most the
stall timeout: a camera that keeps the connection open but stops sending raises
:class:`SourceLost` just like one that closes it. Reconnecting (with backoff) is the recorder's
worker's job: it calls ``close()`` then ``open()`` again.

Timestamps: RTSP frames carry the camera's presentation time. A frame cannot arrive before it
was captured, so ``arrival - pts`` is the camera-to-monotonic clock offset plus a variable
delay; :class:`ArrivalMapper` takes the smallest value over a sliding window (the frames that
came through fastest), so stamps keep the camera's own frame spacing, never lie after their
arrival, and follow a slow drift between the clocks. MJPEG over HTTP carries no time, so a
frame is stamped when its part header arrives.

Credentials come from the environment or a 0600 file (:mod:`capture.credentials`); every
message goes through :func:`redact`, so no password or URL user-info reaches a log.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from capture.base import Frame, SourceInfo, SourceLost, SourceUnavailable, VideoSource
from capture.credentials import Credentials, CredentialsError, load_credentials, redact, strip_userinfo, with_userinfo

if TYPE_CHECKING:
    from core.profile import Profile, StreamSpec

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT_S = 2.0
DEFAULT_OPEN_TIMEOUT_S = 5.0
QUEUE_FRAMES = 2            # newest frames kept for read(); older ones are dropped and counted
MAX_HEADER_LINE = 8192
MAX_JPEG_BYTES = 32 << 20   # a part larger than this is a broken stream, not a picture


@dataclass
class _Failure:
    """Put in the frame queue by the reader thread when the connection ends."""

    message: str


class ArrivalMapper:
    """Map a camera's presentation times (ns, any origin) onto CLOCK_MONOTONIC arrival times.

    ``stamp = pts + min(arrival - pts)`` over the last ``window_ns``: the minimum is the clock
    offset plus the smallest transport delay seen, so stamps are never later than arrival, keep
    the camera's frame spacing, and follow drift as old minima leave the window. When the
    camera's clock goes backwards (stream restarted, camera rebooted) the window starts over.
    Stamps are strictly increasing. Without a pts, the arrival time is the stamp.
    """

    def __init__(self, window_ns: int = 30_000_000_000):
        self.window_ns = window_ns
        self._mins: deque[tuple[int, int]] = deque()   # (arrival_ns, offset_ns), offsets increasing
        self._last_pts: int | None = None
        self._last_stamp = 0

    def reset(self) -> None:
        self._mins.clear()
        self._last_pts = None

    def map(self, pts_ns: int | None, arrival_ns: int) -> int:
        if pts_ns is None:
            stamp = arrival_ns
        else:
            if self._last_pts is not None and pts_ns < self._last_pts:
                self._mins.clear()
            self._last_pts = pts_ns
            offset = arrival_ns - pts_ns
            # monotonic deque: the front always holds the window's minimum offset
            while self._mins and self._mins[-1][1] >= offset:
                self._mins.pop()
            self._mins.append((arrival_ns, offset))
            while self._mins[0][0] < arrival_ns - self.window_ns:
                self._mins.popleft()
            stamp = pts_ns + self._mins[0][1]
        stamp = max(stamp, self._last_stamp + 1)
        self._last_stamp = stamp
        return stamp


class _Reader(threading.Thread):
    """Drains one camera connection in the background; see the module docstring."""

    def __init__(self, label: str, secrets: list[str], stall_timeout_s: float):
        super().__init__(name=f"ipcam-{label}", daemon=True)
        self.label = label
        self.secrets = secrets
        self.stall_timeout_s = stall_timeout_s
        self.frames: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self.stopping = threading.Event()
        self.dropped = 0
        self.received = 0

    def put(self, item: Any) -> None:
        while True:
            try:
                self.frames.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                item = self.next_frame()
                self.received += 1
                self.put(item)
        except Exception as exc:  # any failure of the connection ends this reader
            if not self.stopping.is_set():
                self.put(_Failure(self.describe_failure(exc)))
        finally:
            self.release()

    def describe_failure(self, exc: BaseException) -> str:
        """A plain sentence for the event log (never the URL's secrets)."""
        text = redact(str(exc), self.secrets)
        if isinstance(exc, (TimeoutError, socket.timeout)) or "timed out" in text.lower() or "Immediate exit" in text:
            return f"no data for {self.stall_timeout_s:g} s: the camera stalled"
        if isinstance(exc, EOFError):
            return f"connection lost: {text}"
        if isinstance(exc, ConnectionResetError):
            return "connection lost: the camera reset the connection"
        return f"connection lost: {type(exc).__name__}: {text}"

    def next_frame(self) -> tuple[Any, int]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a blocked ``next_frame`` return soon (called from another thread)."""
        self.stopping.set()


class _RtspReader(_Reader):
    """RTSP (or any URL FFmpeg opens) through PyAV; frames arrive decoded."""

    def __init__(self, label: str, secrets: list[str], url: str, transport: str,
                 open_timeout_s: float, stall_timeout_s: float):
        super().__init__(label, secrets, stall_timeout_s)
        import av  # heavy: only for the cameras that use it
        options = {
            "rtsp_transport": transport,
            # FFmpeg's socket timeout (µs) and PyAV's interrupt timeout both bound a stall.
            "timeout": str(int(stall_timeout_s * 1_000_000)),
            "fflags": "nobuffer",
            "flags": "low_delay",
            "analyzeduration": "1000000",
            "probesize": "1000000",
        }
        if not url.startswith(("rtsp://", "rtsps://")):
            options.pop("rtsp_transport")
        self.container = av.open(url, options=options, timeout=(open_timeout_s, stall_timeout_s))
        if not self.container.streams.video:
            self.container.close()
            raise SourceUnavailable("the stream has no video track")
        self.stream = self.container.streams.video[0]
        self.time_base = self.stream.time_base
        self.mapper = ArrivalMapper()
        self._packets = self.container.demux(self.stream)
        self._pending: deque = deque()

    def next_frame(self) -> tuple[Any, int]:
        while not self._pending:
            packet = next(self._packets, None)
            if packet is None:
                raise EOFError("the camera closed the connection")
            arrival = time.monotonic_ns()
            if packet.size == 0:  # the flush packet PyAV yields at the end of the stream
                raise EOFError("the camera closed the connection")
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else packet.pts
                pts_ns = None if pts is None else int(pts * self.time_base * 1_000_000_000)
                self._pending.append((frame, self.mapper.map(pts_ns, arrival)))
        return self._pending.popleft()

    def release(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a broken connection may fail again; nothing left to do
            pass


class _MjpegReader(_Reader):
    """HTTP(S) multipart/x-mixed-replace JPEG stream, as cheap cameras serve at /video or /mjpg."""

    def __init__(self, label: str, secrets: list[str], url: str, creds: Credentials | None,
                 open_timeout_s: float, stall_timeout_s: float):
        super().__init__(label, secrets, stall_timeout_s)
        handlers: list[urllib.request.BaseHandler] = []
        if creds is not None:
            mgr = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            mgr.add_password(None, url, creds.user, creds.password)
            handlers += [urllib.request.HTTPBasicAuthHandler(mgr), urllib.request.HTTPDigestAuthHandler(mgr)]
        opener = urllib.request.build_opener(*handlers)
        request = urllib.request.Request(url, headers={"User-Agent": "examrec", "Accept": "multipart/x-mixed-replace,*/*"})
        self.response = opener.open(request, timeout=open_timeout_s)
        self.sock = self._socket_of(self.response)
        if self.sock is not None:
            self.sock.settimeout(stall_timeout_s)
        ctype = self.response.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/"):
            self.response.close()
            raise SourceUnavailable(
                f"serves Content-Type {ctype or '(none)'!r}, not an MJPEG stream (multipart/x-mixed-replace): "
                f"use the camera's MJPEG stream URL or its RTSP URL")
        boundary = self.response.headers.get_param("boundary", header="Content-Type")
        if not boundary:
            self.response.close()
            raise SourceUnavailable(f"Content-Type {ctype!r} names no boundary")
        # Cameras disagree on whether the header's boundary already carries the leading "--".
        b = boundary.strip('"').encode("latin-1")
        self.boundaries = {b, b"--" + b, b"--" + b + b"--", b + b"--"}
        if b.startswith(b"--"):
            self.boundaries |= {b[2:], b[2:] + b"--"}
        self.fp = self.response
        self._at_part = False  # True when the boundary line of the next part was already consumed

    @staticmethod
    def _socket_of(response: Any) -> socket.socket | None:
        # http.client keeps the socket inside its buffered reader; needed to apply the stall
        # timeout to reads and to unblock a read from close().
        raw = getattr(getattr(response, "fp", None), "raw", None)
        return getattr(raw, "_sock", None)

    def _line(self) -> bytes:
        line = self.fp.readline(MAX_HEADER_LINE)
        if not line:
            raise EOFError("the camera closed the connection")
        return line

    def next_frame(self) -> tuple[bytes, int]:
        if not self._at_part:
            for _ in range(10_000):
                if self._line().strip() in self.boundaries:
                    break
            else:
                raise ValueError("no part boundary in the stream")
        self._at_part = False
        headers: dict[str, str] = {}
        arrival = 0
        while True:
            line = self._line()
            if not arrival:
                arrival = time.monotonic_ns()
            text = line.decode("latin-1").strip()
            if not text:
                if headers:
                    break
                continue  # blank lines some cameras put before the part headers
            key, _, value = text.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = headers.get("content-length", "")
        if length.isdigit():
            n = int(length)
            if n > MAX_JPEG_BYTES:
                raise ValueError(f"part of {n} bytes")
            data = self.fp.read(n)
            if len(data) < n:
                raise EOFError("the camera closed the connection in the middle of a picture")
            return data, arrival
        # No Content-Length: the picture runs until the next boundary line.
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self._line()
            if line.strip() in self.boundaries:
                self._at_part = True
                break
            chunks.append(line)
            size += len(line)
            if size > MAX_JPEG_BYTES:
                raise ValueError("part without end")
        data = b"".join(chunks)
        return data[:-2] if data.endswith(b"\r\n") else data.rstrip(b"\n"), arrival

    def interrupt(self) -> None:
        super().interrupt()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def release(self) -> None:
        try:
            self.response.close()
        except Exception:  # already broken
            pass


class IPCameraSource(VideoSource):
    """A network camera named by an ``rtsp://``, ``rtsps://``, ``http://`` or ``https://`` URL.

    ``http(s)://`` is read as an MJPEG multipart stream; ``rtsp(s)://`` through FFmpeg (TCP
    transport by default: it gets through NAT and shows a dead camera as a closed connection).
    Frames are BGR at the profile's size (resized when the camera sends another size).
    """

    def __init__(self, spec: "StreamSpec", profile: "Profile", *, open_timeout_s: float | None = None,
                 stall_timeout_s: float | None = None):
        super().__init__(spec.name, spec.width, spec.height, spec.fps)
        self.url, inline = strip_userinfo(spec.source)
        self._inline_creds = inline
        self._credentials_value = spec.credentials
        self._base_dir = profile.base_dir
        self.kind = "rtsp" if self.url.startswith(("rtsp://", "rtsps://")) else "mjpeg"
        self.transport = getattr(spec, "rtsp_transport", None) or "tcp"
        self.open_timeout_s = open_timeout_s or getattr(spec, "open_timeout_s", None) or DEFAULT_OPEN_TIMEOUT_S
        # A camera sending 1 frame/s must not be declared stalled between two good frames.
        self.stall_timeout_s = (stall_timeout_s or getattr(spec, "stall_timeout_s", None)
                                or max(DEFAULT_STALL_TIMEOUT_S, 3.0 / max(spec.fps, 0.1)))
        self._secrets: list[str] = inline.secrets() if inline else []
        self._reader: _Reader | None = None
        self.frames_read = 0
        self.corrupt = 0
        self._size_noted = False
        if inline is not None:
            log.warning("camera %s: the profile's URL carries a password; move it to credentials = \"ENV:...\" "
                        "or a 0600 file", self.name)

    @property
    def label(self) -> str:
        """What messages call this camera: its name and its URL without user-info."""
        return f"camera {self.name} ({self.url})"

    def _msg(self, text: str) -> str:
        return redact(f"{self.label}: {text}", self._secrets)

    def _credentials(self) -> Credentials | None:
        try:
            creds = load_credentials(self._credentials_value, self._base_dir, f"camera {self.name}")
        except CredentialsError as exc:
            raise SourceUnavailable(redact(str(exc), self._secrets)) from None
        creds = creds or self._inline_creds
        if creds is not None:
            self._secrets = sorted(set(self._secrets) | set(creds.secrets()), key=len, reverse=True)
        return creds

    def open(self) -> None:
        """Connect and wait for the first frame; SourceUnavailable says why it can't."""
        self.close()
        creds = self._credentials()
        parts = urlsplit(self.url)
        try:
            if self.kind == "rtsp":
                reader: _Reader = _RtspReader(self.name, self._secrets, with_userinfo(self.url, creds), self.transport,
                                              self.open_timeout_s, self.stall_timeout_s)
            else:
                reader = _MjpegReader(self.name, self._secrets, self.url, creds, self.open_timeout_s, self.stall_timeout_s)
        except SourceUnavailable as exc:
            raise SourceUnavailable(self._msg(str(exc))) from None
        except Exception as exc:
            raise SourceUnavailable(self._msg(self._explain(exc, parts.hostname or "?", parts.port))) from None
        reader.start()
        self._reader = reader
        log.info("%s connected", self.label)

    def _explain(self, exc: BaseException, host: str, port: int | None) -> str:
        """A plain reason for a failed connection; never the raw URL."""
        where = f"{host}:{port}" if port else host
        text = redact(str(exc), self._secrets)
        code = getattr(exc, "code", None)
        errno_ = getattr(exc, "errno", None)
        reason = getattr(exc, "reason", None)
        if code == 401 or "401" in text or "Unauthorized" in text:
            return "the camera refused the user name or password (401 Unauthorized): check its credentials"
        if code == 404 or "404" in text:
            return "the camera has no stream at this path (404 Not Found): check the URL in the profile"
        if isinstance(exc, ConnectionRefusedError) or isinstance(reason, ConnectionRefusedError) \
                or errno_ == 111 or "Connection refused" in text:
            return f"nothing answers at {where} (connection refused): is the camera on and the URL right?"
        if isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(reason, (TimeoutError, socket.timeout)) \
                or "timed out" in text.lower() or "Immediate exit" in text:
            return f"no answer from {where} within {self.open_timeout_s:g} s: is the camera powered and on the network?"
        if isinstance(reason, socket.gaierror) or "Name or service not known" in text:
            return f"the host name {host} cannot be resolved: check the URL or the network's DNS"
        if "Invalid data found" in text:
            return (f"{where} answered, but not with a stream that can be read: check the URL's path and "
                    f"protocol in the camera's manual")
        plain = redact(getattr(exc, "strerror", None) or text, self._secrets)
        return f"cannot connect: {plain}"

    def read(self) -> Frame:
        if self._reader is None:
            raise SourceLost(self._msg("not open"))
        while True:
            try:
                item = self._reader.frames.get(timeout=self.stall_timeout_s)
            except queue.Empty:
                raise SourceLost(self._msg(f"no frame for {self.stall_timeout_s:g} s: the camera stalled")) from None
            if isinstance(item, _Failure):
                raise SourceLost(self._msg(item.message))
            payload, capture_ns = item
            image = self._to_bgr(payload)
            if image is None:
                self.corrupt += 1
                continue
            self.frames_read += 1
            return Frame(image=image, capture_ns=capture_ns)

    def _to_bgr(self, payload: Any) -> np.ndarray | None:
        import cv2
        if isinstance(payload, (bytes, bytearray)):
            image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                return None
        else:
            # One swscale pass converts and scales when the camera's size differs.
            image = payload.to_ndarray(width=self.width, height=self.height, format="bgr24")
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            if not self._size_noted:
                log.info("%s sends %dx%d; scaling to the profile's %dx%d", self.label, w, h, self.width, self.height)
                self._size_noted = True
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is None:
            return
        reader.interrupt()
        reader.join(timeout=self.stall_timeout_s + 1.0)
        if reader.is_alive():
            log.warning("%s: the reader thread did not stop; it will end with its next timeout", self.label)

    def info(self) -> SourceInfo:
        r = self._reader
        return SourceInfo(kind="ip-camera", device=self.url, details={
            "protocol": self.kind, "frames": self.frames_read, "corrupt": self.corrupt,
            "dropped": r.dropped if r else 0, "stall_timeout_s": self.stall_timeout_s})
