"""The report's calendar: Gregorian or Jalali (the Iranian solar hijri calendar).

Everything about a report's days is here: its period and its
interval starts (weeks start on Saturday in the Jalali calendar and on Monday in the Gregorian
one; months are the calendar's months), and the Jalali labels added beside the Gregorian ISO
dates of the JSON (the dates a user types are callkpi.dates'). Jalali conversion is
jdatetime's; no calendar arithmetic is written here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import jdatetime

from callkpi.dates import DateError

GREGORIAN, JALALI = "gregorian", "jalali"
CALENDARS = (GREGORIAN, JALALI)
INTERVALS = ("hour", "day", "week", "month")
MONDAY, SATURDAY = 0, 5
WEEK_START = {GREGORIAN: MONDAY, JALALI: SATURDAY}
WEEKEND = {GREGORIAN: (5, 6), JALALI: (4,)}  # Saturday and Sunday; Friday (Iran)


def calendar_for(calendar: str, locale: str) -> str:
    """The calendar in force: the one configured, else Jalali for Persian, else Gregorian."""
    if calendar:
        if calendar not in CALENDARS:
            raise DateError(f"calendar must be one of {', '.join(CALENDARS)}, not {calendar!r}")
        return calendar
    return JALALI if locale == "fa" else GREGORIAN


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
        return local_midnight(self.start, self.tz)

    @property
    def end_ts(self) -> int:
        return local_midnight(self.end + dt.timedelta(days=1), self.tz)

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
        return [local_midnight(d, self.tz) for d in days]

    def iso(self, ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, self.tz).isoformat()


def local_midnight(day: dt.date, tz: ZoneInfo) -> int:
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
