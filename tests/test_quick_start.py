"""README's quick start, command for command: the sample (two recorded runs of the sandbox
Asterisk, the second with the post-call survey, and a roster) gives a report in which every
KPI a new user looks for is filled in, wherever the machine's clock is set."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agi_plugin.spool import read_segment
from simulator.truth import Truth

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent  # this checkout's venv: the README's .venv/bin


def quick_start_commands() -> list[list[str]]:
    """The callkpi commands of the README's quick-start line (the venv and pip install before
    them are how this checkout was set up already)."""
    section = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1]
    line = next(s.strip() for s in section.splitlines() if s.startswith("    python3 -m venv"))
    commands = [shlex.split(part) for part in line.split("&&")]
    assert [c[0] for c in commands[:2]] == ["python3", ".venv/bin/pip"]
    assert all(c[0] == ".venv/bin/callkpi" for c in commands[2:])
    return [[str(BIN / "callkpi"), *c[1:]] for c in commands[2:]]


# the machine's zone is the report's: the sample's days hold in the first and last zones
@pytest.mark.parametrize("zone", ["Pacific/Honolulu", "Pacific/Kiritimati"])
def test_the_quick_start_report_shows_every_kpi(tmp_path, zone):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLKPI_")} | {"TZ": zone}
    commands = quick_start_commands()
    for command in commands:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (command, done.stderr)
    report = commands[-1]
    assert report[1:2] == ["report"] and (tmp_path / "report.html").stat().st_size > 0
    as_json = [a for a in report if a not in ("html", "report.html", "--format", "--output")]
    done = subprocess.run([*as_json, "--format", "json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    totals = data["totals"]
    for kpi in ("service_level_pct", "asa_s", "abandon_rate_pct", "aht_s", "csat_pct",
                "csat_avg", "survey_response_rate_pct", "fcr_survey_pct",
                "conversion_rate_pct", "attrition_pct"):
        assert totals[kpi] is not None, kpi
    assert totals["leavers"] == 1 and totals["hires"] == 0
    # the first run's windows are over by the second: FCR of those days is settled
    assert data["fcr_settled"]["fcr_pct"] is not None and data["fcr_settled"]["resolved"] > 0
    assert data["survey"]["orphans"] == 0  # every answer found its call
    assert all(agent["csat_pct"] is not None for agent in data["agents"].values())
    page = (tmp_path / "report.html").read_text()
    for shown in ('data-kpi="csat_pct"', "(settled)", "Agent attrition"):
        assert shown in page, shown


def test_the_sample_s_survey_answers_are_what_its_callers_pressed():
    """The shipped answers against the simulated callers of the same run: each question's
    stored value and reason is how the caller's last action at it ended (docs/survey.md)."""
    truth = Truth.read(ROOT / "examples" / "truth-20261202.json")
    segment = read_segment(ROOT / "examples" / "survey-20261202.jsonl")
    assert segment.quarantined == []
    stored = {(e.call_id, e.discr): (e.value, e.reason) for e in segment.events}
    digits = {"q1": "12345", "q2": "12"}
    expected = {}
    for call in truth.calls:
        for question, action in call.survey.items():
            if action == "hangup":
                expected[call.uniqueid, question] = ("", "hangup")
            elif action == "none":
                expected[call.uniqueid, question] = ("", "no-response")
            elif action in digits[question]:
                expected[call.uniqueid, question] = (action, "answered")
            else:  # `*` is given as "invalid", another digit as itself
                expected[call.uniqueid, question] = ("" if action == "invalid" else action,
                                                     "invalid")
    assert stored == expected
    assert {reason for _, reason in stored.values()} == {"answered", "invalid", "hangup",
                                                          "no-response"}
