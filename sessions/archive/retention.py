"""The retention policy: keep or delete one stored session, and why. Pure, no storage access.

Order 408 keeps an exam recording three months from the exam date and deletes it within two days
after that (UA IV.2); order 444 keeps inspection recordings three years (KZ 12). A complaint blocks
deletion until it is decided, whatever the dates say (UA IV.2, legal hold).

The period is counted in calendar months from the exam date in the centre's local time and covers
that whole last day: an exam on 15 January is kept through 15 April and may be deleted from
16 April 00:00 local time; the deletion is due by 18 April 00:00 (two days). A month end clamps
(30 November + 3 months = 28/29 February). The same instant is the Object Lock retain-until date,
so the storage itself refuses an earlier deletion.

The sweep is stateless like Frigate's cleanup: every decision is computed from the facts stored
with the session (exam date, months, hold) and the time given, so running it twice is harmless.

DESIGN, the retention rule lives in ``RetentionPolicy.decide`` (keep or delete, and why; a hold
always keeps) and ``months_for`` (the period per profile kind, never below the legal minimum).
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from sessions.archive.workdays import end_of_day

# The legal minimum per profile kind, in months. A profile may keep longer, never shorter.
DEFAULT_MONTHS = {"vehicle": 3, "theory-room": 3, "replay": 3, "body-worn": 36}
FALLBACK_MONTHS = 3
DELETE_WITHIN = timedelta(days=2)

KEEP = "keep"
DELETE = "delete"


def add_months(day: date, months: int) -> date:
    """``day`` plus calendar months, clamped to the last day of a shorter month."""
    if months < 0:
        raise ValueError("months must not be negative")
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def months_for(kind: str | None, profile_months: int | None = None) -> int:
    """Retention months for a session: the profile's value, but never less than the legal
    minimum of its kind (a body-worn profile that forgot ``retention.months = 36`` still keeps
    three years)."""
    minimum = DEFAULT_MONTHS.get(kind or "", FALLBACK_MONTHS)
    return max(minimum, int(profile_months or 0))


@dataclass(frozen=True)
class RetentionFacts:
    """What the policy needs to know about one stored session."""

    session_id: str
    exam_date: date
    months: int
    tz: tzinfo
    holds: tuple[str, ...] = ()   # open complaints (references); empty when none


@dataclass(frozen=True)
class Decision:
    """The verdict for one session at one instant, with the dates that explain it."""

    session_id: str
    action: str                  # KEEP or DELETE
    reason: str                  # plain words for the sweep report and the journal
    expires_at: datetime         # retention ends (= Object Lock retain-until)
    delete_by: datetime          # deletion due (expires_at + 2 days)
    late: bool = False           # past delete_by: deleted, but later than the rule allows
    holds: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        return {"session": self.session_id, "action": self.action, "reason": self.reason,
                "expires_at": self.expires_at.isoformat(), "delete_by": self.delete_by.isoformat(),
                "late": self.late, "holds": list(self.holds)}


class RetentionPolicy:
    """Keep/delete decisions. ``decide`` is a pure function of the facts and ``now``."""

    def __init__(self, delete_within: timedelta = DELETE_WITHIN):
        self.delete_within = delete_within

    @staticmethod
    def expires_at(exam_date: date, months: int, tz: tzinfo) -> datetime:
        """The instant retention ends: the end of the day ``exam_date + months`` (local)."""
        return end_of_day(add_months(exam_date, months), tz)

    def delete_by(self, exam_date: date, months: int, tz: tzinfo) -> datetime:
        return self.expires_at(exam_date, months, tz) + self.delete_within

    def decide(self, facts: RetentionFacts, now: datetime) -> Decision:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        expires = self.expires_at(facts.exam_date, facts.months, facts.tz)
        due = expires + self.delete_within
        if facts.holds:
            return Decision(facts.session_id, KEEP,
                            f"legal hold: complaint {', '.join(facts.holds)} not decided",
                            expires, due, holds=facts.holds)
        if now < expires:
            return Decision(facts.session_id, KEEP,
                            f"retention until {expires.date() - timedelta(days=1)} "
                            f"({facts.months} months from the exam on {facts.exam_date})",
                            expires, due)
        late = now > due
        why = f"retention ended {expires.isoformat(timespec='minutes')}"
        if late:
            why += f"; deletion was due by {due.isoformat(timespec='minutes')}"
        return Decision(facts.session_id, DELETE, why, expires, due, late=late)
