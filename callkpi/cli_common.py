"""What every `callkpi` command shares: the config, `--db`, and running async work.

Package command modules (`*/commands.py`) import these; each command stays a thin shell over
a plain function of its package.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, TypeVar

import click

from callkpi.config import Config, ConfigError, load_config
from callkpi.store import Store, open_store

T = TypeVar("T")


def get_config(ctx: click.Context) -> Config:
    """The loaded config, read once per invocation (errors become one clear line)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "config" not in root.obj:
        try:
            root.obj["config"] = load_config(root.params.get("config_path"))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    config: Config = root.obj["config"]
    return config


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--db PATH|URL`: else $CALLKPI_DB, else the config's [store] db, else ./callkpi.db."""

    @click.option("--db", "db_path", type=click.Path(dir_okay=False),
                  help="The store: an SQLite file (a path or sqlite:///path) or"
                       " postgresql://user@host:port/dbname (default: $CALLKPI_DB, config,"
                       " ./callkpi.db).")
    @functools.wraps(command)
    def wrapper(*args: Any, db_path: str | None, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        config = get_config(ctx)
        if db_path:
            config.store.db = db_path
        return command(*args, **kwargs)

    return wrapper


def run(coro: Awaitable[T]) -> T:
    """Run a command's async body (a UserError it raises is translated by the root group)."""
    return asyncio.run(coro)  # type: ignore[arg-type]


async def open_configured_store(config: Config, *, create: bool = True) -> Store:
    return await open_store(config.store.db, create=create)
