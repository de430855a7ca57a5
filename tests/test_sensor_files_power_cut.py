"""telemetry.jsonl and route.gpx after a power cut at any instant: written through core.durable,
their writes and fsyncs are in the recorder's trace, and the crash harness rebuilds them as a cut
would leave them. Whatever was fsynced before the cut is there; the rest is a readable prefix."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

from crash_harness import read_trace, rebuild_after_cut
from conftest import ROOT
from sensors.gpx import GpxError, gpx_time_order, repair_gpx
from sensors.telemetry import read_records

POINTS = 25

WRITER = textwrap.dedent(f"""
    import sys
    from pathlib import Path
    from sensors.gps import GpsFix
    from sensors.gpx import GpxWriter
    from sensors.telemetry import TelemetryWriter

    folder = Path(sys.argv[1])
    folder.mkdir()
    tele = TelemetryWriter(folder / "telemetry.jsonl", fsync_interval_s=0)
    gpx = GpxWriter(folder / "route.gpx", name="cut", fsync_interval_s=0)
    for i in range({POINTS}):
        fix = GpsFix(10**12 + i * 10**9, 3, f"2026-05-15T06:00:{{i:02d}}.000Z", 50.45 + i * 1e-4, 30.52, 180.0,
                     11.5, 90.0)
        tele.write({{"type": "gps", "n": i, "capture_ns": fix.capture_ns}})
        gpx.add(fix)
    tele.close()
    gpx.close()
""")


def _fsyncs_before(ops, path: str, cut_t: int) -> int:
    return sum(1 for o in ops if o.t < cut_t and o.op == "fsync" and o.path == path)


def _named(ops, path: str, cut_t: int) -> bool:
    """The file's name is durable: its folder was fsynced after it was created."""
    created = min(o.t for o in ops if o.op == "open" and o.path == path)
    folder = str(Path(path).parent)
    return any(created < o.t < cut_t and o.op == "fsync_dir" and o.path == folder for o in ops)


def test_telemetry_and_route_survive_a_cut_at_every_write(tmp_path):
    trace = tmp_path / "trace"
    folder = tmp_path / "session"
    subprocess.run([sys.executable, "-c", WRITER, str(folder)], check=True, cwd=ROOT, timeout=60,
                   env={"EXAMREC_IO_TRACE": str(trace), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    ops = read_trace(trace)
    tele_path, gpx_path = str(folder / "telemetry.jsonl"), str(folder / "route.gpx")
    traced = {(o.op, o.path) for o in ops}
    # Both files go through the durable layer: opened, written and fsynced in the trace, names made durable.
    for p in (tele_path, gpx_path):
        assert {("open", p), ("write", p), ("fsync", p)} <= traced
    assert ("fsync_dir", str(folder)) in traced
    assert _fsyncs_before(ops, tele_path, ops[-1].t + 1) == POINTS + 1   # each record, and the close
    cuts = sorted({o.t for o in ops} | {ops[-1].t + 1})
    checked = 0
    for i, cut in enumerate(cuts):
        rng = random.Random(i)
        out = tmp_path / f"cut{i}"
        rebuild_after_cut(ops, cut, tmp_path, out, rng)
        tele = out / "session" / "telemetry.jsonl"
        sure = min(_fsyncs_before(ops, tele_path, cut), POINTS)
        if tele.exists():
            got = [r["n"] for r in read_records(tele)]
            assert got == list(range(len(got))) and len(got) >= sure, (cut, got, sure)
        else:
            assert not _named(ops, tele_path, cut), cut
        route = out / "session" / "route.gpx"
        sure_points = max(0, _fsyncs_before(ops, gpx_path, cut) - 1)   # the first fsync is the header
        if route.exists() and route.stat().st_size:
            try:
                summary = repair_gpx(route)
            except GpxError:
                assert sure_points == 0 and _fsyncs_before(ops, gpx_path, cut) == 0, cut
                continue
            times = [t.second for t in gpx_time_order(route)]
            assert times == list(range(len(times))) and summary.points >= min(sure_points, POINTS), (cut, times)
            checked += 1
        else:
            assert not _named(ops, gpx_path, cut) or _fsyncs_before(ops, gpx_path, cut) == 0, cut
    assert checked > POINTS  # the cuts really landed between the route's writes
