"""`examrec repair`: bring an interrupted session (kill, power cut, full disk) back to playable files
and an honest manifest.

It trims each segment's torn tail back to the last complete fragment (the trimmed bytes go to
recovered/, never deleted), puts aside files with nothing playable, rebuilds the manifest's
segment list from the files, marks the session `interrupted` with the time of the last frame
kept, and records a `repaired` event. It never rewrites a byte before a cut, and running it again
changes nothing.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from muxer.repair import media_span, scan_segment

from core import durable
from sessions.evidence.chain import read_chain
from core.clock import SessionClock, iso_utc, utc_now_iso
from sessions.evidence.events import EventLog
from sessions.evidence.layout import (EVENTS_NAME, FRAGMENTS_NAME, ManifestError, NoManifest, chain_segments,
                                      read_manifest, recovered_name, segment_entry, write_manifest)
from sessions.evidence.manifest import sha256_file
from sessions.evidence.lock import is_being_written
from sessions.evidence.recovered import cut_tail

log = logging.getLogger(__name__)
LIVE_STATES = ("recording", "paused", "checking", "ready")


class RepairRefused(Exception):
    """The session cannot be repaired now (a recorder still writes it) or at all (no manifest)."""


@dataclass
class Trim:
    file: str
    kept_bytes: int
    trimmed_bytes: int
    saved_as: str | None
    reason: str
    saved_sha256: str | None = None


@dataclass
class RepairReport:
    session: str
    repaired: bool               # something was done this time
    state: str
    last_pts_s: float | None = None
    trims: list[Trim] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def needs_repair(session_dir: Path) -> bool:
    """A session whose recorder is gone without a clean stop."""
    try:
        m = read_manifest(session_dir)
    except (OSError, ManifestError):
        return False  # no manifest: the session never started (it is written before any frame)
    return m.get("state") in LIVE_STATES and not is_being_written(session_dir)


def _save_tail(session: Path, path: Path, keep: int, reason: str) -> Trim:
    """Move bytes [keep, end) of ``path`` to recovered/ and truncate the file to ``keep``."""
    cut = cut_tail(session, path, keep)
    return Trim(cut.file, cut.kept_bytes, cut.cut_bytes, cut.saved_as, reason, cut.sha256)


def _trim_torn_line(session: Path, path: Path) -> Trim | None:
    """A chained log's last line without a newline was never complete: set it aside."""
    if not path.exists():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    keep = data.rfind(b"\n") + 1
    return _save_tail(session, path, keep, "torn last line")


def repair_session(session_dir: Path) -> RepairReport:
    """Repair one session folder (see the module doc). Safe to run on any session: a finished
    or already repaired one is left as it is."""
    session = Path(session_dir)
    if is_being_written(session):
        raise RepairRefused(f"{session}: a recorder process is still writing this session; stop it first")
    try:
        manifest = read_manifest(session)
    except NoManifest:
        raise RepairRefused(f"{session}: no manifest.json: not an examrec session folder") from None
    except ManifestError as exc:
        raise RepairRefused(f"{exc}; it is replaced atomically, so this file was changed by something else") from None
    report = RepairReport(session=str(session), repaired=False, state=manifest.get("state", "?"))
    if manifest.get("state") == "finished":
        report.notes.append("finished cleanly: nothing to repair")
        return report
    trims: list[Trim] = []
    for log_path in [session / EVENTS_NAME, *sorted(session.glob(f"*/{FRAGMENTS_NAME}"))]:
        t = _trim_torn_line(session, log_path)
        if t:
            trims.append(t)
    previous = {seg["file"]: seg for s in manifest.get("streams", []) for seg in s.get("segments", [])}
    last_pts = None
    for stream in manifest.get("streams", []):
        folder = session / stream["name"]
        records: dict[str, list[dict]] = {}
        if (folder / FRAGMENTS_NAME).exists():
            for rec in read_chain(folder / FRAGMENTS_NAME)[0]:
                records.setdefault(rec["file"], []).append(rec)
        segments = []
        for path in sorted(folder.glob("*.mp4")):
            rel = path.relative_to(session).as_posix()
            old = previous.get(rel, {})
            if old.get("closed") and old.get("sha256") and old.get("size") == path.stat().st_size \
                    and sha256_file(path) == old["sha256"]:
                entry = dict(old)
            else:
                scan = scan_segment(path, records.get(rel))
                if scan.header_patch is not None:
                    at, original = scan.header_patch
                    trims.append(_save_tail_copy(session, path, at, 8, "cut during close: original header restored"))
                    fd = durable.open_fd(path, os.O_WRONLY)
                    try:
                        durable.pwrite(fd, original, at)
                        durable.fsync(fd)
                    finally:
                        durable.close(fd)
                if scan.valid_end == 0:
                    trims.append(_move_aside(session, path, scan.reason))
                    continue
                if scan.valid_end < scan.size:
                    trims.append(_save_tail(session, path, scan.valid_end, scan.reason))
                span = media_span(path)
                if span.frames == 0:
                    trims.append(_move_aside(session, path, "no playable frame"))
                    continue
                audio = (None if span.audio_first_pts_s is None
                         else (span.audio_first_pts_s, span.audio_end_pts_s))
                entry = segment_entry(rel, sha256=sha256_file(path), size=path.stat().st_size, frames=span.frames,
                                      dropped=old.get("dropped", 0), first_pts_s=span.first_pts_s,
                                      last_pts_s=span.last_pts_s, stage=old.get("stage", 1),
                                      closed=scan.finalised, interrupted=not scan.finalised, audio_span=audio)
            segments.append(entry)
            last_pts = max(last_pts or 0.0, entry["last_pts_s"])
        chain_segments(segments)
        if segments != stream.get("segments"):
            stream["segments"] = segments
            report.repaired = True
        for gap in stream.get("gaps", []):
            if gap.get("end_pts_s") is None and last_pts is not None:
                gap["end_pts_s"] = round(last_pts, 6)
    report.trims = trims
    report.last_pts_s = last_pts
    already = manifest.get("state") == "interrupted" and manifest.get("repaired")
    if already and not trims and not report.repaired:
        report.notes.append("already repaired: nothing changed")
        return report
    report.repaired = True
    clock = SessionClock.from_json(manifest["clock"]) if manifest.get("clock") else None
    for stage in manifest.get("stages", []):
        if stage.get("end_pts_s") is None and last_pts is not None:
            stage["end_pts_s"] = round(last_pts, 6)
    if clock is not None and last_pts is not None:
        manifest["ended_at"] = iso_utc(clock.wall_utc(clock.capture_ns(last_pts)))
    manifest["state"] = "interrupted"
    events = EventLog(session / EVENTS_NAME, clock=None)
    events.emit("repaired", last_pts_s=last_pts, trimmed=[asdict(t) for t in trims],
                previous_state=report.state)
    manifest["repaired"] = {"at": utc_now_iso(), "last_pts_s": last_pts,
                            "trimmed_bytes": sum(t.trimmed_bytes for t in trims),
                            "files": [asdict(t) for t in trims],
                            "previous_state": report.state}
    events.close()
    lines, last = _log_summary(session / EVENTS_NAME)
    manifest.setdefault("events", {})
    manifest["events"].update({"file": EVENTS_NAME, "lines": lines, "last_sha256": last})
    _seal(manifest)
    write_manifest(session, manifest)
    report.state = "interrupted"
    return report


def _seal(manifest: dict) -> None:
    """Sign the repaired manifest when a device key is available (sessions.evidence.signing)."""
    try:
        from sessions.evidence.signing import KeyFileError, default_key_path, load_or_create_key, sign_manifest
    except ImportError:
        return
    try:
        key = load_or_create_key(default_key_path())
    except (OSError, KeyFileError) as exc:
        log.warning("repaired manifest left unsigned: %s", exc)
        return
    signed = sign_manifest(manifest, key)
    manifest.clear()
    manifest.update(signed)


def _log_summary(path: Path) -> tuple[int, str]:
    from sessions.evidence.chain import last_hash
    with open(path, "rb") as f:
        lines = sum(1 for line in f if line.endswith(b"\n"))
    return lines, last_hash(path)


def _save_tail_copy(session: Path, path: Path, at: int, length: int, reason: str) -> Trim:
    rel = path.relative_to(session).as_posix()
    saved = session / recovered_name(rel, f"bytes-{at}-{at + length}")
    saved.parent.mkdir(exist_ok=True)
    with open(path, "rb") as f:
        f.seek(at)
        durable.write_file_atomic(saved, f.read(length))
    return Trim(rel, path.stat().st_size, 0, saved.relative_to(session).as_posix(), reason)


def _move_aside(session: Path, path: Path, reason: str) -> Trim:
    rel = path.relative_to(session).as_posix()
    dest = session / recovered_name(rel, "unplayable")
    dest.parent.mkdir(exist_ok=True)
    size = path.stat().st_size
    durable.replace(path, dest)
    durable.fsync_dir(path.parent)
    durable.fsync_dir(dest.parent)
    return Trim(rel, 0, size, dest.relative_to(session).as_posix(), f"nothing playable ({reason}): moved aside")
