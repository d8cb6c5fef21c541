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
from reports.mailer import (BEING_SENT, SENT_NOW, MailError, Outcome, send_report,
                            write_report_eml)


@click.command()
@click.option("--yesterday", is_flag=True, help="Yesterday in [report] timezone.")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="One day (YYYY-MM-DD).")
@click.option("--from", "first", type=click.DateTime(["%Y-%m-%d"]),
              help="First day of a range: one mail per day (catching up).")
@click.option("--until", "last", type=click.DateTime(["%Y-%m-%d"]),
              help="Last day of the range (inclusive).")
@click.option("--to", "recipients", multiple=True, envvar="CALLKPI_EMAIL_TO",
              help="Recipient address; repeat for more (default: $CALLKPI_EMAIL_TO, "
              "space-separated).")
@click.option("--force", is_flag=True, help="Send even if this day was already sent to them, "
              "or an earlier run stopped while sending it.")
@click.option("--dry-run", is_flag=True,
              help="Write callkpi-report-DAY.eml in the current directory instead of sending.")
@db_option
@click.pass_context
def email(ctx: click.Context, yesterday: bool, day: dt.datetime | None,
          first: dt.datetime | None, last: dt.datetime | None, recipients: tuple[str, ...],
          force: bool, dry_run: bool) -> None:
    """E-mail the report of a day (or of each day of a range) over SMTP ([smtp] in the config).

    A day already sent to the same recipients is skipped, so a catch-up run over a range
    sends only what is missing. A failed send exits non-zero and says why.
    """
    config = get_config(ctx)
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
            else:
                say(day, recipients, await send_report(store, config, day, recipients,
                                                      force=force))


def say(day: dt.date, recipients: Sequence[str], outcome: Outcome) -> None:
    to = ", ".join(recipients)
    if outcome.status == SENT_NOW:
        click.echo(f"{day}: sent to {to}")
        for recipient, reply in outcome.refused.items():
            click.echo(f"{day}: the relay refused {recipient} ({reply}); the others got it",
                       err=True)
    elif outcome.status == BEING_SENT:
        click.echo(f"{day}: being sent to {to} by another run ({outcome.sender}); "
                   "not sent again")
    else:
        click.echo(f"{day}: already sent to {to} (--force sends it again)")


def pick_days(config: Config, yesterday: bool, day: dt.datetime | None,
              first: dt.datetime | None, last: dt.datetime | None) -> list[dt.date]:
    chosen = [name for name, given in (("--yesterday", yesterday), ("--date", day),
                                        ("--from", first)) if given]
    if len(chosen) != 1 or (last and not first):
        raise click.UsageError("give one of --yesterday, --date DAY, --from DAY --until DAY")
    if yesterday:
        return [local_today(config.report.timezone) - dt.timedelta(days=1)]
    if day:
        return [day.date()]
    if last is None:
        raise click.UsageError("--from needs --until (the last day)")
    assert first is not None  # chosen above
    if last < first:
        raise click.UsageError(f"--until {last.date()} is before --from {first.date()}")
    return [first.date() + dt.timedelta(days=n) for n in range((last - first).days + 1)]


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
