"""The report's calendar: Gregorian or Jalali (the Iranian solar hijri calendar).

Everything about days is here: parsing the dates a user types, a report's period and its
interval starts (weeks start on Saturday in the Jalali calendar and on Monday in the Gregorian
one; months are the calendar's months), and the Jalali labels added beside the Gregorian ISO
dates of the JSON. Jalali conversion is jdatetime's; no calendar arithmetic is written here.

A typed date is unambiguous whatever the calendar in force: Jalali years are below 1700 (today
about 1405), Gregorian ones above (today 2026), so `1405-09-01` is a Jalali date and
`2026-11-22` a Gregorian one, and both are the same day. Persian digits are accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import jdatetime

from callkpi.errors import UserError
GREGORIAN, JALALI = "gregorian", "jalali"
CALENDARS = (GREGORIAN, JALALI)
INTERVALS = ("hour", "day", "week", "month")
JALALI_YEARS_BELOW = 1700  # a typed year below this is a Jalali year
MONDAY, SATURDAY = 0, 5
WEEK_START = {GREGORIAN: MONDAY, JALALI: SATURDAY}
WEEKEND = {GREGORIAN: (5, 6), JALALI: (4,)}  # Saturday and Sunday; Friday (Iran)
DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_MONTH = re.compile(r"(\d{4})-(\d{1,2})")


class DateError(UserError):
    """A typed date or month that is not one; the message says what was expected."""


def calendar_for(calendar: str, locale: str) -> str:
    """The calendar in force: the one configured, else Jalali for Persian, else Gregorian."""
    if calendar:
        if calendar not in CALENDARS:
            raise DateError(f"calendar must be one of {', '.join(CALENDARS)}, not {calendar!r}")
        return calendar
    return JALALI if locale == "fa" else GREGORIAN


def parse_date(text: str) -> dt.date:
    """`YYYY-MM-DD`, Jalali when the year is below 1700, as the Gregorian day it is."""
    found = _DATE.fullmatch(text.strip().translate(DIGITS))
    if found is None:
        raise DateError(f"{text!r} is not a date (YYYY-MM-DD, Gregorian or Jalali)")
    year, month, day = (int(part) for part in found.groups())
    try:
        if year < JALALI_YEARS_BELOW:
            return jdatetime.date(year, month, day).togregorian()
        return dt.date(year, month, day)
    except ValueError:
        kind = "Jalali" if year < JALALI_YEARS_BELOW else "Gregorian"
        raise DateError(f"{text!r} is not a {kind} date") from None


def parse_month(text: str) -> tuple[dt.date, dt.date]:
    """`YYYY-MM` (Jalali when the year is below 1700): its first and last Gregorian day."""
    found = _MONTH.fullmatch(text.strip().translate(DIGITS))
    if found is None or not 1 <= int(found.group(2)) <= 12:
        raise DateError(f"{text!r} is not a month (YYYY-MM, Gregorian or Jalali)")
    year, month = (int(part) for part in found.groups())
    if year < JALALI_YEARS_BELOW:
        first = jdatetime.date(year, month, 1)
        following = jdatetime.date(year + month // 12, month % 12 + 1, 1)
        return first.togregorian(), following.togregorian() - dt.timedelta(days=1)
    following_g = dt.date(year + month // 12, month % 12 + 1, 1)
    return dt.date(year, month, 1), following_g - dt.timedelta(days=1)


def jalali(day: dt.date) -> jdatetime.date:
    return jdatetime.date.fromgregorian(date=day)


def jalali_iso(day: dt.date) -> str:
    return jalali(day).isoformat()


def starts_month(day: dt.date, calendar: str) -> bool:
    return (jalali(day).day if calendar == JALALI else day.day) == 1


def is_weekend(day: dt.date, calendar: str) -> bool:
    return day.weekday() in WEEKEND[calendar]


@dataclass
class Period:
    """The report's days, start..end inclusive, as local midnights in the report's zone."""

    start: dt.date
    end: dt.date
    tz: ZoneInfo
    calendar: str = GREGORIAN

    @property
    def start_ts(self) -> int:
        return _local_midnight(self.start, self.tz)

    @property
    def end_ts(self) -> int:
        return _local_midnight(self.end + dt.timedelta(days=1), self.tz)

    def previous(self) -> "Period":
        days = (self.end - self.start).days + 1
        return Period(self.start - dt.timedelta(days=days), self.start - dt.timedelta(days=1),
                      self.tz, self.calendar)

    def interval_starts(self, interval: str) -> list[int]:
        """Epoch starts of the local hours / days / weeks / months of the period; the first
        interval starts with the period, the others on the calendar's week or month start."""
        if interval == "hour":  # local hours are UTC hours shifted by a whole offset
            return list(range(self.start_ts, self.end_ts, 3600))
        days = [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]
        if interval == "week":
            days = [d for d in days
                    if d == self.start or d.weekday() == WEEK_START[self.calendar]]
        elif interval == "month":
            days = [d for d in days if d == self.start or starts_month(d, self.calendar)]
        return [_local_midnight(d, self.tz) for d in days]

    def iso(self, ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, self.tz).isoformat()


def _local_midnight(day: dt.date, tz: ZoneInfo) -> int:
    return int(dt.datetime.combine(day, dt.time(0), tz).timestamp())


def add_calendar_labels(report: dict[str, Any]) -> dict[str, Any]:
    """Beside each Gregorian date of a Jalali report, the same day in Jalali: `from_jalali`,
    `to_jalali` in `period`, `start_jalali` in each interval and staffing row (the ISO
    timestamp with its date part in Jalali: `1405-09-03T10:00:00+03:30`). A Gregorian report
    is left as it is."""
    period = report["period"]
    if period.get("calendar") != JALALI:
        return report
    period["from_jalali"] = jalali_iso(dt.date.fromisoformat(period["from"]))
    period["to_jalali"] = jalali_iso(dt.date.fromisoformat(period["to"]))
    for row in [*report.get("intervals", ()), *report.get("staffing", ())]:
        row["start_jalali"] = jalali_timestamp(row["start"])
    return report


def jalali_timestamp(iso: str) -> str:
    """An ISO 8601 timestamp with its date part as the Jalali date of that day."""
    moment = dt.datetime.fromisoformat(iso)
    return jalali_iso(moment.date()) + iso[10:]
