"""Working days: Monday to Friday, minus the holidays of the centre's calendar.

Two deadlines of order 408 count working days: the upload by the end of the next working day after
the exam (UA IV.1) and the copy within three working days of the application (UA IV.3).
Holidays come from the archive settings and the profile's ``upload.holidays`` as ISO dates.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterable


class HolidayError(ValueError):
    """A holiday that is not an ISO date (YYYY-MM-DD)."""


def parse_holidays(values: Iterable[str | date] | None) -> frozenset[date]:
    """ISO date strings (or dates) as a set; a wrong entry names itself and the format."""
    out: set[date] = set()
    for v in values or ():
        if isinstance(v, datetime):
            out.add(v.date())
        elif isinstance(v, date):
            out.add(v)
        else:
            try:
                out.add(date.fromisoformat(str(v).strip()))
            except ValueError:
                raise HolidayError(f"holiday {v!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-01-01") from None
    return frozenset(out)


def is_working_day(day: date, holidays: Iterable[str | date] = ()) -> bool:
    """True on Monday..Friday that is not a holiday."""
    hol = holidays if isinstance(holidays, frozenset) else parse_holidays(holidays)
    return day.weekday() < 5 and day not in hol


def next_working_day(day: date, holidays: Iterable[str | date] = ()) -> date:
    """The first working day strictly after ``day``."""
    hol = parse_holidays(holidays)
    d = day + timedelta(days=1)
    while not is_working_day(d, hol):
        d += timedelta(days=1)
    return d


def add_working_days(day: date, n: int, holidays: Iterable[str | date] = ()) -> date:
    """The n-th working day after ``day`` (the day itself does not count: a request on Monday has
    three working days until Thursday)."""
    hol = parse_holidays(holidays)
    d = day
    for _ in range(n):
        d = next_working_day(d, hol)
    return d


def end_of_day(day: date, tz: tzinfo) -> datetime:
    """The instant a local day ends (midnight starting the next day), aware."""
    return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=tz)


def parse_offset(text: str | None) -> timezone:
    """'+02:00' / '-0530' / 'Z' / None as a fixed-offset timezone (None and junk give UTC)."""
    if not text or text in ("Z", "z"):
        return timezone.utc
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-").replace(":", "")
    try:
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    except ValueError:
        return timezone.utc
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
