"""Record the quick-start sample's survey day on the sandbox Asterisk (needs root and the
sandbox: `callkpi sandbox install`).

    .venv/bin/python examples/record_sample.py examples

The simulator's smoke scenario runs through the product dialplan (asterisk_conf/) while
`callkpi agi` serves the post-call survey (a csat and a resolution question) as a process of
its own, as deployed. Written to DIR, named by the day of the run:

- `queue_log-<day>.sample`: the queue_log Asterisk wrote (calls, wrap-up pauses, the
  dispositions the agents dialled with *47);
- `survey-<day>.jsonl`: the answers `callkpi agi` stored, one line per answer in the format of
  its spool (`agi_plugin.spool.encode`: the event and the channel link it came with), which
  `callkpi ingest` reads;
- `truth-<day>.json`: what the simulated people did (docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agi_plugin.spool import encode  # noqa: E402
from callkpi.events import COLUMNS, CallEvent, CallLink  # noqa: E402
from ports import free_port  # noqa: E402
from simulator.runner import run_scenario  # noqa: E402
from simulator.sandbox import Sandbox  # noqa: E402
from simulator.scenario import load_scenario  # noqa: E402

CALLKPI = str(Path(sys.executable).parent / "callkpi")
SURVEY = """[survey]
announce_text = true
[[survey.questions]]
id = "q1"
kind = "csat"
prompt = "beep"
digits = "12345"
timeout_s = 3
[[survey.questions]]
id = "q2"
kind = "resolution"
prompt = "beep"
digits = "12"
timeout_s = 3
"""


def answers_as_spooled(db: Path) -> bytes:
    """The stored answers, each with the channel link the survey recorded beside it."""
    con = sqlite3.connect(db)
    links = {(r[1], r[3]): CallLink(*r) for r in con.execute(
        "SELECT server, uniqueid, linked_id, ts FROM call_links")}
    lines = []
    for row in con.execute(f"SELECT {', '.join(COLUMNS)} FROM events"
                           " WHERE kind = 'survey-answer' ORDER BY ts, id"):
        event = CallEvent(*row)
        link = links.get((event.call_id, event.ts))
        lines.append(encode(event, [link] if link else []))
    return b"".join(lines)


async def record(box: Sandbox, config: Path) -> None:
    log = (config.parent / "agi.log").open("w")
    agi = await asyncio.create_subprocess_exec(CALLKPI, "--config", str(config), "agi",
                                               stdout=log, stderr=log)
    try:
        await asyncio.sleep(2)  # listening
        assert agi.returncode is None, (config.parent / "agi.log").read_text()
        truth = await run_scenario(load_scenario("smoke"), box.ami_host, box.ami_port,
                                   box.ami_user, box.ami_secret)
    finally:
        agi.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agi.wait(), 90) == 0, (config.parent / "agi.log").read_text()
    assert truth.complete, truth.problems
    day = time.strftime("%Y%m%d", time.gmtime(truth.started_at))
    out = Path(sys.argv[1])
    shutil.copyfile(box.queue_log_path, out / f"queue_log-{day}.sample")
    (out / f"survey-{day}.jsonl").write_bytes(answers_as_spooled(config.parent / "callkpi.db"))
    truth.write(out / f"truth-{day}.json")


def main() -> None:
    box = Sandbox(ami_port=free_port(), agi_port=free_port())
    box.install()
    box.start()
    try:
        box.reset_logs()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "callkpi.toml"
            config.write_text(f'[server]\nname = "sample"\n[store]\ndb = "{tmp}/callkpi.db"\n'
                              f'[agi]\nport = {box.agi_port}\n{SURVEY}')
            asyncio.run(record(box, config))
    finally:
        box.stop()


if __name__ == "__main__":
    main()
