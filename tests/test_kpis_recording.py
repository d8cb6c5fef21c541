"""KPIs of a queue_log recorded from real Asterisk (examples/, a smoke run of the simulator
against the sandbox) checked against what the simulated callers and agents really did
(examples/truth.sample.json). queue_log stamps whole seconds and the simulator measures
fractions: durations agree within the second each end was rounded to."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from callkpi.config import Config
from queue_log_parser.ingest import ingest_paths
from reports.kpis import refresh_and_build
from simulator.truth import ABANDONED, ANSWERED, EXIT_EMPTY, EXIT_KEY, Truth
from test_facts_helpers import calls_by_id

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OUTCOMES = {ANSWERED: "answered", ABANDONED: "abandoned", EXIT_KEY: "exit_key",
            EXIT_EMPTY: "exit_empty"}


@pytest.fixture
def truth() -> Truth:
    return Truth.read(EXAMPLES / "truth.sample.json")


@pytest.fixture
async def report(store, truth) -> dict:
    await ingest_paths(store, [str(EXAMPLES / "queue_log.sample")], server="pbx",
                       batch_lines=1000)
    day = dt.datetime.fromtimestamp(truth.started_at, dt.timezone.utc).date()
    return await refresh_and_build(store, Config(), day, day)


async def test_every_queue_call_matches_the_truth(store, report, truth):
    facts = await calls_by_id(store)
    queued = [c for c in truth.calls if c.queue]
    assert len(facts) == len(queued) == 12
    for call in queued:
        fact = facts[f"{call.uniqueid}@{call.queue}"]
        assert fact["outcome"] == OUTCOMES[call.outcome], call.call
        assert fact["wait_s"] == pytest.approx(call.wait_s, abs=1.0), call.call
        if call.outcome == ANSWERED:
            assert fact["agent"] == call.agent
            assert fact["disposition"] == call.disposition
            # queue_log's calltime includes the agent's hold (AMI's, not in this file)
            assert fact["bridged_s"] == pytest.approx(call.talk_s, abs=1.0), call.call
            assert fact["acw_s"] == pytest.approx(call.acw_s, abs=1.0), call.call


async def test_totals_match_the_truth(report, truth):
    t = report["totals"]
    queued = [c for c in truth.calls if c.queue]
    answered = [c for c in queued if c.outcome == ANSWERED]
    assert t["offered"] == len(queued)
    assert t["answered"] == len(answered) == 7
    assert t["abandoned"] == sum(c.outcome == ABANDONED for c in queued) == 2
    assert t["exit_key"] == 1 and t["exit_empty"] == 2
    assert t["conversion_rate_pct"] == pytest.approx(
        100 * sum(c.disposition == "sale" for c in answered) / len(answered), abs=1e-3)
    true_asa = sum(c.wait_s for c in answered) / len(answered)
    assert t["asa_s"] == pytest.approx(true_asa, abs=1.0)
    true_acw = sum(c.acw_s for c in answered) / len(answered)
    assert t["avg_acw_s"] == pytest.approx(true_acw, abs=0.5)
    ivr = [c for c in truth.calls if c.ivr_node]
    assert t["ivr_calls"] == len(ivr) == 16
    assert t["ivr_contained_pct"] == pytest.approx(
        100 * sum(c.outcome == "ivr_self_service" for c in ivr) / len(ivr), abs=1e-3)
    assert t["ivr_hangup_pct"] == pytest.approx(
        100 * sum(c.outcome == "ivr_hangup" for c in ivr) / len(ivr), abs=1e-3)
    assert t["fcr_pending"] == 7  # the recording is a minute long: every window is open


async def test_agents_match_the_truth(report, truth):
    agents = report["agents"]
    assert set(agents) == {a.agent for a in truth.agents}
    for agent in truth.agents:
        staffed = sum(s.logout - s.login for s in agent.sessions)
        paused = sum(p.end - p.start for p in agent.pauses if p.reason not in ("ACW", "wrapup"))
        answered = [c for c in truth.calls if c.agent == agent.agent]
        got = agents[agent.agent]
        assert got["answered"] == len(answered)
        assert got["staffed_s"] == pytest.approx(staffed, abs=1.0 * len(agent.sessions))
        assert got["paused_s"] == pytest.approx(paused, abs=1.0)
        assert got["acw_s"] == pytest.approx(sum(c.acw_s for c in answered), abs=1.0)


async def test_every_scenario_recorded_on_asterisk_22(store):
    """examples/recordings/all-scenarios.queue_log: answered, ring-no-answer, hold,
    caller hang-up, abandon, timeout, two calls under queues.conf wrapuptime=2, a blind
    transfer and two survey calls, recorded from Asterisk 22.10.1."""
    path = RECORDINGS / "all-scenarios.queue_log"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    await ingest_paths(store, [str(path)], server="pbx", batch_lines=1000)
    config = Config()
    config.kpi.wrapup_s = {"sales": 2.0}  # as the recording's queues.conf
    day = dt.date(2026, 11, 24)
    report = await refresh_and_build(store, config, day, day)
    t = report["totals"]
    assert (t["offered"], t["answered"], t["abandoned"], t["timeout"], t["transferred"]) == (
        11, 9, 1, 1, 1)
    assert t["asa_s"] == pytest.approx(12 / 9, abs=1e-3)  # waits 9 (ring-no-answer), 3, 0...
    assert t["awt_s"] == pytest.approx(20 / 11, abs=1e-3)  # + abandon 4, timeout 4
    # sales: wrapup-1 capped by wrapup-2's connect 2 s later; the others full 2 s; support 0
    assert report["queues"]["sales"]["avg_acw_s"] == pytest.approx(2.0)
    assert report["queues"]["support"]["avg_acw_s"] == 0.0
    agents = report["agents"]
    assert agents["Agent 1002"]["ring_no_answer"] == 1
    # Agent 1009: member 2 s; break 0 s (auto-unpaused by the reason change), training 1 s
    assert (agents["Agent 1009"]["staffed_s"], agents["Agent 1009"]["paused_s"]) == (2.0, 1.0)
