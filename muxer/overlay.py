"""Burned-in overlay: date and time (local, with UTC offset), exam duration, stream name, and in
the vehicle the speed, the exam stage and the dual-control pedal state.

The text sits in an opaque dark box with white letters, legible on any background. The box is
rendered only when its text changes (once a second for the clock) and blitted on every frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.clock import SessionClock, format_duration
from core.profile import OverlaySpec

FONT = cv2.FONT_HERSHEY_SIMPLEX
BOX_BGR = (16, 16, 16)
TEXT_BGR = (240, 240, 240)
ON_BGR = (0, 0, 230)       # a lit pedal indicator: red
OFF_BGR = (70, 70, 70)     # an idle one: dark grey
BANNER_BGR = (0, 140, 255)  # pause/resume banner: amber
CACHE_SIZE = 16


@dataclass
class OverlayState:
    """What the overlay shows besides the clock, pushed by the session controller."""

    speed_kmh: float | None = None
    gps_fix: bool | None = None      # None: no GPS configured
    brake: bool | None = None        # None: no pedal sensor
    clutch: bool | None = None
    stage: int | None = None
    banner: str | None = None


def overlay_lines(spec: OverlaySpec, stream_name: str, clock: SessionClock, capture_ns: int,
                  state: OverlayState) -> tuple[str, ...]:
    """The text lines for one frame (a pure function: tests render the expected overlay with it)."""
    lines: list[str] = []
    f = spec.fields
    if "datetime" in f:
        local = clock.wall_local(capture_ns)
        off = local.strftime("%z")
        lines.append(f"{local:%Y-%m-%d %H:%M:%S} {off[:3]}:{off[3:]}")
    second: list[str] = [spec.label] if spec.label else []
    if "duration" in f:
        second.append(format_duration(clock.pts_s(capture_ns)))
    if "name" in f:
        second.append(stream_name)
    if "stage" in f and state.stage is not None:
        second.append(f"STAGE {state.stage}")
    if second:
        lines.append("  ".join(second))
    if ("speed" in f or "gps" in f) and state.gps_fix is not None:
        if state.gps_fix and state.speed_kmh is not None:
            lines.append(f"{state.speed_kmh:.0f} km/h" if "speed" in f else "GPS: fix")
        else:
            lines.append("GPS: no fix")
    return tuple(lines)


def _scale_for(height: int, spec: OverlaySpec) -> tuple[float, int]:
    scale = max(0.35, height / 720 * 0.75) * spec.scale
    return scale, max(1, round(scale * 2))


def render_box(lines: tuple[str, ...], pedals: tuple[tuple[str, bool], ...], height: int,
               spec: OverlaySpec) -> np.ndarray:
    """Render the overlay box (BGR) for these lines and pedal indicators."""
    scale, thick = _scale_for(height, spec)
    sizes = [cv2.getTextSize(t, FONT, scale, thick)[0] for t in lines] or [(0, 0)]
    line_h = max(cv2.getTextSize("Hg", FONT, scale, thick)[0][1], 1)
    pad = max(4, line_h // 2)
    step = line_h + pad
    ind_w = 0
    if pedals:
        ind_w = sum(cv2.getTextSize(n, FONT, scale, thick)[0][0] + 2 * pad for n, _ in pedals) + pad * (len(pedals) - 1)
    width = max([w for w, _ in sizes] + [ind_w]) + 2 * pad
    rows = len(lines) + (1 if pedals else 0)
    box = np.empty((rows * step + pad, width, 3), np.uint8)
    box[:] = BOX_BGR
    y = pad + line_h
    for text in lines:
        cv2.putText(box, text, (pad, y), FONT, scale, TEXT_BGR, thick, cv2.LINE_AA)
        y += step
    if pedals:
        x = pad
        for name, on in pedals:
            tw = cv2.getTextSize(name, FONT, scale, thick)[0][0]
            cv2.rectangle(box, (x, y - line_h - pad // 2), (x + tw + 2 * pad - 1, y + pad // 2), ON_BGR if on else OFF_BGR, -1)
            cv2.putText(box, name, (x + pad, y), FONT, scale, TEXT_BGR, thick, cv2.LINE_AA)
            x += tw + 3 * pad
    return box


def render_banner(text: str, width: int, height: int) -> np.ndarray:
    """The pause/resume banner: a full-width amber band with black text."""
    scale = max(0.5, height / 720 * 1.1)
    thick = max(2, round(scale * 2))
    while scale > 0.3 and cv2.getTextSize(text, FONT, scale, thick)[0][0] > width - 20:
        scale *= 0.9
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, thick)
    band = np.empty((th * 3, width, 3), np.uint8)
    band[:] = BANNER_BGR
    cv2.putText(band, text, ((width - tw) // 2, th * 2), FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return band


def box_origin(position: str, frame_w: int, frame_h: int, box_w: int, box_h: int, margin: int) -> tuple[int, int]:
    """Top-left corner of the box for a named position (bottom positions stay clear of the
    timecode strip's rows)."""
    x = margin if position.endswith("left") else frame_w - box_w - margin
    y = margin if position.startswith("top") else frame_h - box_h - margin - max(8, frame_h // 45)
    return max(0, x), max(0, y)


class Overlay:
    """Draws the overlay into frames of one stream; caches boxes by their text."""

    def __init__(self, spec: OverlaySpec, stream_name: str, width: int, height: int, clock: SessionClock):
        self.spec = spec
        self.stream_name = stream_name
        self.width = width
        self.height = height
        self.clock = clock
        self.margin = max(4, height // 60)
        self.state = OverlayState()
        self._cache: dict[tuple, np.ndarray] = {}
        self.renders = 0  # how many boxes were rendered (the rest were cache hits)

    def pedal_indicators(self, state: OverlayState) -> tuple[tuple[str, bool], ...]:
        if "pedals" not in self.spec.fields:
            return ()
        out = []
        if state.brake is not None:
            out.append(("BRAKE", state.brake))
        if state.clutch is not None:
            out.append(("CLUTCH", state.clutch))
        return tuple(out)

    def _cached(self, key: tuple, make) -> np.ndarray:
        box = self._cache.get(key)
        if box is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            box = make()
            self._cache[key] = box
            self.renders += 1
        return box

    def box_for(self, capture_ns: int, state: OverlayState) -> tuple[np.ndarray, tuple[int, int]]:
        """The box and where it goes, for a frame captured at ``capture_ns``."""
        lines = overlay_lines(self.spec, self.stream_name, self.clock, capture_ns, state)
        pedals = self.pedal_indicators(state)
        box = self._cached(("box", lines, pedals), lambda: render_box(lines, pedals, self.height, self.spec))
        bh, bw = box.shape[:2]
        bw, bh = min(bw, self.width), min(bh, self.height)
        return box[:bh, :bw], box_origin(self.spec.position, self.width, self.height, bw, bh, self.margin)

    def apply(self, image: np.ndarray, capture_ns: int, state: OverlayState | None = None) -> None:
        """Draw the overlay into ``image`` (BGR, in place)."""
        state = state or self.state
        box, (x, y) = self.box_for(capture_ns, state)
        image[y:y + box.shape[0], x:x + box.shape[1]] = box
        if state.banner:
            band = self._cached(("banner", state.banner), lambda: render_banner(state.banner, self.width, self.height))
            y0 = (self.height - band.shape[0]) // 2
            image[y0:y0 + band.shape[0]] = band
