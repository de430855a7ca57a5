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
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from muxer.repair import index_segment, media_span, scan_segment

from core import durable
from sessions.evidence.chain import read_chain
from core.clock import SessionClock, iso_utc, utc_now_iso
from sessions.evidence.events import EventLog
from sessions.evidence.layout import (EVENTS_NAME, FRAGMENTS_NAME, RESERVE_NAME, ManifestError, NoManifest,
                                      chain_segments, fragments_path, read_manifest, recovered_name,
                                      segment_entry, write_manifest)
from sessions.evidence.checkpoints import OPENING_FIELDS, CheckpointState, read_checkpoints
from sessions.evidence.chain import GENESIS
from sessions.evidence.lock import is_being_written
from sessions.evidence.nofollow import SymlinkRefused, check_tree, is_regular, open_read, sha256_file
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


def _trim_broken_tail(session: Path, path: Path, signed_lines: int) -> Trim | None:
    """After a power cut the unsynced end of a log can hold a line torn into zeros with whole lines
    after it. From the first line past the signed checkpoint's heads that is not a chained JSON
    record, the rest is set aside (never below the heads: verify must see such a change)."""
    if not is_regular(path):
        return None
    with open_read(path) as f:
        data = f.read()
    prev, pos = GENESIS, 0
    for i, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and rec.get("prev_sha256") == prev
        except ValueError:
            ok = False
        if not ok:
            if i <= signed_lines:
                return None
            return _save_tail(session, path, pos, "torn by the interruption (unsynced lines)")
        prev = hashlib.sha256(line).hexdigest()
        pos += len(line) + 1
    return None


def _trim_torn_line(session: Path, path: Path) -> Trim | None:
    """A chained log's last line without a newline was never complete: set it aside."""
    if not path.exists():
        return None
    with open_read(path) as f:
        data = f.read()
    if not data or data.endswith(b"\n"):
        return None
    keep = data.rfind(b"\n") + 1
    return _save_tail(session, path, keep, "torn last line")


def repair_session(session_dir: Path) -> RepairReport:
    """Repair one session folder (see the module doc). Safe to run on any session: a finished
    or already repaired one is left as it is."""
    session = Path(session_dir)
    try:
        check_tree(session)
    except SymlinkRefused as exc:
        raise RepairRefused(str(exc)) from None
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
    checkpoints = read_checkpoints(session)
    _refuse_laundering(session, manifest, checkpoints)  # before anything is changed
    reserve = session / RESERVE_NAME
    if is_regular(reserve):
        # The dead recorder's disk-space reserve: its bookkeeping, never evidence (verify would
        # call it an unlisted file, and the session could not be uploaded).
        reserve.unlink()
        durable.fsync_dir(session)
        report.notes.append(f"removed the recorder's space reserve {RESERVE_NAME}")
    trims: list[Trim] = []
    # The fragment records as they are, before unsynced lines are set aside below: a record whose
    # bytes match still proves them, so the segment keeps them (verify sees the bytes as kept by
    # repair, beyond the log).
    records_by_stream: dict[str, dict[str, list[dict]]] = {}
    for stream in manifest.get("streams", []):
        log_file = session / stream["name"] / FRAGMENTS_NAME
        records_by_stream[stream["name"]] = {}
        if is_regular(log_file):
            for rec in read_chain(log_file)[0]:
                if isinstance(rec.get("file"), str):
                    records_by_stream[stream["name"]].setdefault(rec["file"], []).append(rec)
    heads = checkpoints.last_heads or {}
    signed_lines = {EVENTS_NAME: int((heads.get("events") or {}).get("lines") or 0)}
    for stream, head in (heads.get("fragments") or {}).items():
        if isinstance(head, dict):
            signed_lines[f"{stream}/{FRAGMENTS_NAME}"] = int(head.get("lines") or 0)
    for log_path in [session / EVENTS_NAME, *sorted(session.glob(f"*/{FRAGMENTS_NAME}"))]:
        rel = log_path.relative_to(session).as_posix()
        t = _trim_broken_tail(session, log_path, signed_lines.get(rel, 0)) or _trim_torn_line(session, log_path)
        if t:
            trims.append(t)
    previous = {seg["file"]: seg for s in manifest.get("streams", []) for seg in s.get("segments", [])}
    last_pts = None
    for stream in manifest.get("streams", []):
        folder = session / stream["name"]
        records = records_by_stream.get(stream["name"], {})
        segments = []
        for path in sorted(folder.glob("*.mp4")):
            rel = path.relative_to(session).as_posix()
            old = previous.get(rel, {})
            if (old.get("closed") or old.get("index")) and old.get("sha256") \
                    and old.get("size") == path.stat().st_size and sha256_file(path) == old["sha256"]:
                entry = dict(old)
            else:
                scan = scan_segment(path, records.get(rel))
                if scan.header_patch is not None:
                    at, original = scan.header_patch
                    trims.append(_save_tail_copy(session, path, at, 8, "cut during close: original header restored"))
                    fd = durable.open_fd(path, os.O_WRONLY | os.O_NOFOLLOW)
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
                span = media_span(path)  # the fragments' own times, before any index
                if span.frames == 0:
                    trims.append(_move_aside(session, path, "no playable frame"))
                    continue
                # Close it as the recorder would have: an index after the fragments (FORMAT.md).
                index, how = index_segment(path)
                if index is None and how.startswith("left"):
                    report.notes.append(f"{rel}: {how}")
                audio = (None if span.audio_first_pts_s is None
                         else (span.audio_first_pts_s, span.audio_end_pts_s))
                entry = segment_entry(rel, sha256=sha256_file(path), size=path.stat().st_size, frames=span.frames,
                                      dropped=old.get("dropped", 0), first_pts_s=span.first_pts_s,
                                      last_pts_s=span.last_pts_s, stage=old.get("stage", 1),
                                      closed=scan.finalised and index is None,
                                      interrupted=not scan.finalised or index is not None, audio_span=audio)
                if index is not None:
                    entry["index"] = index.to_json()
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
        report.notes.append("already repaired: no file of the recording changed")
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
    if checkpoints.last_heads is not None:
        # What the signature of repair rests on: the checkpoint signed while recording, plus the
        # fragment records after it (verify proves both; repair vouches for nothing else).
        manifest["repaired"]["checkpoint"] = {"seq": checkpoints.last_heads.get("seq"),
                                              "pts_s": checkpoints.last_heads.get("pts_s")}
    events.close()
    lines, last = _log_summary(session / EVENTS_NAME)
    manifest.setdefault("events", {})
    manifest["events"].update({"file": EVENTS_NAME, "lines": lines, "last_sha256": last})
    note = _seal(manifest, checkpoints.public_key)
    if note:
        report.notes.append(note)
    write_manifest(session, manifest)
    report.state = "interrupted"
    return report


def _refuse_laundering(session: Path, manifest: dict, checkpoints: CheckpointState) -> None:
    """Repair signs what it writes, so it must not be a way to sign edits: a session whose
    checkpoints record a signed finish, or whose opening fields (details...) differ from the opening
    record signed before the first frame, was changed after the fact. Nothing is touched; verify
    names the change."""
    if checkpoints.finish is not None:
        raise RepairRefused(f"{session}: checkpoint {checkpoints.finish.get('seq')} records that this session "
                            f"finished and its manifest was signed, yet the manifest says state "
                            f"{manifest.get('state')!r}: it was changed after the finish; repair does not sign "
                            f"it (run `examrec verify {session}`)")
    if checkpoints.opening is not None:
        changed = [k for k in OPENING_FIELDS if manifest.get(k) != checkpoints.opening.get(k)]
        if changed:
            raise RepairRefused(f"{session}: {', '.join(changed)} differ from the opening record signed before the "
                                f"first frame: changed after the start; repair does not sign it "
                                f"(run `examrec verify {session}`)")


def _seal(manifest: dict, checkpoint_key: str | None) -> str | None:
    """Sign the repaired manifest with the device key, when it is the key that signed the
    checkpoints (another key would sign what the device never vouched for). Returns a note when
    the manifest is left unsigned."""
    from sessions.evidence.signing import (KeyFileError, default_key_path, load_or_create_key, public_key_hex,
                                           sign_manifest)
    try:
        key = load_or_create_key(default_key_path())
    except (OSError, KeyFileError) as exc:
        log.warning("repaired manifest left unsigned: %s", exc)
        return f"left unsigned: {exc}"
    if checkpoint_key is not None and public_key_hex(key) != checkpoint_key:
        return ("left unsigned: this machine's device key is not the key that signed the checkpoints; "
                "the signed checkpoints and the hash chains are the evidence")
    signed = sign_manifest(manifest, key)
    manifest.clear()
    manifest.update(signed)
    return None


def _log_summary(path: Path) -> tuple[int, str]:
    from sessions.evidence.chain import last_hash
    with open(path, "rb") as f:
        lines = sum(1 for line in f if line.endswith(b"\n"))
    return lines, last_hash(path)


def _save_tail_copy(session: Path, path: Path, at: int, length: int, reason: str) -> Trim:
    rel = path.relative_to(session).as_posix()
    saved = session / recovered_name(rel, f"bytes-{at}-{at + length}")
    saved.parent.mkdir(exist_ok=True)
    with open_read(path) as f:
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
