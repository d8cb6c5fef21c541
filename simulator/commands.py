"""`callkpi sandbox ...` and `callkpi simulate`: thin shells over simulator.sandbox and
simulator.runner."""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import Any, Callable, TextIO

import click

from callkpi.cli_common import PORT, get_config
from simulator.sandbox import LISTENER_SECRET, TEST_SECRET, TEST_USER, Sandbox
from simulator.scenario import load_scenario
from simulator.runner import SimulationError, run_scenario
from simulator.truth import Truth


def _ports(command: Callable[..., Any]) -> Callable[..., Any]:
    """--ami-port/--agi-port, defaulting to the config's [ami] port and [agi] port, so
    `callkpi listen` and `callkpi agi` reach the sandbox as they are."""

    @click.option("--ami-port", type=PORT, help="AMI port (default: [ami] port of the config).")
    @click.option("--agi-port", type=PORT,
                  help="Port the dialplan's FastAGI survey calls (default: [agi] port).")
    @functools.wraps(command)
    def wrapper(*args: Any, ami_port: int | None, agi_port: int | None, **kwargs: Any) -> Any:
        config = get_config(click.get_current_context())
        box = Sandbox(ami_port=ami_port or config.ami.port, agi_port=agi_port or config.agi.port,
                      listener_secret=config.ami.secret or LISTENER_SECRET)
        return command(box, *args, **kwargs)

    return wrapper


@click.group()
def sandbox() -> None:
    """A real Asterisk in a chroot on loopback, for tests and the simulator (needs root).

    It runs with asterisk_conf/ plus the simulator's test layer. The chroot and its .deb
    cache live in /var/tmp/callkpi ($CALLKPI_SANDBOX_ROOT, $CALLKPI_SANDBOX_CACHE)."""


@sandbox.command()
@_ports
def install(box: Sandbox) -> None:
    """Install Asterisk into the chroot (cached; instant when already installed)."""
    box.install()
    click.echo(f"installed in {box.root}")


@sandbox.command()
@_ports
def start(box: Sandbox) -> None:
    """Start Asterisk; returns once AMI answers."""
    box.start()
    click.echo(f"running: AMI {box.ami_host}:{box.ami_port} (users {box.listener_user}, "
               f"{box.ami_user}), FastAGI survey -> {box.agi_host}:{box.agi_port}")


@sandbox.command()
@_ports
def stop(box: Sandbox) -> None:
    """Stop the Asterisk the sandbox started."""
    box.stop()
    click.echo("stopped")


@sandbox.command()
@_ports
def status(box: Sandbox) -> None:
    """Is it running? Version, uptime, channels and queues when it is."""
    running, text = box.status()
    click.echo(text)
    if not running:
        raise SystemExit(3)


@sandbox.command()
@_ports
def paths(box: Sandbox) -> None:
    """Where the queue_log, the logs and the rendered configuration are."""
    for key, value in box.paths().items():
        click.echo(f"{key}={value}")


@click.command()
@click.argument("scenario")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Write the ground truth JSON here.")
@click.option("--ami-host", help="Default: [ami] host of the config.")
@click.option("--ami-port", type=PORT, help="Default: [ami] port of the config.")
@click.option("--ami-user", default=TEST_USER, show_default=True,
              help="An AMI user allowed to originate (the config's listener account is not).")
@click.option("--ami-secret", envvar="CALLKPI_SIMULATE_AMI_SECRET", default=TEST_SECRET,
              show_default="the sandbox's test secret", help="Or $CALLKPI_SIMULATE_AMI_SECRET.")
@click.option("--capture", type=click.File("w"), help="Also write the raw AMI text received here.")
@click.pass_context
def simulate(ctx: click.Context, scenario: str, out_path: str, ami_host: str | None,
             ami_port: int | None, ami_user: str, ami_secret: str,
             capture: TextIO | None) -> None:
    """Drive SCENARIO (a TOML file, or `smoke`/`busy`) through a real Asterisk over AMI and
    write what really happened (the ground truth) to --out."""
    config = get_config(ctx)
    truth = asyncio.run(run_scenario(load_scenario(scenario), ami_host or config.ami.host,
                                     ami_port or config.ami.port, ami_user, ami_secret,
                                     capture=capture))
    truth.write(out_path)
    click.echo(summary(truth))
    if not truth.complete:
        raise SimulationError("; ".join(truth.problems))


def summary(truth: Truth) -> str:
    outcomes = collections.Counter(c.outcome for c in truth.calls)
    return (f"{len(truth.calls)} calls: "
            + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
            + f"; AMI {truth.ami.events} events, {truth.ami.events_per_s_avg}/s average,"
            f" {truth.ami.events_per_s_peak}/s peak")
