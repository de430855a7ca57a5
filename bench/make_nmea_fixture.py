#!/usr/bin/env python3
"""Write bench/fixtures/exam-drive.nmea: a synthetic practical driving exam as a GPS receiver logs it.

The drive is simulated, not surveyed: a car starts on a closed training ground (standing start,
slalom, hill start on a ramp, reverse parking, turn-around), waits at the gate between the two
exam stages, then drives a city route (0-60 km/h, a traffic light, a pedestrian crossing, right
and left turns, a 6 s loss of fix in an underpass) and stops. Speed changes with bounded
acceleration and heading changes only while the car moves, so the numbers look like a car.

Each 1 s epoch is GGA + RMC + VTG (NMEA 2.3, talker GP, correct checksums), in the order MTK and
SiRF receivers send them. The positions carry the metre-scale jitter of a consumer receiver (a
few metres, different every epoch) while the receiver's own speed (RMC, VTG) is Doppler-derived
and steady. A few epochs lose their RMC and VTG to line noise (garbled, bad checksum), after
which gpsd reports each epoch twice, once from GGA with a speed it computes from the jittery
position change (no course), once from RMC with the receiver's speed and course; the two differ
by tens of km/h at walking pace, as with real receivers.

Each epoch is two gpsfake chunks separated by lines holding only ``@`` (declared in the header as
gpsd's ``Delay-Cookie``): the GGA, then the RMC and VTG. ``gpsfake -c 0.5`` writes a chunk every
half second, so gpsd reports at the receiver's 1 Hz rate with RMC half a second after GGA, as a
receiver's sentences trickle out over its serial line. The header's ``# Chunks-per-epoch: 2``
tells :mod:`sensors.replay` to halve gpsfake's pause.

Usage: python bench/make_nmea_fixture.py [--out FILE] [--start 2025-05-15T06:00:00Z]
"""
from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensors.nmea import NmeaFix, gga, rmc, vtg  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures" / "exam-drive.nmea"
DEFAULT_START = datetime(2025, 5, 15, 6, 0, 0, tzinfo=timezone.utc)  # 09:00 Kyiv summer time
ORIGIN = (50.41230, 30.63410)  # training ground gate area, Kyiv left bank (illustrative)
EARTH_R = 6_371_000.0
POSITION_JITTER_M = 2.5  # 1-sigma horizontal noise per axis of a consumer receiver in a city
# Epochs whose RMC and VTG arrive garbled (a receiver's serial buffer overrun: a few bytes lost,
# so the checksum no longer matches and gpsd drops the sentence). After such an epoch gpsd takes
# GGA for a sentence that ends a cycle and from then on reports every epoch twice.
GARBLED_EPOCHS = (1, 41, 81, 121, 161, 201)
ACCEL_MPS2 = 1.6  # a calm exam start; a driving school car rarely exceeds 2 m/s^2
DECEL_MPS2 = 2.4
SUBSTEPS = 10
DELIMITER = "@"
CHUNKS_HEADER = "Chunks-per-epoch:"  # read by sensors.replay to pace gpsfake at the receiver's 1 Hz
CHUNKS_PER_EPOCH = 2


@dataclass(frozen=True)
class Leg:
    """One piece of the drive: for ``duration_s`` aim at ``speed_kmh`` and turn by ``turn_deg``
    (positive is right), spread over the leg and applied only while moving."""

    duration_s: int
    speed_kmh: float
    turn_deg: float = 0.0
    reverse: bool = False
    climb_m: float = 0.0  # height gained over the leg (the training ground ramp)
    outage: bool = False  # receiver loses the fix (underpass)
    note: str = ""


LEGS: tuple[Leg, ...] = (
    # Stage 1: training ground
    Leg(8, 0, note="standing start: belt, mirrors, engine"),
    Leg(8, 12, note="pull away north"),
    Leg(4, 10, 40, note="slalom"),
    Leg(4, 10, -80, note="slalom"),
    Leg(4, 10, 40, note="slalom"),
    Leg(6, 10, 90, note="right turn to the ramp"),
    Leg(5, 8, climb_m=2.5, note="up the ramp"),
    Leg(6, 0, note="hill start: stop on the ramp"),
    Leg(6, 10, climb_m=-2.5, note="over and down the ramp"),
    Leg(3, 0, note="stop before the parking bay"),
    Leg(9, 5, -90, reverse=True, note="reverse parking"),
    Leg(5, 0, note="parked"),
    Leg(5, 8, note="pull out"),
    Leg(9, 10, 180, note="turn around to the gate"),
    Leg(4, 0, note="stop at the gate: end of stage 1"),
    Leg(20, 0, note="pause between stages"),
    # Stage 2: city route
    Leg(10, 40, note="join the street"),
    Leg(15, 50, note="street"),
    Leg(8, 0, note="brake for the traffic light"),
    Leg(12, 0, note="red light"),
    Leg(12, 60, note="avenue"),
    Leg(6, 60, outage=True, note="underpass: no fix"),
    Leg(8, 60, note="avenue"),
    Leg(6, 30, note="slow for the turn"),
    Leg(6, 20, 90, note="right turn"),
    Leg(12, 40, note="side street"),
    Leg(5, 0, note="pedestrian crossing"),
    Leg(4, 0, note="give way to pedestrians"),
    Leg(6, 20, -90, note="left turn"),
    Leg(15, 50, note="back towards the centre"),
    Leg(8, 0, note="pull over"),
    Leg(6, 0, note="stopped: end of exam"),
)


def simulate(start: datetime = DEFAULT_START, seed: int = 408) -> list[NmeaFix]:
    """The epochs of the drive, one a second."""
    rng = random.Random(seed)  # fixed seed: the fixture is reproducible byte for byte
    lat0, lon0 = ORIGIN
    north = east = 0.0
    heading = 0.0  # degrees, 0 = north, the direction the car's nose points
    speed = 0.0
    alt = 112.0  # Kyiv left bank, metres above sea level
    t = 0
    fixes: list[NmeaFix] = []
    for leg in LEGS:
        target = leg.speed_kmh / 3.6
        for _ in range(leg.duration_s):
            for _ in range(SUBSTEPS):
                dt = 1.0 / SUBSTEPS
                if speed < target:
                    speed = min(target, speed + ACCEL_MPS2 * dt)
                else:
                    speed = max(target, speed - DECEL_MPS2 * dt)
                if target > 0:
                    heading += leg.turn_deg / leg.duration_s * dt * min(1.0, speed / target)
                move = heading + (180.0 if leg.reverse else 0.0)
                north += speed * dt * math.cos(math.radians(move))
                east += speed * dt * math.sin(math.radians(move))
                alt += leg.climb_m / leg.duration_s * dt
            fixes.append(_epoch(start + timedelta(seconds=t), lat0, lon0, north, east, alt,
                                speed, heading + (180.0 if leg.reverse else 0.0), leg.outage, rng))
            t += 1
    return fixes


def _epoch(when: datetime, lat0: float, lon0: float, north: float, east: float, alt: float,
           speed: float, track: float, outage: bool, rng: random.Random) -> NmeaFix:
    if outage:
        return NmeaFix(time_utc=when, valid=False, sats=rng.randint(0, 3))
    # Metre-scale position jitter (multipath, changing satellites) but a steady speed: receivers
    # measure speed from the Doppler shift, not from the jittery positions.
    lat = lat0 + math.degrees((north + rng.gauss(0, POSITION_JITTER_M)) / EARTH_R)
    lon = lon0 + math.degrees((east + rng.gauss(0, POSITION_JITTER_M)) / (EARTH_R * math.cos(math.radians(lat0))))
    moving = speed > 0.3
    reported = max(0.0, speed + rng.gauss(0, 0.05)) if moving else 0.0
    return NmeaFix(
        time_utc=when, valid=True, lat=lat, lon=lon, speed_mps=reported,
        track_deg=(track % 360.0) if moving else None,
        alt_m=alt + rng.gauss(0, 0.2), sats=rng.randint(9, 12), hdop=round(rng.uniform(0.7, 1.3), 1),
    )


def header(start: datetime, fixes: list[NmeaFix]) -> str:
    """A gpsd-style test-log header: what the log is, where it came from, how to replay it."""
    secs = len(fixes)
    # Careful: gpsfake treats header lines containing "Serial:", "Transport:" or "Delay-Cookie:"
    # as commands, so the prose below avoids those words.
    return "".join(line + "\n" for line in (
        "# Name: examrec exam-drive, synthetic practical driving exam",
        "# Chipset: none (simulated receiver, NMEA 0183 v2.3, talker GP, 1 Hz)",
        "# Description: stage 1 on a closed training ground (standing start, slalom, hill start",
        "#  on a ramp, reverse parking, turn-around), a pause at the gate between stages, stage 2",
        "#  on a city route (0-60 km/h, traffic light, pedestrian crossing, right and left turns,",
        f"#  6 s without fix in an underpass). {secs} epochs of GGA+RMC+VTG from "
        f"{start:%Y-%m-%dT%H:%M:%SZ}.",
        f"# Notes: positions jitter by about {POSITION_JITTER_M:g} m (1 sigma per axis) from epoch to epoch",
        "#  as a consumer receiver's do; the RMC/VTG speed is the receiver's steady Doppler speed, so",
        "#  a speed computed from GGA position changes differs from it widely, as with real receivers.",
        f"#  In epochs {', '.join(map(str, GARBLED_EPOCHS))} (from 0) the RMC and VTG arrive garbled (bytes lost,",
        "#  bad checksum), as after a serial buffer overrun: gpsd then reports each epoch twice, from",
        "#  GGA (its own speed estimate, no course) and from RMC (the receiver's speed and course).",
        "# Submitter: examrec, generated by bench/make_nmea_fixture.py (do not edit by hand)",
        f"# Date: {start:%Y-%m-%d}",
        "# Location: Kyiv, Ukraine (illustrative coordinates, not surveyed roads)",
        "# Replay: each epoch is two chunks separated by '@' lines (GGA, then RMC and VTG);",
        "#  replay with gpsfake -c 0.5 for 1 Hz (sensors.replay reads the line below).",
        f"# {CHUNKS_HEADER} {CHUNKS_PER_EPOCH}",
        f"# Delay-Cookie: {DELIMITER} 0.0",
    ))


def garble(sentence_text: str) -> str:
    """The sentence with a few bytes lost in the middle, as an overrun serial buffer delivers it."""
    body = sentence_text.rstrip("\r\n")
    mid = len(body) // 2
    return body[:mid] + body[mid + 5:] + "\r\n"


def render(fixes: list[NmeaFix], start: datetime) -> str:
    """The whole fixture text: each epoch in two chunks, GGA first and RMC + VTG half a second
    later (gpsfake writes a chunk per half cycle), as a receiver's sentences trickle out over
    its serial line with the satellite sentences in between."""
    parts = [header(start, fixes)]
    for i, fix in enumerate(fixes):
        speed = rmc(fix) + vtg(fix)
        if i in GARBLED_EPOCHS:
            speed = garble(rmc(fix)) + garble(vtg(fix))
        parts.append(gga(fix) + DELIMITER + "\n" + speed + DELIMITER + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--start", default=DEFAULT_START.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    help="UTC time of the first epoch (ISO 8601)")
    args = ap.parse_args(argv)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00")).astimezone(timezone.utc)
    fixes = simulate(start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # newline="" keeps the CR LF that NMEA requires inside the sentences.
    with open(args.out, "w", encoding="ascii", newline="") as fh:
        fh.write(render(fixes, start))
    moving = [f.speed_mps for f in fixes if f.valid and f.speed_mps]
    print(f"{args.out}: {len(fixes)} epochs, max {max(moving) * 3.6:.1f} km/h, "
          f"{sum(not f.valid for f in fixes)} without fix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
