"""`examrec verify`: prove a session folder complete and untouched, or name exactly what is not.

A session is *complete and untouched* when the manifest is signed by the device key (and by the
expected key when one is given), every segment it lists is on disk with the signed SHA-256, the
segment entries, events.jsonl and each fragments.jsonl form unbroken hash chains, the events
summary, photos and telemetry match, and nothing unlisted sits in the folders.

A session cut off by a power loss or a crash (state other than ``finished``) is untouched at best,
never complete: each segment left open is reported with kind ``interrupted`` and how far its bytes
are proven by the fragments.jsonl records ("verified up to fragment 41 (pts 128.4 s)").

Problem kinds are stable strings that other tools (the archive) read; see KINDS.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from muxer.repair import index_problem
from sessions.evidence.chain import GENESIS, PREV_KEY, line_hash, read_chain
from sessions.evidence.checkpoints import CHECKPOINTS_NAME, OPENING_FIELDS, read_checkpoints, segment_heads
from sessions.evidence.layout import (EVENTS_NAME, FRAGMENTS_NAME, LOCK_NAME, MANIFEST_NAME, MANIFEST_TEMP_NAME,
                                      PHOTOS_DIR, RECOVERED_DIR, RESERVE_NAME, ROUTE_NAME, SEGMENT_RE, TELEMETRY_NAME,
                                      ManifestError, fragments_path, read_manifest, segment_name, segment_number,
                                      session_root)
from sessions.evidence.manifest import FORMAT_V1, STATES, segment_entry_hash, sha256_hex
from sessions.evidence.nofollow import SymlinkRefused, check_tree, open_read, sha256_file
from sessions.evidence.signing import PublicKeyLike, check_signature, fingerprint

log = logging.getLogger(__name__)

CHANGED_BYTES = "changed-bytes"
MISSING_SEGMENT = "missing-segment"
EXTRA_FILE = "extra-file"
REORDERED = "reordered-entries"
EDITED_EVENT = "edited-event"
REMOVED_EVENT = "removed-event"
BAD_SIGNATURE = "bad-signature"
MISSING_SIGNATURE = "missing-signature"
INTERRUPTED = "interrupted"
BAD_MANIFEST = "bad-manifest"
CHANGED_PHOTO = "changed-photo"
CHANGED_TELEMETRY = "changed-telemetry"
CHANGED_ROUTE = "changed-route"
# checkpoints.jsonl (format 2): a checkpoint that is not signed and chained, or a session that
# says something other than what a signed checkpoint vouched for while recording.
BAD_CHECKPOINT = "bad-checkpoint"
CONTRADICTS_CHECKPOINT = "contradicts-checkpoint"
KINDS = (CHANGED_BYTES, MISSING_SEGMENT, EXTRA_FILE, REORDERED, EDITED_EVENT, REMOVED_EVENT,
         BAD_SIGNATURE, MISSING_SIGNATURE, INTERRUPTED, BAD_MANIFEST, CHANGED_PHOTO, CHANGED_TELEMETRY,
         CHANGED_ROUTE, BAD_CHECKPOINT, CONTRADICTS_CHECKPOINT)

# The init record of a hybrid fragmented MP4 leaves out the 8-byte box header that closing the
# file rewrites (free -> mdat); those 8 bytes must still be that header and nothing else.
REWRITTEN_HEADER_TYPES = (b"free", b"mdat")
_CHUNK = 1 << 20


class NotASession(Exception):
    """The path is not a session folder (exit code 2)."""


@dataclass(frozen=True)
class Problem:
    """One thing that is not complete or not untouched: which file, what kind, in plain words."""

    file: str
    kind: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}, {self.detail}"


@dataclass
class VerifyReport:
    """What verify found. ``ok`` means complete and untouched (no problem at all)."""

    path: Path
    session: str
    state: str | None
    ok: bool = False
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    signed_by: str | None = None
    checkpoint: dict[str, Any] | None = None   # what the last valid signed checkpoint covers
    public_key: str | None = None              # hex key of the signature (or of the checkpoints)
    trusted_as: str | None = None              # the name it is registered under (set by the caller)

    @property
    def untouched(self) -> bool:
        """No sign of tampering: every problem (if any) is an ``interrupted`` one."""
        return all(p.kind == INTERRUPTED for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"session": self.session, "path": str(self.path), "ok": self.ok, "state": self.state,
                "untouched": self.untouched, "signed_by": self.signed_by, "checkpoint": self.checkpoint,
                "public_key": self.public_key, "trusted_as": self.trusted_as,
                "problems": [p.to_json() for p in self.problems], "verified": dict(self.counts)}


# ---------------------------------------------------------------------------------------------
# Low-level helpers


def hash_ranges(path: Path, ranges: list[tuple[int, int]]) -> tuple[str, int, list[str | None]]:
    """One sequential read of ``path``: the SHA-256 of the whole file, its size, and the SHA-256
    of each [start, end) range (None for a range that runs past the end of the file).

    One pass because a segment is checked both whole and fragment by fragment, and segments of
    a long exam are gigabytes.
    """
    hashers = [hashlib.sha256() for _ in ranges]
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    active: list[int] = []
    nxt = 0
    whole = hashlib.sha256()
    pos = 0
    with open_read(path) as f:
        while chunk := f.read(_CHUNK):
            end = pos + len(chunk)
            view = memoryview(chunk)
            whole.update(view)
            while nxt < len(order) and ranges[order[nxt]][0] < end:
                active.append(order[nxt])
                nxt += 1
            still: list[int] = []
            for i in active:
                s, e = ranges[i]
                lo, hi = max(s, pos), min(e, end)
                if lo < hi:
                    hashers[i].update(view[lo - pos:hi - pos])
                if e > end:
                    still.append(i)
            active = still
            pos = end
    digests: list[str | None] = []
    for (s, e), h in zip(ranges, hashers):
        digests.append(h.hexdigest() if e <= pos and s <= e else None)
    return whole.hexdigest(), pos, digests


def _safe_rel(rel: Any) -> PurePosixPath | None:
    """A manifest path we may open: relative, no '..', not empty (a crafted manifest must not
    make verify read files outside the session)."""
    if not isinstance(rel, str) or not rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or "\\" in rel:
        return None
    return p


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_lines(path: Path) -> tuple[list[bytes], list[str]]:
    """Complete lines of a chained log and their hashes (a torn last line is not part of it)."""
    lines = path.read_bytes().split(b"\n")[:-1]
    return lines, [line_hash(x) for x in lines]


def _prev_of(line: bytes) -> Any:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec.get(PREV_KEY) if isinstance(rec, dict) else None


def _break_cause(lines: list[bytes], hashes: list[str], lineno: int) -> tuple[str, int | None]:
    """Why line ``lineno`` (1-based) does not follow the line before it.

    ("reordered", n) when it claims to follow line n elsewhere in the file (or claims to be the
    first line while it is not); ("first", None) when the first line claims a predecessor that is
    not there (lines removed from the start); ("unexplained", None) when the line it follows is
    nowhere: the previous line was edited, or a line between them removed.
    """
    prev = _prev_of(lines[lineno - 1])
    if prev == GENESIS and lineno > 1:
        return "reordered", 0
    for j, h in enumerate(hashes, start=1):
        if h == prev and j != lineno - 1:
            return "reordered", j
    if lineno == 1:
        return "first", None
    return "unexplained", None


@dataclass(frozen=True)
class _ChainBreak:
    """One place where a chained log (events.jsonl, fragments.jsonl) is not intact, diagnosed.

    ``cause``: "torn-tail" (last line without newline), "unparsable" (not JSON), or a cause of
    _break_cause; ``follows``: for "reordered", the line it claims to follow (0: the start).
    """

    line: int
    cause: str
    follows: int | None = None


def _chain_breaks(path: Path) -> tuple[list[bytes], list[str], list[_ChainBreak]]:
    """Read a chained log: its complete lines, their hashes, and every break with its cause."""
    _, problems = read_chain(path)
    lines, hashes = _read_lines(path)
    breaks = []
    for cp in problems:
        if cp.kind in ("torn-tail", "unparsable"):
            breaks.append(_ChainBreak(cp.line, cp.kind))
        else:
            breaks.append(_ChainBreak(cp.line, *_break_cause(lines, hashes, cp.line)))
    return lines, hashes, breaks


@dataclass
class _Rec:
    """One fragments.jsonl record of one segment file."""

    line: int
    kind: str
    index: int | None
    offset: int
    end: int
    sha256: str
    last_pts_s: float | None
    skip: tuple[int, int] | None = None


@dataclass
class _FragResult:
    total: int = 0                 # records for this file
    verified: int = 0              # records (init included) proven, in order, from byte 0
    verified_end: int = 0          # bytes [0, verified_end) proven
    last_index: int | None = None  # index of the last proven record (the init is 0)
    last_pts_s: float | None = None
    size: int = 0
    whole_sha256: str = ""
    stop: str | None = None        # why the proven prefix ends before the last record
    changed: list[str] = field(default_factory=list)  # records whose bytes differ
    order: list[str] = field(default_factory=list)    # records out of file order
    gaps: list[str] = field(default_factory=list)     # bytes between records that no record covers
    # Records after the proven prefix naming bytes past the end of the file: after a power cut the
    # log can reach the disk before the bytes it describes (an interruption, unless a signed
    # checkpoint vouched for them).
    beyond_end: list[_Rec] = field(default_factory=list)
    fragments_end: int = 0         # where the fragments end (the size, or where repair's index begins)


def _parse_records(raw: Iterable[tuple[int, dict[str, Any]]]) -> tuple[list[_Rec], list[str]]:
    recs: list[_Rec] = []
    bad: list[str] = []
    for line, r in raw:
        try:
            off, end = int(r["offset"]), int(r["end"])
            sha = str(r["sha256"])
            kind = str(r.get("kind", "fragment"))
            idx = int(r["index"]) if r.get("index") is not None else None
            pts = float(r["last_pts_s"]) if r.get("last_pts_s") is not None else None
            skip = (int(r["skip"][0]), int(r["skip"][1])) if r.get("skip") is not None else None
        except (KeyError, TypeError, ValueError, IndexError):
            bad.append(f"line {line} is not a fragment record")
            continue
        if off < 0 or end < off:
            bad.append(f"line {line} has offset {off} and end {end}")
            continue
        recs.append(_Rec(line, kind, idx, off, end, sha, pts, skip))
    return recs, bad


def _check_skipping(path: Path, rec: _Rec, size: int) -> str | None:
    """A record whose hash leaves out ``skip`` (FORMAT.md: the init record, minus the 8-byte box
    header that closing a hybrid fragmented MP4 rewrites). None when it matches, else why not.

    The left-out bytes must be exactly one box header of type free (open file) or mdat (closed),
    so nothing but that rewrite can hide in them.
    """
    a, b = rec.skip  # type: ignore[misc]
    if b - a != 8 or a < rec.offset or b > rec.end:
        return f"its skip {[a, b]} is not an 8-byte box header inside the record"
    if rec.end > size:
        return f"is missing: the file ends at byte {size}"
    h = hashlib.sha256()
    with open_read(path) as f:
        f.seek(a)
        header = f.read(8)
        box_size, box_type = struct.unpack(">I4s", header) if len(header) == 8 else (0, b"")
        # Open, the header is a free box reaching the initial moov; closed, an mdat reaching the
        # final moov. Either way a moov starts where it ends: no other value can hide or cut bytes.
        f.seek(a + box_size)
        follows = f.read(8)[4:] if box_size >= 8 else b""
        if box_type not in REWRITTEN_HEADER_TYPES or follows != b"moov":
            return f"the 8 bytes it leaves out (at {a}) are not the free/mdat box header that ends at a moov"
        for start, stop in ((rec.offset, a), (b, rec.end)):
            f.seek(start)
            left = stop - start
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    return f"is missing: the file ends at byte {size}"
                h.update(chunk)
                left -= len(chunk)
    return None if h.hexdigest() == rec.sha256 else "changed"


def _fragment_name(rec: _Rec) -> str:
    return "init" if rec.kind == "init" else f"fragment {rec.index if rec.index is not None else '?'}"


def verify_fragments(path: Path, recs: list[_Rec], fragments_end: int | None = None) -> _FragResult:
    """Check a segment file against its fragments.jsonl records, in record order.

    The proven prefix runs from byte 0 through contiguous records whose bytes match; it stops at
    the first gap, overlap or changed record. Later records are still checked so every changed
    fragment is named. ``fragments_end``: where the fragments of a segment repair closed end (its
    index follows, checked on its own): a record past it names bytes the interruption took.
    """
    res = _FragResult(total=len(recs))
    plain = [r for r in recs if r.skip is None]
    res.whole_sha256, res.size, digests = hash_ranges(path, [(r.offset, r.end) for r in plain])
    limit = res.size if fragments_end is None else min(res.size, fragments_end)
    res.fragments_end = limit
    why: dict[int, str | None] = {}
    for r, d in zip(plain, digests):
        why[id(r)] = None if d == r.sha256 and r.end <= limit else (
            "changed" if d is not None and r.end <= limit else f"is missing: the file ends at byte {limit}")
    for r in recs:
        if r.skip is not None:
            why[id(r)] = _check_skipping(path, r, res.size)
    covered = 0
    last_index = -1
    proving = True
    for r in recs:
        name = _fragment_name(r)
        if r.index is not None:
            if r.index <= last_index:
                res.order.append(f"{name} (line {r.line}) comes after record {last_index}")
            last_index = max(last_index, r.index)
        if r.offset < covered:
            res.order.append(f"{name} (line {r.line}) starts at byte {r.offset}, inside bytes already "
                             f"covered (up to {covered})")
        elif r.offset > covered:
            # The writer records every fragment back to back: a hole is a record taken out.
            res.gaps.append(f"bytes {covered}-{r.offset} before {name} (line {r.line}) have no record")
        reason = why[id(r)]
        if reason is not None and reason.startswith("is missing") and (not proving or r.offset == res.verified_end) \
                and r.end > limit:
            res.beyond_end.append(r)
        elif reason is not None:
            res.changed.append(f"{name} (bytes {r.offset}-{r.end}) {reason}")
        if proving:
            if r.offset != res.verified_end:
                res.stop = (f"bytes {res.verified_end}-{r.offset} are not covered by any record"
                            if r.offset > res.verified_end else f"{name} overlaps the bytes before it")
                proving = False
            elif reason is not None:
                res.stop = f"{name} (bytes {r.offset}-{r.end}) does not match its record"
                proving = False
            else:
                res.verified_end = r.end
                res.verified += 1
                res.last_index = r.index
                if r.last_pts_s is not None:
                    res.last_pts_s = r.last_pts_s
        covered = max(covered, r.end)
    return res


# ---------------------------------------------------------------------------------------------
# The checks


class _Verifier:
    def __init__(self, root: Path, expected_public_key: PublicKeyLike | None):
        self.root = root
        self.expected = expected_public_key
        self.problems: list[Problem] = []
        self.counts: dict[str, int] = {"segments": 0, "segments_total": 0, "fragments": 0, "bytes": 0,
                                       "events": 0, "photos": 0, "telemetry": 0, "route": 0, "signature": 0}
        self.manifest: dict[str, Any] | None = None
        self.state: str | None = None
        self.signed_by: str | None = None
        # Files verify accounted for (relative POSIX paths); anything else in the folders is extra.
        self.known: set[str] = set()
        self.stream_names: list[str] = []
        # fragments.jsonl records per segment file, per stream
        self.fragments: dict[str, dict[str, list[_Rec]]] = {}
        self.open_segments = 0
        # `repaired.files` entries by file: what `examrec repair` trimmed or moved to recovered/
        self.repaired_files: dict[str, list[dict[str, Any]]] = {}
        # Segments `examrec repair` closed with an index: file -> (index offset, index size)
        self.indexed: dict[str, tuple[int, int]] = {}
        self.checkpoint: dict[str, Any] | None = None
        self.checkpoint_key: str | None = None

    # -- helpers
    def add(self, file: str, kind: str, detail: str) -> None:
        log.debug("problem %s %s %s", file, kind, detail)
        self.problems.append(Problem(file, kind, detail))

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    # -- manifest
    def load_manifest(self) -> None:
        try:
            m = read_manifest(self.root)
        except FileNotFoundError:
            self.add(MANIFEST_NAME, BAD_MANIFEST, "manifest.json is missing")
            return
        except ManifestError as exc:
            self.add(MANIFEST_NAME, BAD_MANIFEST, str(exc).split(": ", 1)[-1])
            return
        self.manifest = m
        self.known.add(MANIFEST_NAME)
        state = m.get("state")
        if state not in STATES:
            self.add(MANIFEST_NAME, BAD_MANIFEST, f"state {state!r} is not one of {', '.join(STATES)}")
        else:
            self.state = state
        software = m.get("software")  # absent in manifests written before it was recorded
        if software is not None and not (isinstance(software, dict)
                                         and all(isinstance(v, str) for v in software.values())):
            self.add(MANIFEST_NAME, BAD_MANIFEST, "software is not an object of version strings")
        streams = m.get("streams")
        if not isinstance(streams, list) or not all(isinstance(s, dict) for s in streams):
            self.add(MANIFEST_NAME, BAD_MANIFEST, "streams is not a list of objects")
            m["streams"] = []
        for s in m["streams"]:
            name = s.get("name")
            if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9_-]{0,31}$", name):
                self.add(MANIFEST_NAME, BAD_MANIFEST, f"stream name {name!r} is not valid")
                s["segments"] = []
                continue
            if not isinstance(s.get("segments"), list) or not all(isinstance(e, dict) for e in s["segments"]):
                self.add(MANIFEST_NAME, BAD_MANIFEST, f"stream {name}: segments is not a list of objects")
                s["segments"] = []
            self.stream_names.append(name)
        rep = m.get("repaired")
        if isinstance(rep, dict):
            for item in rep.get("files") or []:
                if isinstance(item, dict) and isinstance(item.get("file"), str):
                    self.repaired_files.setdefault(item["file"], []).append(item)

    def check_signature(self) -> None:
        m = self.manifest
        if m is None:
            return
        # A repaired format 2 session may stay unsigned (repaired on a machine without its key):
        # its signed checkpoints are the evidence then.
        has_checkpoints = (self.root / CHECKPOINTS_NAME).exists()
        required = self.finished or ("repaired" in m and not has_checkpoints) or self.expected is not None
        if "signature" not in m:
            if required:
                why = ("a finished session must be signed" if self.finished else
                       "a repaired session must be signed after repair" if "repaired" in m else
                       "no signature to check against the expected key")
                self.add(MANIFEST_NAME, MISSING_SIGNATURE, why)
            return
        ok, why = check_signature(m, self.expected)
        if ok:
            self.counts["signature"] = 1
            self.signed_by = fingerprint(m["signature"]["public_key"])
        else:
            self.add(MANIFEST_NAME, BAD_SIGNATURE, why)

    # -- segments
    def load_fragments(self, stream: str) -> None:
        """Read and chain-check <stream>/fragments.jsonl; group its records by segment file."""
        rel = f"{stream}/{FRAGMENTS_NAME}"
        path = fragments_path(self.root, stream)
        self.fragments[stream] = {}
        if not _is_regular(path):
            return
        self.known.add(rel)
        lines, hashes, breaks = _chain_breaks(path)
        for b in breaks:
            if b.cause == "torn-tail":
                if self.finished:
                    self.add(rel, CHANGED_BYTES, "the last line has no newline, in a finished session")
            elif b.cause == "unparsable":
                self.add(rel, CHANGED_BYTES, f"line {b.line} is not JSON (edited)")
            elif b.cause == "reordered":
                after = "to be the first line" if b.follows == 0 else f"to follow line {b.follows}"
                self.add(rel, REORDERED, f"line {b.line} claims {after}: records were reordered")
            elif b.cause == "first":
                self.add(rel, CHANGED_BYTES, "line 1 follows a record that is not there: records removed from the start")
            else:
                self.add(rel, CHANGED_BYTES, f"line {b.line} does not follow line {b.line - 1}: "
                                             f"line {b.line - 1} was edited or a record after it removed")
        numbered = []
        for lineno, raw in enumerate(lines, start=1):
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict):
                numbered.append((lineno, rec))
        by_file: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for lineno, rec in numbered:
            f = rec.get("file")
            m = SEGMENT_RE.match(f) if isinstance(f, str) else None
            if m is None or m.group("stream") != stream:
                self.add(rel, CHANGED_BYTES, f"line {lineno} names file {f!r}, not a segment of stream {stream}")
                continue
            by_file.setdefault(f, []).append((lineno, rec))
        for f, raw_recs in by_file.items():
            recs, bad = _parse_records(raw_recs)
            for b in bad:
                self.add(rel, CHANGED_BYTES, b)
            self.fragments[stream][f] = recs

    def check_segment_chain(self, stream: str, segments: list[dict[str, Any]]) -> None:
        hashes = []
        for e in segments:
            try:
                hashes.append(segment_entry_hash(e))
            except ValueError:
                hashes.append("")
        broken = False
        for i, e in enumerate(segments):
            want = hashes[i - 1] if i else GENESIS
            prev = e.get("prev_sha256")
            if prev == want:
                continue
            broken = True
            f = e.get("file", f"{stream} entry {i + 1}")
            if prev == GENESIS and i > 0 or (prev in hashes and hashes.index(prev) != i - 1):
                after = ("first" if prev == GENESIS else
                         f"after {segments[hashes.index(prev)].get('file')}")
                self.add(MANIFEST_NAME, REORDERED, f"stream {stream}: segment entry {i + 1} ({f}) was "
                                                   f"chained {after}: entries reordered")
            elif i > 0 and _seg_num(e) is not None and _seg_num(segments[i - 1]) is not None \
                    and _seg_num(e) > (_seg_num(segments[i - 1]) or 0) + 1:
                self.add(MANIFEST_NAME, MISSING_SEGMENT,
                         f"stream {stream}: the entry before {f} was removed from the manifest")
            elif i == 0:
                self.add(MANIFEST_NAME, MISSING_SEGMENT,
                         f"stream {stream}: {f} is chained to an entry that is not there: first entries removed")
            else:
                self.add(MANIFEST_NAME, BAD_MANIFEST,
                         f"stream {stream}: segment entry {i} ({segments[i - 1].get('file')}) was changed "
                         "after the next entry was chained to it")
        if broken:
            return
        # An intact chain with wrong numbering: the recorder (or someone rebuilding the chain) erred.
        nums = [_seg_num(e) for e in segments]
        if None in nums:
            return
        # A segment repair moved aside whole (nothing playable) is accounted for in recovered/.
        moved = {f for f, reps in self.repaired_files.items()
                 if any(r.get("kept_bytes") == 0 and _saved_as(r) for r in reps)}
        want = 1
        for i, n in enumerate(nums):
            while segment_name(stream, want) in moved:
                want += 1
            if n != want:
                if n in nums[:i] or want in nums[i + 1:]:
                    self.add(MANIFEST_NAME, REORDERED, f"stream {stream}: {segments[i]['file']} is entry {i + 1}")
                else:
                    self.add(MANIFEST_NAME, MISSING_SEGMENT, f"stream {stream}: no entry for {segment_name(stream, want)}")
                break
            want += 1

    def check_stream(self, s: dict[str, Any]) -> None:
        stream = s["name"]
        segments: list[dict[str, Any]] = s["segments"]
        self.load_fragments(stream)
        frags = self.fragments[stream]
        if segments and not (self.root / stream / FRAGMENTS_NAME).exists():
            self.add(f"{stream}/{FRAGMENTS_NAME}", CHANGED_BYTES,
                     "missing: every stream folder keeps the record of its fragments")
        self.check_segment_chain(stream, segments)
        listed: set[str] = set()
        for i, e in enumerate(segments):
            f = e.get("file")
            m = SEGMENT_RE.match(f) if isinstance(f, str) else None
            if m is None or m.group("stream") != stream:
                self.add(MANIFEST_NAME, BAD_MANIFEST,
                         f"stream {stream}: segment entry {i + 1} names {f!r}, not {stream}/NNNN.mp4")
                continue
            if f in listed:
                self.add(MANIFEST_NAME, BAD_MANIFEST, f"stream {stream}: {f} is listed twice")
                continue
            listed.add(f)
            self.counts["segments_total"] += 1
            self.known.add(f)
            self.check_segment(f, e, frags.get(f, []))
        # Records of files the manifest does not list.
        for f, recs in frags.items():
            if f in listed:
                continue
            path = self.root / f
            if _is_regular(path) and not self.finished and _safe_rel(f) is not None and SEGMENT_RE.match(f):
                # The recorder opened this segment and died before the manifest named it.
                self.known.add(f)
                self.counts["segments_total"] += 1
                self.report_open(f, verify_fragments(path, recs), recs, note="not yet listed in the manifest")
            elif not path.exists() and not any(_saved_as(r) for r in self.repaired_files.get(f, [])):
                self.add(f, MISSING_SEGMENT, f"fragments.jsonl records {len(recs)} fragments of it, "
                                             "but it is neither in the manifest nor on disk")

    def check_segment(self, f: str, e: dict[str, Any], recs: list[_Rec]) -> None:
        path = self.root / f
        if not path.exists() and not path.is_symlink():
            self.add(f, MISSING_SEGMENT, "listed in the manifest, not on disk"
                     + (f" ({len(recs)} fragments recorded in fragments.jsonl)" if recs else ""))
            return
        if not _is_regular(path):
            self.add(f, CHANGED_BYTES, "not a regular file (a link or a folder); the recorder writes files")
            return
        index = e.get("index")
        index_at = index.get("offset") if isinstance(index, dict) and isinstance(index.get("offset"), int) else None
        res = verify_fragments(path, recs, index_at)
        want, size, closed = e.get("sha256"), e.get("size"), e.get("closed") is True
        whole_ok = False
        if isinstance(want, str):
            if res.whole_sha256 != want or (isinstance(size, int) and size != res.size):
                self.report_changed(f, res, recs, size)
                return
            whole_ok = True
        if closed and whole_ok:
            self.counts["segments"] += 1
            self.counts["bytes"] += res.size
            self.counts["fragments"] += res.verified
            # The segment is proven by its own hash; a disagreeing fragments.jsonl was rewritten.
            rel = f"{f.split('/')[0]}/{FRAGMENTS_NAME}"
            for c in res.changed:
                self.add(rel, CHANGED_BYTES, f"the record of {f} {c.split(' (')[0]} does not match the "
                                             "segment proven by the manifest")
            for o in res.order:
                self.add(rel, REORDERED, f"{f}: {o}")
            for g in res.gaps:
                self.add(rel, CHANGED_BYTES, f"{f}: {g}")
            return
        if "index" in e:
            self.check_index(f, e["index"])
        if closed:
            self.add(MANIFEST_NAME, BAD_MANIFEST, f"{f} is marked closed but has no sha256")
        elif self.finished:
            self.add(MANIFEST_NAME, BAD_MANIFEST, f"{f} is not closed in a finished session")
        self.report_open(f, res, recs, whole_ok=whole_ok)

    def check_index(self, f: str, index: Any) -> None:
        """A segment `examrec repair` closed ends with an index (a moov) computed from the
        fragments before it (FORMAT.md): rebuild it from them and compare byte for byte."""
        if not (isinstance(index, dict) and isinstance(index.get("offset"), int) and isinstance(index.get("size"), int)
                and index["offset"] > 0 and index["size"] > 0):
            self.add(MANIFEST_NAME, BAD_MANIFEST, f"{f}: index {index!r} is not {{offset, size}}")
            return
        self.indexed[f] = (index["offset"], index["size"])
        problem = index_problem(self.root / f, index["offset"], index["size"])
        if problem:
            self.add(f, CHANGED_BYTES, f"the index repair appended at byte {index['offset']}: {problem}")

    def report_changed(self, f: str, res: _FragResult, recs: list[_Rec], size: Any) -> None:
        """A segment whose SHA-256 differs from the manifest: say where, using the fragment records."""
        if res.changed:
            where = "; ".join(res.changed[:3])
            if len(res.changed) > 3:
                where += f"; {len(res.changed) - 3} more fragments changed"
        elif recs and res.verified == len(recs):
            where = f"every recorded fragment matches: bytes after byte {res.verified_end} changed"
        else:
            where = ""
        size_note = f"; size {res.size}, the manifest says {size}" if isinstance(size, int) and size != res.size else ""
        self.add(f, CHANGED_BYTES, f"SHA-256 differs from the manifest{size_note}" + (f": {where}" if where else ""))

    def report_open(self, f: str, res: _FragResult, recs: list[_Rec], note: str = "", whole_ok: bool = False) -> None:
        """A segment left open by an interruption: prove what fragments.jsonl vouches for.

        ``whole_ok``: the manifest (re-signed by `examrec repair`) holds the SHA-256 of the file
        as it is now, and it matches.
        """
        self.open_segments += 1
        rel = f"{f.split('/')[0]}/{FRAGMENTS_NAME}"
        for o in res.order:
            self.add(rel, REORDERED, f"{f}: {o}")
        for g in res.gaps:
            self.add(rel, CHANGED_BYTES, f"{f}: {g}")
        if res.changed:
            extra = f"; {len(res.changed) - 1} later records also differ" if len(res.changed) > 1 else ""
            self.add(f, CHANGED_BYTES, f"{res.changed[0]}{extra}")
        if res.beyond_end:
            head = ((self.checkpoint or {}).get("fragments") or {}).get(f.split("/")[0]) or {}
            signed = [r for r in res.beyond_end if r.line <= int(head.get("lines") or 0)]
            if signed:
                self.add(f, CONTRADICTS_CHECKPOINT,
                         f"{_fragment_name(signed[0])} (bytes {signed[0].offset}-{signed[0].end}) is missing: the file "
                         f"ends at byte {res.size}, below what checkpoint {self.checkpoint.get('seq')} vouches for")
        self.counts["fragments"] += res.verified
        self.counts["bytes"] += res.size if whole_ok else res.verified_end
        if whole_ok:
            self.counts["segments"] += 1
        pts = f" (pts {res.last_pts_s:.1f} s)" if res.last_pts_s is not None else ""
        upto = (f"verified up to fragment {res.last_index if res.last_index is not None else res.verified - 1}{pts}"
                if res.verified else "no fragment verified")
        notes = [note] if note else []
        if not recs:
            notes.append("fragments.jsonl has no record of it")
        reps = self.repaired_files.get(f, [])
        unsigned_beyond = [r for r in res.beyond_end
                           if r.line > int((((self.checkpoint or {}).get("fragments") or {}).get(f.split("/")[0])
                                            or {}).get("lines") or 0)]
        if unsigned_beyond:
            notes.append(f"{len(unsigned_beyond)} fragment record(s) after byte {res.fragments_end} name bytes the "
                         "interruption took (the record reached the disk before them)")
        if res.stop:
            notes.append(f"unverified from byte {res.verified_end}: {res.stop}")
        elif f in self.indexed and res.size == res.verified_end + self.indexed[f][1] \
                and self.indexed[f][0] == res.verified_end:
            notes.append(f"then the index repair appended ({self.indexed[f][1]} bytes), as its fragments give it")
        elif res.size > res.verified_end:
            notes.append(f"{res.size - res.verified_end} bytes after it are not in fragments.jsonl"
                         + (" (kept by repair)" if reps else " (torn last fragment)"))
        for rep in reps:
            if _saved_as(rep):
                notes.append(f"repair ({rep.get('reason') or 'trim'}) kept the bytes it took in {_saved_as(rep)}")
        if whole_ok:
            notes.append(f"the whole file ({res.size} bytes) matches the manifest"
                         + (" signed after repair" if self.counts["signature"] else ""))
        if "signature" not in (self.manifest or {}):
            notes.append("manifest not signed: the hash chains are the evidence")
        self.add(f, INTERRUPTED, upto + "".join(f"; {n}" for n in notes))

    def check_repaired(self) -> None:
        """What `examrec repair` trimmed or moved aside stays in recovered/, named by the manifest's
        ``repaired.files`` entries ({file, kept_bytes, trimmed_bytes, saved_as, reason}; with
        ``saved_sha256`` those bytes are checked too)."""
        for f, reps in self.repaired_files.items():
            for rep in reps:
                rel = _saved_as(rep)
                if rel is None:
                    continue  # nothing was kept (e.g. an empty tail)
                sp = _safe_rel(rel)
                if sp is None or sp.parts[0] != RECOVERED_DIR:
                    self.add(MANIFEST_NAME, BAD_MANIFEST, f"repaired entry of {f}: {rel!r} is not under recovered/")
                    continue
                path = self.root.joinpath(*sp.parts)
                want = rep.get("saved_sha256", rep.get("recovered_sha256"))
                if not _is_regular(path):
                    self.add(str(sp), CHANGED_BYTES, f"missing: the bytes repair took from {f} must be kept")
                elif isinstance(want, str) and sha256_file(path) != want:
                    self.add(str(sp), CHANGED_BYTES, f"the bytes repair took from {f} changed (SHA-256 differs)")
            # A segment stays as repair left it (a log gets the "repaired" event after).
            kept = [r["kept_bytes"] for r in reps if isinstance(r.get("kept_bytes"), int)]
            target = self.root / f
            # (plus the index it appended after them, checked by check_index)
            index = self.indexed.get(f)
            size = min(kept) + index[1] if kept and index and index[0] == min(kept) else min(kept) if kept else None
            if SEGMENT_RE.match(f) and kept and _is_regular(target) and target.stat().st_size != size:
                self.add(f, CHANGED_BYTES, f"{target.stat().st_size} bytes, repair kept {min(kept)}"
                         + (f" and appended an index of {index[1]}" if index and size != min(kept) else ""))

    # -- events, photos, telemetry
    def check_events(self) -> None:
        path = self.root / EVENTS_NAME
        summary = (self.manifest or {}).get("events")
        if self.manifest is not None and not isinstance(summary, dict):
            if self.finished:
                self.add(MANIFEST_NAME, BAD_MANIFEST, "no events summary (lines, last_sha256)")
            summary = None
        if not _is_regular(path):
            self.add(EVENTS_NAME, REMOVED_EVENT, "events.jsonl is missing: all events removed")
            return
        self.known.add(EVENTS_NAME)
        lines, hashes, breaks = _chain_breaks(path)
        n = len(lines)
        m_lines = summary.get("lines") if summary else None
        m_last = summary.get("last_sha256") if summary else None
        if summary is not None and not (isinstance(m_lines, int) and isinstance(m_last, str)):
            self.add(MANIFEST_NAME, BAD_MANIFEST, "events summary lacks lines or last_sha256")
            summary, m_lines, m_last = None, None, None
        counted = f" (the manifest counts {m_lines} lines, the file has {n})" if m_lines is not None else ""
        broken = False
        for b in breaks:
            if b.cause == "torn-tail" and not self.finished:
                continue
            broken = True
            if b.cause == "torn-tail":
                self.add(EVENTS_NAME, EDITED_EVENT, "the last line has no newline, in a finished session")
            elif b.cause == "unparsable":
                self.add(EVENTS_NAME, EDITED_EVENT, f"line {b.line} is not JSON")
            elif b.cause == "reordered":
                after = "to be the first event" if b.follows == 0 else f"to follow line {b.follows}"
                self.add(EVENTS_NAME, REORDERED, f"line {b.line} claims {after}: events reordered")
            elif b.cause == "first":
                self.add(EVENTS_NAME, REMOVED_EVENT,
                         f"line 1 follows an event that is not there: events removed from the start{counted}")
            elif m_lines is not None and n < m_lines:
                self.add(EVENTS_NAME, REMOVED_EVENT,
                         f"line {b.line} does not follow line {b.line - 1}: events removed between them{counted}")
            else:
                self.add(EVENTS_NAME, EDITED_EVENT,
                         f"line {b.line} does not follow line {b.line - 1}: line {b.line - 1} was edited"
                         + (f", or an event after it removed{counted}" if m_lines is None or n > m_lines else ""))
        if not broken and summary is not None:
            broken = self.check_events_summary(n, hashes, m_lines, m_last)  # type: ignore[arg-type]
        if not broken:
            self.counts["events"] = n

    def check_events_summary(self, n: int, hashes: list[str], m_lines: int, m_last: str) -> bool:
        """The manifest's count and last hash pin the log: nothing removed from or added to its end.
        Returns True when a problem was reported. A session still recording (or cut off) may have
        appended events after its last manifest write, so there only the prefix must match."""
        if m_lines == 0 and m_last != GENESIS:
            # Written while recording: the last hash is kept current, the count only at the end.
            if m_last not in hashes:
                self.add(EVENTS_NAME, EDITED_EVENT, "the last event the manifest recorded is not in the file "
                                                    "(edited or removed)")
                return True
            m_lines = hashes.index(m_last) + 1
        prefix_ok = m_lines == 0 or (m_lines <= n and hashes[m_lines - 1] == m_last)
        if prefix_ok and (n == m_lines or not self.finished):
            return False
        if n < m_lines:
            self.add(EVENTS_NAME, REMOVED_EVENT, f"{m_lines - n} events removed from the end "
                                                 f"(the file has {n} lines, the manifest counts {m_lines})")
        elif prefix_ok:
            self.add(EVENTS_NAME, EDITED_EVENT,
                     f"{n - m_lines} lines appended after the manifest was signed (it counts {m_lines})")
        else:
            self.add(EVENTS_NAME, EDITED_EVENT,
                     f"line {m_lines} is not the line the manifest records (edited, or the log rewritten)")
        return True

    def check_photos(self) -> None:
        photos = (self.manifest or {}).get("photos") or []
        if not isinstance(photos, list):
            self.add(MANIFEST_NAME, BAD_MANIFEST, "photos is not a list")
            return
        for p in photos:
            rel = _safe_rel(p.get("file")) if isinstance(p, dict) else None
            if rel is None or rel.parts[0] != PHOTOS_DIR:
                self.add(MANIFEST_NAME, BAD_MANIFEST, f"photo entry {p!r} does not name a file under photos/")
                continue
            self.known.add(str(rel))
            path = self.root.joinpath(*rel.parts)
            if not _is_regular(path):
                self.add(str(rel), CHANGED_PHOTO, "missing")
            elif sha256_file(path) != p.get("sha256"):
                self.add(str(rel), CHANGED_PHOTO, "SHA-256 differs from the manifest")
            else:
                self.counts["photos"] += 1

    def check_telemetry(self) -> None:
        """telemetry.jsonl and route.gpx: present and unchanged when the manifest lists their hash."""
        for key, default, kind in (("telemetry", TELEMETRY_NAME, CHANGED_TELEMETRY), ("route", ROUTE_NAME, CHANGED_ROUTE)):
            if self._check_listed_file(key, default, kind):
                self.counts[key] = 1

    def _check_listed_file(self, key: str, default: str, kind: str) -> bool:
        entry = (self.manifest or {}).get(key)
        if not isinstance(entry, dict):
            if (self.root / default).exists():
                self.known.add(default)
            return False
        rel = _safe_rel(entry.get("file") or default)
        if rel is None:
            self.add(MANIFEST_NAME, BAD_MANIFEST, f"{key} file {entry.get('file')!r} is not a session path")
            return False
        self.known.add(str(rel))
        want = entry.get("sha256")
        if want is None:
            return False  # still open when the manifest was written (interrupted): nothing signed to compare
        path = self.root.joinpath(*rel.parts)
        if not _is_regular(path):
            self.add(str(rel), kind, "missing")
        elif sha256_file(path) != want:
            self.add(str(rel), kind, "SHA-256 differs from the manifest")
        else:
            return True
        return False

    # -- extra files
    def check_extra(self) -> None:
        allowed_root = {MANIFEST_NAME, EVENTS_NAME, TELEMETRY_NAME, ROUTE_NAME, LOCK_NAME, CHECKPOINTS_NAME}
        dirs = set(self.stream_names) | {PHOTOS_DIR, RECOVERED_DIR}
        for entry in sorted(os.scandir(self.root), key=lambda d: d.name):
            name = entry.name
            if name == MANIFEST_TEMP_NAME:
                log.info("ignoring %s: a manifest write cut off before its rename", name)
                continue
            if entry.is_dir(follow_symlinks=False):
                if name not in dirs:
                    self.add(name + "/", EXTRA_FILE, "a folder the manifest does not list")
                elif name != RECOVERED_DIR:
                    self.check_extra_in(name)
            elif name == RESERVE_NAME and entry.is_file(follow_symlinks=False) and _all_zero(self.root / name):
                # The recorder's reserved disk space (released at the stop, left by a kill): zeros only.
                log.info("ignoring %s: the recorder's reserved space, all zeros", name)
            elif name not in allowed_root:
                self.add(name, EXTRA_FILE, "a file the manifest does not list"
                         + ("; the recorder's reserve holds only zeros, this one does not" if name == RESERVE_NAME else ""))
            elif name in (ROUTE_NAME, LOCK_NAME) and not entry.is_file(follow_symlinks=False):
                self.add(name, EXTRA_FILE, "not a regular file")
            elif name == LOCK_NAME and entry.stat(follow_symlinks=False).st_size:
                # The writers' flock file is always empty: content there is something smuggled in.
                self.add(name, EXTRA_FILE, "the recording lock file should be empty")

    def check_extra_in(self, folder: str) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root / folder):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for d in sorted(dirnames):
                self.add(f"{rel_dir}/{d}/", EXTRA_FILE, "a folder the manifest does not list")
            dirnames.clear()  # nothing the recorder writes is nested deeper
            for fn in sorted(filenames):
                rel = f"{rel_dir}/{fn}"
                if rel not in self.known:
                    recorded = rel in self.fragments.get(folder, {})
                    self.add(rel, EXTRA_FILE, "a file the manifest does not list"
                             + ("; fragments.jsonl records it: a segment taken out of the manifest" if recorded else ""))

    def check_state(self) -> None:
        if self.manifest is None or self.finished:
            return
        if self.open_segments == 0:
            self.add(MANIFEST_NAME, INTERRUPTED,
                     f"the session did not finish (state {self.state!r}); every segment listed was closed "
                     f"and verified ({self.counts['segments']})")

    # -- checkpoints.jsonl
    def check_checkpoints(self) -> None:
        """The session against the last valid checkpoint signed while recording (checkpoints.py)."""
        st = read_checkpoints(self.root)
        m = self.manifest
        v1 = m is not None and m.get("format") == FORMAT_V1
        if not st.present:
            if m is not None and not v1:
                self.add(CHECKPOINTS_NAME, BAD_CHECKPOINT, "missing: a format 2 session signs its opening record "
                                                            "and chain heads while recording")
            return
        self.known.add(CHECKPOINTS_NAME)
        for why in st.problems:
            self.add(CHECKPOINTS_NAME, BAD_CHECKPOINT, why + f"; only checkpoints 1-{st.valid} count")
        if st.opening is None:
            return
        self.checkpoint_key = st.public_key
        sig = (m or {}).get("signature")
        if isinstance(sig, dict) and st.public_key and sig.get("public_key") != st.public_key:
            self.add(MANIFEST_NAME, BAD_SIGNATURE, f"signed by key {_fp(sig.get('public_key'))}, the checkpoints "
                                                   f"by key {_fp(st.public_key)}: re-signed by another key")
        if m is None:
            return
        changed = [k for k in OPENING_FIELDS if m.get(k) != st.opening.get(k)]
        cc = st.opening.get("clock_check")
        if cc is not None and m.get("clock_check") != cc:
            changed.append("clock_check")
        for k in changed:
            what = ", ".join(sorted(x for x in set(m.get(k) or {}) | set(st.opening.get(k) or {})
                                    if (m.get(k) or {}).get(x) != (st.opening.get(k) or {}).get(x))) \
                if isinstance(m.get(k), dict) and isinstance(st.opening.get(k), dict) else ""
            self.add(MANIFEST_NAME, CONTRADICTS_CHECKPOINT,
                     f"{k}{' (' + what + ')' if what else ''} differs from the opening record signed before the "
                     "first frame: changed after the start")
        if st.finish is not None:
            if self.state != "finished":
                self.add(MANIFEST_NAME, CONTRADICTS_CHECKPOINT,
                         f"checkpoint {st.finish.get('seq')} records that the session finished and its manifest was "
                         f"signed; this manifest says {self.state!r}: the finished session was changed")
            elif sha256_hex(_read(self.root / MANIFEST_NAME)) != st.finish.get("manifest_sha256"):
                self.add(MANIFEST_NAME, CONTRADICTS_CHECKPOINT,
                         f"not the manifest checkpoint {st.finish.get('seq')} records as signed at the finish")
        heads = st.last_heads
        if heads is None:
            self.checkpoint = {"seq": st.opening.get("seq"), "type": "open", "pts_s": None}
            return
        self.checkpoint = {"seq": heads.get("seq"), "type": "heads", "pts_s": heads.get("pts_s"),
                           "t_utc": heads.get("t_utc"), "events": heads.get("events"),
                           "fragments": heads.get("fragments"), "segments": heads.get("segments")}

    def check_checkpoint_heads(self) -> None:
        """Everything below the last checkpoint's heads is still there, unchanged. Run after the
        chain checks: a log whose own chain already shows the change is not reported twice; this
        catches the change made with the chain (and the manifest) rebuilt to match."""
        cp, m = self.checkpoint, self.manifest
        if cp is None or cp.get("type") != "heads" or m is None:
            return
        heads = cp
        where = f"checkpoint {heads.get('seq')} (pts {heads.get('pts_s')} s)"
        self._check_log_head(EVENTS_NAME, heads.get("events"), where, REMOVED_EVENT)
        for stream, head in (heads.get("fragments") or {}).items():
            self._check_log_head(f"{stream}/{FRAGMENTS_NAME}", head, where, CHANGED_BYTES)
        now = segment_heads(m)
        for stream, head in (heads.get("segments") or {}).items():
            if not isinstance(head, dict) or not head.get("closed") or self._already_reported(MANIFEST_NAME, stream):
                continue
            got = now.get(stream, {"closed": 0})
            entries = next((s.get("segments") for s in m["streams"] if s.get("name") == stream), None) or []
            n = head["closed"]
            ok = len(entries) >= n and got["closed"] >= n and segment_entry_hash(entries[n - 1]) == head.get("last_sha256")
            if not ok:
                self.add(MANIFEST_NAME, CONTRADICTS_CHECKPOINT,
                         f"stream {stream}: {where} vouches for {n} closed segments; the manifest lists "
                         f"{got['closed']} closed, and not the same ones: segments removed or changed")

    def _already_reported(self, rel: str, stream: str | None = None) -> bool:
        return any(p.kind != INTERRUPTED and p.file == rel and (stream is None or f"stream {stream}" in p.detail)
                   for p in self.problems)

    def _check_log_head(self, rel: str, head: Any, where: str, kind: str) -> None:
        if not isinstance(head, dict) or not head.get("lines") or self._already_reported(rel):
            return
        n, want = head["lines"], head.get("last_sha256")
        path = self.root / rel
        lines = _read_lines(path)[1] if _is_regular(path) else []
        if len(lines) >= n and lines[n - 1] == want:
            return
        self.add(rel, CONTRADICTS_CHECKPOINT,
                 f"{where} vouches for {n} lines; the file has {len(lines)} and "
                 + ("line {n} is not the one signed".format(n=n) if len(lines) >= n else "lacks the rest")
                 + (": lines removed" if len(lines) < n else ": edited"))

    def run(self) -> None:
        self.load_manifest()
        self.check_signature()
        self.check_checkpoints()
        if self.manifest is not None:
            for s in self.manifest["streams"]:
                if isinstance(s.get("name"), str) and s["name"] in self.stream_names:
                    self.check_stream(s)
        else:
            # No usable manifest: still prove what the chained fragment records vouch for.
            for d in sorted(p for p in self.root.iterdir() if (p / FRAGMENTS_NAME).is_file()):
                self.stream_names.append(d.name)
                self.load_fragments(d.name)
                for f, recs in self.fragments[d.name].items():
                    if _safe_rel(f) is not None and _is_regular(self.root / f):
                        self.known.add(f)
                        self.report_open(f, verify_fragments(self.root / f, recs), recs,
                                         note="no manifest to list it")
        self.check_events()
        self.check_checkpoint_heads()
        self.check_photos()
        self.check_telemetry()
        self.check_repaired()
        self.check_extra()
        self.check_state()


def _all_zero(path: Path) -> bool:
    with open_read(path) as f:
        while chunk := f.read(_CHUNK):
            if chunk.count(0) != len(chunk):
                return False
    return True


def _fp(hex_key: Any) -> str:
    try:
        return fingerprint(str(hex_key))
    except ValueError:
        return repr(hex_key)


def _read(path: Path) -> bytes:
    from sessions.evidence.nofollow import read_bytes
    return read_bytes(path)


def _saved_as(rep: dict[str, Any]) -> str | None:
    """Where repair kept the bytes of one ``repaired.files`` entry."""
    v = rep.get("saved_as", rep.get("recovered"))
    return v if isinstance(v, str) and v else None


def _seg_num(entry: dict[str, Any]) -> int | None:
    return segment_number(entry.get("file"))


def verify_session(path: str | os.PathLike[str], expected_public_key: PublicKeyLike | None = None) -> VerifyReport:
    """Check one session folder (or its manifest.json); raise NotASession when it is not one.

    ``expected_public_key`` (PEM or hex text, raw bytes or a key object): the manifest must be
    signed by exactly this key, e.g. the registered key of the device that recorded the exam.
    """
    root = session_root(path)
    check_tree(root)  # SymlinkRefused: the caller refuses (exit 3), naming the link
    if not root.is_dir():
        raise NotASession(f"{root}: not a folder")
    has_any = (root / MANIFEST_NAME).exists() or (root / EVENTS_NAME).exists() or any(
        (p / FRAGMENTS_NAME).exists() for p in root.iterdir() if p.is_dir())
    if not has_any:
        raise NotASession(f"{root}: no manifest.json, events.jsonl or fragments.jsonl: not a session folder")
    v = _Verifier(root, expected_public_key)
    v.run()
    session = (v.manifest or {}).get("session_id") if v.manifest else None
    report = VerifyReport(path=root, session=session if isinstance(session, str) else root.name,
                          state=v.state, problems=v.problems, counts=v.counts, signed_by=v.signed_by,
                          checkpoint=v.checkpoint)
    sig = (v.manifest or {}).get("signature")
    report.public_key = (str(sig.get("public_key")) if isinstance(sig, dict) and v.signed_by else None) or v.checkpoint_key
    report.ok = not report.problems
    log.info("verified %s: %s, %d problems", root, "ok" if report.ok else "not ok", len(report.problems))
    return report
