"""The report's language options that `report` and `email` share (`--locale`, `--calendar`);
the days themselves are callkpi.cli_common's `--from/--to/--month`."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from callkpi.cli_common import get_config
from reports.calendar import CALENDARS
from reports.i18n import LOCALES


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
