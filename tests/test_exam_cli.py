"""The exam from the examiner's terminal: a resume during the pause banner cancels the pause,
pause/resume take the plate from the exam and the reason from the profile's list, status says
PAUSED for every stream, log lines never mix into the status line, stop waits and says where the
session was saved, and a replay session is a DEMO everywhere (picture, manifest, info, archive)."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import sys
import time

from archive_harness import file_archive  # noqa: F401 - fixture
from conftest import ROOT, run_examrec
from crash_harness import wait_started
from sessions.recorder.control import request
from test_lifecycle import _details, ctl, events, make_profile, start

REASONS = '\n[exam]\npause_reasons = ["обід", "road closed", "vehicle fault"]\n'


def test_resume_during_the_banner_cancels_the_pause_and_the_plate_comes_from_the_exam(tmp_path):
    # A 6 s banner: the resume command (a new process) arrives inside it even on a loaded machine.
    profile, sock = make_profile(tmp_path, banner=6.0, extra=REASONS)
    proc = start(profile, tmp_path / "out", "--force", "--details", _details(tmp_path))
    session, _ = wait_started(tmp_path / "out", proc)
    time.sleep(1.0)
    p = ctl(sock, "pause", "--reason", "2")          # the second of the profile's reasons; plate from the exam
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)                                   # the banner still shows
    r = ctl(sock, "resume", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cancelled_pause"] is True
    st = json.loads(ctl(sock, "status", "--json").stdout)
    assert st["state"] == "recording" and st["stage"] == 1
    time.sleep(6.0)                                   # past the withdrawn pause instant: still recording
    st = json.loads(ctl(sock, "status", "--json").stdout)
    assert st["state"] == "recording" and {s["state"] for s in st["streams"]} == {"LIVE"}
    # A real pause now: every stream says PAUSED once it took effect.
    assert ctl(sock, "pause", "--reason", "обід").returncode == 0
    during = json.loads(ctl(sock, "status", "--json").stdout)          # the banner shows, still recording
    assert during["state"] == "paused" and {s["state"] for s in during["streams"]} == {"LIVE"}
    time.sleep(6.8)
    st = json.loads(ctl(sock, "status", "--json").stdout)
    assert st["state"] == "paused" and [s["state"] for s in st["streams"]] == ["PAUSED", "PAUSED"]
    assert "PAUSED" in ctl(sock, "status").stdout and "LIVE" not in ctl(sock, "status").stdout
    assert ctl(sock, "resume").returncode == 0
    time.sleep(1.0)
    stop = ctl(sock, "stop")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.splitlines() == [f"saved: {session}", "verify: ok"]
    proc.communicate(timeout=30)
    ev = events(session)
    kinds = [e["type"] for e in ev if e["type"] in ("pause", "resume")]
    assert kinds == ["pause", "resume", "pause", "resume"]      # one event each, no refusal
    pauses = [e for e in ev if e["type"] == "pause"]
    resumes = [e for e in ev if e["type"] == "resume"]
    assert pauses[0]["reason"] == "road closed" and pauses[0]["plate"] == "AA1234BB"
    assert resumes[0]["cancelled_pause"] is True and resumes[0]["stage"] == 1 and resumes[0]["plate"] == "AA1234BB"
    assert pauses[1]["reason"] == "обід" and resumes[1]["stage"] == 2 and "cancelled_pause" not in resumes[1]
    m = json.loads((session / "manifest.json").read_text())
    assert [s["stage"] for s in m["stages"]] == [1, 2]
    cabin = next(s for s in m["streams"] if s["name"] == "cabin")
    assert [seg["stage"] for seg in cabin["segments"]] == [1, 2]   # the cancelled pause cut nothing


def test_pause_without_a_reason_lists_the_profiles_reasons(tmp_path):
    profile, sock = make_profile(tmp_path, extra=REASONS)
    proc = start(profile, tmp_path / "out", "--force", "--details", _details(tmp_path))
    try:
        wait_started(tmp_path / "out", proc)
        p = ctl(sock, "pause")
        assert p.returncode == 2 and "1. обід; 2. road closed; 3. vehicle fault" in p.stderr
        assert ctl(sock, "pause", "--reason", "9").returncode == 2
    finally:
        ctl(sock, "stop")
        proc.communicate(timeout=30)


def test_log_lines_never_mix_into_the_status_line(tmp_path):
    """On a terminal the recorder keeps one status line at the bottom; a log line written while
    it shows (here the controller's debug line when a pause takes effect) goes above it, never
    glued onto it. (Everything written to the terminal's stderr, the stream processes' too,
    passes through the same relay.)"""
    import threading
    profile, sock = make_profile(tmp_path, banner=0.3)
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "sessions.cli", "-v", "record", "--profile", str(profile),
                                  "--out", str(tmp_path / "out"), "--force", "--duration", "10"])

    def pause_while_recording() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((tmp_path / "out").glob("*/*/manifest.json")):
            time.sleep(0.1)
        time.sleep(1.5)
        request(sock, {"cmd": "pause", "reason": "log test", "plate": "AA1234BB"})  # no CLI start-up: in time
    threading.Thread(target=pause_while_recording, daemon=True).start()
    out = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r\n", "\n")
    shown = [line.split("\r\x1b[K")[-1] for line in text.split("\n")]   # what stays visible of each line
    status = [s for s in shown if s.startswith("● ")]
    logs = [s for s in shown if re.search(r"\d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING)", s)]
    assert any("paused" in s for s in logs), text[-3000:]
    assert status and logs, text[-3000:]
    assert not [s for s in status if re.search(r"(DEBUG|INFO|WARNING) ", s)], status
    assert not [s for s in logs if "● " in s], logs


def test_a_replay_session_is_a_demo_and_the_archive_refuses_it_as_an_exam(tmp_path, file_archive):  # noqa: F811
    profile, _ = make_profile(tmp_path)
    r = run_examrec("record", "--profile", profile, "--out", file_archive.out, "--duration", "2", "--force")
    assert r.returncode == 0, r.stderr
    (session,) = [p.parent for p in file_archive.out.glob("*/*/manifest.json")]
    assert json.loads((session / "manifest.json").read_text())["demo"] is True
    info = run_examrec("info", session)
    assert "DEMO" in info.stdout
    assert json.loads(run_examrec("info", session, "--json").stdout)["demo"] is True
    refused = file_archive.cli("upload", "--out", file_archive.out, "--json", user="car7")
    assert refused.rc == 3, refused.err
    (res,) = refused.json()["results"]
    assert res["status"] == "refused" and "--test-session" in res["message"]
    taken = file_archive.cli("upload", "--out", file_archive.out, "--json", "--test-session", user="car7")
    assert taken.rc == 0, taken.err
    assert [x["status"] for x in taken.json()["results"]] == ["uploaded"]


def test_demo_is_on_the_picture(tmp_path):
    from core.clock import SessionClock
    from core.profile import load_profile
    from muxer.overlay import OverlayState, overlay_lines
    profile, _ = make_profile(tmp_path)
    spec = load_profile(profile).streams[0]
    assert overlay_lines(spec.overlay, spec.name, SessionClock.start_now(), 0, OverlayState())[1].startswith("DEMO ")
    real = ROOT / "hw-profiles" / "vehicle.toml"
    vspec = load_profile(real).streams[0]
    assert "DEMO" not in " ".join(overlay_lines(vspec.overlay, vspec.name, SessionClock.start_now(), 0, OverlayState()))
