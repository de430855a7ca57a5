"""The archive's journals (AD-1..3; UA annexes 2 and 3, KZ annex 1): append-only, hash-chained.

Each journal is a sequence of entries in the chained-JSON-lines format of sessions/evidence/chain.py: every
entry carries ``prev_sha256``, the SHA-256 of the previous entry's exact bytes, and its own number
``entry``. Nothing is ever edited: a mistake is fixed by a *correction* entry that names the entry
it corrects, says why, and gives the corrected values (KZ 9: the wrong line is struck through and a
note made, never erased). Printing shows the original struck through with the correction beside it.

Reading a journal checks the chain and reports exactly where it breaks: an edited, removed,
reordered or inserted entry, a gap in the numbering, and (S3) any later version or delete marker
of an entry. The catalog also keeps the last verified (number, hash) of each journal, so a change
to the newest entry, which no later entry chains to, is caught on the next read too.

Journals:
  devices    issue and return of recorders and media (KZ annex 1, UA annex 3)
  uploads    sessions moved into the archive, and their deletion from the recorder (UA annex 3)
  deletions  sessions deleted at the end of retention (UA IV.2, annex 3)
  copies     copies issued (UA annex 2, IV.6)
  holds      complaints blocking deletion and their decisions (UA IV.2)
  access     every command run against the archive (ST-3, KZ 13)

Who writes them. On S3 only the office's credentials may write under ``journals/``. A recorder's
credentials write its sessions and, for its journal entries (its uploads, its deletions of the
local copy, its access), one signed object per fact in its own inbox
(``inbox/<its access key id>/<journal>/<name>.json``, see hw-profiles/seaweedfs-iam.json). The
next command an officer or the head runs ingests them (``Journals.ingest_inbox``): each is checked
(a signature that matches it, a known recorder account, a journal a recorder may write), appended
as an entry signed by the office that carries the recorder's signed record verbatim under
``recorded``, then removed from the inbox (officer). Whether the recorder's key is registered is
judged at every reading, as for any entry: an unregistered one shows FORGED. On a folder archive
there are no per-role credentials to separate, so a recorder appends its entries itself as before.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from sessions.evidence.chain import GENESIS, PREV_KEY, encode_record, line_hash
from sessions.archive.access import User
from sessions.archive.backend import Backend
from sessions.archive.config import Settings, iso, utc_now
from sessions.archive.errors import UsageError

JOURNALS: dict[str, str] = {
    "devices": "issue and return of recorders and media",
    "uploads": "uploads into the archive and deletion from the recorder",
    "deletions": "deletions at the end of retention",
    "copies": "copies issued",
    "holds": "complaints (legal holds) and decisions",
    "access": "access to the archive",
}
CORRECTION = "correction"
# Keys every entry has; a correction may not change them.
BASE_KEYS = ("entry", "type", "t_utc", "user", "role", "host", PREV_KEY, "signer", "signature")
SIGNER_KEY = "signer"
SIGNATURE_KEY = "signature"
# An entry the office ingested from a recorder's inbox: who ingested it, and the recorder's record.
INGESTED_BY_KEY = "ingested_by"
RECORDED_KEY = "recorded"
INBOX_KEY = "inbox_key"
# The journals a recorder may leave entries for (anything else in an inbox is refused).
RECORDER_JOURNALS = ("uploads", "access")
PENDING_JOURNAL_KEY = "journal"


def entry_signed_bytes(record: dict[str, Any]) -> bytes:
    """What an entry's signature covers: RFC 8785 JSON of the entry without ``signature``."""
    from sessions.evidence.jcs import canonicalize
    return canonicalize({k: v for k, v in record.items() if k != SIGNATURE_KEY})


def authenticate_entry(record: dict[str, Any], trusted: dict[str, Any]) -> str | None:
    """None when the entry is signed by a registered key that may sign for its role, else why not.

    A recorder's entries (role ``recorder``) need a key registered for ``recorder``; every other
    role's need one registered for ``office``. An entry of nobody (a refused login) may carry either.
    """
    why = _check_signature(record, trusted, "recorder" if str(record.get("role") or "") == "recorder"
                           and INGESTED_BY_KEY not in record else "office")
    if why or INGESTED_BY_KEY not in record:
        return why
    # Written by the office from a recorder's inbox: the recorder's own record must hold too.
    inner = record.get(RECORDED_KEY)
    if not isinstance(inner, dict):
        return "ingested from a recorder's inbox but carries no recorded entry"
    if inner.get("user") != record.get("user") or inner.get("type") != record.get("type") \
            or inner.get("role") != "recorder":
        return "ingested from a recorder's inbox but says other things than the recorder's record"
    inner_why = _check_signature(inner, trusted, "recorder")
    return f"the recorder's record it carries: {inner_why}" if inner_why else None


def _check_signature(record: dict[str, Any], trusted: dict[str, Any], kind: str) -> str | None:
    """None when ``record`` is signed by a registered key that may sign as ``kind``."""
    from cryptography.exceptions import InvalidSignature
    from sessions.evidence.signing import _public, fingerprint
    signer, sig = record.get(SIGNER_KEY), record.get(SIGNATURE_KEY)
    if not isinstance(signer, str) or not isinstance(sig, str):
        return "not signed by any key"
    try:
        _public(signer).verify(bytes.fromhex(sig), entry_signed_bytes(record))
    except (InvalidSignature, ValueError):
        return "its signature does not match it (changed after signing)"
    known = trusted.get(signer.lower())
    if known is None:
        return f"signed by an unregistered key {fingerprint(signer)}"
    role = str(record.get("role") or "")
    if (role or kind == "recorder") and not known.may_sign(kind):
        return (f"signed by {known.name} ({fingerprint(signer)}), registered to sign for "
                f"{', '.join(known.kinds)}, not for role {role}")
    return None


def check_name(name: str) -> str:
    if name not in JOURNALS:
        raise UsageError(f"no journal {name!r}; journals are: {', '.join(JOURNALS)}")
    return name


@dataclass
class Entry:
    """One entry as stored, with what later corrections say about it."""

    number: int
    record: dict[str, Any]
    hash: str
    corrected_by: list[int] = field(default_factory=list)
    effective: dict[str, Any] = field(default_factory=dict)
    forged: str | None = None   # why no authorised key vouches for it (None: signed by one)

    @property
    def type(self) -> str:
        return str(self.record.get("type", ""))


@dataclass
class JournalView:
    """A journal read back and checked."""

    name: str
    entries: list[Entry]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def last(self) -> tuple[int, str]:
        return (self.entries[-1].number, self.entries[-1].hash) if self.entries else (0, GENESIS)

    def by_number(self, n: int) -> Entry | None:
        return next((e for e in self.entries if e.number == n), None)

    def facts(self) -> list[Entry]:
        """Entries that record facts (not corrections), each with its corrections applied."""
        return [e for e in self.entries if e.type != CORRECTION]


def check_lines(name: str, lines: Iterable[tuple[int, bytes, tuple[str, ...]]],
                prev_hash: str = GENESIS, expect_first: int = 1) -> tuple[list[Entry], list[str]]:
    """Parse and check chained lines; the problems name the entry where the chain breaks."""
    entries: list[Entry] = []
    problems: list[str] = []
    prev = prev_hash
    expected = expect_first
    for number, data, notes in lines:
        for note in notes:
            problems.append(f"journal {name}: entry {number}: {note}")
        if not data:
            prev = None  # type: ignore[assignment]
            expected = number + 1
            continue
        raw = data[:-1] if data.endswith(b"\n") else data
        if number != expected:
            gap = f"entry {expected} is" if number - 1 == expected else f"entries {expected}..{number - 1} are"
            problems.append(f"journal {name}: {gap} missing (removed)")
        expected = number + 1
        h = line_hash(raw)
        try:
            rec = json.loads(raw)
        except ValueError as exc:
            problems.append(f"journal {name}: entry {number}: not readable JSON ({exc}): edited or damaged")
            prev = h
            continue
        if not isinstance(rec, dict):
            problems.append(f"journal {name}: entry {number}: not a JSON object: edited or damaged")
            prev = h
            continue
        if prev is not None and rec.get(PREV_KEY) != prev:
            problems.append(f"journal {name}: entry {number}: the chain breaks here: it does not follow entry "
                            f"{number - 1} (an entry was edited, removed, inserted or reordered)")
        if rec.get("entry") != number:
            problems.append(f"journal {name}: entry {number}: says it is entry {rec.get('entry')!r}: "
                            "entries were renumbered or moved")
        entries.append(Entry(number, rec, h))
        prev = h
    return entries, problems


def apply_corrections(entries: list[Entry]) -> None:
    """Fill ``effective`` (record with corrections applied) and ``corrected_by`` for each entry."""
    by_no = {e.number: e for e in entries}
    for e in entries:
        e.effective = dict(e.record)
        e.corrected_by = []
    for e in entries:
        if e.type != CORRECTION:
            continue
        target = by_no.get(int(e.record.get("corrects") or 0))
        if target is None:
            continue
        target.corrected_by.append(e.number)
        for k, v in (e.record.get("changes") or {}).items():
            if k not in BASE_KEYS:
                target.effective[k] = v


class Journals:
    """Reads and appends journals of one archive on behalf of one user."""

    def __init__(self, backend: Backend, settings: Settings, user: User | None,
                 now: Callable[[], datetime] = utc_now):
        self.backend = backend
        self.settings = settings
        self.user = user
        self.now = now
        self.host = socket.gethostname()
        self._key: Any = None
        self._trusted: dict[str, Any] | None = None

    def _signing_key(self) -> Any:
        """This machine's key (the recorder's device key; the office computer's own key): every
        entry written here is signed with it, so an entry nobody authorised shows as forged."""
        if self._key is None:
            from sessions.evidence.signing import KeyFileError, default_key_path, load_or_create_key
            try:
                self._key = load_or_create_key(default_key_path())
            except KeyFileError as exc:
                raise UsageError(f"journal entries are signed with this machine's key: {exc}") from None
        return self._key

    def trusted_keys(self) -> dict[str, Any]:
        if self._trusted is None:
            from sessions.evidence import keystore
            try:
                self._trusted = keystore.load()
            except keystore.KeyStoreError as exc:
                raise UsageError(str(exc)) from None
        return self._trusted

    def _retain_until(self) -> datetime:
        return self.now() + timedelta(days=366 * self.settings.journal_retention_years)

    @property
    def writes_to_inbox(self) -> bool:
        """True when these credentials may not write journals (a recorder's on S3): entries go to
        its inbox and the office appends them."""
        return self.backend.role == "recorder" and hasattr(self.backend, "inbox_put")

    def append(self, name: str, type_: str, fields: dict[str, Any], user: User | None = None,
               user_name: str | None = None, pending_name: str | None = None) -> Entry:
        """Append one entry; returns it as stored (number and hash). For a recorder on S3 the
        entry is left, signed, in its inbox instead (number 0): ``pending_name`` names it there,
        unique per fact, so a repeated attempt never makes a second entry."""
        check_name(name)
        who = user or self.user
        base = {"type": type_, "t_utc": iso(self.now()),
                "user": who.name if who else (user_name or ""), "role": who.role if who else "",
                "host": self.host}
        body = {**base, **{k: v for k, v in fields.items() if k not in BASE_KEYS}}

        from sessions.evidence.signing import public_key_hex
        key = self._signing_key()
        signer = public_key_hex(key)
        if self.writes_to_inbox:
            return self._leave_in_inbox(name, body, key, signer, pending_name)

        def make_line(entry: int, prev: str) -> bytes:
            rec = {"entry": entry, **body, SIGNER_KEY: signer, PREV_KEY: prev}
            rec[SIGNATURE_KEY] = key.sign(entry_signed_bytes(rec)).hex()
            return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

        number, line = self.backend.journal_append(name, make_line, self._retain_until())
        return Entry(number, json.loads(line), line_hash(line))

    def _leave_in_inbox(self, name: str, body: dict[str, Any], key: Any, signer: str,
                        pending_name: str | None) -> Entry:
        import uuid
        if name not in RECORDER_JOURNALS:
            raise UsageError(f"a recorder writes no entries in journal {name!r}")
        rec = {PENDING_JOURNAL_KEY: name, **body, SIGNER_KEY: signer}
        rec[SIGNATURE_KEY] = key.sign(entry_signed_bytes(rec)).hex()
        data = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        stamp = str(body["t_utc"]).replace("-", "").replace(":", "").replace(".", "")
        obj = f"{name}/{pending_name or stamp + '-' + uuid.uuid4().hex[:12]}.json"
        self.backend.inbox_put(obj, data)  # type: ignore[attr-defined]
        return Entry(0, rec, line_hash(data))

    def ingest_inbox(self) -> tuple[int, list[str]]:
        """Append the entries recorders left in their inboxes (an officer or the head); returns how
        many were ingested and why any was refused. A refused object stays in the inbox, reported
        at every such command until somebody looks at it. Only an officer's credentials may remove
        an ingested object; the head's leave it for the officer's next command, which finds it
        already journaled and only removes it."""
        if self.user is None or self.user.role not in ("officer", "head") or not hasattr(self.backend, "inbox_list"):
            return 0, []
        waiting = self.backend.inbox_list()  # type: ignore[attr-defined]
        if not waiting:
            return 0, []
        trusted = self.trusted_keys()
        problems: list[str] = []
        accepted: list[tuple[str, dict[str, Any]]] = []
        for obj in waiting:
            rec, why = self._check_pending(obj.key, trusted)
            if why:
                problems.append(f"{obj.key}: not ingested: {why}")
            else:
                accepted.append((obj.key, rec))
        done = 0
        for name in RECORDER_JOURNALS:
            mine = sorted(((k, r) for k, r in accepted if r[PENDING_JOURNAL_KEY] == name),
                          key=lambda kr: (str(kr[1].get("t_utc")), kr[1].get("type") != "upload", kr[0]))
            if not mine:
                continue
            # An ingestion cut off between the append and the removal must not append twice.
            already = set()
            for jl in self.backend.journal_read(name):
                try:
                    already.add(json.loads(jl.data).get(INBOX_KEY))
                except (ValueError, AttributeError):
                    continue
            for k, rec in mine:
                if k not in already:
                    fields = {f: v for f, v in rec.items() if f not in BASE_KEYS and f != PENDING_JOURNAL_KEY}
                    who = User(name=str(rec["user"]), role="recorder")
                    self.append(name, str(rec["type"]), {**fields, INGESTED_BY_KEY: self.user.name,
                                                         INBOX_KEY: k, RECORDED_KEY: rec}, user=who)
                    done += 1
                if self.user.role == "officer":
                    self.backend.delete(k)
        return done, problems

    def _check_pending(self, key: str, trusted: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        try:
            rec = json.loads(self.backend.read_bytes(key))
        except ValueError as exc:
            return {}, f"not readable JSON ({exc})"
        if not isinstance(rec, dict):
            return {}, "not a JSON object"
        name = rec.get(PENDING_JOURNAL_KEY)
        if name not in RECORDER_JOURNALS or not key.split("/")[2:3] == [name]:
            return rec, f"names journal {name!r}; a recorder may leave entries for {', '.join(RECORDER_JOURNALS)} only"
        if rec.get("role") != "recorder":
            return rec, f"says role {rec.get('role')!r}; an inbox holds a recorder's entries only"
        account = self.settings.user(str(rec.get("user") or ""))
        if account is None or account.get("role") != "recorder" or account.get("disabled"):
            return rec, f"user {rec.get('user')!r} is no enabled recorder account of this archive"
        if not isinstance(rec.get("type"), str) or not rec.get("t_utc"):
            return rec, "has no type or time"
        why = _check_signature(rec, trusted, "recorder")
        if why and not why.startswith("signed by"):
            # Unsigned or changed after signing: nobody vouches even for the bytes.
            return rec, f"FORGED: {why}"
        # A valid signature by a key the key store does not (or not yet) list for a recorder is
        # ingested like any entry, and every reading marks it FORGED, as on a folder archive.
        return rec, None

    def read(self, name: str, anchor: tuple[int, str] | None = None) -> JournalView:
        """The whole journal, checked; ``anchor`` is a (number, hash) verified earlier."""
        check_name(name)
        lines = [(jl.entry, jl.data, jl.notes) for jl in self.backend.journal_read(name)]
        entries, problems = check_lines(name, lines)
        for key in getattr(self.backend, "malformed_journal_keys", lambda _n: [])(name):
            problems.append(f"journal {name}: {key} is not a journal entry (skipped): put there by something "
                            "other than examrec")
        trusted = self.trusted_keys()
        for e in entries:
            e.forged = authenticate_entry(e.record, trusted)
            if e.forged:
                problems.append(f"journal {name}: entry {e.number}: FORGED: {e.forged}")
        if anchor and anchor[0]:
            n, h = anchor
            e = next((x for x in entries if x.number == n), None)
            if e is None:
                problems.append(f"journal {name}: entry {n} was verified before and is gone now (entries removed)")
            elif e.hash != h:
                problems.append(f"journal {name}: entry {n} changed since it was last verified")
        apply_corrections(entries)
        return JournalView(name, entries, problems)

    def read_after(self, name: str, after: int, prev_hash: str) -> tuple[list[Entry], list[str]]:
        """Only the entries after ``after`` (for the catalog's incremental sync), chain-checked
        against the hash of entry ``after`` seen before."""
        lines = [(jl.entry, jl.data, jl.notes) for jl in self.backend.journal_read(name, after=after)]
        return check_lines(name, lines, prev_hash=prev_hash, expect_first=after + 1)

    def correct(self, name: str, number: int, reason: str, changes: dict[str, Any]) -> Entry:
        """Append a correction of entry ``number`` (KZ 9): never an edit."""
        view = self.read(name)
        target = view.by_number(number)
        if target is None:
            raise UsageError(f"journal {name} has no entry {number} (it has {len(view.entries)})")
        if target.type == CORRECTION:
            raise UsageError(f"entry {number} of journal {name} is itself a correction: correct entry "
                             f"{target.record.get('corrects')} instead")
        if not reason.strip():
            raise UsageError("a correction needs --reason: say what was wrong")
        bad = [k for k in changes if k in BASE_KEYS]
        if bad:
            raise UsageError(f"fields {', '.join(bad)} record who wrote the entry and when; they cannot be corrected")
        unknown = [k for k in changes if k not in target.record]
        if unknown:
            raise UsageError(f"entry {number} of journal {name} has no field {', '.join(unknown)}; "
                             f"its fields: {', '.join(k for k in target.record if k not in BASE_KEYS)}")
        return self.append(name, CORRECTION, {"corrects": number, "reason": reason,
                                              "changes": changes,
                                              "was": {k: target.record.get(k) for k in changes}})
