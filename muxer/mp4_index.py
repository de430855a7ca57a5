"""The index a clean close appends to a segment, computed from its fragments alone.

A segment is written as hybrid fragmented MP4 (see :mod:`muxer.fragment_file`): ftyp, free,
free (holding a copy of ftyp), the initial moov (codec set-up, no samples), then moof+mdat
fragments. Closing it appends a regular ``moov`` listing every sample where it already lies and
turns the 8-byte header of the second ``free`` into an ``mdat`` reaching that moov: players then
see ftyp, free, mdat, moov (a plain seekable MP4) and every fragment byte stays as written.

A killed recorder never gets to close. :func:`build_index` computes the same kind of moov from
the fragments on disk: sample sizes and places from each ``trun``, times from each ``tfdt`` (so a
gap in the recording stays a gap), sync samples from the sample flags, the codec set-up copied
from the initial moov, and an edit list placing the segment at its start on the session
timeline, as the muxer's own close does. It is a pure function of those bytes, so anyone can
rebuild it and compare (``examrec verify`` does).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"moof", b"traf", b"udta"}
U32 = 0xFFFFFFFF


class NotIndexable(ValueError):
    """The bytes are not a fragmented segment we can index (the reason says what is missing)."""


@dataclass
class Box:
    type: bytes
    start: int      # offset of the box header in the buffer
    header: int     # header length (8 or 16)
    size: int

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes in data[start:end], stopping at one that does not fit."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size, typ = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                break
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        out.append(Box(typ, pos, header, size))
        pos += size
    return out


def child(data: bytes, parent: Box, typ: bytes) -> Box | None:
    return next((b for b in boxes(data, parent.body, parent.end) if b.type == typ), None)


def box_bytes(typ: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), typ) + payload


def full_box(typ: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box_bytes(typ, struct.pack(">I", (version << 24) | flags) + payload)


@dataclass
class Sample:
    offset: int
    size: int
    dts: int        # media timescale, as tfdt + preceding durations
    duration: int
    cts: int
    sync: bool


@dataclass
class Track:
    track_id: int
    trak: Box
    timescale: int
    default_duration: int = 0
    default_size: int = 0
    default_flags: int = 0
    samples: list[Sample] = field(default_factory=list)


def _is_sync(flags: int) -> bool:
    return not (flags >> 16) & 1  # sample_is_non_sync_sample


def _parse_init(data: bytes, moov: Box) -> tuple[int, dict[int, Track]]:
    mvhd = child(data, moov, b"mvhd")
    if mvhd is None:
        raise NotIndexable("the initial moov has no mvhd")
    version = data[mvhd.body]
    movie_ts = struct.unpack_from(">I", data, mvhd.body + (20 if version == 1 else 12))[0]
    tracks: dict[int, Track] = {}
    for trak in (b for b in boxes(data, moov.body, moov.end) if b.type == b"trak"):
        tkhd = child(data, trak, b"tkhd")
        mdia = child(data, trak, b"mdia")
        mdhd = child(data, mdia, b"mdhd") if mdia else None
        if tkhd is None or mdhd is None:
            raise NotIndexable("a track of the initial moov lacks tkhd or mdhd")
        tv = data[tkhd.body]
        track_id = struct.unpack_from(">I", data, tkhd.body + (20 if tv == 1 else 12))[0]
        mv = data[mdhd.body]
        ts = struct.unpack_from(">I", data, mdhd.body + (20 if mv == 1 else 12))[0]
        tracks[track_id] = Track(track_id, trak, ts)
    mvex = child(data, moov, b"mvex")
    for trex in (b for b in boxes(data, mvex.body, mvex.end) if b.type == b"trex") if mvex else []:
        tid, _, dur, size, flags = struct.unpack_from(">IIIII", data, trex.body + 4)
        if tid in tracks:
            t = tracks[tid]
            t.default_duration, t.default_size, t.default_flags = dur, size, flags
    if not tracks or movie_ts == 0:
        raise NotIndexable("the initial moov describes no track")
    return movie_ts, tracks


def _parse_fragment(data: bytes, moof: Box, tracks: dict[int, Track]) -> None:
    data_end = moof.start  # where the previous traf's data ended (base when no flag says otherwise)
    for traf in (b for b in boxes(data, moof.body, moof.end) if b.type == b"traf"):
        tfhd = child(data, traf, b"tfhd")
        if tfhd is None:
            raise NotIndexable(f"fragment at {moof.start} has a traf without tfhd")
        flags = struct.unpack_from(">I", data, tfhd.body)[0] & 0xFFFFFF
        track_id = struct.unpack_from(">I", data, tfhd.body + 4)[0]
        t = tracks.get(track_id)
        if t is None:
            raise NotIndexable(f"fragment at {moof.start} names track {track_id}, not in the initial moov")
        p = tfhd.body + 8
        base = moof.start if flags & 0x20000 else data_end
        if flags & 0x1:
            base = struct.unpack_from(">Q", data, p)[0]
            p += 8
        if flags & 0x2:
            p += 4
        dflt_dur, dflt_size, dflt_flags = t.default_duration, t.default_size, t.default_flags
        if flags & 0x8:
            dflt_dur = struct.unpack_from(">I", data, p)[0]
            p += 4
        if flags & 0x10:
            dflt_size = struct.unpack_from(">I", data, p)[0]
            p += 4
        if flags & 0x20:
            dflt_flags = struct.unpack_from(">I", data, p)[0]
        tfdt = child(data, traf, b"tfdt")
        if tfdt is None:
            raise NotIndexable(f"fragment at {moof.start} has no tfdt: its time is unknown")
        tv = data[tfdt.body]
        # Signed: the muxer writes the AAC encoder's priming samples before the session's 0.
        dts = (struct.unpack_from(">q", data, tfdt.body + 4)[0] if tv == 1
               else struct.unpack_from(">I", data, tfdt.body + 4)[0])
        for trun in (b for b in boxes(data, traf.body, traf.end) if b.type == b"trun"):
            vf = struct.unpack_from(">I", data, trun.body)[0]
            version, tflags = vf >> 24, vf & 0xFFFFFF
            count = struct.unpack_from(">I", data, trun.body + 4)[0]
            q = trun.body + 8
            offset = base
            if tflags & 0x1:
                offset = base + struct.unpack_from(">i", data, q)[0]
                q += 4
            first_flags = None
            if tflags & 0x4:
                first_flags = struct.unpack_from(">I", data, q)[0]
                q += 4
            for i in range(count):
                dur, size, sflags, cts = dflt_dur, dflt_size, dflt_flags, 0
                if tflags & 0x100:
                    dur = struct.unpack_from(">I", data, q)[0]
                    q += 4
                if tflags & 0x200:
                    size = struct.unpack_from(">I", data, q)[0]
                    q += 4
                if tflags & 0x400:
                    sflags = struct.unpack_from(">I", data, q)[0]
                    q += 4
                elif i == 0 and first_flags is not None:
                    sflags = first_flags
                if tflags & 0x800:
                    cts = struct.unpack_from(">i" if version else ">I", data, q)[0]
                    q += 4
                if q > trun.end or offset + size > len(data):
                    raise NotIndexable(f"fragment at {moof.start}: sample {i} lies outside the file")
                t.samples.append(Sample(offset, size, dts, dur, cts, _is_sync(sflags)))
                offset += size
                dts += dur
            data_end = offset


def _run_length(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v:
            runs[-1] = (runs[-1][0] + 1, v)
        else:
            runs.append((1, v))
    return runs


def _stbl(data: bytes, t: Track, stsd: bytes, copied: list[bytes]) -> tuple[bytes, int]:
    """The sample table and the media duration (media timescale)."""
    s = t.samples
    durations = []
    for i, smp in enumerate(s):
        # Consecutive decode times: a later fragment's tfdt says when it really starts, so a
        # pause in the capture lengthens the sample before it (as the muxer's close does).
        nxt = s[i + 1].dts if i + 1 < len(s) else None
        durations.append(nxt - smp.dts if nxt is not None and nxt > smp.dts else smp.duration)
    parts = [stsd]
    runs = _run_length(durations)
    parts.append(full_box(b"stts", 0, 0, struct.pack(">I", len(runs)) + b"".join(struct.pack(">II", n, d) for n, d in runs)))
    if any(smp.cts for smp in s):
        cruns = _run_length([smp.cts for smp in s])
        negative = any(c < 0 for _, c in cruns)
        parts.append(full_box(b"ctts", 1 if negative else 0, 0, struct.pack(">I", len(cruns)) + b"".join(
            struct.pack(">Ii" if negative else ">II", n, c) for n, c in cruns)))
    if not all(smp.sync for smp in s):
        sync = [i + 1 for i, smp in enumerate(s) if smp.sync]
        parts.append(full_box(b"stss", 0, 0, struct.pack(">I", len(sync)) + b"".join(struct.pack(">I", i) for i in sync)))
    # Chunks: runs of samples that follow each other in the file.
    chunks: list[tuple[int, int]] = []  # (offset, samples)
    sizes: list[int] = []
    for smp in s:
        if chunks and chunks[-1][0] + sizes[-1] == smp.offset:
            chunks[-1] = (chunks[-1][0], chunks[-1][1] + 1)
            sizes[-1] += smp.size
        else:
            chunks.append((smp.offset, 1))
            sizes.append(smp.size)
    stsc_runs: list[tuple[int, int]] = []  # (first chunk, samples per chunk)
    for i, (_, n) in enumerate(chunks, start=1):
        if not stsc_runs or stsc_runs[-1][1] != n:
            stsc_runs.append((i, n))
    parts.append(full_box(b"stsc", 0, 0, struct.pack(">I", len(stsc_runs)) + b"".join(
        struct.pack(">III", first, n, 1) for first, n in stsc_runs)))
    sizes_all = [smp.size for smp in s]
    if len(set(sizes_all)) == 1:
        parts.append(full_box(b"stsz", 0, 0, struct.pack(">II", sizes_all[0], len(s))))
    else:
        parts.append(full_box(b"stsz", 0, 0, struct.pack(">II", 0, len(s)) + b"".join(struct.pack(">I", z) for z in sizes_all)))
    if chunks and chunks[-1][0] > U32:
        parts.append(full_box(b"co64", 0, 0, struct.pack(">I", len(chunks)) + b"".join(struct.pack(">Q", o) for o, _ in chunks)))
    else:
        parts.append(full_box(b"stco", 0, 0, struct.pack(">I", len(chunks)) + b"".join(struct.pack(">I", o) for o, _ in chunks)))
    parts.extend(copied)
    return box_bytes(b"stbl", b"".join(parts)), sum(durations)



def _timed_header(data: bytes, box: Box, time_field_at: int, duration: int) -> bytes:
    """mvhd/tkhd/mdhd with a new duration, version 0 when it fits in 32 bits, else version 1.

    ``time_field_at``: where the duration sits after the times in version 0 (mvhd and mdhd: 16,
    after creation, modification and timescale; tkhd: 20, after track_ID and a reserved word)."""
    body = data[box.body:box.end]
    version, flags = body[0], int.from_bytes(body[1:4], "big")
    if version == 1:
        ctime, mtime = struct.unpack_from(">QQ", body, 4)
        middle = body[20:20 + time_field_at - 12]
        rest = body[20 + time_field_at - 12 + 8:]
    else:
        ctime, mtime = struct.unpack_from(">II", body, 4)
        middle = body[12:time_field_at]
        rest = body[time_field_at + 4:]
    if duration <= U32 and ctime <= U32 and mtime <= U32:
        return full_box(box.type, 0, flags, struct.pack(">II", ctime, mtime) + middle + struct.pack(">I", duration) + rest)
    return full_box(box.type, 1, flags, struct.pack(">QQ", ctime, mtime) + middle + struct.pack(">Q", duration) + rest)


def _roll_group(n: int) -> list[bytes]:
    """AAC's one frame of decoder pre-roll, as the muxer's close declares it."""
    sgpd = full_box(b"sgpd", 1, 0, b"roll" + struct.pack(">IIh", 2, 1, -1))
    sbgp = full_box(b"sbgp", 0, 0, b"roll" + struct.pack(">III", 1, n, 1))
    return [sgpd, sbgp]


def _trak(data: bytes, t: Track, movie_ts: int) -> tuple[bytes, int]:
    """The closed trak and its presentation end (movie timescale)."""
    tkhd = child(data, t.trak, b"tkhd")
    mdia = child(data, t.trak, b"mdia")
    minf = child(data, mdia, b"minf")
    stbl = child(data, minf, b"stbl") if minf else None
    stsd = child(data, stbl, b"stsd") if stbl else None
    if tkhd is None or mdia is None or minf is None or stsd is None:
        raise NotIndexable(f"track {t.track_id} of the initial moov has no sample description")
    stsd_bytes = data[stsd.start:stsd.end]
    extra = _roll_group(len(t.samples)) if b"mp4a" in stsd_bytes and t.samples else []
    stbl_bytes, media_dur = _stbl(data, t, stsd_bytes, extra) if t.samples else (
        box_bytes(b"stbl", stsd_bytes + b"".join(data[b.start:b.end] for b in boxes(data, stbl.body, stbl.end)
                                                   if b.type != b"stsd")), 0)
    minf_bytes = box_bytes(b"minf", b"".join(
        stbl_bytes if b.type == b"stbl" else data[b.start:b.end] for b in boxes(data, minf.body, minf.end)))
    mdia_parts = []
    for b in boxes(data, mdia.body, mdia.end):
        if b.type == b"mdhd":
            mdia_parts.append(_timed_header(data, b, 16, media_dur))
        elif b.type == b"minf":
            mdia_parts.append(minf_bytes)
        else:
            mdia_parts.append(data[b.start:b.end])
    start = t.samples[0].dts if t.samples else 0
    # Place the segment at its start on the session timeline, as the muxer's close does: an
    # empty edit up to its first sample (rounded down), then the media from that sample; media
    # that begins before 0 (the AAC encoder's priming) is skipped by the edit instead.
    skip = max(0, -start)
    empty = max(0, start) * movie_ts // t.timescale
    media_movie = round((media_dur - skip) * movie_ts / t.timescale)
    edits = []
    if t.samples:
        if empty:
            edits.append((empty, -1))
        edits.append((media_movie, skip + t.samples[0].cts))
    wide = any(d > U32 or m > 0x7FFFFFFF for d, m in edits)
    elst = full_box(b"elst", 1 if wide else 0, 0, struct.pack(">I", len(edits)) + b"".join(
        struct.pack(">Qqhh" if wide else ">Iihh", d, m, 1, 0) for d, m in edits))
    end = empty + media_movie if t.samples else 0
    parts = [_timed_header(data, tkhd, 20, end)]
    if edits:
        parts.append(box_bytes(b"edts", elst))
    parts.append(box_bytes(b"mdia", b"".join(mdia_parts)))
    parts += [data[b.start:b.end] for b in boxes(data, t.trak.body, t.trak.end) if b.type not in (b"tkhd", b"edts", b"mdia")]
    return box_bytes(b"trak", b"".join(parts)), end


@dataclass
class IndexPlan:
    """What closing the segment writes: ``header`` (8 bytes) at ``header_at``, ``moov`` at ``end``."""

    header_at: int
    header: bytes
    end: int
    moov: bytes
    samples: dict[int, int]        # samples indexed, per track ID


def build_index(data: bytes, end: int | None = None) -> IndexPlan:
    """Plan the close of the fragmented segment ``data[:end]`` (init plus complete fragments).
    Raises :class:`NotIndexable` when the bytes are not such a segment."""
    end = len(data) if end is None else end
    top = boxes(data, 0, end)
    moov_i = next((i for i, b in enumerate(top) if b.type == b"moov"), None)
    if moov_i is None or moov_i == 0:
        raise NotIndexable("no initial moov")
    placeholder = top[moov_i - 1]
    if placeholder.type != b"free" or placeholder.header != 8:
        raise NotIndexable("no free box before the initial moov to turn into the mdat header")
    moov = top[moov_i]
    movie_ts, tracks = _parse_init(data, moov)
    i = moov_i + 1
    while i < len(top):
        b = top[i]
        if b.type == b"moof":
            if i + 1 >= len(top) or top[i + 1].type != b"mdat":
                raise NotIndexable(f"fragment at {b.start} has no mdat")
            _parse_fragment(data, b, tracks)
            i += 2
            continue
        if b.type not in (b"free", b"skip", b"sidx", b"prft"):
            raise NotIndexable(f"unexpected {b.type.decode(errors='replace')} box at {b.start}")
        i += 1
    if top and top[-1].end != end:
        raise NotIndexable(f"the bytes after {top[-1].end} are not a complete box")
    if not any(t.samples for t in tracks.values()):
        raise NotIndexable("no sample in any fragment")
    if end - placeholder.start > U32:
        raise NotIndexable("more than 4 GiB of fragments: the 8-byte mdat header cannot span them")
    mvhd = child(data, moov, b"mvhd")
    assert mvhd is not None
    traks, movie_end = [], 0
    for t in tracks.values():
        tb, t_end = _trak(data, t, movie_ts)
        traks.append(tb)
        movie_end = max(movie_end, t_end)
    others = [data[b.start:b.end] for b in boxes(data, moov.body, moov.end) if b.type not in (b"mvhd", b"trak", b"mvex")]
    mvhd_bytes = _timed_header(data, mvhd, 16, movie_end)[:-4] + struct.pack(">I", max(tracks) + 1)  # next_track_ID
    moov_bytes = box_bytes(b"moov", mvhd_bytes + b"".join(traks) + b"".join(others))
    return IndexPlan(placeholder.start, struct.pack(">I4s", end - placeholder.start, b"mdat"), end, moov_bytes,
                     {t.track_id: len(t.samples) for t in tracks.values()})


def reopened(data: bytes, header_at: int) -> bytes:
    """``data`` with the 8 bytes at ``header_at`` put back to the ``free`` header they were
    before a close turned them into an ``mdat`` header (the free box holds a copy of ftyp)."""
    inner = header_at + 8
    if inner + 8 > len(data) or data[inner + 4:inner + 8] != b"ftyp":
        raise NotIndexable(f"no copy of ftyp after the header at {header_at}")
    ftyp_size = struct.unpack_from(">I", data, inner)[0]
    return data[:header_at] + struct.pack(">I4s", 8 + ftyp_size, b"free") + data[inner:]
