"""`callkpi listen`: the live AMI listener (a thin shell over `listener.listen`)."""

from __future__ import annotations

import functools

import click

from ami_listener.listener import listen as listen_until
from callkpi.cli_common import PORT, db_option, get_config
from callkpi.config import ConfigError
from callkpi.service import run_until_signalled


@click.command()
@click.option("--ami-host", help="AMI host (default: config [ami] host).")
@click.option("--ami-port", type=PORT, help="AMI port (default: config [ami] port).")
@click.option("--ami-user", help="AMI username (default: config [ami] username).")
@click.option("--ami-secret", help="AMI secret; prefer CALLKPI_AMI_SECRET or the config file, "
              "a command-line secret is visible to every local user.")
@db_option
@click.pass_context
def listen(ctx: click.Context, ami_host: str | None, ami_port: int | None,
           ami_user: str | None, ami_secret: str | None) -> None:
    """Listen to Asterisk's AMI and store queue events as they happen (until SIGTERM)."""
    config = get_config(ctx)
    ami = config.ami
    ami.host = ami_host or ami.host
    ami.port = ami_port or ami.port
    ami.username = ami_user or ami.username
    ami.secret = ami_secret or ami.secret
    if not ami.secret:
        raise ConfigError("no AMI secret: set [ami] secret in the config or CALLKPI_AMI_SECRET")
    run_until_signalled("listen", functools.partial(listen_until, config))
