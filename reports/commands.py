"""`callkpi report`, `callkpi agents ...` and `callkpi facts`: thin shells over reports.*."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from callkpi.cli_common import db_option, get_config, open_configured_store, run
from callkpi.config import Config
from reports import roster
from reports.facts import FactsResult, refresh_facts
from reports.kpis import INTERVALS, ReportError, build_report, check_request
from reports.render_csv import TABLES


class DateParam(click.ParamType):
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


DATE = DateParam()


# ------------------------------------------------------------------------------ report
@click.command()
@click.option("--from", "start", type=DATE, required=True, help="First day (YYYY-MM-DD).")
@click.option("--to", "end", type=DATE, required=True, help="Last day, included.")
@click.option("--queue", help="Only this queue.")
@click.option("--interval", type=click.Choice(INTERVALS), default="day", show_default=True,
              help="Length of the report's intervals (local time).")
@click.option("--format", "fmt", type=click.Choice(["html", "json", "csv"]), default="json",
              show_default=True)
@click.option("--csv-table", type=click.Choice(TABLES), default="queues", show_default=True,
              help="With --format csv: one row per queue, agent or interval.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@db_option
@click.pass_context
def report(ctx: click.Context, start: dt.date, end: dt.date, queue: str | None, interval: str,
           fmt: str, csv_table: str, output: str | None) -> None:
    """KPIs of the days --from..--to (in [report] timezone) as HTML, JSON or CSV."""
    config = get_config(ctx)
    data = run(_report(config, start, end, queue, interval))
    text = render(data, fmt, csv_table, config)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


async def _report(config: Config, start: dt.date, end: dt.date, queue: str | None,
                  interval: str) -> dict[str, Any]:
    try:
        check_request(config, start, end, interval)
        _require_database(config)
        store = await open_configured_store(config)
        async with store:
            return await build_report(store, config, start, end, queue, interval)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None


def render(report_data: dict[str, Any], fmt: str, csv_table: str = "queues",
           config: Config | None = None) -> str:
    if fmt == "html":
        from reports.render_html import render_html  # matplotlib: only when asked for

        report_config = (config or Config()).report
        return render_html(report_data, title=report_config.title,
                           targets=report_config.targets)
    if fmt == "csv":
        from reports.render_csv import render_csv

        return render_csv(report_data, csv_table)
    from reports.render_json import render_json

    return render_json(report_data)


def _require_database(config: Config) -> None:
    """A report of a mistyped --db would be a report of nothing: say so instead."""
    if not Path(config.store.db).exists():
        raise click.ClickException(f"database {config.store.db} does not exist"
                                   " (ingest or listen first, or check --db)")


# ------------------------------------------------------------------------------- facts
@click.command()
@click.option("--rebuild", is_flag=True, help="Derive every fact again from all events.")
@db_option
@click.pass_context
def facts(ctx: click.Context, rebuild: bool) -> None:
    """Bring the per-call facts up to date with the events (reports do this first)."""
    config = get_config(ctx)
    result = run(_facts(config, rebuild))
    if result.since is None and not rebuild and result.calls == 0 and result.events == 0:
        click.echo("facts: up to date")
    else:
        click.echo(f"facts: {result.events} events read, {result.calls} queue calls derived")


async def _facts(config: Config, rebuild: bool) -> FactsResult:
    _require_database(config)
    store = await open_configured_store(config)
    async with store:
        return await refresh_facts(store, config.kpi, rebuild=rebuild)


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
    click.echo(_roster(ctx, roster.correct_hire if correct else roster.add_agent, name, hired))


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
    count = _roster(ctx, roster.import_csv, path)
    click.echo(f"imported {count} agents")


def _roster(ctx: click.Context, action: Any, *args: Any) -> Any:
    config = get_config(ctx)

    async def body() -> Any:
        store = await open_configured_store(config)
        async with store:
            try:
                return await action(store, *args)
            except roster.RosterError as exc:
                raise click.ClickException(str(exc)) from None

    return run(body())
