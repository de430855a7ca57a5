"""The session folder: every name in it, how sessions are found, how manifest.json is read and
written, and the one way a segment entry is built and chained.

    <out>/<YYYY-MM-DD>/<session-id>/         the day is the local date the session started
        manifest.json                         MANIFEST_NAME (written before any frame exists)
        events.jsonl                          EVENTS_NAME, hash-chained
        checkpoints.jsonl                     CHECKPOINTS_NAME, signed while recording (checkpoints.py)
        telemetry.jsonl  route.gpx            TELEMETRY_NAME, ROUTE_NAME (when sensors are set)
        photos/                               PHOTOS_DIR, photo_name()
        recovered/                            RECOVERED_DIR, recovered_name(): what repair set aside
        <stream>/NNNN.mp4                     segment_name(), SEGMENT_RE
        <stream>/fragments.jsonl              FRAGMENTS_NAME, hash-chained
        .recording.lock  .reserve             LOCK_NAME, RESERVE_NAME (never archived)
        .manifest.json.tmp                    MANIFEST_TEMP_NAME: a manifest write cut off before its rename

The format itself (what each file holds) is sessions/evidence/FORMAT.md. sensors/gpx.py rebuilds
route.gpx from telemetry.jsonl: it sits in a lower layer and cannot import this module, so it names manifest.json and telemetry.jsonl itself.
"""
from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Mapping

from core import durable
from sessions.evidence.chain import GENESIS
from sessions.evidence.manifest import FORMAT, FORMATS, segment_entry_hash

MANIFEST_NAME = "manifest.json"
EVENTS_NAME = "events.jsonl"
FRAGMENTS_NAME = "fragments.jsonl"
TELEMETRY_NAME = "telemetry.jsonl"
ROUTE_NAME = "route.gpx"
PHOTOS_DIR = "photos"
RECOVERED_DIR = "recovered"
CHECKPOINTS_NAME = "checkpoints.jsonl"
LOCK_NAME = ".recording.lock"
RESERVE_NAME = ".reserve"
MANIFEST_TEMP_NAME = durable.temp_name(MANIFEST_NAME)
SEGMENT_SUFFIX = ".mp4"
SEGMENT_RE = re.compile(r"^(?P<stream>[a-z0-9][a-z0-9_-]{0,31})/(?P<num>\d{4})\.mp4$")


class ManifestError(ValueError):
    """A session's manifest.json cannot be used: missing (NoManifest), not JSON, not an object, or
    not an examrec-session/1 manifest. The message names the file and what to do."""


class NoManifest(ManifestError, FileNotFoundError):
    """There is no manifest.json: not a session folder (or a session that never started)."""


# ---------------------------------------------------------------------------------------------
# names


def segment_name(stream: str, number: int) -> str:
    """``<stream>/NNNN.mp4``, the path of a stream's segment inside the session folder."""
    return f"{stream}/{number:04d}{SEGMENT_SUFFIX}"


def segment_number(rel: str) -> int | None:
    """The NNNN of a ``<stream>/NNNN.mp4`` path, or None when ``rel`` is not a segment path."""
    m = SEGMENT_RE.match(rel) if isinstance(rel, str) else None
    return int(m.group("num")) if m else None


def fragments_path(session_dir: str | os.PathLike[str], stream: str) -> Path:
    """A stream's fragments.jsonl."""
    return Path(session_dir) / stream / FRAGMENTS_NAME


def photo_name(number: int, label: str) -> str:
    """``photos/NNN-<role or stream>.jpg``, the path of a still inside the session folder."""
    return f"{PHOTOS_DIR}/{number:03d}-{label}.jpg"


def recovered_name(rel: str, what: str) -> str:
    """Where bytes set aside from ``rel`` go: ``recovered/<rel with / as __>.<what>``
    (``what`` says which bytes: ``from-OFFSET``, ``bytes-A-B``, ``unplayable``)."""
    return f"{RECOVERED_DIR}/{rel.replace('/', '__')}.{what}"


def session_folder(out_root: str | os.PathLike[str], local_day: date, session_id: str) -> Path:
    """``<out>/<YYYY-MM-DD>/<session-id>``: the day is the local date the session started."""
    return Path(out_root) / local_day.isoformat() / session_id


# ---------------------------------------------------------------------------------------------
# discovery


def session_root(path: str | os.PathLike[str]) -> Path:
    """The session folder a path names: the folder itself or its manifest.json."""
    p = Path(path)
    return p.parent if p.name == MANIFEST_NAME and p.is_file() else p


def is_session(path: str | os.PathLike[str]) -> bool:
    """A folder holding a manifest.json (readable or not)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def sessions_under(out_root: str | os.PathLike[str]) -> list[Path]:
    """Every session folder under a recordings root (``<out>/<date>/<id>/manifest.json``), sorted."""
    return sorted(p.parent for p in Path(out_root).glob(f"*/*/{MANIFEST_NAME}"))


def find_sessions(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself when it is a session folder (or its manifest.json), else the sessions under
    it as a recordings root."""
    root = session_root(path)
    return [root] if is_session(root) else sessions_under(root)


def sessions_by_id(out_root: str | os.PathLike[str], id_prefix: str) -> list[Path]:
    """Sessions under a recordings root whose id starts with ``id_prefix``."""
    return sorted(p.parent for p in Path(out_root).glob(f"*/{id_prefix}*/{MANIFEST_NAME}"))


def out_root_of(session_dir: str | os.PathLike[str]) -> Path:
    """The recordings root a session folder belongs to (``<out>`` of ``<out>/<date>/<id>``); the
    parent folder when the session does not sit in a date folder."""
    parent = Path(session_dir).parent
    try:
        date.fromisoformat(parent.name)
    except ValueError:
        return parent
    return parent.parent


# ---------------------------------------------------------------------------------------------
# manifest.json


def manifest_path(session: str | os.PathLike[str]) -> Path:
    """``session`` may be the session folder or its manifest.json."""
    p = Path(session)
    return p if p.name == MANIFEST_NAME and not p.is_dir() else p / MANIFEST_NAME


def read_manifest(session: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a session's manifest (folder or manifest.json path); the one reader every command uses.

    Raises NoManifest when there is none, ManifestError when it is not UTF-8 JSON, not an object,
    or not of format examrec-session/1 or /2 (FORMAT.md).
    """
    from sessions.evidence.nofollow import read_bytes  # O_NOFOLLOW: a linked manifest is refused
    path = manifest_path(session)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        raise NoManifest(f"{path.parent}: no {MANIFEST_NAME} here; give the session folder "
                         f"(<out>/<YYYY-MM-DD>/<session-id>)") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: a folder, not a manifest") from None
    except NotADirectoryError:
        raise ManifestError(f"{path.parent}: not a folder; give the session folder "
                            f"(<out>/<YYYY-MM-DD>/<session-id>)") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"{path}: not valid UTF-8 JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not a JSON object")
    if data.get("format") not in FORMATS:
        raise ManifestError(f"{path}: format is {data.get('format')!r}, expected one of {', '.join(FORMATS)}")
    return data


def write_manifest(session_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Replace ``session_dir/manifest.json`` atomically; return its path.

    Through core.durable (temp file, fsync, rename, fsync of the folder), so after a power cut the
    file is the old manifest or the new one, never a mix, and the crash harness sees every write.
    Indented and UTF-8 for people who open it; signatures do not depend on this layout.
    """
    data = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    target = Path(session_dir) / MANIFEST_NAME
    durable.write_file_atomic(target, data)
    return target


# ---------------------------------------------------------------------------------------------
# segment entries


def segment_entry(file: str, *, first_pts_s: float, stage: int, last_pts_s: float | None = None,
                  sha256: str | None = None, size: int | None = None, frames: int = 0, dropped: int = 0,
                  closed: bool = False, interrupted: bool = False,
                  audio_span: tuple[float, float] | None = None) -> dict[str, Any]:
    """One ``streams[].segments[]`` entry of the manifest (FORMAT.md), the same for the recorder
    (opened with no hash, completed when it closes) and repair (rebuilt from the file).

    Times are rounded to the microsecond; ``prev_sha256`` is GENESIS until chain_segments sets it.
    """
    entry: dict[str, Any] = {
        "file": file, "sha256": sha256, "size": size, "frames": frames, "dropped": dropped,
        "first_pts_s": round(first_pts_s, 6),
        "last_pts_s": round(first_pts_s if last_pts_s is None else last_pts_s, 6),
        "stage": stage, "closed": bool(closed), "prev_sha256": GENESIS,
    }
    if interrupted:
        entry["interrupted"] = True
    if audio_span is not None:
        entry["audio_first_pts_s"] = round(audio_span[0], 6)
        entry["audio_last_pts_s"] = round(audio_span[1], 6)
    return entry


def chain_segments(segments: list[dict[str, Any]]) -> None:
    """Chain a stream's segment entries in order: each ``prev_sha256`` is the hash of the entry
    before (GENESIS for the first). Run it after the last change to any entry, before writing."""
    prev = GENESIS
    for entry in segments:
        entry["prev_sha256"] = prev
        prev = segment_entry_hash(entry)
