"""The pre-exam clock check (CAP-9): compare the system clock with GPS time.

The picture's date and time come from the system clock (anchored once at session start), so a
wrong clock puts a wrong time on every frame. The check takes the median of a few GPS-time
samples (gpsd's TOFF reports, or TPV times against their arrival) so one late report does not
decide it. NMEA arrives a little after the second it describes, so the offset carries the
receiver's output delay (typically 0.05-0.5 s): fine against a 1 s limit, not an NTP substitute.
"""
from __future__ import annotations

import logging
import statistics
from typing import Any

from core.clock import SessionClock, utc_now_iso

from sensors.dispatch import EventSink
from sensors.gps import GpsReader

log = logging.getLogger(__name__)


def check_clock(gps: GpsReader, limit_s: float = 1.0, timeout_s: float = 10.0, samples: int = 3,
                on_event: EventSink | None = None) -> dict[str, Any]:
    """Measure the system clock against GPS time; returns the result for manifest.json.

    ``{"source": "gps", "offset_s": float | None, "checked_at": ISO UTC, "limit_s", "ok",
    "samples", "method", "detail"}``. ``offset_s`` is GPS time minus system time (positive: the
    system clock is behind). No GPS time within ``timeout_s`` gives ``offset_s`` None and
    ``ok`` false. ``on_event`` (``EventLog.emit``) receives one ``clock_check`` event; above
    the limit it carries ``level: "warning"``.
    """
    got = gps.time_samples(samples, timeout_s)
    result: dict[str, Any] = {"source": "gps", "offset_s": None, "checked_at": utc_now_iso(),
                              "limit_s": limit_s, "ok": False, "samples": len(got), "method": None}
    if not got:
        result["detail"] = (f"no GPS time within {timeout_s:.0f} s (no fix, or gpsd at {gps.host}:{gps.port} "
                            f"unreachable): check the clock by hand or against network time")
        level = "warning"
    else:
        offset = statistics.median(s.offset_s for s in got)
        result.update(offset_s=round(offset, 3), method=got[-1].source, ok=abs(offset) <= limit_s)
        if result["ok"]:
            result["detail"] = f"system clock within {abs(offset):.2f} s of GPS time"
            level = "info"
        else:
            way = "behind" if offset > 0 else "ahead of"
            result["detail"] = (f"system clock is {abs(offset):.2f} s {way} GPS time (limit {limit_s:g} s): "
                                f"set the clock (timedatectl, or let chrony/gpsd sync it) before the exam")
            level = "warning"
    (log.warning if level == "warning" else log.info)("clock check: %s", result["detail"])
    if on_event is not None:
        on_event("clock_check", capture_ns=SessionClock.now_ns(), level=level, **result)
    return result
