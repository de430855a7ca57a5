"""A clock step mid-recording: the system clock the recorder sees is set back by five minutes,
then forward by ten (libfaketime, re-reading FAKETIME_TIMESTAMP_FILE), as an NTP correction or
a hand-set clock would do. The picture's time must not jump (it is the session clock: one wall
anchor at the start plus CLOCK_MONOTONIC, which no clock step touches) and the session's files
must agree with each other and with the real duration.

libfaketime 0.9.10 (Debian 12) with FAKETIME_DONT_FAKE_MONOTONIC shifts the absolute deadline of
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`` (Python 3.11's ``time.sleep``) by the fake
offset and the kernel answers EINVAL (libfaketime issue 426). A five-line preload put in front
of it sends those sleeps straight to the kernel; everything else is libfaketime's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import EXAMREC, ROOT, session_dirs, write_profile
from core.clock import SessionClock
from core.profile import load_profile
from media import decode_video
from muxer.overlay import Overlay, OverlayState

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SHIM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int clock_nanosleep(clockid_t id, int flags, const struct timespec *req, struct timespec *rem) {
    long r = syscall(SYS_clock_nanosleep, id, flags, req, rem);
    return r == 0 ? 0 : errno;
}
"""
DURATION = 12.0
PROFILE = """
name = "clockstep"
kind = "replay"
segment_s = 300

[encoder]
preset = "ultrafast"
crf = 16
gop = 10

[overlay]
fields = ["datetime", "duration", "name"]

[[streams]]
name = "road-front"
source = "pattern:"
width = 960
height = 540
fps = 10
"""


def _preload(tmp: Path) -> str:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} missing: install the Debian package faketime (.ci/apt-packages)")
    src = tmp / "monotonic_sleep.c"
    src.write_text(SHIM)
    lib = tmp / "monotonic_sleep.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed for the clock-step test (gcc in .ci/apt-packages)"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], check=True)
    return f"{lib} {LIBFAKETIME}"


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_clock_step_mid_recording_moves_neither_the_picture_nor_the_files(tmp_path):
    profile = write_profile(tmp_path / "clockstep.toml", PROFILE)
    out = tmp_path / "out"
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": _preload(tmp_path), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    real_start = time.time()
    proc = subprocess.Popen([*EXAMREC, "record", "--profile", str(profile), "--duration", str(DURATION),
                             "--out", str(out), "--force", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    session = None
    while session is None and time.monotonic() < deadline and proc.poll() is None:
        for s in session_dirs(out):
            if '"type":"start"' in (s / "events.jsonl").read_text():
                session = s
        time.sleep(0.05)
    assert session is not None, proc.communicate()
    time.sleep(3)
    offset.write_text("-300\n")   # five minutes back
    time.sleep(4)
    offset.write_text("+300\n")   # and ten forward from there
    stdout, stderr = proc.communicate(timeout=DURATION + 60)
    real_elapsed = time.time() - real_start
    assert proc.returncode == 0, stderr[-3000:]
    manifest = json.loads(stdout)
    assert manifest["state"] == "finished"

    # The files agree: the session lasted what the timeline says, whatever the wall clock did.
    clock = SessionClock.from_json(manifest["clock"])
    span = _utc(manifest["ended_at"]) - _utc(manifest["started_at"])
    assert abs(span - DURATION) < 1.0, (manifest["started_at"], manifest["ended_at"])
    assert span < real_elapsed
    events = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    for ev in events:
        if ev.get("pts_s") is not None:
            assert abs(_utc(ev["t_utc"]) - _utc(manifest["started_at"]) - ev["pts_s"]) < 1.0, ev
    (stream,) = manifest["streams"]
    seg = stream["segments"][0]
    assert abs(seg["last_pts_s"] - DURATION) < 0.5, seg
    verify = subprocess.run([*EXAMREC, "verify", str(session)], cwd=ROOT, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The picture: every frame's burned-in date and time is the session clock's, no jump. Each
    # frame's box is compared with the boxes the clock would draw at its capture time and at
    # that time shifted by the steps (and by a second either way): the true one must fit best.
    spec = load_profile(profile).stream("road-front")
    ov = Overlay(spec.overlay, spec.name, spec.width, spec.height, clock)
    decoded = decode_video(session / seg["file"], keep_every=5)
    pts = decoded.pts_s[::5]
    assert pts[-1] > DURATION - 1
    for p, img in zip(pts, decoded.images):
        t = clock.capture_ns(p)
        fits = {shift: _difference(ov, img, t + shift * 10**9) for shift in (0, -1, 1, -300, 300, 600)}
        assert min(fits, key=fits.get) == 0, (p, fits)


def _difference(ov: Overlay, img, t: int) -> float:
    """Mean absolute difference between the decoded frame's overlay box and the one drawn for ``t``."""
    box, (x, y) = ov.box_for(t, OverlayState())
    region = img[y:y + box.shape[0], x:x + box.shape[1]].astype(float)
    return float(abs(region - box.astype(float)).mean())
