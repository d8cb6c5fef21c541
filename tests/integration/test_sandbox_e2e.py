"""End to end through the real Asterisk: the smoke scenario runs through the product dialplan
(asterisk_conf/) and the queue_log Asterisk writes must match the simulator's ground truth:
every count exact, every duration within 1 s (queue_log counts whole seconds) plus 0.1 s for
the moment between a simulated person acting and Asterisk stamping it.

The survey here is answered by `SurveyResponder`, a minimal FastAGI responder speaking the
agreed protocol (SEND TEXT "SURVEY:<question>" before each GET DATA), so the simulated
callers' key presses can be checked; the product's survey server (agi_plugin/) and the
queue_log ingest and KPIs are wired into this test by the lead.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from simulator.ami import AmiClient
from simulator.runner import run_scenario
from simulator.sandbox import SandboxError
from simulator.scenario import load_scenario
from simulator.truth import Truth

pytestmark = pytest.mark.integration

TOLERANCE_S = 1.1
QUESTIONS = ("q1", "q2", "q3")


class SurveyResponder:
    """Asks QUESTIONS over FastAGI and records what each caller pressed, per caller uniqueid."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, str]] = {}
        self.args: dict[str, list[str]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        env = {}
        while line := (await reader.readline()).decode().strip():
            key, _, value = line.partition(":")
            env[key] = value.strip()
        uniqueid = env["agi_arg_1"]
        self.args[uniqueid] = [env.get(f"agi_arg_{i}", "") for i in (1, 2, 3)]
        answers = self.answers.setdefault(uniqueid, {})
        try:
            for question in QUESTIONS:
                await self._command(reader, writer, f'SEND TEXT "SURVEY:{question}"')
                reply = await self._command(reader, writer, "GET DATA beep 3000 1")
                if not reply.startswith("200") or "result=-1" in reply:  # the caller hung up
                    answers[question] = "hangup"
                    break
                digits = reply.split("result=", 1)[1].split(" ", 1)[0]
                answers[question] = ("none" if "(timeout)" in reply or not digits
                                     else "invalid" if digits == "*" else digits)
        except ConnectionError:
            answers[question] = "hangup"
        writer.close()

    async def _command(self, reader, writer, command: str) -> str:
        writer.write(f"{command}\n".encode())
        await writer.drain()
        while True:
            line = (await reader.readline()).decode().strip()
            if not line:
                raise ConnectionError("AGI session closed")
            if line != "HANGUP":  # Asterisk's unsolicited notice that the caller hung up
                return line


def read_queue_log(path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text().splitlines() if line]


@dataclasses.dataclass
class SmokeRun:
    truth: Truth
    survey: SurveyResponder
    rows: list[list[str]]  # the queue_log Asterisk wrote during the run


@pytest.fixture(scope="module")
def smoke(asterisk) -> SmokeRun:
    """One run of the smoke scenario (~1 minute) shared by the tests that check it."""

    async def run() -> tuple[Truth, SurveyResponder]:
        responder = SurveyResponder()
        server = await asyncio.start_server(responder.handle, "127.0.0.1", asterisk.agi_port)
        try:
            return await run_scenario(load_scenario("smoke"), asterisk.ami_host, asterisk.ami_port,
                                      asterisk.ami_user, asterisk.ami_secret), responder
        finally:
            server.close()

    asterisk.reset_logs()
    truth, responder = asyncio.run(run())
    assert truth.complete, truth.problems
    return SmokeRun(truth, responder, read_queue_log(asterisk.queue_log_path))


def rows_of(rows, callid):
    return {r[4]: r for r in rows if r[1] == callid}


def assert_close(actual: str, expected: float | None, what: str) -> None:
    assert expected is not None, what
    assert abs(int(actual) - expected) <= TOLERANCE_S, f"{what}: queue_log {actual}, truth {expected}"


QUEUE_END = {"answered": "CONNECT", "abandoned": "ABANDON", "timeout": "EXITWITHTIMEOUT",
             "exit_key": "EXITWITHKEY", "exit_empty": "EXITEMPTY"}


def test_smoke_queue_log_matches_truth(smoke):
    truth, rows = smoke.truth, smoke.rows
    outcomes = collections.Counter(c.outcome for c in truth.calls)
    # the scenario's seed makes these happen on every run
    assert {"answered", "abandoned", "ivr_self_service", "ivr_hangup", "exit_empty"} <= set(outcomes)
    verbs = collections.Counter(r[4] for r in rows)
    assert verbs["ENTERQUEUE"] == sum(n for o, n in outcomes.items() if o in QUEUE_END)
    for outcome, verb in QUEUE_END.items():
        assert verbs[verb] == outcomes[outcome], verb
    assert verbs["COMPLETEAGENT"] + verbs["COMPLETECALLER"] == outcomes["answered"]
    assert verbs["IVREXIT"] == len(truth.calls)
    assert verbs["DISPOSITION"] == outcomes["answered"]
    for call in truth.calls:
        check_call(call, rows_of(rows, call.uniqueid))


def check_call(call, mine: dict[str, list[str]]) -> None:
    ivr = mine["IVREXIT"][5:]
    if call.outcome == "ivr_self_service":
        assert ivr == ["self-service", "hours", ""] and "ENTERQUEUE" not in mine
        return
    if call.outcome == "ivr_hangup":
        assert ivr == ["hangup", "main", ""] and "ENTERQUEUE" not in mine
        return
    assert ivr == ["to-queue", "main", call.queue]
    assert mine["ENTERQUEUE"][2] == call.queue and mine["ENTERQUEUE"][6] == call.caller_number
    if call.outcome == "answered":
        connect = mine["CONNECT"]
        complete = mine.get("COMPLETEAGENT") or mine["COMPLETECALLER"]
        assert connect[3] == complete[3] == call.agent
        assert_close(connect[5], call.wait_s, f"{call.call} wait")
        assert_close(complete[6], call.talk_s, f"{call.call} talk")
        assert mine["DISPOSITION"][2:4] == [call.queue, call.agent]
        assert mine["DISPOSITION"][5] == call.disposition
    elif call.outcome == "exit_key":
        assert mine["EXITWITHKEY"][5] == "0"
        assert_close(mine["EXITWITHKEY"][8], call.wait_s, f"{call.call} wait")
    else:
        assert_close(mine[QUEUE_END[call.outcome]][7], call.wait_s, f"{call.call} wait")


def test_smoke_agents_match_truth(smoke):
    truth, rows = smoke.truth, smoke.rows
    for agent in truth.agents:
        logins = [r[2] for r in rows if r[3] == agent.agent and r[4] == "ADDMEMBER"]
        logouts = [r[2] for r in rows if r[3] == agent.agent and r[4] == "REMOVEMEMBER"]
        assert sorted(logins) == sorted(logouts) == sorted(s.queue for s in agent.sessions)
        for reason in {p.reason for p in agent.pauses}:
            pauses = [p for p in agent.pauses if p.reason == reason]
            logged = [r for r in rows if r[3] == agent.agent and r[4] == "PAUSE" and r[5] == reason]
            assert len(logged) == len(pauses) * len(agent.queues), (agent.agent, reason)
        assert_pause_durations(agent, rows)


def assert_pause_durations(agent, rows) -> None:
    queue = agent.queues[0]
    mine = [r for r in rows if r[3] == agent.agent and r[2] == queue and r[4] in ("PAUSE", "UNPAUSE")]
    logged = [int(end[0]) - int(start[0]) for start, end in zip(mine[::2], mine[1::2])]
    assert [r[4] for r in mine] == ["PAUSE", "UNPAUSE"] * len(agent.pauses)
    for seconds, pause in zip(logged, agent.pauses):
        assert abs(seconds - (pause.end - pause.start)) <= TOLERANCE_S, (agent.agent, pause)


def test_smoke_survey_keys_reach_the_survey(smoke):
    answered = [c for c in smoke.truth.calls if c.outcome == "answered"]
    assert any(c.survey for c in answered)
    for call in answered:
        assert smoke.survey.args[call.uniqueid] == [call.uniqueid, call.queue, call.agent]
        assert smoke.survey.answers[call.uniqueid] == call.survey, call.call


async def test_wrapup_codes_pause_and_unpause_with_acw(asterisk):
    """*48/*49 from an agent's phone: PAUSE|ACW and UNPAUSE in queue_log, QueueMemberPause on AMI."""
    events: list[dict] = []
    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret,
                    on_event=events.append)
    await ami.connect()
    interface = "Local/1099@sim-agents/n"
    try:
        asterisk.reset_logs()
        await ami.action("QueueAdd", Queue="support", Interface=interface, MemberName="Agent 1099")
        # what callkpi-agent-connect stores when the agent answers a queue call
        await ami.action("DBPut", Family="callkpi/1099", Key="interface", Val=interface)
        for code in ("*48", "*49"):
            await ami.action("Originate", Channel="Local/s@sim-phone/n", Context="callkpi-agent-codes",
                             Exten=code, Priority="1", CallerID="<1099>", Async="true")
            await asyncio.sleep(1)
    finally:
        await ami.action("QueueRemove", Queue="support", Interface=interface)
        await ami.close()
    rows = [r[2:6] for r in read_queue_log(asterisk.queue_log_path) if r[3] == "Agent 1099"]
    assert ["support", "Agent 1099", "PAUSE", "ACW"] in rows
    assert ["support", "Agent 1099", "UNPAUSE", ""] in rows
    pauses = [e for e in events if e["Event"] == "QueueMemberPause" and e["Paused"] == "1"]
    assert pauses and pauses[0]["PausedReason"] == "ACW"


async def test_listener_account_reads_but_cannot_act(asterisk):
    """The product's [callkpi] AMI account may Ping, read events and ask what is live
    (QueueStatus, Status: write = reporting), never act on a call, a member or the PBX."""
    ami = AmiClient(asterisk.ami_host, asterisk.ami_port, asterisk.listener_user,
                    asterisk.listener_secret)
    await ami.connect()
    try:
        for allowed in ("Ping", "QueueStatus", "Status"):
            assert (await ami.action(allowed))["Response"] == "Success", allowed
        for action, headers in (
                ("Originate", {"Channel": "Local/s@sim-phone/n", "Application": "Wait",
                               "Data": "1"}),
                ("Hangup", {"Channel": "Local/s@sim-phone-00000000;1"}),
                ("Redirect", {"Channel": "x", "Exten": "s", "Context": "c", "Priority": "1"}),
                ("QueuePause", {"Interface": "Local/1001@sim-agents/n", "Paused": "true"}),
                ("QueueAdd", {"Queue": "support", "Interface": "Local/1001@sim-agents/n"}),
                ("Command", {"Command": "core show uptime"}),
                ("Setvar", {"Variable": "X", "Value": "1"}),
                ("Reload", {})):
            refused = await ami.action(action, **headers)
            assert refused["Response"] == "Error", action
            assert "Permission denied" in refused["Message"], action
    finally:
        await ami.close()


def test_sandbox_cli_reports_the_running_sandbox(asterisk):
    ports = ["--ami-port", str(asterisk.ami_port), "--agi-port", str(asterisk.agi_port)]
    status = CliRunner().invoke(cli, ["sandbox", "status", *ports])
    assert status.exit_code == 0 and status.output.startswith("running: pid ")
    paths = CliRunner().invoke(cli, ["sandbox", "paths", *ports])
    assert f"QUEUE_LOG={asterisk.queue_log_path}" in paths.output
    assert "secret" not in (status.output + paths.output).lower()


def test_sandbox_start_is_idempotent_and_refuses_other_settings(asterisk):
    asterisk.sandbox.start()  # same settings: nothing to do
    other = dataclasses.replace(asterisk.sandbox, ami_port=asterisk.ami_port + 1)
    with pytest.raises(SandboxError, match="already running .* with other settings"):
        other.start()
    assert "support" in asterisk.rx("queue show support")


def test_warm_restart_takes_seconds(asterisk):
    """A warm sandbox (chroot installed, cache filled) is back, AMI answering, well within 30 s."""
    started = time.monotonic()
    asterisk.restart()
    assert time.monotonic() - started < 30
    assert "support" in asterisk.rx("queue show support")
