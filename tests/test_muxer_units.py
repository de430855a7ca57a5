"""The muxer's file layer in the test process, each test in milliseconds: the fragment file and the
segment writer on a faulty disk (full in the middle of a fragment, short writes), and the box
parsers (the fragment file's, on the fly, and repair's, after the fact).

In the style of PyAV's own tests: every file goes to a sandboxed folder, and each test writes
something and reads it back. The faulty disk is a FragmentFile whose one write primitive keeps a
byte budget or writes a few bytes at a time; everything else is the real code on a real file.
"""
from __future__ import annotations

import errno
import hashlib
import struct
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.clock import SessionClock
from core.profile import EncoderSpec
from core.clock import NS_PER_S
from muxer.fragment_file import FragmentFile, FragmentRecord
from muxer.repair import read_boxes, scan_segment
from muxer.segment import SegmentResult, SegmentSettings, SegmentWriter

CLOCK = SessionClock(start_ns=10**12, wall_anchor_ns=1_750_000_000 * 10**9)
FRAME_NS = 40_000_000   # 25 fps
FRAMES = 30
SETTINGS = SegmentSettings(width=64, height=48, fps=25, encoder=EncoderSpec(preset="ultrafast", crf=30),
                           gop=5, fragment_ms=40, fsync_interval_ms=0)


@pytest.fixture
def sandboxed(tmp_path):
    """PyAV's ``sandboxed(name)``: a path in this test's own output folder."""
    def path(name: str) -> Path:
        return tmp_path / name
    return path


def picture(i: int) -> np.ndarray:
    """A frame whose brightness says its number (so a decoded frame can be told apart)."""
    return np.full((SETTINGS.height, SETTINGS.width, 3), (i * 8) % 250, np.uint8)


class ShortWrites(FragmentFile):
    """A disk that takes at most ``chunk`` bytes a call, like a write interrupted by a signal."""

    chunk = 7

    def _pwrite(self, data: bytes, offset: int) -> int:
        return super()._pwrite(data[:self.chunk], offset)


class FullDisk(FragmentFile):
    """A disk with ``budget`` bytes of room: the write that crosses it is short, the next one
    fails with ENOSPC (``zero_at_end``: returns 0 instead, as some file systems do)."""

    budget = 0
    zero_at_end = False

    def _pwrite(self, data: bytes, offset: int) -> int:
        room = self.budget - offset
        if room <= 0:
            if self.zero_at_end:
                return 0
            raise OSError(errno.ENOSPC, "No space left on device")
        return super()._pwrite(data[:room], offset)


def write_segment(path: Path, file_type: type[FragmentFile] = FragmentFile, frames: int = FRAMES,
                  close: bool = True) -> tuple[SegmentWriter, SegmentResult, list[FragmentRecord], OSError | None]:
    """Encode ``frames`` pictures into ``path`` (and close or abandon it, as the recorder does when
    a write fails); the writer, its result, the fragment records and the error the disk raised."""
    records: list[FragmentRecord] = []
    w = SegmentWriter(path, f"cam/{path.name}", SETTINGS, CLOCK, on_fragment=records.append, file_type=file_type)
    try:
        for i in range(frames):
            w.write_video(picture(i), CLOCK.start_ns + i * FRAME_NS)
        result = w.close() if close else w.abandon()
    except OSError as exc:
        return w, w.abandon(), records, exc
    return w, result, records, None


def covered(data: bytes, rec: FragmentRecord) -> bytes:
    """The bytes a record's hash covers (the init record leaves out the header rewritten on close)."""
    if rec.skip:
        return data[rec.offset:rec.skip[0]] + data[rec.skip[1]:rec.end]
    return data[rec.offset:rec.end]


def decoded_pts(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


# ---------------------------------------------------------------------------------------------
# the segment writer and its fragment file


def test_every_fragment_record_hashes_the_bytes_on_disk(sandboxed):
    path = sandboxed("0001.mp4")
    _, result, records, err = write_segment(path)
    assert err is None and result.closed and result.frames == FRAMES
    data = path.read_bytes()
    assert [r.kind for r in records] == ["init"] + ["fragment"] * (len(records) - 1) and len(records) > 5
    assert [r.index for r in records] == list(range(len(records)))
    for before, after in zip(records, records[1:]):
        assert after.offset == before.end                   # fragments follow each other, no gap
    for r in records:
        assert hashlib.sha256(covered(data, r)).hexdigest() == r.sha256
    # Round trip: every picture comes back, at its capture instant on the session timeline.
    assert decoded_pts(path) == [Fraction(i * FRAME_NS, 10**9) for i in range(FRAMES)]


def test_short_writes_leave_the_same_file(sandboxed):
    _, plain, plain_records, _ = write_segment(sandboxed("plain.mp4"))
    _, short, short_records, err = write_segment(sandboxed("short.mp4"), ShortWrites)
    assert err is None and short.closed
    assert sandboxed("short.mp4").read_bytes() == sandboxed("plain.mp4").read_bytes()
    assert short_records == plain_records and short.size == plain.size


@pytest.mark.parametrize("zero_at_end", [False, True], ids=["ENOSPC", "write returns 0"])
def test_a_disk_full_in_the_middle_of_a_fragment_keeps_every_recorded_fragment(sandboxed, zero_at_end):
    # Where the disk fills: the middle of the sixth fragment of an undisturbed run.
    _, _, plain_records, _ = write_segment(sandboxed("plain.mp4"), close=False)
    sixth = plain_records[6]
    budget = (sixth.offset + sixth.end) // 2
    disk = type("Disk", (FullDisk,), {"budget": budget, "zero_at_end": zero_at_end})
    path = sandboxed("full.mp4")
    w, result, records, err = write_segment(path, disk)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert w.file.error is not None and w.file.error.errno == errno.ENOSPC
    assert not result.closed and result.size == budget == path.stat().st_size
    # What was recorded is exactly what reached the disk before it filled, byte for byte.
    assert records == plain_records[:6]
    data = path.read_bytes()
    assert all(hashlib.sha256(covered(data, r)).hexdigest() == r.sha256 for r in records)
    # Repair keeps every recorded fragment and cuts the torn one.
    scan = scan_segment(path, [asdict(r) for r in records])
    assert scan.valid_end == records[-1].end and not scan.finalised
    assert scan.fragments == len(records) - 1          # the init record holds no samples (empty_moov)
    kept = sandboxed("kept.mp4")
    kept.write_bytes(data[:scan.valid_end])
    pts = decoded_pts(kept)
    assert pts == [Fraction(i * FRAME_NS, 10**9) for i in range(len(pts))] and len(pts) >= 5


def test_a_disk_full_before_the_first_fragment_leaves_nothing_playable(sandboxed):
    disk = type("Disk", (FullDisk,), {"budget": 200})
    path = sandboxed("full.mp4")
    _, result, records, err = write_segment(path, disk)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and records == [] and not result.closed
    scan = scan_segment(path, [])
    assert scan.valid_end == 0 and scan.fragments == 0


# ---------------------------------------------------------------------------------------------
# the box parsers


def box(typ: bytes, body: bytes, wide: bool = False) -> bytes:
    """One MP4 box; ``wide`` writes the 64-bit size form (size field 1)."""
    if wide:
        return struct.pack(">I4sQ", 1, typ, 16 + len(body)) + body
    return struct.pack(">I4s", 8 + len(body), typ) + body


def synthetic_hybrid_mp4() -> tuple[bytes, list[tuple[int, int]]]:
    """The box sequence the muxer writes (ftyp, free, free holding an ftyp copy, moov, the first
    fragment's plain mdat, then moof+mdat pairs, one with a 64-bit size) and the expected
    [start, end) of the init record and each fragment."""
    ftyp = box(b"ftyp", b"isom\0\0\2\0isomiso2")
    parts = [ftyp, box(b"free", b""), box(b"free", ftyp), box(b"moov", bytes(range(40))),
             box(b"mdat", b"\x11" * 100)]
    init_end = sum(map(len, parts))
    spans = [(0, init_end)]
    pos = init_end
    for i, (moof_len, mdat_len, wide) in enumerate([(30, 50, False), (30, 1000, True), (44, 3, False)]):
        frag = box(b"moof", bytes([i]) * moof_len) + box(b"mdat", bytes([0x80 + i]) * mdat_len, wide=wide)
        parts.append(frag)
        spans.append((pos, pos + len(frag)))
        pos += len(frag)
    return b"".join(parts), spans


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_the_fragment_file_finds_every_fragment_however_the_bytes_arrive(sandboxed, chunk):
    data, spans = synthetic_hybrid_mp4()
    records: list[FragmentRecord] = []
    f = FragmentFile(sandboxed(f"split-{chunk}.mp4"), on_fragment=records.append)
    for at in range(0, len(data), chunk):
        assert f.write(data[at:at + chunk]) == len(data[at:at + chunk])
    f.close()
    assert sandboxed(f"split-{chunk}.mp4").read_bytes() == data
    assert [(r.offset, r.end) for r in records] == spans
    assert [r.kind for r in records] == ["init", "fragment", "fragment", "fragment"]
    free_copy = len(box(b"ftyp", b"isom\0\0\2\0isomiso2")) + 8
    assert records[0].skip == (free_copy, free_copy + 8)   # the header hybrid_fragmented rewrites
    for r in records:
        assert hashlib.sha256(covered(data, r)).hexdigest() == r.sha256


def test_the_first_fragment_reaches_the_disk_at_once_then_the_interval_counts(sandboxed):
    """A segment's first picture is fsynced as soon as its fragment is complete (Start to a
    session on the disk); after it, fsyncs come once the interval has passed."""
    data, spans = synthetic_hybrid_mp4()
    synced: list[int] = []
    f = FragmentFile(sandboxed("first.mp4"), fsync_interval_ns=3600 * NS_PER_S)
    f.on_sync = lambda: synced.append(f.synced_end)
    f.write(data[:spans[0][1]])                 # the init with the first fragment's samples
    assert synced == [spans[0][1]]
    f.write(data[spans[0][1]:])                 # three more fragments within the hour
    assert synced == [spans[0][1]]
    f.close()


def test_repair_reads_boxes_up_to_the_first_broken_one(sandboxed):
    data, spans = synthetic_hybrid_mp4()
    assert [(b.start, b.end) for b in read_boxes(data)][-2:] == [(spans[-1][0], spans[-1][0] + 52),
                                                                  (spans[-1][0] + 52, spans[-1][1])]
    assert read_boxes(data + b"\0\0\0\x10junk" + b"\0" * 8)[-1].end == len(data)  # an unknown type ends the walk
    # Cut anywhere: repair keeps the fragments that are whole, and no byte of a torn one.
    for cut in sorted({s for span in spans for s in span} | {e - 1 for _, e in spans} | {e + 5 for _, e in spans}):
        path = sandboxed("cut.mp4")
        path.write_bytes(data[:cut])
        scan = scan_segment(path)
        whole = [end for _, end in spans if end <= cut]
        assert scan.valid_end == (whole[-1] if whole else 0), cut
        assert scan.fragments == len(whole)


@pytest.mark.parametrize("tear", ["zeros to the end", "a hole inside", "a short hole inside"])
def test_repair_refuses_an_unlogged_fragment_a_cut_tore(sandboxed, tear):
    """A power cut that lost one write of a fragment while a later one reached the disk leaves
    zeros where the lost bytes were, the boxes' sizes intact; with no log record to compare, the
    zeros themselves give it away (found by probing every file at every cut point: the file
    decoded with errors after repair)."""
    rng = np.random.default_rng(3)
    path = sandboxed("torn.mp4")
    w = SegmentWriter(path, "cam/torn.mp4", SETTINGS, CLOCK)
    for i in range(12):  # noise: fragments of several sectors each
        w.write_video(rng.integers(0, 255, (SETTINGS.height, SETTINGS.width, 3), dtype=np.uint8), CLOCK.start_ns + i * FRAME_NS)
    w.abandon()
    data = bytearray(path.read_bytes())
    boxes = read_boxes(bytes(data))
    last_moof = [b for b in boxes if b.type == b"moof"][-1]
    mdat = boxes[-1]
    assert mdat.type == b"mdat" and mdat.size > 3 * 512, mdat
    whole = scan_segment(path)
    assert whole.valid_end == len(data) and whole.reason == "complete"
    if tear == "zeros to the end":   # torn at a sector boundary 32 bytes before the end (as found)
        data[-32:] = bytes(32)
    elif tear == "a hole inside":    # one sector in the middle never written
        at = (mdat.start + 600) // 512 * 512
        data[at:at + 512] = bytes(512)
    else:                            # a short write lost in the middle: only decoding shows it
        data[mdat.start + 300:mdat.start + 400] = bytes(100)
    path.write_bytes(bytes(data))
    scan = scan_segment(path)
    assert scan.valid_end == last_moof.start, (tear, scan.reason)
    assert ("does not decode" if tear == "a short hole inside" else "zeros") in scan.reason


# ---------------------------------------------------------------------------------------------
# how long a frame waits for its fragment, at every rate the profiles use

RATES = (10, 15, 25, 30)


@pytest.mark.parametrize("fps", RATES)
def test_a_fragment_is_short_enough_for_the_kill_bound_at_every_rate(fps):
    """A fragment's first frame waits until the packet that makes the fragment long enough; the
    kill loses that wait plus the interval before it, and both must fit in the bound with the
    processing margin, jitter included, while fast streams keep the profile's fragment length."""
    from muxer.segment import JITTER_SHARE, PROCESSING_MARGIN_MS, backstop_ms, fragment_length_ms
    settings = SegmentSettings(64, 48, fps, SETTINGS.encoder, 5, fragment_ms=120)
    interval = 1000 / fps
    length = fragment_length_ms(settings)
    # The most frames a fragment takes: frame k-1 still joins it when it comes up to half an
    # interval early, its time since the fragment's first frame still short of the length.
    most = max(k for k in range(1, 20) if (k - 1 - JITTER_SHARE) * interval < length)
    assert (most + 1) * interval + PROCESSING_MARGIN_MS <= settings.kill_bound_ms, (fps, length, most)
    assert backstop_ms(settings) >= length
    assert backstop_ms(settings) + interval <= settings.kill_bound_ms
    if fps >= 25:
        assert length == 120


def _fragments_after_each_frame(settings: SegmentSettings, stamps: list[int], path: Path) -> tuple[list[int], SegmentWriter]:
    """Frames known to be in the file after each write (the muxer alone decides, no early end)."""
    in_file: list[int] = []
    records: list[FragmentRecord] = []
    w = SegmentWriter(path, f"cam/{path.name}", settings, CLOCK, on_fragment=records.append)
    for i, t in enumerate(stamps):
        w.write_video(picture(i), t)
        in_file.append(sum(1 for r in records if r.kind == "fragment"))
    w.close()
    return in_file, w


def test_a_10_fps_frame_is_written_when_the_next_one_comes_with_its_true_length(sandboxed):
    """At 10 fps every frame is its own fragment, ended by the muxer when the next frame comes
    (so its length is the true interval, jitter and all), never by the early end."""
    rng = np.random.default_rng(7)
    settings = SegmentSettings(64, 48, 10, SETTINGS.encoder, 5, fragment_ms=120, fsync_interval_ms=0)
    stamps = [CLOCK.start_ns + i * 100_000_000 + int(rng.integers(-15, 15)) * 1_000_000 for i in range(20)]
    fragments, w = _fragments_after_each_frame(settings, stamps, sandboxed("ten.mp4"))
    assert fragments[1:] == list(range(1, 20)), fragments   # frame k in the file once k+1 is muxed
    assert w.forced_fragments == 0
    expected = [Fraction(round((t - CLOCK.start_ns) * 90000 / 10**9), 90000) for t in stamps]
    assert decoded_pts(sandboxed("ten.mp4")) == expected


def test_a_late_frame_is_not_waited_for_beyond_the_backstop(sandboxed):
    """A stalled camera's last frame is written once it is as old as the bound allows, without
    the next frame; nothing moves: the frames after the stall keep their own times."""
    from muxer.segment import backstop_ms
    settings = SegmentSettings(64, 48, 10, SETTINGS.encoder, 5, fragment_ms=120, fsync_interval_ms=0)
    path = sandboxed("stall.mp4")
    records: list[FragmentRecord] = []
    w = SegmentWriter(path, "cam/stall.mp4", settings, CLOCK, on_fragment=records.append)
    assert w.can_flush, "fragments cannot be ended on demand with this PyAV"
    stamps = [CLOCK.start_ns + i * 100_000_000 for i in range(3)] + [CLOCK.start_ns + 2_000_000_000]
    for i, t in enumerate(stamps[:3]):
        w.write_video(picture(i), t)
    written = sum(1 for r in records if r.kind == "fragment")
    due = stamps[2] + backstop_ms(settings) * 1_000_000
    assert w.due_ns() == due
    assert not w.flush_if_due(due - 1_000_000)
    assert w.flush_if_due(due)
    assert sum(1 for r in records if r.kind == "fragment") == written + 1 and w.forced_fragments == 1
    assert w.due_ns() is None    # nothing waits now
    w.write_video(picture(3), stamps[3])
    w.close()
    expected = [Fraction(round((t - CLOCK.start_ns) * 90000 / 10**9), 90000) for t in stamps]
    assert decoded_pts(path) == expected


@pytest.mark.parametrize("ending", ["close", "abandon"])
def test_a_finished_writer_is_freed_without_the_garbage_collector(sandboxed, ending):
    """A writer its caller lets go of frees its encoder at once: a cycle between the writer and
    its file kept every closed segment's x264 context (tens of MB at 1080p) until the collector's
    next full pass, so memory grew with every rotation and pause."""
    import gc
    import weakref
    gc.disable()
    try:
        w = SegmentWriter(sandboxed(f"{ending}.mp4"), f"cam/{ending}.mp4", SETTINGS, CLOCK)
        for i in range(3):
            w.write_video(picture(i), CLOCK.start_ns + i * FRAME_NS)
        getattr(w, ending)()
        gone = weakref.ref(w)
        del w
        assert gone() is None, gc.get_referrers(gone())
    finally:
        gc.enable()
