"""`callkpi tail` on the real sandbox Asterisk's queue_log while the simulator drives calls,
with the log rotated mid-run by rename (Asterisk's own `logger rotate`) or by copytruncate:
every line in the rotated file and the new one is stored exactly once. (With copytruncate a
line Asterisk writes between the copy and the truncation is in neither file: that is
copytruncate's own loss, which no reader can undo.)"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callkpi.events import KEY_COLUMNS
from callkpi.store import open_store
from queue_log_parser.ingest import checkpoint_stream
from queue_log_parser.parser import LineParser
from simulator.runner import run_scenario
from simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

SERVER = "sandbox"
CALLKPI = Path(sys.executable).parent / "callkpi"

# ~20 s: answered calls with ACW and dispositions, abandons, timeouts, an exit key, a pause,
# the only sales agent logging out (EXITEMPTY), IVR self-service and hang-ups.
SCENARIO = """
name = "queue-log-live"
seed = 21
arrivals_s = 12
max_calls = 10
drain_timeout_s = 60
[ivr]
self_service = 0.1
hangup = 0.1
[caller]
patience_s = [5, 12]
exit_key_after_s = [2, 3]
[agent]
ring_s = [0.5, 1.0]
talk_s = [2, 4]
hold = 0.3
hold_s = [1, 2]
acw_s = [1, 1.5]
dispositions = ["1", "2"]
[survey]
none = 1.0
[[queue]]
name = "support"
digit = "1"
calls_per_min = 30
timeout_s = 9
exit_key = 0.15
[[queue]]
name = "sales"
digit = "2"
calls_per_min = 14
[[agents]]
extension = "1001"
name = "Agent 1001"
queues = ["support"]
[[agents]]
extension = "1002"
name = "Agent 1002"
queues = ["support"]
[[agents]]
extension = "1003"
name = "Agent 1003"
queues = ["sales"]
[[timeline]]
at_s = 3
agent = "1002"
action = "pause"
for_s = 4
reason = "break"
[[timeline]]
at_s = 5
agent = "1003"
action = "logout"
for_s = 5
"""


async def caught_up(db: Path, log: Path, timeout: float = 20) -> None:
    """Wait until the tail's durable checkpoint is at the end of the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                found = conn.execute("SELECT offset FROM checkpoints").fetchall()
        except sqlite3.OperationalError:  # not created yet
            found = []
        if found and found[0][0] == log.stat().st_size:
            return
        await asyncio.sleep(0.1)


def rotated_files(log: Path) -> list[Path]:
    return sorted(p for p in log.parent.iterdir()
                  if p.name.startswith(log.name) and p.name != log.name)


def written_keys(files: list[Path]) -> collections.Counter:
    """The natural key of every line Asterisk wrote (two lines with one key are one event)."""
    parser = LineParser(SERVER)
    keys = set()
    for path in files:
        for line in path.read_text().splitlines():
            if line:
                event = parser.parse(line)
                keys.add(tuple(getattr(event, c) for c in KEY_COLUMNS))
    return collections.Counter(keys)


def copytruncate(log: Path) -> None:
    """What logrotate's copytruncate does (Asterisk keeps its O_APPEND descriptor)."""
    shutil.copy(log, log.parent / f"{log.name}.1")
    os.truncate(log, 0)


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
async def test_tail_stores_every_line_once_across_a_rotation(asterisk, tmp_path, how):
    log = asterisk.queue_log_path
    for old in rotated_files(log):
        old.unlink()
    asterisk.reset_logs()
    db = tmp_path / "live.db"
    env = {**os.environ, "CALLKPI_CONFIG": os.devnull, "CALLKPI_SERVER_NAME": SERVER,
           "CALLKPI_QUEUE_LOG_POLL_S": "0.1"}
    tail = subprocess.Popen([str(CALLKPI), "tail", "--db", str(db), str(log)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        scenario_path = tmp_path / "queue-log-live.toml"
        scenario_path.write_text(SCENARIO)
        run = asyncio.create_task(run_scenario(
            load_scenario(scenario_path), asterisk.ami_host, asterisk.ami_port,
            asterisk.ami_user, asterisk.ami_secret))
        await asyncio.sleep(8)
        lines_before = len(log.read_text().splitlines())
        if how == "rename":  # Asterisk's own: queue_log -> queue_log.0, then a new file
            await asyncio.to_thread(asterisk.rx, "logger rotate")
        else:
            copytruncate(log)
        truth = await run
        assert truth.complete, truth.problems
        await caught_up(db, log)
    finally:
        tail.send_signal(signal.SIGTERM)
        out, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err
    rotated = rotated_files(log)
    assert len(rotated) == 1, rotated
    assert lines_before > 0 and len(rotated[0].read_text().splitlines()) >= lines_before
    assert len(log.read_text().splitlines()) > 0  # and went on in a new file
    want = written_keys([*rotated, log])
    store = await open_store(db)
    async with store:
        got = collections.Counter(await store.fetch_all(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM events"))
        quarantined = await store.fetch_all("SELECT reason, raw FROM quarantine")
        checkpoint = await store.checkpoint(checkpoint_stream(SERVER, str(log)))
    assert quarantined == []
    assert sum(want.values()) > 60
    assert got == want
    st = log.stat()
    assert (checkpoint.file_id, checkpoint.offset) == (f"{st.st_dev}:{st.st_ino}", st.st_size)
    assert out.startswith("lines="), out
    for path in rotated:
        path.unlink()  # leave the sandbox's log directory as other tests expect it
