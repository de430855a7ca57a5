"""events.jsonl: the session's append-only, hash-chained event log (start, stop, faults, pedals...)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sessions.evidence.chain import ChainedLog
from core.clock import SessionClock, iso_utc, utc_now_iso


class EventLog:
    """Writes events with ``t_utc`` and ``type`` (and ``pts_s`` on the session timeline when known).

    One writer per session (the controller process); worker processes send their events to it.
    """

    def __init__(self, path: Path, clock: SessionClock | None = None):
        self._log = ChainedLog(Path(path), fsync=True)
        self.clock = clock
        # Called with each record once it is written (the recorder service shows faults live).
        self.observers: list[Callable[[dict[str, Any]], None]] = []

    def emit(self, type_: str, capture_ns: int | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event; ``capture_ns`` (monotonic) places it on the session timeline."""
        record: dict[str, Any] = {"type": type_}
        if capture_ns is not None and self.clock is not None:
            record["t_utc"] = iso_utc(self.clock.wall_utc(capture_ns))
            record["pts_s"] = round(self.clock.pts_s(capture_ns), 6)
        elif self.clock is not None:
            now = SessionClock.now_ns()
            record["t_utc"] = iso_utc(self.clock.wall_utc(now))
            record["pts_s"] = round(self.clock.pts_s(now), 6)
        else:
            record["t_utc"] = utc_now_iso()
        record.update(fields)
        self._log.append(record)
        for observe in self.observers:
            observe(record)
        return record

    @property
    def last_hash(self) -> str:
        return self._log.last_hash

    @property
    def lines(self) -> int:
        return self._log.lines

    def close(self) -> None:
        self._log.close()
