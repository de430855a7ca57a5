"""The processor check: the pre-exam check's verdict on whether this computer records the profile
for a whole exam without dropping frames (how well it foresees a 10-minute round is measured by
bench/vehicle.py, not here: timings on a shared machine are noise)."""
from __future__ import annotations

import json

from conftest import replay_variant, run_examrec
from sessions.recorder.checks import processor_check
from sessions.recorder.messages import CheckDone


def _done(name: str, cpu_ms: float | None, error: str | None = None) -> CheckDone:
    return CheckDone(name, 1.5, frames=37, cpu_s_per_frame=None if cpu_ms is None else cpu_ms / 1000, error=error)


def test_the_need_is_each_streams_cost_a_frame_times_its_rate_over_the_cores():
    # 4 streams at 25 fps costing 12 ms a frame: 1.2 cores; a 10 fps one at 5 ms: 0.05; the recorder 2 %.
    streams = [(25.0, _done(f"cam{i}", 12.0)) for i in range(4)] + [(10.0, _done("screen", 5.0))]
    res = processor_check(streams, 75, cores=2, recorder_cpu_share=0.02)
    assert res is not None and res.ok and res.check == "processor"
    assert res.figures == {"cpu_percent": 64.5, "max_cpu_percent": 75.0, "cores": 2.0}
    assert "64 % of this computer's 2 cores (at most 75 %)" in res.detail
    tight = processor_check(streams, 60, cores=2, recorder_cpu_share=0.02)
    assert tight is not None and not tight.ok
    assert "need 64 %" in tight.detail and "more than the 60 %" in tight.detail
    assert "lower a stream's size or rate" in tight.detail
    assert not processor_check(streams, 75, cores=1).ok  # the same streams on one core: 125 %


def test_a_stream_that_measured_nothing_is_left_to_its_own_check():
    streams = [(25.0, _done("cabin", 10.0)), (25.0, _done("rear", None)), (25.0, _done("side", 50.0, "no frame"))]
    res = processor_check(streams, 75, cores=2)
    assert res is not None and res.figures["cpu_percent"] == 12.5
    assert processor_check([(25.0, _done("rear", None))], 75, cores=2) is None


def test_examrec_check_measures_the_streams_and_fails_a_profile_this_computer_cannot_keep(tmp_path):
    """The replay profile's five streams cannot fit in 10 % of this machine: the check measures
    them and says so, in the table and in --json, and exits 1."""
    profile = replay_variant(tmp_path, append="\n[checks]\nmax_cpu_percent = 10\n")
    r = run_examrec("check", "--profile", profile, "--out", tmp_path / "out", "--json", timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    processor = checks["processor"]
    assert not processor["ok"] and processor["mandatory"]
    # Four 25 fps streams and one at 10 fps of replay pictures through x264: more than the 10 %
    # allowed, and less than the four cores they could not have had.
    assert 10 < processor["figures"]["cpu_percent"] < 400, processor
    assert processor["figures"]["max_cpu_percent"] == 10
    assert "more than the 10 %" in processor["detail"]
    assert all(checks[f"camera {n}"]["ok"] for n in ("cabin", "road-front", "road-rear", "pedal", "screen"))
