"""Build the GPS and pedal readers a profile names; ``replay:`` starts the replay device first.

Replay devices are owned by their reader: ``reader.stop()`` also stops gpsfake or socat.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from core.profile import ProfileError

from sensors.dispatch import EventSink
from sensors.gps import GpsFix, GpsReader, parse_gpsd_url
from sensors.pedals import PedalReader, PedalSample, PedalSettings, parse_pedal_url
from sensors.replay import ReplayError, start_gps_replay, start_pedal_replay

if TYPE_CHECKING:
    from core.profile import Profile

REPLAY = "replay:"


def gps_reader(profile: "Profile", on_fix: Callable[[GpsFix], Any] | None = None,
               on_event: EventSink | None = None) -> GpsReader | None:
    """The profile's GPS (``gps = "gpsd://HOST:PORT"`` or ``"replay:FILE.nmea"``), not yet
    started; None when the profile has no GPS. A replay's gpsd is started here (about 0.5 s)."""
    spec = profile.gps
    if not spec:
        return None
    if spec.startswith(REPLAY):
        try:
            replay = start_gps_replay(profile.resolve(spec[len(REPLAY):]))
        except ReplayError as exc:
            raise ProfileError(profile.path, "gps", str(exc)) from None
        return GpsReader(replay.url, on_fix, on_event, owned=replay)
    try:
        parse_gpsd_url(spec)
    except ValueError as exc:
        raise ProfileError(profile.path, "gps", f"{exc} (or replay:FILE.nmea)") from None
    return GpsReader(spec, on_fix, on_event)


def pedal_reader(profile: "Profile", on_sample: Callable[[PedalSample], Any] | None = None,
                 on_event: EventSink | None = None) -> PedalReader | None:
    """The profile's pedal sensor (``pedals = "serial:///dev/ttyUSB0?baud=115200"``, a pyserial
    URL, or ``"replay:FILE.pedal"``, looped), not yet started; None when there is none."""
    spec = profile.pedals
    if not spec:
        return None
    settings = PedalSettings.from_profile(profile.section("pedal_settings"))
    if spec.startswith(REPLAY):
        try:
            replay = start_pedal_replay(profile.resolve(spec[len(REPLAY):]), loop=True)
        except ReplayError as exc:
            raise ProfileError(profile.path, "pedals", str(exc)) from None
        return PedalReader(replay.url, settings, on_sample, on_event, owned=replay)
    try:
        parse_pedal_url(spec, settings.baud)
    except ValueError as exc:
        raise ProfileError(profile.path, "pedals", str(exc)) from None
    return PedalReader(spec, settings, on_sample, on_event)


def clock_limit_s(profile: "Profile") -> float:
    """The profile's ``clock_check.limit_s`` (default 1 s)."""
    return float(profile.section("clock_check")["limit_s"])
