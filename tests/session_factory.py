"""Build small but real session folders (sessions/evidence/FORMAT.md) for tests of verify and the archive.

    from session_factory import make_session, factory_key
    session = make_session(tmp_path)                      # finished, signed, 2 streams x 2 segments
    session = make_session(tmp_path, interrupted=True)    # power cut: open last segments, torn tails
    session = make_session(tmp_path, repaired=True)       # interrupted, then trimmed and re-signed

Everything is the real thing, only small: fragmented MP4 written by PyAV (libx264 ultrafast,
160x120, 15 fps, 1 s segments, 200 ms fragments, hybrid_fragmented like the recorder), a
fragments.jsonl per stream whose records come from the file's top-level boxes as they reached the
disk, a hash-chained events.jsonl written by sessions.evidence.events.EventLog, a JPEG photo, telemetry and
a GPX route, and a manifest written by sessions.evidence.layout.write_manifest and signed by
sessions.evidence.signing.sign_manifest. A session takes ~0.1-0.3 s.

What each flag leaves on disk:
- finished=True (default): state "finished", every segment closed with sha256 and size, a stop
  event, the events summary and telemetry hash, a signature.
- finished=False: what a recorder killed mid-segment leaves: state "recording", the last segment
  of each stream open (sha256 null; the bytes fsynced so far, hybrid header not rewritten), no
  stop event, one event appended after the last manifest write, no signature.
- interrupted=True (implies not finished): as above with state "interrupted", plus a torn tail
  after each open segment's last recorded fragment (part of the next fragment) and a torn last
  line in events.jsonl.
- repaired=True (implies interrupted): what `examrec repair` leaves (sessions/evidence/repair.py): the
  torn bytes moved to recovered/<file with / as __>.from-<kept bytes>, a "repaired" event,
  manifest ``repaired`` {at, last_pts_s, trimmed_bytes, previous_state, files: [{file,
  kept_bytes, trimmed_bytes, saved_as, reason, saved_sha256}]}, open segments given the
  sha256/size of the trimmed file (still closed: false, interrupted: true), signed.
Every session also holds the empty ``.recording.lock`` the recorder's processes lock.

The fragment records follow FORMAT.md and match muxer/fragment_file.py, but are computed here
independently from the file's top-level boxes: the init record (index 0) runs from byte 0 to the
first moof (ftyp, free, a free holding a copy of ftyp, the empty moov) with ``skip`` [H, H+8],
the header of that second free which closing rewrites into an mdat header; then one record per
moof+mdat pair, contiguous, in file order.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import av
import numpy as np

from muxer.segment import container_options
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sessions.evidence.chain import ChainedLog
from sessions.evidence.checkpoints import CheckpointLog, jcs_clock
from core.clock import SessionClock, iso_utc
from sessions.evidence.events import EventLog
from sessions.evidence.layout import (EVENTS_NAME, LOCK_NAME, ROUTE_NAME, TELEMETRY_NAME,
                                      chain_segments, fragments_path, recovered_name, segment_entry, segment_name,
                                      write_manifest)
from sessions.evidence.manifest import FORMAT, sha256_file
from sessions.evidence.signing import sign_manifest
from sessions.evidence.software import software_versions

# A fixed key so every run signs with the same identity (tests compare against it).
FACTORY_KEY_SEED = bytes(range(32))
WIDTH, HEIGHT, FPS = 160, 120, 15
MUX_OPTIONS = container_options(200, audio=False)  # exactly what the recorder writes
PROFILE = "replay"


def factory_key() -> Ed25519PrivateKey:
    """The key make_session signs with unless given another."""
    return Ed25519PrivateKey.from_private_bytes(FACTORY_KEY_SEED)


@dataclass
class SegmentResult:
    """One written segment: its manifest entry fields and its fragment records (no prev_sha256)."""

    file: str
    records: list[dict[str, Any]]
    frames: int
    first_pts_s: float
    last_pts_s: float
    closed: bool
    torn_bytes: bytes = b""


def top_level_boxes(data: bytes, start: int = 0) -> list[tuple[bytes, int, int]]:
    """Complete top-level MP4 boxes (type, offset, size) from ``start``; stops at a partial box."""
    out: list[tuple[bytes, int, int]] = []
    off = start
    while off + 8 <= len(data):
        size, typ = struct.unpack(">I4s", data[off:off + 8])
        if size == 1 and off + 16 <= len(data):
            size = struct.unpack(">Q", data[off + 8:off + 16])[0]
        if size < 8 or off + size > len(data):
            break
        out.append((typ, off, size))
        off += size
    return out


@dataclass
class _FragmentTracker:
    """Turns the bytes PyAV has flushed so far into fragments.jsonl records, the way the
    recorder sees them reach the disk: each completed mdat ends a record."""

    path: Path
    rel: str
    records: list[dict[str, Any]] = field(default_factory=list)
    covered: int = 0      # bytes already in a record
    scanned: int = 0      # top-level boxes parsed up to here

    def update(self, last_pts_s: float | None) -> None:
        data = self.path.read_bytes()
        pts = round(last_pts_s, 6) if last_pts_s is not None else None
        for typ, off, size in top_level_boxes(data, self.scanned):
            self.scanned = end = off + size
            if typ == b"moof" and not self.records:
                # init: ftyp, free, free (holding a copy of ftyp), the empty moov; the second
                # free's 8-byte header is rewritten on close, so it is left out.
                frees = [o for t, o, sz in top_level_boxes(data[:off]) if t == b"free" and sz > 8]
                skip = frees[-1]
                digest = hashlib.sha256(data[:skip] + data[skip + 8:off]).hexdigest()
                self.records.append({"file": self.rel, "kind": "init", "index": 0, "offset": 0, "end": off,
                                     "skip": [skip, skip + 8], "sha256": digest, "last_pts_s": pts})
                self.covered = off
            if typ != b"mdat":
                continue  # moof: part of the record its mdat ends
            self.records.append({"file": self.rel, "kind": "fragment", "index": len(self.records),
                                 "offset": self.covered, "end": end,
                                 "sha256": hashlib.sha256(data[self.covered:end]).hexdigest(),
                                 "last_pts_s": pts})
            self.covered = end


def _picture(stream: str, number: int, i: int) -> np.ndarray:
    """A cheap picture that differs per stream, segment and frame (so no two files are equal)."""
    seed = sum(stream.encode()) * 7 + number * 31
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = ((seed + i * 5) % 200, (seed * 3) % 200, (seed * 5 + i) % 200)
    x = (i * 9) % (WIDTH - 24)
    img[40:64, x:x + 24] = 255
    return img


def write_segment(session_dir: Path, stream: str, number: int, *, first_pts_s: float,
                  frames: int = FPS, close: bool = True, torn: bool = False) -> SegmentResult:
    """Encode one real segment ``<stream>/<number:04d>.mp4`` and its fragment records.

    ``close=False`` leaves the file as a recorder killed at that moment does: only the bytes
    flushed before closing (the last fragment and the closing moov never written, the hybrid
    header still ``free``); ``torn`` then adds the first part of the next fragment after them.
    """
    rel = segment_name(stream, number)
    path = session_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tracker = _FragmentTracker(path, rel)
    container = av.open(str(path), "w", format="mp4", options=dict(MUX_OPTIONS))
    vs = container.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    vs.codec_context.thread_count = 1  # the machine is shared with real encoders
    vs.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)}
    first = round(first_pts_s * FPS)
    last_muxed: float | None = None

    def mux(packets: Iterable[av.Packet]) -> None:
        nonlocal last_muxed
        for pkt in packets:
            container.mux(pkt)
            # A fragment flushed while muxing this packet holds the packets before it.
            tracker.update(last_muxed)
            if pkt.pts is not None:
                last_muxed = float(pkt.pts * pkt.time_base)

    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(_picture(stream, number, i), format="bgr24")
        frame.pts, frame.time_base = first + i, Fraction(1, FPS)
        mux(vs.encode(frame))
    mux(vs.encode())
    snapshot = path.read_bytes()
    container.close()
    torn_bytes = b""
    if close:
        tracker.update(last_muxed)
    else:
        closing = path.read_bytes()[len(snapshot):]
        torn_bytes = closing[: max(16, len(closing) // 3)] if torn else b""
        with open(path, "wb") as f:
            f.write(snapshot + torn_bytes)
            os.fsync(f.fileno())
    return SegmentResult(rel, tracker.records, frames, first / FPS, (first + frames - 1) / FPS,
                         closed=close, torn_bytes=torn_bytes)


def _jpeg(shade: int) -> bytes:
    """A real JPEG still (PyAV's mjpeg encoder, so the factory needs no other imaging library)."""
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = WIDTH, HEIGHT, "yuvj420p", Fraction(1, 1)
    img = np.full((HEIGHT, WIDTH, 3), shade, np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuvj420p")
    return b"".join(bytes(p) for p in ctx.encode(frame)) + b"".join(bytes(p) for p in ctx.encode(None))


def _gpx(fixes: list[dict[str, Any]]) -> str:
    pts = "\n".join(f'      <trkpt lat="{f["lat"]}" lon="{f["lon"]}"><time>{f["t_utc"]}</time></trkpt>'
                    for f in fixes)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="examrec test factory" '
            'xmlns="http://www.topografix.com/GPX/1/1">\n  <trk><trkseg>\n' + pts + "\n  </trkseg></trk>\n</gpx>\n")


def _events_summary(path: Path) -> dict[str, Any]:
    lines = path.read_bytes().split(b"\n")[:-1]
    last = hashlib.sha256(lines[-1]).hexdigest() if lines else "0" * 64
    return {"file": EVENTS_NAME, "lines": len(lines), "last_sha256": last}


def make_session(tmp_path: str | os.PathLike[str], *, streams: tuple[str, ...] = ("cabin", "road-front"),
                 segments: int = 2, finished: bool = True, interrupted: bool = False, repaired: bool = False,
                 key: Ed25519PrivateKey | None = None, details: dict[str, str] | None = None,
                 started: datetime | None = None) -> Path:
    """Write one session under ``tmp_path/<YYYY-MM-DD>/<session_id>/`` and return its folder.

    ``streams``: stream names (each gets ``segments`` segments of 1 s). ``key``: signing key
    (default: factory_key()). ``started``: the UTC start (default: now). See the module doc for
    what finished / interrupted / repaired leave on disk.
    """
    if segments < 1:
        raise ValueError("a session has at least one segment per stream")
    interrupted = interrupted or repaired
    finished = finished and not interrupted
    key = key or factory_key()
    started = (started or datetime.now(timezone.utc)).astimezone(timezone.utc)
    session_id = f"{started:%Y%m%dT%H%M%SZ}-{PROFILE}-{os.urandom(3).hex()}"
    root = Path(tmp_path) / f"{started:%Y-%m-%d}" / session_id
    root.mkdir(parents=True)
    (root / LOCK_NAME).touch()  # the writers' flock file stays, empty, after the recording
    wall_ns = int(started.timestamp() * 1e9)
    clock = SessionClock(start_ns=SessionClock.now_ns(), wall_anchor_ns=wall_ns)

    def at(pts_s: float) -> int:
        return clock.capture_ns(pts_s)

    events = EventLog(root / EVENTS_NAME, clock)
    events.emit("start", at(0.0), session_id=session_id, profile=PROFILE)
    events.emit("notice", at(0.0), text="Attention! Audio and video recording is in progress")
    events.emit("checks", at(0.0), ok=True, devices=list(streams))

    (root / "photos").mkdir()
    photo = root / "photos" / "candidate-0001.jpg"
    photo.write_bytes(_jpeg(90))
    events.emit("photo", at(0.1), file="photos/candidate-0001.jpg", role="candidate",
                sha256=sha256_file(photo))

    fixes = [{"type": "gps", "pts_s": round(0.5 * i, 3), "t_utc": iso_utc(clock.wall_utc(at(0.5 * i))),
              "lat": 50.45 + i * 1e-4, "lon": 30.52 + i * 1e-4, "speed_kmh": 20.0 + i} for i in range(4)]
    (root / TELEMETRY_NAME).write_text("".join(json.dumps(f) + "\n" for f in fixes))
    (root / ROUTE_NAME).write_text(_gpx(fixes))

    manifest_streams: list[dict[str, Any]] = []
    open_files: dict[str, SegmentResult] = {}
    for name in streams:
        entries: list[dict[str, Any]] = []
        (root / name).mkdir()
        # fsync per record is the recorder's job on real media; here it would only slow tests.
        log = ChainedLog(fragments_path(root, name), fsync=False)
        for n in range(1, segments + 1):
            last = n == segments
            seg = write_segment(root, name, n, first_pts_s=float(n - 1), close=finished or not last,
                                torn=interrupted and last)
            for rec in seg.records:
                log.append(rec)
            # As the recorder keeps it: an open entry knows its start only.
            entry = segment_entry(seg.file, first_pts_s=seg.first_pts_s, stage=1)
            if seg.closed:
                entry.update(sha256=sha256_file(root / seg.file), size=(root / seg.file).stat().st_size,
                             frames=seg.frames, last_pts_s=seg.last_pts_s, closed=True)
                events.emit("segment", at(seg.last_pts_s), file=seg.file, sha256=entry["sha256"])
            else:
                open_files[seg.file] = seg
            entries.append(entry)
        chain_segments(entries)
        log.close()
        manifest_streams.append({"name": name, "width": WIDTH, "height": HEIGHT, "fps": float(FPS),
                                 "audio": False, "source": "pattern:", "segments": entries, "gaps": []})
    events.emit("pedal", at(0.7), pedal="brake", state="down")
    duration = float(segments)
    if finished:
        events.emit("stop", at(duration), reason="examiner")
    ended = iso_utc(clock.wall_utc(at(duration))) if finished else None
    manifest: dict[str, Any] = {
        "format": FORMAT, "session_id": session_id, "profile": PROFILE, "profile_kind": "replay",
        "software": software_versions(),
        "started_at": iso_utc(started), "ended_at": ended,
        "state": "finished" if finished else ("interrupted" if interrupted else "recording"),
        "clock": jcs_clock({**clock.to_json(), "utc_offset": "+00:00"}),
        "details": details or {"candidate": "Тарас Шевченко", "candidate_id": "AB123456",
                               "examiner": "Examiner One", "plate": "AA1234BB", "centre": "TSC 8041",
                               "exam": "practical"},
        "streams": manifest_streams,
        "stages": [{"stage": 1, "start_pts_s": 0.0, "end_pts_s": duration if finished else None}],
        "checks": [{"device": s, "ok": True} for s in streams], "clock_check": None,
        "photos": [{"file": "photos/candidate-0001.jpg", "sha256": sha256_file(photo), "role": "candidate"}],
        "events": _events_summary(root / EVENTS_NAME),
        "telemetry": {"file": TELEMETRY_NAME, "sha256": sha256_file(root / TELEMETRY_NAME) if finished else None},
    }
    if not finished:
        # The recorder wrote its manifest, then went on logging until the cut.
        events.emit("pedal", at(duration - 0.2), pedal="brake", state="up")
    events.close()
    if interrupted:
        with open(root / EVENTS_NAME, "ab") as f:
            f.write(b'{"type":"pedal","t_utc":"2026-')  # the line being written when power went
    # The checkpoints the recorder signs as it goes (sessions/evidence/checkpoints.py): the opening
    # record, then the heads of every chain as they were when the recording ended or was cut.
    checkpoints = CheckpointLog(root, key)
    checkpoints.begin(manifest)
    checkpoints.heads(manifest, force=True)
    if repaired:
        _repair(root, manifest, open_files, clock, at(duration))
    if finished or repaired:
        manifest = sign_manifest(manifest, key)
    path = write_manifest(root, manifest)
    if finished:
        checkpoints.finish(path.read_bytes(), manifest["state"])
    checkpoints.close()
    return root


def _repair(root: Path, manifest: dict[str, Any], open_files: dict[str, SegmentResult],
            clock: SessionClock, now_ns: int) -> None:
    """What `examrec repair` (sessions/evidence/repair.py) leaves: torn bytes moved to
    recovered/<file with / as __>.from-<kept>, open segments re-hashed and marked interrupted, a
    "repaired" event, and manifest ``repaired`` naming every trim."""
    files: list[dict[str, Any]] = []

    def trim(rel: str, keep: int, reason: str) -> None:
        path = root / rel
        tail = path.read_bytes()[keep:]
        out = root / recovered_name(rel, f"from-{keep}")
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(tail)
        with open(path, "r+b") as f:
            f.truncate(keep)
        files.append({"file": rel, "kept_bytes": keep, "trimmed_bytes": len(tail),
                      "saved_as": out.relative_to(root).as_posix(), "reason": reason,
                      "saved_sha256": hashlib.sha256(tail).hexdigest()})

    events_data = (root / EVENTS_NAME).read_bytes()
    trim(EVENTS_NAME, events_data.rindex(b"\n") + 1, "torn last line")
    for rel, seg in open_files.items():
        trim(rel, seg.records[-1]["end"], "torn last fragment")
    last_pts = max(seg.records[-1]["last_pts_s"] for seg in open_files.values())
    log = EventLog(root / EVENTS_NAME, clock)
    log.emit("repaired", now_ns, last_pts_s=last_pts, trimmed=[f["file"] for f in files],
             previous_state=manifest["state"])
    log.close()
    for s in manifest["streams"]:
        for e in s["segments"]:
            if e["file"] in open_files:
                # Only the last entry of a stream is open, so no later entry's chain link changes.
                e.update(sha256=sha256_file(root / e["file"]), size=(root / e["file"]).stat().st_size,
                         interrupted=True)
    manifest["events"] = _events_summary(root / EVENTS_NAME)
    manifest["telemetry"]["sha256"] = sha256_file(root / TELEMETRY_NAME)
    manifest["repaired"] = {"at": iso_utc(clock.wall_utc(now_ns) + timedelta(seconds=1)), "last_pts_s": last_pts,
                            "trimmed_bytes": sum(f["trimmed_bytes"] for f in files), "files": files,
                            "previous_state": manifest["state"]}
    manifest["state"] = "interrupted"
