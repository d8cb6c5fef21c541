"""The Jalali calendar: typed dates and months, week and month intervals, the labels of the
JSON, and Jalali periods selecting exactly the calls of the Gregorian days they convert to
(calls placed on the first and last second of every local day around each boundary)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from callkpi.config import Config, ReportConfig
from callkpi.dates import DateError, parse_date, parse_month
from reports.calendar import GREGORIAN, JALALI, Period, calendar_for, jalali_timestamp
from reports.kpis import refresh_and_build
from test_facts_helpers import Calls

TEHRAN = ZoneInfo("Asia/Tehran")


@pytest.mark.parametrize("text, day", [
    ("1405-09-03", dt.date(2026, 11, 24)),  # the recipe's check
    ("۱۴۰۵-۰۹-۰۳", dt.date(2026, 11, 24)),  # Persian digits
    ("1405-9-3", dt.date(2026, 11, 24)),
    ("2026-11-24", dt.date(2026, 11, 24)),  # a Gregorian date stays Gregorian
    ("1403-12-30", dt.date(2025, 3, 20)),  # a leap year's Esfand 30
    ("1405-01-01", dt.date(2026, 3, 21)),  # Nowruz
])
def test_a_typed_date_is_jalali_when_its_year_is_below_1700(text, day):
    assert parse_date(text) == day


@pytest.mark.parametrize("text, message", [
    ("1404-12-30", "not a Jalali date"),  # 1404 is no leap year
    ("1405-07-31", "not a Jalali date"),  # the second half-year has 30-day months
    ("2026-02-30", "not a Gregorian date"),
    ("24.11.2026", "not a date"), ("", "not a date"),
])
def test_a_date_that_is_none_says_which_calendar_it_was_read_in(text, message):
    with pytest.raises(DateError, match=message):
        parse_date(text)


@pytest.mark.parametrize("text, first, last", [
    ("1405-09", dt.date(2026, 11, 22), dt.date(2026, 12, 21)),  # Azar 1405
    ("1403-12", dt.date(2025, 2, 19), dt.date(2025, 3, 20)),  # Esfand of a leap year: 30 days
    ("1404-12", dt.date(2026, 2, 20), dt.date(2026, 3, 20)),  # and of a common year: 29
    ("2026-02", dt.date(2026, 2, 1), dt.date(2026, 2, 28)),
    ("2026-12", dt.date(2026, 12, 1), dt.date(2026, 12, 31)),
])
def test_a_month_is_the_calendars_month(text, first, last):
    assert parse_month(text) == (first, last)


def test_a_month_that_is_none():
    for text in ("1405-13", "1405", "2026-00"):
        with pytest.raises(DateError, match="not a month"):
            parse_month(text)


def test_the_calendar_follows_the_locale_unless_configured():
    assert calendar_for("", "fa") == JALALI and calendar_for("", "en") == GREGORIAN
    assert calendar_for("gregorian", "fa") == GREGORIAN
    assert calendar_for("jalali", "en") == JALALI
    with pytest.raises(DateError, match="calendar must be one of"):
        calendar_for("hijri", "fa")


def starts(period: Period, interval: str) -> list[dt.date]:
    return [dt.datetime.fromtimestamp(t, period.tz).date()
            for t in period.interval_starts(interval)]


def test_jalali_weeks_start_on_saturday_gregorian_ones_on_monday():
    first, last = parse_month("1405-09")
    jalali_weeks = starts(Period(first, last, TEHRAN, JALALI), "week")
    assert jalali_weeks[0] == first
    assert {d.strftime("%A") for d in jalali_weeks[1:]} == {"Saturday"}
    assert len(jalali_weeks) == 5  # Sun 22 Nov, then the Saturdays 28 Nov .. 19 Dec
    gregorian_weeks = starts(Period(first, last, TEHRAN, GREGORIAN), "week")
    assert {d.strftime("%A") for d in gregorian_weeks[1:]} == {"Monday"}


def test_months_are_the_calendars_months():
    period = Period(dt.date(2026, 11, 1), dt.date(2026, 12, 31), TEHRAN, JALALI)
    assert starts(period, "month") == [dt.date(2026, 11, 1), dt.date(2026, 11, 22),
                                       dt.date(2026, 12, 22)]  # 1 Azar, 1 Dey
    period.calendar = GREGORIAN
    assert starts(period, "month") == [dt.date(2026, 11, 1), dt.date(2026, 12, 1)]


def test_a_jalali_timestamp_keeps_time_and_offset():
    assert jalali_timestamp("2026-11-24T10:00:00+03:30") == "1405-09-03T10:00:00+03:30"


# ------------------------------------------------------------------ the same calls
def boundary_calls(first: dt.date, last: dt.date) -> tuple[Calls, int]:
    """Two answered calls on every local day from the day before `first` to the day after
    `last`: at 00:00:00 and at 23:59:59 Tehran time. Returns them and how many are inside."""
    c, inside = Calls(), 0
    day = first - dt.timedelta(days=1)
    while day <= last + dt.timedelta(days=1):
        for moment in (dt.time(0, 0, 0), dt.time(23, 59, 59)):
            ts = dt.datetime.combine(day, moment, TEHRAN).timestamp()
            c.answered(f"{day}-{moment.hour}", "support", "A", ts, wait=5, talk=30)
            inside += first <= day <= last
        day += dt.timedelta(days=1)
    return c, inside


def tehran(calendar: str = "") -> Config:
    return Config(report=ReportConfig(timezone="Asia/Tehran", locale="fa", calendar=calendar))


@pytest.mark.parametrize("jalali_from, jalali_to, gregorian_from, gregorian_to", [
    ("1405-09-01", "1405-09-30", "2026-11-22", "2026-12-21"),  # a Jalali month (Azar)
    ("1405-09-08", "1405-09-14", "2026-11-29", "2026-12-05"),  # a Saturday-start week
    ("1404-12-29", "1405-01-01", "2026-03-20", "2026-03-21"),  # Nowruz: the year boundary
    ("1403-12-29", "1404-01-02", "2025-03-19", "2025-03-22"),  # around Esfand 30, leap year
])
async def test_a_jalali_period_selects_exactly_the_calls_of_its_gregorian_days(
        store, jalali_from, jalali_to, gregorian_from, gregorian_to):
    first, last = parse_date(jalali_from), parse_date(jalali_to)
    assert (first, last) == (dt.date.fromisoformat(gregorian_from),
                             dt.date.fromisoformat(gregorian_to))
    calls, inside = boundary_calls(first, last)
    await calls.store_in(store)
    jalali = await refresh_and_build(store, tehran(), first, last, interval="day")
    gregorian = await refresh_and_build(store, tehran("gregorian"), first, last, interval="day")
    assert jalali["totals"]["offered"] == jalali["totals"]["answered"] == inside
    assert jalali["totals"] == gregorian["totals"]
    assert [row["offered"] for row in jalali["intervals"]] == [2] * ((last - first).days + 1)
    assert jalali["period"]["from_jalali"] == jalali_from
    assert jalali["period"]["to_jalali"] == jalali_to
    assert jalali["intervals"][0]["start_jalali"] == jalali_from + "T00:00:00+03:30"
    assert "from_jalali" not in gregorian["period"]


async def test_week_intervals_of_a_jalali_month_split_on_saturdays(store):
    first, last = parse_month("1405-09")
    calls, inside = boundary_calls(first, last)
    await calls.store_in(store)
    report = await refresh_and_build(store, tehran(), first, last, interval="week")
    weeks = report["intervals"]
    assert [w["start_jalali"][:10] for w in weeks] == [
        "1405-09-01", "1405-09-07", "1405-09-14", "1405-09-21", "1405-09-28"]
    assert all(dt.date.fromisoformat(w["start"][:10]).weekday() == 5 for w in weeks[1:])
    assert sum(w["offered"] for w in weeks) == inside
    months = await refresh_and_build(store, tehran(), first - dt.timedelta(days=1), last,
                                interval="month")
    assert [m["start_jalali"][:10] for m in months["intervals"]] == ["1405-08-30", "1405-09-01"]
    assert [m["offered"] for m in months["intervals"]] == [2, inside]
