"""GPS through gpsd: every TPV report of gpsd's ``?WATCH`` JSON stream, stamped on the session clock.

We talk to gpsd over a plain TCP socket instead of using gpsd-py3: that library polls (``?POLL``)
so it sees one snapshot per call, reports altitude 0 and misses reports between polls. The
watch stream delivers every report the moment gpsd makes it, which is also the moment we stamp.

The reader runs in its own thread, reconnects by itself with backoff when gpsd is gone or
restarts, and tells the recorder through callbacks (run from a dispatcher thread, see
:mod:`sensors.dispatch`):

- ``on_fix(fix: GpsFix)`` for every TPV report (with or without a fix);

Speed: gpsd 3.22 reports an NMEA receiver's epoch twice when it takes GGA for a sentence that
ends a cycle (it does after one lost RMC): once from GGA, with a speed gpsd computes from the
position change (tens of km/h off with a receiver's metre-scale jitter), once from RMC with the
receiver's own Doppler speed and course. The watch also asks for the raw NMEA sentences, which
gpsd sends just before the report it builds from them, so the reader knows the receiver's own
speed of every epoch (RMC, VTG). A report gets ``speed_source`` "receiver" when its speed is the
receiver's, "gpsd" when it is gpsd's estimate. What the picture shows (:attr:`GpsState.speed_kmh`)
is the receiver's latest speed; gpsd's estimate only when the receiver sends no speed at all.
- ``on_event(type_, capture_ns=..., **fields)`` (``EventLog.emit``'s signature) for
  ``gps`` (fix acquired or lost), ``fault`` (gpsd unreachable) and ``recovered``.
"""
from __future__ import annotations

import bisect
import json
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from core.clock import NS_PER_S, SessionClock

from sensors.dispatch import Closeable, Dispatcher, EventSink
from sensors.nmea import KNOT_MPS, NmeaError, nmea_time_ms, split_sentence
from sensors.priority import raise_thread_priority

log = logging.getLogger(__name__)

DEFAULT_PORT = 2947
# "pps" makes gpsd send TOFF too; "nmea" the receiver's raw sentences (for its own speed).
WATCH = b'?WATCH={"enable":true,"json":true,"nmea":true,"pps":true}\n'
RECEIVER_SPEED_S = 3.0  # a receiver that sent a speed this recently sends speeds: gpsd's own estimate is ignored
MAX_LINE = 1 << 20  # gpsd's longest reports (SKY with many satellites) are a few KiB


def parse_gpsd_url(url: str) -> tuple[str, int]:
    """``gpsd://HOST[:PORT]`` to (host, port); the port defaults to gpsd's 2947."""
    parts = urlsplit(url)
    if parts.scheme != "gpsd" or not parts.hostname:
        raise ValueError(f"{url!r} is not a gpsd URL: write gpsd://HOST:PORT, e.g. gpsd://127.0.0.1:2947")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number 1..65535") from None
    return parts.hostname, port


def iso_to_ns(text: str) -> int:
    """gpsd's ISO-8601 UTC time ("2025-05-15T06:00:00.000Z") as integer nanoseconds since the epoch."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # gpsd's times are UTC
    whole = dt.replace(microsecond=0)
    return int(whole.timestamp()) * NS_PER_S + dt.microsecond * 1000


def _number(value: Any, lo: float, hi: float) -> float | None:
    """A finite number within [lo, hi] (bool is not a number here), else None."""
    if type(value) not in (int, float) or not lo <= value <= hi:  # NaN fails the comparison too
        return None
    return value


def _text(value: Any, limit: int = 256) -> str | None:
    """A short string that can be written out as UTF-8, else None."""
    if not isinstance(value, str) or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


@dataclass(frozen=True)
class GpsFix:
    """One TPV report. ``capture_ns`` is CLOCK_MONOTONIC when the report's line arrived.

    ``mode`` is gpsd's: 0 unknown, 1 no fix, 2 2D, 3 3D. ``speed_mps`` and ``track_deg`` (course
    over ground, degrees from true north) and ``alt_m`` (above mean sea level) are None when the
    report has none.
    """

    capture_ns: int
    mode: int
    time_utc: str | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    device: str | None = None
    speed_source: str | None = None  # "receiver" (RMC/VTG) or "gpsd" (computed from positions)

    @property
    def has_fix(self) -> bool:
        return self.mode >= 2 and self.lat is not None and self.lon is not None

    @property
    def speed_kmh(self) -> float | None:
        return None if self.speed_mps is None else self.speed_mps * 3.6

    @classmethod
    def from_tpv(cls, tpv: dict[str, Any], capture_ns: int) -> "GpsFix":
        """Build from gpsd's TPV object (gpsd >= 3.20 has altMSL; older ones only alt). A value of
        the wrong type or out of range (a broken gpsd or receiver) is left out; a position out of
        range drops the position, so such a report never counts as a fix."""
        alt = _number(tpv.get("altMSL", tpv.get("alt")), -1e5, 1e6)
        lat, lon = _number(tpv.get("lat"), -90, 90), _number(tpv.get("lon"), -180, 180)
        if lat is None or lon is None:
            lat = lon = None
        mode = tpv.get("mode", 0)
        return cls(
            capture_ns=capture_ns, mode=mode if type(mode) is int and 0 <= mode <= 3 else 0,
            time_utc=_text(tpv.get("time")), lat=lat, lon=lon, alt_m=alt,
            speed_mps=_number(tpv.get("speed"), 0, 1e4), track_deg=_number(tpv.get("track"), -360, 720),
            device=_text(tpv.get("device")),
        )

    def to_record(self, clock: SessionClock | None = None) -> dict[str, Any]:
        """The telemetry.jsonl line for this report (``type`` "gps"; absent values left out)."""
        rec: dict[str, Any] = {"type": "gps", "capture_ns": self.capture_ns}
        if clock is not None:
            rec["pts_s"] = round(clock.pts_s(self.capture_ns), 6)
        for key, value in (("time", self.time_utc), ("mode", self.mode), ("lat", self.lat), ("lon", self.lon),
                           ("alt", self.alt_m), ("speed", self.speed_mps), ("track", self.track_deg),
                           ("device", self.device), ("speed_source", self.speed_source if self.speed_mps is not None else None)):
            if value is not None:
                rec[key] = value
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "GpsFix":
        """Inverse of :meth:`to_record`."""
        return cls(capture_ns=int(rec.get("capture_ns", 0)), mode=int(rec.get("mode", 0)), time_utc=rec.get("time"),
                   lat=rec.get("lat"), lon=rec.get("lon"), alt_m=rec.get("alt"), speed_mps=rec.get("speed"),
                   track_deg=rec.get("track"), device=rec.get("device"), speed_source=rec.get("speed_source"))


@dataclass(frozen=True)
class GpsState:
    """What the overlay and `examrec status` show: is gpsd there, is there a fix, the last fix,
    and the speed to show (the receiver's own; gpsd's estimate only from a receiver without one)."""

    connected: bool = False
    fix: bool = False
    reason: str = "not started"
    last_fix: GpsFix | None = None  # the last report that had a position
    last_report_ns: int | None = None
    speed_mps: float | None = None  # the speed to show, see the module docstring
    speed_source: str | None = None
    speed_fix: GpsFix | None = None  # the report that speed came from

    @property
    def speed_kmh(self) -> float | None:
        """The speed the picture shows while there is a fix (None: no fix or no speed known)."""
        if not self.fix or self.last_fix is None or self.speed_mps is None:
            return None
        return self.speed_mps * 3.6

    @property
    def label(self) -> str:
        """Short overlay text: the speed, ``GPS: fix`` (a fix without any speed yet), or ``GPS: no fix``."""
        if not self.fix or self.last_fix is None:
            return "GPS: no fix"
        kmh = self.speed_kmh
        return "GPS: fix" if kmh is None else f"{kmh:.0f} km/h"


@dataclass(frozen=True)
class TimeSample:
    """GPS time against the system clock, for the clock check.

    ``source`` "toff": gpsd's TOFF report (system time when the first byte of the receiver's
    cycle arrived); "tpv": the report's time against the system time when the line arrived.
    """

    gps_ns: int
    system_ns: int
    capture_ns: int
    source: str

    @property
    def offset_s(self) -> float:
        """GPS time minus system time: positive when the system clock is behind."""
        return (self.gps_ns - self.system_ns) / NS_PER_S


class GpsTimeGuard:
    """Flags reports whose GPS time disagrees with the session's own clock.

    Between two reports the GPS time must advance as the monotonic clock does. A report whose
    (GPS time - capture time) differs from the accepted reports' by more than ``tolerance_s`` is
    an outlier (a receiver's bad epoch, a report dated a day ahead): it is flagged instead of
    becoming the route's new latest point, which would hide every later good fix. When
    ``confirm`` consecutive reports agree with each other but not with the reference, the
    reference was the bad one (or the receiver's time really stepped) and they become it.
    """

    def __init__(self, tolerance_s: float = 5.0, confirm: int = 3):
        self.tolerance_ns = int(tolerance_s * NS_PER_S)
        self.confirm = confirm
        self._offset: int | None = None
        self._candidates: list[int] = []
        self.flagged = 0

    def reset(self) -> None:
        """Forget the reference (gpsd reconnected: the next reports may come from another receiver)."""
        self._offset = None
        self._candidates.clear()

    def accept(self, fix: GpsFix) -> bool:
        """True when the report's time fits the session's timeline (reports without a time fit)."""
        if not fix.time_utc:
            return True
        try:
            offset = iso_to_ns(fix.time_utc) - fix.capture_ns
        except (ValueError, OverflowError):
            self.flagged += 1
            return False
        if self._offset is None or abs(offset - self._offset) <= self.tolerance_ns:
            self._offset = offset
            self._candidates.clear()
            return True
        if self._candidates and abs(offset - self._candidates[-1]) > self.tolerance_ns:
            self._candidates.clear()
        self._candidates.append(offset)
        if len(self._candidates) >= self.confirm:
            self._offset = offset
            self._candidates.clear()
            return True
        self.flagged += 1
        return False


def route_fixes(records: Iterable[dict[str, Any]]) -> list[GpsFix]:
    """The telemetry's GPS records as the live route took them: reports flagged ``time_outlier``
    left out, and gpsd's own speed estimate dropped where the receiver sent speeds of its own
    (within RECEIVER_SPEED_S), so a route rebuilt by `examrec export-gpx` matches the live one."""
    recs = [r for r in records if not r.get("time_outlier")]
    receiver_ns = sorted(int(r.get("capture_ns", 0)) for r in recs if r.get("speed_source") == "receiver")
    window = int(RECEIVER_SPEED_S * NS_PER_S)
    out = []
    for r in recs:
        fix = GpsFix.from_record(r)
        if fix.speed_source == "gpsd":
            i = bisect.bisect_right(receiver_ns, fix.capture_ns)
            if i > 0 and fix.capture_ns - receiver_ns[i - 1] < window:
                fix = replace(fix, speed_mps=None, track_deg=None, speed_source=None)
        out.append(fix)
    return out


@dataclass
class _Counters:
    reports: int = 0
    tpv: int = 0
    with_fix: int = 0
    bad_lines: int = 0
    connects: int = 0
    disconnects: int = 0


class GpsReader:
    """Reads gpsd's watch stream in a thread; see the module docstring for the callbacks.

    ``stale_s``: a connected gpsd that sends no TPV for this long means no fix (receiver
    unplugged). Reconnect waits ``backoff_initial_s``, doubling up to ``backoff_max_s``.
    ``owned`` is closed by :meth:`stop` (a replay gpsd started for this reader).
    """

    def __init__(self, url: str, on_fix: Callable[[GpsFix], Any] | None = None,
                 on_event: EventSink | None = None, *, name: str = "gps", stale_s: float = 3.0,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 5.0,
                 connect_timeout_s: float = 2.0, owned: Closeable | None = None):
        self.url = url
        self.host, self.port = parse_gpsd_url(url)
        self.name = name
        self.on_fix = on_fix
        self.on_event = on_event
        self.stale_ns = int(stale_s * NS_PER_S)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self._owned = owned
        self._dispatch = Dispatcher(name)
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = GpsState()
        self._fix_state: bool | None = None  # None: unknown since (re)connect
        self._faulted = False
        self._fault_since_ns = 0
        self._last_tpv_ns: int | None = None
        self._connected_ns: int = 0
        self._samples: deque[TimeSample] = deque(maxlen=32)
        self._epoch_ms: int | None = None  # time of day of the receiver's current epoch (last timed sentence)
        self._rx_speed: dict[int, tuple[float, float | None]] = {}  # epoch ms -> receiver's (m/s, course)
        self._rx_speed_ns: int | None = None  # when the receiver last sent its own speed
        self._n = _Counters()
        self.gpsd_version: str | None = None

    # -- public -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start reading (refuses a second start). Reports carry CLOCK_MONOTONIC stamps, so the
        reader may start before the session clock exists (for the pre-exam checks)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name}: already started")
            self._state = replace(self._state, reason="connecting to gpsd")
            self._dispatch.start()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading, deliver what is queued, close an owned replay; safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        self._dispatch.stop(timeout_s)
        if self._owned is not None:
            owned, self._owned = self._owned, None
            owned.close()

    def state(self) -> GpsState:
        """A snapshot of the current state (cheap; call it for every frame if you like)."""
        with self._lock:
            return self._state

    def counters(self) -> dict[str, int]:
        """Counts for `examrec info`: reports, TPVs, fixes, unreadable lines, connects, disconnects."""
        n = self._n
        return {"reports": n.reports, "tpv": n.tpv, "with_fix": n.with_fix, "bad_lines": n.bad_lines,
                "connects": n.connects, "disconnects": n.disconnects,
                "dropped_callbacks": self._dispatch.dropped, "failed_callbacks": self._dispatch.failed}

    def receiver_sends_speed(self) -> bool:
        """Whether the receiver sent a speed of its own (RMC, VTG) in the last few seconds."""
        return self._receiver_sends_speed(time.monotonic_ns())

    def wait_for_fix(self, timeout_s: float) -> GpsFix | None:
        """Block until there is a fix (or the timeout); the last fix or None."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not self._state.fix:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)
            return self._state.last_fix

    def time_samples(self, n: int, timeout_s: float, max_age_s: float = 5.0) -> list[TimeSample]:
        """Up to ``n`` recent GPS-time samples (none older than ``max_age_s``), waiting at most
        ``timeout_s`` for them. TOFF samples are preferred when gpsd sends them."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                oldest = time.monotonic_ns() - int(max_age_s * NS_PER_S)
                fresh = [s for s in self._samples if s.capture_ns >= oldest]
                toff = [s for s in fresh if s.source == "toff"]
                chosen = toff if toff else fresh
                left = deadline - time.monotonic()
                if len(chosen) >= n or left <= 0:
                    return chosen[-n:]
                self._lock.wait(min(left, 0.25))

    # -- thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        raise_thread_priority(self.name)
        backoff = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                self._lost(f"gpsd at {self.host}:{self.port} does not answer ({exc.strerror or exc}); "
                           f"check that gpsd runs (systemctl status gpsd) and the profile's gps URL")
            else:
                with sock:
                    reason, answered = self._session(sock)
                if answered:
                    backoff = self.backoff_initial_s  # it worked for a while: retry quickly
                if self._stop.is_set():
                    break
                self._lost(reason)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max_s)
        with self._lock:
            self._state = replace(self._state, connected=False, fix=False, reason="stopped")
            self._lock.notify_all()

    def _session(self, sock: socket.socket) -> tuple[str, bool]:
        """Read one connection until it ends; returns why it ended and whether gpsd answered."""
        answered = False
        sock.settimeout(0.25)  # wake up to check for staleness and stop requests
        try:
            sock.sendall(WATCH)
        except OSError as exc:
            return f"gpsd at {self.host}:{self.port} refused the watch request ({exc.strerror or exc})", False
        buf = bytearray()
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                self._check_stale(time.monotonic_ns())
                continue
            except OSError as exc:
                return f"connection to gpsd at {self.host}:{self.port} failed ({exc.strerror or exc})", answered
            # Stamp first: the report arrived now, whatever we do with it afterwards.
            stamp = time.monotonic_ns()
            wall = time.time_ns()
            if not data:
                return (f"gpsd at {self.host}:{self.port} closed the connection (stopped or restarted); "
                        f"reconnecting"), answered
            buf += data
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                if self._handle(line, stamp, wall):
                    answered = True
            if len(buf) > MAX_LINE:
                self._n.bad_lines += 1
                log.warning("%s: gpsd sent %d bytes without a newline; discarded", self.name, len(buf))
                buf.clear()
            self._check_stale(stamp)
        return "stopped", answered

    def _handle(self, line: bytes, stamp: int, wall: int) -> bool:
        """Act on one report line; True when it was a readable gpsd report."""
        if line.startswith(b"$"):
            self._sentence(line, stamp)
            return True
        try:
            report = json.loads(line)
            cls = report["class"]
        except (ValueError, KeyError, TypeError, RecursionError):
            self._n.bad_lines += 1
            log.warning("%s: unreadable line from gpsd: %r", self.name, line[:120])
            return False
        if not isinstance(report, dict) or not isinstance(cls, str):
            self._n.bad_lines += 1
            log.warning("%s: not a gpsd report: %r", self.name, line[:120])
            return False
        self._n.reports += 1
        if cls == "VERSION":
            self.gpsd_version = report.get("release")
            self._connected(stamp)
        elif cls == "TPV":
            self._tpv(report, stamp, wall)
        elif cls == "TOFF":
            self._toff(report, stamp)
        elif cls == "DEVICE" and report.get("activated") == 0:
            self._set_fix(False, stamp, f"GPS receiver {report.get('path')} disappeared from gpsd; check its cable")
        elif cls == "ERROR":
            log.warning("%s: gpsd says: %s", self.name, report.get("message"))
        return True

    def _connected(self, stamp: int) -> None:
        self._n.connects += 1
        self._connected_ns = stamp
        self._last_tpv_ns = None
        with self._lock:
            self._fix_state = None
            self._state = replace(self._state, connected=True, fix=False, reason="waiting for the first fix")
            self._lock.notify_all()
            was_faulted, self._faulted = self._faulted, False
        log.info("%s: connected to gpsd %s at %s:%d", self.name, self.gpsd_version, self.host, self.port)
        if was_faulted:
            self._dispatch.submit(self.on_event, "recovered", capture_ns=stamp, device=self.name,
                                  after_s=round((stamp - self._fault_since_ns) / NS_PER_S, 3),
                                  detail=f"gpsd at {self.host}:{self.port} answers again")

    def _sentence(self, line: bytes, stamp: int) -> None:
        """A raw NMEA sentence from the receiver: note the epoch it belongs to and its own speed."""
        try:
            fields = split_sentence(line.decode("ascii", errors="replace"))
        except NmeaError:
            return  # gpsd passes only sentences that passed its checksum; nothing to learn here
        kind = fields[0][2:]
        try:
            if kind in ("GGA", "RMC", "GNS", "ZDA") and len(fields) > 1 and fields[1]:
                self._epoch_ms = nmea_time_ms(fields[1])
            elif kind == "GLL" and len(fields) > 5 and fields[5]:
                self._epoch_ms = nmea_time_ms(fields[5])
            if self._epoch_ms is None:
                return
            if kind == "RMC" and len(fields) > 8 and fields[2] == "A" and fields[7]:
                self._receiver_speed(float(fields[7]) * KNOT_MPS, float(fields[8]) if fields[8] else None, stamp)
            elif kind == "VTG" and len(fields) > 5 and fields[5] and (len(fields) < 10 or fields[9] != "N"):
                self._receiver_speed(float(fields[5]) * KNOT_MPS, float(fields[1]) if fields[1] else None, stamp)
        except ValueError:
            return

    def _receiver_speed(self, mps: float, course: float | None, stamp: int) -> None:
        if not (0.0 <= mps < 1000.0):
            return
        assert self._epoch_ms is not None
        self._rx_speed[self._epoch_ms] = (mps, course)
        self._rx_speed_ns = stamp
        while len(self._rx_speed) > 8:
            del self._rx_speed[next(iter(self._rx_speed))]

    def _with_speed_source(self, fix: GpsFix, stamp: int) -> GpsFix:
        """The report with the receiver's speed of its epoch when the receiver sent one; else
        marked as carrying gpsd's own estimate."""
        if fix.time_utc:
            try:
                key = (iso_to_ns(fix.time_utc) // 1_000_000) % 86_400_000
            except ValueError:
                key = None
            if key is not None and key in self._rx_speed:
                mps, course = self._rx_speed[key]
                return replace(fix, speed_mps=mps, track_deg=course if course is not None else fix.track_deg,
                               speed_source="receiver")
        if fix.speed_mps is None:
            return fix
        return replace(fix, speed_source="gpsd")

    def _receiver_sends_speed(self, stamp: int) -> bool:
        return self._rx_speed_ns is not None and stamp - self._rx_speed_ns < RECEIVER_SPEED_S * NS_PER_S

    def _tpv(self, report: dict[str, Any], stamp: int, wall: int) -> None:
        try:
            fix = GpsFix.from_tpv(report, stamp)
        except (TypeError, ValueError):
            self._n.bad_lines += 1
            log.warning("%s: a TPV report with unusable values: %r", self.name, str(report)[:120])
            return
        fix = self._with_speed_source(fix, stamp)
        self._n.tpv += 1
        self._last_tpv_ns = stamp
        if fix.has_fix:
            self._n.with_fix += 1
            if fix.time_utc:
                try:
                    gps_ns = iso_to_ns(fix.time_utc)
                except ValueError:
                    log.warning("%s: unreadable time %r in a TPV", self.name, fix.time_utc)
                else:
                    with self._lock:
                        self._samples.append(TimeSample(gps_ns, wall, stamp, "tpv"))
            with self._lock:
                speed = {}
                # gpsd's estimate only when the receiver sends no speed of its own.
                if fix.speed_source == "receiver" or (fix.speed_source == "gpsd" and not self._receiver_sends_speed(stamp)):
                    speed = {"speed_mps": fix.speed_mps, "speed_source": fix.speed_source, "speed_fix": fix}
                self._state = replace(self._state, last_fix=fix, last_report_ns=stamp, **speed)
            self._set_fix(True, stamp, f"fix mode {fix.mode}", mode=fix.mode)
        else:
            with self._lock:
                self._state = replace(self._state, last_report_ns=stamp)
            self._set_fix(False, stamp, "the receiver reports no fix (sky blocked or still searching)", mode=fix.mode)
        self._dispatch.submit(self.on_fix, fix)

    def _toff(self, report: dict[str, Any], stamp: int) -> None:
        # TOFF: real = GPS time of the cycle, clock = system time when its first byte arrived.
        # Trusted only while the receiver has a fix (before that its clock may be its RTC's guess).
        try:
            gps_ns = int(report["real_sec"]) * NS_PER_S + int(report["real_nsec"])
            sys_ns = int(report["clock_sec"]) * NS_PER_S + int(report["clock_nsec"])
        except (KeyError, TypeError, ValueError):
            self._n.bad_lines += 1
            return
        with self._lock:
            if self._state.fix:
                self._samples.append(TimeSample(gps_ns, sys_ns, stamp, "toff"))
                self._lock.notify_all()

    def _set_fix(self, has_fix: bool, stamp: int, reason: str, **fields: Any) -> None:
        with self._lock:
            changed = self._fix_state is not has_fix
            self._fix_state = has_fix
            self._state = replace(self._state, fix=has_fix, reason=reason if not has_fix else "fix")
            self._lock.notify_all()
        if changed:
            if has_fix:
                log.info("%s: fix acquired", self.name)
            else:
                log.warning("%s: no fix: %s", self.name, reason)
            self._dispatch.submit(self.on_event, "gps", capture_ns=stamp, device=self.name,
                                  state="fix" if has_fix else "no_fix", detail=reason, **fields)

    def _check_stale(self, now: int) -> None:
        if not self._state.connected:
            return
        since = self._last_tpv_ns if self._last_tpv_ns is not None else self._connected_ns
        if now - since > self.stale_ns and self._fix_state is not False:
            secs = self.stale_ns / NS_PER_S
            what = "no report" if self._last_tpv_ns is not None else "no position report yet"
            self._set_fix(False, now, f"{what} from gpsd for {secs:.0f} s: is the GPS receiver plugged in?")

    def _lost(self, reason: str) -> None:
        now = time.monotonic_ns()
        with self._lock:
            first = not self._faulted
            was_connected = self._state.connected
            self._faulted = True
            self._fix_state = None
            self._state = replace(self._state, connected=False, fix=False, reason=reason)
            self._lock.notify_all()
        if was_connected:
            self._n.disconnects += 1
        if first:
            self._fault_since_ns = now
            log.warning("%s: %s", self.name, reason)
            self._dispatch.submit(self.on_event, "fault", capture_ns=now, device=self.name, reason="gpsd",
                                  detail=reason)
        else:
            log.debug("%s: still no gpsd: %s", self.name, reason)
