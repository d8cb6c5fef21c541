"""The `callkpi` command line. Subcommands live beside the code they drive and load lazily,
so `callkpi ingest` never imports matplotlib and `callkpi --help` is instant."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from typing import TYPE_CHECKING, Callable

import click

from callkpi.cli_common import db_option, get_config, open_configured_store, run
from callkpi.config import Config
from callkpi.errors import UserError
from callkpi.store import StoreInfo, open_store

if TYPE_CHECKING:
    from callkpi.store_copy import CopyStats

LAZY_COMMANDS = {
    "ingest": "queue_log_parser.commands:ingest",
    "tail": "queue_log_parser.commands:tail",
    "listen": "ami_listener.commands:listen",
    "agi": "agi_plugin.commands:agi",
    "report": "reports.commands:report",
    "email": "reports.email_command:email",
    "agents": "reports.commands:agents",
    "facts": "reports.commands:facts",
    "sandbox": "simulator.commands:sandbox",
    "simulate": "simulator.commands:simulate",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> object:
        """Every command's UserError becomes one line and its exit code, here and only here."""
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)  # as click shows its own usage errors
            ctx.exit(exc.exit_code)


@click.group(cls=LazyGroup)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="CALLKPI_CONFIG", help="TOML config file (default: ./callkpi.toml, "
              "/etc/callkpi/callkpi.toml).")
@click.version_option(package_name="callkpi")
def cli(config_path: str | None) -> None:
    """Call-center KPIs from Asterisk: queue_log, AMI and a post-call survey."""


@cli.group()
def db() -> None:
    """The store."""


@db.command("info")
@db_option
@click.pass_context
def db_info(ctx: click.Context) -> None:
    """Show what the store holds."""
    config = get_config(ctx)
    info, interfaces = run(read_info(config))
    click.echo(format_info(info))
    if interfaces:
        click.echo(f"warning: agents named like member interfaces: {', '.join(interfaces)}"
                   f" (queues.conf log_membername_as_agent = no): name them in [agents] names"
                   f" or run `callkpi listen`, which learns them")


async def read_info(config: Config) -> tuple[StoreInfo, list[str]]:
    from reports.kpis import agents_like_interfaces  # the facts' view, loaded on demand

    store = await open_configured_store(config, create=False)
    async with store:
        return await store.info(), await agents_like_interfaces(store)


@db.command("copy")
@click.argument("src")
@click.argument("dst")
def db_copy(src: str, dst: str) -> None:
    """Copy the store SRC into DST, e.g. callkpi.db into postgresql://callkpi@db.example/kpi
    (the password from CALLKPI_STORE_PASSWORD, PGPASSWORD or ~/.pgpass). Stop the
    collectors first; an interrupted copy is finished by running it again."""
    stats = run(copy_stores(src, dst))
    if sys.stderr.isatty():
        click.echo(err=True)  # after the progress line
    click.echo(stats.summary())


async def copy_stores(src: str, dst: str) -> "CopyStats":
    from callkpi.store_copy import copy_store

    source = await open_store(src, create=False)
    async with source:
        target = await open_store(dst)
        async with target:
            return await copy_store(source, target, _copy_progress())


def _copy_progress() -> Callable[[str, int], None] | None:
    if not sys.stderr.isatty():
        return None
    done: dict[str, int] = {}

    def show(table: str, rows: int) -> None:
        done[table] = done.get(table, 0) + rows
        click.echo(f"\r{table}: {done[table]:,} rows copied", err=True,
                   nl=False)

    return show


def format_info(info: StoreInfo) -> str:
    lines = [
        f"database: {info.path} ({info.size_bytes / 1e6:.1f} MB, schema v{info.schema_version})",
        f"events: {info.events}  quarantined: {info.quarantined}",
    ]
    if info.first_ts is not None:
        lines.append(f"span: {_iso(info.first_ts)} .. {_iso(info.last_ts)}")
    for source, count in sorted(info.events_by_source.items()):
        lines.append(f"  source {source}: {count}")
    for kind, count in sorted(info.events_by_kind.items()):
        lines.append(f"  {kind}: {count}")
    for cp in info.checkpoints:
        lines.append(f"checkpoint {cp.stream}: offset {cp.offset}, line {cp.line_no},"
                     f" file {cp.file_id}, at {_iso(cp.updated_at)}")
    return "\n".join(lines)


def _iso(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds") if ts else "-"
