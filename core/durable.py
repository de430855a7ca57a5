"""The few file operations whose order decides what survives a power cut.

Every byte examrec writes to a session goes through here: segment data (pwrite), chained logs
(append), fsync, atomic replace. In production these are the plain system calls. When the
environment variable EXAMREC_IO_TRACE names a folder, each process also appends a record of every
operation (with the data) to its own trace file there: the crash tests rebuild the session as it
would be after a power cut at any instant from that trace (fsynced bytes kept, later writes
dropped, kept or torn), the way CrashMonkey and SQLite's crash tests do.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

_TRACE_DIR = os.environ.get("EXAMREC_IO_TRACE")
_lock = threading.Lock()
_trace = None
_fd_paths: dict[int, str] = {}


def _record(op: str, path: str, data: bytes = b"", **fields) -> None:
    global _trace
    with _lock:
        if _trace is None:
            Path(_TRACE_DIR).mkdir(parents=True, exist_ok=True)
            _trace = open(Path(_TRACE_DIR) / f"{os.getpid()}.trace", "ab", buffering=0)
        head = json.dumps({"t": time.monotonic_ns(), "op": op, "path": path, "len": len(data), **fields})
        _trace.write(head.encode() + b"\n" + data)


def open_fd(path: Path | str, flags: int, mode: int = 0o644) -> int:
    fd = os.open(path, flags, mode)
    if _TRACE_DIR:
        p = os.path.abspath(path)
        _fd_paths[fd] = p
        _record("open", p, trunc=bool(flags & os.O_TRUNC), create=bool(flags & os.O_CREAT))
    return fd


def pwrite(fd: int, data: bytes, offset: int) -> int:
    n = os.pwrite(fd, data, offset)
    if _TRACE_DIR:
        _record("write", _fd_paths.get(fd, "?"), data[:n], off=offset)
    return n


def append(fd: int, data: bytes) -> int:
    """Write at the end of a file opened with O_APPEND."""
    if _TRACE_DIR:
        off = os.fstat(fd).st_size
    n = os.write(fd, data)
    if _TRACE_DIR:
        _record("write", _fd_paths.get(fd, "?"), data[:n], off=off)
    return n


def truncate(fd: int, length: int) -> None:
    os.ftruncate(fd, length)
    if _TRACE_DIR:
        _record("truncate", _fd_paths.get(fd, "?"), size=length)


def fsync(fd: int) -> None:
    os.fsync(fd)
    if _TRACE_DIR:
        _record("fsync", _fd_paths.get(fd, "?"))


def close(fd: int) -> None:
    os.close(fd)
    _fd_paths.pop(fd, None)


class ScheduledFile:
    """A session file whose writer fsyncs on a schedule (telemetry.jsonl, route.gpx): opened
    here, its name made durable when it is new, ``wrote(now_ns)`` after each write fsyncs once
    ``interval_ns`` has passed since the last fsync (0: after every write), ``close`` fsyncs and
    closes and may be called twice. Not locked: the writer that owns it serialises the calls."""

    def __init__(self, path: Path | str, flags: int, interval_ns: int, mode: int = 0o644):
        self.path = Path(path)
        new = not self.path.exists()
        self.fd = open_fd(self.path, flags, mode)
        if new:
            fsync_dir(self.path.parent)  # the file's name must survive a power cut too
        self.interval_ns = interval_ns
        self._synced_ns: int | None = None

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def wrote(self, now_ns: int) -> None:
        """Call after a write made at ``now_ns`` (any monotonic nanosecond clock)."""
        if self._synced_ns is None or now_ns - self._synced_ns >= self.interval_ns:
            fsync(self.fd)
            self._synced_ns = now_ns

    def close(self) -> None:
        if self.fd >= 0:
            fsync(self.fd)
            close(self.fd)
            self.fd = -1


def _fsync_path(path: Path | str, flags: int, op: str) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if _TRACE_DIR:
        _record(op, os.path.abspath(path))


def fsync_dir(path: Path | str) -> None:
    """Make directory entries (a new file, a rename) durable."""
    _fsync_path(path, os.O_RDONLY | os.O_DIRECTORY, "fsync_dir")


def fsync_tree(root: Path | str) -> None:
    """Make every file and folder under ``root`` durable (a copy written with ordinary file
    objects that must be on the medium before it is unplugged)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(os.path.join(dirpath, name), os.O_RDONLY, "fsync")
        fsync_dir(dirpath)


def replace(src: Path | str, dst: Path | str) -> None:
    os.replace(src, dst)
    if _TRACE_DIR:
        _record("rename", os.path.abspath(src), dst=os.path.abspath(dst))


def temp_name(name: str) -> str:
    """The temp file write_file_atomic writes beside ``name`` before renaming it into place (one
    left behind means the writer died before the rename; it is never the file itself)."""
    return f".{name}.tmp"


def write_file_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that after a crash it holds either the old or the new
    content, never a mix: temp file, fsync, rename, fsync of the folder."""
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < len(data):
            written += pwrite(fd, data[written:], written)
        fsync(fd)
    finally:
        close(fd)
    replace(tmp, path)
    fsync_dir(path.parent)
