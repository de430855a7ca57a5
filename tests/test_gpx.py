"""route.gpx: valid GPX 1.1, ascending times, readable after a kill, repairable after a torn write,
and rebuilt from telemetry.jsonl by `examrec export-gpx`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sensor_harness import EXAM_NMEA, ROOT, run_examrec
from sensors.gps import GpsFix
from sensors.gpx import (GPX_NS, TPX_NS, GpxError, GpxWriter, NoTelemetry, export_gpx, gpx_time_order, read_gpx,
                         repair_gpx)
from sensors.nmea import read_fixes
from sensors.telemetry import TelemetryWriter, read_records
from core.clock import SessionClock

G = f"{{{GPX_NS}}}"
T = f"{{{TPX_NS}}}"
START_NS = 10**12
CLOCK = SessionClock(start_ns=START_NS, wall_anchor_ns=1747288800 * 10**9)


def drive_fixes() -> list[GpsFix]:
    """The exam drive as gpsd reports it: a 2D then a 3D report of the first epoch, no-fix
    reports in the underpass, one report a second, stamped one second apart."""
    out = []
    for i, f in enumerate(read_fixes(EXAM_NMEA)):
        ns = START_NS + (i + 1) * 10**9
        t = f.time_utc.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        if not f.valid:
            out.append(GpsFix(capture_ns=ns, mode=1, time_utc=t))
            continue
        if i == 0:
            out.append(GpsFix(ns - 1000, 2, t, f.lat, f.lon, None, f.speed_mps, f.track_deg))
        out.append(GpsFix(ns, 3, t, f.lat, f.lon, f.alt_m, f.speed_mps, f.track_deg))
    return out


def write_route(path: Path, fixes: list[GpsFix]) -> GpxWriter:
    w = GpxWriter(path, name="20250515T060000Z-replay-abc123", desc="practical exam", clock=CLOCK,
                  start_utc="2025-05-15T06:00:00.000000Z", fsync_interval_s=0)
    for f in fixes:
        w.add(f)
    w.close()
    return w


def test_route_is_gpx_1_1_with_times_speed_and_segments(tmp_path):
    fixes = drive_fixes()
    w = write_route(tmp_path / "route.gpx", fixes)
    root = ET.parse(tmp_path / "route.gpx").getroot()
    assert root.tag == f"{G}gpx" and root.get("version") == "1.1" and root.get("creator") == "examrec"
    assert root.find(f"{G}metadata/{G}name").text == "20250515T060000Z-replay-abc123"
    segs = root.findall(f"{G}trk/{G}trkseg")
    assert len(segs) == 2  # the underpass splits the track, as GPX intends for lost reception
    pts = root.findall(f".//{G}trkpt")
    valid = [f for f in read_fixes(EXAM_NMEA) if f.valid]
    assert len(pts) == len(valid) == w.points
    times = gpx_time_order(tmp_path / "route.gpx")
    assert all(a < b for a, b in zip(times, times[1:]))
    for pt, want in zip(pts, valid):
        assert float(pt.get("lat")) == pytest.approx(want.lat, abs=1e-7)
        assert float(pt.get("lon")) == pytest.approx(want.lon, abs=1e-7)
        assert float(pt.find(f"{G}ele").text) == pytest.approx(want.alt_m, abs=0.01)
        assert pt.find(f"{G}fix").text == "3d"
        speed = pt.find(f"{G}extensions/{T}TrackPointExtension/{T}speed")
        if want.speed_mps is None:  # an epoch whose RMC was garbled: no speed from the receiver
            assert speed is None
        else:
            assert float(speed.text) == pytest.approx(want.speed_mps, abs=0.001)
        # GPX 1.1 requires this order of children in a trkpt.
        order = [c.tag.split("}")[1] for c in pt]
        assert order == ["ele", "time", "fix", "extensions"]
    first = pts[0]
    assert first.find(f"{G}ele") is not None  # the 3D report replaced the 2D one of the same epoch
    assert float(first.find(f"{G}extensions/{{urn:examrec:gpx:1}}pts_s").text) == pytest.approx(1.0)


def test_points_never_go_back_in_time(tmp_path):
    fixes = drive_fixes()[:21]  # 2D + 3D reports of the first epoch, then 19 more
    w = write_route(tmp_path / "route.gpx", fixes + fixes[5:10])  # a replay log starting over
    assert w.points == 20 and w.skipped == 5
    assert read_gpx(tmp_path / "route.gpx").points == 20


WRITER = """
import sys
from sensors.gps import GpsFix
from sensors.gpx import GpxWriter
w = GpxWriter(sys.argv[1], name="kill-test", fsync_interval_s=0.05)
for i in range(1_000_000):
    t = f"2025-05-15T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
    w.add(GpsFix(capture_ns=i, mode=3, time_utc=t, lat=50 + i * 1e-6, lon=30.0, alt_m=110.0, speed_mps=10.0))
    print(i + 1, flush=True)
"""


@pytest.mark.parametrize("after_points", [1, 137, 1500])
def test_a_killed_writer_leaves_a_readable_route(tmp_path, after_points):
    path = tmp_path / "route.gpx"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    written = 0
    for line in proc.stdout:
        written = int(line)
        if written >= after_points:
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, most likely
    proc.wait()
    proc.stdout.close()
    # Readable as it is: every write leaves a complete document. (Only a power cut, or a kill
    # landing between the two pages of a write that straddles a page boundary, could tear it;
    # test_a_torn_route_is_repaired_at_any_byte covers that.)
    summary = read_gpx(path)
    assert summary.points >= written
    times = gpx_time_order(path)
    assert all(a < b for a, b in zip(times, times[1:]))


def test_a_torn_route_is_repaired_at_any_byte(tmp_path):
    whole = tmp_path / "route.gpx"
    write_route(whole, drive_fixes()[:13])
    data = whole.read_bytes()
    header_end = data.index(b"</src>\n") + len(b"</src>\n")
    cut_file = tmp_path / "cut.gpx"
    for cut in list(range(header_end, len(data), 31)) + [len(data) - 1]:  # through every part of a point
        cut_file.write_bytes(data[:cut] + b"\0" * 100)  # a power cut can leave zeros after the data
        summary = repair_gpx(cut_file)
        assert summary.repaired
        assert summary.points == data[:cut].count(b"</trkpt>")
        ET.parse(cut_file)
    cut_file.write_bytes(data[:header_end - 30])
    with pytest.raises(GpxError, match="export-gpx"):
        repair_gpx(cut_file)
    assert not repair_gpx(whole).repaired  # an intact file is left alone
    assert whole.read_bytes() == data


def make_session(folder: Path, fixes: list[GpsFix]) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "format": "examrec-session/1", "session_id": folder.name, "started_at": "2025-05-15T06:00:00.000000Z",
        "clock": CLOCK.to_json()}))
    tw = TelemetryWriter(folder / "telemetry.jsonl")
    for i, f in enumerate(fixes):
        tw.write(f.to_record(CLOCK))
        if i % 7 == 0:  # pedal samples in between, as the recorder writes them
            tw.write({"type": "pedals", "capture_ns": f.capture_ns, "seq": i, "device_ms": i, "brake": 0, "clutch": 0})
    tw.close()
    return folder


def test_export_rebuilds_the_route_from_telemetry(tmp_path):
    fixes = drive_fixes()
    session = make_session(tmp_path / "20250515T060000Z-replay-abc123", fixes)
    live = tmp_path / "live.gpx"
    write_route(live, fixes)
    with open(session / "telemetry.jsonl", "ab") as fh:
        fh.write(b'{"type":"gps","capture_ns":1')  # torn last line of a killed recorder
    assert len(list(read_records(session / "telemetry.jsonl", "gps"))) == len(fixes)
    summary = export_gpx(session)
    assert summary.action == "written"
    rebuilt = ET.parse(session / "route.gpx").getroot()
    original = ET.parse(live).getroot()
    pts = [(p.get("lat"), p.get("lon"), p.findtext(f"{G}time")) for p in rebuilt.iter(f"{G}trkpt")]
    assert pts == [(p.get("lat"), p.get("lon"), p.findtext(f"{G}time")) for p in original.iter(f"{G}trkpt")]
    assert summary.segments == 2 and summary.first_time == "2025-05-15T06:00:00.000Z"
    # Intact: kept as recorded. Damaged: rebuilt.
    assert export_gpx(session).action == "kept"
    (session / "route.gpx").write_bytes((session / "route.gpx").read_bytes()[:500])
    assert export_gpx(session).action == "written"
    assert read_gpx(session / "route.gpx").points == len(pts)
    with pytest.raises(NoTelemetry, match="telemetry.jsonl"):
        export_gpx(tmp_path)  # not a session folder


def test_export_gpx_command(tmp_path):
    session = make_session(tmp_path / "s1", drive_fixes())
    proc = run_examrec("export-gpx", session, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["action"] == "written" and result["points"] == 239 and result["segments"] == 2
    out = tmp_path / "copy.gpx"
    proc = run_examrec("export-gpx", session, "--out", out)
    assert proc.returncode == 0 and "239 points" in proc.stdout and read_gpx(out).points == 239
    proc = run_examrec("export-gpx", tmp_path / "nowhere")
    assert proc.returncode == 2 and "no such session folder" in proc.stderr
    no_fix = make_session(tmp_path / "s2", [GpsFix(capture_ns=START_NS, mode=1, time_utc="2025-05-15T06:00:00.000Z")])
    proc = run_examrec("export-gpx", no_fix, "--json")
    assert proc.returncode == 1 and "none with a fix" in json.loads(proc.stdout)["error"]
