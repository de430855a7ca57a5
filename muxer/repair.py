"""Find the playable part of a segment file after a crash, and trim the torn tail.

A fragmented MP4 written by examrec is: ftyp, free, free(ftyp copy), moov, mdat (first fragment),
then moof+mdat pairs; a cleanly closed one has a regular moov at the end. After a kill or a power
cut, the file ends somewhere in a fragment, or has zeros where unsynced data never reached the
disk. We walk the top-level boxes, accept each fragment that is complete (and whose bytes match
fragments.jsonl where it has a record), and cut after the last good one. The cut bytes are moved
aside, never deleted, and nothing before the cut is rewritten. :func:`append_index` then closes
the segment as the muxer would have (a regular moov after the fragments), so every player sees
its length and seeks in it.
"""
from __future__ import annotations

import bisect
import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from core import durable
from muxer.mp4_index import NotIndexable, boxes, build_index, reopened

KNOWN_TOP = {b"ftyp", b"free", b"moov", b"mdat", b"moof", b"mfra", b"sidx", b"styp", b"skip", b"wide", b"udta", b"uuid"}


@dataclass
class Box:
    type: bytes
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class ScanResult:
    """What a segment file holds."""

    size: int
    valid_end: int             # the file is playable up to here
    finalised: bool            # cleanly closed: a regular MP4 with its moov at the end
    fragments: int             # complete fragments kept (the first plain mdat counts as one)
    reason: str                # why the tail (if any) is not kept
    boxes: list[Box] = field(default_factory=list)
    header_patch: tuple[int, bytes] | None = None  # original bytes to restore (cut during close)

    @property
    def torn_bytes(self) -> int:
        return self.size - self.valid_end


def read_boxes(data: bytes) -> list[Box]:
    """Top-level boxes, stopping at the first one that is incomplete or not a box at all."""
    boxes, pos, n = [], 0, len(data)
    while pos + 8 <= n:
        size, typ = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            if pos + 16 > n:
                break
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        if typ not in KNOWN_TOP or size < 8:
            break
        boxes.append(Box(typ, pos, size))
        if pos + size > n:
            break
        pos += size
    return boxes


def _zero_tail(data: bytes, box: Box) -> bool:
    """A power cut can leave the end of a box as zeros (the size was written, the data wasn't)."""
    tail = data[max(box.start, box.end - 64):box.end]
    return len(tail) > 0 and not any(tail)


# A disk sector. A write lost in a cut while a later one reached the disk leaves a hole that reads
# as zeros, whole sectors of them; H.264 never holds more than three zero bytes in a row (its
# start-code emulation prevention), and the boxes around it are far shorter than a sector.
SECTOR = 512
_ZERO_SECTOR = bytes(SECTOR)


def _zero_hole(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` holds a sector's worth of zeros anywhere (a lost write)."""
    return data.find(_ZERO_SECTOR, start, end) >= 0


def _first_undecodable(data: bytes, init_end: int, fragments: list[tuple[int, int]],
                       unlogged: set[int]) -> int | None:
    """The start of the first fragment in ``unlogged`` (moof offsets) whose media the decoders
    complain about, else None. A write lost in a cut leaves a hole (zeros, or what a shorter write
    left) that the boxes' sizes do not show, and a fragment its log never recorded has no hash to
    prove it: so it is decoded, from the last keyframe before the first such fragment (a
    fragment's frames need the ones before them), with every decoder complaint counted."""
    import io
    import av
    import av.logging
    first = min(unlogged)
    starts = [s for s, _ in fragments]   # in file order

    def fragment_of(pos: int) -> int:
        return starts[max(0, bisect.bisect_right(starts, pos) - 1)]

    # Where to start decoding: the fragment holding the last video keyframe before ``first``.
    begin = fragments[0][0]
    try:
        with av.open(io.BytesIO(data)) as container:
            video = container.streams.video[0] if container.streams.video else None
            for packet in container.demux(video) if video is not None else ():
                if packet.pos is not None and packet.pos >= first:
                    break
                if packet.is_keyframe and packet.pos is not None and packet.pos >= 0:
                    begin = fragment_of(packet.pos)
    except (av.error.FFmpegError, ValueError, IndexError):
        return first
    blob = data[:init_end] + data[begin:]
    shift = begin - init_end               # blob offset + shift = file offset
    old = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=True) as logs, av.open(io.BytesIO(blob)) as container:
            for stream in container.streams:
                stream.codec_context.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
            for packet in container.demux():
                at = None if packet.pos is None or packet.pos < 0 else fragment_of(packet.pos + shift)
                seen = len(logs)
                try:
                    packet.decode()
                except (av.error.FFmpegError, ValueError):
                    seen = -1
                if (seen < 0 or len(logs) > seen) and at is not None and at in unlogged:
                    return at
        return None
    except (av.error.FFmpegError, ValueError):
        return first
    finally:
        av.logging.set_level(old)


def _media_ends_in_zeros(data: bytes, mdat: Box) -> bool:
    """Media data never ends in a zero byte (an H.264 NAL unit ends in its stop bit, an AAC block
    in its END element): a write torn at a sector boundary shortly before the box's end does."""
    return mdat.size > 8 and data[mdat.end - 1] == 0


def scan_segment(path: Path, records: list[dict] | None = None) -> ScanResult:
    """Decide how much of a segment file is good. ``records`` are its fragments.jsonl entries
    (init and fragments, in order): a fragment whose bytes don't match its record is torn."""
    data = Path(path).read_bytes()
    size = len(data)
    boxes = read_boxes(data)
    by_offset = {r["offset"]: r for r in (records or []) if r.get("kind") == "fragment"}
    init_rec = next((r for r in (records or []) if r.get("kind") == "init"), None)
    if len(boxes) >= 2 and boxes[-1].type == b"moov" and boxes[-1].end == size and boxes[-2].type == b"mdat" \
            and boxes[-2].end == boxes[-1].start and not any(b.type == b"moof" for b in boxes):
        return ScanResult(size, size, True, 0, "closed cleanly", boxes)
    patch = _unfinished_close_patch(data, boxes)
    if patch is not None:
        # A cut during the close: the header rewrite reached the disk, the final moov did not.
        # Put back the original 8 bytes so the fragments are a fragmented MP4 again.
        data = data[:patch[0]] + patch[1] + data[patch[0] + 8:]
        boxes = read_boxes(data)
    valid_end, fragments, reason = 0, 0, "no complete first fragment"
    seen_moov = False
    init_end: int | None = None
    frames_at: list[tuple[int, int]] = []   # (moof, end of its mdat) of every fragment kept so far
    unlogged: set[int] = set()              # those the log has no record of
    i = 0
    while i < len(boxes):
        b = boxes[i]
        if b.end > size:
            reason = f"{b.type.decode()} at {b.start} is cut short"
            break
        if b.type == b"moov":
            if seen_moov:
                reason = "a trailing moov from an unfinished close"
                break
            seen_moov = True
        elif b.type == b"mdat" and fragments == 0 and seen_moov:
            if _zero_tail(data, b) or (init_rec is None and (_zero_hole(data, b.start, b.end)
                                                              or _media_ends_in_zeros(data, b))):
                reason = f"first fragment at {b.start} was not written completely (zeros)"
                break
            if init_rec and init_rec["end"] == b.end and not _matches(data, init_rec):
                reason = "first fragment does not match its record"
                break
            fragments, valid_end = 1, b.end
        elif b.type == b"moof":
            if init_end is None:
                init_end = b.start   # the boxes before the first fragment: what a fragment plays after
            if i + 1 >= len(boxes) or boxes[i + 1].type != b"mdat" or boxes[i + 1].end > size:
                reason = f"fragment at {b.start} is incomplete"
                break
            mdat = boxes[i + 1]
            rec = by_offset.get(b.start)
            if rec is not None and (rec["end"] != mdat.end or not _matches(data, rec)):
                reason = f"fragment at {b.start} does not match its record (torn)"
                break
            # A fragment its log never recorded is proved by nothing but its shape: refuse one
            # with a hole in it (a write lost in the cut while a later one reached the disk).
            if rec is None and (_zero_tail(data, mdat) or _zero_tail(data, b) or _zero_hole(data, b.start, mdat.end)
                                or _media_ends_in_zeros(data, mdat)):
                reason = f"fragment at {b.start} was not written completely (zeros)"
                break
            frames_at.append((b.start, mdat.end))
            if rec is None:
                unlogged.add(b.start)
            fragments += 1
            valid_end = mdat.end
            i += 2
            continue
        elif b.type not in (b"ftyp", b"free", b"skip", b"wide"):
            reason = f"unexpected {b.type.decode()} box at {b.start}"
            break
        i += 1
    else:
        reason = "complete" if valid_end == size else "trailing bytes"
    if unlogged and init_end is not None:
        bad = _first_undecodable(data[:valid_end], init_end, frames_at, unlogged)
        if bad is not None:
            kept = [f for f in frames_at if f[0] < bad]
            first_mdat = fragments > len(frames_at)   # the fragment the initial moov describes
            valid_end = kept[-1][1] if kept else (init_end if first_mdat else 0)
            fragments = len(kept) + first_mdat
            return ScanResult(size, valid_end, False, fragments,
                              f"fragment at {bad} does not decode (a write lost in the interruption)", boxes,
                              header_patch=patch)
    if valid_end == size:
        reason = "complete"
    elif valid_end < size and i >= len(boxes):
        reason = reason if reason != "complete" else f"{size - valid_end} bytes after the last box"
    return ScanResult(size, valid_end, False, fragments, reason, boxes, header_patch=patch)


def _unfinished_close_patch(data: bytes, boxes: list[Box]) -> tuple[int, bytes] | None:
    """The box before the moov normally is `free` holding a copy of ftyp. If closing already
    turned its header into the big mdat's (or a cut left it unreadable) but the file is not a
    finalised MP4, return the original header (free, sized to reach the moov) to put back."""
    if len(boxes) < 2 or boxes[0].type != b"ftyp":
        return None
    at = boxes[0].end + 8 if len(boxes) > 1 and boxes[1].type == b"free" and boxes[1].size == 8 else None
    if at is None or at + 16 > len(data):
        return None
    inner = at + 8
    if data[inner + 4:inner + 8] != b"ftyp":
        return None
    ftyp_size = struct.unpack(">I", data[inner:inner + 4])[0]
    original = struct.pack(">I4s", 8 + ftyp_size, b"free")
    if data[inner + ftyp_size + 4:inner + ftyp_size + 8] != b"moov" or data[at:at + 8] == original:
        return None
    return at, original


@dataclass
class MediaSpan:
    """What a segment holds, read from its packets (no decoding: fast on long segments)."""

    frames: int = 0
    first_pts_s: float | None = None
    last_pts_s: float | None = None
    audio_first_pts_s: float | None = None
    audio_end_pts_s: float | None = None


def media_span(path: Path) -> MediaSpan:
    import av
    span = MediaSpan()
    try:
        with av.open(str(path)) as c:
            for pkt in c.demux():
                if pkt.pts is None or pkt.size == 0:
                    continue
                t = float(pkt.pts * pkt.time_base)
                if pkt.stream.type == "video":
                    span.frames += 1
                    span.first_pts_s = t if span.first_pts_s is None else min(span.first_pts_s, t)
                    span.last_pts_s = t if span.last_pts_s is None else max(span.last_pts_s, t)
                elif pkt.stream.type == "audio":
                    end = t + float((pkt.duration or 0) * pkt.time_base)
                    span.audio_first_pts_s = t if span.audio_first_pts_s is None else min(span.audio_first_pts_s, t)
                    span.audio_end_pts_s = end if span.audio_end_pts_s is None else max(span.audio_end_pts_s, end)
    except (av.FFmpegError, OSError):
        pass  # a torn tail ends the demux; what was read counts
    return span


def _matches(data: bytes, rec: dict) -> bool:
    """Do the bytes a fragments.jsonl record covers still hash to what was recorded?"""
    if rec["end"] > len(data):
        return False
    if rec.get("skip"):
        s0, s1 = rec["skip"]
        chunk = data[rec["offset"]:s0] + data[s1:rec["end"]]
    else:
        chunk = data[rec["offset"]:rec["end"]]
    return hashlib.sha256(chunk).hexdigest() == rec["sha256"]


@dataclass
class IndexResult:
    """The index appended to a segment cut off before its close (see :mod:`muxer.mp4_index`)."""

    offset: int          # where the index (a regular moov) starts: the end of the last fragment
    size: int            # its length; the file ends right after it
    header_at: int       # the 8 bytes turned from a free header into the mdat header

    def to_json(self) -> dict:
        return {"offset": self.offset, "size": self.size}


def append_index(path: Path) -> IndexResult:
    """Close a segment that holds only complete fragments (trimmed by :func:`scan_segment`) as
    the muxer's close would: append a regular moov indexing every sample, then turn the
    placeholder's header into the mdat header reaching it, so every player finds its length and
    can seek. No byte of a fragment changes; the moov is appended and fsynced before the header
    is rewritten, so a cut in between leaves a file :func:`scan_segment` trims back.
    Raises ``mp4_index.NotIndexable`` when the file is not such a segment."""
    path = Path(path)
    data = path.read_bytes()
    plan = build_index(data)
    fd = durable.open_fd(path, os.O_WRONLY)
    try:
        durable.pwrite(fd, plan.moov, plan.end)
        durable.fsync(fd)
        durable.pwrite(fd, plan.header, plan.header_at)
        durable.fsync(fd)
    finally:
        durable.close(fd)
    return IndexResult(plan.end, len(plan.moov), plan.header_at)


def index_problem(path: Path, offset: int, size: int) -> str | None:
    """Is the end of ``path`` exactly the index :func:`append_index` computes from its first
    ``offset`` bytes? None when it is, else what differs (the index is a function of the
    fragments before it, so any change to it, or to them, shows here)."""
    data = Path(path).read_bytes()
    if len(data) != offset + size:
        return f"the file has {len(data)} bytes; fragments up to {offset} and an index of {size} make {offset + size}"
    top = boxes(data, 0, offset)
    at = next((b.start for b in top if b.type == b"mdat" and b.header == 8), None)
    if at is None:
        return "no mdat header spanning the fragments"
    try:
        plan = build_index(reopened(data[:offset], at))
    except NotIndexable as exc:
        return f"the fragments before the index cannot be indexed ({exc})"
    if plan.header != data[at:at + 8]:
        return f"the mdat header at {at} does not reach the index"
    if plan.moov != data[offset:]:
        return "the index differs from the one its fragments give (changed)"
    return None


def index_segment(path: Path) -> tuple[IndexResult | None, str]:
    """Give a segment without its closing index one (:func:`append_index`). Returns the index
    and what was done. A file that already ends with the index its fragments give (a repair cut
    off after indexing) keeps it; a file the muxer closed, or one that cannot be indexed, is
    left as it is (None, and why)."""
    path = Path(path)
    data = path.read_bytes()
    top = boxes(data)
    if len(top) >= 2 and top[-1].type == b"moov" and top[-2].type == b"mdat" and top[-1].end == len(data):
        if index_problem(path, top[-1].start, top[-1].size) is None:
            return IndexResult(top[-1].start, top[-1].size, top[-2].start), "indexed by an earlier repair"
        return None, "closed by the recorder"
    try:
        return append_index(path), "index appended"
    except NotIndexable as exc:
        return None, f"left fragmented: {exc}"
