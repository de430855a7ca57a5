"""Upload of finished and interrupted sessions into the archive (ST-1, ST-2; UA IV.1, KZ 11).

For each session folder:

1. ``examrec verify`` must find it untouched (an interrupted session is fine; a changed byte is
   not: that session stays on the recorder and the command says why).
2. The plan: every file with its size and SHA-256 (the manifest's value where it has one),
   segments first, the manifest last, then the archive's receipt. The plan and every completed
   step go to a chained, fsynced state log beside the sessions (``<out>/.examrec-upload/<id>.jsonl``),
   so a cut connection or a power loss resumes where it stopped.
3. Each object is written create-only with its SHA-256 and the Object Lock retain-until date (exam
   date + retention). The storage refuses bytes that do not match; a key already there from an
   interrupted attempt is checked (read back, or trusted to the storage's checksum check when the
   role may not read), never written twice.
4. The receipt (what was stored, the retention, the verify result) is written, the upload is
   journaled, and only then is the local copy deleted (UA IV.1), which is journaled too.

``overdue_sessions`` lists sessions still on a recorder after the end of the next working day
(UA IV.1); ``watch`` keeps uploading while the archive is reachable and, for body-worn recorders,
only while on the charger (KZ 11).

DESIGN, the upload deadline lives in ``upload_due``: the end of the next working day after the
exam date, in the centre's local time (holidays from the profile; sessions/archive/workdays.py).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from core import durable
from sessions.evidence.chain import ChainedLog, read_chain
from sessions.evidence.layout import (LOCK_NAME, MANIFEST_NAME, MANIFEST_TEMP_NAME, PHOTOS_DIR, RECOVERED_DIR,
                                      ManifestError, is_session, out_root_of, read_manifest, session_root,
                                      sessions_by_id, sessions_under)
from sessions.evidence.manifest import sha256_file
from sessions.evidence.lock import is_being_written
from sessions.evidence.nofollow import SymlinkRefused, check_tree
from sessions.archive.backend import BodyFilter, receipt_key, session_prefix
from sessions.archive.config import iso, utc_now
from sessions.archive.errors import (AlreadyExists, ArchiveError, ChecksumMismatch, IntegrityError, Refused, Unreachable,
                                     UsageError)
from sessions.archive.office import ArchiveContext
from sessions.archive.retention import RetentionPolicy, months_for
from sessions.archive.workdays import Days, as_calendar, end_of_day, next_working_day, parse_offset

log = logging.getLogger(__name__)

STATE_DIR = ".examrec-upload"
RECEIPT_FORMAT = "examrec-archive-receipt/1"
UPLOADABLE_STATES = ("finished", "interrupted")
# Files in a session folder that are not evidence: the writers' lock, a manifest temp leftover.
SKIP_NAMES = (LOCK_NAME,)
DEFAULT_POWER_SUPPLY_ROOT = Path("/sys/class/power_supply")
ENV_POWER_SUPPLY_ROOT = "EXAMREC_POWER_SUPPLY_ROOT"
ENV_DEVICE = "EXAMREC_DEVICE"


# --- the local side ---------------------------------------------------------------------------------

def exam_date_of(manifest: dict[str, Any]) -> tuple[date, timezone]:
    """The exam date in the centre's local time (the manifest's UTC offset), and that offset."""
    tz = parse_offset((manifest.get("clock") or {}).get("utc_offset"))
    started = manifest.get("started_at")
    if not started:
        sid = str(manifest.get("session_id", ""))
        try:
            started_dt = datetime.strptime(sid[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            raise UsageError(f"session {sid or '?'}: the manifest has no started_at and the id carries no date") from None
    else:
        started_dt = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    return started_dt.astimezone(tz).date(), tz


def resolve_sessions(args: Iterable[str], out_dir: Path | None) -> list[Path]:
    """Session arguments as folders: a path to a session folder (or its manifest), or a session id
    looked up under ``out_dir``."""
    found: list[Path] = []
    for a in args:
        p = session_root(a)
        try:
            check_tree(p)  # before resolve(): a linked folder must not be followed to its target
        except SymlinkRefused as exc:
            raise Refused(str(exc)) from None
        if is_session(p):
            found.append(p.resolve())
            continue
        if out_dir is not None:
            matches = sessions_by_id(out_dir, a)
            if len(matches) == 1:
                found.append(matches[0].resolve())
                continue
            if len(matches) > 1:
                raise UsageError(f"{a!r} matches {len(matches)} sessions under {out_dir}; give more of the id")
        raise UsageError(f"{a!r} is not a session folder (no {MANIFEST_NAME})"
                         + (f" nor a session id under {out_dir}" if out_dir else "; give --out to look up ids"))
    return found


@dataclass
class PlannedObject:
    file: str          # path inside the session folder (posix)
    key: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "key": self.key, "size": self.size, "sha256": self.sha256}


def _order(rel: str, stream_names: set[str]) -> tuple[int, str]:
    top = rel.split("/", 1)[0]
    if rel == MANIFEST_NAME:
        return (9, rel)
    if top in stream_names and rel.endswith(".mp4"):
        return (0, rel)
    if top in stream_names:
        return (1, rel)
    if top in (PHOTOS_DIR, RECOVERED_DIR):
        return (2, rel)
    return (3, rel)


def make_plan(session_dir: Path, manifest: dict[str, Any], prefix: str) -> list[PlannedObject]:
    """Every file of the session, in upload order, with the SHA-256 it must have."""
    known: dict[str, tuple[str, int | None]] = {}
    for s in manifest.get("streams") or []:
        for seg in s.get("segments") or []:
            if seg.get("sha256") and seg.get("file"):
                known[seg["file"]] = (seg["sha256"], seg.get("size"))
    for ph in manifest.get("photos") or []:
        if ph.get("sha256") and ph.get("file"):
            known[ph["file"]] = (ph["sha256"], None)
    streams = {s.get("name") for s in manifest.get("streams") or [] if s.get("name")}
    plan: list[PlannedObject] = []
    for path in sorted(session_dir.rglob("*")):
        if path.is_symlink():
            raise IntegrityError(f"{path}: a symbolic link in a session folder; sessions hold only files")
        if not path.is_file():
            continue
        rel = path.relative_to(session_dir).as_posix()
        if path.name in SKIP_NAMES or path.name == MANIFEST_TEMP_NAME:
            continue
        size = path.stat().st_size
        sha, msize = known.get(rel, (None, None))
        # The manifest's hash was checked by verify a moment ago; the storage checks it again on
        # write, so a file that changed since cannot slip through.
        if sha is None or (msize is not None and msize != size):
            sha = sha256_file(path)
        plan.append(PlannedObject(rel, prefix + rel, size, sha))
    plan.sort(key=lambda o: _order(o.file, streams))
    return plan


class UploadState:
    """The chained, fsynced log of one session's upload progress (survives power loss)."""

    def __init__(self, out_dir: Path, session_id: str):
        self.dir = Path(out_dir) / STATE_DIR
        self.path = self.dir / f"{session_id}.jsonl"
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self.records, problems = read_chain(self.path)
            if problems:
                log.warning("upload state %s: %s", self.path, "; ".join(p.detail for p in problems))
        self._log: ChainedLog | None = None

    def append(self, record: dict[str, Any]) -> None:
        if self._log is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._log = ChainedLog(self.path, fsync=True)
        self._log.append(record)
        self.records.append(record)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    @property
    def plan(self) -> dict[str, Any] | None:
        plans = [r for r in self.records if r.get("step") == "plan"]
        return plans[-1] if plans else None

    def done(self, step: str) -> list[dict[str, Any]]:
        plan = self.plan
        uid = plan.get("upload_id") if plan else None
        return [r for r in self.records if r.get("step") == step and r.get("upload_id") == uid]


# --- progress -----------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = 0
        self.done = 0
        self.label = ""
        self._last = 0.0
        self._started = False

    def start(self, label: str, total_bytes: int) -> None:
        self.label, self.total, self.done = label, max(1, total_bytes), 0
        self._started = True
        self._draw(force=True)

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label[:40]:<40} [{bar:<30}] {frac * 100:5.1f}% "
                          f"{self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._started:
            self.stream.write("\n")
            self.stream.flush()
        self._started = False


# --- the upload --------------------------------------------------------------------------------------

@dataclass
class UploadResult:
    session_id: str
    path: str
    status: str                       # uploaded | skipped | failed | refused
    message: str = ""
    objects: int = 0
    bytes: int = 0
    resumed: bool = False
    journal_entry: int | None = None
    local_deleted: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Uploader:
    """Uploads session folders into one archive as one authenticated user."""

    def __init__(self, ctx: ArchiveContext, *, profile_months: dict[str, int] | None = None,
                 device: str | None = None, policy: RetentionPolicy | None = None,
                 progress: Progress | None = None, body_filter: BodyFilter | None = None,
                 after_put: Callable[[str], None] | None = None, now: Callable[[], datetime] = utc_now,
                 test_sessions: bool = False):
        self.ctx = ctx
        self.test_sessions = test_sessions  # take demo (replay) sessions, told they are tests
        self.backend = ctx.backend
        self.profile_months = profile_months or {}
        # The journal names the recorder by its inventory number (the forms print it), never the
        # host name of the machine that happens to upload.
        self.device = device or os.environ.get(ENV_DEVICE) or ctx.user.inventory
        if not self.device:
            raise UsageError(f"which recorder is this? give --device INVENTORY (or set ${ENV_DEVICE}); user "
                             f"{ctx.user.name!r} has no inventory number")
        self.policy = policy or RetentionPolicy()
        self.progress = progress or Progress(enabled=False)
        self.body_filter = body_filter
        self.after_put = after_put          # test hook: called after each object is stored
        self.now = now

    def upload(self, session_dir: Path) -> UploadResult:
        """Upload one session folder (resuming an interrupted upload); never raises for a
        problem of this session only, but raises Unreachable/Refused/AuthError, which stop all."""
        session_dir = Path(session_dir)
        try:
            check_tree(session_dir)
        except SymlinkRefused as exc:
            # Uploading would follow the link, and deleting the local copy would delete its target.
            return UploadResult(session_dir.name, str(session_dir), "refused", str(exc))
        try:
            manifest = read_manifest(session_dir)
        except (ManifestError, OSError) as exc:
            return UploadResult("?", str(session_dir), "failed", f"manifest unreadable: {exc}")
        sid = str(manifest.get("session_id") or session_dir.name)
        res = UploadResult(sid, str(session_dir), "failed")
        state = manifest.get("state")
        if state not in UPLOADABLE_STATES:
            if is_being_written(session_dir):
                res.status, res.message = "skipped", "still being recorded"
            else:
                res.status = "skipped"
                res.message = (f"state {state!r} and no recorder holds it: the recording was cut off; "
                               f"run `examrec repair {session_dir}` first, then upload")
            return res
        if manifest.get("demo") and not self.test_sessions:
            # A replay demo signed like an exam must never be filed as one by accident.
            res.status = "refused"
            res.message = ("a DEMO session (recorded from the replay profile), not an exam; it stays here. "
                           "To archive it as a test, run upload with --test-session")
            return res
        lock = _session_upload_lock(out_root_of(session_dir), sid)
        if lock is None:
            res.status, res.message = "skipped", "another examrec upload is working on it"
            return res
        try:
            return self._upload(session_dir, manifest, res)
        except (ChecksumMismatch, IntegrityError) as exc:
            res.status, res.message = "failed", str(exc)
            res.problems.append(str(exc))
            return res
        finally:
            self.progress.finish()
            if not session_dir.exists():
                (out_root_of(session_dir) / STATE_DIR / f".{sid}.lock").unlink(missing_ok=True)
            os.close(lock)

    def _verify_local(self, session_dir: Path, res: UploadResult) -> dict[str, Any]:
        from sessions.evidence.verify import NotASession, verify_session
        try:
            report = verify_session(session_dir)
        except NotASession as exc:
            raise IntegrityError(str(exc)) from None
        if not report.untouched:
            res.problems = [str(p) for p in report.problems if p.kind != "interrupted"]
            raise IntegrityError(f"examrec verify finds session {res.session_id} changed ({len(res.problems)} "
                                 "problem(s)); it stays on the recorder: " + "; ".join(res.problems[:3]))
        return {"ok": report.ok, "untouched": report.untouched, "state": report.state,
                "signed_by": report.signed_by,
                "interrupted": [str(p) for p in report.problems if p.kind == "interrupted"]}

    def _upload(self, session_dir: Path, manifest: dict[str, Any], res: UploadResult) -> UploadResult:
        sid = res.session_id
        out = out_root_of(session_dir)
        st = UploadState(out, sid)
        try:
            exam_date, tz = exam_date_of(manifest)
            kind = manifest.get("profile_kind")
            months = months_for(kind, self.profile_months.get(str(manifest.get("profile"))))
            expires = self.policy.expires_at(exam_date, months, tz)
            delete_by = self.policy.delete_by(exam_date, months, tz)
            now = self.now()
            # A lock date must lie in the future; a session uploaded after its retention ended
            # (found on an old medium) is stored unlocked and the next sweep deletes it.
            retain_until = expires if expires > now + timedelta(minutes=1) else None
            prefix = session_prefix(exam_date.isoformat(), sid)
            plan_rec = st.plan
            if plan_rec is None or plan_rec.get("archive") != self.ctx.url:
                verify = self._verify_local(session_dir, res)
                plan = make_plan(session_dir, manifest, prefix)
                plan_rec = {"step": "plan", "upload_id": uuid.uuid4().hex, "archive": self.ctx.url,
                            "session_id": sid, "prefix": prefix, "t_utc": iso(now), "verify": verify,
                            "objects": [o.to_json() for o in plan]}
                st.append(plan_rec)
            else:
                res.resumed = True
                plan = [PlannedObject(**o) for o in plan_rec["objects"]]
                verify = plan_rec.get("verify") or {}
                if not st.done("receipt"):
                    # Resuming: the files must still be what was planned.
                    for o in plan:
                        p = session_dir / o.file
                        if not p.is_file() or p.stat().st_size != o.size:
                            raise IntegrityError(f"{o.file} changed since the upload started ({p}); "
                                                 "nothing more is uploaded: run examrec verify on it")
            upload_id = plan_rec["upload_id"]
            stored = {r["key"]: r for r in st.done("put")}
            res.objects, res.bytes = len(plan), sum(o.size for o in plan)
            self.progress.start(sid, res.bytes)
            self.progress.advance(sum(o.size for o in plan if o.key in stored))
            for o in plan:
                if o.key in stored:
                    continue
                rec = self._put(session_dir / o.file, o, retain_until)
                st.append({"step": "put", "upload_id": upload_id, **rec})
                stored[o.key] = rec
                self.progress.advance(o.size)
                if self.after_put:
                    self.after_put(o.key)
            if not st.done("receipt"):
                receipt = self._receipt(manifest, plan, stored, prefix, exam_date, tz, months, expires, delete_by,
                                        verify, upload_id)
                body = json.dumps(receipt, ensure_ascii=False, indent=1).encode("utf-8")
                rkey = receipt_key(prefix)
                rsha = _sha(body)
                try:
                    self.backend.put_object(rkey, body, sha256=rsha, size=len(body), retain_until=retain_until)
                except AlreadyExists:
                    rsha = self._existing_receipt(rkey, upload_id, rsha)
                st.append({"step": "receipt", "upload_id": upload_id, "key": rkey, "sha256": rsha})
            rdone = st.done("receipt")[-1]
            if not st.done("journaled"):
                entry_no = self._journal_once(upload_id, sid, exam_date, prefix, rdone, plan, manifest,
                                              verify, expires, resumed=res.resumed)
                st.append({"step": "journaled", "upload_id": upload_id, "entry": entry_no})
            res.journal_entry = st.done("journaled")[-1]["entry"] or None
            res.status = "uploaded"
            res.message = (f"{len(plan)} objects, {res.bytes} bytes into {self.ctx.url} "
                           f"({prefix}), retained until {expires.date() - timedelta(days=1)}")
            if res.journal_entry is None:
                res.message += "; its receipt waits in this recorder's inbox for the office's next command"
            self._delete_local(session_dir, st, res)
            return res
        finally:
            st.close()

    def _put(self, path: Path, o: PlannedObject, retain_until: datetime | None) -> dict[str, Any]:
        try:
            r = self.backend.put_object(o.key, path, sha256=o.sha256, size=o.size, retain_until=retain_until,
                                        body_filter=self.body_filter)
            return {"key": o.key, "version_id": r.version_id, "sha256": o.sha256, "verified_by": r.verified_by}
        except AlreadyExists:
            # Stored by an attempt that was cut off before it could note it. Check it is ours.
            if self.backend.can_read():
                s = self.backend.stat(o.key, with_checksum=True)
                if s is None:
                    raise IntegrityError(f"{o.key}: the storage says it exists but it cannot be read") from None
                if s.sha256 is not None and s.sha256 != o.sha256:
                    raise IntegrityError(f"{o.key} is already in the archive with different bytes "
                                         f"(SHA-256 {s.sha256[:16]}..., expected {o.sha256[:16]}...); "
                                         "the local copy is kept: tell the responsible person") from None
                if s.sha256 is None:
                    got = self._read_back_sha(o.key)
                    if got != o.sha256:
                        raise IntegrityError(f"{o.key} is already in the archive with different bytes") from None
                return {"key": o.key, "version_id": s.version_id, "sha256": o.sha256, "verified_by": "read-back",
                        "existed": True}
            # A recorder may not read: the storage only ever accepted this key with the SHA-256
            # our write carried, so what is there is what was sent. `archive check` re-reads it.
            return {"key": o.key, "version_id": None, "sha256": o.sha256, "verified_by": "checksum", "existed": True}

    def _read_back_sha(self, key: str) -> str:
        import tempfile
        with tempfile.NamedTemporaryFile(prefix="examrec-readback-") as tmp:
            return self.backend.download(key, Path(tmp.name))

    def _existing_receipt(self, rkey: str, upload_id: str, rsha: str) -> str:
        if not self.backend.can_read():
            return rsha
        existing = json.loads(self.backend.read_bytes(rkey))
        if existing.get("upload_id") != upload_id:
            raise IntegrityError(f"{rkey} already exists from another upload ({existing.get('upload_id')}); "
                                 "the session is already archived: run `examrec archive check` on it")
        return _sha(self.backend.read_bytes(rkey))

    def _receipt(self, manifest: dict[str, Any], plan: list[PlannedObject], stored: dict[str, dict[str, Any]],
                 prefix: str, exam_date: date, tz: timezone, months: int, expires: datetime, delete_by: datetime,
                 verify: dict[str, Any], upload_id: str) -> dict[str, Any]:
        msha = next((o.sha256 for o in plan if o.file == MANIFEST_NAME), None)
        return {
            "format": RECEIPT_FORMAT, "session_id": manifest.get("session_id"), "prefix": prefix,
            "exam_date": exam_date.isoformat(), "utc_offset": (manifest.get("clock") or {}).get("utc_offset"),
            "started_at": manifest.get("started_at"), "ended_at": manifest.get("ended_at"),
            "state": manifest.get("state"), "profile": manifest.get("profile"),
            "profile_kind": manifest.get("profile_kind"), "details": manifest.get("details") or {},
            "streams": [s.get("name") for s in manifest.get("streams") or []],
            "retention_months": months, "expires_at": expires.isoformat(), "delete_by": delete_by.isoformat(),
            "manifest_sha256": msha, "signature": (manifest.get("signature") or {}).get("public_key"),
            "verify": verify,
            "objects": [{**o.to_json(), "version_id": stored.get(o.key, {}).get("version_id"),
                         "verified_by": stored.get(o.key, {}).get("verified_by")} for o in plan],
            "uploaded_at": iso(self.now()), "uploaded_by": self.ctx.user.name, "device": self.device,
            "upload_id": upload_id,
        }

    def _journal_once(self, upload_id: str, sid: str, exam_date: date, prefix: str, receipt_rec: dict[str, Any],
                      plan: list[PlannedObject], manifest: dict[str, Any], verify: dict[str, Any],
                      expires: datetime, resumed: bool) -> int:
        if resumed and not self.ctx.journals.writes_to_inbox:
            # The entry may have been written just before a power cut: find it, never write twice.
            # (A recorder's inbox entry is named by the upload id: writing it again is a no-op.)
            for e in self.ctx.journals.read("uploads").entries:
                if e.record.get("upload_id") == upload_id and e.type == "upload":
                    return e.number
        entry = self.ctx.journals.append("uploads", "upload", {
            "session_id": sid, "exam_date": exam_date.isoformat(), "prefix": prefix, "receipt": receipt_rec["key"],
            "receipt_sha256": receipt_rec["sha256"], "objects": len(plan), "bytes": sum(o.size for o in plan),
            "manifest_sha256": next((o.sha256 for o in plan if o.file == MANIFEST_NAME), None),
            "state": manifest.get("state"), "interrupted": bool(verify.get("interrupted")),
            "device": self.device, "upload_id": upload_id, "expires_at": expires.isoformat()},
            pending_name=f"{upload_id}-upload")
        return entry.number

    def _delete_local(self, session_dir: Path, st: UploadState, res: UploadResult) -> None:
        upload_id = st.plan["upload_id"] if st.plan else ""
        if session_dir.exists():
            _rmtree(session_dir)
        st.append({"step": "local-deleted", "upload_id": upload_id, "t_utc": iso(self.now())})
        self.ctx.journals.append("uploads", "device-deleted", {
            "session_id": res.session_id, "upload_entry": res.journal_entry or None, "upload_id": upload_id,
            "device": self.device, "path": str(session_dir)}, pending_name=f"{upload_id}-device-deleted")
        res.local_deleted = True
        st.remove()

    def finish_leftovers(self, out_dir: Path) -> list[UploadResult]:
        """Uploads journaled whose local deletion was cut off by a power loss: finish them."""
        results: list[UploadResult] = []
        sdir = Path(out_dir) / STATE_DIR
        for path in sorted(sdir.glob("*.jsonl")) if sdir.is_dir() else []:
            sid = path.stem
            st = UploadState(Path(out_dir), sid)
            plan = st.plan
            if not plan or plan.get("archive") != self.ctx.url or not st.done("journaled"):
                st.close()
                continue
            exam_day = str(plan.get("prefix", "")).split("/")[1:2] or ["?"]
            local = Path(out_dir) / exam_day[0] / sid
            res = UploadResult(sid, str(local), "uploaded", journal_entry=st.done("journaled")[-1]["entry"] or None)
            try:
                self._delete_local(local, st, res)
                res.message = "upload had been journaled; local copy deleted now"
                results.append(res)
            finally:
                st.close()
        return results


def _session_upload_lock(out_dir: Path, session_id: str) -> int | None:
    """An exclusive lock per session, so a watching uploader and a manual `examrec upload` never
    work on one session at once (the kernel releases it when the process dies)."""
    d = Path(out_dir) / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f".{session_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rmtree(path: Path) -> None:
    """Remove a session folder and make the removal durable."""
    def onerror(func: Callable[..., Any], p: str, exc: Any) -> None:
        os.chmod(os.path.dirname(p), 0o755)
        func(p)
    shutil.rmtree(path, onerror=onerror)
    try:
        durable.fsync_dir(path.parent)
        if not any(path.parent.iterdir()):
            path.parent.rmdir()      # the empty date folder
    except OSError:
        pass


def upload_all(uploader: Uploader, sessions: list[Path]) -> list[UploadResult]:
    """Upload each session; Unreachable and Refused (the archive as a whole) stop the run."""
    results: list[UploadResult] = []
    outs = {out_root_of(p) for p in sessions}
    for out in sorted(outs):
        results += uploader.finish_leftovers(out)
    finished = {r.session_id for r in results}
    for p in sessions:
        if p.name in finished and not p.exists():
            continue
        r = uploader.upload(p)
        log.info("upload %s: %s %s", r.session_id, r.status, r.message)
        results.append(r)
    return results


# --- deadlines ------------------------------------------------------------------------------------------

@dataclass
class OverdueSession:
    session_id: str
    path: str
    exam_date: date
    due: datetime                   # end of the next working day after the exam (local)
    overdue_by: timedelta

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session_id, "path": self.path, "exam_date": self.exam_date.isoformat(),
                "due": self.due.isoformat(), "overdue_hours": round(self.overdue_by.total_seconds() / 3600, 1)}


def upload_due(exam_date: date, tz: timezone, holidays: Days = ()) -> datetime:
    """When a session must be in the archive: the end of the next working day (UA IV.1)."""
    return end_of_day(next_working_day(exam_date, holidays), tz)


def overdue_sessions(out_dir: str | os.PathLike[str], now: datetime,
                     holidays: Days = ()) -> list[OverdueSession]:
    """Sessions still on this recorder (not uploaded, or uploaded only in part) after the end of
    the next working day following their exam. ``now`` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    hol = as_calendar(holidays)
    out: list[OverdueSession] = []
    for sdir in sessions_under(Path(out_dir)):
        try:
            manifest = read_manifest(sdir)
        except (ManifestError, OSError):
            continue
        sid = str(manifest.get("session_id") or sdir.name)
        st = UploadState(out_root_of(sdir), sid)
        uploaded = bool(st.done("journaled"))
        st.close()
        if uploaded:
            continue
        try:
            exam, tz = exam_date_of(manifest)
        except UsageError:
            continue
        due = upload_due(exam, tz, hol)
        if now > due:
            out.append(OverdueSession(sid, str(sdir), exam, due, now - due))
    return sorted(out, key=lambda o: o.due)


# --- charging and watching ------------------------------------------------------------------------------

def on_charger(root: str | os.PathLike[str] | None = None) -> bool | None:
    """True when a mains/USB supply reports ``online`` = 1, False when supplies exist and none is
    online, None when the machine reports no supply at all (a mains-only PC)."""
    base = Path(root or os.environ.get(ENV_POWER_SUPPLY_ROOT) or DEFAULT_POWER_SUPPLY_ROOT)
    seen = False
    for online in sorted(base.glob("*/online")):
        seen = True
        try:
            if online.read_text().strip() == "1":
                return True
        except OSError:
            continue
    return False if seen else None


@dataclass
class WatchRound:
    at: datetime
    action: str                     # uploaded | nothing | not-charging | unreachable | error
    results: list[UploadResult] = field(default_factory=list)
    message: str = ""


def _uploadable(session_dir: Path) -> bool:
    try:
        return read_manifest(session_dir).get("state") in UPLOADABLE_STATES
    except (ManifestError, OSError):
        return False


def watch(open_uploader: Callable[[], tuple[Uploader, Callable[[], None]]], out_dir: Path, *,
          interval_s: float = 60.0, on_charge_only: bool = False, power_root: Path | None = None,
          rounds: int | None = None, sleep: Callable[[float], None] = time.sleep,
          report: Callable[[WatchRound], None] | None = None) -> list[WatchRound]:
    """Upload whatever is pending, again and again, while the archive is reachable (and, when
    ``on_charge_only``, while on the charger). The archive is only opened (and the access journaled)
    when there is something to upload. ``rounds`` limits the loop (tests); None runs until killed."""
    done: list[WatchRound] = []
    n = 0
    while rounds is None or n < rounds:
        n += 1
        now = utc_now()
        pending = [p for p in sessions_under(out_dir) if _uploadable(p)]
        state_dir = Path(out_dir) / STATE_DIR
        leftovers = list(state_dir.glob("*.jsonl")) if state_dir.is_dir() else []
        if on_charge_only and on_charger(power_root) is False:
            r = WatchRound(now, "not-charging", message=f"{len(pending)} session(s) wait for the charger")
        elif not pending and not leftovers:
            r = WatchRound(now, "nothing")
        else:
            try:
                uploader, close = open_uploader()
                try:
                    r = WatchRound(now, "uploaded", upload_all(uploader, pending))
                finally:
                    close()
            except Unreachable as exc:
                r = WatchRound(now, "unreachable", message=str(exc))
            except ArchiveError as exc:
                r = WatchRound(now, "error", message=str(exc))
        done.append(r)
        if report:
            report(r)
        if rounds is None or n < rounds:
            sleep(interval_s)
    return done


__all__ = ["Uploader", "UploadResult", "UploadState", "Progress", "upload_all", "overdue_sessions", "upload_due",
           "OverdueSession", "on_charger", "watch", "make_plan", "resolve_sessions", "exam_date_of"]
