"""One device read on its own thread into a small bounded queue: the same loop for a camera and
for the sound, with the reopen and back-off that keep a stream going through a device fault.

A source that fails (``SourceError`` from ``read``) is a ``fault`` event; the thread closes it and
reopens it with growing pauses (REOPEN_BACKOFF_S) until it delivers again (a ``recovered``
event). The consumer never waits on a device: what it cannot take in time is dropped at the
source and counted (cameras in real time), waited for (benchmarks) or, for sound, waited for a
moment and then dropped with a warning.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Generic, TypeVar, Union

from capture.base import AudioBlock, AudioSource, Frame, SourceError, VideoSource
from core.clock import SessionClock
from sessions.recorder.stream.job import StopLine

log = logging.getLogger(__name__)

REOPEN_BACKOFF_S = (0.5, 1, 2, 4, 5)

Item = TypeVar("Item", Frame, AudioBlock)
EventSink = Callable[..., None]  # event(type, **fields): a line for the session's event log


class SourceThread(Generic[Item]):
    """Reads ``source`` on a thread into :attr:`queue` for one run (the check or the session).

    ``full_wait_s`` says what happens when the consumer is behind: 0 drops the item at once
    (a camera in real time; counted in :attr:`dropped`), a positive value waits that long first
    and then drops it with a warning (sound), None waits as long as the run lasts (benchmarks).
    ``skip_before_start``: a live device delivers before the session starts; those items are
    not part of it.
    """

    def __init__(self, source: Union[VideoSource, AudioSource], *, name: str, device: str, what: str,
                 queue_items: int, full_wait_s: float | None, skip_before_start: bool, event: EventSink):
        self.source = source
        self.name = name          # thread name
        self.device = device      # how events name it: "camera cabin", "audio of cabin"
        self.what = what          # "video" | "audio"
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=queue_items)
        self.full_wait_s = full_wait_s
        self.skip_before_start = skip_before_start
        self._event = event
        self.faulted = False      # the device is not delivering; the thread reopens it
        self.captured = 0         # items taken from the device in this run
        self.dropped = 0          # items the consumer could not take in time
        self.latest: Any = None   # the newest item captured
        self._skipped_base: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # set-up ----------------------------------------------------------------------------------
    def open(self) -> str | None:
        """Acquire the device; returns why it cannot be opened (the thread will keep trying once
        started), or None."""
        try:
            self.source.open()
        except SourceError as exc:
            self.faulted = True
            return str(exc)
        return None

    def start(self, clock: SessionClock, stop: StopLine) -> None:
        """Start delivering items captured on ``clock``'s timeline until ``stop`` passes.
        Refused while a run is going on."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name}: already running")
            self._start(clock, stop)

    def _start(self, clock: SessionClock, stop: StopLine) -> None:
        self.source.start(clock)
        # What the source skipped before this run (an earlier run's late slots) is not this run's loss.
        self._skipped_base = getattr(self.source, "skipped", 0)
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, args=(clock, stop), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the run: the thread stops at its next item (or reopen attempt). Safe to call twice."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._halt.set()
                thread.join(timeout=timeout)

    def rewind(self) -> None:
        """Back to the state before any run (after the pre-exam check): counters at zero, the
        queue empty, the device still open."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name}: rewind while running")
            self.captured = self.dropped = 0
            self._skipped_base = None
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break

    def close(self) -> None:
        """Release the device (after stop); a dead device's complaint is logged, not raised."""
        try:
            self.source.close()
        except Exception:  # closing a dead device must not hide the real outcome
            log.exception("%s: closing source", self.name)

    @property
    def skipped(self) -> int:
        """Slots the device itself skipped in this run because the reader was late (a replay
        source, as a camera's driver would); 0 before the run starts."""
        if self._skipped_base is None:
            return 0
        return getattr(self.source, "skipped", 0) - self._skipped_base

    def mark_stalled(self) -> None:
        """The consumer saw nothing for too long: treat the device as failed, so the thread
        reopens it once its blocked read returns."""
        self.faulted = True

    # the thread ------------------------------------------------------------------------------
    def _run(self, clock: SessionClock, stop: StopLine) -> None:
        src, halt = self.source, self._halt
        backoff = 0
        while not halt.is_set():
            if self.faulted:
                time.sleep(REOPEN_BACKOFF_S[min(backoff, len(REOPEN_BACKOFF_S) - 1)])
                backoff += 1
                try:
                    src.open()
                    src.start(clock)
                except SourceError as exc:
                    log.debug("%s: reopen failed: %s", self.name, exc)
                    continue
                self.faulted = False
                backoff = 0
                self._event("recovered", device=self.device, what=self.what)
                continue
            try:
                item = src.read()
            except SourceError as exc:
                self.faulted = True
                self._event("fault", device=self.device, what=self.what, message=str(exc))
                src.close()
                continue
            if self.skip_before_start and item.capture_ns < clock.start_ns:
                continue
            self.captured += 1
            self.latest = item        # what the console's meter looks at (read, never consumed)
            self._put(item)
            if stop.passed(item.capture_ns):
                break

    def _put(self, item: Any) -> None:
        wait = self.full_wait_s
        if wait == 0:
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
            return
        if wait is None:
            while not self._halt.is_set():
                try:
                    self.queue.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue
            return
        try:
            self.queue.put(item, timeout=wait)
        except queue.Full:
            self.dropped += 1
            log.warning("%s: queue full for %.1f s, %s dropped", self.name, wait, self.what)
