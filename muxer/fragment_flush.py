"""End the open MP4 fragment now, without waiting for the next frame.

FFmpeg's mp4 muxer closes a fragment only when a packet arrives that would make it longer than
``frag_duration``: a 10 fps stream's frame waits for the frames after it, and a stalled source's
last frames wait indefinitely. libavformat can end a fragment on demand (``av_write_frame(ctx,
NULL)``, the muxer's AVFMT_ALLOW_FLUSH), but PyAV does not expose that call, and an empty packet
does not do it either (the muxer drops empty packets before it looks at the fragment's length).

So we make that one call ourselves through ctypes, on the AVFormatContext PyAV already holds and
with the libavformat PyAV already loaded. Every pointer is checked before it is followed: it must
lie in mapped memory, the context's class must be ``AVFormatContext`` and its output format
``mp4``/``mov``. If anything does not match (another PyAV layout), flushing is reported
unavailable and the writer keeps the muxer's own fragmenting; the crash tests then show the
longer loss instead of a crash.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# PyAV's Container (av/container/core.pxd) is a Cython extension type: PyObject_HEAD (refcount,
# type), the Cython vtable pointer, then ``AVFormatContext *ptr``, its first field.
_PTR_OFFSET = 24
# struct AVFormatContext starts with: const AVClass *av_class; const AVInputFormat *iformat;
# const AVOutputFormat *oformat; (AVClass and AVOutputFormat both start with their name).
_OFORMAT_OFFSET = 16
_AV_OPT_SEARCH_CHILDREN = 1  # libavutil/opt.h: the muxer's options live in the context's child


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    readable: bool
    path: str


def _mappings() -> list[_Mapping]:
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append(_Mapping(lo, hi, parts[1].startswith("r"), parts[5] if len(parts) > 5 else ""))
    return out


def _readable(maps: list[_Mapping], addr: int, size: int) -> bool:
    return any(m.readable and m.start <= addr and addr + size <= m.end for m in maps)


def _read_ptr(maps: list[_Mapping], addr: int) -> int | None:
    if not addr or not _readable(maps, addr, 8):
        return None
    return ctypes.c_void_p.from_address(addr).value


def _read_name(maps: list[_Mapping], struct_addr: int | None) -> bytes | None:
    """The C string a struct's first field points to (AVClass.class_name, AVOutputFormat.name)."""
    if struct_addr is None:
        return None
    name_ptr = _read_ptr(maps, struct_addr)
    if name_ptr is None or not _readable(maps, name_ptr, 16):
        return None
    return ctypes.string_at(name_ptr, 16).split(b"\0", 1)[0]


_lib_cache: dict[str, ctypes.CDLL] = {}


def _libavformat(maps: list[_Mapping], oformat: int) -> ctypes.CDLL | None:
    """The loaded libavformat that owns the muxer's output format (PyAV's own copy: other
    packages, e.g. OpenCV, load theirs too). Opening the same file again gives the same handle."""
    paths = sorted({m.path for m in maps if "libavformat" in Path(m.path).name
                    and m.start <= oformat < m.end})
    if len(paths) != 1:
        return None
    if paths[0] not in _lib_cache:
        lib = ctypes.CDLL(paths[0])
        lib.av_write_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.av_write_frame.restype = ctypes.c_int
        lib.av_interleaved_write_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.av_interleaved_write_frame.restype = ctypes.c_int
        lib.av_opt_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        lib.av_opt_set.restype = ctypes.c_int
        _lib_cache[paths[0]] = lib
    return _lib_cache[paths[0]]


class FragmentFlush:
    """``flush()`` writes out the samples the mp4 muxer of ``container`` holds as one fragment
    (moof+mdat) now. ``available`` says whether this works with the installed PyAV."""

    def __init__(self, container) -> None:
        self._container = container  # keeps the context alive as long as we may use it
        self._ctx: int | None = None
        self._lib: ctypes.CDLL | None = None
        self.why_not = ""
        try:
            maps = _mappings()
            ctx = _read_ptr(maps, id(container) + _PTR_OFFSET)
            if _read_name(maps, _read_ptr(maps, ctx) if ctx else None) != b"AVFormatContext":
                self.why_not = "PyAV's container does not hold an AVFormatContext where expected"
            elif _read_name(maps, oformat := _read_ptr(maps, ctx + _OFORMAT_OFFSET)) not in (b"mp4", b"mov"):
                self.why_not = "the container is not an mp4 muxer"
            else:
                self._lib = _libavformat(maps, oformat or 0)
                if self._lib is None:
                    self.why_not = "PyAV's libavformat is not found among the loaded libraries"
                else:
                    self._ctx = ctx
        except (OSError, ValueError, AttributeError) as exc:
            self.why_not = f"cannot reach libavformat: {exc}"
        if self.why_not:
            log.warning("fragments end only when the next frame comes: %s", self.why_not)

    @property
    def available(self) -> bool:
        return self._ctx is not None

    def flush(self) -> None:
        """End the open fragment; raises OSError if the muxer reports an error (e.g. disk full)."""
        if self._ctx is None or self._lib is None:
            return
        # First the packets the interleaver still holds (a video packet waiting for the audio
        # beside it), then the muxer's open fragment.
        ret = self._lib.av_interleaved_write_frame(self._ctx, None)
        if ret >= 0:
            ret = self._lib.av_write_frame(self._ctx, None)
        if ret < 0:
            raise OSError(-ret, f"ending a fragment failed (libavformat error {ret})")
        # The fragment just written ends with a guessed sample length (the next frame did not
        # exist yet). Without this, the muxer would move the next fragment's samples to where
        # that guess ends (tfdt = sum of durations), shifting every later frame by the guess's
        # error: frag_discont makes it start the next fragment at its first sample's own time.
        ret = self._lib.av_opt_set(self._ctx, b"movflags", b"+frag_discont", _AV_OPT_SEARCH_CHILDREN)
        if ret < 0:
            raise OSError(-ret, f"marking the next fragment's start failed (libavformat error {ret})")
