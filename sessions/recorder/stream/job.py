"""What a stream process is given, and the instant its current run stops."""
from __future__ import annotations

from dataclasses import dataclass

from core.profile import Profile, StreamSpec


@dataclass
class StreamJob:
    """Everything a stream process needs (picklable: it crosses the process boundary)."""

    spec: StreamSpec
    profile: Profile
    session_dir: str = ""  # "" while warm: the folder comes with SessionDir, before the start
    realtime: bool = True
    stall_s: float = 1.5  # no frame for this long while the source says nothing: a fault
    first_segment: int = 0  # segments already written by an earlier process of this stream
    thumbnails: bool = False  # send a small JPEG about twice a second (the examiner's console)


class StopLine:
    """The capture instant a run (the pre-exam check or the session) ends at: nothing captured
    from ``at_ns`` on is recorded. Set by the process's main thread, read by its source threads."""

    def __init__(self, at_ns: int | None = None):
        self.at_ns = at_ns

    def passed(self, capture_ns: int) -> bool:
        """True for a frame or block captured at or after the stop instant."""
        return self.at_ns is not None and capture_ns >= self.at_ns

    def now(self, now_ns: int) -> None:
        """Stop at ``now_ns`` unless an earlier stop is already set."""
        self.at_ns = min(self.at_ns or now_ns, now_ns)
