"""The examrec/1 pedal line protocol: framing bytes into sentences and parsing them.

    $EXPDL,<seq>,<device_ms>,<brake>,<clutch>*<hh>\\r\\n

Transport-free (bytes in, sentences out) so it runs the same under the serial reader, on a
fixture file and in tests. Every kind of bad input is counted, never raised to the caller:
bytes outside a sentence (noise, wrong baud), partial sentences (a new ``$`` before the end),
overlong lines (over 82 bytes, as NMEA 0183), bad checksums, unknown sentence types and
malformed fields. See /work/shared/PEDAL-PROTOCOL.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

from sensors.nmea import checksum

log = logging.getLogger(__name__)

TALKER = "EXPDL"
MAX_LINE = 82  # bytes from '$' to '\n' inclusive, NMEA 0183's limit
SEQ_MOD = 1 << 16
DEVICE_MS_MOD = 1 << 32


@dataclass(frozen=True)
class PedalSentence:
    """One parsed sentence; ``brake``/``clutch`` are percent 0..100 or None (sensor absent)."""

    seq: int
    device_ms: int
    brake: float | None
    clutch: float | None


def format_sentence(seq: int, device_ms: int, brake: float | None, clutch: float | None) -> bytes:
    """The bytes a sensor board sends (for fixtures, the bench and tests)."""
    def pct(v: float | None) -> str:
        return "" if v is None else (f"{v:g}" if v != int(v) else str(int(v)))
    body = f"{TALKER},{seq % SEQ_MOD},{device_ms % DEVICE_MS_MOD},{pct(brake)},{pct(clutch)}"
    return f"${body}*{checksum(body):02X}\r\n".encode("ascii")


class SentenceError(ValueError):
    """Why a complete line is not a usable sentence; ``kind`` is the counter it goes to."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def parse_sentence(line: bytes) -> PedalSentence:
    """Parse one complete line (``$`` .. ``\\n``); raises SentenceError with kind
    ``bad_checksum``, ``unknown_type`` or ``malformed``."""
    text = line.rstrip(b"\r\n")
    star = text.rfind(b"*")
    if not text.startswith(b"$") or star < 0 or len(text) - star != 3:
        raise SentenceError("malformed", f"no '*hh' checksum at the end of {text[:40]!r}")
    body = text[1:star]
    try:
        want = int(text[star + 1:], 16)
    except ValueError:
        raise SentenceError("malformed", f"checksum {text[star + 1:]!r} is not hex") from None
    got = checksum(body)
    if got != want:
        raise SentenceError("bad_checksum", f"checksum {want:02X} but the bytes give {got:02X}: {text[:40]!r}")
    try:
        fields = body.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise SentenceError("malformed", f"non-ASCII bytes in {text[:40]!r}") from None
    if fields[0] != TALKER:
        raise SentenceError("unknown_type", f"unknown sentence type {fields[0]!r}")
    if len(fields) != 5:
        raise SentenceError("malformed", f"{len(fields) - 1} fields, expected 4: {text[:40]!r}")
    try:
        seq = int(fields[1])
        device_ms = int(fields[2])
        brake = _percent(fields[3])
        clutch = _percent(fields[4])
    except ValueError as exc:
        raise SentenceError("malformed", f"{exc}: {text[:40]!r}") from None
    if not 0 <= seq < SEQ_MOD or not 0 <= device_ms < DEVICE_MS_MOD:
        raise SentenceError("malformed", f"seq or device_ms out of range: {text[:40]!r}")
    return PedalSentence(seq, device_ms, brake, clutch)


def _percent(text: str) -> float | None:
    if text == "":
        return None
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"travel {value} outside 0..100 %")
    return value


@dataclass
class FramerCounters:
    """Byte-level faults found while framing."""

    noise_bytes: int = 0     # bytes outside any sentence (CR and LF between lines excepted)
    partial: int = 0         # a sentence cut off by the start of the next one
    overlong: int = 0        # lines over MAX_LINE bytes


@dataclass
class LineFramer:
    """Splits a byte stream into ``$``..``\\n`` lines, each stamped with the stamp of the chunk
    that brought its last byte (the moment the sentence was complete)."""

    counters: FramerCounters = field(default_factory=FramerCounters)
    _buf: bytearray = field(default_factory=bytearray)
    _skipping: bool = False  # inside an overlong line: drop bytes until its end

    def reset(self) -> None:
        """Forget a half-received line (the port was reopened)."""
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes, stamp_ns: int) -> Iterator[tuple[bytes, int]]:
        """Complete lines in ``data`` (with what was buffered before), as (line, stamp_ns)."""
        i, n = 0, len(data)
        while i < n:
            if self._skipping:
                j = _find_any(data, i, b"\n", b"$")
                if j < 0:
                    return
                self._skipping = False
                i = j + 1 if data[j] == 0x0A else j
                continue
            if not self._buf:
                j = data.find(b"$", i)
                stop = n if j < 0 else j
                self.counters.noise_bytes += sum(1 for b in data[i:stop] if b not in (0x0D, 0x0A))
                if j < 0:
                    return
                self._buf.append(0x24)
                i = j + 1
                continue
            j = _find_any(data, i, b"\n", b"$")
            if j < 0:
                self._buf += data[i:]
                i = n
                if len(self._buf) > MAX_LINE:
                    self._overlong()
                continue
            if data[j] == 0x24:  # '$' before the end: the line so far lost its tail
                if len(self._buf) + (j - i) > MAX_LINE:  # however it was split into reads
                    self.counters.overlong += 1
                else:
                    self.counters.partial += 1
                    log.debug("partial sentence dropped: %r", bytes(self._buf[:40]))
                self._buf.clear()
                self._buf.append(0x24)
                i = j + 1
                continue
            self._buf += data[i:j + 1]
            i = j + 1
            line = bytes(self._buf)
            self._buf.clear()
            if len(line) > MAX_LINE:
                self.counters.overlong += 1
                log.debug("overlong line (%d bytes) dropped", len(line))
                continue
            yield line, stamp_ns

    def _overlong(self) -> None:
        self.counters.overlong += 1
        log.debug("overlong line (over %d bytes) dropped", MAX_LINE)
        self._buf.clear()
        self._skipping = True


def _find_any(data: bytes, start: int, a: bytes, b: bytes) -> int:
    ia = data.find(a, start)
    ib = data.find(b, start)
    if ia < 0:
        return ib
    if ib < 0:
        return ia
    return min(ia, ib)


class RateLimitedLog:
    """Logs the first problem of each kind at once, then at most one summary per ``interval_s``,
    so a wrong baud rate does not flood the log."""

    def __init__(self, logger: logging.Logger, prefix: str, interval_s: float = 10.0):
        self._log = logger
        self._prefix = prefix
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, detail: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is None or now - last >= self._interval:
            more = self._suppressed.pop(kind, 0)
            extra = f" (and {more} more since)" if more else ""
            self._log.warning("%s: %s: %s%s", self._prefix, kind, detail, extra)
            self._last[kind] = now
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
