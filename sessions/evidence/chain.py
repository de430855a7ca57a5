"""Append-only JSON-lines files chained by hash: each line carries the SHA-256 of the line before.

Used for events.jsonl, fragments.jsonl and the journals. Removing, editing or reordering a line
breaks the chain at that line, which `examrec verify` reports.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from core import durable

GENESIS = "0" * 64
PREV_KEY = "prev_sha256"


def line_hash(line: bytes) -> str:
    """Hash of one stored line, without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def encode_record(record: dict[str, Any], prev: str) -> bytes:
    """The exact bytes of one chained line (UTF-8, names in any script kept as written)."""
    body = dict(record)
    body[PREV_KEY] = prev
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=False).encode() + b"\n"


class ChainedLog:
    """A hash-chained JSONL file opened for appending; thread-safe; each append is fsynced
    when ``fsync`` is true (events are rare and precious; fragments are fsynced with their file)."""

    def __init__(self, path: Path, fsync: bool = True):
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._last = last_hash(self.path)
        self.lines = _complete_lines(self.path)
        self._fd = durable.open_fd(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @property
    def last_hash(self) -> str:
        return self._last

    def append(self, record: dict[str, Any]) -> str:
        """Append one record; returns the hash of the stored line."""
        with self._lock:
            data = encode_record(record, self._last)
            durable.append(self._fd, data)
            if self._fsync:
                durable.fsync(self._fd)
            self._last = line_hash(data)
            self.lines += 1
            return self._last

    def sync(self) -> None:
        with self._lock:
            if self._fd >= 0:
                durable.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                durable.fsync(self._fd)
                durable.close(self._fd)
                self._fd = -1


def _complete_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


def last_hash(path: Path) -> str:
    """Hash of the last complete line of an existing log (genesis when empty or absent).
    A torn last line (no newline: the writer died mid-write) is ignored."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return GENESIS
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is torn or empty
    return line_hash(complete[-1]) if complete else GENESIS


@dataclass
class ChainProblem:
    line: int  # 1-based
    kind: str  # "broken-chain" | "unparsable" | "torn-tail"
    detail: str


def read_chain(path: Path) -> tuple[list[dict[str, Any]], list[ChainProblem]]:
    """Read and check a chained log: the records, and every place the chain does not hold."""
    records: list[dict[str, Any]] = []
    problems: list[ChainProblem] = []
    data = Path(path).read_bytes()
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] != b"":
        problems.append(ChainProblem(len(raw_lines), "torn-tail", "last line has no newline (writer interrupted)"))
    prev = GENESIS
    for i, raw in enumerate(raw_lines[:-1], start=1):
        try:
            rec = json.loads(raw)
        except ValueError as exc:
            problems.append(ChainProblem(i, "unparsable", str(exc)))
            prev = line_hash(raw)
            continue
        if rec.get(PREV_KEY) != prev:
            problems.append(ChainProblem(i, "broken-chain", f"line {i} does not follow line {i - 1} (edited, removed or reordered)"))
        records.append(rec)
        prev = line_hash(raw)
    return records, problems


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a chained log without checking (complete lines only)."""
    records, _ = read_chain(path)
    yield from records
