"""`callkpi sandbox ...` and `callkpi simulate`: thin shells over simulator.sandbox and
simulator.runner."""

from __future__ import annotations

import asyncio
import collections
import functools
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

import click

from callkpi.cli_common import PORT, get_config
from simulator.controls import Controls
from simulator.sandbox import LISTENER_SECRET, TEST_SECRET, TEST_USER, Sandbox
from simulator.scenario import Scenario, load_scenario
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
@click.option("--listen-config", type=click.Path(exists=True, dir_okay=False),
              help="Run `callkpi --config PATH listen` during the scenario (its log: "
              "listen.log beside --out), so the timeline can kill it (listener-kill).")
@click.pass_context
def simulate(ctx: click.Context, scenario: str, out_path: str, ami_host: str | None,
             ami_port: int | None, ami_user: str, ami_secret: str,
             capture: TextIO | None, listen_config: str | None) -> None:
    """Drive SCENARIO (a TOML file, or `smoke`/`busy`) through a real Asterisk over AMI and
    write what really happened (the ground truth) to --out. A timeline `restart` or `crash`
    acts on the sandbox Asterisk (`callkpi sandbox`)."""
    config = get_config(ctx)
    port = ami_port or config.ami.port
    controls = Controls(sandbox=Sandbox(ami_port=port, agi_port=config.agi.port))
    if listen_config:
        controls.listen = [str(Path(sys.executable).parent / "callkpi"), "--config",
                           listen_config, "listen"]
        controls.listen_log = Path(out_path).parent / "listen.log"
    truth = asyncio.run(_simulate(load_scenario(scenario), ami_host or config.ami.host,
                                  port, ami_user, ami_secret, capture, controls))
    truth.write(out_path)
    click.echo(summary(truth))
    if not truth.complete:
        raise SimulationError("; ".join(truth.problems))


async def _simulate(scenario: Scenario, host: str, port: int, user: str, secret: str,
                    capture: TextIO | None, controls: Controls) -> Truth:
    if controls.listen:
        await controls.start_listener()
    try:
        return await run_scenario(scenario, host, port, user, secret, capture=capture,
                                  controls=controls)
    finally:
        await controls.stop_listener()


def summary(truth: Truth) -> str:
    outcomes = collections.Counter(c.outcome for c in truth.calls)
    return (f"{len(truth.calls)} calls: "
            + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
            + f"; AMI {truth.ami.events} events, {truth.ami.events_per_s_avg}/s average,"
            f" {truth.ami.events_per_s_peak}/s peak")
