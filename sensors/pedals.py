"""Dual-control pedal sensors on a serial line (examrec/1 protocol), read in a thread of their own.

Transport and parsing are kept apart, in the shape of pyserial's ``serial.threaded``: the reader
thread only opens the port (by pyserial URL, so a replay pty or ``loop://`` stands in for the
real device), reads whatever bytes have arrived and stamps them with CLOCK_MONOTONIC at once;
framing (:class:`sensors.pedal_protocol.LineFramer`), parsing and the actuation logic
(:class:`sensors.actuation.ActuationTracker`) run on those stamped bytes. A sentence's stamp is
the stamp of the read that brought its last byte.

Callbacks run from a dispatcher thread (never delaying the stamps):

- ``on_sample(sample: PedalSample)`` for every valid sentence (telemetry.jsonl);
- ``on_event(type_, capture_ns=..., **fields)`` (``EventLog.emit``'s signature): ``pedal``
  (``pedal``, ``start_pts_s``, ``end_pts_s``, ``peak_percent``, ``duration_ms``), ``fault``
  (``device``, ``reason``: silent | garbage | port, ``detail``) and ``recovered``.

Nothing on the line stops the reader: bad input is counted (:meth:`PedalReader.counters`) and
logged (rate-limited); a silent sensor is a fault until it speaks again; a lost port is reopened.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import serial

from core.clock import NS_PER_S, SessionClock

from sensors.actuation import PEDALS, Actuation, ActuationTracker
from sensors.dispatch import Closeable, Dispatcher, EventSink
from sensors.pedal_protocol import SEQ_MOD, LineFramer, PedalSentence, RateLimitedLog, SentenceError, parse_sentence
from sensors.priority import raise_thread_priority

log = logging.getLogger(__name__)

GARBAGE_BYTES = 16  # more than this since the last good sentence, and silence means "wrong baud?"


@dataclass(frozen=True)
class PedalSettings:
    """The profile's ``[pedal_settings]``."""

    threshold_percent: float = 20.0
    debounce_ms: int = 30
    silent_ms: int = 1000
    baud: int = 115200

    @classmethod
    def from_profile(cls, section: dict[str, Any] | None) -> "PedalSettings":
        """From the validated section (``Profile.section("pedal_settings")``); missing keys keep defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (section or {}).items() if k in known and v is not None})


def parse_pedal_url(url: str, default_baud: int = 115200) -> tuple[str, int]:
    """The profile's ``pedals`` value to (pyserial URL, baud).

    ``serial:///dev/ttyUSB0?baud=115200`` -> ("/dev/ttyUSB0", 115200); a bare path or any
    pyserial URL (``loop://``, ``socket://host:port``, ``rfc2217://...``) passes through with
    ``default_baud`` (the profile's ``pedal_settings.baud``).
    """
    if not url.startswith("serial://"):
        return url, default_baud
    parts = urlsplit(url)
    if not parts.path:
        raise ValueError(f"{url!r} names no device: write serial:///dev/ttyUSB0?baud=115200")
    query = parse_qs(parts.query)
    baud = default_baud
    if "baud" in query:
        try:
            baud = int(query["baud"][0])
        except ValueError:
            raise ValueError(f"{url!r}: baud must be a number, e.g. ?baud=115200") from None
    unknown = set(query) - {"baud"}
    if unknown:
        raise ValueError(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))}; only baud is allowed")
    return parts.path, baud


@dataclass(frozen=True)
class PedalSample:
    """One valid sentence, stamped when its last byte arrived."""

    capture_ns: int
    seq: int
    device_ms: int
    brake: float | None
    clutch: float | None

    def to_record(self, clock: SessionClock | None = None) -> dict[str, Any]:
        """The telemetry.jsonl line (``type`` "pedals")."""
        rec: dict[str, Any] = {"type": "pedals", "capture_ns": self.capture_ns}
        if clock is not None:
            rec["pts_s"] = round(clock.pts_s(self.capture_ns), 6)
        rec.update(seq=self.seq, device_ms=self.device_ms, brake=self.brake, clutch=self.clutch)
        return rec


@dataclass(frozen=True)
class PedalState:
    """What the overlay shows now. ``healthy`` false while silent, garbled or unplugged."""

    brake_percent: float | None = None
    clutch_percent: float | None = None
    brake_actuated: bool = False
    clutch_actuated: bool = False
    healthy: bool = False
    fault: str | None = "not started"
    last_sentence_ns: int | None = None


class PedalReader:
    """Reads a pedal sensor; see the module docstring. ``owned`` (a replay) is closed by :meth:`stop`."""

    def __init__(self, url: str, settings: PedalSettings | None = None,
                 on_sample: Callable[[PedalSample], Any] | None = None, on_event: EventSink | None = None,
                 *, name: str = "pedals", read_timeout_s: float = 0.05, reopen_initial_s: float = 0.2,
                 reopen_max_s: float = 2.0, owned: Closeable | None = None):
        self.settings = settings or PedalSettings()
        self.port_url, self.baud = parse_pedal_url(url, self.settings.baud)
        self.url = url
        self.name = name
        self.on_sample = on_sample
        self.on_event = on_event
        self.clock: SessionClock | None = None
        self._read_timeout_s = read_timeout_s
        self._reopen_initial_s = reopen_initial_s
        self._reopen_max_s = reopen_max_s
        self._owned = owned
        self._silent_ns = int(self.settings.silent_ms * 1_000_000)
        self._tracker = ActuationTracker(self.settings.threshold_percent, self.settings.debounce_ms)
        self._framer = LineFramer()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dispatch = Dispatcher(name)
        self._warn = RateLimitedLog(log, name)
        self._port: serial.SerialBase | None = None
        self._fault: str | None = "not started"  # None: healthy; else why not (for the overlay)
        self._faulted = False  # a fault event went out and no recovered event yet
        self._fault_since_ns = 0
        self._last_sentence_ns: int | None = None
        self._watch_from_ns = 0
        self._bytes_since_good = 0
        self._last_seq: int | None = None
        self._n = {k: 0 for k in ("sentences", "bytes", "bad_checksum", "unknown_type", "malformed", "seq_gaps",
                                  "lost_sentences", "seq_resets", "faults", "port_errors", "opens",
                                  "actuations_brake", "actuations_clutch")}

    # -- public -------------------------------------------------------------------------------
    def start(self, clock: SessionClock | None = None) -> None:
        """Start the reader thread; ``clock`` may come later via :meth:`set_clock`."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name}: already started")
            self.clock = clock
            self._fault = "waiting for the first sentence"
            self._watch_from_ns = time.monotonic_ns()
            self._dispatch.start()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
            self._thread.start()

    def set_clock(self, clock: SessionClock) -> None:
        """Attach the session clock (pedal events carry session-timeline times)."""
        self.clock = clock

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading; an actuation still open is reported (``end_pts_s`` null if still pressed)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            rest = self._tracker.flush()
        for act in rest:
            self._emit_actuation(act)
        self._close_port()
        self._dispatch.stop(timeout_s)
        if self._owned is not None:
            owned, self._owned = self._owned, None
            owned.close()

    def state(self) -> PedalState:
        """A snapshot for the overlay (cheap, thread-safe)."""
        with self._lock:
            t = self._tracker
            return PedalState(
                brake_percent=t.percent("brake"), clutch_percent=t.percent("clutch"),
                brake_actuated=t.actuated("brake"), clutch_actuated=t.actuated("clutch"),
                healthy=self._fault is None, fault=self._fault, last_sentence_ns=self._last_sentence_ns)

    def actuated_at(self, pedal: str, capture_ns: int) -> bool | None:
        """Was ``pedal`` (brake | clutch) actuated at ``capture_ns``? For frame-exact indicators;
        None when unknown (sensor faulty then, or older than the kept history of 512 actuations)."""
        if pedal not in PEDALS:
            raise ValueError(f"pedal must be one of {PEDALS}, not {pedal!r}")
        with self._lock:
            return self._tracker.actuated_at(pedal, capture_ns)

    def live_spans(self, since_ns: int) -> dict[str, list[tuple[int, int | None]]]:
        """Actuation spans reaching past ``since_ns``, the press going on included (overlay)."""
        with self._lock:
            return self._tracker.live_spans(since_ns)

    def actuations(self) -> list[Actuation]:
        """Recent finished actuations, oldest first."""
        with self._lock:
            return self._tracker.history()

    def counters(self) -> dict[str, int]:
        """Counts for `examrec info`: good sentences, every kind of bad input, faults, reopens."""
        fc = self._framer.counters
        out = dict(self._n)
        out.update(noise_bytes=fc.noise_bytes, partial=fc.partial, overlong=fc.overlong,
                   bounces=self._tracker.bounces, dips=self._tracker.dips,
                   dropped_callbacks=self._dispatch.dropped, failed_callbacks=self._dispatch.failed)
        return out

    # -- thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        raise_thread_priority(self.name)
        backoff = self._reopen_initial_s
        while not self._stop.is_set():
            if self._port is None:
                try:
                    self._open()
                except (serial.SerialException, OSError, ValueError) as exc:
                    self._port_fault(time.monotonic_ns(), f"cannot open {self.port_url} ({exc}); check the "
                                     f"sensor's cable and the profile's pedals URL; retrying")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._reopen_max_s)
                    continue
                backoff = self._reopen_initial_s
            try:
                data = self._port.read(self._port.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                self._port_fault(time.monotonic_ns(), f"lost {self.port_url} ({exc}): unplugged? "
                                 f"reopening it when it is back")
                self._close_port()
                continue
            stamp = time.monotonic_ns()  # before any parsing: this is when the bytes were here
            if data:
                self._n["bytes"] += len(data)
                self._bytes_since_good += len(data)
                for line, line_ns in self._framer.feed(data, stamp):
                    self._line(line, line_ns)
            self._watchdog(stamp)

    def _open(self) -> None:
        kwargs: dict[str, Any] = {"baudrate": self.baud, "timeout": self._read_timeout_s}
        if self.port_url.startswith("/dev/"):
            kwargs["exclusive"] = True  # a second reader (or ModemManager) would steal bytes
        self._port = serial.serial_for_url(self.port_url, **kwargs)
        self._framer.reset()
        self._last_seq = None  # the board may have restarted while away
        self._n["opens"] += 1
        self._watch_from_ns = time.monotonic_ns()
        log.info("%s: opened %s at %d baud", self.name, self.port_url, self.baud)

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _line(self, line: bytes, stamp: int) -> None:
        try:
            sentence = parse_sentence(line)
        except SentenceError as exc:
            self._n[exc.kind] += 1
            self._warn.warn(exc.kind, str(exc))
            return
        self._sentence(sentence, stamp)

    def _sentence(self, s: PedalSentence, stamp: int) -> None:
        self._n["sentences"] += 1
        if self._last_seq is not None:
            gap = (s.seq - self._last_seq - 1) % SEQ_MOD
            if gap:
                if gap < SEQ_MOD // 2:
                    self._n["seq_gaps"] += 1
                    self._n["lost_sentences"] += gap
                    self._warn.warn("seq_gap", f"{gap} sentence(s) lost before seq {s.seq}")
                else:  # went backwards: the board restarted
                    self._n["seq_resets"] += 1
                    self._warn.warn("seq_reset", f"seq went from {self._last_seq} to {s.seq} (board restarted?)")
        self._last_seq = s.seq
        self._bytes_since_good = 0
        with self._lock:
            recovered_after = None
            if self._faulted:
                recovered_after = (stamp - self._fault_since_ns) / NS_PER_S
                self._tracker.fault_end(stamp)
                self._faulted = False
            self._fault = None
            self._last_sentence_ns = stamp
            done = self._tracker.update({"brake": s.brake, "clutch": s.clutch}, stamp)
        if recovered_after is not None:
            log.info("%s: sentences again after %.2f s", self.name, recovered_after)
            self._dispatch.submit(self.on_event, "recovered", capture_ns=stamp, device=self.name,
                                  after_s=round(recovered_after, 3))
        for act in done:
            self._emit_actuation(act)
        self._dispatch.submit(self.on_sample, PedalSample(stamp, s.seq, s.device_ms, s.brake, s.clutch))

    def _watchdog(self, now: int) -> None:
        with self._lock:
            done = self._tracker.tick(now)
        for act in done:
            self._emit_actuation(act)
        if self._faulted or self._port is None:
            return
        since = self._last_sentence_ns if self._last_sentence_ns is not None else self._watch_from_ns
        if now - since <= self._silent_ns:
            return
        secs = self._silent_ns / NS_PER_S
        if self._bytes_since_good > GARBAGE_BYTES:
            reason = "garbage"
            detail = (f"{self._bytes_since_good} bytes on {self.port_url} but no valid sentence for {secs:g} s: "
                      f"wrong baud rate? (reading at {self.baud}; set pedal_settings.baud or ?baud= in the URL)")
        else:
            reason = "silent"
            detail = (f"no sentence from {self.port_url} for {secs:g} s: the pedal sensor is silent or "
                      f"unpowered; check its cable")
        self._set_fault(since + self._silent_ns, reason, detail)

    def _port_fault(self, now: int, detail: str) -> None:
        self._n["port_errors"] += 1
        if self._fault == "port":
            log.debug("%s: %s", self.name, detail)
            return
        self._set_fault(now, "port", detail)

    def _set_fault(self, at_ns: int, reason: str, detail: str) -> None:
        with self._lock:
            if not self._faulted:
                self._fault_since_ns = at_ns
                self._tracker.fault_begin(at_ns)
                self._faulted = True
            self._fault = reason
        self._n["faults"] += 1
        log.warning("%s: %s", self.name, detail)
        self._dispatch.submit(self.on_event, "fault", capture_ns=at_ns, device=self.name, reason=reason,
                              detail=detail)

    def open_actuations(self) -> list[dict[str, Any]]:
        """The actuations going on now as ``pedal`` event fields (``end_pts_s`` null while still
        pressed), for a session that ends while this reader goes on; they stay open here."""
        with self._lock:
            return [self._actuation_fields(act) for act in self._tracker.open_now()]

    def _emit_actuation(self, act: Actuation) -> None:
        self._n[f"actuations_{act.pedal}"] += 1
        self._dispatch.submit(self.on_event, "pedal", **self._actuation_fields(act))

    def _actuation_fields(self, act: Actuation) -> dict[str, Any]:
        clock = self.clock
        fields_: dict[str, Any] = {
            "pedal": act.pedal,
            "start_pts_s": round(clock.pts_s(act.start_ns), 6) if clock else None,
            "end_pts_s": round(clock.pts_s(act.end_ns), 6) if clock and act.end_ns is not None else None,
            "peak_percent": act.peak_percent,
            "duration_ms": None if act.duration_ms is None else round(act.duration_ms, 1),
        }
        if act.interrupted:
            fields_["interrupted"] = True
        fields_["capture_ns"] = act.start_ns
        return fields_

