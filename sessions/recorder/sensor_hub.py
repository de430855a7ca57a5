"""The session's sensors in the controller: GPS and pedal readers, telemetry.jsonl, route.gpx, the
clock check, and the overlay state sent to the stream processes.

A hub can outlive a session: the service keeps one open between exams and lends it to each exam's
recorder (:meth:`SensorHub.attach` ... :meth:`SensorHub.end_session`), so Start finds the GPS
connected with its fix and the pedal sensor's heartbeat running, and nothing is reopened.

Pedal indicators are frame-exact: the stream processes get the actuation intervals (monotonic
stamps) and light BRAKE/CLUTCH on exactly the frames whose capture time falls inside one.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from sensors.clockcheck import check_clock
from sensors.factory import clock_limit_s, gps_reader, pedal_reader
from sensors.gps import GpsTimeGuard
from sensors.gpx import GpxWriter
from sensors.telemetry import TelemetryWriter

from sessions.evidence.layout import ROUTE_NAME, TELEMETRY_NAME
from sessions.recorder.checks import CheckResult
from sessions.recorder.messages import PedalSpans, SensorOverlay
from core.clock import NS_PER_S, SessionClock

log = logging.getLogger(__name__)

FORWARD_S = 0.05        # how often the overlay state is looked at (sent to the streams only when it changed)
INTERVAL_WINDOW_S = 10  # pedal intervals older than this are of no use to a frame being encoded
PEDALS = ("brake", "clutch")


class SensorHub:
    """Owns the readers of one session; ``emit`` is the session's EventLog.emit."""

    def __init__(self, profile, emit: Callable[..., Any], gps_url: str | None = None,
                 pedals_url: str | None = None, end_ns: Callable[[], int | None] = lambda: None):
        self.profile = profile
        # The session's end (CLOCK_MONOTONIC) once known: nothing captured after it is kept.
        self._end_ns = end_ns
        self._late: dict[str, dict[str, int]] = {"gps": {}}  # GPS read after the end: not counted
        # Pedal sentences written to this session's telemetry. The reader counts a sentence before
        # its callback can take the session lock, so its count and the baseline taken at begin()
        # could disagree by one with the rows; the manifest counts the rows.
        self._pedal_rows = 0
        self._time_guard = GpsTimeGuard()
        self.session_dir: Path | None = None
        self._emit = emit
        self.clock: SessionClock | None = None
        self.telemetry: TelemetryWriter | None = None
        self.gpx: GpxWriter | None = None
        self.clock_check: dict | None = None
        self.gaps: dict[str, list[dict]] = {}
        if gps_url:
            profile.gps = gps_url
        if pedals_url:
            profile.pedals = pedals_url
        self.gps = gps_reader(profile, on_fix=self._on_fix, on_event=self._on_event)
        self.pedals = pedal_reader(profile, on_sample=self._on_sample, on_event=self._on_event)
        self._stop = threading.Event()
        self._forwarder: threading.Thread | None = None
        self._streams: list = []
        self._baseline: dict[str, dict] = {}
        self._last_spans: dict | None = None
        self._last_state: dict | None = None
        self._push_lock = threading.Lock()
        self._readers_started = False
        self._lenders: list[tuple[Callable[..., Any], Callable[[], int | None]]] = []
        self._final_counters: dict[str, dict] | None = None  # frozen when a session ends
        # Held while a report is written and while the session's files close (the readers go on).
        self._session_lock = threading.RLock()

    @property
    def present(self) -> bool:
        return self.gps is not None or self.pedals is not None

    # life --------------------------------------------------------------------------------
    def start_readers(self) -> None:
        """Start reading before the session clock exists: the checks need a fix and a heartbeat.
        Nothing when they read already (a hub lent by the service)."""
        if self._readers_started:
            return
        self._readers_started = True
        if self.gps is not None:
            self.gps.start()
        if self.pedals is not None:
            self.pedals.start()

    def attach(self, emit: Callable[..., Any], end_ns: Callable[[], int | None]) -> None:
        """A session borrows this open hub: its events go to ``emit`` and its end is ``end_ns``
        until :meth:`end_session`, which gives them back to the owner."""
        self._lenders.append((self._emit, self._end_ns))
        self._emit, self._end_ns = emit, end_ns

    def begin(self, clock: SessionClock, session_dir: Path, session_id: str, started_utc, streams: list) -> None:
        """The session started: write telemetry and the route, forward overlay state."""
        self.session_dir = Path(session_dir)
        with self._session_lock:
            # What an earlier session on this hub left: its gaps, late reports and frozen counts.
            self.gaps, self._late = {}, {"gps": {}}
            self._pedal_rows = 0
            self._final_counters, self._last_spans, self._last_state = None, None, None
            self._time_guard = GpsTimeGuard()
            self._stop = threading.Event()
            self.clock = clock
            self.telemetry = TelemetryWriter(self.session_dir / TELEMETRY_NAME)
            if self.pedals is not None:
                self.pedals.set_clock(clock)
            if self.gps is not None:
                self.gpx = GpxWriter(self.session_dir / ROUTE_NAME, name=session_id, start_utc=started_utc,
                                     clock=clock)
        if self.gps is not None:
            # The fix the session starts with (the overlay shows it from the first frame on), and
            # the receiver's report whose speed the first frames show when that was an earlier one.
            st = self.gps.state()
            for fix in sorted({id(f): f for f in (st.speed_fix, st.last_fix) if f is not None}.values(),
                              key=lambda f: f.capture_ns):
                self._on_fix(fix)
        self._streams = streams
        # The readers ran during the checks: the manifest counts what happened in the session only.
        self._baseline = self._raw_counters()
        self._forward_once(force=True)  # before the streams' "start": the first frame already shows the sensors
        self._forwarder = threading.Thread(target=self._forward, name="overlay-state", daemon=True)
        self._forwarder.start()

    def end_session(self) -> None:
        """The session is over: no more overlay updates, telemetry.jsonl and route.gpx closed, its
        counts frozen (:meth:`counters`); the readers go on for whoever lent the hub, and events
        go back to it. An actuation going on is logged as it stands (as a stop would)."""
        self._stop_forwarding()
        with self._session_lock:
            if self.clock is not None:
                if self.pedals is not None:
                    for fields_ in self.pedals.open_actuations():
                        self._on_event("pedal", **fields_)
                if self._final_counters is None:
                    self._final_counters = self.counters()
            self.clock = None
            for w in (self.gpx, self.telemetry):
                if w is not None:
                    w.close()
            self.gpx = self.telemetry = None
            if self._lenders:
                self._emit, self._end_ns = self._lenders.pop()

    def stop(self) -> None:
        """Close the readers (and the replay helpers they own), then end the session if any: the
        readers' last words (an actuation still open) are the session's."""
        self._stop_forwarding()
        for reader in (self.pedals, self.gps):
            if reader is not None:
                reader.stop()
        self.end_session()

    def _stop_forwarding(self) -> None:
        self._stop.set()
        if self._forwarder is not None:
            self._forwarder.join(timeout=2)
            self._forwarder = None
        with self._push_lock:
            self._streams = []

    # callbacks (the readers' dispatcher threads) -------------------------------------------
    def _after_end(self, capture_ns: int) -> bool:
        end = self._end_ns()
        return end is not None and capture_ns >= end

    def _on_fix(self, fix) -> None:
        with self._session_lock:
            self._write_fix(fix)

    def _write_fix(self, fix) -> None:
        if self.clock is None or self.telemetry is None:
            return  # before the session: only the checks look at the GPS
        if self._after_end(fix.capture_ns):
            # The session has ended: its files hold nothing after ended_at, nor do its counts.
            for key in ("tpv", "reports") + (("with_fix",) if fix.has_fix else ()):
                self._late["gps"][key] = self._late["gps"].get(key, 0) + 1
            return
        record = fix.to_record(self.clock)
        on_time = self._time_guard.accept(fix)
        if not on_time:
            # Kept in telemetry (it is what gpsd said) but flagged, and never the route's latest point.
            record["time_outlier"] = True
            log.warning("gps: report dated %s does not fit the session's timeline; flagged, left out of the route",
                        fix.time_utc)
        self.telemetry.write(record)
        if self.gpx is not None and on_time:
            if fix.speed_source == "gpsd" and self.gps is not None and self.gps.receiver_sends_speed():
                # gpsd's estimate from a receiver that sends its own speed: the point without it
                # (the receiver's report of the same epoch replaces it when it comes).
                fix = replace(fix, speed_mps=None, track_deg=None, speed_source=None)
            self.gpx.add(fix)
        if self._streams:
            self._push(self.overlay_state(), pedals=False)  # a new speed from the next frame on

    def _on_sample(self, sample) -> None:
        with self._session_lock:
            self._write_sample(sample)

    def _write_sample(self, sample) -> None:
        if self.clock is not None and self._after_end(sample.capture_ns):
            return  # after the session's end: not in its rows, so not in its count
        if self.clock is not None and self.telemetry is not None:
            self.telemetry.write(sample.to_record(self.clock))
            self._pedal_rows += 1
            # An edge goes to the streams at once (not at the next tick): the frames captured
            # from now on are drawn with it.
            self._push(None, pedals=True)

    def _on_event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        with self._session_lock:
            self._log_event(type_, capture_ns, **fields)

    def _log_event(self, type_: str, capture_ns: int | None = None, **fields: Any) -> None:
        if self.clock is None and type_ not in ("fault", "clock_check"):
            return  # reconnects and no-fix reports before the start are the checks' business
        device = fields.get("device", "sensor")
        if device == "gps" and type_ in ("fault", "recovered"):
            self._time_guard.reset()  # after gpsd comes back, its reports start a new reference
        if self.clock is not None and type_ in ("fault", "recovered"):
            at = self.clock.pts_s(capture_ns or time.monotonic_ns())
            gaps = self.gaps.setdefault(device, [])
            if type_ == "fault" and (not gaps or gaps[-1]["end_pts_s"] is not None):
                gaps.append({"start_pts_s": round(max(0.0, at), 6), "end_pts_s": None, "reason": fields.get("reason", "fault")})
            elif type_ == "recovered" and gaps and gaps[-1]["end_pts_s"] is None:
                gaps[-1]["end_pts_s"] = round(at, 6)
        self._emit(type_, capture_ns=capture_ns, **fields)
        if self.clock is not None and device == "gps" and self._streams:
            self._push(self.overlay_state(), pedals=False)  # "GPS: no fix" from the next frame on

    # checks ---------------------------------------------------------------------------------
    def checks(self, wait_s: float = 10.0, keep: bool = True) -> list[CheckResult]:
        """GPS fix and clock offset, pedal heartbeat. With ``keep`` the clock check is the one the
        next session's manifest records (the idle re-checks leave it to the exam's own)."""
        out = []
        if self.gps is not None:
            fix = self.gps.wait_for_fix(wait_s)
            st = self.gps.state()
            if fix:
                out.append(CheckResult("gps", True, f"fix ({st.label})"))
            else:
                out.append(CheckResult("gps", False, f"no fix within {wait_s:g} s ({st.reason}): is the antenna "
                                                     f"outside and gpsd running? (`examrec devices`)"))
            cc = check_clock(self.gps, clock_limit_s(self.profile), on_event=None)
            if keep:
                self.clock_check = cc
            if (self.profile.gps or "").startswith("replay:"):
                # A replayed drive carries the fixture's dates: it says nothing about this clock.
                cc["replay"] = True
                out.append(CheckResult("clock", True, f"not checked: the GPS is a replay (its recorded time is "
                                                      f"{cc.get('offset_s')} s from this clock)", mandatory=False))
            else:
                out.append(CheckResult("clock", bool(cc.get("ok")), cc.get("detail") or
                                       f"offset {cc.get('offset_s')} s against GPS (limit {cc.get('limit_s')} s)"))
        if self.pedals is not None:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and not self.pedals.state().healthy:
                time.sleep(0.05)
            st = self.pedals.state()
            out.append(CheckResult("pedals", st.healthy, "heartbeat received" if st.healthy else
                                   f"no heartbeat from the pedal sensor ({st.fault}): is it plugged in?"))
        return out

    def log_clock_check(self) -> None:
        if self.clock_check is not None:
            level = "info" if self.clock_check.get("ok") or self.clock_check.get("replay") else "warning"
            self._emit("clock_check", level=level, **self.clock_check)

    # overlay ------------------------------------------------------------------------------
    def overlay_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.gps is not None:
            st = self.gps.state()
            state["gps_fix"] = bool(st.fix and st.last_fix is not None)
            state["speed_kmh"] = st.speed_kmh  # the receiver's own speed (see sensors.gps)
        return state

    def pedal_intervals(self) -> dict[str, list[tuple[int, int | None]]] | None:
        """Actuation spans of the last seconds, the press going on included (open-ended)."""
        if self.pedals is None:
            return None
        return self.pedals.live_spans(time.monotonic_ns() - INTERVAL_WINDOW_S * NS_PER_S)

    def _forward(self) -> None:
        ticks = 0
        while not self._stop.wait(FORWARD_S):
            ticks += 1
            # Once a second everything goes again, so a restarted stream process has it too.
            self._forward_once(force=ticks % round(1 / FORWARD_S) == 0)

    def _forward_once(self, force: bool = False) -> None:
        try:
            self._push(self.overlay_state(), pedals=True, only_changed=not force)
        except Exception:  # a sensor hiccup must never stop the overlay updates
            log.exception("overlay state")

    def _push(self, state: dict[str, Any] | None, pedals: bool, only_changed: bool = True) -> None:
        """Send the overlay state and/or the pedal spans to every stream process; by default only
        what changed since the last send (the stream processes read their queue every frame)."""
        # Read and sent under one lock, so a stream never gets an older view after a newer one.
        with self._push_lock:
            intervals = self.pedal_intervals() if pedals else None
            if only_changed:
                state = state if state and state != self._last_state else None
                intervals = intervals if intervals != self._last_spans else None
            values = SensorOverlay(gps_fix=state["gps_fix"], speed_kmh=state["speed_kmh"]) if state else None
            spans = None if intervals is None else PedalSpans(
                brake=tuple(intervals.get("brake", ())), clutch=tuple(intervals.get("clutch", ())))
            for rt in self._streams:
                if values is not None:
                    rt.cmd_q.put(values)
                if spans is not None:
                    rt.cmd_q.put(spans)
            if state:
                self._last_state = state
            if intervals is not None:
                self._last_spans = intervals

    # reports ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.gps is not None:
            st = self.gps.state()
            out["gps"] = {"connected": st.connected, "fix": st.fix, "shows": st.label}
        if self.pedals is not None:
            st = self.pedals.state()
            out["pedals"] = {"healthy": st.healthy, "brake": st.brake_percent, "clutch": st.clutch_percent,
                             "fault": st.fault}
        return out

    def counters(self) -> dict[str, dict]:
        """What each reader counted during the session (sentences, reports, actuations, faults...)."""
        if self._final_counters is not None:
            return self._final_counters
        base, late = self._baseline, self._late
        out = {dev: {k: v - base.get(dev, {}).get(k, 0) - late.get(dev, {}).get(k, 0) if isinstance(v, int) else v
                     for k, v in counts.items()}
               for dev, counts in self._raw_counters().items()}
        if "pedals" in out and self.clock is not None:
            out["pedals"]["sentences"] = self._pedal_rows
        return out

    def _raw_counters(self) -> dict[str, dict]:
        out = {}
        if self.gps is not None:
            out["gps"] = self.gps.counters()
        if self.pedals is not None:
            out["pedals"] = self.pedals.counters()
        return out
