"""GPS and pedals inside a real recording: a real gpsd (gpsfake) killed and restarted mid-session,
the pedal log played through a socat pty pair, and the decoded pictures checked against the
session's own telemetry and events."""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from muxer.overlay import Overlay
from sensors.replay import free_port, start_gps_replay
from core.clock import SessionClock
from core.profile import load_profile

from conftest import EXAMREC, ROOT, session_dirs, write_profile
from media import decode_video
from overlay_truth import SPEED_SETTLE_NS, SessionTruth, best_match, read_speed_line
from sensors.nmea import read_fixes
from sensor_harness import write_nmea_slice

FIXTURES = ROOT / "bench" / "fixtures"
DURATION = 14.0

PROFILE = f"""
name = "sensors"
kind = "replay"
segment_s = 300
gps = "gpsd://127.0.0.1:{{port}}"
pedals = "replay:{FIXTURES}/exam.pedal"

[encoder]
preset = "ultrafast"
crf = 20
gop = 25

[overlay]
fields = ["datetime", "duration", "name", "stage", "speed", "pedals"]

[[streams]]
name = "road-front"
source = "pattern:"
width = 640
height = 360
fps = 25

[[streams]]
name = "pedal"
source = "clip:{FIXTURES}/pedal-cam.mp4"
width = 640
height = 480
fps = 25
"""


def _wait_for_start(out: Path, proc: subprocess.Popen, timeout_s: float = 60) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for session in session_dirs(out):
            events = session / "events.jsonl"
            if events.exists() and '"type":"start"' in events.read_text():
                return session
        time.sleep(0.05)
    raise AssertionError("the recorder did not start")


def test_gpsd_lost_and_back_mid_session_and_the_picture_follows_the_sensors(tmp_path):
    port = free_port()
    profile = write_profile(tmp_path / "sensors.toml", PROFILE.format(port=port))
    out = tmp_path / "out"
    gps = start_gps_replay(FIXTURES / "exam-drive.nmea", port=port)
    try:
        # --force: gpsfake replays a drive of 2025, so the clock check rightly fails; forcing is logged.
        proc = subprocess.Popen([*EXAMREC, "record", "--profile", str(profile), "--duration", str(DURATION),
                                 "--out", str(out), "--force", "--json"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        session = _wait_for_start(out, proc)
        time.sleep(4)
        gps.close()          # gpsd dies mid-exam
        time.sleep(3)
        # ...and comes back on its port, the drive going on where a receiver would be by then
        later = write_nmea_slice(tmp_path / "later.nmea", first=120, count=120)
        gps = start_gps_replay(later, port=port)
        stdout, stderr = proc.communicate(timeout=DURATION + 60)
    finally:
        gps.close()
    assert proc.returncode == 0, stderr
    manifest = json.loads(stdout)
    assert manifest["state"] == "finished"

    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    kinds = [(e["type"], e.get("device")) for e in events]
    assert ("forced", None) in kinds
    fault = next(e for e in events if e["type"] == "fault" and e.get("device") == "gps")
    back = next(e for e in events if e["type"] == "recovered" and e.get("device") == "gps")
    assert 3 < fault["pts_s"] < back["pts_s"] < DURATION, (fault, back)
    assert str(port) in fault["detail"]
    (gap,) = manifest["sensor_gaps"]["gps"]
    assert abs(gap["start_pts_s"] - fault["pts_s"]) < 0.01 and abs(gap["end_pts_s"] - back["pts_s"]) < 0.01
    assert manifest["sensors"]["gps"]["disconnects"] == 1

    # Fixes on both sides of the outage, none inside it; the route has them all.
    fixes = [json.loads(line) for line in (session / "telemetry.jsonl").read_text().splitlines()]
    gps_pts = [f["pts_s"] for f in fixes if f["type"] == "gps" and f.get("mode", 0) >= 2]
    assert any(p < fault["pts_s"] for p in gps_pts) and any(p > back["pts_s"] for p in gps_pts)
    assert not any(fault["pts_s"] + 0.5 < p < back["pts_s"] - 0.1 for p in gps_pts)
    route = (session / "route.gpx").read_text()
    # One point an epoch (gpsd reports most epochs twice: from GGA, then from RMC).
    epochs = {f["time"] for f in fixes if f["type"] == "gps" and f.get("mode", 0) >= 2 and f.get("time")}
    assert route.count("<trkpt") == len(epochs), (route.count("<trkpt"), len(epochs))

    # Pedal actuations carry session times, and the pedal stream's samples are all there.
    pedal_events = [e for e in events if e["type"] == "pedal" and e["start_pts_s"] is not None]
    assert any(0 <= e["start_pts_s"] < DURATION for e in pedal_events), pedal_events
    assert manifest["sensors"]["pedals"]["sentences"] > 10 * DURATION
    assert sum(1 for f in fixes if f["type"] == "pedals") == manifest["sensors"]["pedals"]["sentences"]

    # Every frame of both streams shows what the evidence says: speed or "GPS: no fix", and the
    # BRAKE/CLUTCH indicators lit exactly on the frames captured during an actuation.
    clock = SessionClock.from_json(manifest["clock"])
    truth = SessionTruth.load(session, clock)
    spec_of = load_profile(profile).stream
    lit = no_fix = 0
    for stream in manifest["streams"]:
        spec = spec_of(stream["name"])
        ov = Overlay(spec.overlay, spec.name, spec.width, spec.height, clock)
        decoded = decode_video(session / stream["segments"][0]["file"], keep_every=2)
        for pts, img in zip(decoded.pts_s[::2], decoded.images):
            t = clock.capture_ns(pts)
            candidates = truth.states(t)
            err, shown = best_match(ov, img, t, candidates)
            assert err < 0.025, (stream["name"], pts, err, candidates)  # red on dark: chroma subsampling smears the edges
            if len(candidates) == 1:  # the other indicator state is clearly not what the frame shows
                flipped = replace(shown, brake=not shown.brake)
                assert best_match(ov, img, t, [flipped])[0] > 3 * err + 0.002, (stream["name"], pts)
            lit += bool(shown.brake or shown.clutch)
            no_fix += shown.gps_fix is False
    assert lit > 0, "no frame showed a pedal actuation"
    assert no_fix > 0, "no frame showed the GPS outage"


def _children(pid: int) -> dict[int, str]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return out


def test_a_killed_recorder_leaves_no_gpsd_or_socat_behind(tmp_path):
    """The replay's gpsfake, its gpsd and the socat pty pair end with the recorder, even on SIGKILL
    (a car's next boot must find the port free)."""
    from conftest import replay_variant
    profile = replay_variant(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([*EXAMREC, "record", "--profile", str(profile), "--duration", "60", "--out", str(out), "--force"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_start(out, proc)
        # recorder -> guard -> gpsfake -> gpsd, and recorder -> guard -> socat
        descendants: dict[int, str] = {}
        todo = [proc.pid]
        while todo:
            kids = _children(todo.pop())
            descendants.update(kids)
            todo += list(kids)
        names = [cmd.split()[0].rsplit("/", 1)[-1] for cmd in descendants.values()]
        assert "gpsd" in names and "socat" in names, descendants
        assert any("gpsfake" in cmd and "owner_guard" not in cmd for cmd in descendants.values()), descendants
        helpers = {pid: cmd for pid, cmd in descendants.items() if "gpsfake" in cmd or "socat" in cmd or "gpsd" in cmd}
        gpsd: set[int] = set()
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        alive = set(helpers) | gpsd
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if Path(f"/proc/{pid}").exists()
                     and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]}
            time.sleep(0.1)
        assert not alive, {pid: cmd for pid, cmd in {**helpers}.items() if pid in alive}
    finally:
        if proc.poll() is None:
            proc.kill()


SPEED_PROFILE = """
name = "speed"
kind = "replay"
segment_s = 300
gps = "gpsd://127.0.0.1:{port}"

[encoder]
preset = "ultrafast"
crf = 20
gop = 25

[overlay]
fields = ["datetime", "duration", "name", "speed"]

[[streams]]
name = "road-front"
source = "pattern:"
width = 640
height = 360
fps = 25
"""


def test_the_picture_shows_the_receivers_own_speed_not_gpsds_estimate(tmp_path):
    """The fixture's receiver jitters by metres and loses an RMC now and then, so gpsd reports
    each epoch twice: from GGA with a speed it computes from the jittery positions, then from RMC
    with the receiver's own. Every decoded frame must show the receiver's (within 1 km/h)."""
    port = free_port()
    profile = write_profile(tmp_path / "speed.toml", SPEED_PROFILE.format(port=port))
    out = tmp_path / "out"
    drive = write_nmea_slice(tmp_path / "walk.nmea", first=0, count=60)  # standing start, slalom at 10 km/h
    receiver = {f.time_utc.strftime("%Y-%m-%dT%H:%M:%S.000Z"): f for f in read_fixes(drive)}
    with start_gps_replay(drive, port=port):
        proc = subprocess.run([*EXAMREC, "record", "--profile", str(profile), "--duration", "12", "--out", str(out),
                               "--force", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    (session,) = session_dirs(out)
    clock = SessionClock.from_json(manifest["clock"])
    reports = [json.loads(line) for line in (session / "telemetry.jsonl").read_text().splitlines()]
    reports = [r for r in reports if r["type"] == "gps" and r.get("time") and r.get("mode", 0) >= 2]
    # The telemetry says which speed is whose: gpsd's estimates are there and marked.
    estimates = [r for r in reports if r.get("speed_source") == "gpsd"]
    assert estimates, "the fixture no longer makes gpsd report its own estimate"
    off = [r for r in estimates if abs(r["speed"] - (receiver[r["time"]].speed_mps or 0)) * 3.6 > 3]
    assert off, "gpsd's estimates all agree with the receiver: the fixture has lost its jitter"
    for r in reports:
        if r.get("speed_source") == "receiver":
            assert abs(r["speed"] - receiver[r["time"]].speed_mps) < 0.005, r

    def receiver_kmh(time_utc: str) -> float | None:
        fix = receiver[time_utc]
        while fix.speed_mps is None:  # an epoch whose RMC was garbled: the speed of the one before stays
            earlier = [f for f in receiver.values() if f.time_utc < fix.time_utc]
            if not earlier:
                return None
            fix = max(earlier, key=lambda f: f.time_utc)
        return fix.speed_mps * 3.6

    spec = load_profile(profile).stream("road-front")
    ov = Overlay(spec.overlay, spec.name, spec.width, spec.height, clock)
    decoded = decode_video(session / manifest["streams"][0]["segments"][0]["file"], keep_every=3)
    arrivals = sorted((r["capture_ns"], r["time"]) for r in reports)
    checked = 0
    for pts, img in zip(decoded.pts_s[::3], decoded.images):
        t = clock.capture_ns(pts)
        shown, err = read_speed_line(ov, img, t)
        assert err < 0.025, (pts, shown, err)
        epochs = sorted({tm for ns, tm in arrivals if ns <= t})
        if not epochs:
            continue  # the first fix of the session may still be on its way
        # The epoch whose first report came last, or the one before it: the receiver's speed of
        # an epoch arrives with its RMC, half a second after gpsd's GGA-based report.
        allowed = {receiver_kmh(tm) for tm in epochs[-2:]}
        recent = [tm for ns, tm in arrivals if t - SPEED_SETTLE_NS <= ns <= t]
        if recent and len(epochs) >= 3:
            allowed.add(receiver_kmh(epochs[-3]))  # a new report may still be on its way to the picture
        ok = any(k is not None and shown.endswith("km/h") and abs(float(shown.split()[0]) - k) <= 1 for k in allowed)
        assert ok, (pts, shown, sorted(k for k in allowed if k is not None))
        checked += 1
    assert checked > 60
