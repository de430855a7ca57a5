"""Copies for the candidate, a representative, a court or an authority (UA IV.3-IV.7; KZ 14).

A copy is the stored bytes, unchanged (IV.5), in ``DEST/<session id>/`` exactly as the recorder
wrote them, plus a verification kit beside it: ``SHA256SUMS`` (check with ``sha256sum -c``), the
device's public key (the session's manifest inside the folder is signed with it), and a README
that says how to check the copy with ``sha256sum -c`` and with ``examrec verify``.

Rules enforced here:

* the application must come within 30 calendar days of the exam (IV.3); later only on a motivated
  request of a court or an authority, given as ``--authority-request REF`` (IV.4);
* a representative must show a document of authority (``--authority``), everybody an identity
  document (``--id-document``) (IV.3);
* the deadline is three working days from the application (IV.3); the command prints it and says
  when the copy is late;
* the copy is entered in the journal of copies (annex 2) with the recipient's signature line (IV.6);
* the personal-data notice (IV.7) is added when the recording shows other people.

**Which sessions show other people** (our rule, IV.7 leaves it to the centre): every session with
more than one video stream; every session with a stream whose name says it films people (cabin,
room, examiner, candidate, interior, hall, body, chest); every body-worn session (it films the
inspected people by design). Only a session with a single stream that films no people (a road,
screen or controls camera) comes without the notice. When unsure, the notice is given: it costs a
page, its absence can cost a complaint.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from core import durable
from sessions.archive.catalog import SessionRow
from sessions.archive.errors import IntegrityError, MediumFull, Refused, UsageError
from sessions.archive.office import RecordsOffice
from sessions.archive.workdays import add_working_days
from sessions.evidence.layout import NoManifest, read_manifest

log = logging.getLogger(__name__)

APPLICATION_DAYS = 30
COPY_WORKING_DAYS = 3
PEOPLE_WORDS = ("cabin", "room", "examiner", "candidate", "interior", "hall", "body", "chest", "face", "salon")

NOTICE_TEXT = """\
ПОВІДОМЛЕННЯ ПРО ЗАХИСТ ПЕРСОНАЛЬНИХ ДАНИХ / PERSONAL DATA NOTICE

Ця копія фотографічного зображення, відео-, аудіозапису містить відомості щодо інших осіб
(екзаменатора, інших учасників). Використання і поширення інформації, отриманої за допомогою
технічних засобів контролю під час складання іспиту, здійснюється для захисту прав особи, що
складала іспит, із дотриманням вимог законодавства України про захист інформації та про захист
персональних даних (пункт 7 розділу IV Інструкції, затвердженої наказом МВС від 22.05.2020 № 408).

This copy shows other people (the examiner, other participants). The information may be used and
shared only to protect the rights of the person who took the exam, in compliance with the law on
the protection of information and of personal data (order 408, section IV, item 7).

Session: {session_id}
Issued to: {recipient}
Issued on: {issued}
"""

README_TEXT = """\
COPY OF A STORED RECORDING / КОПІЯ ЗБЕРЕЖЕНОГО ЗАПИСУ
====================================================

Session            {session_id}
Exam date          {exam_date}
Candidate          {candidate}
Centre             {centre}
Applicant          {applicant}
Representative     {representative}
Application dated  {requested}
Copy due by        {deadline} (3 working days, order 408 IV.3)
Issued             {issued} by {issued_by}
Journal of copies  entry {entry} ({archive})
Motivated request  {authority_request}

The folder {session_id}/ holds the recording exactly as it is stored in the archive: the same
bytes, unchanged (order 408 IV.5). Nothing in it was converted or re-encoded.

How to check that nothing was changed
-------------------------------------
1. Every file against its SHA-256 (any Linux or macOS terminal; on Windows use Git Bash or WSL):

       cd "{dest_name}"
       sha256sum -c SHA256SUMS

   Every line must end in "OK".

2. The whole session with the recorder's own check (examrec, free software):

       examrec verify "{session_id}" --public-key public-key.pem

   It checks the signature of {session_id}/manifest.json and of the checkpoints signed while
   recording, every segment's SHA-256, and the hash chains of the event log and the fragment
   records.

   DO NOT TRUST public-key.pem BECAUSE IT IS IN THIS KIT: whoever could change the recording
   could replace it (and SHA256SUMS) too. Its fingerprint must be {fingerprint}, the
   fingerprint printed on entry {entry} of the journal of copies you signed for, and the one the
   centre registered for the recorder (it confirms it on request). Compare them before you
   rely on the check above. "ok" means complete and untouched. A session cut off by
   a power loss is reported as interrupted, with how far every file is proven.

The files play in ordinary players (VLC, mpv, a web browser): <stream>/NNNN.mp4, one folder per
camera; route.gpx opens in any map tool; events.jsonl lists the exam's events with their times.

{notice}
Received by (name, signature, date): ________________________________________________
"""


COUNTERSIGN_TEXT = """
The archive's countersignature
------------------------------
COUNTERSIGNED.json names this copy (session, journal entry {entry}, the SHA-256 of SHA256SUMS);
COUNTERSIGNED.sig is the records office's Ed25519 signature of its exact bytes; office-key.pem is
the office's public key, fingerprint {office_fingerprint}. That fingerprint must be the one given
in the paperwork of the order (ask the centre); a key that merely ships in this kit proves nothing.

       openssl pkeyutl -verify -pubin -inkey office-key.pem -rawin -in COUNTERSIGNED.json -sigfile COUNTERSIGNED.sig
       sha256sum SHA256SUMS        (must equal "sha256sums" in COUNTERSIGNED.json)
"""


def countersign(dest: Path, key: Any, session_id: str, entry: int) -> str:
    """The office's countersignature of a copy kit: COUNTERSIGNED.json (RFC 8785 bytes, so they
    are exactly what is signed), COUNTERSIGNED.sig (raw Ed25519 signature) and office-key.pem.
    Returns the office key's fingerprint."""
    from sessions.evidence.jcs import canonicalize
    from sessions.evidence.signing import fingerprint, public_key_hex, public_key_pem
    body = canonicalize({"copy_of": session_id, "journal": "copies", "entry": entry,
                         "sha256sums": _sha(dest / "SHA256SUMS"), "office_key": public_key_hex(key)})
    (dest / "COUNTERSIGNED.json").write_bytes(body)
    (dest / "COUNTERSIGNED.sig").write_bytes(key.sign(body))
    (dest / "office-key.pem").write_text(public_key_pem(key), encoding="ascii")
    return fingerprint(key)


@dataclass
class CopyRequest:
    session: str
    dest: Path
    applicant: str
    id_document: str
    requested: date
    representative: str | None = None
    authority: str | None = None
    authority_request: str | None = None
    medium: str | None = None


@dataclass
class CopyResult:
    session_id: str
    dest: str
    files: int
    bytes: int
    deadline: date
    late: bool
    notice: bool
    journal_entry: int
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["deadline"] = self.deadline.isoformat()
        return d


def needs_personal_data_notice(manifest: dict[str, Any], profile_kind: str | None) -> bool:
    """The rule in the module docstring."""
    if (profile_kind or manifest.get("profile_kind")) == "body-worn":
        return True
    names = [str(s.get("name", "")) for s in manifest.get("streams") or []]
    if len(names) != 1:
        return True
    return any(word in names[0].lower() for word in PEOPLE_WORDS)


def check_request(req: CopyRequest, exam_date: date, today: date) -> None:
    """The legal checks of IV.3/IV.4, before any byte is read."""
    if not req.applicant.strip():
        raise UsageError("--applicant needs the full name of the person who took the exam (or the authority)")
    if not req.id_document.strip():
        raise UsageError("--id-document needs the identity document shown (type, number, date)")
    if req.representative and not (req.authority or "").strip():
        raise UsageError("a representative needs --authority: the document that gives them the right to act "
                         "(power of attorney: number, date, issued by)")
    if req.requested > today:
        raise UsageError(f"--requested {req.requested} is in the future: give the date the application was received")
    if req.requested < exam_date:
        raise UsageError(f"--requested {req.requested} is before the exam ({exam_date})")
    days = (req.requested - exam_date).days
    if days > APPLICATION_DAYS and not (req.authority_request or "").strip():
        raise Refused(f"the application came {days} days after the exam on {exam_date}; a candidate or representative "
                      f"may ask within {APPLICATION_DAYS} calendar days (order 408 IV.3). A court, investigator or "
                      "authority can still have a copy on a motivated request: give --authority-request REF (IV.4)")


def issue_copy(office: RecordsOffice, req: CopyRequest, today: date | None = None,
               progress: Callable[[int, int, int], None] | None = None,
               add_page: Callable[[Path, Path], object] | None = None) -> CopyResult:
    """Write the copy and its kit to ``req.dest`` and journal it. ``progress(done, of, bytes)``
    is called after each object. ``add_page(dest, session folder)`` adds the review page to the
    kit (the web role provides it: sessions/web/review_kit.py; the archive cannot import it)."""
    now = office.now()
    today = today or now.astimezone().date()
    row: SessionRow = office.session(req.session)
    exam_date = date.fromisoformat(row.exam_date)
    check_request(req, exam_date, today)
    holidays = office.ctx.settings.calendar()
    deadline = add_working_days(req.requested, COPY_WORKING_DAYS, holidays)
    receipt = office.receipt(row)
    dest = Path(req.dest)
    if dest.is_symlink():
        raise Refused(f"{dest}: a symbolic link; give the real folder on the applicant's medium")
    made_dest = _check_destination(dest, sum(int(o.get("size") or 0) for o in receipt.get("objects", [])))
    root = dest / row.session_id
    try:
        root.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        _undo(dest, root, made_dest)
        raise _medium_error(dest, exc) from None
    total = 0
    sums: list[str] = []
    try:
        for o in sorted(receipt.get("objects", []), key=lambda o: o["file"]):
            rel = PurePosixPath(str(o["file"]))
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                # A receipt is written by whoever uploaded: its names must stay inside the copy.
                raise IntegrityError(f"{o['key']}: the receipt names the file {o['file']!r}, outside the session "
                                     "folder; no copy is issued")
            target = root.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            got = office.backend.download(o["key"], target)
            if got != o["sha256"]:
                raise IntegrityError(f"{o['key']}: the stored bytes hash to {got[:16]}..., the receipt says "
                                     f"{o['sha256'][:16]}...; no copy is issued: run `examrec archive check {row.session_id}`")
            total += target.stat().st_size
            sums.append(f"{got}  {row.session_id}/{o['file']}")
            if progress is not None:
                progress(len(sums), len(receipt.get("objects", [])), total)
    except OSError as exc:
        _undo(dest, root, made_dest)
        raise _medium_error(dest, exc) from None
    except BaseException:
        _undo(dest, root, made_dest)
        raise
    try:
        return _finish_copy(office, req, row, receipt, dest, root, sums, total, deadline, today, now, add_page)
    except OSError as exc:  # the kit did not fit (or the medium went away): no half copy is left
        _undo(dest, root, made_dest)
        raise _medium_error(dest, exc) from None


def _check_destination(dest: Path, need_bytes: int) -> bool:
    """Refuse a destination that is no empty folder, is read-only, or has no room; True when
    the folder does not exist yet (it is made, and removed again if the copy fails)."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file: give an empty folder (or a new one) on the applicant's medium")
    made = not dest.exists()
    probe = dest if not made else next((p for p in dest.parents if p.exists()), Path("/"))
    try:
        if not made and any(dest.iterdir()):
            raise UsageError(f"{dest} is not empty: give an empty folder (or a new one) on the applicant's medium")
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        raise _medium_error(dest, exc) from None
    if not os.access(probe, os.W_OK) or _read_only(probe):
        raise Refused(f"{dest}: the medium is read-only (or not writable for this user); use a writable one")
    if free < need_bytes + 1024 * 1024:  # the kit (sums, README, key, notice) is well under 1 MiB
        raise MediumFull(f"{dest}: the medium is too full for this copy ({free} bytes free, {need_bytes + 1024 * 1024} "
                         f"needed); use a larger medium")
    return made


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _medium_error(dest: Path, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return MediumFull(f"{dest}: the medium is full; the partial copy was removed, use a larger medium")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return Refused(f"{dest}: cannot write there ({exc.strerror}); use a writable medium")
    return UsageError(f"{dest}: cannot write the copy ({exc.strerror or exc})")


def _undo(dest: Path, root: Path, made_dest: bool) -> None:
    """Remove what a failed copy wrote (and the folder itself when we made it)."""
    if made_dest:
        shutil.rmtree(dest, ignore_errors=True)
        return
    shutil.rmtree(root, ignore_errors=True)
    for name in ("public-key.pem", "SHA256SUMS", "PERSONAL-DATA-NOTICE.txt", "README.txt"):
        with contextlib.suppress(OSError):
            (dest / name).unlink()


def _finish_copy(office: RecordsOffice, req: CopyRequest, row: SessionRow, receipt: dict[str, Any], dest: Path,
                 root: Path, sums: list[str], total: int, deadline: date, today: date, now: Any,
                 add_page: Callable[[Path, Path], object] | None) -> CopyResult:
    """The verification kit beside the copied session, and the journal entry."""
    try:
        manifest = read_manifest(root)
    except NoManifest:
        manifest = {}
    warnings: list[str] = []
    fingerprint_text = "(the manifest is not signed: the session was cut off and not repaired)"
    pub_hex = (manifest.get("signature") or {}).get("public_key")
    if pub_hex:
        from sessions.evidence.signing import fingerprint, load_public_key, public_key_pem
        key = load_public_key(pub_hex)
        (dest / "public-key.pem").write_text(public_key_pem(key), encoding="ascii")
        fingerprint_text = fingerprint(key)
    else:
        warnings.append("the manifest carries no signature; the copy can be checked with SHA256SUMS only")
    (dest / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    notice = needs_personal_data_notice(manifest, row.profile_kind)
    recipient = req.representative or req.applicant
    issued = now.astimezone().strftime("%Y-%m-%d %H:%M")
    late = today > deadline
    if late:
        warnings.append(f"issued after the deadline {deadline} (3 working days from {req.requested})")
    entry = office.journals.append("copies", "copy", {
        "session_id": row.session_id, "exam_date": row.exam_date, "candidate": row.candidate,
        "requested": req.requested.isoformat(), "applicant": req.applicant, "representative": req.representative,
        "authority": req.authority, "id_document": req.id_document, "authority_request": req.authority_request,
        "deadline": deadline.isoformat(), "late": late, "medium": req.medium or str(dest),
        "files": len(sums), "bytes": total, "personal_data_notice": notice,
        # Printed on the journal entry: the recipient compares it, not the key inside the kit.
        "signing_key_fingerprint": fingerprint_text if pub_hex else None,
        "sha256sums": _sha(dest / "SHA256SUMS")})
    if notice:
        (dest / "PERSONAL-DATA-NOTICE.txt").write_text(
            NOTICE_TEXT.format(session_id=row.session_id, recipient=recipient, issued=issued), encoding="utf-8")
    readme = README_TEXT.format(
        session_id=row.session_id, exam_date=row.exam_date, candidate=row.candidate or "", centre=row.centre or "",
        applicant=req.applicant, representative=(f"{req.representative} (authority: {req.authority})"
                                                  if req.representative else "-"),
        requested=req.requested.isoformat(), deadline=deadline.isoformat(), issued=issued,
        issued_by=office.ctx.user.name, entry=entry.number, archive=office.ctx.url,
        authority_request=req.authority_request or "-", dest_name=dest.name, fingerprint=fingerprint_text,
        notice=("See PERSONAL-DATA-NOTICE.txt: this recording shows other people.\n" if notice else ""))
    office_fp = countersign(dest, office.journals._signing_key(), row.session_id, entry.number)
    readme += COUNTERSIGN_TEXT.format(office_fingerprint=office_fp, entry=entry.number)
    (dest / "README.txt").write_text(readme, encoding="utf-8")
    if add_page is not None:
        add_page(dest, root)
    durable.fsync_tree(dest)  # a copy on a USB stick must be on the stick when the clerk pulls it out
    return CopyResult(row.session_id, str(dest), len(sums), total, deadline, late, notice, entry.number, warnings)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def parse_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: write the date as YYYY-MM-DD") from None


__all__ = ["CopyRequest", "CopyResult", "issue_copy", "check_request", "needs_personal_data_notice", "parse_date"]
