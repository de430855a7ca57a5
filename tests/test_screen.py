"""The screen source against a real Xvfb with a real Tk window (Debian's /usr/bin/python3 and
python3-tk) whose timecode grid and counter change every 50 ms. The window logs when each
drawing started and when the X server had certainly executed it, so each captured frame can be
checked against its capture stamp: the counter it shows was drawn before the stamp, and the
next one was not yet finished."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from capture.base import SourceLost, SourceUnavailable
from capture.screen import ScreenSource
from device_harness import decode_timecode, require, tk_counter, xvfb

# How much earlier than the real grab our stamp may be: x11grab reads the clock just before it
# asks the X server for the image, and a busy 2-core machine may run Xvfb a little later.
STAMP_SLACK_NS = 15_000_000


def screen_spec(display: str, width: int, height: int, fps: float = 10.0, draw_mouse: bool = False):
    return SimpleNamespace(name="screen", source=f"x11:{display}", width=width, height=height, fps=fps,
                           draw_mouse=draw_mouse, credentials=None, pixel_format=None)


def test_screen_frames_follow_the_counter_and_the_display_loss(tmp_path: Path) -> None:
    require("Xvfb", "/usr/bin/python3")
    with xvfb(640, 480) as x, tk_counter(x, tmp_path / "draws.log", interval_ms=50) as tk:
        # the profile asks half the screen's size: frames are scaled, not cropped
        src = ScreenSource(screen_spec(x.display, 320, 240, fps=10), profile=None)
        src.open()
        assert src.screen_size == (640, 480)
        frames = [src.read() for _ in range(25)]
        time.sleep(0.2)
        draws = tk.draws()

        assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
        seen = []
        for f in frames:
            code = decode_timecode(f.image, top_fraction=0.5)
            if code is None:       # a grab in the middle of Tk's redraw; rare
                continue
            n, drawn_ms = code
            assert drawn_ms == draws[n][0] // 1_000_000
            assert f.capture_ns >= draws[n][0] - STAMP_SLACK_NS, \
                f"frame shows counter {n} drawn {(draws[n][0] - f.capture_ns) / 1e6:.1f} ms after its stamp"
            if n + 1 in draws:
                assert f.capture_ns <= draws[n + 1][1], \
                    f"frame stamped {(f.capture_ns - draws[n + 1][1]) / 1e6:.1f} ms after counter {n + 1} was on screen"
            seen.append((f.capture_ns, n))
        assert len(seen) >= 22, f"only {len(seen)} of 25 frames readable"
        counters = [n for _, n in seen]
        assert counters == sorted(counters) and counters[-1] - counters[0] >= 25   # it advances, in order
        gaps = [(b - a) / 1e6 for a, b in zip([f.capture_ns for f in frames[3:]], [f.capture_ns for f in frames[4:]])]
        assert 90 < statistics.median(gaps) < 110 and min(gaps) > 45, gaps           # 10 fps, no bursts

        # the cursor is in the plain gray lower half: absent by default, drawn when asked
        for draw_mouse, expect_cursor in ((False, False), (True, True)):
            s2 = ScreenSource(screen_spec(x.display, 640, 480, draw_mouse=draw_mouse), profile=None)
            s2.open()
            img = s2.read().image
            s2.close()
            box = img[330:390, 290:350].astype(int)
            assert bool((np.abs(box - 128).sum(axis=2) > 0).any()) == expect_cursor

        x.kill()                                   # the workstation's X server goes away
        t0 = time.monotonic()
        with pytest.raises(SourceLost) as err:
            for _ in range(100):
                src.read()
        assert time.monotonic() - t0 < 2.0
        assert x.display in str(err.value)
        src.close()
        src.close()
        with pytest.raises(SourceUnavailable) as err:
            src.open()
        assert f"no X server is running on {x.display}" in str(err.value)


def test_screen_unavailable_names_the_display() -> None:
    src = ScreenSource(screen_spec(":4321", 320, 240), profile=None)
    with pytest.raises(SourceUnavailable) as err:
        src.open()
    msg = str(err.value)
    assert "screen screen (X display :4321)" in msg and "/tmp/.X11-unix/X4321" in msg and "examrec devices" in msg
    with pytest.raises(SourceUnavailable, match="not an X display name"):
        ScreenSource(screen_spec("nonsense", 320, 240), profile=None).open()
