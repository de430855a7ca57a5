"""The manifest's content: its format name and states, canonical JSON, the segment hash chain,
streaming file hashes.

The recorder writes the manifest many times while recording (every segment opened or closed,
every stage change) and signs it once at the end; `examrec verify` and the archive read it. These
few functions are the whole shared vocabulary, so they stay small and stable (FORMAT.md). Where
the file lives, and reading and writing it: sessions.evidence.layout.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

FORMAT = "examrec-session/2"
FORMAT_V1 = "examrec-session/1"
# Version 2 signs RFC 8785 (JCS) canonical JSON and keeps checkpoints.jsonl; version 1 is still read.
FORMATS = (FORMAT_V1, FORMAT)
STATES = ("recording", "paused", "finished", "interrupted")
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """The byte form of format 1's signature and of the segment-entry hashes (FORMAT.md).

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


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """SHA-256 (hex) of a whole file, read in chunks so segment files of any size fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
