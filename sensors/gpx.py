"""route.gpx: the drive as a GPX 1.1 track that any map tool opens, kept readable through a crash.

Writing: the file always ends with its closing tags. Each new point is written with one
``pwrite`` over the old closing tags, followed by new closing tags, so after each write the file
is a complete document; a killed recorder leaves a file that parses. Only a power cut in the
middle of a write can tear it, and :func:`repair_gpx` then cuts it after the last complete point
and closes it again. :func:`export_gpx` rebuilds the whole file from telemetry.jsonl.

Points: one per GPS report with a fix, time from the GPS (UTC), ascending: a report with the
same time as the last point replaces it when it is at least as good (gpsd reports a 2D fix, then
the 3D fix, of the same epoch); an earlier time is skipped (a replay log starting over). A lost
fix or a gap over ``gap_s`` starts a new track segment, as GPX intends for lost reception.
Speed (m/s) and course are in Garmin's TrackPointExtension v2, which map tools read; the
session timeline position is in ``examrec:pts_s``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape

from core import durable
from core.clock import NS_PER_S, SessionClock

from sensors.gps import GpsFix, iso_to_ns, route_fixes
from sensors.telemetry import read_records

log = logging.getLogger(__name__)

GPX_NS = "http://www.topografix.com/GPX/1/1"
TPX_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
EXAMREC_NS = "urn:examrec:gpx:1"
CREATOR = "examrec"
TAIL_OPEN_SEG = "</trkseg>\n</trk>\n</gpx>\n"
TAIL_NO_SEG = "</trk>\n</gpx>\n"
FIX_NAMES = {2: "2d", 3: "3d"}


class GpxError(Exception):
    """A GPX file that cannot be written, read or repaired; the message names the file."""


def header(name: str, desc: str = "", start_utc: str | None = None) -> str:
    """Everything before the first track segment."""
    meta = f"  <name>{escape(name)}</name>\n"
    if desc:
        meta += f"  <desc>{escape(desc)}</desc>\n"
    if start_utc:
        meta += f"  <time>{escape(start_utc)}</time>\n"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<gpx version="1.1" creator="{CREATOR}" xmlns="{GPX_NS}"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xmlns:gpxtpx="{TPX_NS}" xmlns:examrec="{EXAMREC_NS}"'
        f' xsi:schemaLocation="{GPX_NS} http://www.topografix.com/GPX/1/1/gpx.xsd'
        f' {TPX_NS} https://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd">\n'
        f"<metadata>\n{meta}</metadata>\n"
        f"<trk>\n  <name>{escape(name)}</name>\n  <src>GPS receiver via gpsd</src>\n"
    )


def point_xml(fix: GpsFix, clock: SessionClock | None = None) -> str:
    """One ``<trkpt>``; children in the order the GPX 1.1 schema requires (ele, time, fix, extensions)."""
    parts = [f'<trkpt lat="{fix.lat:.7f}" lon="{fix.lon:.7f}">']
    if fix.alt_m is not None:
        parts.append(f"<ele>{fix.alt_m:.2f}</ele>")
    parts.append(f"<time>{escape(fix.time_utc or '')}</time>")
    if fix.mode in FIX_NAMES:
        parts.append(f"<fix>{FIX_NAMES[fix.mode]}</fix>")
    ext = []
    if fix.speed_mps is not None or fix.track_deg is not None:
        tpx = ""
        if fix.speed_mps is not None:
            tpx += f"<gpxtpx:speed>{fix.speed_mps:.3f}</gpxtpx:speed>"
        if fix.track_deg is not None:
            tpx += f"<gpxtpx:course>{fix.track_deg % 360:.1f}</gpxtpx:course>"
        ext.append(f"<gpxtpx:TrackPointExtension>{tpx}</gpxtpx:TrackPointExtension>")
    if clock is not None:
        ext.append(f"<examrec:pts_s>{clock.pts_s(fix.capture_ns):.3f}</examrec:pts_s>")
    if ext:
        parts.append("<extensions>" + "".join(ext) + "</extensions>")
    parts.append("</trkpt>\n")
    return "".join(parts)


@dataclass
class _Track:
    """The point-selection rules, shared by the live writer and the export so both agree."""

    gap_s: float = 5.0
    last_time_ns: int | None = None
    last_mode: int = 0
    need_new_segment: bool = True
    skipped: int = 0
    points: int = 0
    segments: int = 0

    def decide(self, fix: GpsFix) -> str:
        """'add', 'new-segment', 'replace' or 'skip' for this report."""
        if not fix.has_fix or not fix.time_utc:
            if not fix.has_fix:
                self.need_new_segment = True
            return "skip"
        try:
            t = iso_to_ns(fix.time_utc)
        except ValueError:
            self.skipped += 1
            return "skip"
        if self.last_time_ns is not None:
            if t == self.last_time_ns and not self.need_new_segment:
                if fix.mode >= self.last_mode:
                    self.last_mode = fix.mode
                    return "replace"
                return "skip"
            if t <= self.last_time_ns:
                self.skipped += 1
                return "skip"
            if (t - self.last_time_ns) > self.gap_s * NS_PER_S:
                self.need_new_segment = True
        self.last_time_ns = t
        self.last_mode = fix.mode
        if self.need_new_segment:
            self.need_new_segment = False
            self.segments += 1
            self.points += 1
            return "new-segment"
        self.points += 1
        return "add"


class GpxWriter:
    """Appends points to route.gpx so that the file is a complete GPX document after every write.

    Thread-safe. ``fsync_interval_s``: how often the data is forced to the disk (0: every point).
    """

    def __init__(self, path: Path | str, name: str, desc: str = "", start_utc: str | None = None,
                 clock: SessionClock | None = None, gap_s: float = 5.0, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self.clock = clock
        self._track = _Track(gap_s=gap_s)
        self._lock = threading.Lock()
        self._seg_open = False
        self._last_point_at = 0  # offset of the last point, for 'replace'
        self._last_point_len = 0
        head = header(name, desc, start_utc).encode()
        try:
            self._file = durable.ScheduledFile(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                               int(fsync_interval_s * NS_PER_S))
        except FileExistsError:
            raise GpxError(f"{self.path} already exists; a session's route is written once "
                           f"(rebuild it with `examrec export-gpx`)") from None
        self._pwrite(head + TAIL_NO_SEG.encode(), 0)
        self._end = len(head)  # where the closing tags start
        durable.fsync(self._file.fd)  # a new route is a complete GPX document from the start

    @property
    def points(self) -> int:
        return self._track.points

    @property
    def segments(self) -> int:
        return self._track.segments

    @property
    def skipped(self) -> int:
        return self._track.skipped

    def add(self, fix: GpsFix) -> bool:
        """Add one GPS report; True when the file changed (reports without a fix only end a segment)."""
        with self._lock:
            if self._file.closed:
                raise GpxError(f"{self.path}: writer is closed")
            action = self._track.decide(fix)
            if action == "skip":
                return False
            point = point_xml(fix, self.clock)
            if action == "replace":
                old = self._last_point_len
                data = point.encode()
                # Pad with spaces (legal after a tag) so a shorter point leaves no stale bytes.
                pad = b"" if len(data) >= old else b" " * (old - len(data))
                at = self._last_point_at
                self._end = at + len(data) + len(pad)
                self._pwrite(data + pad + TAIL_OPEN_SEG.encode(), at)
                self._last_point_len = len(data) + len(pad)
            else:
                prefix = ""
                if action == "new-segment":
                    prefix = "</trkseg>\n<trkseg>\n" if self._seg_open else "<trkseg>\n"
                    self._seg_open = True
                data = (prefix + point).encode()
                self._last_point_at = self._end + len(prefix)
                self._last_point_len = len(point.encode())
                self._pwrite(data + TAIL_OPEN_SEG.encode(), self._end)
                self._end += len(data)
            self._file.wrote(fix.capture_ns)
            return True

    def _pwrite(self, data: bytes, offset: int) -> None:
        written = 0
        while written < len(data):  # a short write (a signal, a nearly full disk) continues
            written += durable.pwrite(self._file.fd, data[written:], offset + written)

    def close(self) -> None:
        """Force the file to the disk and close it; safe to call twice."""
        with self._lock:
            self._file.close()


@dataclass
class GpxSummary:
    """What a GPX file holds: points, segments, first/last time; ``repaired`` when we fixed it."""

    path: str
    points: int
    segments: int
    first_time: str | None = None
    last_time: str | None = None
    repaired: bool = False
    skipped: int = 0
    action: str = ""  # export: "written" or "kept"
    notes: list[str] = field(default_factory=list)


def read_gpx(path: Path | str) -> GpxSummary:
    """Parse a GPX 1.1 file; raises GpxError naming the file when it is not readable GPX 1.1."""
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GpxError(f"{p}: not readable XML ({exc})") from None
    if root.tag != f"{{{GPX_NS}}}gpx" or root.get("version") != "1.1":
        raise GpxError(f"{p}: not a GPX 1.1 document (root {root.tag!r}, version {root.get('version')!r})")
    segs = root.findall(f"{{{GPX_NS}}}trk/{{{GPX_NS}}}trkseg")
    times = [t.text for t in root.iter(f"{{{GPX_NS}}}time") if t.text]
    pts = root.findall(f".//{{{GPX_NS}}}trkpt")
    pt_times = [pt.findtext(f"{{{GPX_NS}}}time") for pt in pts]
    return GpxSummary(path=str(p), points=len(pts), segments=len(segs),
                      first_time=pt_times[0] if pt_times else (times[0] if times else None),
                      last_time=pt_times[-1] if pt_times else None)


_LAST_POINT = re.compile(rb"</trkpt>\s*")


def repair_gpx(path: Path | str) -> GpxSummary:
    """Make a torn route.gpx readable again: keep every complete point, close the document.

    A file that already parses is left alone. Bytes after the last complete point are cut (they
    are a torn write of one point at most). Raises GpxError when not even the header survived;
    rebuild the file from telemetry.jsonl with :func:`export_gpx` then.
    """
    p = Path(path)
    try:
        summary = read_gpx(p)
        return summary
    except GpxError as first:
        problem = str(first)
    data = p.read_bytes()
    ends = [m.end() for m in _LAST_POINT.finditer(data)]
    if ends:
        keep = data[:ends[-1]]
        tail = TAIL_OPEN_SEG
    else:
        trk = data.find(b"<trk>")
        src_end = data.find(b"</src>\n", trk)
        if trk < 0 or src_end < 0:
            raise GpxError(f"{p}: the header itself is torn ({problem}); rebuild the route from "
                           f"telemetry.jsonl with `examrec export-gpx`")
        keep = data[:src_end + len(b"</src>\n")]
        tail = TAIL_NO_SEG
    durable.write_file_atomic(p, keep + tail.encode())
    summary = read_gpx(p)
    summary.repaired = True
    summary.notes.append(f"cut {len(data) - len(keep)} torn bytes after the last complete point ({problem})")
    log.warning("%s: repaired: %s", p, summary.notes[-1])
    return summary


def build_gpx(fixes: Iterable[GpsFix], name: str, desc: str = "", start_utc: str | None = None,
              clock: SessionClock | None = None, gap_s: float = 5.0) -> tuple[str, _Track]:
    """The whole GPX text for a sequence of reports, with the live writer's rules."""
    track = _Track(gap_s=gap_s)
    out = [header(name, desc, start_utc)]
    seg_open = False
    for fix in fixes:
        action = track.decide(fix)
        if action == "skip":
            continue
        point = point_xml(fix, clock)
        if action == "replace":
            out[-1] = point
            continue
        if action == "new-segment":
            out.append("</trkseg>\n<trkseg>\n" if seg_open else "<trkseg>\n")
            seg_open = True
        out.append(point)
    out.append(TAIL_OPEN_SEG if seg_open else TAIL_NO_SEG)
    return "".join(out), track


class NoTelemetry(GpxError):
    """The folder has no telemetry.jsonl: not a session folder, or no sensor was configured."""


def session_gpx(session_dir: Path | str) -> tuple[str, _Track]:
    """The GPX text of a session's route, rebuilt from its telemetry.jsonl (names and the
    session timeline from manifest.json when it is readable)."""
    sdir = Path(session_dir)
    telemetry = sdir / "telemetry.jsonl"
    if not telemetry.is_file():
        raise NoTelemetry(f"{sdir}: no telemetry.jsonl (give the session folder; was a GPS configured?)")
    name, start_utc, clock = _session_info(sdir)
    fixes = route_fixes(read_records(telemetry, "gps"))  # the live route's rules (speed source, bad times)
    text, track = build_gpx(fixes, name=name, desc="rebuilt from telemetry.jsonl by examrec export-gpx",
                            start_utc=start_utc, clock=clock)
    if track.points == 0:
        raise GpxError(f"{telemetry}: {len(fixes)} GPS reports, none with a fix; there is no route to export")
    return text, track


def export_gpx(session_dir: Path | str, out: Path | str | None = None, force: bool = False) -> GpxSummary:
    """Rebuild a session's route.gpx from its telemetry.jsonl.

    ``out`` None means the session's own route.gpx, which is rewritten only when it is missing
    or unreadable (or ``force``): an intact route.gpx is evidence and stays as recorded. The
    file is replaced atomically. Raises GpxError (NoTelemetry) when there is nothing to export.
    """
    sdir = Path(session_dir)
    text, track = session_gpx(sdir)
    target = Path(out) if out is not None else sdir / "route.gpx"
    if out is None and target.exists() and not force:
        try:
            summary = read_gpx(target)
        except GpxError:
            pass
        else:
            summary.action = "kept"
            summary.notes.append("route.gpx is intact and stays as recorded; use --out FILE to export a copy")
            return summary
    durable.write_file_atomic(target, text.encode())
    summary = read_gpx(target)
    summary.skipped = track.skipped
    summary.action = "written"
    return summary


def _session_info(sdir: Path) -> tuple[str, str | None, SessionClock | None]:
    """Session id, start time and clock from manifest.json when it is readable."""
    try:
        manifest = json.loads((sdir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return sdir.name, None, None
    clock = None
    if isinstance(manifest.get("clock"), dict):
        try:
            clock = SessionClock.from_json(manifest["clock"])
        except (KeyError, TypeError, ValueError):
            clock = None
    return str(manifest.get("session_id") or sdir.name), manifest.get("started_at"), clock


def gpx_time_order(path: Path | str) -> list[datetime]:
    """The point times of a GPX file in document order (for checks and tests)."""
    root = ET.parse(path).getroot()
    out = []
    for pt in root.iter(f"{{{GPX_NS}}}trkpt"):
        text = pt.findtext(f"{{{GPX_NS}}}time") or ""
        out.append(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return out
