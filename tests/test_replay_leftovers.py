"""Replay helpers never outlive their owner: a process that started gpsfake (with its gpsd) and a
socat pty pair is SIGKILLed at random moments, from the first milliseconds of the start to the
middle of the replay, and nothing of the replay may be left: no process, no folder, no shared
memory segment."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import ROOT
from sensor_harness import write_nmea_slice

OWNER = """
import sys, time
from sensors.replay import free_port, start_gps_replay, start_pedal_replay
port = int(sys.argv[2])
gps = start_gps_replay(sys.argv[1], port=port, cycle_s=0.2)
pedals = start_pedal_replay(sys.argv[3], loop=True)
print("ready", flush=True)
time.sleep(60)
"""


def _leftovers(marker: str) -> dict[int, str]:
    """Living processes whose command line names ``marker`` (zombies are dead already)."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z" and int(proc.name) != os.getpid():
            out[int(proc.name)] = cmd
    return out


def _wait_gone(marker: str, timeout_s: float = 8.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = _leftovers(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_sigkilled_owner_leaves_no_gpsfake_gpsd_or_socat(tmp_path):
    rng = random.Random(1501)
    nmea = write_nmea_slice(tmp_path / "drive.nmea", first=0, count=200)
    pedal = ROOT / "bench" / "fixtures" / "exam.pedal"
    delays = [0.0, 0.01, 0.03, 0.06, 0.1, 0.2] + [rng.uniform(0.0, 1.5) for _ in range(6)]
    # Each run's TMPDIR is what tells its helpers apart (their folders, hence their command lines,
    # are in it); short, so gpsfake's control socket fits in it (else the replay uses /tmp).
    short = Path(tempfile.mkdtemp(prefix="examrec-leftovers-", dir="/tmp"))
    try:
        _kill_owners(short, nmea, pedal, delays)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def _kill_owners(short: Path, nmea: Path, pedal: Path, delays: list[float]) -> None:
    from sensors.replay import free_port
    for n, delay in enumerate(delays):
        tmp = short / f"run{n}"
        tmp.mkdir()
        port = free_port()
        env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
        owner = subprocess.Popen([sys.executable, "-c", OWNER, str(nmea), str(port), str(pedal)], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if delay >= 1.0:
            assert owner.stdout.readline().strip() == "ready"
        time.sleep(delay)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        left = _wait_gone(str(tmp))
        assert not left, (delay, left)
        assert list(tmp.iterdir()) == [], (delay, list(tmp.iterdir()))  # gpsfake's and socat's folders
        shm = subprocess.run(["ipcs", "-m"], capture_output=True, text=True).stdout.lower()
        assert f"0x4770{port:04x}" not in shm, (delay, shm)
