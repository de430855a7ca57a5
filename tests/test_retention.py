"""The pure parts of the records office: retention policy, working days, name folding."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sessions.archive.retention import (DELETE, KEEP, RetentionFacts, RetentionPolicy, add_months,
                                        months_for)
from sessions.archive.textnorm import fold, fold_plate, tokens
from sessions.archive.workdays import (HolidayError, add_working_days, is_working_day, next_working_day,
                                       parse_holidays, parse_offset)

KYIV = timezone(timedelta(hours=2))


def facts(exam: date, months: int = 3, holds: tuple[str, ...] = (), tz=KYIV) -> RetentionFacts:
    return RetentionFacts("S1", exam, months, tz, holds)


# --- retention ----------------------------------------------------------------------------------

def test_add_months_clamps_to_month_end():
    assert add_months(date(2026, 1, 15), 3) == date(2026, 4, 15)
    assert add_months(date(2025, 11, 30), 3) == date(2026, 2, 28)
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)   # leap year
    assert add_months(date(2026, 10, 31), 36) == date(2029, 10, 31)
    assert add_months(date(2026, 12, 31), 2) == date(2027, 2, 28)


def test_kept_through_the_last_day_and_deleted_from_the_next_local_midnight():
    policy = RetentionPolicy()
    f = facts(date(2026, 1, 15))
    last_minute = datetime(2026, 4, 15, 23, 59, tzinfo=KYIV)
    first_minute = datetime(2026, 4, 16, 0, 0, tzinfo=KYIV)
    keep = policy.decide(f, last_minute)
    assert keep.action == KEEP and "2026-04-15" in keep.reason
    gone = policy.decide(f, first_minute)
    assert gone.action == DELETE and not gone.late
    assert gone.expires_at == first_minute
    assert gone.delete_by == first_minute + timedelta(days=2)
    # the same instant in UTC is the same decision
    assert policy.decide(f, first_minute.astimezone(timezone.utc)).action == DELETE
    assert policy.decide(f, last_minute.astimezone(timezone.utc)).action == KEEP


def test_deletion_past_the_two_day_window_is_flagged_late():
    policy = RetentionPolicy()
    d = policy.decide(facts(date(2026, 1, 15)), datetime(2026, 4, 18, 0, 1, tzinfo=KYIV))
    assert d.action == DELETE and d.late and "due by" in d.reason
    d = policy.decide(facts(date(2026, 1, 15)), datetime(2026, 4, 17, 23, 59, tzinfo=KYIV))
    assert d.action == DELETE and not d.late


def test_hold_keeps_whatever_the_dates_say():
    policy = RetentionPolicy()
    d = policy.decide(facts(date(2020, 1, 1), holds=("C-17/2026",)), datetime(2030, 1, 1, tzinfo=KYIV))
    assert d.action == KEEP and "C-17/2026" in d.reason and d.holds == ("C-17/2026",)


def test_three_years_for_body_worn_and_never_below_the_legal_minimum():
    assert months_for("vehicle") == 3
    assert months_for("theory-room", 3) == 3
    assert months_for("body-worn") == 36
    assert months_for("body-worn", 3) == 36       # a profile cannot shorten the legal period
    assert months_for("vehicle", 6) == 6          # but may keep longer
    assert months_for(None) == 3
    policy = RetentionPolicy()
    f = facts(date(2026, 3, 10), months_for("body-worn"))
    assert policy.decide(f, datetime(2029, 3, 10, 23, 0, tzinfo=KYIV)).action == KEEP
    assert policy.decide(f, datetime(2029, 3, 11, 0, 0, tzinfo=KYIV)).action == DELETE


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        RetentionPolicy().decide(facts(date(2026, 1, 1)), datetime(2026, 5, 1))


# --- working days ---------------------------------------------------------------------------------

def test_next_working_day_skips_weekend_and_holidays():
    fri = date(2026, 1, 2)   # a Friday
    assert fri.weekday() == 4
    assert next_working_day(fri) == date(2026, 1, 5)
    assert next_working_day(fri, ["2026-01-05"]) == date(2026, 1, 6)
    assert next_working_day(date(2026, 1, 6)) == date(2026, 1, 7)
    assert not is_working_day(date(2026, 1, 3))
    assert not is_working_day(date(2026, 1, 7), ["2026-01-07"])


def test_three_working_days_for_a_copy():
    mon = date(2026, 3, 2)
    assert mon.weekday() == 0
    assert add_working_days(mon, 3) == date(2026, 3, 5)              # Thursday
    assert add_working_days(date(2026, 3, 5), 3) == date(2026, 3, 10)  # over the weekend
    assert add_working_days(mon, 3, [date(2026, 3, 3)]) == date(2026, 3, 6)
    # a request on a Saturday: Monday, Tuesday, Wednesday
    assert add_working_days(date(2026, 3, 7), 3) == date(2026, 3, 11)


def test_bad_holiday_names_itself():
    with pytest.raises(HolidayError, match="'1 May'.*YYYY-MM-DD"):
        parse_holidays(["2026-01-01", "1 May"])


def test_offsets():
    assert parse_offset("+02:00").utcoffset(None) == timedelta(hours=2)
    assert parse_offset("-0530").utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert parse_offset(None) == timezone.utc and parse_offset("Z") == timezone.utc


# --- name folding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stored,query", [
    ("Шевченко Тарас Григорович", "Шевченко"),
    ("Шевченко Тарас Григорович", "шевченко"),
    ("Шевченко Тарас Григорович", "ШЕВЧЕНКО тарас"),
    ("Ерлан Сәтбаев", "сатбаев"),
    ("Ерлан Сәтбаев", "Сәтбаев"),
    ("Ғалымжан Қасымұлы", "галымжан касымулы"),
    ("Өмірзақ Үмбетов", "омирзак умбетов"),
    ("Һасен Ибраһимов", "хасен ибрахимов"),
    ("Ґалаґан Євгенія Їжакевич", "галаган евгения ижакевич"),
    ("Мар'яна Кожум'яка", "марʼяна кожумяка"),
    ("Мар’яна Кожум’яка", "Мар'яна"),
    ("Іваненко Йосип", "иваненко иосип"),
    ("Müller-Lüdenscheidt", "muller ludenscheidt"),
    ("José Ñúñez", "jose nunez"),
    ("Łukasz Øster", "lukasz oster"),
])
def test_fold_finds_names_whatever_the_keyboard(stored, query):
    name = fold(stored)
    assert all(t in name for t in tokens(query)), (name, tokens(query))


def test_fold_does_not_merge_different_names():
    assert fold("Шевченко") != fold("Шевчук")
    assert "сатбаев" not in fold("Сатпаев")


def test_plates_match_across_scripts():
    assert fold_plate("АІ 1234 ВК") == fold_plate("ai1234bk") == fold_plate("AI-1234-BK")
    assert fold_plate("КА 0001 ХО") == fold_plate("ka0001xo")
    assert fold_plate("АІ 1234 ВК") != fold_plate("AI 1234 BE")
