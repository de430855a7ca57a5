"""The stage gate: which frames of a stream are recorded, and what the overlay shows on each
besides the clock (the stage, the pause and resume banners, the GPS values, the pedal lamps).

The pause rule, as the stream sees it (the controller decides the instants, sessions/recorder/
exam.py): the PAUSE banner is drawn on frames captured from ``at - banner lead``; the first frame
captured at or after ``at`` ends the stage (its segment closes there) and no frame is recorded
until a resume, whose banner is drawn on the new stage's frames captured before its end instant.
A resume of the current stage before ``at`` withdraws the pause (and shows its own banner).
Everything is decided by each frame's capture stamp, so every stream cuts at the same instant.
"""
from __future__ import annotations

from muxer.overlay import OverlayState
from sessions.recorder.messages import Pause, PedalSpan, PedalSpans, Resume, SensorOverlay


def _held(spans: tuple[PedalSpan, ...], t: int) -> bool:
    return any(s0 <= t and (s1 is None or t < s1) for s0, s1 in spans)


class StageGate:
    """Set by the controller's commands; asked once per frame by the stream's loop."""

    def __init__(self, stage: int = 1):
        self.stage = stage
        self.paused = False
        self.pause_at_ns: int | None = None
        self.overlay = OverlayState(stage=stage)
        self._pause_banner = ""
        self._pause_banner_from_ns = 0
        self._banner_until_ns = 0
        self._pedals: PedalSpans | None = None

    # commands --------------------------------------------------------------------------------
    def pause(self, cmd: Pause) -> None:
        self.pause_at_ns = cmd.at_ns
        self._pause_banner = cmd.banner
        self._pause_banner_from_ns = cmd.at_ns - cmd.banner_lead_ns

    def resume(self, cmd: Resume) -> None:
        if cmd.stage == self.stage and not self.paused:
            # A resume of the stage going on: the pause not yet in effect is withdrawn (the
            # examiner resumed during the banner), and the stage goes on without a cut.
            self.pause_at_ns = None
        self.stage = cmd.stage
        self.paused = False
        self.overlay.stage = cmd.stage
        self.overlay.banner = cmd.banner
        self._banner_until_ns = cmd.banner_until_ns

    def sensor_values(self, cmd: SensorOverlay) -> None:
        self.overlay.gps_fix = cmd.gps_fix
        self.overlay.speed_kmh = cmd.speed_kmh

    def pedal_spans(self, cmd: PedalSpans) -> None:
        self._pedals = cmd

    # per frame -------------------------------------------------------------------------------
    def pause_due(self, capture_ns: int) -> bool:
        """This frame is the first of the pause: the stage ends before it."""
        return self.pause_at_ns is not None and capture_ns >= self.pause_at_ns

    def enter_pause(self) -> None:
        self.paused = True
        self.pause_at_ns = None
        self.overlay.banner = None

    def dress(self, capture_ns: int) -> OverlayState:
        """The overlay state for a recorded frame captured at ``capture_ns``."""
        ov = self.overlay
        if self._banner_until_ns and capture_ns >= self._banner_until_ns:
            ov.banner = None
            self._banner_until_ns = 0
        if self.pause_at_ns is not None and capture_ns >= self._pause_banner_from_ns:
            ov.banner = self._pause_banner
        pedals = self._pedals
        if pedals is not None:
            # Frame-exact: lit on exactly the frames captured during an actuation.
            ov.brake = _held(pedals.brake, capture_ns)
            ov.clutch = _held(pedals.clutch, capture_ns)
        return ov
