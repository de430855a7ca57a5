"""The file layer under the MP4 muxer: sees every byte written, knows where fragments end,
fsyncs on a schedule and records each fragment's hash as it reaches the disk.

PyAV writes through this object (``av.open(FragmentFile(...), "w", format="mp4")``). The muxer
writes sequentially: ftyp, the fragmented moov, then moof+mdat pairs as each fragment completes
(``flush_packets``); closing appends a regular moov and rewrites one 8-byte box header near the
start (``hybrid_fragmented``). We parse top-level box headers on the fly, so we know when a
fragment is complete without reading anything back.

DESIGN, the loss bound lives here: ``_box_ended`` fsyncs at the first fragment boundary and then at
one once ``fsync_interval_ns`` has passed since the last fsync (``sync``), so a power cut loses at most
that interval plus the fragment being written (profile ``fsync_interval_ms`` + ``fragment_ms``);
tests/test_crash.py holds kills and cuts to KILL_BOUND_S and CUT_BOUND_S.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core import durable
from core.clock import NS_PER_S


@dataclass
class FragmentRecord:
    """One complete fragment (or the init segment) as written to the file."""

    kind: str            # "init" | "fragment"
    index: int           # 0 for init, then 1, 2, ...
    offset: int
    end: int
    sha256: str
    skip: tuple[int, int] | None = None  # bytes excluded from the hash (rewritten on close)


fsync_dir = durable.fsync_dir


class FragmentFile(io.RawIOBase):
    """A write-only, seekable raw file that tracks top-level MP4 boxes as they are written.

    ``on_fragment(record)`` is called for the init segment and for every complete moof+mdat.
    ``on_sync()`` is called after each fsync (the caller syncs its fragment log there).
    fsync happens at a fragment boundary once ``fsync_interval_ns`` has passed since the last one,
    and on close; so at most that much plus one fragment is ever unsynced.
    """

    def __init__(self, path: Path, fsync_interval_ns: int = NS_PER_S // 2,
                 on_fragment: Callable[[FragmentRecord], None] | None = None,
                 on_sync: Callable[[], None] | None = None):
        super().__init__()
        self.path = Path(path)
        self._fd = durable.open_fd(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fsync_dir(self.path.parent)
        self.fsync_interval_ns = fsync_interval_ns
        self.on_fragment = on_fragment
        self.on_sync = on_sync
        self._pos = 0            # current write position
        self._end = 0            # bytes written sequentially so far (the parsed stream)
        # box parser state
        self._box_start = 0
        self._box_size: int | None = None
        self._box_type = b""
        self._hdr = b""
        self._moov_span: tuple[int, int] | None = None
        self._rewrite_span: tuple[int, int] | None = None
        self._frag_start: int | None = None
        self._hash = hashlib.sha256()
        self._init_hash = hashlib.sha256()
        self._init_done = False
        self.fragments = 0
        self.last_sync_ns = time.monotonic_ns()
        self.synced_end = 0
        self.error: OSError | None = None

    # io.RawIOBase interface ------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = base + offset
        return self._pos

    def write(self, data) -> int:
        data = bytes(data)
        written = 0
        try:
            while written < len(data):  # short writes happen near a full disk
                n = self._pwrite(data[written:], self._pos + written)
                if n == 0:
                    raise OSError(28, "No space left on device")
                written += n
        except OSError as exc:
            self.error = exc
            # What did reach the file counts in its size; nothing parses it (the muxer stops here).
            self._end = max(self._end, self._pos + written)
            raise
        if self._pos == self._end:  # sequential: part of the box stream (the close's rewrite is not)
            self._end += len(data)
            self._parse(data, self._pos)
        else:
            self._end = max(self._end, self._pos + len(data))
        self._pos += len(data)
        return len(data)

    def flush(self) -> None:
        pass  # every write goes straight to the OS (pwrite); durability is fsync's job

    def _pwrite(self, data: bytes, offset: int) -> int:
        """The one place bytes leave for the disk; returns how many the OS took (a subclass
        that injects faults, a full disk or short writes, overrides it)."""
        return durable.pwrite(self._fd, data, offset)

    def close(self) -> None:
        if not self.closed:
            try:
                if self._fd >= 0:
                    self.sync()
                    durable.close(self._fd)
                    self._fd = -1
            finally:
                super().close()

    # our interface ---------------------------------------------------------------------
    def sync(self) -> None:
        """fsync the data now, then tell the caller (who syncs the fragment log after it)."""
        if self._fd < 0:
            return
        durable.fsync(self._fd)
        self.synced_end = self._end
        self.last_sync_ns = time.monotonic_ns()
        if self.on_sync:
            self.on_sync()

    @property
    def size(self) -> int:
        return self._end

    # box parsing -------------------------------------------------------------------------
    def _parse(self, data: bytes, at: int) -> None:
        i = 0
        n = len(data)
        while i < n:
            pos = at + i
            if self._box_size is None:
                if len(self._hdr) < 8:  # (a 64-bit size may still be arriving after the 8 bytes)
                    need = 8 - len(self._hdr)
                    self._hdr += data[i:i + need]
                    i += min(need, n - i)
                    if len(self._hdr) < 8:
                        return
                size, typ = struct.unpack(">I4s", self._hdr[:8])
                if size == 1:  # 64-bit size follows; rare for our fragments, handled for safety
                    if len(self._hdr) < 16:
                        need = 16 - len(self._hdr)
                        self._hdr += data[i:i + need]
                        i += min(need, n - i)
                        if len(self._hdr) < 16:
                            return
                    size = struct.unpack(">Q", self._hdr[8:16])[0]
                self._box_size = size if size else 1 << 62
                self._box_type = typ
                self._box_begun(self._box_start, typ)
                self._feed_hash(self._hdr, self._box_start)
                continue
            box_end = self._box_start + self._box_size
            take = min(n - i, box_end - pos)
            self._feed_hash(data[i:i + take], pos)
            i += take
            if pos + take == box_end:
                self._box_ended(self._box_start, box_end, self._box_type)
                self._box_start = box_end
                self._box_size = None
                self._hdr = b""

    def _feed_hash(self, chunk: bytes, pos: int) -> None:
        if not self._init_done:
            if self._rewrite_span and pos == self._rewrite_span[0]:
                self._init_hash.update(chunk[8:])
            else:
                self._init_hash.update(chunk)
        elif self._frag_start is not None:
            self._hash.update(chunk)

    def _box_begun(self, start: int, typ: bytes) -> None:
        if not self._init_done and typ == b"free" and self._moov_span is None and self._box_size > 8:
            # hybrid_fragmented turns the `free` box before the moov (the one holding a copy of
            # ftyp) into the header of one big `mdat` on close: its 8 header bytes are not hashed.
            self._rewrite_span = (start, start + 8)
        if typ == b"moov" and self._moov_span is None:
            self._moov_span = (start, start + 8)
        if typ == b"moof":
            if not self._init_done:
                self._finish_init(start)
            self._frag_start = start
            self._hash = hashlib.sha256()

    def _finish_init(self, end: int) -> None:
        self._init_done = True
        self._emit(FragmentRecord("init", 0, 0, end, self._init_hash.hexdigest(), self._rewrite_span))

    def _box_ended(self, start: int, end: int, typ: bytes) -> None:
        if typ != b"mdat":
            return
        if not self._init_done:
            # hybrid_fragmented: the first fragment's samples sit in a plain mdat described by
            # the initial moov, so the init record ends with them.
            self._finish_init(end)
        elif self._frag_start is not None:
            self.fragments += 1
            self._emit(FragmentRecord("fragment", self.fragments, self._frag_start, end, self._hash.hexdigest()))
            self._frag_start = None
        else:
            return
        # The first fragment goes to the disk at once: a segment (and a session started by the
        # examiner's Start) is on the disk with its first picture, not an interval later.
        if self.synced_end == 0 or time.monotonic_ns() - self.last_sync_ns >= self.fsync_interval_ns:
            self.sync()

    def _emit(self, record: FragmentRecord) -> None:
        if self.on_fragment:
            self.on_fragment(record)
