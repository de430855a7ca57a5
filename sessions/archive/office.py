"""The records office: opening an archive as a user, and the operations on stored sessions.

``open_archive`` reads the archive settings, authenticates the person, re-opens the storage with
the credentials of their role, and returns an ``ArchiveContext`` whose ``close`` writes the access
journal entry (ok, refused or failed) for the command, so every access is logged (ST-3). An
officer's or the head's command first ingests what recorders left in their S3 inboxes into the
journals (sessions/archive/journals.py).

``RecordsOffice`` works on stored sessions: find (via the catalog), hold and release (UA IV.2),
sweep (retention, UA IV.2 / KZ 12), check (ST-11: a tampered, replaced or missing object is named),
reindex (the catalog rebuilt from the manifests).
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from sessions.archive.access import AuthError, User, authenticate, read_password, rehash_if_weak
from sessions.archive.backend import RECEIPT_NAME, SESSIONS_PREFIX, Backend, StoredObject, open_backend, receipt_key
from sessions.archive.catalog import Catalog, Query, SessionRow
from sessions.archive.config import ArchiveURL, ConnectionConfig, Settings, iso, load_connection, resolve_archive, utc_now
from sessions.archive.errors import ArchiveError, IntegrityError, Refused, UsageError
from sessions.archive.journals import JournalView, Journals
from sessions.archive.retention import DELETE, Decision, RetentionFacts, RetentionPolicy
from sessions.archive.workdays import parse_offset
from sessions.evidence.layout import MANIFEST_NAME

log = logging.getLogger(__name__)


# --- opening an archive ----------------------------------------------------------------------------

@dataclass
class ArchiveContext:
    """An archive opened by an authenticated user for one command."""

    backend: Backend
    settings: Settings
    user: User
    journals: Journals
    conn: ConnectionConfig
    command: str
    target: str = ""
    _catalog: Catalog | None = None
    result: str = "ok"
    detail: str = ""
    inbox_problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.backend.url)

    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.backend.catalog_path())
        return self._catalog

    def close(self, error: BaseException | None = None) -> None:
        """Journal this access (once) and release the catalog."""
        if error is not None:
            self.result = "refused" if isinstance(error, Refused) else "failed"
            self.detail = str(error)[:300]
        try:
            self.journals.append("access", "access", {"command": self.command, "target": self.target,
                                                      "result": self.result, "detail": self.detail})
        except ArchiveError as exc:
            log.warning("could not write the access journal: %s", exc)
            if error is None:
                raise
        finally:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None

    def __enter__(self) -> "ArchiveContext":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc if isinstance(exc, Exception) else None)


def open_archive(url_text: str | None, *, user_name: str, command: str, action: str | None,
                 conn_path: str | None = None, password: str | None = None, profile_archive: str | None = None,
                 environ: Mapping[str, str] | None = None) -> ArchiveContext:
    """Authenticate ``user_name`` against the archive and check they may do ``action``.

    A wrong password or a forbidden action is journaled as refused before the error is raised.
    """
    conn = load_connection(conn_path, environ)
    url = resolve_archive(url_text, conn, profile_archive, environ)
    if recorder_by_credentials(url, conn):
        return _open_as_recorder(url, conn, user_name, command, action)
    boot = open_backend(url, conn, role=None)
    settings = Settings.from_json(boot.read_settings(), str(url))
    pw = password if password is not None else read_password(user_name, environ=environ)
    try:
        user = authenticate(settings, user_name, pw)
    except AuthError as exc:
        Journals(boot, settings, None).append("access", "access", {"command": command, "target": "",
                                                                  "result": "denied", "detail": str(exc)},
                                              user_name=user_name)
        raise
    backend = open_backend(url, conn, role=user.role)
    if rehash_if_weak(settings, user_name, pw):
        try:
            backend.write_settings(settings.to_json())
        except ArchiveError as exc:
            # A role the storage does not let write the settings (a recorder on S3) keeps the old
            # hash until an officer sets a new password; the login itself is not refused.
            log.warning("could not store the re-hashed password of %s: %s", user_name, exc)
    ctx = _context(backend, settings, user, conn, command, action)
    ingest_inbox(ctx)
    return ctx


def _context(backend: Any, settings: Settings, user: User, conn: ConnectionConfig, command: str,
             action: str | None) -> ArchiveContext:
    """The context of one command, refused (and the refusal journaled) when ``user`` may not
    do ``action``."""
    ctx = ArchiveContext(backend=backend, settings=settings, user=user,
                         journals=Journals(backend, settings, user), conn=conn, command=command)
    if action is not None:
        try:
            user.require(action)
        except Refused as exc:
            ctx.close(exc)
            raise
    return ctx


def recorder_by_credentials(url: ArchiveURL, conn: ConnectionConfig) -> bool:
    """True on a recorder: an S3 archive and a connection file that holds only the recorder
    role's credentials. The storage itself then says who may do what; the recorder reads nothing,
    not even the settings with the users' password hashes (its credentials may not)."""
    return url.scheme == "s3" and set(conn.credentials) == {"recorder"}


def _open_as_recorder(url: ArchiveURL, conn: ConnectionConfig, user_name: str, command: str,
                      action: str | None) -> ArchiveContext:
    backend = open_backend(url, conn, role="recorder")
    user = User(name=user_name, role="recorder")
    # The settings stay unread: a recorder needs none of them to upload, and the office checks the
    # account named here when it ingests the recorder's entries.
    settings = Settings()
    return _context(backend, settings, user, conn, command, action)


def ingest_inbox(ctx: ArchiveContext) -> list[str]:
    """An officer's or the head's command first appends what recorders left in their inboxes (S3)
    to the journals, signed by the office; returns (and logs) why any object was not ingested. A failure
    here never stops the officer's command: the entries wait for the next one."""
    try:
        n, problems = ctx.journals.ingest_inbox()
    except ArchiveError as exc:
        log.warning("the recorders' inbox could not be ingested now (it waits for the next command): %s", exc)
        return [f"inbox: not ingested now: {exc}"]
    if n:
        log.info("ingested %d entr%s from the recorders' inbox", n, "y" if n == 1 else "ies")
    for p in problems:
        log.warning("inbox: %s", p)
    ctx.inbox_problems = problems
    return problems


# --- helpers ----------------------------------------------------------------------------------------

def read_json_object(backend: Backend, key: str) -> dict[str, Any]:
    try:
        data = json.loads(backend.read_bytes(key))
    except ValueError as exc:
        raise IntegrityError(f"{key}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{key}: not a JSON object")
    return data


def split_prefix(key: str) -> str | None:
    """``sessions/<date>/<id>/`` of a session object key."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] + "/" != SESSIONS_PREFIX:
        return None
    return "/".join(parts[:3]) + "/"


def open_holds(view: JournalView) -> dict[str, list[str]]:
    """Open complaints per session, replaying the holds journal (corrections applied)."""
    out: dict[str, list[str]] = {}
    for e in view.facts():
        rec = e.effective
        sid = rec.get("session_id")
        if not sid:
            continue
        cur = out.setdefault(sid, [])
        if e.type == "hold" and rec.get("complaint") and rec["complaint"] not in cur:
            cur.append(rec["complaint"])
        elif e.type == "release" and rec.get("complaint") in cur:
            cur.remove(rec["complaint"])
    return {k: v for k, v in out.items() if v}


@dataclass
class SweepItem:
    session_id: str
    exam_date: str
    action: str                 # deleted | kept | would-delete | refused | incomplete
    reason: str
    objects: int = 0
    bytes: int = 0
    late: bool = False
    journal_entry: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CheckResult:
    session_id: str
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    verified: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session_id, "ok": self.ok, "objects": self.objects,
                "verified": self.verified, "problems": self.problems}


class RecordsOffice:
    """Operations on the stored sessions of one archive, as one user."""

    def __init__(self, ctx: ArchiveContext, policy: RetentionPolicy | None = None,
                 now: Callable[[], datetime] = utc_now):
        self.ctx = ctx
        self.backend = ctx.backend
        self.journals = ctx.journals
        self.policy = policy or RetentionPolicy()
        self.now = now

    @property
    def catalog(self) -> Catalog:
        return self.ctx.catalog()

    # --- catalog ---------------------------------------------------------------------------------

    def sync(self) -> list[str]:
        """Bring the catalog up to date from the journals; returns warnings."""
        cat = self.catalog
        warnings: list[str] = []
        held_sessions: set[str] = set()
        for name in ("uploads", "holds", "deletions"):
            after, prev = cat.sync_state(name)
            entries, problems = self.journals.read_after(name, after, prev)
            warnings += problems
            for e in entries:
                rec = e.record
                sid = rec.get("session_id")
                if name == "uploads" and e.type == "upload" and rec.get("receipt"):
                    try:
                        receipt = read_json_object(self.backend, rec["receipt"])
                    except UsageError:
                        continue   # deleted since: the deletions journal will say so
                    cat.upsert_receipt(receipt)
                elif name == "holds" and sid:
                    held_sessions.add(sid)
                elif name == "deletions" and e.type == "deletion" and sid:
                    cat.mark_deleted(sid, rec.get("t_utc", ""))
            if entries:
                cat.set_sync_state(name, entries[-1].number, entries[-1].hash)
        if held_sessions:
            holds = open_holds(self.journals.read("holds"))
            for sid in held_sessions:
                cat.set_holds(sid, holds.get(sid, []))
        if warnings:
            warnings.append("the catalog may be stale: run `examrec archive reindex` and `archive journal list` "
                            "to see what changed")
        return warnings

    def reindex(self) -> dict[str, Any]:
        """Rebuild the catalog from the receipts and manifests stored in the archive."""
        cat = self.catalog
        cat.clear()
        groups: dict[str, list[StoredObject]] = {}
        for obj in self.backend.list_objects(SESSIONS_PREFIX):
            prefix = split_prefix(obj.key)
            if prefix:
                groups.setdefault(prefix, []).append(obj)
        holds_view = self.journals.read("holds")
        holds = open_holds(holds_view)
        stored = incomplete = 0
        problems: list[str] = []
        for prefix, objs in sorted(groups.items()):
            sid = prefix.rstrip("/").rsplit("/", 1)[1]
            keys = {o.key for o in objs if o.version_id is not None or self.backend.kind == "file"}
            if prefix + RECEIPT_NAME in keys:
                receipt = read_json_object(self.backend, prefix + RECEIPT_NAME)
                manifest = None
                if prefix + MANIFEST_NAME in keys:
                    try:
                        manifest = read_json_object(self.backend, prefix + MANIFEST_NAME)
                    except IntegrityError as exc:
                        problems.append(str(exc))
                cat.upsert_receipt(receipt, manifest, holds=holds.get(sid, []))
                stored += 1
            else:
                cat.upsert_incomplete(sid, prefix, prefix.split("/")[1], len(objs), sum(o.size for o in objs))
                incomplete += 1
        deleted = 0
        for e in self.journals.read("deletions").facts():
            sid = e.effective.get("session_id")
            if e.type == "deletion" and sid and cat.get(sid) is None:
                cat.upsert_incomplete(sid, e.effective.get("prefix", ""), e.effective.get("exam_date"), 0, 0)
                cat.mark_deleted(sid, e.effective.get("t_utc", ""))
                deleted += 1
        for name in ("uploads", "holds", "deletions"):
            view = holds_view if name == "holds" else self.journals.read(name)
            n, h = view.last
            cat.set_sync_state(name, n, h)
            problems += view.problems
        return {"stored": stored, "incomplete": incomplete, "deleted": deleted, "problems": problems}

    def find(self, q: Query) -> list[SessionRow]:
        self.sync()
        return self.catalog.find(q)

    def session(self, ident: str, statuses: tuple[str, ...] = ("stored",)) -> SessionRow:
        """One stored session by id or unambiguous id prefix; a usage error says what matched."""
        self.sync()
        rows = [r for r in self.catalog.resolve(ident) if r.status in statuses]
        if not rows:
            raise UsageError(f"no stored session {ident!r} in archive {self.ctx.url} "
                             "(find it with: examrec archive find --name ...)")
        if len(rows) > 1:
            raise UsageError(f"{ident!r} matches {len(rows)} sessions ({', '.join(r.session_id for r in rows[:5])}...); "
                             "give more of the id")
        self.ctx.target = rows[0].session_id
        return rows[0]

    def receipt(self, row: SessionRow) -> dict[str, Any]:
        return read_json_object(self.backend, receipt_key(row.prefix))

    # --- holds -----------------------------------------------------------------------------------

    def _session_keys(self, row: SessionRow) -> list[str]:
        return [o.key for o in self.backend.list_objects(row.prefix) if o.version_id or self.backend.kind == "file"]

    def hold(self, ident: str, complaint: str) -> dict[str, Any]:
        """Block deletion of a session while ``complaint`` is open (UA IV.2)."""
        if not complaint.strip():
            raise UsageError("--complaint needs the complaint's reference (number and date)")
        row = self.session(ident)
        current = open_holds(self.journals.read("holds")).get(row.session_id, [])
        if complaint in current:
            raise Refused(f"session {row.session_id} is already held for complaint {complaint!r}")
        keys = self._session_keys(row)
        # Storage first, journal second: a session is never recorded as held while deletable.
        for key in keys:
            self.backend.set_legal_hold(key, True)
        entry = self.journals.append("holds", "hold", {"session_id": row.session_id, "exam_date": row.exam_date,
                                                       "complaint": complaint, "objects": len(keys)})
        holds = current + [complaint]
        self.catalog.set_holds(row.session_id, holds)
        return {"session": row.session_id, "holds": holds, "objects": len(keys), "journal_entry": entry.number}

    def release(self, ident: str, decision: str, complaint: str | None = None) -> dict[str, Any]:
        """Record the decision on a complaint; lift the legal hold when no complaint stays open."""
        if not decision.strip():
            raise UsageError("--decision needs the decision's reference (number and date)")
        row = self.session(ident)
        current = open_holds(self.journals.read("holds")).get(row.session_id, [])
        if not current:
            raise Refused(f"session {row.session_id} is not held: there is no complaint to decide")
        if complaint is None:
            if len(current) > 1:
                raise UsageError(f"session {row.session_id} is held for {len(current)} complaints "
                                 f"({', '.join(current)}); say which one is decided with --complaint")
            complaint = current[0]
        elif complaint not in current:
            raise Refused(f"session {row.session_id} is not held for complaint {complaint!r}; open: {', '.join(current)}")
        remaining = [c for c in current if c != complaint]
        keys = self._session_keys(row)
        entry = self.journals.append("holds", "release", {"session_id": row.session_id, "exam_date": row.exam_date,
                                                          "complaint": complaint, "decision": decision,
                                                          "still_open": remaining})
        if not remaining:
            for key in keys:
                self.backend.set_legal_hold(key, False)
        self.catalog.set_holds(row.session_id, remaining)
        return {"session": row.session_id, "released": complaint, "holds": remaining,
                "journal_entry": entry.number}

    # --- sweep -----------------------------------------------------------------------------------

    def facts(self, row: SessionRow) -> RetentionFacts:
        return RetentionFacts(session_id=row.session_id, exam_date=date.fromisoformat(row.exam_date),
                              months=int(row.retention_months), tz=parse_offset(row.utc_offset),
                              holds=tuple(row.holds_list))

    def sweep(self, now: datetime | None = None, dry_run: bool = False) -> list[SweepItem]:
        """Delete every stored session whose retention has ended and that is not held."""
        when = now or self.now()
        self.sync()
        items: list[SweepItem] = []
        for row in self.catalog.all(("stored", "incomplete")):
            if row.status == "incomplete":
                items.append(SweepItem(row.session_id, row.exam_date or "", "incomplete",
                                       "upload not finished (no receipt): resume it from the recorder"))
                continue
            d = self.policy.decide(self.facts(row), when)
            if d.action != DELETE:
                items.append(SweepItem(row.session_id, row.exam_date, "kept", d.reason))
                continue
            if dry_run:
                items.append(SweepItem(row.session_id, row.exam_date, "would-delete", d.reason, late=d.late))
                continue
            items.append(self._delete_session(row, d))
        return items

    def _delete_session(self, row: SessionRow, d: Decision) -> SweepItem:
        objs = [o for o in self.backend.list_objects(row.prefix)]
        # Ask the storage before deleting anything, so a session is never left half deleted.
        for o in objs:
            st = self.backend.stat(o.key, with_checksum=False)
            if st is None:
                continue
            if st.legal_hold:
                return SweepItem(row.session_id, row.exam_date, "refused", f"{o.key} is under legal hold in the storage")
            if st.retain_until and st.retain_until > datetime.now(timezone.utc):
                return SweepItem(row.session_id, row.exam_date, "refused",
                                 f"the storage locks {o.key} until {st.retain_until.isoformat()}")
        ordered = sorted(objs, key=lambda o: (o.key.endswith(RECEIPT_NAME), o.key.endswith("/" + MANIFEST_NAME), o.key))
        try:
            for o in ordered:
                self.backend.delete(o.key)
        except Refused as exc:
            return SweepItem(row.session_id, row.exam_date, "refused", str(exc))
        size = sum(o.size for o in objs)
        entry = self.journals.append("deletions", "deletion", {
            "session_id": row.session_id, "exam_date": row.exam_date, "prefix": row.prefix, "centre": row.centre,
            "profile_kind": row.profile_kind, "retention_months": row.retention_months,
            "expires_at": d.expires_at.isoformat(), "delete_by": d.delete_by.isoformat(), "late": d.late,
            "objects": len(objs), "bytes": size, "reason": d.reason})
        self.catalog.mark_deleted(row.session_id, entry.record["t_utc"])
        return SweepItem(row.session_id, row.exam_date, "deleted", d.reason, len(objs), size, d.late, entry.number)

    # --- check -----------------------------------------------------------------------------------

    def check(self, row: SessionRow, deep: bool = False) -> CheckResult:
        """Compare what the storage holds with the session's receipt (and, deep, verify it)."""
        res = CheckResult(row.session_id)
        try:
            receipt = self.receipt(row)
        except (UsageError, IntegrityError) as exc:
            res.problems.append(f"receipt: {exc}")
            return res
        stored = {o.key: o for o in self.backend.list_objects(row.prefix)}
        expected = {o["key"]: o for o in receipt.get("objects", [])}
        res.objects = len(expected)
        holds = row.holds_list
        try:
            expires = datetime.fromisoformat(receipt["expires_at"])
        except (KeyError, ValueError):
            expires = None
        for key in sorted(set(expected) | set(stored)):
            if key.endswith(RECEIPT_NAME):
                continue
            o = stored.get(key)
            if key not in expected:
                res.problems.append(f"{key}: in the storage but not in the receipt (added later)")
                continue
            if o is None or (self.backend.kind == "s3" and o.version_id is None):
                res.problems.append(f"{key}: missing from the storage")
                continue
            if o.later_versions:
                res.problems.append(f"{key}: {o.later_versions} later version(s): an attempt to replace it "
                                    "(the first, locked version is kept and used)")
            if o.delete_markers:
                res.problems.append(f"{key}: {o.delete_markers} delete marker(s): an attempt to hide it")
            st = self.backend.stat(key, with_checksum=True)
            if st is None:
                res.problems.append(f"{key}: missing from the storage")
                continue
            want = expected[key]
            if st.size != want.get("size"):
                res.problems.append(f"{key}: {st.size} bytes, the receipt says {want.get('size')}")
            if st.sha256 is not None and st.sha256 != want.get("sha256"):
                res.problems.append(f"{key}: SHA-256 {st.sha256[:16]}... differs from the receipt's "
                                    f"{str(want.get('sha256'))[:16]}... (changed bytes)")
            if expires and datetime.now(timezone.utc) < expires and (st.retain_until is None or st.retain_until < expires):
                res.problems.append(f"{key}: locked only until {st.retain_until}, retention runs to {expires.isoformat()}")
            if bool(holds) != st.legal_hold:
                res.problems.append(f"{key}: legal hold is {'on' if st.legal_hold else 'off'} in the storage but "
                                    f"{'open complaints: ' + ', '.join(holds) if holds else 'no complaint is open'}")
        res.verified = "checksums"
        if deep and not res.problems:
            res.problems += self.verify_copy(row, receipt)
            res.verified = "checksums and examrec verify"
        return res

    def verify_copy(self, row: SessionRow, receipt: dict[str, Any]) -> list[str]:
        """Download the session to a temporary folder and run the recorder's own verify on it."""
        from sessions.evidence.verify import verify_session
        problems: list[str] = []
        with tempfile.TemporaryDirectory(prefix="examrec-check-") as tmp:
            root = Path(tmp) / row.session_id
            for o in receipt.get("objects", []):
                if ".." in Path(str(o["file"])).parts or Path(str(o["file"])).is_absolute():
                    problems.append(f"{o['key']}: the receipt names {o['file']!r}, outside the session folder")
                    continue
                dest = root / o["file"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                got = self.backend.download(o["key"], dest)
                if got != o["sha256"]:
                    problems.append(f"{o['key']}: read back with SHA-256 {got[:16]}..., receipt says {o['sha256'][:16]}...")
            report = verify_session(root)
            problems += [f"verify: {p}" for p in report.problems if p.kind != "interrupted"]
            # Only a key the office registered for a recorder makes the signature evidence.
            from sessions.evidence import keystore
            why = keystore.untrusted(report.public_key) if report.public_key else None
            if why:
                problems.append(f"verify: {why}")
        return problems


def receipt_summary(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a receipt a person wants to see first."""
    d = receipt.get("details") or {}
    return {"session": receipt.get("session_id"), "exam_date": receipt.get("exam_date"),
            "candidate": d.get("candidate"), "candidate_id": d.get("candidate_id"), "examiner": d.get("examiner"),
            "plate": d.get("plate"), "centre": d.get("centre"), "profile": receipt.get("profile"),
            "retention_months": receipt.get("retention_months"), "expires_at": receipt.get("expires_at"),
            "objects": len(receipt.get("objects") or []), "uploaded_at": receipt.get("uploaded_at"),
            "uploaded_by": receipt.get("uploaded_by")}


def now_iso() -> str:
    return iso(utc_now())
