"""GPS: a real gpsd (started by gpsfake, or reading a live pty) and the watch-stream reader."""
from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path

import pytest

from sensor_harness import EXAM_NMEA, Collector, LiveGps, nmea_header_and_epochs, no_leftovers, write_nmea_slice
from sensors.clockcheck import check_clock
from sensors.gps import GpsFix, GpsReader, iso_to_ns, parse_gpsd_url
from sensors.nmea import NmeaError, read_fixes, split_sentence
from sensors.replay import free_port, gpsfake_server, start_gps_replay
from core.clock import SessionClock

OUTAGE = range(163, 169)  # the underpass: epochs without a fix in the exam-drive fixture


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_fixture_is_a_realistic_exam_drive():
    head, epochs = nmea_header_and_epochs()
    for key in ("# Name:", "# Description:", "# Date:", "# Delay-Cookie: @"):
        assert key in head
    garbled = []
    for i, epoch in enumerate(epochs):
        lines = [line for line in epoch.replace("@\n", "").split("\r\n") if line]
        kinds = [line[1:6] for line in lines]
        assert kinds == ["GPGGA", "GPRMC", "GPVTG"]  # the MTK/SiRF order
        for line in lines:
            try:
                split_sentence(line)
            except NmeaError:
                garbled.append(i)
    # A few epochs lose their RMC and VTG to line noise, as a receiver's do (and then gpsd
    # reports each later epoch twice: see sensors.gps).
    assert garbled and all(garbled.count(i) == 2 for i in set(garbled)) and 1 in garbled
    fixes = read_fixes(EXAM_NMEA)
    # Position jitter of metres from epoch to epoch, as a consumer receiver's: at standstill the
    # position wanders while the receiver's speed stays 0.
    still = [f for f in fixes[:8] if f.valid]
    spread_m = max(abs(a.lat - b.lat) for a in still for b in still) * 111_000
    assert 2 < spread_m < 30
    assert 180 <= len(fixes) <= 300  # 3-5 minutes at 1 Hz
    assert all((b.time_utc - a.time_utc).total_seconds() == 1 for a, b in zip(fixes, fixes[1:]))
    assert [i for i, f in enumerate(fixes) if not f.valid] == list(OUTAGE)
    kmh = [f.speed_mps * 3.6 for f in fixes if f.valid and f.speed_mps is not None]
    assert 55 <= max(kmh) <= 62 and kmh[0] == 0
    stops = sum(1 for a, b in zip(kmh, kmh[1:]) if a > 3 and b == 0)
    assert stops >= 5  # ramp, parking, gate, traffic light, crossing, end
    assert all(f.alt_m is not None and f.sats >= 9 for f in fixes if f.valid)
    assert sorted(i for i, f in enumerate(fixes) if f.valid and f.speed_mps is None) == sorted(set(garbled))


def test_parse_gpsd_url():
    assert parse_gpsd_url("gpsd://127.0.0.1:2947") == ("127.0.0.1", 2947)
    assert parse_gpsd_url("gpsd://localhost") == ("localhost", 2947)
    with pytest.raises(ValueError, match="gpsd://HOST:PORT"):
        parse_gpsd_url("tcp://127.0.0.1:2947")


def test_fix_record_round_trip():
    fix = GpsFix(capture_ns=5_000_000_000, mode=3, time_utc="2025-05-15T06:00:00.000Z", lat=50.4, lon=30.6,
                 alt_m=112.1, speed_mps=13.9, track_deg=183.3, device="/dev/ttyACM0")
    clock = SessionClock(start_ns=2_000_000_000, wall_anchor_ns=0)
    rec = fix.to_record(clock)
    assert rec["type"] == "gps" and rec["pts_s"] == 3.0 and rec["alt"] == 112.1
    assert GpsFix.from_record(rec) == fix
    assert "alt" not in GpsFix(capture_ns=1, mode=1, time_utc=None).to_record()
    assert iso_to_ns("2025-05-15T06:00:00.250Z") == 1747288800_250_000_000


def test_reported_fixes_match_the_fixture_and_no_fix_is_an_event(tmp_path):
    """30 epochs around the underpass (stop, 0-60 km/h, 6 s without fix), 5x real time."""
    first, count = 150, 30
    log = write_nmea_slice(tmp_path / "slice.nmea", first, count)
    truth = {_iso(f.time_utc): f for f in read_fixes(EXAM_NMEA)[first:first + count]}
    fixes, events = Collector(), Collector()
    labels = set()
    with gpsfake_server(log, cycle_s=0.2) as url:
        reader = GpsReader(url, on_fix=fixes.add, on_event=events.event)
        reader.start()
        try:
            deadline = time.monotonic() + 20
            last_time = _iso(read_fixes(EXAM_NMEA)[first + count - 1].time_utc)
            while time.monotonic() < deadline and not any(f.time_utc == last_time for f in fixes.snapshot()):
                labels.add(reader.state().label)
                time.sleep(0.02)
        finally:
            reader.stop()
    # (gpsd's very first report of a log that starts with GGA has a position but no time yet)
    got = [f for f in fixes.snapshot() if f.has_fix and f.time_utc]
    assert got, "no fix reported"
    sources = {"receiver": 0, "gpsd": 0}
    for f in got:
        want = truth[f.time_utc]
        assert abs(f.lat - want.lat) < 1e-6 and abs(f.lon - want.lon) < 1e-6, f
        if f.speed_source == "receiver":
            assert abs(f.speed_mps - want.speed_mps) < 0.005, f  # knots with 2 decimals, as written
            if want.track_deg is not None:
                assert f.track_deg == pytest.approx(want.track_deg, abs=0.05)
        else:  # gpsd's estimate from the jittery GGA positions: marked, never the receiver's
            # (or no speed at all: the first GGA after the underpass has nothing to compute from)
            assert f.speed_source in ("gpsd", None) and f.track_deg is None, f
            assert (f.speed_source is None) == (f.speed_mps is None), f
        sources[f.speed_source or "gpsd"] += 1
        if f.mode == 3:
            assert f.alt_m == pytest.approx(want.alt_m, abs=0.05)  # the altitude gpsd-py3 missed
    # gpsd reports the epochs twice (GGA with its estimate, RMC with the receiver's speed).
    assert sources["receiver"] >= len({f.time_utc for f in got}) - 2 and sources["gpsd"] > 5, sources
    # Every epoch from the first one seen on is reported (the watch stream misses nothing).
    seen = sorted({f.time_utc for f in got})
    valid = [t for t, f in truth.items() if f.valid]
    # (an epoch whose RMC and VTG were garbled may go unreported: gpsd had no sentence ending it)
    assert seen == [t for t in valid[valid.index(seen[0]):] if truth[t].speed_mps is not None or t in seen]
    assert len(seen) >= count // 2  # (the first epochs may play before the reader connects)
    assert max(f.speed_kmh for f in got if f.speed_source == "receiver") > 55
    # The underpass: a no-fix report, an event, and the overlay's text; then the fix is back.
    assert any(f.mode == 1 for f in fixes.snapshot())
    states = [e["state"] for e in events.of("gps")]
    assert states[:1] == ["fix"] and "no_fix" in states and states[-1] == "fix"
    no_fix = events.of("gps")[states.index("no_fix")]
    assert "no fix" in no_fix["detail"]
    assert "GPS: no fix" in labels and any(label.endswith("km/h") for label in labels)
    assert not events.of("fault")


def test_gpsd_killed_then_back_on_the_same_port():
    events, fixes = Collector(), Collector()
    port = free_port()
    with no_leftovers(port):
        first = start_gps_replay(EXAM_NMEA, port=port, cycle_s=0.2)  # the whole fixture: gpsfake takes it
        reader = GpsReader(first.url, on_fix=fixes.add, on_event=events.event)
        reader.start()
        try:
            assert fixes.wait_for(lambda f: f.has_fix, timeout_s=10) is not None
            leftovers = [first.folder, Path(f"/tmp/gpsfake-{first.process.pid}.sock")]
            first.close()  # gpsd dies
            fault = events.wait_for(lambda e: e["type"] == "fault", timeout_s=5)
            assert fault is not None and fault["device"] == "gps" and str(port) in fault["detail"]
            gone = reader.state()
            n_before = len(fixes.snapshot())
            with start_gps_replay(EXAM_NMEA, port=port, cycle_s=0.2) as second:
                leftovers += [second.folder, Path(f"/tmp/gpsfake-{second.process.pid}.sock")]
                back = events.wait_for(lambda e: e["type"] == "recovered", timeout_s=15)
                assert back is not None, events.snapshot()
                again = fixes.wait_for(lambda f: f.has_fix, timeout_s=10, after=n_before)
                assert again is not None
                assert reader.wait_for_fix(5) is not None
                reader.stop()  # before this gpsd goes too
        finally:
            reader.stop()
    assert not gone.connected and not gone.fix and gone.label == "GPS: no fix"
    assert back["after_s"] > 0 and again.capture_ns > back["capture_ns"] > fault["capture_ns"]
    n = reader.counters()
    assert (n["connects"], n["disconnects"]) == (2, 1)
    assert [e["type"] for e in events.snapshot() if e["type"] in ("fault", "recovered")] == ["fault", "recovered"]
    assert not [p for p in leftovers if p.exists()] and _no_gpsfake_for(port)


def _no_gpsfake_for(port: int) -> bool:
    """No process left whose command line names this port (gpsfake -P PORT, gpsd -S PORT)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if str(port).encode() in args and (b"-P" in args or b"-S" in args):
            return False
    return True


def test_clock_check_measures_the_offset(tmp_path):
    """A receiver 2.5 s ahead of this machine's clock: the check finds 2.5 s and warns."""
    events = Collector()
    with LiveGps(tmp_path, offset_s=2.5) as gps:
        reader = GpsReader(gps.url)
        reader.start()
        try:
            result = check_clock(reader, limit_s=1.0, timeout_s=10, on_event=events.event)
            relaxed = check_clock(reader, limit_s=5.0, timeout_s=10)
        finally:
            reader.stop()
    assert result["source"] == "gps" and result["method"] == "toff" and result["samples"] == 3
    assert result["offset_s"] == pytest.approx(2.5, abs=0.1)
    assert not result["ok"] and "behind GPS time" in result["detail"]
    datetime.fromisoformat(result["checked_at"].replace("Z", "+00:00"))
    (event,) = events.of("clock_check")
    assert event["level"] == "warning" and event["offset_s"] == result["offset_s"]
    assert relaxed["ok"] and math.isclose(relaxed["offset_s"], 2.5, abs_tol=0.1)


def test_clock_check_without_gps_says_so():
    reader = GpsReader(f"gpsd://127.0.0.1:{free_port()}", backoff_max_s=0.5)
    reader.start()
    try:
        result = check_clock(reader, timeout_s=1.0)
        state = reader.state()
    finally:
        reader.stop()
    assert result["offset_s"] is None and not result["ok"] and "no GPS time" in result["detail"]
    assert not state.connected and "does not answer" in state.reason and state.label == "GPS: no fix"


def test_profile_replay_devices(tmp_path):
    """`gps = "replay:..."` and `pedals = "replay:..."` in a profile give working readers that
    stop their replay devices with them."""
    from sensor_harness import EXAM_PEDAL
    from sensors.factory import clock_limit_s, gps_reader, pedal_reader
    from core.profile import ProfileError, load_profile
    profile_path = tmp_path / "p.toml"
    profile_path.write_text(f'''
name = "sensors"
kind = "replay"
gps = "replay:{EXAM_NMEA}"
pedals = "replay:{EXAM_PEDAL}"
[pedal_settings]
threshold_percent = 30
[clock_check]
limit_s = 2.5
[[streams]]
name = "cabin"
source = "pattern:"
width = 320
height = 240
fps = 10
''')
    profile = load_profile(profile_path)
    assert clock_limit_s(profile) == 2.5
    samples = Collector()
    gps = gps_reader(profile)
    pedals = pedal_reader(profile, on_sample=samples.add)
    assert pedals.settings.threshold_percent == 30 and pedals.settings.debounce_ms == 30
    gps.start()
    pedals.start(SessionClock.start_now())
    try:
        assert gps.wait_for_fix(10) is not None
        assert samples.wait_for(lambda s: True, timeout_s=5) is not None
        port, pty = gps.port, Path(pedals.port_url)
        assert pty.exists()
    finally:
        gps.stop()
        pedals.stop()
    assert _no_gpsfake_for(port) and not pty.exists() and not pty.parent.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(profile_path.read_text().replace(f"replay:{EXAM_NMEA}", "tcp://gps:2947"))
    with pytest.raises(ProfileError, match="gps: .*gpsd://HOST:PORT"):
        gps_reader(load_profile(bad))


def test_a_2d_fix_with_a_speed_shows_the_speed(tmp_path):
    """A receiver with a 2D fix (GSA mode 2, no altitude) still sends its speed: the overlay shows it."""
    from sensors.nmea import sentence
    lines = ["# Name: 2D fix", "# Delay-Cookie: @ 0.0"]
    for i in range(12):
        hms = f"0600{i:02d}.00"
        lines += [sentence(f"GPGGA,{hms},5024.73800,N,03038.04600,E,1,04,2.5,,M,,M,,").strip(),
                  sentence("GPGSA,A,2,01,02,03,04,,,,,,,,,2.7,2.5,1.0").strip(),
                  sentence(f"GPRMC,{hms},A,5024.73800,N,03038.04600,E,10.80,90.0,150525,,,A").strip(), "@"]
    log = tmp_path / "twod.nmea"
    log.write_text("\n".join(lines) + "\n")
    fixes, labels = Collector(), set()
    with gpsfake_server(log, cycle_s=0.2) as url:
        reader = GpsReader(url, on_fix=fixes.add)
        reader.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any(f.mode == 2 and f.speed_source == "receiver"
                                                          for f in fixes.snapshot()):
                time.sleep(0.02)
            time.sleep(0.3)
            labels.add(reader.state().label)
        finally:
            reader.stop()
    two_d = [f for f in fixes.snapshot() if f.mode == 2 and f.has_fix]
    assert two_d, [f.mode for f in fixes.snapshot()]
    assert labels == {"20 km/h"}, labels  # 10.8 knots


def test_a_replay_under_a_long_temporary_folder_still_gives_fixes(tmp_path, monkeypatch):
    """gpsfake's control socket lives in its folder, and a Unix socket path is at most 107 bytes:
    under a long TMPDIR (a test's, a service's private /tmp) gpsd never got the device and the
    replay gave no fix at all. The replay's folder is then made in /tmp."""
    import tempfile
    long_tmp = tmp_path / ("t" * 60)
    long_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # (read TMPDIR again)
    with start_gps_replay(EXAM_NMEA) as replay:
        reader = GpsReader(replay.url)
        reader.start()
        try:
            assert reader.wait_for_fix(10) is not None, f"no fix from the replay in {replay.folder}"
        finally:
            reader.stop()
        assert len(str(replay.folder)) < 60, replay.folder
    assert list(long_tmp.iterdir()) == [] and not replay.folder.exists()
