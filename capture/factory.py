"""Build the source a profile names. Heavy modules are imported only for the schemes in use."""
from __future__ import annotations

from typing import TYPE_CHECKING

from capture.base import AudioSource, VideoSource

if TYPE_CHECKING:
    from core.profile import Profile, StreamSpec


def video_source(spec: "StreamSpec", profile: "Profile", realtime: bool = True) -> VideoSource:
    """The video source for one stream of a profile."""
    src = spec.source
    if src.startswith("pattern:"):
        from capture.replay import PatternSource
        return PatternSource(spec.name, spec.width, spec.height, spec.fps, realtime=realtime)
    if src.startswith("clip:"):
        from capture.replay import ClipSource
        return ClipSource(spec.name, spec.width, spec.height, spec.fps, profile.resolve(src[5:]), realtime=realtime)
    if src.startswith("v4l2:"):
        from capture.v4l2 import V4L2Source
        return V4L2Source(spec, profile)
    if src.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        from capture.ipcam import IPCameraSource
        return IPCameraSource(spec, profile)
    if src.startswith("x11:"):
        from capture.screen import ScreenSource
        return ScreenSource(spec, profile)
    raise ValueError(f"unknown source {src!r}")


def audio_source(spec: "StreamSpec", profile: "Profile", realtime: bool = True) -> AudioSource:
    """The audio source of the stream that owns the audio."""
    src = spec.audio or ""
    if src.startswith("wav:"):
        from capture.replay import WavSource
        return WavSource(profile.resolve(src[4:]), realtime=realtime)
    if src.startswith("mic:"):
        from capture.microphone import MicrophoneSource
        return MicrophoneSource(src[4:], profile)
    raise ValueError(f"unknown audio source {src!r}")
