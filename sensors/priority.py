"""Let a sensor's reader thread run ahead of busy processes, so data is stamped when it arrives."""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def raise_thread_priority(name: str, nice: int = -10) -> bool:
    """Best effort: lower the calling thread's nice value (a Linux thread is a task of its own).

    Reader threads sleep almost all the time, so this costs the encoders nothing; but on two
    cores busy with video, a reader at normal priority measured up to 24 ms late stamping a
    pedal sentence, at -10 about 4 ms. Needs root or CAP_SYS_NICE; without, nothing changes.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return True
    except (OSError, AttributeError) as exc:
        log.debug("%s: reader keeps normal priority (%s)", name, exc)
        return False
