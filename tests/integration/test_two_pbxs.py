"""Two real Asterisks feeding one PostgreSQL, as an admin runs them: each PBX has its own
`callkpi tail`, `listen` and `agi` with its own `[server] name`, all writing at once to one
database that none of them created beforehand, while the simulator drives a scenario through
both PBXs at the same time. Each server's report (`--server`) must be what that PBX's ground
truth says happened, and the report of both their sum, nothing counted twice.

The second PBX is a copy of the sandbox root (made once, kept beside it) started on its own
ports and run directory; both log to /var/log/asterisk/queue_log inside their roots, so the
two `tail`s follow the same path name on two machines, as two real PBXs do.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ports import accepts, free_port
from callkpi.store import open_store
from simulator import truth as t
from simulator.runner import run_scenario
from simulator.sandbox import Sandbox, SandboxError
from simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

CALLKPI = str(Path(sys.executable).parent / "callkpi")
SERVERS = ("pbx-paris", "pbx-lyon")
SEEDS = (18, 41)  # a different day on each PBX: a mix-up of the two cannot pass
OUTCOMES = ("answered", "abandoned", "timeout", "exit_key", "exit_empty")
READY_S = 60  # how long a service may take to be ready on a loaded machine
QUESTIONS = '[[survey.questions]]\nid = "q1"\nkind = "csat"\nprompt = "beep"\n' \
            'digits = "12345"\ntimeout_s = 3\nretries = 1\n'


@dataclass
class Pbx:
    server: str
    box: Sandbox
    config: Path


def second_root(first: Sandbox) -> str:
    """A copy of the installed sandbox root (its own queue_log, astdb, control socket),
    made again when the first root was reinstalled since."""
    root = f"{first.root}-second"
    marker = ".astsandbox-installed"
    source = Path(first.root, marker)
    if Path(root, marker).exists() and Path(root, marker).read_bytes() == source.read_bytes():
        return root
    if os.path.exists(root):
        subprocess.run(["umount", "-l", f"{root}/proc"], capture_output=True)
        shutil.rmtree(root)
    # --one-file-system: not the /proc the running first Asterisk has mounted in its root
    subprocess.run(["cp", "-a", "--one-file-system", first.root, f"{root}.part"], check=True)
    os.rename(f"{root}.part", root)
    return root


def write_config(pbx_dir: Path, server: str, box: Sandbox, db: str) -> Path:
    config = pbx_dir / "callkpi.toml"
    config.write_text(
        f'[server]\nname = "{server}"\n[store]\ndb = "{db}"\n'
        f'[queue_log]\npath = "{box.queue_log_path}"\npoll_s = 0.2\n'
        f'[ami]\nhost = "{box.ami_host}"\nport = {box.ami_port}\n'
        f'username = "{box.listener_user}"\n'
        f'[agi]\nport = {box.agi_port}\nspool = "{pbx_dir / "spool"}"\n'
        f'[report]\ntimezone = "UTC"\n'
        f'[survey]\nannounce_text = true\n{QUESTIONS}')
    return config


@pytest.fixture(scope="module")
def pbxs(asterisk, pg_cluster, tmp_path_factory) -> Iterator[tuple[list[Pbx], str]]:
    """The session's sandbox as the first PBX, a second one beside it, and an empty
    database for both."""
    first = asterisk.sandbox
    try:
        second = Sandbox(ami_port=free_port(), agi_port=free_port(), root=second_root(first),
                         state=f"{first.state}-second")
        second.start()
    except (SandboxError, subprocess.CalledProcessError, OSError) as exc:
        reason = f"second sandbox Asterisk unavailable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"two_pbxs_{os.getpid()}"
    pg_cluster.sql(f"CREATE DATABASE {name}")  # no schema: the services create it
    db = pg_cluster.url(name)
    tmp = tmp_path_factory.mktemp("two-pbxs")
    boxes = []
    for server, box in zip(SERVERS, (first, second)):
        (tmp / server).mkdir()
        boxes.append(Pbx(server, box, write_config(tmp / server, server, box, db)))
    try:
        yield boxes, db
    finally:
        second.stop()
        pg_cluster.sql(f"DROP DATABASE {name} WITH (FORCE)")


async def start(pbx: Pbx, command: str) -> asyncio.subprocess.Process:
    log = (pbx.config.parent / f"{command}.log").open("w")
    env = {**os.environ, "CALLKPI_AMI_SECRET": pbx.box.listener_secret}
    return await asyncio.create_subprocess_exec(
        CALLKPI, "--config", str(pbx.config), command, env=env, stdout=log, stderr=log)


async def ready(pbx: Pbx, procs: list[asyncio.subprocess.Process]) -> None:
    """The survey server accepts connections and the listener is logged in to its PBX."""
    listen_log = pbx.config.parent / "listen.log"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_S
    while True:
        died = [p for p in procs if p.returncode is not None]
        assert not died, services_log(pbx)
        if "AMI logged in" in listen_log.read_text() and await accepts(pbx.box.agi_port):
            return
        assert loop.time() < deadline, services_log(pbx)
        await asyncio.sleep(0.1)  # the logs and the port, looked at again


def services_log(pbx: Pbx) -> str:
    return "".join((pbx.config.parent / f"{n}.log").read_text()
                   for n in ("agi", "listen", "tail") if (pbx.config.parent / f"{n}.log").exists())


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 30)


def callkpi(pbx: Pbx, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CALLKPI, "--config", str(pbx.config), *args], capture_output=True,
                          text=True, timeout=180)


@dataclass
class Run:
    truths: dict[str, t.Truth]
    reports: dict[str, dict]  # server -> its report; "" -> both
    logs: str
    twice: int
    facts: dict[tuple[str, str], tuple]  # (server, call_id) -> (queue, outcome, agent)


@pytest.fixture(scope="module")
def run(pbxs, asterisk) -> Run:
    boxes, db = pbxs
    for pbx in boxes:
        pbx.box.reset_logs()  # (the second root's copy holds the first's log of its day)

    async def one(pbx: Pbx, seed: int) -> t.Truth:
        procs = [await start(pbx, "agi"), await start(pbx, "listen"), await start(pbx, "tail")]
        try:
            await ready(pbx, procs)
            box = pbx.box
            scenario = dataclasses.replace(load_scenario("smoke"), seed=seed)
            return await run_scenario(scenario, box.ami_host, box.ami_port, box.ami_user,
                                      box.ami_secret)
        finally:
            codes = [await stop(p) for p in procs]
            assert codes == [0, 0, 0], services_log(pbx)

    async def both() -> list[t.Truth]:
        return list(await asyncio.gather(*(one(p, s) for p, s in zip(boxes, SEEDS))))

    truths = dict(zip(SERVERS, asyncio.run(both())))
    for server, truth in truths.items():
        assert truth.complete, (server, truth.problems)
    for pbx in boxes:  # what tail had not read when it stopped: from its own checkpoint on
        caught = callkpi(pbx, "ingest", str(pbx.box.queue_log_path))
        assert caught.returncode == 0, caught.stderr
    day = min(truth.started_at for truth in truths.values())
    args = ["report", "--from", f"{_utc_day(day)}", "--to", f"{_utc_day(day)}"]
    reports = {}
    for server in ("", *SERVERS):
        result = callkpi(boxes[0], *args, *(("--server", server) if server else ()))
        assert result.returncode == 0, result.stderr
        reports[server] = json.loads(result.stdout)
    twice, facts = asyncio.run(_read_store(db))
    return Run(truths, reports, "".join(services_log(p) for p in boxes), twice, facts)


def _utc_day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


async def _read_store(db: str) -> tuple[int, dict[tuple[str, str], tuple]]:
    """Queue events stored more than once on one server (any source, a second apart), and
    each queue call's facts."""
    store = await open_store(db, create=False)
    async with store:
        facts = {(server, call_id): tuple(rest) for server, call_id, *rest in await store.fetch_all(
            "SELECT server, call_id, queue, outcome, agent FROM queue_calls")}
        (n,), = await store.fetch_all(
            "SELECT COUNT(*) FROM events a JOIN events b ON a.server = b.server"
            " AND a.call_id = b.call_id AND a.kind = b.kind AND a.queue = b.queue"
            " AND a.agent = b.agent AND a.discr = b.discr"
            " AND b.tsec BETWEEN a.tsec - 1 AND a.tsec + 1 AND b.id > a.id"
            " WHERE a.call_id <> ''")
    return n, facts


def expected(truth: t.Truth) -> dict:
    """What a report of this PBX must say: calls per queue and outcome, answers per agent,
    IVR calls."""
    queued = [c for c in truth.calls if c.queue]
    per_queue: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for call in queued:
        per_queue[call.queue]["offered"] += 1
        per_queue[call.queue][call.outcome] += 1
    agents = collections.Counter(c.agent for c in queued if c.outcome == t.ANSWERED)
    return {"queues": {q: {k: n[k] for k in ("offered", *OUTCOMES)} for q, n in per_queue.items()},
            "agents": dict(agents),
            "ivr_calls": sum(1 for c in truth.calls if c.outcome != t.NOT_STARTED)}


def observed(report: dict) -> dict:
    return {"queues": {q: {k: row[k] for k in ("offered", *OUTCOMES)}
                       for q, row in report["queues"].items() if row["offered"]},
            "agents": {a: row["answered"] for a, row in report["agents"].items()
                       if row["answered"]},
            "ivr_calls": report["totals"]["ivr_calls"]}


def test_each_call_is_its_pbxs(run):
    want = {(server, c.uniqueid): [c.queue, c.outcome, c.agent]
            for server, truth in run.truths.items() for c in truth.calls if c.queue}
    assert {key: list(value) for key, value in run.facts.items()} == want


def test_each_servers_report_is_its_pbxs_truth(run):
    for server, truth in run.truths.items():
        report = run.reports[server]
        assert report["period"]["servers"] == [server]
        assert observed(report) == expected(truth), server


def test_the_report_of_both_is_their_sum_nothing_twice(run):
    whole = run.reports[""]
    assert whole["period"]["servers"] == sorted(SERVERS)
    want: dict = {"queues": {}, "agents": collections.Counter(), "ivr_calls": 0}
    for truth in run.truths.values():
        mine = expected(truth)
        for queue, counts in mine["queues"].items():
            sums = want["queues"].setdefault(queue, collections.Counter())
            sums.update(counts)
        want["agents"].update(mine["agents"])
        want["ivr_calls"] += mine["ivr_calls"]
    want["queues"] = {q: dict(c) for q, c in want["queues"].items()}
    want["agents"] = dict(want["agents"])
    assert observed(whole) == want
    assert run.twice == 0


def test_the_services_of_both_logged_no_traceback(run):
    assert "Traceback" not in run.logs
