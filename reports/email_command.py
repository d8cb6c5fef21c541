"""`callkpi email`: the daily report by e-mail (a thin shell over `mailer.send_report`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from callkpi.cli_common import db_option, get_config, open_configured_store, run
from callkpi.config import Config
from reports.kpis import ReportError
from reports.mailer import MailError, send_report, write_report_eml
from reports.options import DATE, language_options, month_option


@click.command()
@click.option("--yesterday", is_flag=True, help="Yesterday in [report] timezone.")
@click.option("--date", "day", type=DATE,
              help="One day (YYYY-MM-DD; a Jalali date such as 1405-09-03 too).")
@click.option("--from", "first", type=DATE,
              help="First day of a range: one mail per day (catching up).")
@click.option("--until", "last", type=DATE, help="Last day of the range (inclusive).")
@month_option
@click.option("--to", "recipients", multiple=True, envvar="CALLKPI_EMAIL_TO",
              help="Recipient address; repeat for more (default: $CALLKPI_EMAIL_TO, "
              "space-separated).")
@click.option("--force", is_flag=True, help="Send even if this day was already sent to them.")
@click.option("--dry-run", is_flag=True,
              help="Write callkpi-report-DAY.eml in the current directory instead of sending.")
@language_options
@db_option
@click.pass_context
def email(ctx: click.Context, yesterday: bool, day: dt.date | None, first: dt.date | None,
          last: dt.date | None, month: tuple[dt.date, dt.date] | None,
          recipients: tuple[str, ...], force: bool, dry_run: bool) -> None:
    """E-mail the report of a day (or of each day of a range) over SMTP ([smtp] in the config).

    A day already sent to the same recipients is skipped, so a catch-up run over a range
    sends only what is missing. A failed send exits non-zero and says why.
    """
    config = get_config(ctx)
    if month:  # a month is a range: one mail per day, like --from/--until
        if first or last:
            raise click.UsageError("give either --month or --from/--until, not both")
        first, last = month
    days = pick_days(config, yesterday, day, first, last)
    check_recipients(recipients)
    try:
        run(email_days(config, days, recipients, force, dry_run))
    except (MailError, ReportError) as exc:
        raise click.ClickException(str(exc)) from None


async def email_days(config: Config, days: Sequence[dt.date], recipients: Sequence[str],
                     force: bool, dry_run: bool) -> None:
    if not Path(config.store.db).is_file():  # a mistyped path would mail an empty report
        raise click.ClickException(f"database {config.store.db} does not exist")
    store = await open_configured_store(config)
    async with store:
        for day in days:
            if dry_run:
                path = await write_report_eml(store, config, day, recipients, Path.cwd())
                click.echo(f"{day}: wrote {path}")
            elif await send_report(store, config, day, recipients, force=force):
                click.echo(f"{day}: sent to {', '.join(recipients)}")
            else:
                click.echo(f"{day}: already sent to {', '.join(recipients)} "
                           "(--force sends it again)")


def pick_days(config: Config, yesterday: bool, day: dt.date | None,
              first: dt.date | None, last: dt.date | None) -> list[dt.date]:
    chosen = [name for name, given in (("--yesterday", yesterday), ("--date", day),
                                        ("--from", first)) if given]
    if len(chosen) != 1 or (last and not first):
        raise click.UsageError("give one of --yesterday, --date DAY, --from DAY --until DAY, "
                               "--month MONTH")
    if yesterday:
        return [local_today(config.report.timezone) - dt.timedelta(days=1)]
    if day:
        return [day]
    if last is None or first is None:
        raise click.UsageError("--from needs --until (the last day)")
    if last < first:
        raise click.UsageError(f"--until {last} is before --from {first}")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def local_today(timezone: str) -> dt.date:
    try:
        return dt.datetime.now(ZoneInfo(timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        raise click.ClickException(f"unknown time zone {timezone!r} in [report]") from None


def check_recipients(recipients: Sequence[str]) -> None:
    if not recipients:
        raise click.UsageError("no recipient: give --to ADDRESS or set CALLKPI_EMAIL_TO")
    for address in recipients:
        if "@" not in address or any(c.isspace() or c in ",;<>" for c in address):
            raise click.UsageError(f"not an e-mail address: {address!r}")
