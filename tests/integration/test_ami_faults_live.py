"""Calls with holds across a kill -9 of `callkpi listen` (started again 5 s later), an abrupt
kill -9 of Asterisk and a graceful `core restart now`, with callers waiting and connected at
each, on the real sandbox Asterisk. The simulator orders the faults and says what really
happened to every call; `callkpi listen` runs as an admin runs it.

What the listener itself must get right is asserted on the store as the listener left it
(before any queue_log catch-up): every hold, unhold and end of a call already in progress
placed, abandons mapped from what the events say, the restart and the outages recorded as
they were. The report after a queue_log catch-up is compared with the truth too: it rests on the facts
layer's restart rules as well (a restart closes the callers still waiting, persistent members
keep their sessions and pauses, an UNPAUSE after a restart ends the pause begun before it).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulator import truth as t
from simulator.controls import Controls
from simulator.runner import run_scenario
from simulator.scenario import load_scenario

pytestmark = pytest.mark.integration

CALLKPI = str(Path(sys.executable).parent / "callkpi")
SERVER = "faults"
PING_S = 1.0  # the listener's ping interval: also how often its checkpoint moves when quiet
SLACK_S = 1.5  # an event's Timestamp vs. the simulated person's action, plus rounding

# ~60 s of arrivals: 3 agents, one support queue (no Queue() timeout, no exit key), holds on
# 70 % of the calls. listener-kill 6-11 s; crash at 24 s (Asterisk back after 1 s); agent
# 1003 on a break across the restart at 44 s, so two agents face a queue building up.
SCENARIO = """
name = "faults"
seed = 5
arrivals_s = 58
max_calls = 30
drain_timeout_s = 100
[caller]
patience_s = [12, 30]
[agent]
ring_s = [0.5, 1.0]
talk_s = [8, 12]
hold = 0.7
hold_s = [2, 3]
acw_s = [1, 2]
dispositions = ["1", "2"]
[survey]
none = 1.0
[[queue]]
name = "support"
digit = "1"
calls_per_min = 30
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
queues = ["support"]
[[timeline]]
at_s = 6
action = "listener-kill"
for_s = 5
[[timeline]]
at_s = 24
action = "crash"
for_s = 1
[[timeline]]
at_s = 34
agent = "1003"
action = "pause"
for_s = 12
reason = "break"
[[timeline]]
at_s = 44
action = "restart"
"""


@dataclass
class Run:
    truth: t.Truth
    events: list[dict]  # what the listener stored (before any queue_log catch-up)
    queue_log: list[list[str]]  # what Asterisk wrote, split on |
    listen_log: str
    report: dict  # after `callkpi ingest` of the queue_log
    facts: dict[str, dict]

    def outage(self, kind: str) -> t.OutageTruth:
        (found,) = [o for o in self.truth.outages if o.kind == kind]
        return found

    def of(self, kind: str, **match: object) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind
                and all(e[k] == v for k, v in match.items())]


def rows(db: Path, sql: str) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def run(asterisk, tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("faults")
    config = tmp / "callkpi.toml"
    config.write_text(
        f'[server]\nname = "{SERVER}"\n[store]\ndb = "{tmp / "callkpi.db"}"\n'
        f'[ami]\nhost = "{asterisk.ami_host}"\nport = {asterisk.ami_port}\n'
        f'username = "{asterisk.listener_user}"\nping_interval_s = {PING_S}\n'
        f'reconnect_max_s = 1.0\n')
    (tmp / "faults.toml").write_text(SCENARIO)
    controls = Controls(sandbox=asterisk.sandbox,
                        listen=[CALLKPI, "--config", str(config), "listen"],
                        listen_log=tmp / "listen.log",
                        listen_env={**os.environ,
                                    "CALLKPI_AMI_SECRET": asterisk.listener_secret})

    async def drive() -> t.Truth:
        await controls.start_listener()
        try:
            return await run_scenario(load_scenario(tmp / "faults.toml"), asterisk.ami_host,
                                      asterisk.ami_port, asterisk.ami_user,
                                      asterisk.ami_secret, controls=controls)
        finally:
            await asyncio.sleep(1.5)  # the last events reach the store
            assert await controls.stop_listener() == 0

    asterisk.reset_logs()
    truth = asyncio.run(drive())
    truth.write(tmp / "truth.json")  # beside the store and listen.log, to read after a failure
    assert truth.complete, truth.problems
    queue_log = [line.split("|") for line in asterisk.queue_log_path.read_text().splitlines()]
    listened = tmp / "listened.db"
    shutil.copy(tmp / "callkpi.db", listened)
    events = rows(listened, "SELECT * FROM events ORDER BY ts")
    catch_up = subprocess.run([CALLKPI, "--config", str(config), "ingest",
                               str(asterisk.queue_log_path)], capture_output=True, text=True,
                              timeout=120)
    assert catch_up.returncode == 0, catch_up.stderr
    day = time.strftime("%Y-%m-%d", time.localtime(truth.started_at))
    report = subprocess.run([CALLKPI, "--config", str(config), "report", "--from", day, "--to",
                             day, "--format", "json"], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    facts = {r["call_id"]: r for r in rows(tmp / "callkpi.db", "SELECT * FROM queue_calls")}
    return Run(truth, events, queue_log, (tmp / "listen.log").read_text(),
               json.loads(report.stdout), facts)


def queued(truth: t.Truth) -> list[t.CallTruth]:
    return [c for c in truth.calls if c.queue]


def inside(moment: float, outage: t.OutageTruth) -> bool:
    return outage.start - SLACK_S <= moment <= outage.end + SLACK_S


# ------------------------------------------------------------------ the scenario did its job
def test_callers_were_waiting_and_connected_at_every_fault(run):
    calls = queued(run.truth)
    for kind in ("restart", "crash"):
        cut = [c for c in calls if c.ended_by == kind]
        assert {t.CLOSED, t.ANSWERED} <= {c.outcome for c in cut}, kind
    # the listener was down while calls connected, and they were held after it came back
    gap = run.outage("listener")
    rebuilt = [c for c in calls if c.hold_at and c.hold_at > gap.end
               and c.started_at < gap.end and c.outcome == t.ANSWERED]
    assert rebuilt, "no call connected before the listener's return was held after it"


# ------------------------------------------------------------------ what the listener stored
def test_every_hold_of_a_call_in_progress_is_placed(run):
    gap = run.outage("listener")
    faults = [o for o in run.truth.outages if o.kind != "listener"]
    want, either = set(), set()
    for call in queued(run.truth):
        if not call.hold_at:
            continue
        ended = call.hold_at + call.hold_s
        if gap.start + SLACK_S < call.hold_at and ended < gap.end - SLACK_S:
            continue  # begun and ended while nobody listened: queue_log never has a hold
        if inside(call.hold_at, gap) and inside(ended, gap):
            either.add(call.uniqueid)  # too close to the gap's edges to tell
        elif any(inside(call.hold_at, fault) for fault in faults):
            # the hold key was pressed as the PBX went down: it may have died before the Hold
            either.add(call.uniqueid)
        else:
            want.add(call.uniqueid)
    held = {e["call_id"] for e in run.of("hold", source="ami")}
    assert want <= held <= want | either
    for call in queued(run.truth):
        if call.uniqueid not in held:
            continue
        (hold,) = run.of("hold", call_id=call.uniqueid)
        observed = json.loads(hold["extra"] or "{}").get("observed") == "login"
        # a hold Asterisk showed at the listener's login is dated from that login
        assert observed or abs(hold["ts"] - call.hold_at) <= SLACK_S, call.call
        assert hold["agent"] == call.agent
        if not call.ended_by:  # the PBX cut no hold: each one ended with an unhold
            (unhold,) = run.of("unhold", call_id=call.uniqueid)
            assert abs(unhold["ts"] - (call.hold_at + call.hold_s)) <= SLACK_S, call.call


def test_every_end_of_a_call_is_placed_and_nothing_is_skipped(run):
    gap = run.outage("listener")
    assert "missing Uniqueid" not in run.listen_log and "skipped" not in run.listen_log
    ended = {f[1]: float(f[0]) for f in run.queue_log
             if f[4] in ("COMPLETEAGENT", "COMPLETECALLER")}
    for call in queued(run.truth):
        if call.outcome != t.ANSWERED or call.ended_by == "crash":
            continue  # a crash ends a call without a word
        stored = run.of("complete", call_id=call.uniqueid)
        if inside(ended[call.uniqueid], gap):
            assert len(stored) <= 1, call.call
            continue
        (complete,) = stored
        assert complete["agent"] == call.agent, call.call
        assert complete["orig_position"], call.call  # the entry position, rebuilt or seen


def test_abandons_are_what_the_events_say(run):
    gap = run.outage("listener")
    for call in queued(run.truth):
        if call.outcome == t.ABANDONED:
            (abandon,) = run.of("abandon", call_id=call.uniqueid) or [None]
            if abandon is None:
                assert inside(call.started_at + call.wait_s, gap), call.call
            else:
                assert not json.loads(abandon["extra"] or "{}"), call.call
    # the queue has no timeout and never went empty: no caller was sent away
    assert run.of("exit-timeout") == run.of("exit-empty") == []


def test_the_restart_and_what_it_did_to_waiting_callers_are_recorded(run):
    restart = run.outage("restart")
    (shutdown,) = run.of("shutdown")
    assert (shutdown["reason"], shutdown["value"]) == ("cleanly", "restart")
    assert restart.start <= shutdown["ts"] <= restart.end
    closed = {c.uniqueid for c in queued(run.truth)
              if c.ended_by == "restart" and c.outcome == t.CLOSED}
    marked = {e["call_id"] for e in run.of("abandon")
              if json.loads(e["extra"] or "{}") == {"hangup": "shutdown"}}
    assert marked == closed and closed


def test_members_are_listed_at_every_login_as_asterisk_restored_them(run):
    restart = run.outage("restart")
    after = [e for e in run.of("member-state") if restart.start < e["ts"] <= restart.end + 5]
    agents = {a.agent: a for a in run.truth.agents}
    assert {e["agent"] for e in after} == set(agents)
    for state in after:
        pauses = [p for p in agents[state["agent"]].pauses  # ACW begins as calls are cut
                  if p.start < state["ts"] and (p.end is None or p.end > state["ts"])]
        want = ("paused", pauses[-1].reason) if pauses else ("", "")
        assert (state["reason"], state["value"]) == want, state["agent"]
    # one login after each outage (at the first one no agent had logged in yet)
    assert len({e["tsec"] for e in run.of("member-state")}) == len(run.truth.outages)


def test_each_outage_is_one_gap_dated_as_it_happened(run):
    gaps = sorted(run.of("ami-gap"), key=lambda e: e["ts"])
    assert len(gaps) == 3
    by_start = {o.kind: o for o in run.truth.outages}
    listener, crash, restart = gaps
    killed = by_start["listener"]
    # dated from the last moment the killed listener had stored what it heard
    assert killed.start - PING_S - SLACK_S <= listener["ts"] <= killed.start
    assert listener["ts"] + listener["talk_s"] >= killed.end - SLACK_S
    assert listener["reason"] == "listener not running"
    for gap, outage in ((crash, by_start["crash"]), (restart, by_start["restart"])):
        assert outage.start - PING_S - SLACK_S <= gap["ts"] <= outage.end
        assert gap["ts"] + gap["talk_s"] >= outage.end - 2 * SLACK_S


# ------------------------------------------------------------------ the report
def downtime(run: Run) -> list[tuple[float, float]]:
    """When the PBX was down, as the KPI rule has it: from the PBX's last event before each
    QUEUESTART (after the first) to that QUEUESTART — a queue_log line or an AMI event (the
    Shutdown of a graceful restart comes after its last queue_log line)."""
    starts = [float(f[0]) for f in run.queue_log if f[4] == "QUEUESTART"]
    heard = [float(f[0]) for f in run.queue_log if f[4] != "QUEUESTART"]
    heard += [e["ts"] for e in run.events if e["kind"] != "ami-gap"]
    return [(max(before), start) for start in starts
            if (before := [ts for ts in heard if ts < start])]


def minus(start: float, end: float, down: list[tuple[float, float]]) -> float:
    return end - start - sum(max(0.0, min(end, b) - max(start, a)) for a, b in down)


def test_the_report_equals_the_truth_across_the_faults(run):
    calls = queued(run.truth)
    totals = run.report["totals"]
    outcomes = collections.Counter(c.outcome for c in calls)
    assert totals["offered"] == len(calls)
    for key in ("answered", "abandoned", "closed"):
        assert totals[key] == outcomes[key], key
    answered = [c for c in calls if c.outcome == t.ANSWERED]
    # a crash leaves CONNECT without an end: answered, its talk unknown (docs/kpis.md:
    # "handled" calls, the ones whose talk is known, are what talk and hold are averaged over)
    crashed = [c for c in answered if c.ended_by == "crash"]
    handled_calls = [c for c in answered if c.ended_by != "crash"]
    held = sum(1 for c in handled_calls if c.hold_s > 0)
    assert totals["hold_rate_pct"] == pytest.approx(100 * held / len(handled_calls), abs=0.001)
    assert totals["ended_by_restart"] == len(crashed) > 0
    down = downtime(run)
    assert len(down) == 2  # the crash and the restart
    end = run.truth.finished_at
    for agent in run.truth.agents:
        got = run.report["agents"][agent.agent]
        staffed = sum(minus(s.login, s.logout or end, down) for s in agent.sessions)
        breaks = sum(minus(p.start, p.end or end, down) for p in agent.pauses
                     if p.reason != "ACW")
        acw = sum(minus(p.start, p.end or end, down) for p in agent.pauses
                  if p.reason == "ACW")
        handled = acw + sum(c.talk_s for c in answered  # talk_s includes the hold
                            if c.agent == agent.agent and c.ended_by != "crash")
        assert got["staffed_s"] == pytest.approx(staffed, abs=2 * SLACK_S), agent.agent
        assert got["paused_s"] == pytest.approx(breaks, abs=2 * SLACK_S), agent.agent
        assert got["occupancy_pct"] == pytest.approx(100 * handled / (staffed - breaks),
                                                      abs=5), agent.agent
