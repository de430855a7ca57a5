"""telemetry.jsonl: GPS reports and pedal samples on the session clock, one JSON object a line.

Record types (every line has ``type``, ``capture_ns`` (CLOCK_MONOTONIC) and ``pts_s``):

- ``gps``: ``time`` (GPS UTC, ISO 8601), ``mode`` (0-3), ``lat``, ``lon``, ``alt`` (m above mean
  sea level), ``speed`` (m/s), ``track`` (degrees), ``device``; absent values are left out.
  Built by :meth:`sensors.gps.GpsFix.to_record`.
- ``pedals``: ``seq``, ``device_ms``, ``brake``, ``clutch`` (percent, null when the sensor is
  absent). Built by :meth:`sensors.pedals.PedalSample.to_record`.

The file is not hash-chained (the manifest carries its SHA-256 when the session closes); it is
appended line by line and fsynced about once a second, so a crash loses at most the last second
and may leave one torn last line, which readers skip. Every write goes through core.durable, so
the power-cut tests see it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from core import durable

log = logging.getLogger(__name__)


class TelemetryWriter:
    """Appends records to telemetry.jsonl; thread-safe; fsyncs at most every ``fsync_interval_s``."""

    def __init__(self, path: Path | str, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self._file = durable.ScheduledFile(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                           round(fsync_interval_s * 1e9))
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a single write, so concurrent writers never interleave a line)."""
        data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._file.closed:
                raise ValueError(f"{self.path}: telemetry writer is closed")
            durable.append(self._file.fd, data)
            self.lines += 1
            self._file.wrote(time.monotonic_ns())

    def close(self) -> None:
        """fsync and close; safe to call twice."""
        with self._lock:
            self._file.close()


def read_records(path: Path | str, type_: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of a telemetry file in order, optionally only one ``type``. A torn last line and
    unreadable lines are skipped (logged), never fatal: a crash must not hide the rest."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                log.warning("%s: line %d is torn (writer interrupted); skipped", path, number)
                return
            try:
                rec = json.loads(raw)
            except ValueError:
                log.warning("%s: line %d is not JSON; skipped", path, number)
                continue
            if isinstance(rec, dict) and (type_ is None or rec.get("type") == type_):
                yield rec
