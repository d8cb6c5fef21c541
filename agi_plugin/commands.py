"""`callkpi agi`: the post-call survey's FastAGI server (a thin shell over `server.serve`)."""

from __future__ import annotations

import functools

import click

from agi_plugin.server import serve
from callkpi.cli_common import PORT, db_option, get_config
from callkpi.service import run_until_signalled


@click.command()
@click.option("--bind", help="Address to listen on (default: config [agi] bind, 127.0.0.1).")
@click.option("--port", type=PORT, help="Port (default: config [agi] port, 4573).")
@click.option("--allow", multiple=True, metavar="IP|CIDR",
              help="Accept connections only from here (repeatable; default: config [agi] "
              "allow). Required with a non-loopback --bind.")
@db_option
@click.pass_context
def agi(ctx: click.Context, bind: str | None, port: int | None, allow: tuple[str, ...]) -> None:
    """Serve the post-call survey over FastAGI and store each answer (until SIGTERM)."""
    config = get_config(ctx)
    config.agi.bind = bind or config.agi.bind
    config.agi.port = config.agi.port if port is None else port
    config.agi.allow = list(allow) or config.agi.allow
    run_until_signalled("agi", functools.partial(serve, config))
