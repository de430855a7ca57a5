"""manifest.json: canonical JSON, the segment hash chain, streaming file hashes, atomic writes.

The recorder writes the manifest many times while recording (every segment opened or closed,
every stage change) and signs it once at the end; `examrec verify` and the archive read it. These
few functions are the whole shared vocabulary, so they stay small and stable (sessions/FORMAT.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from core import durable
from sessions.evidence.chain import GENESIS

log = logging.getLogger(__name__)

FORMAT = "examrec-session/1"
MANIFEST_NAME = "manifest.json"
# durable.write_file_atomic's temp file (".manifest.json.tmp"): left behind only when the writer
# dies before the rename; verify ignores it (it is never the manifest), the next write replaces it.
TEMP_PREFIX = ".manifest.json."
TEMP_SUFFIX = ".tmp"
STATES = ("recording", "paused", "finished", "interrupted")
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """manifest.json exists but is not a readable examrec-session/1 manifest."""


def canonical_json(obj: Any) -> bytes:
    """The one byte form that hashes and signatures are computed over (FORMAT.md).

    NaN and infinities are refused: they are not JSON, and a reader could not reproduce the bytes.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def segment_entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of one segment entry as stored (its own prev_sha256 included)."""
    return sha256_hex(canonical_json(dict(entry)))


def append_segment(segments: list[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any]:
    """Chain ``entry`` to the last entry of ``segments`` (a stream's ``segments`` list) and append it.

    Sets ``entry["prev_sha256"]`` in place and returns the same dict. The previous entry must
    already hold its final values (sha256, size, closed...): changing it afterwards breaks the
    chain at this entry, which verify reports.
    """
    entry["prev_sha256"] = segment_entry_hash(segments[-1]) if segments else GENESIS
    segments.append(entry)
    return entry


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """SHA-256 (hex) of a whole file, read in chunks so segment files of any size fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(session_dir: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Replace ``session_dir/manifest.json`` atomically; return its path.

    Temp file in the same folder (so the rename never crosses file systems), fsync, os.replace,
    fsync of the folder: after a power cut the file is the old manifest or the new one, never a
    mix. Indented and UTF-8 for people who open it; signatures do not depend on this layout.
    """
    folder = Path(session_dir)
    data = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    target = folder / MANIFEST_NAME
    durable.write_file_atomic(target, data)  # traced, so power-cut tests see every manifest write
    log.debug("wrote %s (%d bytes)", target, len(data))
    return target


def manifest_path(session: str | os.PathLike[str]) -> Path:
    """``session`` may be the session folder or its manifest.json."""
    p = Path(session)
    return p if p.name == MANIFEST_NAME and not p.is_dir() else p / MANIFEST_NAME


def read_manifest(session: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a session's manifest (folder or manifest.json path).

    Raises FileNotFoundError when there is none, ManifestError when it is not JSON, not an object,
    or not of format examrec-session/1.
    """
    path = manifest_path(session)
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"{path}: not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not a JSON object")
    if data.get("format") != FORMAT:
        raise ManifestError(f"{path}: format is {data.get('format')!r}, expected {FORMAT!r}")
    return data
