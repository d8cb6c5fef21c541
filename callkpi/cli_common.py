"""What every `callkpi` command shares: the config, the option vocabulary, running async work.

Package command modules (`*/commands.py`) import these; each command stays a thin shell over
a plain function of its package. Options that mean the same thing are spelled the same way
everywhere because they come from one decorator here: `--db`, `--from`/`--to` (days, in
either calendar) and `--month`,
`--output`/`-o`, and ports (1-65535).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar, cast

import click

from callkpi.config import Config, load_config
from callkpi.dates import DateError, parse_date, parse_month
from callkpi.errors import UserError
from callkpi.store import Store, open_store

T = TypeVar("T")
Command = TypeVar("Command", bound=Callable[..., Any])

# A TCP port given on the command line (the config checks its own the same way).
PORT = click.IntRange(1, 65535)


class OutputError(UserError):
    """A file the user asked for cannot be written there."""


def get_config(ctx: click.Context) -> Config:
    """The loaded config, read once per invocation (a ConfigError is a UserError)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        root.obj["config"] = load_config(root.params.get("config_path"))
    config: Config = root.obj["config"]
    return config


def db_option(command: Command) -> Command:
    """`--db PATH|URL`: else $CALLKPI_DB, else the config's [store] db, else ./callkpi.db."""

    @click.option("--db", "db_path", type=click.Path(dir_okay=False),
                  help="The store: an SQLite file (a path or sqlite:///path) or"
                       " postgresql://user@host:port/dbname (default: $CALLKPI_DB, config,"
                       " ./callkpi.db).")
    @functools.wraps(command)
    def wrapper(*args: Any, db_path: str | None, **kwargs: Any) -> Any:
        config = get_config(click.get_current_context())
        if db_path:
            config.store.db = db_path
        return command(*args, **kwargs)

    return cast(Command, wrapper)


def server_option(command: Command) -> Command:
    """`--server NAME`, repeatable: only these servers ([server] name of each PBX writing to
    the store); else [report] servers, else every server."""

    @click.option("--server", "servers", multiple=True, metavar="NAME",
                  help="Only this server (a PBX's [server] name); repeat for several "
                       "(default: [report] servers, else every server in the store).")
    @functools.wraps(command)
    def wrapper(*args: Any, servers: tuple[str, ...], **kwargs: Any) -> Any:
        config = get_config(click.get_current_context())
        if servers:
            config.report.servers = list(servers)
        return command(*args, **kwargs)

    return cast(Command, wrapper)


class DateParam(click.ParamType):
    """A day: YYYY-MM-DD, Gregorian or Jalali (a year below 1700), Persian digits accepted."""

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
    """A month: YYYY-MM, Gregorian or Jalali; converts to its (first day, last day)."""

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


def date_range_options(*, required: bool, month: bool = False) -> Callable[[Command], Command]:
    """`--from DATE --to DATE`: a period of whole days, both included, passed to the command
    as `start` and `end` (None when not given and not required). With `month`, `--month
    YYYY-MM` may stand for both (and `required` asks for one or the other)."""

    def decorate(command: Command) -> Command:
        if month:
            command = _month_or_range(command, required)
            command = click.option("--month", type=MONTH,
                                   help="A whole month instead of --from/--to: 2026-11, or "
                                   "Jalali 1405-09.")(command)
        command = click.option("--to", "end", type=DATE, required=required and not month,
                               help="Last day, included (YYYY-MM-DD, or Jalali "
                               "1405-09-30).")(command)
        return click.option("--from", "start", type=DATE, required=required and not month,
                            help="First day (YYYY-MM-DD, or Jalali 1405-09-01).")(command)

    return decorate


def _month_or_range(command: Command, required: bool) -> Command:
    @functools.wraps(command)
    def wrapper(*args: Any, start: dt.date | None, end: dt.date | None,
                month: tuple[dt.date, dt.date] | None, **kwargs: Any) -> Any:
        if month and (start or end):
            raise click.UsageError("give either --month or --from/--to, not both")
        if month:
            start, end = month
        elif required and (start is None or end is None):
            raise click.UsageError("give --from and --to, or --month")
        return command(*args, start=start, end=end, **kwargs)

    return cast(Command, wrapper)


def output_option(command: Command) -> Command:
    """`--output/-o FILE` (default: stdout), checked before any work is done: a report that
    takes a minute must not fail at its last step because the directory is missing."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            check_writable_file(value)
        return value

    return click.option("--output", "-o", type=click.Path(dir_okay=False), callback=check,
                        help="File (default: stdout).")(command)


def check_writable_file(path: str) -> None:
    """OutputError unless `path` can be created or replaced."""
    directory = Path(path).parent
    if not directory.is_dir():
        raise OutputError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputError(f"cannot write {path}: directory {directory} is not writable")


def write_output(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all: a reader (a web server, a mail job) never
    sees half a report, and a failure leaves the previous file as it was."""
    check_writable_file(path)
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        # the mode of any new file (0666 less the umask), as a plain write would make it
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's async body (a UserError it raises is translated by the root group)."""
    return asyncio.run(coro)


async def open_configured_store(config: Config, *, create: bool = False) -> Store:
    """The configured store. Only the commands that record events create it: a read of a
    mistyped --db says the database does not exist instead of reporting on an empty one."""
    return await open_store(config.store.db, create=create)
