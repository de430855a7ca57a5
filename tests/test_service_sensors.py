"""The service's GPS and pedal sensor between exams and in them: opened once, lent to each exam's
recorder, given back still reading. A real gpsd fed by gpsfake and the pedal log played through a
socat pty pair (the replay profile's sensors)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from core.profile import load_profile
from sessions.evidence.verify import verify_session
from sessions.recorder.service import RecorderService, ServiceSettings

from conftest import ROOT, write_profile

FIXTURES = ROOT / "bench" / "fixtures"
EXAM_S = 2.5
ARMING_S = 0.5  # the streams start this long at most after the sensors begin writing

PROFILE = f"""
name = "service-sensors"
kind = "replay"
gps = "replay:{FIXTURES}/exam-drive.nmea"
pedals = "replay:{FIXTURES}/exam.pedal"
[checks]
sample_s = 1.0
idle_every_s = 0
[encoder]
crf = 30
[[streams]]
name = "cabin"
source = "pattern:"
width = 160
height = 120
fps = 10
"""


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _exam(svc: RecorderService, candidate: str) -> Path:
    answer = svc.start_exam({"candidate": candidate, "candidate_id": "AB 1", "examiner": "E", "plate": "AA 1234 BB",
                             "centre": "C", "exam": "practical"}, force=True)
    assert svc.state == "recording", answer
    time.sleep(EXAM_S)
    assert svc.dispatch({"cmd": "stop"})["ok"]
    _wait(lambda: svc.state == "idle", 60, "idle after stop")
    assert svc.last is not None and svc.last.verify_ok, svc.last
    return Path(answer["session"])


def _telemetry(session: Path) -> list[dict]:
    return [json.loads(x) for x in (session / "telemetry.jsonl").read_text().splitlines()]


def test_the_sensors_open_between_exams_are_lent_to_each_exam_and_never_reopened(tmp_path):
    profile = load_profile(write_profile(tmp_path / "p.toml", PROFILE))
    svc = RecorderService(profile, tmp_path / "out", ServiceSettings(realtime=True))
    svc.open_idle_sensors()
    try:
        hub = svc.idle_sensors
        assert hub is not None and hub.gps is not None and hub.pedals is not None
        assert hub.gps.wait_for_fix(30), "the replayed drive gives a fix"
        _wait(lambda: hub.pedals.state().healthy, 10, "pedal heartbeat")
        opened = {"gps": hub.gps.counters()["connects"], "pedals": hub.pedals.counters()["opens"]}

        first = _exam(svc, "Перша Кандидатка")
        assert svc.idle_sensors is hub                       # back, still reading, for the next exam
        second = _exam(svc, "Другий Кандидат")
        assert svc.idle_sensors is hub
        # Nothing was reopened: the same gpsd connection and pedal port served idle time and both exams.
        assert {"gps": hub.gps.counters()["connects"], "pedals": hub.pedals.counters()["opens"]} == opened
        assert hub.gps.state().connected and hub.pedals.state().healthy
        for session in (first, second):
            m = json.loads((session / "manifest.json").read_text())
            sensors = m["sensors"]
            assert sensors["gps"]["reports"] > 0 and sensors["pedals"]["sentences"] > 0, sensors
            assert sensors["gps"]["connects"] == 0 and sensors["pedals"]["opens"] == 0, sensors
            duration = m["stages"][-1]["end_pts_s"]
            rows = _telemetry(session)
            assert {r["type"] for r in rows} >= {"gps", "pedals"}, {r["type"] for r in rows}
            # Each session's files hold its own time only: nothing from the idle time or the exam
            # after it. Before its start: the fix it starts with (the receiver's last report) and
            # what came while the streams were being armed (at most half a second).
            early_fixes = [r for r in rows if r["type"] == "gps" and r["pts_s"] < -ARMING_S]
            assert len(early_fixes) <= 2 and all(r["pts_s"] > -3 for r in early_fixes), early_fixes
            assert all(r["pts_s"] >= -ARMING_S for r in rows if r["type"] != "gps"), session.name
            assert all(r["pts_s"] <= duration + 0.01 for r in rows), (session.name, duration)
            assert sum(r["type"] == "pedals" for r in rows) == sensors["pedals"]["sentences"]
            assert verify_session(session).ok
        # The first session's files did not move while the hub served the second.
        assert verify_session(first).ok

        # Idle again, the hub's events are the service's again: a fault is listed for the examiner.
        before = len(svc.faults)
        hub._on_event("fault", device="gps", reason="test", message="gpsd went away")
        assert len(svc.faults) == before + 1
    finally:
        svc.close_idle_sensors()
