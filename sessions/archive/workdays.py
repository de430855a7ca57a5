"""Working days as the law counts them: Monday to Friday, minus the public holidays that are days
off, minus the centre's own holidays, plus the days worked although they are weekends or
holidays (a Saturday worked in exchange for a bridge day).

Two deadlines of order 408 count working days: the upload by the end of the next working day after
the exam (UA IV.1) and the copy within three working days of the application (UA IV.3).

A centre's calendar (``WorkCalendar``) is kept in the archive settings (``holiday_country``,
``holidays``, ``working_days``) and, for ``upload --overdue`` on a recorder without archive
access, in the profile's ``[upload]`` section (the same three keys). With ``holiday_country`` set
to UA or KZ the public holidays come from the `holidays` package, which follows each country's
law: in Ukraine under martial law (since 24.02.2022, Law 2136-IX) public holidays are not days
off, so the package lists none for those years and the centre adds any day off by hand.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Iterable, Union

HOLIDAY_COUNTRIES = ("UA", "KZ")


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


@functools.lru_cache(maxsize=64)
def public_holidays(country: str, year: int) -> frozenset[date]:
    """The days off of ``country``'s public holidays in ``year``, from the `holidays` package."""
    if country not in HOLIDAY_COUNTRIES:
        raise HolidayError(f"holiday country {country!r}: examrec knows {', '.join(HOLIDAY_COUNTRIES)}")
    import holidays as holidays_pkg   # imported on first use: most commands never count days
    return frozenset(holidays_pkg.country_holidays(country, years=year).keys())


@dataclass(frozen=True)
class WorkCalendar:
    """One centre's working days: weekdays, minus public and own holidays, plus worked days."""

    holidays: frozenset[date] = frozenset()
    working_days: frozenset[date] = frozenset()
    country: str = ""

    @classmethod
    def from_settings(cls, holidays: Iterable[str | date] | None = (), working_days: Iterable[str | date] | None = (),
                      country: str | None = "") -> "WorkCalendar":
        c = (country or "").upper()
        if c and c not in HOLIDAY_COUNTRIES:
            raise HolidayError(f"holiday country {country!r}: examrec knows {', '.join(HOLIDAY_COUNTRIES)}")
        return cls(parse_holidays(holidays), parse_holidays(working_days), c)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or (bool(self.country) and day in public_holidays(self.country, day.year))

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        return day.weekday() < 5 and not self.is_holiday(day)


Days = Union[WorkCalendar, Iterable[Union[str, date]]]


def as_calendar(days: Days | None) -> WorkCalendar:
    """A calendar from a calendar or from a plain list of holidays."""
    return days if isinstance(days, WorkCalendar) else WorkCalendar(parse_holidays(days))


def is_working_day(day: date, holidays: Days = ()) -> bool:
    """True on a working day of the calendar (or of Monday..Friday minus ``holidays``)."""
    return as_calendar(holidays).is_working_day(day)


def next_working_day(day: date, holidays: Days = ()) -> date:
    """The first working day strictly after ``day``."""
    cal = as_calendar(holidays)
    d = day + timedelta(days=1)
    while not cal.is_working_day(d):
        d += timedelta(days=1)
    return d


def add_working_days(day: date, n: int, holidays: Days = ()) -> date:
    """The n-th working day after ``day`` (the day itself does not count: a request on Monday has
    three working days until Thursday)."""
    cal = as_calendar(holidays)
    d = day
    for _ in range(n):
        d = next_working_day(d, cal)
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
