"""The session clock: one monotonic timeline for every frame, audio block, fix and pedal edge."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SessionClock:
    """Monotonic session start plus one wall-clock anchor taken at the same instant.

    ``start_ns`` is CLOCK_MONOTONIC (``time.monotonic_ns``), the clock V4L2 stamps buffers with,
    shared by every process of the machine, so worker processes stamp on the same timeline.
    Wall time is derived (anchor + monotonic delta) so a clock step during the exam never makes
    the picture jump backwards.
    """

    start_ns: int
    wall_anchor_ns: int

    @classmethod
    def start_now(cls) -> "SessionClock":
        """Take the session start and its wall anchor now."""
        mono = time.monotonic_ns()
        wall = time.time_ns()
        return cls(start_ns=mono, wall_anchor_ns=wall)

    @staticmethod
    def now_ns() -> int:
        """The capture stamp for something that happens now."""
        return time.monotonic_ns()

    def pts_s(self, capture_ns: int) -> float:
        """Presentation time in seconds: 0 is the session start in every file."""
        return (capture_ns - self.start_ns) / NS_PER_S

    def capture_ns(self, pts_s: float) -> int:
        """Inverse of :meth:`pts_s`."""
        return self.start_ns + round(pts_s * NS_PER_S)

    def wall_utc(self, capture_ns: int) -> datetime:
        """Wall-clock UTC time of a capture stamp."""
        wall_ns = self.wall_anchor_ns + (capture_ns - self.start_ns)
        return datetime.fromtimestamp(wall_ns // 1000 / 1_000_000, tz=timezone.utc)

    def wall_local(self, capture_ns: int) -> datetime:
        """Wall-clock local time (with the machine's UTC offset) of a capture stamp."""
        return self.wall_utc(capture_ns).astimezone()

    def to_json(self) -> dict:
        return {"monotonic_start_ns": self.start_ns, "wall_anchor_ns": self.wall_anchor_ns}

    @classmethod
    def from_json(cls, data: dict) -> "SessionClock":
        return cls(start_ns=int(data["monotonic_start_ns"]), wall_anchor_ns=int(data["wall_anchor_ns"]))


def iso_utc(dt: datetime) -> str:
    """ISO-8601 UTC with microseconds and a Z, the form every examrec file uses."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now_iso() -> str:
    return iso_utc(datetime.now(timezone.utc))


def parse_iso(text: str) -> datetime:
    """Parse the ISO-8601 form written by :func:`iso_utc` (and other offsets)."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def format_duration(seconds: float) -> str:
    """Running exam duration as HH:MM:SS (never negative)."""
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
