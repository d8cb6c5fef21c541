"""The days a user types, in either calendar: `YYYY-MM-DD` and `YYYY-MM`, Gregorian or Jalali
(the Iranian solar hijri calendar), with Latin or Persian digits.

A typed date is unambiguous whatever the calendar in force: Jalali years are below 1700 (today
about 1405), Gregorian ones above (today 2026), so `1405-09-01` is a Jalali date and
`2026-11-22` a Gregorian one, and both are the same day. Jalali conversion is jdatetime's.
"""

from __future__ import annotations

import datetime as dt
import re

import jdatetime

from callkpi.errors import UserError

JALALI_YEARS_BELOW = 1700  # a typed year below this is a Jalali year
DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_MONTH = re.compile(r"(\d{4})-(\d{1,2})")


class DateError(UserError):
    """A typed date or month that is not one; the message says what was expected."""


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
