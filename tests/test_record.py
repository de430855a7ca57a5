"""Record the replay profile end to end and check what a reviewer would check, by decoding."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capture.timecode import read_timecode
from muxer.overlay import Overlay
from core.clock import SessionClock
from core.profile import load_profile

from conftest import REPLAY, EXAMREC, ROOT, replay_variant, run_examrec, session_dirs
from media import audio_span, decode_video, ffprobe
from overlay_truth import SessionTruth, best_match, overlay_error, overlay_error_where, where_boxes_differ

DURATION = 5.0


def manifest(session: Path) -> dict:
    return json.loads((session / "manifest.json").read_text())


def segments(session: Path):
    for s in manifest(session)["streams"]:
        for seg in s["segments"]:
            yield s, seg, session / seg["file"]


def test_every_segment_decodes_in_pyav_and_ffprobe(recorded_session):
    for stream, seg, path in segments(recorded_session):
        decoded = decode_video(path, keep_every=1000)
        probe = ffprobe(path)
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        assert int(video["nb_read_frames"]) == len(decoded.pts_s) == seg["frames"], seg["file"]
        if stream["audio"]:
            assert any(s["codec_type"] == "audio" for s in probe["streams"]), "cabin must carry the audio"


def test_frame_counts_and_first_pts(recorded_session):
    for stream in manifest(recorded_session)["streams"]:
        pts = []
        for seg in stream["segments"]:
            pts += decode_video(recorded_session / seg["file"], keep_every=10**6).pts_s
        expected = DURATION * stream["fps"]
        assert abs(len(pts) - expected) <= 0.02 * expected, (stream["name"], len(pts), expected)
        assert 0 <= pts[0] < 1 / stream["fps"], (stream["name"], pts[0])
        assert pts == sorted(pts)


def test_audio_lasts_as_long_as_video(recorded_session):
    cabin = next(s for s in manifest(recorded_session)["streams"] if s["audio"])
    path = recorded_session / cabin["segments"][0]["file"]
    video = decode_video(path, keep_every=10**6).pts_s
    video_end = video[-1] + 1 / cabin["fps"]
    a_first, a_end, samples = audio_span(path)
    assert abs(a_first - video[0]) <= 0.05
    # AAC encoder priming and the last partial frame are inside the 50 ms bound.
    assert abs((a_end - a_first) - (video_end - video[0])) <= 0.05, (a_first, a_end, video[0], video_end)


def test_timecode_strip_matches_pts_in_every_stream(recorded_session):
    """The picture's own capture time equals its PTS: one timeline for all streams."""
    for stream, seg, path in segments(recorded_session):
        decoded = decode_video(path, keep_every=1)
        interval = 1 / stream["fps"]
        readable = 0
        for pts, img in zip(decoded.pts_s, decoded.images):
            tc = read_timecode(img)
            if tc is None:
                continue
            readable += 1
            assert abs(tc / 1000 - pts) <= interval, (seg["file"], pts, tc)
        assert readable >= 0.95 * len(decoded.pts_s), (seg["file"], readable, len(decoded.pts_s))


def test_overlay_shows_date_time_duration_name_speed_and_pedals(recorded_session):
    """Every sampled frame carries the box the session's own evidence says it should: date, time,
    duration, name, stage, the GPS speed of the moment and the pedal indicators."""
    m = manifest(recorded_session)
    clock = SessionClock.from_json(m["clock"])
    profile = load_profile(REPLAY)
    truth = SessionTruth.load(recorded_session, clock)
    assert truth.has_gps and truth.has_pedals and truth.fixes
    for stream in m["streams"]:
        spec = profile.stream(stream["name"])
        ov = Overlay(spec.overlay, spec.name, spec.width, spec.height, clock)
        decoded = decode_video(recorded_session / stream["segments"][0]["file"], keep_every=20)
        for pts, img in zip(decoded.pts_s[::20], decoded.images):
            capture_ns = clock.capture_ns(pts)
            right, state = best_match(ov, img, capture_ns, truth.states(capture_ns))
            assert right < 0.01, (stream["name"], pts, right)
            # ...and not the box of a minute and a second later, judged where the two boxes differ
            # (the name, the DEMO label and the lamps are the same in both and would dilute it).
            right_box, _ = ov.box_for(capture_ns, state)
            wrong_box, (x, y) = ov.box_for(capture_ns + 61_000_000_000, state)
            region = img[y:y + wrong_box.shape[0], x:x + wrong_box.shape[1]]
            if region.shape == wrong_box.shape == right_box.shape:
                differ = where_boxes_differ(right_box, wrong_box)
                right_there = overlay_error_where(region, right_box, differ)
                wrong_there = overlay_error_where(region, wrong_box, differ)
                assert wrong_there > 3 * right_there + 0.002, (stream["name"], pts, right_there, wrong_there)


def test_manifest_hashes_match_files(recorded_session):
    m = manifest(recorded_session)
    assert m["format"] == "examrec-session/2" and m["state"] == "finished"
    for _, seg, path in segments(recorded_session):
        assert seg["closed"] and seg["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert seg["size"] == path.stat().st_size


def test_manifest_names_the_software_that_recorded_it(recorded_session):
    import av
    proc = run_examrec("--version")
    software = manifest(recorded_session)["software"]
    assert proc.stdout.strip() == (f"examrec {software['examrec']} (PyAV {software['pyav']}, "
                                   f"FFmpeg {software['ffmpeg']})")
    assert software["pyav"] == av.__version__ and software["ffmpeg"] == av.ffmpeg_version_info


def test_fragment_log_hashes_match_bytes(recorded_session):
    from sessions.evidence.chain import read_chain
    for stream in manifest(recorded_session)["streams"]:
        records, problems = read_chain(recorded_session / stream["name"] / "fragments.jsonl")
        assert not problems
        for rec in records:
            data = (recorded_session / rec["file"]).read_bytes()
            chunk = data[rec["offset"]:rec["end"]]
            if rec.get("skip"):
                s0, s1 = rec["skip"]
                chunk = data[rec["offset"]:s0] + data[s1:rec["end"]]
            assert hashlib.sha256(chunk).hexdigest() == rec["sha256"], (rec["file"], rec["index"])


def test_manifest_is_written_before_the_first_frame(tmp_path):
    """Watch the folder while the recorder starts: no segment byte exists before manifest.json."""
    profile = replay_variant(tmp_path)
    proc = subprocess.Popen([*EXAMREC, "record", "--profile", profile, "--duration", "2", "--out", tmp_path / "out"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_media = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        media = [p for p in (tmp_path / "out").glob("*/*/*/*.mp4") if _size(p) > 0]
        if media:
            session = media[0].parent.parent
            assert (session / "manifest.json").exists(), "media written before the manifest"
            assert manifest(session)["started_at"]
            seen_media = True
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and seen_media, err


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a segment renamed while we looked
        return 0


BROKEN = [
    ("unknown key", {'fragment_ms = 120': 'fragment_ms = 120\nframe_rate = 25'}, "frame_rate", "unknown key"),
    ("missing key", {'name = "replay"\n': ''}, "name", "missing"),
    ("wrong type", {'width = 1280\nheight = 720\nfps = 25\naudio': 'width = "1280"\nheight = 720\nfps = 25\naudio'}, "streams[0].width", "wrong type"),
    ("duplicate names", {'name = "road-rear"': 'name = "road-front"'}, "streams.road-front.name", "duplicate"),
    ("missing fixture", {"cabin.wav": "nothere.wav"}, "streams.cabin.audio", "not found"),
    ("size out of range", {"width = 640": "width = 9000"}, "streams[3].width", "out of range"),
    ("odd size", {"height = 480": "height = 481"}, "streams[3].height", "odd"),
    ("rate out of range", {"fps = 10": "fps = 500"}, "streams[4].fps", "out of range"),
    ("bad preset", {'preset = "ultrafast"': 'preset = "warp"'}, "encoder.preset", "not one of"),
    ("syntax", {'segment_s = 300': 'segment_s = = 300'}, "(syntax)", "not valid TOML"),
]


@pytest.mark.parametrize("label,edit,key,why", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_profile_exits_2_naming_the_key(tmp_path, label, edit, key, why):
    profile = replay_variant(tmp_path, edit)
    out = tmp_path / "out"
    proc = run_examrec("record", "--profile", profile, "--duration", "1", "--out", out, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert str(profile) in proc.stderr and key in proc.stderr and why in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "a broken profile must write nothing"


def test_cli_without_arguments_prints_help():
    proc = run_examrec()
    assert proc.returncode == 0 and "record" in proc.stdout and "info" in proc.stdout


def test_each_command_loads_only_its_own_module_and_the_table_says_which():
    """`examrec pause` builds the parser of its own command only (cli.app.COMMANDS); the table
    must name every command a module registers, and each command's --help must work alone."""
    import argparse
    import importlib
    from sessions.cli import app
    for module in app.COMMAND_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert set(sub.choices) == {c for c, m in app.COMMANDS.items() if m == module}, module
    parser = app.build_parser("pause")
    assert set(parser._subparsers._group_actions[0].choices) == {"status", "pause", "resume", "stop", "photo"}
    assert len(app.build_parser()._subparsers._group_actions[0].choices) == len(app.COMMANDS)
    for command, usage in (("pause", "pause"), ("archive", "archive"), ("equipment", "device"), ("verify", "verify")):
        proc = run_examrec(command, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: examrec {usage} "), (proc.stdout, proc.stderr)
    code = "import sys; from sessions.cli.app import main; main(['status', '--socket', '/nonexistent']); " \
           "print(sorted(m for m in sys.modules if m.startswith(('sessions.archive', 'sessions.recorder.controller', " \
           "'jinja2', 'av', 'cv2'))))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout  # no records office, no recorder, no PyAV


def test_info_reads_the_session(recorded_session):
    proc = run_examrec("info", recorded_session, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["state"] == "finished" and {r["stream"] for r in info["streams"]} >= {"cabin", "pedal", "screen"}
    assert run_examrec("info", recorded_session.parent).returncode == 2


def test_audio_plays_at_its_capture_instant(recorded_session):
    """The fixture beeps at every whole second of the session: the decoded beeps must start there
    (AAC pre-roll and block stamping included), so sound and picture stay together."""
    from media import beep_onsets
    cabin = next(s for s in manifest(recorded_session)["streams"] if s["audio"])
    onsets = [t for t in beep_onsets(recorded_session / cabin["segments"][0]["file"]) if t > 0.5]
    assert len(onsets) >= 4, onsets
    for t in onsets:
        assert abs(t - round(t)) <= 0.010, onsets


def test_verify_says_complete_and_untouched(recorded_session):
    proc = run_examrec("verify", recorded_session, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_verify_names_an_edited_route_and_telemetry(recorded_session, tmp_path):
    """The route and the telemetry are evidence too: one changed byte in either is named."""
    import shutil
    copy = tmp_path / recorded_session.name
    shutil.copytree(recorded_session, copy)
    route = copy / "route.gpx"
    route.write_text(route.read_text().replace("<trkpt lat=\"5", "<trkpt lat=\"4", 1))
    with open(copy / "telemetry.jsonl", "ab") as fh:
        fh.write(b'{"type":"gps","capture_ns":1,"pts_s":0.1,"mode":3,"lat":1.0,"lon":1.0}\n')
    proc = run_examrec("verify", copy, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    kinds = {(p["file"], p["kind"]) for p in json.loads(proc.stdout)["problems"]}
    assert kinds == {("route.gpx", "changed-route"), ("telemetry.jsonl", "changed-telemetry")}, kinds


def test_a_clean_recording_has_no_fault_and_no_gap(recorded_session):
    """Nothing went wrong in the replay recording, so nothing may say it did (a false fault in
    the evidence would be as bad as a missed one)."""
    m = manifest(recorded_session)
    assert all(not s["gaps"] for s in m["streams"]), [(s["name"], s["gaps"]) for s in m["streams"]]
    events = [json.loads(line) for line in (recorded_session / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["type"] in ("fault", "recovered", "restarted")], events
