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
from callkpi.store_sqlite import open_store
from simulator import truth as t
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
