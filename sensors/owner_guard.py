"""Runs a replay helper (gpsfake, socat) so that it never outlives the process that started it.

Usage: ``python owner_guard.py OWNER_PID [--remove DIR]... [--shm KEY] -- COMMAND...``

The guard starts COMMAND in a process group of its own and waits for whichever comes first:

- the owner (the recorder) ends, however it ends (SIGKILL included): watched through a pidfd,
  which, unlike ``PR_SET_PDEATHSIG``, follows the owner *process* (not the thread that forked)
  and cannot miss a death that happened before the watch began (the guard checks its parent
  after opening the pidfd);
- the guard is told to stop (SIGTERM, SIGINT, SIGHUP): the owner's ``close()``;
- COMMAND ends by itself.

Then it kills COMMAND's whole process group with SIGKILL (gpsd started by gpsfake is in it),
and, when the owner died, removes the folders and the SysV shared memory segment it was given
(a living owner cleans up itself), and exits with COMMAND's
status (0 when it stopped COMMAND). Why SIGKILL and not SIGTERM: gpsfake's SIGTERM handler
calls its cleanup, which polls gpsd with ``Popen.poll``; when the signal lands while the main
loop is itself inside ``poll`` (it is, most of the time), the handler never gets the lock, loops
for ever, gpsd stays a zombie and every later SIGTERM only starts another such loop. That is how
gpsfake outlived killed recorders for half an hour.

This file runs as a script with the standard library only (it imports nothing from examrec).
"""
from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # without pidfds (old kernels): how often the owner is looked at


def _parse(argv: list[str]) -> tuple[int, list[str], str | None, list[str]]:
    if "--" not in argv or not argv:
        raise SystemExit("usage: owner_guard.py OWNER_PID [--remove DIR]... [--shm KEY] -- COMMAND...")
    cut = argv.index("--")
    head, cmd = argv[:cut], argv[cut + 1:]
    owner = int(head[0])
    removes: list[str] = []
    shm: str | None = None
    rest = head[1:]
    while rest:
        opt, value, rest = rest[0], rest[1], rest[2:]
        if opt == "--remove":
            removes.append(value)
        elif opt == "--shm":
            shm = value
        else:
            raise SystemExit(f"owner_guard.py: unknown option {opt}")
    if not cmd:
        raise SystemExit("owner_guard.py: no command")
    return owner, removes, shm, cmd


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _child_dies_with_guard() -> None:
    """preexec_fn: the guard is single-threaded, so PDEATHSIG here really means "when the guard dies"."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _end_group(child: subprocess.Popen) -> None:
    """SIGKILL to COMMAND's process group, then wait until nobody of it is left (3 s at most)."""
    with_suppress = (ProcessLookupError, PermissionError)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except with_suppress:
        pass
    child.wait()
    # The rest of the group (gpsd) is re-parented and reaped by init; wait until it is gone.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except with_suppress:
            return
        time.sleep(0.02)


def _cleanup(removes: list[str], shm: str | None) -> None:
    for folder in removes:
        shutil.rmtree(folder, ignore_errors=True)
    if shm and shutil.which("ipcrm"):
        subprocess.run(["ipcrm", "-M", shm], capture_output=True, check=False)


def main(argv: list[str]) -> int:
    owner, removes, shm, cmd = _parse(argv)
    owner_fd = _pidfd(owner)
    if os.getppid() != owner:  # the owner died before we could watch it
        _cleanup(removes, shm)
        return 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.append(True))
    child = subprocess.Popen(cmd, process_group=0, preexec_fn=_child_dies_with_guard)
    child_fd = _pidfd(child.pid)
    poller = select.poll()
    for fd in (owner_fd, child_fd, wake_r):
        if fd is not None:
            poller.register(fd, select.POLLIN)
    code = 0
    owner_gone = False
    while True:
        if stop:
            break
        if child.poll() is not None:
            code = child.returncode if child.returncode >= 0 else 128 - child.returncode
            break
        if os.getppid() != owner:  # the owner is gone (re-parented: we polled)
            owner_gone = True
            break
        ready = poller.poll(None if owner_fd is not None and child_fd is not None else POLL_S * 1000)
        if owner_fd is not None and any(fd == owner_fd for fd, _ in ready):
            owner_gone = True  # the owner's pidfd: it has ended
            break
    _end_group(child)
    if owner_gone:  # a living owner cleans up itself (and may reuse the folder: a re-plugged pty pair)
        _cleanup(removes, shm)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
