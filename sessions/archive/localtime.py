"""The centre's local time: journals store UTC, people read and sign local time.

The zone is the archive setting ``timezone`` (an IANA name such as Europe/Kyiv or Asia/Almaty);
without one, the zone of the machine that prints: $TZ, else the zone /etc/localtime points at,
else the fixed offset the system reports now.
"""
from __future__ import annotations

import os
from datetime import date, datetime, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sessions.archive.errors import UsageError

LOCALTIME = Path("/etc/localtime")


def check_zone(name: str) -> str:
    """An IANA zone name that this machine knows; a usage error names what to write otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"time zone {name!r} is unknown: write an IANA name such as Europe/Kyiv or Asia/Almaty") \
            from None
    return name


def system_zone() -> tzinfo:
    """This machine's zone, with its daylight-saving rules where they can be found."""
    tz_env = (os.environ.get("TZ") or "").lstrip(":")
    for candidate in (tz_env, _localtime_link()):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return datetime.now().astimezone().tzinfo or timezone.utc


def _localtime_link() -> str:
    try:
        target = os.readlink(LOCALTIME)
    except OSError:
        return ""
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


def centre_zone(name: str | None) -> tzinfo:
    """The zone of the archive setting, else the system's."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return system_zone()


def parse_utc(text: str | None) -> datetime | None:
    """An ISO instant as stored in journals ('2026-03-02T09:15:00Z' or with an offset); None if absent."""
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def local_datetime(text: str | None, zone: tzinfo) -> str:
    """'2026-03-02T09:15:00Z' in Kyiv as '02.03.2026 11:15' (no zone mark: the form says whose time)."""
    dt = parse_utc(text)
    return dt.astimezone(zone).strftime("%d.%m.%Y %H:%M") if dt else ""


def local_date(value: str | date | None, zone: tzinfo | None = None) -> str:
    """A date (or an instant, taken in ``zone``) as DD.MM.YYYY."""
    if not value:
        return ""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime("%d.%m.%Y")
    text = str(value)
    if len(text) > 10 and zone is not None:
        dt = parse_utc(text)
        if dt:
            return dt.astimezone(zone).strftime("%d.%m.%Y")
    try:
        return date.fromisoformat(text[:10]).strftime("%d.%m.%Y")
    except ValueError:
        return text
