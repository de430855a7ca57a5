"""NMEA 0183 sentences for fixtures and the bench: checksums, RMC/GGA/VTG writers and a reader.

The recorder itself never parses NMEA (gpsd does); this module writes the replay fixtures that
gpsd reads through gpsfake, and reads them back as the truth the tests compare gpsd's reports with.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

KNOT_MPS = 1852.0 / 3600.0  # one knot in metres per second (exact)


class NmeaError(ValueError):
    """A sentence that is not well-formed NMEA 0183 (no '$', no '*hh', wrong checksum)."""


def checksum(body: str | bytes) -> int:
    """XOR of every byte between '$' and '*' (NMEA 0183; also the pedal protocol's checksum)."""
    data = body.encode("ascii") if isinstance(body, str) else body
    return functools.reduce(operator.xor, data, 0)


def sentence(body: str) -> str:
    """A complete sentence: ``$<body>*HH`` and CR LF."""
    return f"${body}*{checksum(body):02X}\r\n"


def split_sentence(line: str) -> list[str]:
    """Check one sentence's framing and checksum and return its comma-separated fields."""
    text = line.strip()
    if not text.startswith("$") or "*" not in text:
        raise NmeaError(f"not an NMEA sentence: {text[:40]!r}")
    body, _, hh = text[1:].rpartition("*")
    try:
        want = int(hh[:2], 16)
    except ValueError:
        raise NmeaError(f"bad checksum field {hh!r} in {text[:40]!r}") from None
    if checksum(body) != want:
        raise NmeaError(f"checksum mismatch in {text[:40]!r}: computed {checksum(body):02X}")
    return body.split(",")


@dataclass(frozen=True)
class NmeaFix:
    """One receiver epoch as written to (or read from) a fixture.

    ``valid`` false means the receiver had no fix (RMC status V, GGA quality 0): position, speed
    and altitude are then absent, as a real receiver leaves those fields empty.
    """

    time_utc: datetime
    valid: bool
    lat: float | None = None
    lon: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    alt_m: float | None = None
    sats: int = 0
    hdop: float | None = None
    geoid_sep_m: float = 26.5


def _lat_field(lat: float) -> tuple[str, str]:
    hemi = "N" if lat >= 0 else "S"
    a = abs(lat)
    deg = int(a)
    minutes = (a - deg) * 60.0
    text = f"{deg:02d}{minutes:08.5f}"
    if text[2:4] == "60":  # rounding carried into a full minute
        text = f"{deg + 1:02d}00.00000"
    return text, hemi


def _lon_field(lon: float) -> tuple[str, str]:
    hemi = "E" if lon >= 0 else "W"
    a = abs(lon)
    deg = int(a)
    minutes = (a - deg) * 60.0
    text = f"{deg:03d}{minutes:08.5f}"
    if text[3:5] == "60":
        text = f"{deg + 1:03d}00.00000"
    return text, hemi


def _hms(t: datetime) -> str:
    return t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"


def rmc(fix: NmeaFix, talker: str = "GP") -> str:
    """Recommended minimum data (NMEA 2.3, with the mode indicator)."""
    date = fix.time_utc.strftime("%d%m%y")
    if not fix.valid or fix.lat is None or fix.lon is None:
        return sentence(f"{talker}RMC,{_hms(fix.time_utc)},V,,,,,,,{date},,,N")
    lat, ns = _lat_field(fix.lat)
    lon, ew = _lon_field(fix.lon)
    knots = f"{(fix.speed_mps or 0.0) / KNOT_MPS:.2f}"
    # Receivers leave the course empty when standing still: it is noise at zero speed.
    track = f"{fix.track_deg:.1f}" if fix.track_deg is not None else ""
    return sentence(f"{talker}RMC,{_hms(fix.time_utc)},A,{lat},{ns},{lon},{ew},{knots},{track},{date},,,A")


def gga(fix: NmeaFix, talker: str = "GP") -> str:
    """Fix data: position, quality, satellites, HDOP, altitude above mean sea level."""
    if not fix.valid or fix.lat is None or fix.lon is None:
        return sentence(f"{talker}GGA,{_hms(fix.time_utc)},,,,,0,{fix.sats:02d},,,M,,M,,")
    lat, ns = _lat_field(fix.lat)
    lon, ew = _lon_field(fix.lon)
    hdop = f"{fix.hdop:.1f}" if fix.hdop is not None else ""
    alt = f"{fix.alt_m:.1f}" if fix.alt_m is not None else ""
    return sentence(f"{talker}GGA,{_hms(fix.time_utc)},{lat},{ns},{lon},{ew},1,{fix.sats:02d},{hdop},"
                    f"{alt},M,{fix.geoid_sep_m:.1f},M,,")


def vtg(fix: NmeaFix, talker: str = "GP") -> str:
    """Course and speed over ground (knots and km/h, consistent with RMC)."""
    if not fix.valid:
        return sentence(f"{talker}VTG,,T,,M,,N,,K,N")
    speed = fix.speed_mps or 0.0
    track = f"{fix.track_deg:.1f}" if fix.track_deg is not None else ""
    return sentence(f"{talker}VTG,{track},T,,M,{speed / KNOT_MPS:.2f},N,{speed * 3.6:.2f},K,A")


def nmea_time_ms(hms: str) -> int:
    """An NMEA ``hhmmss[.ss]`` time field as milliseconds since midnight; ValueError when malformed."""
    if len(hms) < 6 or not hms[:6].isdigit():
        raise ValueError(f"not an NMEA time: {hms!r}")
    frac = hms[7:] if len(hms) > 6 and hms[6] == "." else ""
    if len(hms) > 6 and (hms[6] != "." or (frac and not frac.isdigit())):
        raise ValueError(f"not an NMEA time: {hms!r}")
    ms = int((frac + "000")[:3])
    return ((int(hms[0:2]) * 60 + int(hms[2:4])) * 60 + int(hms[4:6])) * 1000 + ms


def _parse_time(hms: str, ddmmyy: str) -> datetime:
    micro = 0
    if "." in hms:
        hms, frac = hms.split(".", 1)
        micro = int((frac + "000000")[:6])
    return datetime(2000 + int(ddmmyy[4:6]), int(ddmmyy[2:4]), int(ddmmyy[0:2]),
                    int(hms[0:2]), int(hms[2:4]), int(hms[4:6]), micro, tzinfo=timezone.utc)


def _coord(value: str, hemi: str, deg_digits: int) -> float | None:
    if not value:
        return None
    out = int(value[:deg_digits]) + float(value[deg_digits:]) / 60.0
    return -out if hemi in ("S", "W") else out


def iter_sentences(lines: Iterable[str], skip_garbled: bool = False) -> Iterator[list[str]]:
    """Fields of every NMEA sentence among ``lines``; comments, replay delimiters and blanks are
    skipped, and with ``skip_garbled`` also sentences whose checksum fails (as gpsd drops them)."""
    for line in lines:
        text = line.strip()
        if text.startswith("$"):
            try:
                yield split_sentence(text)
            except NmeaError:
                if not skip_garbled:
                    raise


def read_fixes(path: Path | str) -> list[NmeaFix]:
    """The epochs of a fixture in file order: RMC gives time, position, speed and course; the GGA
    of the same time adds altitude, satellites and HDOP. Garbled sentences are skipped as gpsd
    skips them; an epoch whose RMC was garbled comes from its GGA alone (date of the epoch
    before, no speed or course: the receiver's speed for it never arrived)."""
    fixes: list[NmeaFix] = []
    by_time: dict[str, int] = {}
    pending_gga: dict[str, list[str]] = {}
    with open(path, encoding="ascii") as fh:
        for f in iter_sentences(fh, skip_garbled=True):
            kind = f[0][2:]
            if kind == "RMC":
                t = _parse_time(f[1], f[9])
                valid = f[2] == "A"
                fix = NmeaFix(
                    time_utc=t, valid=valid,
                    lat=_coord(f[3], f[4], 2) if valid else None,
                    lon=_coord(f[5], f[6], 3) if valid else None,
                    speed_mps=float(f[7]) * KNOT_MPS if valid and f[7] else None,
                    track_deg=float(f[8]) if valid and f[8] else None,
                )
                by_time[f[1]] = len(fixes)
                fixes.append(fix)
                if f[1] in pending_gga:
                    fixes[-1] = _with_gga(fixes[-1], pending_gga.pop(f[1]))
            elif kind == "GGA":
                if f[1] in by_time:
                    i = by_time[f[1]]
                    fixes[i] = _with_gga(fixes[i], f)
                else:
                    _gga_only(fixes, by_time, pending_gga)
                    pending_gga[f[1]] = f
    _gga_only(fixes, by_time, pending_gga)
    return fixes


def _gga_only(fixes: list[NmeaFix], by_time: dict[str, int], pending: dict[str, list[str]]) -> None:
    """Epochs that had a GGA but no RMC (garbled) once the next epoch begins: from the GGA alone."""
    for hms, f in list(pending.items()):
        if not fixes:
            continue  # no date known yet
        date = fixes[-1].time_utc.strftime("%d%m%y")
        t = _parse_time(hms, date)
        if t <= fixes[-1].time_utc:
            continue
        valid = f[6] not in ("", "0")
        base = NmeaFix(time_utc=t, valid=valid, lat=_coord(f[2], f[3], 2) if valid else None,
                       lon=_coord(f[4], f[5], 3) if valid else None)
        by_time[hms] = len(fixes)
        fixes.append(_with_gga(base, f))
        del pending[hms]


def _with_gga(fix: NmeaFix, f: list[str]) -> NmeaFix:
    return NmeaFix(
        time_utc=fix.time_utc, valid=fix.valid and f[6] not in ("", "0"), lat=fix.lat, lon=fix.lon,
        speed_mps=fix.speed_mps, track_deg=fix.track_deg,
        alt_m=float(f[9]) if f[9] else None, sats=int(f[7] or 0),
        hdop=float(f[8]) if f[8] else None, geoid_sep_m=float(f[11]) if f[11] else 0.0,
    )
