"""A hardware button (GPIO keys, a USB foot switch or keypad) mapped to pause/resume.

Linux presents such buttons as input event devices (/dev/input/by-id/...-event-kbd, or
/dev/input/by-path/platform-gpio-keys-event for gpio-keys in the device tree). Each event is a
`struct input_event`: a timeval, then type (u16), code (u16) and value (s32). A key press is
type EV_KEY with value 1; holding (2) and release (0) are ignored, so one press is one toggle.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

EVENT = struct.Struct("llHHi")   # struct input_event on 64-bit Linux: 24 bytes
EV_KEY = 0x01
KEY_PRESS = 1
DEBOUNCE_S = 0.3                 # a bouncing contact is one press
REOPEN_S = 1.0


class InputButton:
    """Reads key presses from an input event device and calls ``on_press(code)`` for each."""

    def __init__(self, device: Path, on_press: Callable[[int], None], key_code: int | None = None):
        self.device = Path(device)
        self.on_press = on_press
        self.key_code = key_code
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = 0.0
        self.presses = 0

    def start(self) -> "InputButton":
        self._thread = threading.Thread(target=self._run, name="button", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.device, os.O_RDONLY)
            except OSError as exc:
                log.warning("button %s cannot be opened (%s); trying again", self.device, exc)
                self._stop.wait(REOPEN_S)
                continue
            try:
                self._read(fd)
            finally:
                os.close(fd)
            self._stop.wait(0.05)  # the device went away (unplugged, or the FIFO's writer closed)

    def _read(self, fd: int) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(fd, EVENT.size * 16)
            except OSError as exc:
                log.warning("button %s: %s", self.device, exc)
                return
            if not chunk:
                return
            pending += chunk
            while len(pending) >= EVENT.size:
                _sec, _usec, kind, code, value = EVENT.unpack_from(pending)
                pending = pending[EVENT.size:]
                if kind != EV_KEY or value != KEY_PRESS:
                    continue
                if self.key_code is not None and code != self.key_code:
                    continue
                now = time.monotonic()
                if now - self._last < DEBOUNCE_S:
                    continue
                self._last = now
                self.presses += 1
                try:
                    self.on_press(code)
                except Exception:  # a refused toggle must not end the button's thread
                    log.exception("button press not handled")
