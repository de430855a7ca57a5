"""The folder backend: an archive in a local (or mounted) folder, ``file:///path``.

For one centre and for ``make run``: no server needed. The rules of the S3 backend are enforced
here in code: create-only writes (``os.link`` of a fully written, fsynced, checked temp file, so a
key appears whole or not at all), files made read-only (0444), a lock record per object under
``.locks/`` with its retain-until date and legal hold, deletion refused while either holds.
Code cannot stop someone with root on the machine: for that, use S3 with Object Lock. What root
changes is still detected: every object's SHA-256 is in the session's receipt and manifest, and
journals are hash-chained.

Journals are one chained JSONL file each (sessions/evidence/chain.py format), appended under an exclusive
``flock`` so concurrent commands never interleave lines.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import stat
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from core import durable
from sessions.evidence.chain import GENESIS, line_hash
from sessions.archive.backend import BodyFilter, JournalLine, PutResult, StoredObject
from sessions.archive.config import SETTINGS_KEY, ArchiveURL
from sessions.archive.errors import (AlreadyExists, ChecksumMismatch, IntegrityError, NotInitialised, Refused,
                                     Unreachable, UsageError)

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
TMP_PREFIX = ".put-"
READ_ONLY = 0o444
_CHUNK = 1 << 20


def _parse_dt(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FolderBackend:
    """An archive in a folder. ``role`` is only recorded; the folder has no credentials of its own
    (protect it with file permissions: only the examrec service user may write it)."""

    kind = "file"

    def __init__(self, url: ArchiveURL, role: str | None = None):
        assert url.scheme == "file" and url.path is not None
        self.url = url
        self.root = url.path
        self.role = role

    # --- paths -----------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if pure.is_absolute() or ".." in pure.parts or not key or key.endswith("/"):
            raise UsageError(f"bad archive key {key!r}")
        return self.root.joinpath(*pure.parts)

    def _lock_path(self, key: str) -> Path:
        return self.root / LOCKS_DIR / (key + ".json")

    def _journal_path(self, name: str) -> Path:
        return self.root / "journals" / f"{name}.jsonl"

    def _check_root(self) -> None:
        if not self.root.is_dir():
            # A folder archive that is not there is most often a share that is not mounted: the
            # archive is unreachable (exit 6), as an S3 endpoint that does not answer is.
            raise Unreachable(f"archive {self.url}: folder {self.root} does not exist (not mounted?); mount it, "
                              f"or prepare a new archive with: examrec archive init --archive {self.url}")

    # --- settings --------------------------------------------------------------------------------

    def initialise(self, settings: dict, *, deny_delete_principals: list[str] | None = None) -> list[str]:
        settings_path = self._path(SETTINGS_KEY)
        if settings_path.exists():
            raise Refused(f"archive {self.url} is already initialised ({settings_path} exists)")
        for sub in ("examrec", "sessions", "journals", LOCKS_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.write_settings(settings)
        return []

    def read_settings(self) -> dict:
        self._check_root()
        p = self._path(SETTINGS_KEY)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotInitialised(f"archive {self.url} is not initialised (no {SETTINGS_KEY}); "
                                 f"run: examrec archive init --archive {self.url}") from None
        except ValueError as exc:
            raise IntegrityError(f"archive {self.url}: {SETTINGS_KEY} is not valid JSON: {exc}") from None

    def write_settings(self, settings: dict) -> None:
        p = self._path(SETTINGS_KEY)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        data = json.dumps(settings, ensure_ascii=False, indent=1).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            durable.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        durable.fsync_dir(p.parent)

    # --- locks -----------------------------------------------------------------------------------

    def _read_lock(self, key: str) -> dict:
        try:
            return json.loads(self._lock_path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write_lock(self, key: str, retain_until: datetime | None = None, legal_hold: bool | None = None) -> None:
        """Record the lock of ``key``; a retain-until date only ever moves later (COMPLIANCE)."""
        lp = self._lock_path(key)
        lp.parent.mkdir(parents=True, exist_ok=True)
        cur = self._read_lock(key)
        until = _parse_dt(cur.get("retain_until"))
        if retain_until is not None and (until is None or retain_until > until):
            until = retain_until
        hold = bool(cur.get("legal_hold")) if legal_hold is None else legal_hold
        rec = {"mode": "COMPLIANCE", "retain_until": until.astimezone(timezone.utc).isoformat() if until else None,
               "legal_hold": hold}
        tmp = lp.with_name(f".{lp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        os.chmod(tmp, READ_ONLY)
        os.replace(tmp, lp)

    # --- objects ---------------------------------------------------------------------------------

    def put_object(self, key: str, source: Path | bytes, *, sha256: str, size: int,
                   retain_until: datetime | None, legal_hold: bool = False,
                   body_filter: BodyFilter | None = None) -> PutResult:
        self._check_root()
        dest = self._path(key)
        if dest.exists():
            raise AlreadyExists(f"{key} is already stored")
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The lock is recorded before the bytes appear, so no instant exists where the object is
        # stored but deletable.
        self._write_lock(key, retain_until, legal_hold)
        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}.{os.getpid()}")
        src: BinaryIO = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)
        try:
            body = body_filter(key, src) if body_filter else src
            h = hashlib.sha256()
            n = 0
            with open(tmp, "wb") as out:
                while True:
                    b = body.read(_CHUNK)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                    out.write(b)
                out.flush()
                durable.fsync(out.fileno())
        finally:
            src.close()
        if h.hexdigest() != sha256 or n != size:
            tmp.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{key}: received bytes hash to {h.hexdigest()[:16]}... ({n} bytes), "
                                   f"expected {sha256[:16]}... ({size} bytes); nothing was stored")
        os.chmod(tmp, READ_ONLY)
        try:
            os.link(tmp, dest)         # atomic create-only: fails if another writer got there first
        except FileExistsError:
            raise AlreadyExists(f"{key} is already stored") from None
        finally:
            tmp.unlink(missing_ok=True)
        durable.fsync_dir(dest.parent)
        # Read back what is now on the disk: the stored file, not our buffer.
        got = self._hash_file(dest)
        if got != sha256:
            raise IntegrityError(f"{key}: stored file hashes to {got[:16]}..., expected {sha256[:16]}...")
        return PutResult(key=key, version_id=None, sha256=sha256, size=size, verified_by="read-back")

    @staticmethod
    def _hash_file(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while b := f.read(_CHUNK):
                h.update(b)
        return h.hexdigest()

    def _stored(self, key: str, path: Path, with_checksum: bool) -> StoredObject:
        st = path.stat()
        lock = self._read_lock(key)
        return StoredObject(key=key, size=st.st_size, sha256=self._hash_file(path) if with_checksum else None,
                            retain_until=_parse_dt(lock.get("retain_until")), legal_hold=bool(lock.get("legal_hold")),
                            last_modified=datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def stat(self, key: str, with_checksum: bool = True) -> StoredObject | None:
        self._check_root()
        p = self._path(key)
        if not p.is_file():
            return None
        return self._stored(key, p, with_checksum)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        self._check_root()
        base = self.root.joinpath(*PurePosixPath(prefix.rstrip("/")).parts) if prefix.strip("/") else self.root
        out: list[StoredObject] = []
        if not base.exists():
            return out
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != LOCKS_DIR)
            for fn in sorted(filenames):
                if fn.startswith(TMP_PREFIX):
                    continue
                p = Path(dirpath) / fn
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(self._stored(key, p, with_checksum=False))
        return sorted(out, key=lambda o: o.key)

    def read_bytes(self, key: str) -> bytes:
        p = self._path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{key} is not in archive {self.url}") from None

    def download(self, key: str, dest: Path) -> str:
        p = self._path(key)
        if not p.is_file():
            raise UsageError(f"{key} is not in archive {self.url}")
        h = hashlib.sha256()
        with open(p, "rb") as src, open(dest, "wb") as out:
            while b := src.read(_CHUNK):
                h.update(b)
                out.write(b)
            out.flush()
            durable.fsync(out.fileno())
        return h.hexdigest()

    def set_legal_hold(self, key: str, on: bool) -> None:
        if not self._path(key).is_file():
            raise UsageError(f"{key} is not in archive {self.url}")
        self._write_lock(key, legal_hold=on)

    def delete(self, key: str, now: datetime | None = None) -> None:
        p = self._path(key)
        lock = self._read_lock(key)
        if lock.get("legal_hold"):
            raise Refused(f"{key} is under legal hold; release it first")
        until = _parse_dt(lock.get("retain_until"))
        # The real clock, not a --now given to the sweep: like S3, the lock follows actual time.
        real_now = datetime.now(timezone.utc)
        if until is not None and until > real_now:
            raise Refused(f"{key} is locked (COMPLIANCE) until {until.isoformat()}; nobody can delete it earlier")
        if p.exists():
            os.chmod(p, stat.S_IMODE(p.stat().st_mode) | stat.S_IWUSR)
            p.unlink()
        self._lock_path(key).unlink(missing_ok=True)
        # Prune folders left empty, up to the sessions/ level.
        for d in (p.parent, p.parent.parent, self._lock_path(key).parent, self._lock_path(key).parent.parent):
            try:
                if d.is_dir() and d != self.root and not any(d.iterdir()) and d.name not in ("sessions", LOCKS_DIR):
                    d.rmdir()
            except OSError:
                pass

    # --- journals --------------------------------------------------------------------------------

    @contextmanager
    def _journal_lock(self, name: str) -> Iterator[None]:
        lockfile = self.root / "journals" / f".{name}.lock"
        lockfile.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def journal_append(self, name: str, make_line: Callable[[int, str], bytes],
                       retain_until: datetime | None) -> tuple[int, bytes]:
        self._check_root()
        path = self._journal_path(name)
        with self._journal_lock(name):
            data = path.read_bytes() if path.exists() else b""
            if data and not data.endswith(b"\n"):
                # A writer died mid-line: those bytes were never an entry. Keep them as evidence
                # beside the journal and cut them off so the next entry starts on a fresh line.
                cut = data.rfind(b"\n") + 1
                torn = path.with_name(f"{path.name}.torn-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
                torn.write_bytes(data[cut:])
                os.chmod(path, 0o644)
                with open(path, "r+b") as f:
                    f.truncate(cut)
                    durable.fsync(f.fileno())
                data = data[:cut]
                log.warning("journal %s: torn last line moved to %s", name, torn)
            lines = data.split(b"\n")[:-1] if data else []
            prev = line_hash(lines[-1]) if lines else GENESIS
            entry = len(lines) + 1
            line = make_line(entry, prev)
            if path.exists():
                os.chmod(path, 0o644)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                durable.fsync(fd)
            finally:
                os.close(fd)
                os.chmod(path, READ_ONLY)
            durable.fsync_dir(path.parent)
        return entry, line

    def journal_read(self, name: str, after: int = 0) -> list[JournalLine]:
        self._check_root()
        path = self._journal_path(name)
        if not path.exists():
            return []
        data = path.read_bytes()
        parts = data.split(b"\n")
        out = [JournalLine(i, raw + b"\n") for i, raw in enumerate(parts[:-1], start=1) if i > after]
        if parts[-1]:
            out.append(JournalLine(len(parts), parts[-1], ("torn last line: the writer was interrupted",)))
        return out

    def journal_names(self) -> list[str]:
        d = self.root / "journals"
        return sorted(p.stem for p in d.glob("*.jsonl")) if d.is_dir() else []

    # --- misc ------------------------------------------------------------------------------------

    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    def can_read(self) -> bool:
        return True
