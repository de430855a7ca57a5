"""The storage an archive lives on: a small protocol with two implementations.

Both backends keep the same keys and the same rules, so everything above them (upload, catalog,
journals, sweep, copy) is written once:

``examrec/config.json``                      archive settings (users, holidays), versioned
``sessions/<exam date>/<session id>/<file>`` the session's files, byte for byte, locked
``sessions/<exam date>/<session id>/archive-receipt.json``  what was stored, written last
``journals/<name>/<entry>.json`` (S3) or ``journals/<name>.jsonl`` (folder): chained entries

Rules every backend enforces:

* create-only writes: an existing key is never overwritten (``AlreadyExists``);
* every write carries the SHA-256 the bytes must have; a mismatch stores nothing
  (``ChecksumMismatch``);
* a key with a retain-until date in the future, or under legal hold, cannot be deleted, by anybody
  (``Refused``); the date can be extended, never shortened;
* the *stored* version of a key is the first one written; on S3 any later version or delete
  marker is an attempt to replace it and is reported (``later_versions``, ``delete_markers``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable, Protocol, runtime_checkable

from sessions.archive.config import ArchiveURL, ConnectionConfig

SESSIONS_PREFIX = "sessions/"
RECEIPT_NAME = "archive-receipt.json"
JOURNALS_PREFIX = "journals/"

# A test hook: wraps the body stream of one put (fault injection, e.g. flipping a byte on the wire).
BodyFilter = Callable[[str, BinaryIO], BinaryIO]


@dataclass
class StoredObject:
    """One key as the archive holds it."""

    key: str
    size: int
    version_id: str | None = None
    sha256: str | None = None          # hex, when the storage told us or we computed it
    retain_until: datetime | None = None
    legal_hold: bool = False
    later_versions: int = 0            # versions written after the stored one (replacement attempts)
    delete_markers: int = 0            # delete markers (attempts to hide it)
    last_modified: datetime | None = None
    etag: str | None = None            # S3: MD5 of a single-part object's bytes


@dataclass
class PutResult:
    key: str
    version_id: str | None
    sha256: str
    size: int
    verified_by: str                   # how the stored bytes were checked: "checksum" | "read-back"


@dataclass
class JournalLine:
    """One stored journal entry: its number, exact bytes, and storage-level remarks."""

    entry: int
    data: bytes
    notes: tuple[str, ...] = ()


@runtime_checkable
class Backend(Protocol):
    url: ArchiveURL
    kind: str                          # "file" | "s3"
    role: str | None

    def initialise(self, settings: dict, *, deny_delete_principals: list[str] | None = None) -> list[str]:
        """Prepare an empty archive and store the settings; returns warnings."""

    def read_settings(self) -> dict:
        """The settings; NotInitialised when the archive was never prepared."""

    def write_settings(self, settings: dict) -> None: ...

    def put_object(self, key: str, source: Path | bytes, *, sha256: str, size: int,
                   retain_until: datetime | None, legal_hold: bool = False,
                   body_filter: BodyFilter | None = None) -> PutResult:
        """Create ``key`` (never overwrite) with bytes that must hash to ``sha256``."""

    def stat(self, key: str, with_checksum: bool = True) -> StoredObject | None:
        """The stored version of ``key`` (None when absent)."""

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every key under ``prefix`` (stored versions; no checksums), sorted by key."""

    def read_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> str:
        """Write the stored bytes of ``key`` to ``dest``; returns their SHA-256 (hex)."""

    def set_legal_hold(self, key: str, on: bool) -> None: ...

    def delete(self, key: str) -> None:
        """Delete every version of ``key``; Refused while retained or held."""

    def journal_append(self, name: str, make_line: Callable[[int, str], bytes],
                       retain_until: datetime | None) -> tuple[int, bytes]:
        """Append one entry: ``make_line(entry_no, prev_hash)`` builds the exact line; returns
        (entry number, line). Concurrent writers never interleave or fork the chain."""

    def journal_read(self, name: str, after: int = 0) -> list[JournalLine]:
        """Entries numbered above ``after``, in order."""

    def catalog_path(self) -> Path:
        """Where the SQLite catalog of this archive is kept."""

    def can_read(self) -> bool:
        """Whether these credentials may read objects back (recorders may not)."""


def sha256_stream(fh: BinaryIO, chunk: int = 1 << 20) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while True:
        b = fh.read(chunk)
        if not b:
            break
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def session_prefix(exam_date: str, session_id: str) -> str:
    return f"{SESSIONS_PREFIX}{exam_date}/{session_id}/"


def receipt_key(prefix: str) -> str:
    return prefix + RECEIPT_NAME


def open_backend(url: ArchiveURL, conn: ConnectionConfig, role: str | None = None) -> Backend:
    """The backend for ``url`` with the credentials of ``role`` (S3) or the folder itself."""
    if url.scheme == "file":
        from sessions.archive.folder import FolderBackend
        return FolderBackend(url, role=role)
    from sessions.archive.s3 import S3Backend
    return S3Backend(url, conn, role=role)
