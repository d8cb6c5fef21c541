"""`callkpi email`: the daily report by e-mail (a thin shell over `mailer.send_report`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from callkpi.cli_common import (
    DATE,
    MONTH,
    check_writable_file,
    db_option,
    get_config,
    open_configured_store,
    run,
    server_option,
)
from callkpi.config import Config, ConfigError
from reports.i18n import Lang, lang as get_lang
from reports.kpis import refresh, report_timezone
from reports.mailer import BEING_SENT, SENT_NOW, Outcome, send_report, write_report_eml
from reports.notices import day_in_text, in_text
from reports.options import language_options
from reports.scope import require_servers


class DayOrAddress(click.ParamType):
    """`--to`: the last day of the range, or, in the spelling before `--recipient` existed
    (kept for one release), a recipient's address."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> dt.date | str:
        if isinstance(value, str) and "@" in value:
            return value
        return DATE.convert(value, param, ctx)


@click.command()
@click.option("--yesterday", is_flag=True, help="Yesterday in [report] timezone.")
# --from/--to as cli_common.date_range_options spells them; declared here for one release,
# while --to also takes the address of the old `--to ADDRESS`
@click.option("--from", "start", type=DATE,
              help="First day (YYYY-MM-DD): one mail per day up to --to (catching up).")
@click.option("--to", "to", type=DayOrAddress(), multiple=True,
              help="Last day, included (YYYY-MM-DD).")
@click.option("--month", type=MONTH,
              help="Each day of a month: 2026-11, or Jalali 1405-09.")
@click.option("--recipient", "recipients", multiple=True, metavar="ADDRESS",
              envvar="CALLKPI_EMAIL_TO",
              help="Recipient address; repeat for more (default: $CALLKPI_EMAIL_TO, "
              "space-separated).")
# the spellings of 0.1, kept for one release: --from DAY --to DAY, and --to DAY
@click.option("--date", "day", type=DATE, hidden=True)
@click.option("--until", "until", type=DATE, hidden=True)
@click.option("--force", is_flag=True, help="Send even if this day was already sent to them, "
              "or an earlier run stopped while sending it.")
@click.option("--dry-run", is_flag=True,
              help="Write callkpi-report-DAY.eml in the current directory instead of sending.")
@language_options
@server_option
@db_option
@click.pass_context
def email(ctx: click.Context, yesterday: bool, start: dt.date | None,
          to: tuple[dt.date | str, ...], month: tuple[dt.date, dt.date] | None,
          recipients: tuple[str, ...], day: dt.date | None, until: dt.date | None,
          force: bool, dry_run: bool) -> None:
    """E-mail the report of a day (or of each day of a range) over SMTP ([smtp] in the config).

    A day already sent to the same recipients is skipped, so a catch-up run over a range
    sends only what is missing. A failed send exits non-zero and says why.
    """
    config = get_config(ctx)
    end, old_recipients = split_to(to)
    start, end = old_spellings(start, end, day, until)
    if month:  # a month is a range: one mail per day
        if start or end:
            raise click.UsageError("give either --month or --from/--to, not both")
        start, end = month
    recipients = (*recipients, *old_recipients)
    days = pick_days(config, yesterday, start, end)
    check_recipients(recipients)
    if dry_run:  # before the first report is built
        check_writable_file(str(Path.cwd() / f"callkpi-report-{days[0]}.eml"))
    run(email_days(config, days, recipients, force, dry_run))


def split_to(to: Sequence[dt.date | str]) -> tuple[dt.date | None, list[str]]:
    """--to values: at most one day, and the addresses of the old `--to ADDRESS` spelling."""
    days = [value for value in to if isinstance(value, dt.date)]
    addresses = [value for value in to if isinstance(value, str)]
    if len(days) > 1:
        raise click.UsageError("--to DAY given more than once")
    if addresses:
        _deprecated("--to ADDRESS", "--recipient ADDRESS")
    return (days[0] if days else None), addresses


def old_spellings(start: dt.date | None, end: dt.date | None, day: dt.date | None,
                  until: dt.date | None) -> tuple[dt.date | None, dt.date | None]:
    """`--date DAY` and `--until DAY` as the --from/--to they were renamed to."""
    if until is not None:
        _deprecated("--until DAY", "--to DAY")
        if end is not None:
            raise click.UsageError("give --to or --until, not both")
        end = until
    if day is not None:
        _deprecated("--date DAY", "--from DAY --to DAY")
        if start is not None or end is not None:
            raise click.UsageError("give one of --yesterday, --from DAY --to DAY")
        start = end = day
    return start, end


def _deprecated(old: str, new: str) -> None:
    lang = manager_lang(get_config(click.get_current_context()))
    text = lang.gettext("%(old)s is now %(new)s; the old spelling goes in the next release",
                        old=in_text(old, lang), new=in_text(new, lang))
    click.echo(lang.gettext("Warning: %(text)s", text=text), err=True)


def manager_lang(config: Config) -> Lang:
    """The language of the command's messages: the report's ([report] locale, --locale)."""
    return get_lang(config.report.locale, config.report.calendar)


async def email_days(config: Config, days: Sequence[dt.date], recipients: Sequence[str],
                     force: bool, dry_run: bool) -> None:
    lang = manager_lang(config)
    store = await open_configured_store(config, create=False)
    async with store:
        await refresh(store, config)
        if config.report.servers:  # a mistyped --server would mail a report of nothing
            await require_servers(store, config.report.servers)
        for day in days:
            if dry_run:
                path = await write_report_eml(store, config, day, recipients, Path.cwd())
                click.echo(lang.gettext("%(day)s: wrote %(path)s", day=day_in_text(day, lang),
                                        path=in_text(path, lang)))
            else:
                say(day, recipients, await send_report(store, config, day, recipients,
                                                      force=force), lang)


def say(day: dt.date, recipients: Sequence[str], outcome: Outcome, lang: Lang) -> None:
    _ = lang.gettext
    shown = {"day": day_in_text(day, lang),
             "to": lang.comma.join(in_text(r, lang) for r in recipients)}
    if outcome.status == SENT_NOW:
        click.echo(_("%(day)s: sent to %(to)s", **shown))
        for recipient, reply in outcome.refused.items():
            click.echo(_("%(day)s: the relay refused %(recipient)s (%(reply)s); the others "
                         "got it", recipient=in_text(recipient, lang), reply=in_text(reply, lang),
                         day=shown["day"]), err=True)
    elif outcome.status == BEING_SENT:
        click.echo(_("%(day)s: being sent to %(to)s by another run (%(sender)s); not sent "
                     "again", sender=in_text(outcome.sender, lang), **shown))
    else:
        click.echo(_("%(day)s: already sent to %(to)s (%(force)s sends it again)",
                     force=in_text("--force", lang), **shown))


def pick_days(config: Config, yesterday: bool, start: dt.date | None, end: dt.date | None
              ) -> list[dt.date]:
    if yesterday == (start is not None) or (end is not None and start is None):
        raise click.UsageError("give one of --yesterday, --from DAY --to DAY, --month MONTH")
    if start is None:
        return [local_today(report_timezone(config.report.timezone)) - dt.timedelta(days=1)]
    if end is None:
        raise click.UsageError("--from needs --to (the last day)")
    if end < start:
        raise click.UsageError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def local_today(timezone: str) -> dt.date:
    try:
        return dt.datetime.now(ZoneInfo(timezone)).date()
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {timezone!r} in [report]") from None


def check_recipients(recipients: Sequence[str]) -> None:
    if not recipients:
        raise click.UsageError("no recipient: give --recipient ADDRESS or set CALLKPI_EMAIL_TO")
    for address in recipients:
        if "@" not in address or any(c.isspace() or c in ",;<>" for c in address):
            raise click.UsageError(f"not an e-mail address: {address!r}")
