"""`callkpi ingest` and `callkpi tail`: thin shells over queue_log_parser.ingest (and, for
survey answers in the spool's format, agi_plugin.spool)."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from pathlib import Path
from typing import Callable

import click

from agi_plugin.spool import SUFFIX, store_spool_files
from callkpi.cli_common import db_option, get_config, open_configured_store, run
from callkpi.config import Config
from callkpi.service import log_to_stderr, run_until_signalled
from callkpi.store import Store, WriteResult
from queue_log_parser.ingest import IngestStats, LogFileError, ingest_paths, tail_path


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True,
              help="Read every file from the start instead of resuming at its checkpoint.")
@db_option
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[str, ...], full: bool) -> None:
    """Store the events of queue_log files (plain or rotated .gz), resuming where the last
    run stopped, and the survey answers of *.jsonl files (the survey server's spool
    format); events already stored are skipped."""
    config = get_config(ctx)
    log_to_stderr()  # what the reading says about the files: a link resolved, a FIFO refused
    for path in paths:
        if not os.path.exists(path):
            raise LogFileError(f"{path}: no such file")
    answers = [path for path in paths if path.endswith(SUFFIX)]
    logs = [path for path in paths if not path.endswith(SUFFIX)]
    if logs:
        click.echo(run(ingest_with_progress(config, logs, full)).summary())
    if answers:
        stored = run(ingest_answers(config, answers))
        click.echo(f"survey answers stored {stored.stored}, duplicates skipped "
                   f"{stored.duplicates}, quarantined {stored.quarantined}")


async def ingest_with_progress(config: Config, paths: list[str], full: bool) -> IngestStats:
    store = await open_configured_store(config, create=True)
    async with store:
        if not sys.stderr.isatty():
            return await _ingest(store, config, paths, full, None)
        size = sum(os.path.getsize(p) for p in paths)
        with click.progressbar(length=size, label="ingesting", file=sys.stderr) as bar:
            return await _ingest(store, config, paths, full, bar.update)


async def ingest_answers(config: Config, paths: list[str]) -> WriteResult:
    store = await open_configured_store(config, create=True)
    async with store:
        try:
            return await store_spool_files(store, [Path(p) for p in paths],
                                           config.server.name)
        except OSError as exc:
            raise LogFileError(f"{exc.filename}: {exc.strerror}") from None


async def _ingest(store: Store, config: Config, paths: list[str], full: bool,
                  progress: Callable[[int], None] | None) -> IngestStats:
    return await ingest_paths(store, paths, server=config.server.name,
                              batch_lines=config.queue_log.batch_lines, full=full,
                              progress=progress)


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
        raise LogFileError(f"{path}: no such directory")
    if not os.path.exists(path):
        click.echo(f"waiting for {path} to appear", err=True)
    run_until_signalled("tail", functools.partial(follow, config, path))


async def follow(config: Config, path: str, stop: asyncio.Event) -> IngestStats:
    store = await open_configured_store(config, create=True)
    async with store:
        return await tail_path(store, path, server=config.server.name,
                               batch_lines=config.queue_log.batch_lines,
                               poll_s=config.queue_log.poll_s, stop=stop)
