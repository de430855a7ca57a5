"""What every source of frames or sound hands to the pipeline, and the errors it may raise.

A source is opened once, then read in a loop by the stream's capture thread. ``read`` blocks
until the next frame (or audio block) and returns it stamped with the monotonic capture time
(``time.monotonic_ns`` / CLOCK_MONOTONIC: the driver's buffer time for V4L2, the callback's
input time for a microphone, the due time for replay). The pipeline turns that stamp into PTS.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from core.clock import SessionClock


@dataclass
class Frame:
    """One picture: BGR uint8 (H, W, 3) at the stream's size, stamped at capture."""

    image: np.ndarray
    capture_ns: int


@dataclass
class AudioBlock:
    """Consecutive samples: int16 (n, channels); ``capture_ns`` is the instant of the first sample."""

    samples: np.ndarray
    capture_ns: int
    sample_rate: int


class SourceError(Exception):
    """A source cannot deliver: the message names the device and says what to do."""


class SourceLost(SourceError):
    """The device was there and went away (unplugged, connection closed, stalled)."""


class SourceUnavailable(SourceError):
    """The device cannot be opened (absent, busy, or cannot do what the profile asks)."""


@dataclass
class SourceInfo:
    """What a source says about itself for `examrec status` and `check`."""

    kind: str
    device: str
    details: dict = field(default_factory=dict)


class VideoSource(ABC):
    """A camera, the screen, or a replay fixture, delivering frames of ``width`` x ``height``."""

    def __init__(self, name: str, width: int, height: int, fps: float):
        self.name = name
        self.width = width
        self.height = height
        self.fps = fps
        self.clock: SessionClock | None = None

    def start(self, clock: SessionClock) -> None:
        """Begin delivering frames on ``clock``'s timeline (called once the session start is known)."""
        self.clock = clock

    @abstractmethod
    def open(self) -> None:
        """Acquire the device; raise SourceUnavailable with a plain message when it can't."""

    @abstractmethod
    def read(self) -> Frame:
        """Block until the next frame; raise SourceLost when the device goes away."""

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def info(self) -> SourceInfo:
        return SourceInfo(kind=type(self).__name__, device=self.name)


class AudioSource(ABC):
    """A microphone or a WAV fixture, delivering blocks of int16 samples."""

    sample_rate: int = 48000
    channels: int = 1

    def __init__(self) -> None:
        self.clock: SessionClock | None = None

    def start(self, clock: SessionClock) -> None:
        self.clock = clock

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self) -> AudioBlock: ...

    @abstractmethod
    def close(self) -> None: ...

    def info(self) -> SourceInfo:
        return SourceInfo(kind=type(self).__name__, device="audio")
