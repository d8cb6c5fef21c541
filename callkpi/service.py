"""Running a service (`callkpi tail`, `listen`, `agi`) until SIGTERM or Ctrl-C.

Every service logs the same way (systemd's journal adds the time) and, once stopped, prints
one summary line of its counters as `key=value` pairs, so an admin reads and greps them the
same way for every service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from typing import Any, Awaitable, Callable, TypeVar

import click

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Stats = TypeVar("Stats")
log = logging.getLogger("callkpi")


def summary_line(stats: Any) -> str:
    """`name=value` for every counter (int or float field) of a stats dataclass, in field
    order."""
    return " ".join(f"{f.name}={getattr(stats, f.name)}" for f in dataclasses.fields(stats)
                    if isinstance(getattr(stats, f.name), (int, float)))


def log_to_stderr() -> None:
    """callkpi's log lines on stderr, in the one format every command uses."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def run_until_signalled(name: str, serve: Callable[[asyncio.Event], Awaitable[Stats]]) -> Stats:
    """Run `serve(stop)` with `stop` set by the first SIGTERM or SIGINT (set already if one
    came while the service was starting); then print its stats' summary line."""
    log_to_stderr()
    stats = asyncio.run(_serve(name, serve))
    click.echo(summary_line(stats))
    return stats


async def _serve(name: str, serve: Callable[[asyncio.Event], Awaitable[Stats]]) -> Stats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: %s received, stopping", name, sig.name)
            stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping, sig)
    try:
        return await serve(stop)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
