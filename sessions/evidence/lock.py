"""A lock file in the session folder, held (shared) by every process that writes the session.

Repair takes it exclusively: it cannot succeed while any recorder process is still alive, and it
is released by the kernel when the last one dies, whatever killed it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sessions.evidence.layout import LOCK_NAME


def hold_shared(session_dir: Path) -> int:
    """Take the shared lock for a writer; keep the returned fd open for the process's life."""
    fd = os.open(Path(session_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def is_being_written(session_dir: Path) -> bool:
    """True while some recorder process still holds the session."""
    path = Path(session_dir) / LOCK_NAME
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False  # a link where the lock belongs: no recorder made it (check_tree refuses the folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
