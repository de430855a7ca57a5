"""USB (UVC) and other V4L2 cameras.

Backend: OpenCV's V4L2 capture (``cv2.CAP_V4L2``), chosen over PyAV's ``video4linux2`` input
for three reasons, each read in the two projects' sources:

* timestamps: both hand over the driver's buffer time (CLOCK_MONOTONIC for UVC, start of
  exposure): OpenCV as ``CAP_PROP_POS_MSEC`` of the last grabbed buffer, FFmpeg's v4l2 demuxer
  as ``pkt.pts`` in µs when ``-ts`` is left at ``default`` (``mono2abs`` would convert to wall
  time, which we do not want). A tie.
* stalls: OpenCV opens the device non-blocking and waits in ``select()`` with a timeout
  (``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT``, seconds, set below), so a camera that stops
  delivering makes ``grab()`` return False. FFmpeg's demuxer blocks in ``VIDIOC_DQBUF`` where
  PyAV's interrupt timeout cannot reach it.
* pixels: OpenCV decodes MJPG with libjpeg-turbo and converts YUYV straight to the BGR the
  pipeline wants; PyAV would decode to yuvj422p and need another swscale pass to BGR.

``grab()`` and ``retrieve()`` are called separately so a damaged JPEG (skipped, counted) is
told apart from a camera that is gone (SourceLost).

What the camera can do is read with the V4L2 ioctls (QUERYCAP, ENUM_FMT, ENUM_FRAMESIZES,
ENUM_FRAMEINTERVALS) through ``fcntl.ioctl``, or parsed from ``v4l2-ctl --list-formats-ext``
output; :func:`negotiate` picks the mode or explains plainly why the camera can't do what the
profile asks. A camera is best named by its ``/dev/v4l/by-id/...-video-index0`` link, which
stays the same across reboots and replugging (``/dev/videoN`` numbers do not).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from capture.base import Frame, SourceInfo, SourceLost, SourceUnavailable, VideoSource

if TYPE_CHECKING:
    from core.profile import Profile, StreamSpec

log = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT_S = 2
# OpenCV reads this once, the first time a V4L2 read has to wait: set it before any capture.
os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(DEFAULT_STALL_TIMEOUT_S))

SUPPORTED_FOURCCS = ("MJPG", "YUYV")      # in order of preference: MJPG reaches full HD at 30 fps over USB 2
MAX_CORRUPT_IN_A_ROW = 25
FPS_TOLERANCE = 0.005                     # 29.97 is not 30

# --- the kernel ABI (linux/videodev2.h) ------------------------------------------------------
V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_META_CAPTURE = 0x00800000
V4L2_CAP_STREAMING = 0x04000000
V4L2_CAP_DEVICE_CAPS = 0x80000000
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_FRMSIZE_TYPE_DISCRETE, V4L2_FRMSIZE_TYPE_CONTINUOUS, V4L2_FRMSIZE_TYPE_STEPWISE = 1, 2, 3
V4L2_FRMIVAL_TYPE_DISCRETE, V4L2_FRMIVAL_TYPE_CONTINUOUS, V4L2_FRMIVAL_TYPE_STEPWISE = 1, 2, 3


class v4l2_capability(ctypes.Structure):
    _fields_ = [("driver", ctypes.c_char * 16), ("card", ctypes.c_char * 32), ("bus_info", ctypes.c_char * 32),
                ("version", ctypes.c_uint32), ("capabilities", ctypes.c_uint32),
                ("device_caps", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 3)]


class v4l2_fmtdesc(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("type", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("description", ctypes.c_char * 32), ("pixelformat", ctypes.c_uint32),
                ("mbus_code", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 3)]


class v4l2_frmsize_discrete(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32)]


class v4l2_frmsize_stepwise(ctypes.Structure):
    _fields_ = [("min_width", ctypes.c_uint32), ("max_width", ctypes.c_uint32), ("step_width", ctypes.c_uint32),
                ("min_height", ctypes.c_uint32), ("max_height", ctypes.c_uint32), ("step_height", ctypes.c_uint32)]


class _frmsize_union(ctypes.Union):
    _fields_ = [("discrete", v4l2_frmsize_discrete), ("stepwise", v4l2_frmsize_stepwise)]


class v4l2_frmsizeenum(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("index", ctypes.c_uint32), ("pixel_format", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("u", _frmsize_union), ("reserved", ctypes.c_uint32 * 2)]


class v4l2_fract(ctypes.Structure):
    _fields_ = [("numerator", ctypes.c_uint32), ("denominator", ctypes.c_uint32)]


class v4l2_frmival_stepwise(ctypes.Structure):
    _fields_ = [("min", v4l2_fract), ("max", v4l2_fract), ("step", v4l2_fract)]


class _frmival_union(ctypes.Union):
    _fields_ = [("discrete", v4l2_fract), ("stepwise", v4l2_frmival_stepwise)]


class v4l2_frmivalenum(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("index", ctypes.c_uint32), ("pixel_format", ctypes.c_uint32), ("width", ctypes.c_uint32),
                ("height", ctypes.c_uint32), ("type", ctypes.c_uint32), ("u", _frmival_union),
                ("reserved", ctypes.c_uint32 * 2)]


def _ioc(direction: int, nr: int, struct: type[ctypes.Structure]) -> int:
    """The Linux _IOC encoding: direction, size of the argument, type 'V', number."""
    return (direction << 30) | (ctypes.sizeof(struct) << 16) | (ord("V") << 8) | nr


_READ, _WRITE = 2, 1
VIDIOC_QUERYCAP = _ioc(_READ, 0, v4l2_capability)
VIDIOC_ENUM_FMT = _ioc(_READ | _WRITE, 2, v4l2_fmtdesc)
VIDIOC_ENUM_FRAMESIZES = _ioc(_READ | _WRITE, 74, v4l2_frmsizeenum)
VIDIOC_ENUM_FRAMEINTERVALS = _ioc(_READ | _WRITE, 75, v4l2_frmivalenum)


def fourcc_str(code: int) -> str:
    return code.to_bytes(4, "little").decode("latin-1").rstrip(" \0")


def fourcc_code(text: str) -> int:
    return int.from_bytes(text.ljust(4).encode("latin-1")[:4], "little")


# --- what a camera offers --------------------------------------------------------------------
@dataclass(frozen=True)
class FrameSize:
    """One picture size and the rates offered at it (highest first); ``fps_range`` for
    cameras that give a continuous or stepwise interval instead of a list."""

    width: int
    height: int
    fps: tuple[float, ...] = ()
    fps_range: tuple[float, float] | None = None

    def offers(self, fps: float) -> bool:
        if any(abs(r - fps) <= FPS_TOLERANCE * fps for r in self.fps):
            return True
        return self.fps_range is not None and self.fps_range[0] - 1e-6 <= fps <= self.fps_range[1] + 1e-6

    def rates_text(self) -> str:
        parts = [f"{r:g}" for r in self.fps]
        if self.fps_range:
            parts.append(f"{self.fps_range[0]:g}-{self.fps_range[1]:g}")
        return "/".join(parts) or "?"


@dataclass
class PixelFormat:
    fourcc: str
    description: str = ""
    sizes: list[FrameSize] = field(default_factory=list)
    # (min_w, max_w, step_w, min_h, max_h, step_h) for cameras with a size range, not a list
    stepwise: tuple[int, int, int, int, int, int] | None = None
    stepwise_fps: tuple[float, ...] = ()

    def size(self, width: int, height: int) -> FrameSize | None:
        for s in self.sizes:
            if (s.width, s.height) == (width, height):
                return s
        if self.stepwise:
            w0, w1, ws, h0, h1, hs = self.stepwise
            if w0 <= width <= w1 and h0 <= height <= h1 and (width - w0) % max(ws, 1) == 0 \
                    and (height - h0) % max(hs, 1) == 0:
                return FrameSize(width, height, self.stepwise_fps)
        return None

    def sizes_text(self) -> str:
        out = [f"{s.width}x{s.height}@{s.rates_text()}" for s in sorted(self.sizes, key=lambda s: -s.width * s.height)]
        if self.stepwise:
            w0, w1, _, h0, h1, _ = self.stepwise
            out.append(f"{w0}x{h0}-{w1}x{h1}")
        return ", ".join(out)


@dataclass
class CameraCaps:
    """What a V4L2 node is and offers."""

    path: str
    card: str = ""
    driver: str = ""
    bus_info: str = ""
    capture: bool = True
    formats: list[PixelFormat] = field(default_factory=list)

    def format(self, fourcc: str) -> PixelFormat | None:
        return next((f for f in self.formats if f.fourcc == fourcc), None)

    def summary(self) -> str:
        return "; ".join(f"{f.fourcc} {f.sizes_text()}" for f in self.formats) or "no capture formats"


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> bool:
    """True on success, False at the end of an enumeration (EINVAL); other errors raise."""
    try:
        fcntl.ioctl(fd, request, arg)
        return True
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise


def _fps_of(f: v4l2_fract) -> float:
    return round(f.denominator / f.numerator, 3) if f.numerator else 0.0


def _intervals(fd: int, code: int, width: int, height: int) -> tuple[tuple[float, ...], tuple[float, float] | None]:
    rates: list[float] = []
    rng = None
    for i in range(256):
        iv = v4l2_frmivalenum(index=i, pixel_format=code, width=width, height=height)
        if not _ioctl(fd, VIDIOC_ENUM_FRAMEINTERVALS, iv):
            break
        if iv.type == V4L2_FRMIVAL_TYPE_DISCRETE:
            rates.append(_fps_of(iv.discrete))
        else:
            rng = (_fps_of(iv.stepwise.max), _fps_of(iv.stepwise.min))  # longest interval = lowest rate
            break
    return tuple(sorted(set(rates), reverse=True)), rng


def query_caps(path: str) -> CameraCaps:
    """Ask the driver what the node is and offers (raises OSError when it can't be opened)."""
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        cap = v4l2_capability()
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, cap)
        caps = cap.device_caps if cap.capabilities & V4L2_CAP_DEVICE_CAPS else cap.capabilities
        out = CameraCaps(path=path, card=cap.card.decode(errors="replace"), driver=cap.driver.decode(errors="replace"),
                         bus_info=cap.bus_info.decode(errors="replace"),
                         capture=bool(caps & V4L2_CAP_VIDEO_CAPTURE))
        if not out.capture:
            return out
        for i in range(64):
            desc = v4l2_fmtdesc(index=i, type=V4L2_BUF_TYPE_VIDEO_CAPTURE)
            if not _ioctl(fd, VIDIOC_ENUM_FMT, desc):
                break
            fmt = PixelFormat(fourcc_str(desc.pixelformat), desc.description.decode(errors="replace"))
            for j in range(256):
                fs = v4l2_frmsizeenum(index=j, pixel_format=desc.pixelformat)
                if not _ioctl(fd, VIDIOC_ENUM_FRAMESIZES, fs):
                    break
                if fs.type == V4L2_FRMSIZE_TYPE_DISCRETE:
                    w, h = fs.discrete.width, fs.discrete.height
                    rates, rng = _intervals(fd, desc.pixelformat, w, h)
                    fmt.sizes.append(FrameSize(w, h, rates, rng))
                else:
                    sw = fs.stepwise
                    fmt.stepwise = (sw.min_width, sw.max_width, sw.step_width, sw.min_height, sw.max_height,
                                    sw.step_height)
                    fmt.stepwise_fps = _intervals(fd, desc.pixelformat, sw.max_width, sw.max_height)[0]
                    break
            out.formats.append(fmt)
        return out
    finally:
        os.close(fd)


_FMT_NEW = re.compile(r"^\s*\[(\d+)\]:\s*'([^']*)'\s*\((.*)\)\s*$")
_FMT_OLD = re.compile(r"^\s*Pixel Format\s*:\s*'([^']*)'")
_NAME_OLD = re.compile(r"^\s*Name\s*:\s*(.*)$")
_SIZE_DISCRETE = re.compile(r"^\s*Size: Discrete (\d+)x(\d+)")
_SIZE_RANGE = re.compile(r"^\s*Size: (?:Stepwise|Continuous) (\d+)x(\d+) - (\d+)x(\d+)(?: with step (\d+)/(\d+))?")
_IVAL_DISCRETE = re.compile(r"^\s*Interval: Discrete [\d.]+s \(([\d.]+) fps\)")
_IVAL_RANGE = re.compile(r"^\s*Interval: (?:Stepwise|Continuous) .*\(([\d.]+)-([\d.]+) fps\)")


def parse_v4l2_ctl(text: str, path: str = "") -> CameraCaps:
    """What ``v4l2-ctl -d DEV --list-formats-ext`` printed (new ``[0]: 'MJPG' (...)`` style and
    the older ``Pixel Format: 'MJPG'`` style)."""
    caps = CameraCaps(path=path)
    fmt: PixelFormat | None = None
    size: list | None = None   # [width, height, rates, range]

    def close_size() -> None:
        nonlocal size
        if fmt is not None and size is not None:
            fmt.sizes.append(FrameSize(size[0], size[1], tuple(sorted(set(size[2]), reverse=True)), size[3]))
        size = None

    for line in text.splitlines():
        m = _FMT_NEW.match(line) or _FMT_OLD.match(line)
        if m:
            close_size()
            if m.re is _FMT_NEW:
                fourcc, desc = m.group(2).strip(), m.group(3).strip()
            else:
                fourcc, desc = m.group(1).strip(), ""
            fmt = PixelFormat(fourcc, desc)
            caps.formats.append(fmt)
            continue
        if fmt is None:
            continue
        if (m := _NAME_OLD.match(line)) and not fmt.description:
            fmt.description = m.group(1).strip()
        elif m := _SIZE_DISCRETE.match(line):
            close_size()
            size = [int(m.group(1)), int(m.group(2)), [], None]
        elif m := _SIZE_RANGE.match(line):
            close_size()
            g = m.groups()
            fmt.stepwise = (int(g[0]), int(g[2]), int(g[4] or 1), int(g[1]), int(g[3]), int(g[5] or 1))
        elif m := _IVAL_DISCRETE.match(line):
            if size is not None:
                size[2].append(float(m.group(1)))
            elif fmt.stepwise:
                fmt.stepwise_fps += (float(m.group(1)),)
        elif m := _IVAL_RANGE.match(line):
            if size is not None:
                size[3] = (float(m.group(1)), float(m.group(2)))
    close_size()
    return caps


@dataclass(frozen=True)
class Mode:
    """What to ask the driver for."""

    fourcc: str
    width: int
    height: int
    fps: float


def negotiate(caps: CameraCaps, width: int, height: int, fps: float, pixel_format: str | None = None,
              label: str = "camera") -> Mode:
    """The mode for a profile's request, or SourceUnavailable saying what the camera offers.

    Without ``pixel_format`` MJPG is preferred, then YUYV (uncompressed YUYV runs out of USB 2
    bandwidth above VGA at full rate, which is why cameras list it with lower rates).
    """
    usable = [f for f in caps.formats if f.fourcc in SUPPORTED_FOURCCS]
    if not usable:
        offered = ", ".join(f.fourcc for f in caps.formats) or "nothing"
        raise SourceUnavailable(f"{label} offers {offered}; examrec reads MJPG or YUYV")
    wanted = [pixel_format] if pixel_format else list(SUPPORTED_FOURCCS)
    for fourcc in wanted:
        fmt = caps.format(fourcc)
        size = fmt.size(width, height) if fmt else None
        if size is not None and size.offers(fps):
            rate = next((r for r in size.fps if abs(r - fps) <= FPS_TOLERANCE * fps), fps)
            return Mode(fourcc, width, height, rate)
    # Explain the nearest miss in the terms of the profile's keys.
    if pixel_format and caps.format(pixel_format) is None:
        raise SourceUnavailable(f"{label} does not offer pixel_format {pixel_format}; it offers "
                                f"{', '.join(f.fourcc for f in usable)}: {caps.summary()}")
    with_size = [(f, f.size(width, height)) for f in (caps.format(c) for c in wanted) if f and f.size(width, height)]
    if with_size:
        rates = "; ".join(f"{f.fourcc} at {s.rates_text()} fps" for f, s in with_size)
        raise SourceUnavailable(f"{label} offers {width}x{height} {rates}, not {fps:g} fps: set fps to one of those "
                                f"(or choose another size)")
    raise SourceUnavailable(f"{label} cannot capture {width}x{height}"
                            f"{' in ' + pixel_format if pixel_format else ''}; it offers: {caps.summary()}")


def driver_stamp_to_monotonic(stamp_ms: float, mono_now_ns: int, wall_now_ns: int) -> tuple[int, str]:
    """A buffer timestamp (ms, as OpenCV reports it) on CLOCK_MONOTONIC, and what it was.

    UVC and most drivers stamp with CLOCK_MONOTONIC; a few stamp with the wall clock; a buffer
    without a stamp (0) gets the time it reached us.
    """
    ns = int(round(stamp_ms * 1_000_000))
    if 0 < ns <= mono_now_ns and mono_now_ns - ns < 10_000_000_000:
        return ns, "monotonic"
    if 0 < ns <= wall_now_ns and wall_now_ns - ns < 10_000_000_000:
        return ns + (mono_now_ns - wall_now_ns), "wall"
    return mono_now_ns, "arrival"


class V4L2Source(VideoSource):
    """A V4L2 camera named ``v4l2:/dev/v4l/by-id/...`` (or ``v4l2:/dev/videoN``)."""

    def __init__(self, spec: "StreamSpec", profile: "Profile | None" = None):
        super().__init__(spec.name, spec.width, spec.height, spec.fps)
        self.device = spec.source[len("v4l2:"):]
        self.pixel_format = spec.pixel_format
        self.stall_timeout_s = getattr(spec, "stall_timeout_s", None) or DEFAULT_STALL_TIMEOUT_S
        self.caps: CameraCaps | None = None
        self.mode: Mode | None = None
        self._cap = None
        self._stamp_kind: str | None = None
        self.frames_read = 0
        self.corrupt = 0

    @property
    def label(self) -> str:
        return f"camera {self.name}"

    def open(self) -> None:
        """Find the camera, negotiate the mode, start streaming; SourceUnavailable says why not."""
        self.close()
        if not os.path.exists(self.device):
            raise SourceUnavailable(f"{self.label}: {self.device} not found: is it plugged in? "
                                    f"`examrec devices` lists what is connected")
        node = os.path.realpath(self.device)
        try:
            caps = query_caps(node)
        except OSError as exc:
            raise SourceUnavailable(self._os_reason(exc, node)) from None
        if not caps.capture:
            raise SourceUnavailable(f"{self.label}: {self.device} ({caps.card or node}) is not a picture node (it is "
                                    f"the camera's metadata node): use its ...-video-index0 path")
        self.caps = caps
        self.mode = negotiate(caps, self.width, self.height, self.fps, self.pixel_format,
                              f"{self.label} ({caps.card or self.device})")
        import cv2
        cap = cv2.VideoCapture(node, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceUnavailable(f"{self.label}: {self.device} cannot be opened: busy? (another program may use it)")
        m = self.mode
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*m.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, m.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, m.height)
        cap.set(cv2.CAP_PROP_FPS, round(m.fps))   # OpenCV sets 1/N s intervals: whole rates only
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 4)
        got = (fourcc_str(int(cap.get(cv2.CAP_PROP_FOURCC))), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
               int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), cap.get(cv2.CAP_PROP_FPS))
        if got[:3] != (m.fourcc, m.width, m.height) or abs(got[3] - m.fps) > max(0.5, FPS_TOLERANCE * m.fps):
            cap.release()
            raise SourceUnavailable(f"{self.label}: asked {m.fourcc} {m.width}x{m.height}@{m.fps:g}, the driver set "
                                    f"{got[0]} {got[1]}x{got[2]}@{got[3]:g}")
        if not cap.grab():
            cap.release()
            raise SourceUnavailable(f"{self.label}: {self.device} opened but sends no picture within "
                                    f"{self.stall_timeout_s} s (USB bandwidth? too many cameras on one port?)")
        self._cap = cap
        log.info("%s: %s %s %dx%d@%g", self.label, self.device, m.fourcc, m.width, m.height, m.fps)

    def _os_reason(self, exc: OSError, node: str) -> str:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{self.label}: {self.device}: permission denied: add the recorder's user to the 'video' group"
        if exc.errno == errno.EBUSY:
            return f"{self.label}: {self.device} is busy: another program is using the camera"
        if exc.errno == errno.ENOTTY:
            return f"{self.label}: {self.device} is not a V4L2 camera"
        if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return (f"{self.label}: {self.device} not found: is it plugged in? "
                    f"`examrec devices` lists what is connected")
        return f"{self.label}: {self.device} ({node}): {exc.strerror}"

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceLost(f"{self.label}: not open")
        import cv2
        bad = 0
        while True:
            if not self._cap.grab():
                if not os.path.exists(self.device):
                    raise SourceLost(f"{self.label}: {self.device} was unplugged")
                raise SourceLost(f"{self.label}: {self.device} sent no picture for {self.stall_timeout_s} s "
                                 f"(stalled or disconnected)")
            stamp, kind = driver_stamp_to_monotonic(self._cap.get(cv2.CAP_PROP_POS_MSEC), time.monotonic_ns(),
                                                    time.time_ns())
            if kind != self._stamp_kind:
                if kind != "monotonic":
                    log.warning("%s: the driver's buffer times are %s; stamps may be less exact", self.label, kind)
                self._stamp_kind = kind
            ok, image = self._cap.retrieve()
            if not ok or image is None:
                # A damaged JPEG from the camera: skip the picture, count it, keep going.
                self.corrupt += 1
                bad += 1
                if bad > MAX_CORRUPT_IN_A_ROW:
                    raise SourceLost(f"{self.label}: {bad} damaged pictures in a row")
                continue
            if image.shape[:2] != (self.height, self.width):
                image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
            self.frames_read += 1
            return Frame(image=np.ascontiguousarray(image), capture_ns=stamp)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def info(self) -> SourceInfo:
        m = self.mode
        return SourceInfo(kind="v4l2", device=self.device, details={
            "card": self.caps.card if self.caps else None,
            "mode": f"{m.fourcc} {m.width}x{m.height}@{m.fps:g}" if m else None,
            "frames": self.frames_read, "corrupt": self.corrupt, "stamps": self._stamp_kind})
