"""What the overlay of a recorded frame should show, rebuilt from the session's own evidence
(telemetry.jsonl, events.jsonl, the manifest) without the recorder's code: tests render the
expected box for each candidate and compare it with the decoded picture."""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from muxer.overlay import Overlay, OverlayState
from core.clock import NS_PER_S

# A pedal edge reaches the stream processes within milliseconds of its sentence, and a frame is
# drawn as soon as it is captured: only the frame captured in that moment may miss it (one frame).
SETTLE_NS = 40_000_000
# A fix is forwarded within 50 ms of arriving; the previous one may still show just after.
SPEED_SETTLE_NS = 150_000_000


@dataclass
class SessionTruth:
    fixes: list[tuple[int, float | None, bool]]       # (capture_ns, km/h, has fix)
    pedals: dict[str, list[tuple[int, int | None]]]   # actuation intervals, capture_ns
    gps_faults: list[tuple[int, int | None]]          # (fault, recovered) capture_ns
    has_gps: bool
    has_pedals: bool

    @classmethod
    def load(cls, session: Path, clock) -> "SessionTruth":
        manifest = json.loads((session / "manifest.json").read_text())
        fixes: list[tuple[int, float | None, bool]] = []
        tele = session / "telemetry.jsonl"
        if tele.exists():
            recs = [json.loads(line) for line in tele.read_text().splitlines()]
            # The picture shows the receiver's own speed; gpsd's estimates (marked "gpsd") only
            # from a receiver that sends none, so with receiver speeds about they are no truth.
            receiver = any(r.get("speed_source") == "receiver" for r in recs)
            for rec in recs:
                if receiver and rec.get("speed_source") == "gpsd":
                    continue
                if rec["type"] == "gps":
                    speed = rec.get("speed")
                    fix = rec.get("mode", 0) >= 2 and "lat" in rec
                    fixes.append((rec["capture_ns"], None if speed is None else speed * 3.6, fix))
        fixes.sort()
        pedals: dict[str, list[tuple[int, int | None]]] = {"brake": [], "clutch": []}
        faults: list[tuple[int, int | None]] = []
        for line in (session / "events.jsonl").read_text().splitlines():
            ev = json.loads(line)
            if ev["type"] == "pedal" and ev.get("start_pts_s") is not None:
                end = ev.get("end_pts_s")
                pedals[ev["pedal"]].append((clock.capture_ns(ev["start_pts_s"]),
                                            None if end is None else clock.capture_ns(end)))
            elif ev["type"] == "fault" and ev.get("device") == "gps":
                faults.append((clock.capture_ns(ev["pts_s"]), None))
            elif ev["type"] == "recovered" and ev.get("device") == "gps" and faults and faults[-1][1] is None:
                faults[-1] = (faults[-1][0], clock.capture_ns(ev["pts_s"]))
        sensors = manifest.get("sensors") or {}
        return cls(fixes, pedals, faults, "gps" in sensors, "pedals" in sensors)

    # ---------------------------------------------------------------------------------------
    def pressed(self, pedal: str, t: int) -> bool:
        return any(s <= t and (e is None or t < e) for s, e in self.pedals[pedal])

    def pedal_settled(self, t: int) -> bool:
        """No pedal changed in the SETTLE_NS before ``t`` (the indicator must then be exact)."""
        edges = [x for spans in self.pedals.values() for s, e in spans for x in (s, e) if x is not None]
        return not any(t - SETTLE_NS <= x <= t for x in edges)

    def speed_candidates(self, t: int) -> set[str | None]:
        """Overlay speed lines the frame may show: the last fix before ``t`` (or the one before it
        when the last arrived just now), or "GPS: no fix" around a gpsd outage."""
        if not self.has_gps:
            return {None}
        out: set[str | None] = set()
        times = [f[0] for f in self.fixes]
        i = bisect.bisect_right(times, t) - 1
        for j in (i, i - 1):
            if j < 0:
                out.add("GPS: no fix")
                continue
            _, kmh, fix = self.fixes[j]
            out.add(f"{kmh:.0f} km/h" if fix and kmh is not None else "GPS: no fix")
            if t - self.fixes[j][0] > SPEED_SETTLE_NS:
                break
        for start, end in self.gps_faults:
            if start - SPEED_SETTLE_NS <= t and (end is None or t <= end + 2 * NS_PER_S):
                out.add("GPS: no fix")
        return out

    def states(self, t: int, stage: int = 1) -> list[OverlayState]:
        """Every overlay state the frame captured at ``t`` may rightly show."""
        pedal_sets: list[tuple[bool | None, bool | None]]
        if not self.has_pedals:
            pedal_sets = [(None, None)]
        elif self.pedal_settled(t):
            pedal_sets = [(self.pressed("brake", t), self.pressed("clutch", t))]
        else:
            pedal_sets = [(b, c) for b in (False, True) for c in (False, True)]
        out = []
        for label in self.speed_candidates(t):
            for brake, clutch in pedal_sets:
                st = OverlayState(stage=stage, brake=brake, clutch=clutch)
                if label is not None:
                    st.gps_fix = label != "GPS: no fix"
                    st.speed_kmh = float(label.split()[0]) if st.gps_fix else None
                out.append(st)
        return out


def overlay_error(decoded: np.ndarray, expected: np.ndarray) -> float:
    """Share of the box's pixels that differ clearly (compression noise stays well below)."""
    a = cv2.GaussianBlur(decoded.astype(np.float32), (3, 3), 0)
    b = cv2.GaussianBlur(expected.astype(np.float32), (3, 3), 0)
    return float((np.abs(a - b).max(axis=2) > 70).mean())


def overlay_error_where(decoded: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    """:func:`overlay_error` counted only over ``mask`` (a boolean picture of the box's size)."""
    a = cv2.GaussianBlur(decoded.astype(np.float32), (3, 3), 0)
    b = cv2.GaussianBlur(expected.astype(np.float32), (3, 3), 0)
    return float((np.abs(a - b).max(axis=2) > 70)[mask].mean())


def where_boxes_differ(one: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The pixels (and their close neighbours) where two rendered boxes differ clearly."""
    differ = (np.abs(one.astype(np.int16) - other.astype(np.int16)).max(axis=2) > 70).astype(np.uint8)
    return cv2.dilate(differ, np.ones((5, 5), np.uint8)) > 0


def best_match(ov: Overlay, img: np.ndarray, t: int, states: list[OverlayState]) -> tuple[float, OverlayState]:
    """The candidate state whose rendered box is closest to the decoded picture."""
    best = (2.0, states[0])
    for st in states:
        box, (x, y) = ov.box_for(t, st)
        region = img[y:y + box.shape[0], x:x + box.shape[1]]
        if region.shape != box.shape:
            continue
        err = overlay_error(region, box)
        if err < best[0]:
            best = (err, st)
    return best


def read_speed_line(ov: Overlay, img: np.ndarray, t: int, max_kmh: int = 99) -> tuple[str, float]:
    """The speed line burned into a decoded frame, read by rendering every possible line ("0
    km/h" .. "99 km/h", "GPS: no fix", "GPS: fix") and keeping the closest: (line, error)."""
    states = [OverlayState(speed_kmh=float(v), gps_fix=True) for v in range(max_kmh + 1)]
    states += [OverlayState(speed_kmh=None, gps_fix=False)]
    err, st = best_match(ov, img, t, states)
    return ("GPS: no fix" if not st.gps_fix else f"{st.speed_kmh:.0f} km/h"), err
