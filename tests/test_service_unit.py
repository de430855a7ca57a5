"""The systemd unit runs `examrec serve` as the unprivileged examrec user: the unit verifies with
systemd-analyze, and serve runs under that user with the runtime and state directories the unit
makes (RuntimeDirectory=, StateDirectory=: owned by the user, mode 0750), telling systemd READY,
STATUS and WATCHDOG over $NOTIFY_SOCKET, recording an exam there and stopping on SIGTERM."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_examrec
from crash_harness import session_processes

UNIT = ROOT / "hw-profiles" / "systemd" / "examrec.service"
USER = "examrec"
SETPRIV = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--"]


def unit_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for k, v in re.findall(r"^(\w+)=(.*)$", UNIT.read_text(), re.M):
        keys.setdefault(k, []).append(v)
    return keys


def test_the_unit_runs_serve_as_a_notify_service() -> None:
    k = unit_keys()
    assert k["Type"] == ["notify"] and k["NotifyAccess"] == ["main"] and int(k["WatchdogSec"][0]) > 0
    assert k["ExecStart"] == ["/opt/examrec/.venv/bin/examrec serve --profile /etc/examrec/profile.toml"]
    assert k["User"] == [USER] and k["RuntimeDirectory"] == ["examrec"] and k["StateDirectory"] == ["examrec"]
    assert "time-sync.target" in k["Wants"][0].split() and "time-sync.target" in k["After"][0].split()
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: install the packages in .ci/apt-packages"
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "examrec.service"
        unit.write_text(UNIT.read_text().replace("/opt/examrec/.venv/bin/examrec", sys.executable))
        proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "examrec.service" not in proc.stderr, proc.stderr
        # the check can fail: a unit systemd cannot parse is reported
        unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
        bad = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert "notifyy" in bad.stderr


def _examrec_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def as_examrec(base: Path, argv: list[str]) -> list[str]:
    """``argv`` run as the examrec user (setpriv: uid, gid and groups switched, then exec; so
    the service is the process the test signals, as under systemd). When the test's Python
    lives under a folder that user cannot enter (a pyenv under root's 0700 home), the command
    runs in a private mount namespace where that home is an empty 0755 tmpfs with only the
    interpreter's tree bound back in; nothing else of the machine changes."""
    real = Path(os.path.realpath(sys.executable))
    reachable = subprocess.run(["runuser", "-u", USER, "--", "test", "-x", str(real)]).returncode == 0
    if reachable:
        return [*SETPRIV, *argv]
    home = next(p for p in real.parents if p.parent == Path("/") or not os.access(p, os.X_OK)
                or (p.stat().st_mode & 0o001) == 0)
    inner = real.parents[len(real.parents) - len(home.parts) - 1]  # the first folder below the closed one
    keep = base / "interpreter"
    keep.mkdir()
    script = (f'mount --bind "{inner}" "{keep}" && mount -t tmpfs -o mode=0755 tmpfs "{home}" && '
              f'mkdir -p "{inner}" && mount --bind "{keep}" "{inner}" && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *SETPRIV, *argv]


def _unit_dir(path: Path, user: pwd.struct_passwd) -> Path:
    """What systemd makes for RuntimeDirectory=/StateDirectory= with mode 0750."""
    path.mkdir(parents=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o750)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the examrec user and switch to it")
def test_serve_runs_as_the_examrec_user_and_talks_to_systemd(tmp_path) -> None:
    user = _examrec_user()
    # tmp_path is root's (0700): the unit's directories go where the examrec user can reach them
    base = Path(tempfile.mkdtemp(prefix="examrec-unit-"))
    base.chmod(0o755)
    try:
        runtime = _unit_dir(base / "run" / "examrec", user)
        state = _unit_dir(base / "lib" / "examrec", user)
        (base / "run").chmod(0o755)
        (base / "lib").chmod(0o755)
        profile = base / "profile.toml"
        profile.write_text(f'''
name = "unit"
kind = "replay"
out = "{state}/recordings"
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
''', encoding="utf-8")
        profile.chmod(0o644)
        notify_path = base / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify_path.chmod(0o777)
        notify.settimeout(0.5)
        env = {"PATH": os.environ["PATH"], "HOME": str(state), "LANG": "C.UTF-8",
               "XDG_RUNTIME_DIR": str(base / "run"),            # the socket goes to <runtime>/examrec/
               "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000",
               "EXAMREC_KEY": str(state / "device.key"), "PYTHONPATH": str(ROOT)}
        cmd = as_examrec(base, ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable,
                                "-m", "sessions.cli", "serve", "--profile", str(profile), "--port", "0"])
        proc = subprocess.Popen(cmd, cwd=state, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        messages: list[str] = []

        def collect(until: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not any(until in m for m in messages):
                try:
                    messages.extend(notify.recv(4096).decode().splitlines())
                except socket.timeout:
                    assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert any(until in m for m in messages), (until, messages)
        try:
            assert proc.stdout.readline().startswith("console: http://127.0.0.1:")
            collect("READY=1", 30)
            assert "STATUS=idle" in messages
            collect("WATCHDOG=1", 5)
            sock = runtime / "unit.sock"
            assert sock.exists() and sock.stat().st_uid == user.pw_uid and (sock.stat().st_mode & 0o777) == 0o600
            start = run_examrec("start", "--socket", sock, "--candidate", "Ірина Ґудзь", "--force", timeout=120)
            assert start.returncode == 0, start.stderr
            collect("STATUS=recording", 10)
            time.sleep(1.0)
            stop = run_examrec("stop", "--socket", sock)
            assert stop.returncode == 0 and "verify: ok" in stop.stdout, stop.stdout + stop.stderr
            collect("STATUS=idle;", 10)
            proc.send_signal(signal.SIGTERM)
            collect("STOPPING=1", 10)
            proc.communicate(timeout=30)
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
        (session,) = [p.parent for p in (state / "recordings").glob("*/*/manifest.json")]
        owned = [p for p in session.rglob("*") if p.stat().st_uid != user.pw_uid]
        assert not owned, owned                      # everything written by the unprivileged user
        m = json.loads((session / "manifest.json").read_text())
        assert m["state"] == "finished" and m["details"]["candidate"] == "Ірина Ґудзь"
        assert (state / "device.key").stat().st_uid == user.pw_uid
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _warm_status(sock: Path, timeout: float, *, not_pids: set[int] = frozenset()) -> dict:
    """The service's status once every stream process is warm (and none of ``not_pids``)."""
    deadline = time.monotonic() + timeout
    while True:
        st = json.loads(run_examrec("status", "--socket", sock, "--json").stdout or "{}")
        streams = st.get("streams") or []
        if streams and all(s["warm"] and s["pid"] not in not_pids for s in streams):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.2)


@pytest.mark.parametrize("kill", ["service", "group"])
def test_warm_stream_processes_are_restarted_and_never_outlive_the_service(tmp_path, kill) -> None:
    """Between exams the service keeps one process per stream open: one that dies is started
    again (and listed as a fault), and whatever kills the service (SIGKILL to it alone, or to
    its whole process group), nothing it started stays: the warm processes see their lifeline
    end, their forkserver goes with them."""
    profile = tmp_path / "warm.toml"
    profile.write_text(f'''
name = "warm"
kind = "replay"
control_socket = "{tmp_path}/ctl.sock"
[checks]
sample_s = 1.0
[[streams]]
name = "cabin"
source = "pattern:"
width = 160
height = 120
fps = 10
audio = "wav:{ROOT}/bench/fixtures/cabin.wav"
[[streams]]
name = "road"
source = "pattern:"
width = 160
height = 120
fps = 10
''', encoding="utf-8")
    sock = tmp_path / "ctl.sock"
    proc = subprocess.Popen([sys.executable, "-m", "sessions.cli", "serve", "--profile", str(profile), "--out",
                             str(tmp_path / "out"), "--no-console"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("control: ")
        st = _warm_status(sock, 60)
        pids = {s["stream"]: s["pid"] for s in st["streams"]}
        assert set(pids.values()) <= set(session_processes(proc.pid))          # in the service's session
        assert all(os.getpgid(p) == proc.pid for p in pids.values())      # and process group
        os.kill(pids["road"], signal.SIGKILL)                              # a warm process dies
        st = _warm_status(sock, 30, not_pids={pids["road"]})
        assert {s["stream"]: s["pid"] for s in st["streams"]}["cabin"] == pids["cabin"]
        (fault,) = [f for f in st["faults"] if f["device"] == "stream process road"]
        assert "started again" in fault["message"] and fault["recovered"], fault
        alive = set(session_processes(proc.pid))
        assert len(alive) >= 4, alive                 # serve, its forkserver, two stream processes
        if kill == "service":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while set(session_processes(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(session_processes(proc.pid)), {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80]
                                                  for p in set(session_processes(proc.pid))}
    finally:
        for pid in set(session_processes(proc.pid)):  # a failed run leaves nothing behind either
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert not list((tmp_path / "out").glob("*/*/manifest.json"))          # nothing recorded while idle
