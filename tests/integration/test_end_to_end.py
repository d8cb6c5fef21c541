"""The whole product against the real Asterisk, run as an admin runs it: `callkpi listen`,
`callkpi agi` and `callkpi tail` as processes beside the sandbox PBX while the simulator drives a
scenario through the product dialplan, then a queue_log catch-up (`callkpi ingest`) and
`callkpi report`. What the report says must be what the simulator's ground truth says happened:
every count exact, every per-call duration within 1 s (Asterisk counts whole seconds) plus 0.1 s
for the moment between a simulated person acting and Asterisk stamping it.

This run goes once into SQLite and once into PostgreSQL: it is where every writer (tail,
listen, agi, ingest) and the report meet one store. The other real-Asterisk tests check their
source alone on SQLite (the unit tests run each source on both backends), which keeps the CI
run well within its time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulator import truth as t
from simulator.runner import run_scenario
from simulator.scenario import load_scenario
from store_helpers import agi_spool, fetch_now

pytestmark = pytest.mark.integration

TOLERANCE_S = 1.1
ROUNDING = 0.0005  # the report rounds to 3 decimals
CALLKPI = str(Path(sys.executable).parent / "callkpi")
SERVER = "e2e"
QUESTIONS = {"q1": ("csat", "12345"), "q2": ("resolution", "12")}
FACTS = ("call_id", "queue", "outcome", "wait_s", "agent", "disposition", "talk_s", "hold_s",
         "acw_s")  # the queue_calls columns checked against the truth


def write_config(tmp_path: Path, url: str, asterisk) -> Path:
    questions = "".join(
        f'[[survey.questions]]\nid = "{qid}"\nkind = "{kind}"\nprompt = "beep"\n'
        f'digits = "{digits}"\ntimeout_s = 3\nretries = 1\n'
        for qid, (kind, digits) in QUESTIONS.items())
    config = tmp_path / "callkpi.toml"
    config.write_text(
        f'[server]\nname = "{SERVER}"\n[store]\ndb = "{url}"\n'
        f'[queue_log]\npath = "{asterisk.queue_log_path}"\npoll_s = 0.2\n'
        f'[ami]\nhost = "{asterisk.ami_host}"\nport = {asterisk.ami_port}\n'
        f'username = "{asterisk.listener_user}"\n'
        f'[agi]\nport = {asterisk.agi_port}\n'
        f'[survey]\nannounce_text = true\n{questions}')
    return config


@dataclass
class Run:
    truth: t.Truth
    report: dict
    facts: dict[str, dict]  # call_id -> the queue_calls row
    sources: dict[str, collections.Counter]  # kind -> events stored per source
    twice: list[tuple]  # queue events stored more than once (any source, a second apart)
    answers: dict[str, dict[str, tuple[str, str]]]  # call_id -> question -> (value, reason)
    logs: str


def callkpi(config: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([CALLKPI, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=120, **kw)


async def start(config: Path, env: dict, *args: str) -> asyncio.subprocess.Process:
    log = (config.parent / f"{args[0]}.log").open("w")
    return await asyncio.create_subprocess_exec(CALLKPI, "--config", str(config), *args,
                                                env=env, stdout=log, stderr=log)


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 20)


@pytest.fixture(scope="module")
def run(asterisk, module_store_url, tmp_path_factory) -> Run:
    tmp_path, url = tmp_path_factory.mktemp("e2e"), module_store_url
    config = write_config(tmp_path, url, asterisk)
    _, env = agi_spool(url, tmp_path)
    env["CALLKPI_AMI_SECRET"] = asterisk.listener_secret

    async def drive() -> t.Truth:
        services = [await start(config, env, "agi"), await start(config, env, "listen"),
                    await start(config, env, "tail")]
        try:
            await asyncio.sleep(2)  # logged in, listening, following
            for proc in services:
                assert proc.returncode is None, (config.parent / "agi.log").read_text()
            return await run_scenario(load_scenario("smoke"), asterisk.ami_host,
                                      asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret)
        finally:
            await asyncio.sleep(1.5)  # the last lines reach the store
            codes = [await stop(proc) for proc in services]
            assert codes == [0, 0, 0], codes

    asterisk.reset_logs()
    truth = asyncio.run(drive())
    assert truth.complete, truth.problems
    catch_up = callkpi(config, "ingest", str(asterisk.queue_log_path))
    assert catch_up.returncode == 0, catch_up.stderr
    day = time.strftime("%Y-%m-%d", time.gmtime(truth.started_at))
    report = callkpi(config, "report", "--from", day, "--to", day, "--format", "json")
    assert report.returncode == 0, report.stderr
    facts = {r[0]: dict(zip(FACTS, r))
             for r in fetch_now(url, f"SELECT {', '.join(FACTS)} FROM queue_calls")}
    sources: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for kind, source, n in fetch_now(url, "SELECT kind, source, count(*) FROM events"
                                          " GROUP BY kind, source"):
        sources[kind][source] = n
    twice = fetch_now(
        url,
        "SELECT a.call_id, a.kind, a.tsec, a.source, b.source FROM events a JOIN events b"
        " ON a.call_id = b.call_id AND a.kind = b.kind AND a.queue = b.queue"
        " AND a.agent = b.agent AND a.discr = b.discr AND b.tsec BETWEEN a.tsec - 1 AND a.tsec + 1"
        " AND b.id > a.id WHERE a.call_id <> ''")
    answers: dict[str, dict[str, tuple[str, str]]] = collections.defaultdict(dict)
    for call_id, discr, value, reason in fetch_now(
            url, "SELECT call_id, discr, value, reason FROM events"
                 " WHERE kind = 'survey-answer'"):
        answers[call_id][discr] = (value, reason)
    logs = "".join((tmp_path / f"{n}.log").read_text() for n in ("agi", "listen", "tail"))
    return Run(truth, json.loads(report.stdout), facts, dict(sources), twice, dict(answers),
               logs)


def queued(truth: t.Truth) -> list[t.CallTruth]:
    return [c for c in truth.calls if c.queue]


def test_every_queue_call_has_the_truths_outcome_and_durations(run):
    calls = queued(run.truth)
    assert {c.uniqueid for c in calls} == set(run.facts)
    for call in calls:
        fact = run.facts[call.uniqueid]
        assert (fact["queue"], fact["outcome"]) == (call.queue, call.outcome), call.call
        assert abs(fact["wait_s"] - call.wait_s) <= TOLERANCE_S, call.call
        if call.outcome != t.ANSWERED:
            continue
        assert fact["agent"] == call.agent
        assert fact["disposition"] == call.disposition  # the code Asterisk logged
        assert abs(fact["hold_s"] - call.hold_s) <= TOLERANCE_S, call.call
        # the truth's talk is the bridged time; callkpi's talk excludes the hold
        assert abs(fact["talk_s"] + fact["hold_s"] - call.talk_s) <= TOLERANCE_S, call.call
        assert abs(fact["acw_s"] - call.acw_s) <= TOLERANCE_S, call.call


def test_both_sources_ran_and_nothing_is_stored_twice(run):
    # queue_log (tail + catch-up) is the record; AMI added what only it has; AGI the answers
    assert run.sources["enter-queue"] == {"queue_log": len(queued(run.truth))}
    assert run.sources["hold"]["ami"] == sum(1 for c in run.truth.calls if c.hold_s > 0)
    assert set(run.sources["survey-answer"]) == {"agi"}
    assert run.twice == []


def test_report_totals_equal_the_truth(run):
    calls = queued(run.truth)
    totals = run.report["totals"]
    outcomes = collections.Counter(c.outcome for c in calls)
    assert totals["offered"] == len(calls)
    for key in ("answered", "abandoned", "timeout", "exit_key", "exit_empty"):
        assert totals[key] == outcomes[key], key
    answered = [c for c in calls if c.outcome == t.ANSWERED]
    assert abs(totals["asa_s"] - statistics.mean(c.wait_s for c in answered)) <= TOLERANCE_S
    assert abs(totals["avg_hold_s"] - statistics.mean(c.hold_s for c in answered)) <= TOLERANCE_S
    sales = sum(1 for c in answered if c.disposition == "sale")
    assert totals["conversion_rate_pct"] == pytest.approx(100 * sales / len(answered),
                                                          abs=ROUNDING)
    everyone = [c for c in run.truth.calls if c.outcome != t.NOT_STARTED]
    assert totals["ivr_calls"] == len(everyone)
    contained = sum(1 for c in everyone if c.outcome == t.IVR_SELF_SERVICE)
    assert totals["ivr_contained_pct"] == pytest.approx(100 * contained / len(everyone),
                                                        abs=ROUNDING)
    for agent in run.truth.agents:
        mine = sum(1 for c in answered if c.agent == agent.agent)
        assert run.report["agents"].get(agent.agent, {}).get("answered", 0) == mine


def expected_answer(answer: str, digits: str) -> tuple[str, str]:
    """The truth's last answer to a question is how the survey ended for it."""
    if answer == "hangup":
        return "", "hangup"
    if answer == "none":
        return "", "no-response"
    if answer in digits:
        return answer, "answered"
    return ("" if answer == "invalid" else answer), "invalid"


def test_survey_answers_and_csat_equal_the_truth(run):
    answered = [c for c in queued(run.truth) if c.outcome == t.ANSWERED]
    endings = {expected_answer(a, QUESTIONS[q][1])[1] for c in answered
               for q, a in c.survey.items()}
    assert {"answered", "invalid", "hangup"} <= endings  # the scenario's seed makes them happen
    scores = []
    resolved = []
    for call in answered:
        want = {q: expected_answer(a, QUESTIONS[q][1]) for q, a in call.survey.items()}
        got = run.answers.get(call.uniqueid, {})
        assert {q: got[q][1] for q in got} == {q: w[1] for q, w in want.items()}, call.call
        for q, (value, reason) in want.items():
            if reason == "answered":
                assert got[q][0] == value, (call.call, q)
                (scores if q == "q1" else resolved).append(value)
    totals = run.report["totals"]
    if scores:
        good = sum(1 for s in scores if int(s) >= 4)
        assert totals["csat_pct"] == pytest.approx(100 * good / len(scores), abs=ROUNDING)
    if resolved:
        assert totals["fcr_survey_pct"] == pytest.approx(
            100 * resolved.count("1") / len(resolved), abs=ROUNDING)


def test_the_services_logged_no_secret_and_no_traceback(run, asterisk):
    assert asterisk.listener_secret not in run.logs
    assert "Traceback" not in run.logs
