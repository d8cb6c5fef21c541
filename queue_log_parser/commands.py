"""`callkpi ingest` and `callkpi tail`: thin shells over queue_log_parser.ingest."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Callable

import click

from callkpi.cli_common import db_option, get_config, open_configured_store, run
from callkpi.config import Config
from callkpi.store import Store
from queue_log_parser.ingest import IngestStats, LogFileError, ingest_paths, tail_path


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="Read every file from the start instead of resuming at its checkpoint.")
@db_option
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[str, ...], full: bool) -> None:
    """Store the events of queue_log files (plain or rotated .gz), resuming where the last
    run stopped; events already stored are skipped."""
    config = get_config(ctx)
    for path in paths:
        if not os.path.exists(path):
            raise click.ClickException(f"{path}: no such file")
    stats = run(ingest_with_progress(config, list(paths), full))
    click.echo(stats.summary())


async def ingest_with_progress(config: Config, paths: list[str], full: bool) -> IngestStats:
    store = await open_configured_store(config)
    async with store:
        if not sys.stderr.isatty():
            return await _ingest(store, config, paths, full, None)
        size = sum(os.path.getsize(p) for p in paths)
        with click.progressbar(length=size, label="ingesting", file=sys.stderr) as bar:
            return await _ingest(store, config, paths, full, bar.update)


async def _ingest(store: Store, config: Config, paths: list[str], full: bool,
                  progress: Callable[[int], None] | None) -> IngestStats:
    try:
        return await ingest_paths(store, paths, server=config.server.name,
                                  batch_lines=config.queue_log.batch_lines, full=full,
                                  progress=progress)
    except LogFileError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@db_option
@click.pass_context
def tail(ctx: click.Context, path: str | None) -> None:
    """Follow a queue_log (default: config [queue_log] path) through log rotations, storing
    events as Asterisk writes them, until SIGTERM or Ctrl-C."""
    config = get_config(ctx)
    path = path or config.queue_log.path
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise click.ClickException(f"{path}: no such directory")
    if not os.path.exists(path):
        click.echo(f"waiting for {path} to appear", err=True)
    stats = run(follow(config, path))
    click.echo(stats.summary())


async def follow(config: Config, path: str) -> IngestStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = await open_configured_store(config)
    async with store:
        try:
            return await tail_path(store, path, server=config.server.name,
                                   batch_lines=config.queue_log.batch_lines,
                                   poll_s=config.queue_log.poll_s, stop=stop)
        except LogFileError as exc:
            raise click.ClickException(str(exc)) from None
