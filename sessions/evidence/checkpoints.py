"""checkpoints.jsonl: what the device key vouches for while the session is still being recorded.

The manifest is signed once, at the end. Until then everything on disk could be edited by whoever
holds the disk, and a session cut off by a power loss would be signed afterwards by `examrec
repair`, which cannot tell an honest cut from an edited folder. So the recorder signs, as it goes:

* ``open``: the opening record (session id, profile, details, start time, clock, clock check),
  signed before the first frame is captured;
* ``heads``: the heads of every chain (events.jsonl, each stream's fragments.jsonl, the closed
  prefix of each stream's segment list) every INTERVAL_S seconds and at every manifest write
  (every segment opened or closed), only after the bytes those heads name are fsynced;
* ``finish``: after the signed manifest is written, its SHA-256 and state.

Each line is a chained JSON line (sessions/evidence/chain.py) with ``signature``: the Ed25519
signature, in hex, of the RFC 8785 canonical JSON (jcs.py) of the line without ``signature``
(``prev_sha256`` included, so lines cannot be reordered or dropped from the middle). `examrec
verify` checks the session against the last valid checkpoint (verify_checkpoints): anything that
contradicts it, or is missing below its heads, is tampering whatever the manifest's state says.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core import durable
from core.clock import SessionClock, iso_utc
from sessions.evidence.chain import GENESIS, PREV_KEY, ChainedLog, line_hash
from sessions.evidence.jcs import canonicalize
from sessions.evidence.layout import CHECKPOINTS_NAME, EVENTS_NAME, FRAGMENTS_NAME
from sessions.evidence.manifest import segment_entry_hash
from sessions.evidence.nofollow import is_regular, read_bytes

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
SIGNATURE_KEY = "signature"
# The fields of the manifest the opening record fixes; repair and every later write keep them.
OPENING_FIELDS = ("format", "session_id", "profile", "profile_kind", "started_at", "clock", "details")


def jcs_clock(clock: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``clock`` as format 2 writes it: nanosecond stamps as decimal strings
    (they exceed 2**53, which JCS numbers cannot carry exactly)."""
    return {k: (str(v) if k.endswith("_ns") and isinstance(v, int) else v) for k, v in clock.items()}


def signed_bytes(record: Mapping[str, Any]) -> bytes:
    """What a checkpoint's signature covers: JCS of the record without ``signature``."""
    return canonicalize({k: v for k, v in record.items() if k != SIGNATURE_KEY})


@dataclass
class _LogTail:
    """Complete lines of an append-only log read so far: count, hash of the last one, byte offset."""

    path: Path
    lines: int = 0
    last_sha256: str = GENESIS
    offset: int = 0
    seen: bool = False

    def advance(self) -> list[bytes]:
        """Read the complete lines appended since the last call; returns them."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size - self.offset, self.offset) if size > self.offset else b""
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1  # a line still being written is left for next time
        new = data[:end].split(b"\n")[:-1] if end else []
        for line in new:
            self.last_sha256 = line_hash(line)
        self.lines += len(new)
        self.offset += end
        return new

    def head(self) -> dict[str, Any]:
        return {"lines": self.lines, "last_sha256": self.last_sha256}


def _fsync_path(path: Path) -> None:
    """fsync a file another process writes (through core.durable, so the crash harness sees it)."""
    fd = durable.open_fd(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        durable.fsync(fd)
    finally:
        durable.close(fd)


def segment_heads(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stream, the closed prefix of its segment list: how many entries and the hash of the last."""
    heads: dict[str, dict[str, Any]] = {}
    for s in manifest.get("streams") or []:
        closed, last = 0, GENESIS
        for e in s.get("segments") or []:
            if not (e.get("closed") is True and isinstance(e.get("sha256"), str)):
                break
            closed += 1
            last = segment_entry_hash(e)
        heads[s["name"]] = {"closed": closed, "last_sha256": last}
    return heads


class CheckpointLog:
    """The recorder's writer of checkpoints.jsonl (one per session, in the controller process)."""

    def __init__(self, session_dir: Path, key: Ed25519PrivateKey, interval_s: float = INTERVAL_S):
        self.session_dir = Path(session_dir)
        self.key = key
        self.interval_s = interval_s
        self._log = ChainedLog(self.session_dir / CHECKPOINTS_NAME, fsync=True)
        self._events = _LogTail(self.session_dir / EVENTS_NAME)
        self._fragments: dict[str, _LogTail] = {}
        self._clock: SessionClock | None = None
        self._next_due = 0.0
        self.seq = 0

    def _append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        body = {"seq": self.seq, **record, PREV_KEY: self._log.last_hash}
        body[SIGNATURE_KEY] = self.key.sign(signed_bytes(body)).hex()
        self._log.append(body)
        return body

    def begin(self, manifest: Mapping[str, Any], clock_check: Any = None) -> dict[str, Any]:
        """Sign the opening record; call before any stream captures its first frame."""
        from sessions.evidence.signing import public_key_hex
        self._clock = SessionClock.from_json(manifest["clock"])
        opening = {k: manifest.get(k) for k in OPENING_FIELDS}
        rec = self._append({"type": "open", **opening, "clock_check": clock_check,
                            "public_key": public_key_hex(self.key)})
        durable.fsync_dir(self.session_dir)  # checkpoints.jsonl and events.jsonl names survive a cut
        return rec

    def heads(self, manifest: Mapping[str, Any], force: bool = False) -> dict[str, Any] | None:
        """Sign the current heads when INTERVAL_S has passed since the last ones (or ``force``)."""
        now = time.monotonic()
        if not force and now < self._next_due:
            return None
        self._next_due = now + self.interval_s
        self._events.advance()
        if self._events.lines:
            _fsync_path(self._events.path)
        fragments: dict[str, dict[str, Any]] = {}
        for s in manifest.get("streams") or []:
            name = s["name"]
            tail = self._fragments.setdefault(name, _LogTail(self.session_dir / name / FRAGMENTS_NAME))
            new = tail.advance()
            if new and not tail.seen:
                tail.seen = True
                durable.fsync_dir(tail.path.parent)
            # A record may reach the log before its bytes reach the disk: the files it names are
            # fsynced first, then the log, so no checkpoint vouches for bytes a power cut can take.
            files = set()
            for line in new:
                try:
                    files.add(json.loads(line)["file"])
                except (ValueError, KeyError, TypeError):
                    continue
            for f in sorted(files):
                path = self.session_dir / f
                if is_regular(path):
                    _fsync_path(path)
            if tail.lines:
                _fsync_path(tail.path)
            fragments[name] = tail.head()
        pts = None
        t_utc = None
        if self._clock is not None:
            ns = SessionClock.now_ns()
            pts, t_utc = round(self._clock.pts_s(ns), 6), iso_utc(self._clock.wall_utc(ns))
        return self._append({"type": "heads", "t_utc": t_utc, "pts_s": pts, "events": self._events.head(),
                             "fragments": fragments, "segments": segment_heads(manifest)})

    def finish(self, manifest_bytes: bytes, state: str) -> dict[str, Any]:
        """After the signed manifest is on disk: its hash, so nothing can pass for an earlier state."""
        from sessions.evidence.manifest import sha256_hex
        return self._append({"type": "finish", "state": state, "manifest_sha256": sha256_hex(manifest_bytes)})

    def close(self) -> None:
        self._log.close()


# ---------------------------------------------------------------------------------------------
# Reading and checking


@dataclass
class CheckpointState:
    """checkpoints.jsonl read back: the valid prefix and what went wrong after it."""

    present: bool = False
    public_key: str | None = None
    opening: dict[str, Any] | None = None
    last_heads: dict[str, Any] | None = None
    finish: dict[str, Any] | None = None
    valid: int = 0
    problems: list[str] = field(default_factory=list)   # tampering: a bad signature or a broken chain
    torn: bool = False                                   # a last line cut by the interruption


def read_checkpoints(session_dir: Path) -> CheckpointState:
    """Read and check checkpoints.jsonl. The valid prefix ends at the first line that is not a
    signed, chained record of the opening key; a torn last line (no newline) is an interruption."""
    st = CheckpointState()
    path = Path(session_dir) / CHECKPOINTS_NAME
    if not is_regular(path):
        return st
    st.present = True
    data = read_bytes(path)
    lines = data.split(b"\n")
    st.torn = lines[-1] != b""
    prev = GENESIS
    pub: Ed25519PublicKey | None = None
    for i, raw in enumerate(lines[:-1], start=1):
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            st.problems.append(f"line {i} is not a JSON object")
            break
        if rec.get(PREV_KEY) != prev:
            st.problems.append(f"line {i} does not follow line {i - 1}: checkpoints edited, removed or reordered")
            break
        if rec.get("seq") != i:
            st.problems.append(f"line {i} says it is checkpoint {rec.get('seq')!r}")
            break
        if i == 1:
            if rec.get("type") != "open":
                st.problems.append("line 1 is not the opening record")
                break
            try:
                pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(rec.get("public_key"))))
            except ValueError:
                st.problems.append("the opening record's public_key is not an Ed25519 key")
                break
        assert pub is not None
        try:
            pub.verify(bytes.fromhex(str(rec.get(SIGNATURE_KEY, ""))), signed_bytes(rec))
        except (InvalidSignature, ValueError):
            st.problems.append(f"line {i} ({rec.get('type')}) is not signed by the key of the opening record "
                               "(changed after it was signed)")
            break
        prev = line_hash(raw)
        st.valid = i
        kind = rec.get("type")
        if kind == "open":
            st.opening, st.public_key = rec, str(rec["public_key"])
        elif kind == "heads":
            st.last_heads = rec
        elif kind == "finish":
            st.finish = rec
    return st
