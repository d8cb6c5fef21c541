"""`callkpi report`, `callkpi agents ...` and `callkpi facts`: thin shells over reports.*."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from callkpi.cli_common import (
    DATE,
    date_range_options,
    db_option,
    get_config,
    open_configured_store,
    output_option,
    run,
    server_option,
    write_output,
)
from callkpi.config import Config
from callkpi.queries.facts import known_queues, queue_seen
from callkpi.store import Store
from reports import roster
from reports.facts import FactsResult
from reports.i18n import lang as get_lang
from reports.kpis import INTERVALS, ReportError, build_report, check_request, refresh
from reports.notices import report_warnings, report_written
from reports.options import language_options
from reports.render_csv import TABLES
from reports.scope import require_servers


SHOWN_QUEUES = 20  # an unknown --queue lists the known ones: enough to spot a typo

# ------------------------------------------------------------------------------ report
@click.command()
@date_range_options(required=True, month=True)
@click.option("--queue", help="Only this queue.")
@click.option("--interval", type=click.Choice(INTERVALS), default="day", show_default=True,
              help="Length of the report's intervals (local time; weeks and months of the "
              "calendar).")
@click.option("--format", "fmt", type=click.Choice(["html", "json", "csv"]), default="json",
              show_default=True)
@click.option("--csv-table", type=click.Choice(TABLES), default="queues", show_default=True,
              help="With --format csv: one row per queue, agent or interval.")
@output_option
@language_options
@server_option
@db_option
@click.pass_context
def report(ctx: click.Context, start: dt.date, end: dt.date, queue: str | None,
           interval: str, fmt: str, csv_table: str, output: str | None) -> None:
    """KPIs of the days --from..--to, or of a --month (in [report] timezone) as HTML, JSON
    or CSV."""
    config = get_config(ctx)
    data = run(_report(config, start, end, queue, interval))
    text = render(data, fmt, csv_table, config)
    lang = get_lang(config.report.locale, data["period"]["calendar"])
    if output:
        write_output(output, text)
        click.echo(report_written(output, lang))
    else:
        click.echo(text, nl=False)
    for warning in report_warnings(data, lang):
        click.echo(warning, err=True)


async def _report(config: Config, start: dt.date, end: dt.date, queue: str | None,
                  interval: str) -> dict[str, Any]:
    check_request(config, start, end, interval)
    store = await open_configured_store(config, create=False)
    async with store:
        await refresh(store, config)
        if config.report.servers:
            await require_servers(store, config.report.servers)
        if queue is not None:
            await _require_queue(store, queue)
        return await build_report(store, config, start, end, queue, interval)


async def _require_queue(store: Store, queue: str) -> None:
    """A report of a mistyped queue would be a report of nothing: say so instead."""
    if not await queue_seen(store, queue):
        known = await known_queues(store)
        listed = ", ".join(known[:SHOWN_QUEUES]) or "none yet"
        if len(known) > SHOWN_QUEUES:
            listed += f" and {len(known) - SHOWN_QUEUES} more"
        raise ReportError(f"queue {queue!r} never appeared in the store (queues: {listed})")


def render(report_data: dict[str, Any], fmt: str, csv_table: str = "queues",
           config: Config | None = None) -> str:
    if fmt == "html":
        from reports.render_html import render_html  # matplotlib: only when asked for

        report_config = (config or Config()).report
        return render_html(report_data, title=report_config.title,
                           targets=report_config.targets, locale=report_config.locale)
    if fmt == "csv":
        from reports.render_csv import render_csv

        return render_csv(report_data, csv_table, (config or Config()).report.locale)
    from reports.render_json import render_json

    return render_json(report_data)


# ------------------------------------------------------------------------------- facts
@click.command()
@click.option("--rebuild", is_flag=True, help="Derive every fact again from all events.")
@db_option
@click.pass_context
def facts(ctx: click.Context, rebuild: bool) -> None:
    """Bring the per-call facts up to date with the events (report and email do this
    first)."""
    config = get_config(ctx)
    result = run(_facts(config, rebuild))
    if result.since is None and not rebuild and result.calls == 0 and result.events == 0:
        click.echo("facts: up to date")
    else:
        click.echo(f"facts: {result.events} events read, {result.calls} queue calls derived")


async def _facts(config: Config, rebuild: bool) -> FactsResult:
    store = await open_configured_store(config, create=False)
    async with store:
        return await refresh(store, config, rebuild=rebuild)


# ------------------------------------------------------------------------------ agents
@click.group()
def agents() -> None:
    """The agent roster (hire and leave dates, for attrition)."""


@agents.command("add")
@click.argument("name")
@click.option("--hired", type=DATE, required=True, help="Hire date (YYYY-MM-DD).")
@click.option("--correct", is_flag=True, help="Correct the hire date of NAME's latest "
              "employment instead of hiring.")
@db_option
@click.pass_context
def agents_add(ctx: click.Context, name: str, hired: dt.date, correct: bool) -> None:
    """Hire NAME (the name Asterisk logs): a first hire, or again after leaving."""
    click.echo(_roster(ctx, roster.correct_hire if correct else roster.add_agent, name, hired,
                       create=True))


@agents.command("leave")
@click.argument("name")
@click.option("--on", "left_on", type=DATE, required=True, help="Last day (YYYY-MM-DD).")
@click.option("--correct", is_flag=True, help="Correct the leaving date of NAME's latest "
              "employment.")
@db_option
@click.pass_context
def agents_leave(ctx: click.Context, name: str, left_on: dt.date, correct: bool) -> None:
    """Record that NAME left on a day (their last working day)."""
    click.echo(_roster(ctx, roster.correct_leave if correct else roster.leave_agent, name,
                       left_on))


@agents.command("list")
@db_option
@click.pass_context
def agents_list(ctx: click.Context) -> None:
    """Show the roster: one line per employment period."""
    for agent in _roster(ctx, roster.list_agents):
        left = agent.left_on.isoformat() if agent.left_on else "-"
        click.echo(f"{agent.name}\thired {agent.hired_on}\tleft {left}")


@agents.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@db_option
@click.pass_context
def agents_import(ctx: click.Context, path: str) -> None:
    """Import name,hired_on,left_on rows (one per employment) from a CSV file (all or
    nothing)."""
    count = _roster(ctx, roster.import_csv, path, create=True)
    click.echo(f"imported {count} agents")


def _roster(ctx: click.Context, action: Any, *args: Any, create: bool = False) -> Any:
    """Run a roster action on the store; only adding agents may create the store (a roster
    can come before the first call), reading or changing it needs one."""
    config = get_config(ctx)

    async def body() -> Any:
        store = await open_configured_store(config, create=create)
        async with store:
            return await action(store, *args)

    return run(body())
