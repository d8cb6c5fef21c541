"""Record what the AMI listener sees when it logs in while calls are in progress, and what an
Asterisk restart sends; the recordings beside this file were made with it (needs root and the
sandbox: `callkpi sandbox install`).

    .venv/bin/python examples/recordings/record_login.py examples/recordings

login-midcall: a scenario with holds runs; one client (the test account, the listener's event
classes) records the whole stream from the start (`.full.`); a second client logs in with the
product's `[callkpi]` account 9 s in, asks QueueStatus (ActionID `qs`) and Status with the
listener's variables (ActionID `st`) as the listener does, and records from its login
(`.late.`). restart: the same scenario, `core restart now` 9 s in with callers waiting and
connected, then a login after the restart with its QueueStatus.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ami_listener.listener import EVENT_MASK, STATUS_VARIABLES  # noqa: E402
from ports import free_port  # noqa: E402
from simulator.ami import AmiClient  # noqa: E402
from simulator.runner import run_scenario  # noqa: E402
from simulator.sandbox import Sandbox  # noqa: E402
from simulator.scenario import load_scenario  # noqa: E402

SCENARIO = """
name = "login-midcall"
seed = 3
arrivals_s = 6
max_calls = 6
drain_timeout_s = 60
[caller]
patience_s = [12, 40]
[agent]
ring_s = [0.5, 1.0]
talk_s = [10, 16]
hold = 0.8
hold_s = [3, 4]
acw_s = [1, 1.5]
[survey]
none = 1.0
[[queue]]
name = "support"
digit = "1"
calls_per_min = 60
[[agents]]
extension = "1001"
name = "Agent 1001"
queues = ["support"]
[[agents]]
extension = "1002"
name = "Agent 1002"
queues = ["support"]
"""
LATE_S = 10.5


async def record(box: Sandbox, out: Path, name: str, restart: bool) -> None:
    full, late = io.StringIO(), io.StringIO()
    watcher = AmiClient(box.ami_host, box.ami_port, box.ami_user, box.ami_secret,
                        events=EVENT_MASK, capture=full)
    await watcher.connect()
    path = out / f"{name}.toml"
    path.write_text(SCENARIO)
    try:
        run = asyncio.create_task(run_scenario(load_scenario(path), box.ami_host, box.ami_port,
                                               box.ami_user, box.ami_secret))
        await asyncio.sleep(LATE_S)
        if restart:
            await asyncio.to_thread(box.rx, "core restart now")
            await asyncio.sleep(4)
        listener = AmiClient(box.ami_host, box.ami_port, box.listener_user,
                             box.listener_secret, events=EVENT_MASK, capture=late)
        await listener.connect()
        await listener.action("QueueStatus", action_id="qs")
        if not restart:
            await listener.action("Status", action_id="st", Variables=STATUS_VARIABLES)
        await asyncio.gather(run, return_exceptions=True)
        await asyncio.sleep(1)
        await listener.close()
    finally:
        path.unlink()
        await watcher.close()
    for part, text in (("full", full), ("late", late)):
        with gzip.open(out / f"{name}.{part}.ami-raw.txt.gz", "wt") as f:
            f.write(text.getvalue())


async def main(out: Path) -> None:
    for name, restart in (("login-midcall", False), ("restart", True)):
        box = Sandbox(ami_port=free_port(), agi_port=free_port())
        box.start()
        box.reset_logs()
        try:
            await record(box, out, name, restart)
            shutil.copy(box.queue_log_path, out / f"{name}.queue_log")
        finally:
            box.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
