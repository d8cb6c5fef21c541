"""`callkpi report`, `callkpi agents`, `callkpi facts` as a user runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.events import Kind
from reports.render_csv import render_csv
from store_helpers import no_store_error
from test_facts_helpers import Calls, epoch

T = epoch("2026-03-10T09:00:00+00:00")


@pytest.fixture
def env(tmp_path, make_store_url):
    config = tmp_path / "callkpi.toml"
    config.write_text('[report]\ntimezone = "Europe/Paris"\n[kpi]\nservice_level_s = 15\n')
    return {"CALLKPI_CONFIG": str(config), "CALLKPI_DB": make_store_url(empty=True)}


@pytest.fixture
def loaded(env):
    c = Calls()
    c.answered("c1", "=HYPERLINK(\"http://x\")", "Agent 1", T, wait=10, talk=60,
               number="111")
    c.answered("c2", "support", "@Agent 2", T + 100, wait=30, talk=60, number="222")
    c.left(Kind.ABANDON, "c3", "support", T + 200, wait=40)
    asyncio.run(c.store_at(env["CALLKPI_DB"]))
    return env


def invoke(env, *args):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_report_json(loaded):
    result = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # (stderr: FCR is not settled yet)
    assert report["period"]["timezone"] == "Europe/Paris"
    assert report["settings"]["service_level_s"] == 15
    t = report["totals"]
    assert (t["offered"], t["answered"], t["abandoned"]) == (3, 2, 1)
    assert t["service_level_pct"] == pytest.approx(100 / 3, abs=1e-3)  # c1 within 15 s
    assert report["period"]["start"] == "2026-03-10T00:00:00+01:00"


def test_report_csv_tables_are_formula_safe(loaded, tmp_path):
    out = tmp_path / "queues.csv"
    result = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                    "--format", "csv", "--output", str(out))
    assert result.exit_code == 0 and result.stdout == f"report written to {out}\n"
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["queue"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "support"]
    assert rows[1]["offered"] == "2" and rows[1]["asa_s"] == "30.0"
    assert rows[1]["csat_pct"] == ""  # null
    agents = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                    "--format", "csv", "--csv-table", "agents").stdout
    assert [r["agent"] for r in csv.DictReader(io.StringIO(agents))] == ["'@Agent 2", "Agent 1"]
    intervals = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                       "--format", "csv", "--csv-table", "intervals", "--interval", "hour")
    rows = list(csv.DictReader(io.StringIO(intervals.stdout)))
    assert len(rows) == 24 and rows[10]["start"] == "2026-03-10T10:00:00+01:00"
    assert rows[10]["offered"] == "3"


def test_render_csv_escapes_every_formula_start():
    report = {"queues": {name: {"offered": 1} for name in
                         ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain")}}
    rows = list(csv.reader(io.StringIO(render_csv(report, "queues"))))
    assert [r[0] for r in rows[1:]] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx",
                                        "plain"]


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-02-30", "--to", "2026-03-01"], "'2026-02-30' is not a Gregorian date"),
    (["--from", "yesterday", "--to", "2026-03-01"], "'yesterday' is not a date"),
    (["--from", "2026-03-02", "--to", "2026-03-01"], "--to 2026-03-01 is before --from 2026-03-02"),
])
def test_report_bad_input_is_one_line(env, args, message):
    result = CliRunner().invoke(cli, ["report", *args], env=env)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "Error" in line]) == 1


def test_unknown_time_zone_is_one_line(tmp_path, env):
    config = tmp_path / "bad.toml"
    config.write_text('[report]\ntimezone = "Mars/Olympus"\n')
    result = CliRunner().invoke(cli, ["report", "--from", "2026-03-01", "--to", "2026-03-01"],
                                env={**env, "CALLKPI_CONFIG": str(config)})
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown time zone 'Mars/Olympus' in [report]"


def test_facts_command(loaded):
    assert invoke(loaded, "facts").output == "facts: 8 events read, 3 queue calls derived\n"
    assert invoke(loaded, "facts").output == "facts: up to date\n"
    assert invoke(loaded, "facts", "--rebuild").output.startswith("facts: 8 events read")


def test_agents_commands(env, tmp_path):
    assert invoke(env, "agents", "add", "Agent 1001", "--hired", "2025-01-06").exit_code == 0
    assert invoke(env, "agents", "leave", "Agent 1001", "--on", "2026-03-31").exit_code == 0
    roster = tmp_path / "roster.csv"
    roster.write_text("name,hired_on,left_on\nAgent 1002,2025-02-01,\n")
    assert invoke(env, "agents", "import", str(roster)).output == "imported 1 agents\n"
    assert invoke(env, "agents", "list").output == (
        "Agent 1001\thired 2025-01-06\tleft 2026-03-31\n"
        "Agent 1002\thired 2025-02-01\tleft -\n")
    result = CliRunner().invoke(cli, ["agents", "leave", "nobody", "--on", "2026-01-01"], env=env)
    assert result.exit_code == 1
    assert result.output == "Error: no agent named 'nobody' on the roster\n"
    result = CliRunner().invoke(cli, ["agents", "import", str(tmp_path / "none.csv")], env=env)
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read")


def test_report_html_goes_through_the_html_renderer(loaded, tmp_path):
    out = tmp_path / "report.html"
    result = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                    "--format", "html", "--output", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "support" in html and "Agent 1" in html  # the report dict reached the renderer


def test_report_of_a_missing_database_is_one_line(env):
    result = CliRunner().invoke(cli, ["report", "--from", "2026-03-01", "--to", "2026-03-01"],
                                env=env)
    assert result.exit_code == 1
    assert result.output == no_store_error(env["CALLKPI_DB"]) + "\n"


def test_report_html_uses_the_configured_title_and_targets(loaded, tmp_path):
    config = tmp_path / "callkpi.toml"
    config.write_text('[report]\ntimezone = "Europe/Paris"\ntitle = "Night <shift>"\n'
                      '[report.targets]\nasa_s = 17\n')
    out = tmp_path / "report.html"
    result = invoke(loaded, "report", "--from", "2026-03-10", "--to", "2026-03-10",
                    "--format", "html", "--output", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "Night &lt;shift&gt;" in html and "Night <shift>" not in html
    assert "target ≤ 17&nbsp;s" in html  # the configured ASA target, not the default 20 s
    assert "target ≤ 20&nbsp;s" not in html
