"""The simulator's scenarios, call plans and truth file, and the CLI's error handling (the
runs themselves are in tests/integration/test_sandbox_e2e.py, against the real Asterisk)."""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from simulator.controls import Controls
from simulator.runner import DISPOSITION_NAMES, SimulationError, run_scenario
from simulator.sandbox import Sandbox
from simulator.scenario import ScenarioError, load_scenario, plan_calls
from simulator.truth import CallTruth, OutageTruth, Truth


@pytest.mark.parametrize("name", ["smoke", "busy"])
def test_shipped_scenarios_load_and_plan_the_same_calls_every_time(name):
    scenario = load_scenario(name)
    plan = plan_calls(scenario)
    assert plan == plan_calls(scenario)
    assert 10 <= len(plan) <= scenario.max_calls
    assert [c.at_s for c in plan] == sorted(c.at_s for c in plan)
    assert len({c.caller_number for c in plan}) == len(plan)


def test_smoke_plan_covers_every_way_to_leave():
    plan = plan_calls(load_scenario("smoke"))
    assert {"1", "2", "3", "hangup"} <= {c.ivr for c in plan}
    assert any(c.exit_key_after_s for c in plan if c.queue)
    assert any(c.hold_s for c in plan)
    assert {"digit", "invalid", "none", "hangup"} == {a if not a.isdigit() else "digit"
                                                       for c in plan for a in c.survey}


def test_an_ivr_leaver_has_no_queue():
    for call in plan_calls(load_scenario("smoke")):
        assert (call.queue == "") == (call.ivr in ("3", "hangup"))


@pytest.mark.parametrize("text, message", [
    ("arrivals_s = 1\n[[queue]]\nname='q'\ndigit='1'\ncalls_per_min=1\n", "'agents'"),
    ("arrivals_s = 1\nbogus = 2\n[[queue]]\nname='q'\ndigit='1'\ncalls_per_min=1\n"
     "[[agents]]\nextension='1001'\nname='A'\nqueues=['q']\n", "unknown key 'bogus'"),
    ("arrivals_s = 1\n[[queue]]\nname='q'\ndigit='1'\ncalls_per_min=1\n"
     "[[agents]]\nextension='agent1'\nname='A'\nqueues=['q']\n", "must be 4 digits"),
    ("arrivals_s = 1\n[agent]\nring_s = [1, 9]\n[[queue]]\nname='q'\ndigit='1'\ncalls_per_min=1\n"
     "[[agents]]\nextension='1001'\nname='A'\nqueues=['q']\n", "ring_s must stay under 5 s"),
    ("arrivals_s = [", "invalid TOML"),
])
def test_a_bad_scenario_names_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


FAULTS = """
arrivals_s = 10
[[queue]]
name = "q"
digit = "1"
calls_per_min = 6
[[agents]]
extension = "1001"
name = "A"
queues = ["q"]
[[timeline]]
at_s = 3
action = "listener-kill"
for_s = 5
[[timeline]]
at_s = 4
action = "restart"
[[timeline]]
at_s = 6
action = "crash"
for_s = 1
[[timeline]]
at_s = 2
agent = 1001
action = "pause"
for_s = 2
"""


def test_the_timeline_orders_faults_beside_the_agents_actions(tmp_path):
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS)
    timeline = load_scenario(path).timeline
    assert [(a.action, a.agent, a.for_s, a.is_fault) for a in timeline] == [
        ("listener-kill", "", 5.0, True), ("restart", "", 0.0, True), ("crash", "", 1.0, True),
        ("pause", "1001", 2.0, False)]


@pytest.mark.parametrize("entry, message", [
    ('at_s = 1\naction = "restart"\nagent = "1001"', "a restart names no agent"),
    ('at_s = 1\naction = "pause"\nfor_s = 1', "unknown agent ''"),
    ('at_s = 1\naction = "reboot"', "unknown action"),
])
def test_a_bad_timeline_entry_names_the_problem(tmp_path, entry, message):
    path = tmp_path / "bad.toml"
    path.write_text(FAULTS.split("[[timeline]]")[0] + "[[timeline]]\n" + entry + "\n")
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


async def test_faults_need_something_to_act_on(tmp_path):
    """Checked before the first call: a restart needs the sandbox, a listener-kill the
    listener's command line."""
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS)
    with pytest.raises(SimulationError, match="timeline at 3 s: a listener-kill needs the "
                                              "`callkpi listen` command to run"):
        await run_scenario(load_scenario(path), "127.0.0.1", 9, "u", "s",
                           controls=Controls(sandbox=Sandbox()))


def test_disposition_names_are_the_product_dialplan_s():
    """The truth names dispositions as asterisk_conf/extensions.conf does."""
    text = (resources.files("asterisk_conf") / "extensions.conf").read_text()
    section = text.split("[callkpi-disposition-names]", 1)[1]
    names = {}
    for line in section.splitlines():
        if line.startswith("exten => "):
            digits, rest = line.removeprefix("exten => ").split(",1,Return(", 1)
            names[digits] = rest.rstrip(")")
    assert names == DISPOSITION_NAMES


def test_truth_round_trips_through_json(tmp_path):
    truth = Truth("x", 1, started_at=1.0, calls=[CallTruth("c1", "1.1", "5550001", "support",
                                                            "main", "answered", survey={"q1": "4"},
                                                            hold_at=3.5, ended_by="restart")],
                  outages=[OutageTruth("restart", 10.0, 14.5)])
    path = tmp_path / "t.json"
    truth.write(path)
    assert dataclasses.asdict(Truth.read(path)) == dataclasses.asdict(truth)


def test_simulate_with_a_missing_scenario_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(cli, ["simulate", str(tmp_path / "nope.toml"), "--out",
                                      str(tmp_path / "t.json")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: scenario file {tmp_path / 'nope.toml'} does not exist"


def test_simulate_without_a_pbx_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(cli, ["simulate", "smoke", "--out", str(tmp_path / "t.json"),
                                      "--ami-port", "1"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach AMI at 127.0.0.1:1")
    assert "Traceback" not in result.output
