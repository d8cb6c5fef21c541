"""The AMI listener on the real sandbox Asterisk, logged in with the product's least-privilege
account (asterisk_conf/manager.conf [callkpi]), while the simulator drives calls: what the
listener stores must be what the ground truth says happened."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ami_listener.listener import Listener
from callkpi.config import AmiConfig
from callkpi.store import open_store
from simulator import truth as t
from simulator.ami import AmiClient
from simulator.runner import run_scenario
from simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

SERVER = "sandbox"
DISPOSITION_NAMES = {"1": "resolved", "2": "sale", "3": "callback", "4": "escalated"}

# ~25 s: holds, a break, ACW pauses and dispositions, abandons, timeouts, an exit key, the
# only sales agent logging out (EXITEMPTY), IVR self-service and hang-ups.
SCENARIO = """
name = "ami-live"
seed = 10
arrivals_s = 14
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
talk_s = [3, 5]
hold = 0.6
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
for_s = 5
reason = "break"
[[timeline]]
at_s = 5
agent = "1003"
action = "logout"
for_s = 6
"""

OUTCOME_KIND = {t.ANSWERED: "complete", t.ABANDONED: "abandon", t.TIMEOUT: "exit-timeout",
                t.EXIT_EMPTY: "exit-empty"}  # an exit key is in queue_log only
IVR_OUTCOME = {t.IVR_SELF_SERVICE: "self-service", t.IVR_HANGUP: "hangup"}


def scenario(tmp_path: Path):
    path = tmp_path / "ami-live.toml"
    path.write_text(SCENARIO)
    return load_scenario(path)


def expected_from_truth(truth: t.Truth) -> collections.Counter:
    """(call_id, kind, queue, agent, discr-or-value) of everything AMI reports."""
    want: collections.Counter = collections.Counter()
    for call in truth.calls:
        if call.outcome == t.NOT_STARTED:
            continue
        if not call.queue:
            want[(call.uniqueid, "ivr-exit", "", "", IVR_OUTCOME[call.outcome])] += 1
            continue
        want[(call.uniqueid, "ivr-exit", call.queue, "", "to-queue")] += 1
        want[(call.uniqueid, "enter-queue", call.queue, "", "")] += 1
        if call.outcome == t.ANSWERED:
            want[(call.uniqueid, "connect", call.queue, call.agent, "")] += 1
        if call.outcome in OUTCOME_KIND:
            want[(call.uniqueid, OUTCOME_KIND[call.outcome], call.queue, call.agent, "")] += 1
        if call.hold_s > 0:
            want[(call.uniqueid, "hold", call.queue, call.agent, "")] += 1
            want[(call.uniqueid, "unhold", call.queue, call.agent, "")] += 1
        if call.disposition:
            code = DISPOSITION_NAMES.get(call.disposition, call.disposition)
            want[(call.uniqueid, "disposition", call.queue, call.agent, code)] += 1
    for agent in truth.agents:
        for session in agent.sessions:
            want[("", "member-add", session.queue, agent.agent, "")] += 1
            if session.logout is not None:
                want[("", "member-remove", session.queue, agent.agent, "")] += 1
        for pause in agent.pauses:
            for queue in agent.queues:
                want[("", "pause", queue, agent.agent, pause.reason)] += 1
                if pause.end is not None:
                    want[("", "unpause", queue, agent.agent, "")] += 1
    return want


async def stored(store, since: float) -> collections.Counter:
    rows = await store.fetch_all(
        "SELECT call_id, kind, queue, agent, discr, value FROM events"
        " WHERE kind <> 'ami-gap' AND ts >= ?", (since,))
    got: collections.Counter = collections.Counter()
    for call_id, kind, queue, agent, discr, value in rows:
        got[(call_id, kind, queue, agent, value if kind in VALUE_KEYED else discr)] += 1
    return got


VALUE_KEYED = ("ivr-exit", "disposition")


async def test_listener_finds_every_call_hold_and_pause_of_the_ground_truth(asterisk,
                                                                            tmp_path):
    store = await open_store(tmp_path / "live.db")
    async with store:
        listener = Listener(store, AmiConfig(host=asterisk.ami_host, port=asterisk.ami_port,
                                             username=asterisk.listener_user,
                                             secret=asterisk.listener_secret), SERVER)
        task = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.connected.wait(), 10)
        started = time.time() - 1
        truth = await run_scenario(scenario(tmp_path), asterisk.ami_host, asterisk.ami_port,
                                   asterisk.ami_user, asterisk.ami_secret)
        await asyncio.sleep(1)  # the last events of the run reach the store
        listener.stop()
        stats = await task
        assert truth.complete, truth.problems
        got = await stored(store, started)
    want = expected_from_truth(truth)
    assert sum(want.values()) > 60
    outcomes = {c.outcome for c in truth.calls}
    assert {t.ANSWERED, t.ABANDONED, t.EXIT_EMPTY, t.EXIT_KEY, t.IVR_SELF_SERVICE} <= outcomes
    assert sum(1 for c in truth.calls if c.hold_s > 0) >= 2
    # compare per kind, so a mismatch says what is wrong
    for kind in sorted({k[1] for k in want} | {k[1] for k in got}):
        assert ({k: n for k, n in got.items() if k[1] == kind}
                == {k: n for k, n in want.items() if k[1] == kind}), kind
    assert (stats.dropped, stats.warnings, stats.gaps) == (0, 0, 0)


# ------------------------------------------------------------------ gaps
# The queue_log lines that have an AMI twin, keyed as the listener keys its events (a
# test-local reading of queue_log, only to locate them: the queue_log parser owns the ingest).
QUEUE_LOG_TWINS = {
    "ENTERQUEUE": "enter-queue", "CONNECT": "connect", "COMPLETEAGENT": "complete",
    "COMPLETECALLER": "complete", "ABANDON": "abandon", "EXITWITHTIMEOUT": "exit-timeout",
    "EXITEMPTY": "exit-empty", "PAUSE": "pause", "UNPAUSE": "unpause",
    "ADDMEMBER": "member-add", "REMOVEMEMBER": "member-remove", "IVREXIT": "ivr-exit",
    "DISPOSITION": "disposition",
}


def queue_log_twins(path: Path, since: float) -> dict[tuple, list[int]]:
    """(call_id, kind, queue, agent, discr-or-value) -> the seconds queue_log has it at."""
    found: dict[tuple, list[int]] = collections.defaultdict(list)
    for line in path.read_text().splitlines():
        epoch, call_id, queue, agent, event, *data = line.split("|")
        if int(epoch) < since or event not in QUEUE_LOG_TWINS:
            continue
        if event in ("PAUSE", "UNPAUSE") and (queue == "NONE" or data == ["Auto-Unpause"]):
            continue  # PAUSEALL's per-queue copies are the PAUSE lines; Auto-Unpause: no AMI
        none = lambda v: "" if v in ("NONE", "MANAGER") else v  # noqa: E731
        detail = {"PAUSE": data[0], "IVREXIT": data[0], "DISPOSITION": data[0]}.get(event, "")
        if event == "IVREXIT":
            queue = data[2] if len(data) > 2 else ""
        found[(none(call_id), QUEUE_LOG_TWINS[event], none(queue), none(agent), detail)].append(
            int(epoch))
    return found


def in_gap(second: float, gaps: list[tuple]) -> bool:
    return any(start - 1 <= second <= start + length + 1 for start, length, _ in gaps)


async def assert_only_the_gaps_are_missing(db: Path, truths: list[t.Truth], since: float,
                                           queue_log: Path) -> list[tuple]:
    """Nothing stored that did not happen or twice; whatever the listener missed happened
    inside a gap it marked, and queue_log has it there (so an ingest fills it) unless it is a
    hold, which queue_log never has. Returns the gaps."""
    store = await open_store(db, create=False)
    async with store:
        got = await stored(store, since)
        gaps = await store.fetch_all(
            "SELECT ts, talk_s, reason FROM events WHERE kind = 'ami-gap' AND ts >= ?",
            (since,))
    want: collections.Counter = collections.Counter()
    for truth in truths:
        want += expected_from_truth(truth)
    assert got - want == collections.Counter()  # nothing invented, nothing twice
    twins = queue_log_twins(queue_log, since)
    calls = {c.uniqueid: c for truth in truths for c in truth.calls}
    for key, count in (want - got).items():
        call_id, kind = key[:2]
        if kind in ("hold", "unhold"):
            talk = twins[(call_id, "connect", key[2], key[3], "")] + twins[
                (call_id, "complete", key[2], key[3], "")]
            assert calls[call_id].hold_s > 0 and any(in_gap(s, gaps) for s in talk), key
        else:
            assert len([s for s in twins[key] if in_gap(s, gaps)]) >= count, (key, gaps)
    return gaps


async def assert_catch_up_completes_the_store(config: Path, truths: list[t.Truth], since: float,
                                             queue_log: Path) -> None:
    """`callkpi ingest` of the queue_log after the gap: the store then equals the ground truth,
    nothing twice; only holds inside the gap stay missing (queue_log never has them)."""
    ingest = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "callkpi"), "--config", str(config), "ingest",
        str(queue_log), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(ingest.communicate(), 60)
    assert ingest.returncode == 0, err
    store = await open_store(config.parent / "callkpi.db", create=False)
    async with store:
        got = await stored(store, since)
    want: collections.Counter = collections.Counter()
    for truth in truths:
        want += expected_from_truth(truth)
    kinds = {k[1] for k in want}
    got = collections.Counter({k: n for k, n in got.items() if k[1] in kinds})
    assert got - want == collections.Counter()  # nothing twice, nothing invented
    assert {k[1] for k in want - got} <= {"hold", "unhold"}, want - got


def write_config(tmp_path: Path, asterisk) -> Path:
    config = tmp_path / "callkpi.toml"
    config.write_text(
        f'[server]\nname = "{SERVER}"\n[store]\ndb = "{tmp_path / "callkpi.db"}"\n'
        f'[ami]\nhost = "{asterisk.ami_host}"\nport = {asterisk.ami_port}\n'
        f'username = "{asterisk.listener_user}"\nping_interval_s = 1.0\nreconnect_max_s = 2.0\n')
    return config


async def start_listener(config: Path, secret: str) -> asyncio.subprocess.Process:
    """`callkpi listen` in its own process, once it has logged in (its log: listen.log)."""
    log = config.parent / "listen.log"
    logins = log.read_text().count("AMI logged in") if log.exists() else 0
    with log.open("a") as stderr:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "callkpi"), "--config", str(config), "listen",
            env={**os.environ, "CALLKPI_AMI_SECRET": secret},
            stdout=asyncio.subprocess.PIPE, stderr=stderr)
    await logged_in(proc, log, logins + 1)
    return proc


async def logged_in(proc: asyncio.subprocess.Process, log: Path, logins: int) -> None:
    deadline = time.monotonic() + 15
    while log.read_text().count("AMI logged in") < logins:
        assert proc.returncode is None and time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.05)


async def test_listener_killed_mid_run_marks_a_gap_that_queue_log_covers(asterisk, tmp_path):
    config = write_config(tmp_path, asterisk)
    since = time.time() - 1
    listener = await start_listener(config, asterisk.listener_secret)
    run = asyncio.create_task(run_scenario(scenario(tmp_path), asterisk.ami_host,
                                           asterisk.ami_port, asterisk.ami_user,
                                           asterisk.ami_secret))
    await asyncio.sleep(7)
    listener.kill()  # kill -9: nothing flushed, nothing said
    await listener.wait()
    killed_at = time.time()
    await asyncio.sleep(4)
    listener = await start_listener(config, asterisk.listener_secret)
    truth = await run
    await asyncio.sleep(1)
    listener.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(listener.wait(), 15) == 0
    assert truth.complete, truth.problems
    gaps = await assert_only_the_gaps_are_missing(tmp_path / "callkpi.db", [truth], since,
                                                  asterisk.queue_log_path)
    ((start, length, reason),) = gaps
    assert reason == "listener not running"
    assert start <= killed_at and start + length >= killed_at + 4
    assert asterisk.listener_secret not in (tmp_path / "listen.log").read_text()
    await assert_catch_up_completes_the_store(config, [truth], since, asterisk.queue_log_path)


async def test_asterisk_restart_under_the_listener(asterisk, tmp_path):
    config = write_config(tmp_path, asterisk)
    since = time.time() - 1
    listener = await start_listener(config, asterisk.listener_secret)
    first = await run_scenario(scenario(tmp_path), asterisk.ami_host, asterisk.ami_port,
                               asterisk.ami_user, asterisk.ami_secret)
    await asyncio.to_thread(asterisk.restart)
    await logged_in(listener, tmp_path / "listen.log", 2)  # reconnected by itself
    second = await run_scenario(scenario(tmp_path), asterisk.ami_host, asterisk.ami_port,
                                asterisk.ami_user, asterisk.ami_secret)
    await asyncio.sleep(1)
    listener.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(listener.communicate(), 15)
    assert listener.returncode == 0, err
    assert b"connects=2" in out
    assert first.complete and second.complete, first.problems + second.problems
    gaps = await assert_only_the_gaps_are_missing(tmp_path / "callkpi.db", [first, second],
                                                  since, asterisk.queue_log_path)
    assert len(gaps) == 1  # the restart, from the last byte before it to the new login
    store = await open_store(tmp_path / "callkpi.db", create=False)
    async with store:
        got = await stored(store, since)
    # no call was up across the restart: both runs are there whole, holds included
    assert got == expected_from_truth(first) + expected_from_truth(second)
    await assert_catch_up_completes_the_store(config, [first, second], since,
                                              asterisk.queue_log_path)


async def test_asterisk_restart_with_calls_up_the_store_has_the_queue_log_record(asterisk,
                                                                                 tmp_path):
    """A restart cuts the simulator too, so its truth is incomplete: queue_log (what Asterisk
    wrote, the cut calls' COMPLETEAGENT at shutdown included) is the record here."""
    store = await open_store(tmp_path / "restart.db")
    async with store:
        listener = Listener(store, AmiConfig(host=asterisk.ami_host, port=asterisk.ami_port,
                                             username=asterisk.listener_user,
                                             secret=asterisk.listener_secret,
                                             reconnect_max_s=2.0), SERVER)
        task = asyncio.create_task(listener.run())
        await asyncio.wait_for(listener.connected.wait(), 10)
        since = time.time() - 1
        plan = scenario(tmp_path)
        run = asyncio.create_task(run_scenario(plan, asterisk.ami_host, asterisk.ami_port,
                                               asterisk.ami_user, asterisk.ami_secret))
        await asyncio.sleep(8)  # calls in the queues and with agents
        await asyncio.to_thread(asterisk.restart)
        await asyncio.gather(run, return_exceptions=True)  # the simulator loses AMI: its end
        await asyncio.wait_for(listener.connected.wait(), 15)
        await asyncio.sleep(1)
        listener.stop()
        stats = await task
        got = await stored(store, since)
        gaps = await store.fetch_all("SELECT ts, talk_s, reason FROM events WHERE kind = ?",
                                     ("ami-gap",))
    await remove_members(asterisk, plan)  # the cut run could not log its agents out
    record = queue_log_twins(asterisk.queue_log_path, since)
    assert stats.connects == 2 and len(gaps) == 1
    assert sum(n for k, n in got.items() if k[1] == "complete") >= 1
    live = {k: n for k, n in got.items() if k[1] not in ("hold", "unhold")}
    # nothing twice, nothing queue_log does not have
    assert all(len(record.get(k, [])) >= n for k, n in live.items()), live
    # what queue_log has, the listener has, or it happened inside the gap
    for key, seconds in record.items():
        assert got[key] + len([s for s in seconds if in_gap(s, gaps)]) >= len(seconds), key


async def remove_members(asterisk, plan) -> None:
    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.ami_user,
                    asterisk.ami_secret)
    await ami.connect()
    try:
        for agent in plan.agents:
            for queue in agent.queues:
                await ami.action("QueueRemove", Queue=queue, Interface=agent.interface)
    finally:
        await ami.close()
