"""GPS reports against the session's timeline, with a real gpsd (gpsfake): a report dated a day
ahead is flagged and never hides the later fixes from the route, and nothing captured after the
session's end is kept."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from core.clock import SessionClock
from core.profile import load_profile
from sensors.gpx import GPX_NS, export_gpx
from sensors.nmea import checksum
from sensors.replay import start_gps_replay
from sensors.telemetry import read_records
from sessions.recorder.sensor_hub import SensorHub

from conftest import replay_variant
from sensor_harness import nmea_header_and_epochs

FUTURE_EPOCH = 6


def _resign(line: str) -> str:
    body = line.strip()[1:].rsplit("*", 1)[0]
    return f"${body}*{checksum(body):02X}\r\n"


def _drive_with_a_future_report(dst: Path, count: int = 24) -> Path:
    """Epochs 20.. of the exam drive where the receiver dates one epoch's RMC a day ahead."""
    head, epochs = nmea_header_and_epochs()
    out = []
    for i, epoch in enumerate(epochs[20:20 + count]):
        if i == FUTURE_EPOCH:
            lines = []
            for line in epoch.split("\r\n"):
                prefix, dollar, rest = line.partition("$")
                if rest.startswith("GPRMC"):  # (after the '@' between the epoch's chunks)
                    f = rest.split(",")
                    f[9] = "160525"  # 15 May -> 16 May
                    line = prefix + _resign("$" + ",".join(f)).rstrip("\r\n")
                lines.append(line)
            epoch = "\r\n".join(lines)
        out.append(epoch + "@\n")
    with open(dst, "w", encoding="ascii", newline="") as fh:
        fh.write(head + "".join(out))
    return dst


def _hub(tmp_path: Path, url: str, end_ns=lambda: None) -> tuple[SensorHub, list]:
    events: list = []
    profile = load_profile(replay_variant(tmp_path))
    profile.pedals = None
    hub = SensorHub(profile, lambda *a, **k: events.append((a, k)), gps_url=url, end_ns=end_ns)
    return hub, events


def test_a_report_dated_a_day_ahead_is_flagged_and_later_fixes_stay_in_the_route(tmp_path):
    nmea = _drive_with_a_future_report(tmp_path / "future.nmea")
    with start_gps_replay(nmea, cycle_s=0.25) as replay:
        hub, _ = _hub(tmp_path, replay.url)
        session = tmp_path / "session"
        session.mkdir()
        hub.start_readers()
        try:
            assert hub.gps.wait_for_fix(10)
            clock = SessionClock(start_ns=time.monotonic_ns(), wall_anchor_ns=time.time_ns())
            hub.begin(clock, session, "s1", "2025-05-15T06:00:00Z", streams=[])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                times = [r.get("time", "") for r in read_records(session / "telemetry.jsonl", "gps")]
                if any(t.startswith("2025-05-15T06:00:43") for t in times):  # the last epoch
                    break
                time.sleep(0.1)
        finally:
            hub.stop()
    reports = list(read_records(session / "telemetry.jsonl", "gps"))
    future = [r for r in reports if r.get("time", "").startswith("2025-05-16")]
    assert future, "gpsd did not pass the future-dated report on"
    assert all(r.get("time_outlier") is True for r in future), future
    assert not any(r.get("time_outlier") for r in reports if r.get("time", "").startswith("2025-05-15"))
    root = ET.parse(session / "route.gpx").getroot()
    pts = [pt.findtext(f"{{{GPX_NS}}}time") for pt in root.iter(f"{{{GPX_NS}}}trkpt")]
    good = sorted({r["time"] for r in reports if r.get("mode", 0) >= 2 and r.get("time", "").startswith("2025-05-15")})
    assert pts == good, (pts, good)  # every later fix is in the route, the future one is not
    assert any(p > "2025-05-15T06:00:30" for p in pts)
    # A route rebuilt from the telemetry follows the same rules: same points, same speeds.
    export_gpx(session, out=tmp_path / "rebuilt.gpx")
    assert _points(tmp_path / "rebuilt.gpx") == _points(session / "route.gpx")


def _points(path: Path) -> list[tuple[str | None, str | None]]:
    root = ET.parse(path).getroot()
    speed = "{http://www.garmin.com/xmlschemas/TrackPointExtension/v2}speed"
    return [(pt.findtext(f"{{{GPX_NS}}}time"), next((e.text for e in pt.iter(speed)), None))
            for pt in root.iter(f"{{{GPX_NS}}}trkpt")]


def test_nothing_captured_after_the_end_is_kept(tmp_path):
    nmea = _drive_with_a_future_report(tmp_path / "drive.nmea")
    end: list[int] = []
    with start_gps_replay(nmea, cycle_s=0.25) as replay:
        hub, _ = _hub(tmp_path, replay.url, end_ns=lambda: end[0] if end else None)
        session = tmp_path / "session"
        session.mkdir()
        hub.start_readers()
        try:
            assert hub.gps.wait_for_fix(10)
            clock = SessionClock(start_ns=time.monotonic_ns(), wall_anchor_ns=time.time_ns())
            hub.begin(clock, session, "s1", "2025-05-15T06:00:00Z", streams=[])
            time.sleep(1.5)
            end.append(time.monotonic_ns())  # the session ends here; the readers run on a while
            time.sleep(1.5)
        finally:
            hub.stop()
    reports = list(read_records(session / "telemetry.jsonl"))
    assert reports, "nothing was recorded before the end"
    assert max(r["capture_ns"] for r in reports) < end[0]
    root = ET.parse(session / "route.gpx").getroot()
    pts_s = [float(e.text) for e in root.iter("{urn:examrec:gpx:1}pts_s")]
    assert pts_s and max(pts_s) < clock.pts_s(end[0])
