"""The exam lifecycle against a running recorder, through the CLI: status, pause and resume
between stages (with banners on the picture), stop, checks, faults, stills, details."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_examrec
from crash_harness import wait_started
from media import beep_onsets, decode_video
from muxer.overlay import render_banner

PROFILE = f'''
name = "{{name}}"
kind = "replay"
segment_s = 300
pause_banner_s = {{banner}}
control_socket = "{{sock}}"
[checks]
sample_s = 1.0
[photos]
candidate = "cabin"
examiner = "road"
[encoder]
crf = 30
[[streams]]
name = "cabin"
source = "pattern:"
width = 320
height = 240
fps = 25
audio = "wav:{ROOT}/bench/fixtures/cabin.wav"
[[streams]]
name = "road"
source = "pattern:"
width = 320
height = 240
fps = 25
'''


def make_profile(tmp: Path, banner: float = 3.0, extra: str = "") -> tuple[Path, Path]:
    sock = tmp / "ctl.sock"
    path = tmp / "life.toml"
    path.write_text(PROFILE.format(name="life", banner=banner, sock=sock) + extra)
    return path, sock


def start(profile: Path, out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sessions.cli", "record", "--profile", str(profile), "--out",
                             str(out), *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess:
    return run_examrec(*args, "--socket", sock, timeout=30)


def events(session: Path) -> list[dict]:
    return [json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()]


def test_pause_resume_stop_and_status(tmp_path):
    from datetime import datetime, timezone
    from session_factory import make_session
    profile, sock = make_profile(tmp_path)
    # Last week's session still on the recorder: status must say it is overdue for upload.
    old = make_session(tmp_path / "out", started=datetime(2026, 1, 2, 9, 0, tzinfo=timezone.utc))
    proc = start(profile, tmp_path / "out", "--force", "--details", _details(tmp_path))
    session, _ = wait_started(tmp_path / "out", proc)
    time.sleep(1.0)
    st = ctl(sock, "status", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["state"] == "recording" and status["stage"] == 1
    assert {s["stream"]: s["health"] for s in status["streams"]} == {"cabin": "ok", "road": "ok"}
    assert status["uploads_overdue"] == [old.name]
    assert f"uploads overdue: 1 session(s)" in ctl(sock, "status").stdout
    bad = ctl(sock, "resume", "--plate", "AA1234BB")
    assert bad.returncode == 3 and "recording" in bad.stderr  # resume when not paused: refused, says the state
    p = ctl(sock, "pause", "--reason", "move to city route", "--plate", "AA1234BB")
    assert p.returncode == 0, p.stderr
    again = ctl(sock, "pause", "--reason", "x", "--plate", "AA1234BB")
    assert again.returncode == 3 and "paused" in again.stderr
    time.sleep(3.6)
    assert json.loads(ctl(sock, "status", "--json").stdout)["state"] == "paused"
    time.sleep(1.0)
    r = ctl(sock, "resume", "--plate", "AA1234BB")
    assert r.returncode == 0, r.stderr
    time.sleep(4.0)
    ph = ctl(sock, "photo", "--role", "examiner")
    assert ph.returncode == 0, ph.stderr
    time.sleep(0.5)
    s = ctl(sock, "stop")
    assert s.returncode == 0, s.stderr
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    m = json.loads((session / "manifest.json").read_text())
    assert m["state"] == "finished"
    assert [st["stage"] for st in m["stages"]] == [1, 2]
    assert all(st["end_pts_s"] is not None and st["end_pts_s"] > st["start_pts_s"] for st in m["stages"])
    assert m["stages"][1]["start_pts_s"] - m["stages"][0]["end_pts_s"] >= 0.9  # the pause is a gap in time
    ev = events(session)
    pause = next(e for e in ev if e["type"] == "pause")
    resume = next(e for e in ev if e["type"] == "resume")
    assert pause["reason"] == "move to city route" and pause["plate"] == "AA1234BB" and "t_utc" in pause
    assert resume["plate"] == "AA1234BB" and resume["stage"] == 2
    assert any(e["type"] == "notice" and "recording" in e["text"] for e in ev)
    assert ev[-1]["type"] == "stop"
    cabin = next(s for s in m["streams"] if s["name"] == "cabin")
    assert [seg["stage"] for seg in cabin["segments"]] == [1, 2]
    # Stills: candidate and examiner at the start, one more on request; all hashed in the manifest.
    roles = [p["role"] for p in m["photos"]]
    assert roles.count("candidate") == 1 and roles.count("examiner") == 2
    import hashlib
    for p in m["photos"]:
        assert hashlib.sha256((session / p["file"]).read_bytes()).hexdigest() == p["sha256"]
    assert m["details"]["candidate"] == "Сәтбаев Ерлан Қанатұлы"
    assert m["details"]["examiner"] == "Шевченко Ґанна Їжакович"
    assert run_examrec("verify", session).returncode == 0
    _check_banners(session, m, pause["banner"])


def _details(tmp: Path) -> Path:
    f = tmp / "details.json"
    f.write_text(json.dumps({"candidate": "Сәтбаев Ерлан Қанатұлы", "candidate_id": "КЗ-001122",
                             "examiner": "Шевченко Ґанна Їжакович", "plate": "AA1234BB", "centre": "ТСЦ 8041",
                             "exam": "practical"}, ensure_ascii=False), encoding="utf-8")
    return f


def _banner_error(img: np.ndarray, text: str) -> float:
    band = render_banner(text, img.shape[1], img.shape[0])
    y0 = (img.shape[0] - band.shape[0]) // 2
    region = img[y0:y0 + band.shape[0]].astype(np.int16)
    return float((np.abs(region - band).max(axis=2) > 70).mean())


def _check_banners(session: Path, m: dict, pause_banner: str) -> None:
    """The PAUSE banner (time, reason, plate) is on the last frames of stage 1 and not before;
    the amber RESUME band on stage 2's first frames."""
    cabin = next(s for s in m["streams"] if s["name"] == "cabin")
    first, second = (session / seg["file"] for seg in cabin["segments"])
    d1 = decode_video(first)
    last = d1.images[-5]
    wrong = pause_banner.replace("AA1234BB", "KA0000XX").replace("move to city route", "lunch break")
    right_err, wrong_err = _banner_error(last, pause_banner), _banner_error(last, wrong)
    assert right_err < 0.08 and wrong_err > 2 * right_err, (right_err, wrong_err)
    before = [img for t, img in zip(d1.pts_s, d1.images) if t < d1.pts_s[-1] - 3.5]
    assert before and _banner_error(before[-1], pause_banner) > 3 * right_err
    d2 = decode_video(second)
    resume = next(e for e in events(session) if e["type"] == "resume")
    from core.clock import parse_iso
    when = parse_iso(resume["t_utc"]).astimezone().strftime("%H:%M:%S")
    text = f"RESUME {when} {resume['plate']}  STAGE 2"
    first_err = _banner_error(d2.images[3], text)
    assert first_err < 0.08, first_err
    assert _banner_error(d2.images[-1], text) > 3 * first_err, "the resume banner ends after 3 s"


def test_av_stay_together_across_ten_pauses(tmp_path):
    profile, sock = make_profile(tmp_path, banner=0.3)
    proc = start(profile, tmp_path / "out", "--force")
    session, _ = wait_started(tmp_path / "out", proc)
    time.sleep(0.8)
    for i in range(10):
        assert ctl(sock, "pause", "--reason", f"p{i}", "--plate", "AA1234BB").returncode == 0
        time.sleep(0.6)
        r = ctl(sock, "resume", "--plate", "AA1234BB")
        assert r.returncode == 0, r.stderr
        time.sleep(0.7)
    time.sleep(2.5)
    assert ctl(sock, "stop").returncode == 0
    proc.communicate(timeout=60)
    m = json.loads((session / "manifest.json").read_text())
    assert len(m["stages"]) == 11
    cabin = next(s for s in m["streams"] if s["name"] == "cabin")
    last = session / cabin["segments"][-1]["file"]
    onsets = [t for t in beep_onsets(last) if t - cabin["segments"][-1]["first_pts_s"] > 0.1]
    assert onsets, "the last stage must contain a beep"
    for t in onsets:  # the fixture beeps at every whole second of the session timeline
        assert abs(t - round(t)) <= 0.020, onsets
    from capture.timecode import read_timecode
    d = decode_video(last)
    for pts, img in zip(d.pts_s, d.images):
        tc = read_timecode(img)
        if tc is not None:
            assert abs(tc / 1000 - pts) <= 0.04


def test_checks_refuse_a_missing_camera_and_force_logs_it(tmp_path):
    extra = '''
[[streams]]
name = "rear"
source = "v4l2:/dev/v4l/by-id/usb-absent-camera-video-index0"
width = 640
height = 480
fps = 25
'''
    profile, sock = make_profile(tmp_path, extra=extra)
    out = tmp_path / "out"
    proc = start(profile, out, "--duration", "3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "camera rear" in err and "FAIL" in err and "--force" in err
    assert not list(out.glob("*/*/*.mp4")), "a refused session records nothing"
    chk = run_examrec("check", "--profile", profile, "--json", timeout=120)
    assert chk.returncode == 1
    result = json.loads(chk.stdout)
    rear = next(c for c in result["checks"] if c["check"] == "camera rear")
    assert not rear["ok"] and "usb-absent-camera" in rear["detail"]
    proc = start(profile, out, "--duration", "3", "--force")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    (session,) = [p.parent for p in out.glob("*/*/manifest.json") if json.loads(p.read_text())["state"] == "finished"]
    forced = [e for e in events(session) if e["type"] == "forced"]
    assert forced and any(c["check"] == "camera rear" for c in forced[0]["failed"])
    m = json.loads((session / "manifest.json").read_text())
    assert any(c["check"] == "camera rear" and not c["ok"] for c in m["checks"])
    rear_entry = next(s for s in m["streams"] if s["name"] == "rear")
    assert rear_entry["gaps"] and not rear_entry["segments"]
    assert sum(seg["frames"] for s in m["streams"] for seg in s["segments"] if s["name"] == "cabin") > 50


def test_a_stalled_stream_is_a_fault_while_the_others_record(tmp_path):
    profile, sock = make_profile(tmp_path)
    proc = start(profile, tmp_path / "out", "--force")
    session, pids = wait_started(tmp_path / "out", proc)
    time.sleep(1.5)
    os.kill(pids["road"], signal.SIGSTOP)
    stopped = time.time()
    try:
        time.sleep(2.5)
        st = json.loads(ctl(sock, "status", "--json").stdout)
        health = {s["stream"]: s["health"] for s in st["streams"]}
        assert health["road"] != "ok" and health["cabin"] == "ok"
    finally:
        os.kill(pids["road"], signal.SIGCONT)
    time.sleep(2.0)
    assert ctl(sock, "stop").returncode == 0
    proc.communicate(timeout=60)
    ev = events(session)
    from core.clock import parse_iso
    fault = next(e for e in ev if e["type"] == "fault" and e.get("stream") == "road")
    assert parse_iso(fault["t_utc"]).timestamp() - stopped <= 2.0
    assert any(e["type"] == "recovered" and e.get("stream") == "road" for e in ev)
    m = json.loads((session / "manifest.json").read_text())
    road = next(s for s in m["streams"] if s["name"] == "road")
    assert road["gaps"] and road["gaps"][0]["end_pts_s"] is not None
    cabin = next(s for s in m["streams"] if s["name"] == "cabin")
    d = decode_video(session / cabin["segments"][0]["file"], keep_every=10**6)
    gaps = np.diff(d.pts_s)
    assert gaps.max() < 0.5, "the other streams kept recording"


def test_a_second_recorder_on_the_same_profile_is_refused(tmp_path):
    profile, sock = make_profile(tmp_path)
    proc = start(profile, tmp_path / "out", "--force")
    try:
        wait_started(tmp_path / "out", proc)
        second = start(profile, tmp_path / "out2", "--force", "--duration", "2")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 3 and "already running" in err and "recording" in err
        assert not (tmp_path / "out2").exists()
    finally:
        ctl(sock, "stop")
        proc.communicate(timeout=60)


def test_control_commands_without_a_recorder_say_so(tmp_path):
    r = ctl(tmp_path / "nothing.sock", "status")
    assert r.returncode == 6 and "no recorder" in r.stderr


def test_sigterm_stops_the_session_cleanly_within_5_s(tmp_path):
    """What systemd does at shutdown (KillSignal=SIGTERM, TimeoutStopSec=5): the recorder and its
    stream processes end within 5 s, the session finished, signed and verified."""
    profile, _ = make_profile(tmp_path)
    proc = start(profile, tmp_path / "out", "--force")
    session, pids = wait_started(tmp_path / "out", proc)
    time.sleep(2.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 0
    assert not [pid for pid in pids.values() if Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert took < 5.0, took
    m = json.loads((session / "manifest.json").read_text())
    assert m["state"] == "finished" and "signature" in m
    assert any(e["type"] == "stop" and e.get("reason") == "signal" for e in events(session))
    verify = run_examrec("verify", session)
    assert verify.returncode == 0, verify.stdout + verify.stderr
