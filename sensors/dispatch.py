"""Hand sensor results to the recorder's sinks from a thread of their own.

The readers stamp data the moment it arrives; a sink that fsyncs (the event log does, on every
event) must never hold up the thread that stamps. Each reader therefore queues its callbacks
here and one dispatcher thread runs them in order.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Receives events; the same signature as ``sessions.evidence.events.EventLog.emit``, so the event
    log's method can be passed as is."""

    def __call__(self, type_: str, capture_ns: int | None = None, **fields: Any) -> Any: ...


class Closeable(Protocol):
    """Something a reader owns and closes when it stops (a replay device)."""

    def close(self) -> None: ...


_STOP = object()


class Dispatcher:
    """A bounded queue of callbacks run in order by one daemon thread.

    When the queue is full (a sink stalled for minutes) new calls are dropped and counted rather
    than blocking the reader: a stalled sink never stalls a sensor.
    """

    def __init__(self, name: str, maxsize: int = 10_000):
        self.name = name
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-dispatch", daemon=True)
            self._thread.start()

    def submit(self, fn: Callable[..., Any] | None, *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; ``None`` (no sink configured) is ignored."""
        if fn is None:
            return
        try:
            self._queue.put_nowait((fn, args, kwargs))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("%s: sink is not keeping up, %d results dropped", self.name, self.dropped)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Run what is queued, then end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.error("%s: sink stalled; %d queued results not delivered", self.name, self._queue.qsize())
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("%s: sink still busy after %.1f s; leaving it", self.name, timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, kwargs = item
            try:
                fn(*args, **kwargs)
            except Exception:  # a broken sink must not end the sensor's output
                self.failed += 1
                log.exception("%s: sink %r failed", self.name, fn)
