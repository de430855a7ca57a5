"""Real-time pacing of replay sources on the session clock."""
from __future__ import annotations

import time

from core.clock import NS_PER_S


class Pacer:
    """Hands out the due instants k/rate after the session start, sleeping until each is due.

    In real time a late reader skips the slots it missed (as a camera would: the frames are gone)
    and counts them; as fast as possible (benchmarks) nothing sleeps and nothing is skipped.
    """

    def __init__(self, start_ns: int, rate: float, realtime: bool = True, skip_late: bool = True):
        self.start_ns = start_ns
        self.skip_late = skip_late
        self.period_ns = NS_PER_S / rate
        self.realtime = realtime
        self.index = 0
        self.skipped = 0

    def due_ns(self, index: int) -> int:
        return self.start_ns + round(index * self.period_ns)

    def next(self) -> int:
        """Wait for the next slot; returns its due instant (the capture stamp)."""
        due = self.due_ns(self.index)
        if self.realtime:
            now = time.monotonic_ns()
            if self.skip_late and now - due >= self.period_ns:
                behind = int((now - due) // self.period_ns)
                self.index += behind
                self.skipped += behind
                due = self.due_ns(self.index)
            wait = due - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / NS_PER_S)
        self.index += 1
        return due
