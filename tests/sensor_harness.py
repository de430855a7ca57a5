"""Helpers for the sensor tests: event collectors, fixture slices, a live GPS feeding a real gpsd,
and an independent reading of the pedal schedule (what the tests expect, computed without the
code under test)."""
from __future__ import annotations

import contextlib
import functools
import operator
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sensors.replay import free_port, gpsd_answers

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "bench" / "fixtures"
EXAM_NMEA = FIXTURES / "exam-drive.nmea"
EXAM_PEDAL = FIXTURES / "exam.pedal"
EXAMREC = [sys.executable, "-m", "sessions.cli"]


class Collector:
    """A thread-safe sink for events (``EventLog.emit``'s signature) or samples, with waiting."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        self.add({"type": type_, "capture_ns": capture_ns, **fields})

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.items)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.snapshot() if isinstance(e, dict) and e.get("type") == type_]

    def wait_for(self, pred: Callable[[Any], bool], timeout_s: float, after: int = 0) -> Any:
        """The first item (from index ``after``) for which ``pred`` holds, or None at the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for item in self.items[after:]:
                    if pred(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


# ---------------------------------------------------------------------------------------------
# NMEA
def nmea_header_and_epochs(path: Path = EXAM_NMEA) -> tuple[str, list[str]]:
    """The header text and the epochs of a fixture: each epoch is the text of its chunks (text
    between the '@' delimiter lines; an epoch starts with the chunk holding its GGA), with the
    delimiters between its chunks kept."""
    with open(path, encoding="ascii", newline="") as fh:  # keep NMEA's CR LF
        lines = fh.read().splitlines(keepends=True)
    head = "".join(line for line in lines if line.startswith("#"))
    body = "".join(line for line in lines if not line.startswith("#"))
    chunks = [c.lstrip("\n") for c in body.split("@\n") if c.strip()]
    epochs: list[str] = []
    for chunk in chunks:
        if chunk.startswith("$GPGGA") or not epochs:
            epochs.append(chunk)
        else:
            epochs[-1] += "@\n" + chunk
    return head, epochs


def write_nmea_slice(dst: Path, first: int, count: int, src: Path = EXAM_NMEA) -> Path:
    """A fixture made of epochs [first, first+count) of ``src``, with its header."""
    head, epochs = nmea_header_and_epochs(src)
    with open(dst, "w", encoding="ascii", newline="") as fh:
        fh.write(head)
        for epoch in epochs[first:first + count]:
            fh.write(epoch + "@\n")
    return dst


def _nmea(body: str) -> bytes:
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}\r\n".encode()


class LiveGps:
    """A real gpsd reading a pty into which a thread writes RMC+GGA once a second, stamped with
    the system clock plus ``offset_s`` at the moment of writing: a receiver whose time is known
    exactly relative to this machine's clock (what the clock check must measure)."""

    def __init__(self, tmp: Path, offset_s: float = 0.0):
        self.tmp = Path(tmp)
        self.offset_s = offset_s
        self.valid = True
        self.port = free_port()
        self.url = f"gpsd://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._master = self._slave = -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LiveGps":
        gpsd = shutil.which("gpsd") or shutil.which("gpsd", path="/usr/sbin:/sbin")
        assert gpsd, "gpsd is not installed (Debian package gpsd, in .ci/apt-packages)"
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        name = os.ttyname(self._slave)
        os.chmod(name, 0o666)  # gpsd may drop root before it reopens the device
        env = dict(os.environ, GPSD_SHM_KEY=f"0x4770{self.port:04X}")
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()
        with open(self.tmp / "gpsd.log", "wb") as log:
            self._proc = subprocess.Popen(
                [gpsd, "-N", "-n", "-b", "-S", str(self.port), "-F", str(self.tmp / "gpsd.sock"), name],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 15
        while not gpsd_answers(self.port, timeout_s=0.5):
            assert self._proc.poll() is None, (self.tmp / "gpsd.log").read_text()
            assert time.monotonic() < deadline, "gpsd did not answer within 15 s"
            time.sleep(0.05)
        return self

    def _feed(self) -> None:
        while not self._stop.is_set():
            t = datetime.now(timezone.utc) + timedelta(seconds=self.offset_s)
            hms = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
            date = t.strftime("%d%m%y")
            if self.valid:
                data = (_nmea(f"GPRMC,{hms},A,5024.73800,N,03038.04600,E,0.00,,{date},,,A")
                        + _nmea(f"GPGGA,{hms},5024.73800,N,03038.04600,E,1,10,0.9,112.0,M,26.5,M,,"))
            else:
                data = _nmea(f"GPRMC,{hms},V,,,,,,,{date},,,N") + _nmea(f"GPGGA,{hms},,,,,0,00,,,M,,M,,")
            with contextlib.suppress(OSError):
                os.write(self._master, data)
            self._stop.wait(1.0)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(5)
        if self._thread is not None:
            self._thread.join(2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        subprocess.run(["ipcrm", "-M", f"0x4770{self.port:04X}"], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------
# pedals: the expected results, read from the schedule with simple code of the tests' own
@dataclass(frozen=True)
class Expected:
    pedal: str
    start_s: float
    end_s: float
    peak: float


def sentence_values(data: bytes) -> tuple[int, float | None, float | None] | None:
    """(seq, brake, clutch) of a well-formed EXPDL line within 82 bytes, else None."""
    text = data.rstrip(b"\r\n")
    if len(data) > 82 or not text.startswith(b"$EXPDL,") or b"*" not in text:
        return None
    body, _, hh = text[1:].rpartition(b"*")
    if functools.reduce(operator.xor, body, 0) != int(hh, 16):
        return None
    f = body.decode().split(",")
    if len(f) != 5:
        return None
    return int(f[1]), (float(f[3]) if f[3] else None), (float(f[4]) if f[4] else None)


def expected_actuations(entries: Sequence[Any], threshold: float = 20.0, debounce_s: float = 0.030) -> list[Expected]:
    """Threshold crossings of each pedal in schedule order; presses and releases shorter than
    the debounce are dropped or merged."""
    out: list[Expected] = []
    for index, pedal in ((1, "brake"), (2, "clutch")):
        spans: list[list[float]] = []  # [start, end, peak]
        pressed = False
        for e in entries:
            v = sentence_values(e.data)
            if v is None or v[index] is None:
                continue
            above = v[index] >= threshold
            if above and not pressed:
                if spans and spans[-1][1] is not None and e.offset_s - spans[-1][1] < debounce_s:
                    spans[-1][1] = None  # a dip: the release did not last
                else:
                    spans.append([e.offset_s, None, v[index]])
                pressed = True
            elif not above and pressed:
                spans[-1][1] = e.offset_s
                pressed = False
            if above:
                spans[-1][2] = max(spans[-1][2], v[index])
        for start, end, peak in spans:
            if end is not None and end - start >= debounce_s:
                out.append(Expected(pedal, start, end, peak))
    return sorted(out, key=lambda x: (x.start_s, x.pedal))


def valid_seqs(entries: Sequence[Any]) -> list[int]:
    return [v[0] for e in entries if (v := sentence_values(e.data)) is not None]


def heartbeats(start_s: float, end_s: float, every_s: float, first_seq: int,
               brake: int = 0, clutch: int = 0) -> list[Any]:
    """Entries of a sensor at rest sending a heartbeat every ``every_s`` in [start_s, end_s)."""
    from sensors.pedal_protocol import format_sentence
    from sensors.replay import PedalEntry
    out = []
    n = 0
    while start_s + n * every_s < end_s - 1e-9:
        t = round(start_s + n * every_s, 3)
        out.append(PedalEntry(t, format_sentence(first_seq + n, 1000 + round(t * 1000), brake, clutch)))
        n += 1
    return out


# ---------------------------------------------------------------------------------------------
def run_examrec(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess."""
    return subprocess.run([*EXAMREC, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def no_leftovers(port: int) -> Iterator[None]:
    """Assert that a gpsfake replay on ``port`` left no process, socket or shared memory behind."""
    yield
    shm = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout
    assert f"0x4770{port:04x}" not in shm.lower(), shm
