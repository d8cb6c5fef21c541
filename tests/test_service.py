"""`tail`, `listen` and `agi` are run the same way (callkpi/service.py): the same log format,
the first SIGTERM logged, exit 0, and one `key=value` summary line of their counters."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from callkpi.service import summary_line
from callkpi.testing.fakeami import FakeAmi
from ports import accepts, free_port
from store_helpers import agi_spool, store_exists

CALLKPI = str(Path(sys.executable).parent / "callkpi")
SECRET = "service-test-secret"
SUMMARY = re.compile(r"^([a-z_]+=\d+(\.\d+)?)( [a-z_]+=\d+(\.\d+)?)*\n$")


@dataclass
class Counters:
    lines: int = 3
    rate: float = 0.5
    name: str = "not a counter"
    seen: list[int] = field(default_factory=list)


def test_the_summary_is_every_counter_in_field_order() -> None:
    assert summary_line(Counters()) == "lines=3 rate=0.5"


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    server = await FakeAmi(secret=SECRET).start()
    yield server
    await server.close()


async def started(command: list[str], ready: Callable[[], Awaitable[bool]],
                  env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        CALLKPI, *command, env={**os.environ, "CALLKPI_CONFIG": os.devnull, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not await ready():
        assert proc.returncode is None and time.monotonic() < deadline, "never became ready"
        await asyncio.sleep(0.05)
    return proc


@pytest.mark.parametrize("service", ["tail", "listen", "agi"])
async def test_every_service_stops_and_reports_the_same_way(service: str, tmp_path: Path,
                                                            make_store_url: Callable[..., str],
                                                            ami: FakeAmi) -> None:
    db, port = make_store_url(empty=True), free_port()
    commands = {
        "tail": ["tail", "--db", db, str(tmp_path / "queue_log")],
        "listen": ["listen", "--ami-port", str(ami.port), "--db", db],
        "agi": ["agi", "--port", str(port), "--db", db],
    }

    async def ready() -> bool:  # running, with its signal handlers in place
        if service == "listen":
            return any(client.logged_in for client in ami.clients)
        if service == "agi":
            return await accepts(port)
        return store_exists(db)  # tail opens its store once its handlers are in place

    _, env = agi_spool(db, tmp_path)
    proc = await started(commands[service], ready, {**env, "CALLKPI_AMI_SECRET": SECRET})
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert SUMMARY.match(out.decode()), out
    log = err.decode().splitlines()
    assert f"INFO callkpi: {service}: SIGTERM received, stopping" in log
    assert all(re.match(r"(INFO|WARNING|ERROR) [a-z_.]+: ", line) for line in log
               if not line.startswith("waiting for ")), log  # tail's note before logging
