"""Cutting a segment back to its last complete fragment without losing a byte: what is cut goes
to the session's recovered/ folder (named after the file and the offset it came from), never to
the bin. Used by `examrec repair` (a torn tail after a crash) and by a stream process whose disk
filled up (the fragment it could not finish).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from core import durable
from sessions.evidence.layout import RECOVERED_DIR, recovered_name
from sessions.evidence.nofollow import open_read


@dataclass(frozen=True)
class CutTail:
    """What :func:`cut_tail` did: the file (relative to the session folder) now holds
    ``kept_bytes``; the ``cut_bytes`` after them are in ``saved_as`` (relative to the session
    folder), or nowhere when ``error`` says why they could not be written."""

    file: str
    kept_bytes: int
    cut_bytes: int
    saved_as: str | None
    sha256: str
    error: str | None = None


def cut_tail(session: Path, path: Path, keep: int, *, space_first: bool = False) -> CutTail:
    """Truncate ``path`` (inside ``session``) to ``keep`` bytes and keep the bytes cut in recovered/.

    By default the cut bytes are written and fsynced before the file is truncated, so a crash in
    between loses nothing, and an OSError leaves the file as it was. With ``space_first`` (the
    disk is full) the file is truncated first, so the cut bytes have room; if they still cannot
    be written, ``error`` says so instead of raising (the file is already cut).
    """
    session, path = Path(session), Path(path)
    rel = path.relative_to(session).as_posix()
    with open_read(path) as f:  # O_NOFOLLOW: a segment that is a link is never cut (nofollow.py)
        f.seek(keep)
        tail = f.read()
    digest = hashlib.sha256(tail).hexdigest()
    saved = recovered_name(rel, f"from-{keep}")
    if not space_first:
        _save(session, saved, tail)
        _truncate(path, keep)
        return CutTail(rel, keep, len(tail), saved, digest)
    _truncate(path, keep)
    try:
        _save(session, saved, tail)
    except OSError as exc:
        return CutTail(rel, keep, len(tail), None, digest, error=str(exc))
    return CutTail(rel, keep, len(tail), saved, digest)


def _save(session: Path, saved: str, data: bytes) -> None:
    (session / RECOVERED_DIR).mkdir(exist_ok=True)
    durable.write_file_atomic(session / saved, data)


def _truncate(path: Path, keep: int) -> None:
    fd = durable.open_fd(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        durable.truncate(fd, keep)
        durable.fsync(fd)
    finally:
        durable.close(fd)
