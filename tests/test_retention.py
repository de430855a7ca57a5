"""The pure parts of the records office: retention policy, working days, name folding."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from sessions.archive.retention import (DELETE, KEEP, RetentionFacts, RetentionPolicy, add_months,
                                        months_for)
from sessions.archive.textnorm import fold, fold_plate, query_variants, search_forms, tokens, translit_icao, translit_ua
from sessions.archive.workdays import (HolidayError, WorkCalendar, add_working_days, is_working_day, next_working_day,
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


def test_kazakhstan_public_holidays_and_a_worked_saturday_count():
    kz = WorkCalendar.from_settings(country="KZ")
    # Nauryz: 21-23 March 2026 (Sat-Mon), moved days off on 24 and 25 March.
    assert not kz.is_working_day(date(2026, 3, 23)) and not kz.is_working_day(date(2026, 3, 25))
    assert next_working_day(date(2026, 3, 20), kz) == date(2026, 3, 26)
    # A copy asked for on Tuesday 15 December 2026: Independence Day (16 Dec) is off, so the three
    # working days are 17, 18 and 21 December (without the holiday: 16, 17, 18).
    assert add_working_days(date(2026, 12, 15), 3) == date(2026, 12, 18)
    assert add_working_days(date(2026, 12, 15), 3, kz) == date(2026, 12, 21)
    worked = WorkCalendar.from_settings(country="KZ", working_days=["2026-03-28"])   # a worked Saturday
    assert worked.is_working_day(date(2026, 3, 28))
    assert next_working_day(date(2026, 3, 27), worked) == date(2026, 3, 28)
    own = WorkCalendar.from_settings(holidays=["2026-03-27"], country="KZ")
    assert next_working_day(date(2026, 3, 26), own) == date(2026, 3, 30)


def test_ukraine_public_holidays_follow_the_law_of_the_year():
    ua = WorkCalendar.from_settings(country="UA")
    # Before martial law Independence Day (24 August) was a day off; since 2022 holidays are worked.
    assert not ua.is_working_day(date(2021, 8, 24))
    assert ua.is_working_day(date(2026, 8, 24))
    assert next_working_day(date(2021, 8, 23), ua) == date(2021, 8, 25)
    with pytest.raises(HolidayError, match="'RU'"):
        WorkCalendar.from_settings(country="RU")


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


# --- names across scripts -----------------------------------------------------------------------

@pytest.mark.parametrize("cyrillic, ua, icao", [
    ("Коваль", "koval", "koval"),
    ("Згурський Юрій", "zghurskyi yurii", "zgurskii iurii"),
    ("Мар'яна Їжакевич", "mariana yizhakevych", "mariana izhakevich"),
    ("Шевченко Тарас Григорович", "shevchenko taras hryhorovych", "shevchenko taras grigorovich"),
    ("Сәтбаев Ерлан", "satbaev erlan", "satbaev erlan"),
    ("Єрмоленко Яна", "yermolenko yana", "iermolenko iana"),
])
def test_official_latin_spellings(cyrillic, ua, icao):
    assert fold(translit_ua(cyrillic)) == ua          # KMU resolution No. 55 of 2010
    assert fold(translit_icao(cyrillic)) == icao      # ICAO Doc 9303 (Russian and Kazakh passports)
    assert ua in search_forms(cyrillic) and icao in search_forms(cyrillic)


def test_a_query_in_either_script_has_both_spellings():
    assert query_variants("Koval") == [["koval"]]
    assert query_variants("КОВАЛЬ") == [["ковал", "koval"]]
    assert query_variants("Sätbaev") == [["satbaev"]]
