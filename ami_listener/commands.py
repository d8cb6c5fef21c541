"""`callkpi listen`: the live AMI listener (a thin shell over `listener.listen`)."""

from __future__ import annotations

import logging

import click

from ami_listener.listener import listen as listen_forever
from ami_listener.manager import LoginError
from callkpi.cli_common import db_option, get_config, run

# systemd's unit sets RestartPreventExitStatus to this: a rejected login needs an admin.
EXIT_LOGIN_REJECTED = 78  # EX_CONFIG


class LoginRejected(click.ClickException):
    exit_code = EXIT_LOGIN_REJECTED


@click.command()
@click.option("--ami-host", help="AMI host (default: config [ami] host).")
@click.option("--ami-port", type=int, help="AMI port (default: config [ami] port).")
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
        raise click.ClickException(
            "no AMI secret: set [ami] secret in the config or CALLKPI_AMI_SECRET")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        stats = run(listen_forever(config))
    except LoginError as exc:
        raise LoginRejected(str(exc)) from None
    click.echo(stats.summary())
