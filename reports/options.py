"""Command-line options that `report` and `email` share: dates typed in either calendar,
`--month`, and the report's language (`--locale`, `--calendar`)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Callable

import click

from callkpi.cli_common import get_config
from reports.calendar import CALENDARS, DateError, parse_date, parse_month
from reports.i18n import LOCALES


class DateParam(click.ParamType):
    """YYYY-MM-DD, Gregorian or Jalali (a year below 1700), Persian digits accepted."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return parse_date(value)
        except DateError as exc:
            self.fail(str(exc), param, ctx)


class MonthParam(click.ParamType):
    """YYYY-MM, Gregorian or Jalali: (first day, last day)."""

    name = "MONTH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[dt.date, dt.date]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_month(value)
        except DateError as exc:
            self.fail(str(exc), param, ctx)


DATE = DateParam()
MONTH = MonthParam()


def month_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--month", type=MONTH,
                        help="A whole month instead of --from/--to: 2026-11, or Jalali "
                        "1405-09.")(command)


def language_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--locale` and `--calendar`, overriding [report] locale and calendar."""

    @click.option("--calendar", type=click.Choice(CALENDARS),
                  help="Dates shown, weeks and months in this calendar (default: [report] "
                  "calendar, else jalali with --locale fa, else gregorian).")
    @click.option("--locale", type=click.Choice(LOCALES),
                  help="Language of the HTML, the mail and CSV headers (default: [report] "
                  "locale, else en).")
    @functools.wraps(command)
    def wrapper(*args: Any, locale: str | None, calendar: str | None, **kwargs: Any) -> Any:
        report = get_config(click.get_current_context()).report
        if locale:
            report.locale = locale
        if calendar:
            report.calendar = calendar
        return command(*args, **kwargs)

    return wrapper


def period(start: dt.date | None, end: dt.date | None,
           month: tuple[dt.date, dt.date] | None, *, end_name: str = "--to"
           ) -> tuple[dt.date, dt.date]:
    """The days asked for: --month, or --from with its end option."""
    if month and (start or end):
        raise click.UsageError(f"give either --month or --from/{end_name}, not both")
    if month:
        return month
    if start is None or end is None:
        raise click.UsageError(f"give --from and {end_name}, or --month")
    return start, end
