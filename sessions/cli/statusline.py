"""One status line at the bottom of the examiner's terminal, with log lines scrolling above it.

Everything written to file descriptor 2 (this process's logging, and the stream processes',
which inherit the descriptor) goes through a pipe; a reader thread clears the status line,
writes each complete log line, then draws the status line again. So a log line is never glued
onto the status line, whichever process wrote it.
"""
from __future__ import annotations

import os
import sys
import threading

CLEAR = "\r\033[K"


class StatusTerminal:
    """Owns stderr while a session records on a terminal; ``show`` replaces the status line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._line = ""
        self._tty = -1
        self._reader: threading.Thread | None = None
        self._pipe_r = -1

    @staticmethod
    def wanted() -> bool:
        return sys.stderr.isatty()

    def start(self) -> "StatusTerminal":
        sys.stderr.flush()
        self._tty = os.dup(2)
        self._pipe_r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self._reader = threading.Thread(target=self._relay, name="status-terminal", daemon=True)
        self._reader.start()
        return self

    def _write(self, text: str) -> None:
        data = text.encode(errors="replace")
        while data:
            data = data[os.write(self._tty, data):]

    def show(self, line: str) -> None:
        """Draw ``line`` as the status line (no newline: the next call replaces it)."""
        with self._lock:
            self._line = line
            self._write(CLEAR + line)

    def _relay(self) -> None:
        pending = b""
        while True:
            chunk = os.read(self._pipe_r, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if lines:
                text = "\n".join(x.decode(errors="replace") for x in lines)
                with self._lock:
                    self._write(CLEAR + text + "\n" + self._line)
        if pending:
            with self._lock:
                self._write(CLEAR + pending.decode(errors="replace") + "\n" + self._line)

    def stop(self) -> None:
        """Give stderr back; the status line stays as the last line, ended."""
        if self._tty < 0:
            return
        sys.stderr.flush()
        os.dup2(self._tty, 2)  # closes the pipe's last write end: the reader drains and ends
        if self._reader is not None:
            self._reader.join(timeout=2)
        os.close(self._pipe_r)
        with self._lock:
            if self._line:
                self._write("\n")
        os.close(self._tty)
        self._tty = -1
