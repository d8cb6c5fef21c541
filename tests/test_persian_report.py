"""The Persian report as a manager in Tehran gets it, through the real commands and store:
the same numbers as the English one, periods typed in Jalali, Persian CSV headers, and the
nightly mail (subject, tiles, charts, tables) in Persian with Jalali dates."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import email
import email.policy
import io
import json
import re
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.events import Kind
from test_facts_helpers import Calls, epoch

T = epoch("2026-11-24T09:00:00+03:30")  # 3 Azar 1405, Tehran
DAY = 86400


@pytest.fixture
def env(tmp_path, store_url):
    config = tmp_path / "callkpi.toml"
    config.write_text('[report]\ntimezone = "Asia/Tehran"\n')
    return {"CALLKPI_CONFIG": str(config), "CALLKPI_DB": store_url}


@pytest.fixture
def loaded(env):
    c = Calls()
    for day in range(-3, 4):  # a week around 3 Azar, some calls every day
        t = T + day * DAY
        c.member("Agent 1", "support", t - 600, t + 3 * 3600)
        c.answered(f"a{day}", "support", "Agent 1", t, wait=10 + day, talk=120, number="111")
        c.answered(f"b{day}", "فروش", "کارشناس ۲", t + 900, wait=40, talk=200, number="222")
        c.left(Kind.ABANDON, f"c{day}", "support", t + 1800, wait=35, number="333")
        c.answer(f"a{day}", t + 140, "q1", "csat", "5" if day % 2 else "3")
    asyncio.run(c.store_at(env["CALLKPI_DB"]))
    return env


def invoke(env, *args):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout  # (stderr: the warnings beside the numbers)


def numbers(report: dict) -> dict:
    """The report without what may differ between two runs or two languages: when it was
    made, the calendar and the Jalali labels beside the Gregorian dates."""
    report = json.loads(json.dumps(report))
    report["period"].pop("generated_at")
    report["period"].pop("calendar")
    for row in [report["period"], *report["intervals"], *report["staffing"]]:
        for key in [k for k in row if k.endswith("_jalali")]:
            row.pop(key)
    return report


def test_the_persian_report_has_the_numbers_of_the_english_one(loaded):
    english = json.loads(invoke(loaded, "report", "--from", "2026-11-21", "--to",
                                "2026-11-27", "--format", "json"))
    persian = json.loads(invoke(loaded, "report", "--from", "1405-08-30", "--to",
                                "1405-09-06", "--locale", "fa", "--format", "json"))
    assert english["totals"]["offered"] == 21
    assert persian["period"]["calendar"] == "jalali"
    assert persian["period"] | {"from_jalali": "1405-08-30", "to_jalali": "1405-09-06",
                                "from": "2026-11-21", "to": "2026-11-27"} == persian["period"]
    assert numbers(persian) == numbers(english)
    assert persian["intervals"][1]["start_jalali"] == "1405-09-01T00:00:00+03:30"


def test_a_jalali_month_and_week_from_the_command_line(loaded):
    report = json.loads(invoke(loaded, "report", "--month", "۱۴۰۵-۰۹", "--interval", "week",
                               "--locale", "fa", "--format", "json"))
    assert (report["period"]["from"], report["period"]["to"]) == ("2026-11-22", "2026-12-21")
    weeks = [w["start_jalali"][:10] for w in report["intervals"]]
    assert weeks == ["1405-09-01", "1405-09-07", "1405-09-14", "1405-09-21", "1405-09-28"]
    assert [w["offered"] for w in report["intervals"]][:2] == [18, 0]  # 22..27 Nov; 28 Nov on
    gregorian = json.loads(invoke(loaded, "report", "--month", "2026-11", "--format", "json"))
    assert (gregorian["period"]["from"], gregorian["period"]["to"]) == ("2026-11-01",
                                                                        "2026-11-30")


@pytest.mark.parametrize("args, message", [
    (["--month", "1405-13"], "'1405-13' is not a month"),
    (["--from", "1404-12-30", "--to", "1405-01-01"], "'1404-12-30' is not a Jalali date"),
    (["--month", "1405-09", "--from", "1405-09-01", "--to", "1405-09-02"],
     "either --month or --from/--to"),
    (["--from", "1405-09-01"], "give --from and --to, or --month"),
])
def test_a_wrong_period_is_one_line(loaded, args, message):
    result = CliRunner().invoke(cli, ["report", *args], env=loaded)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_csv_of_a_persian_report_names_its_columns_in_persian(loaded):
    text = invoke(loaded, "report", "--from", "1405-09-03", "--to", "1405-09-03", "--locale",
                  "fa", "--format", "csv")
    assert text.startswith("\ufeff")  # a spreadsheet opens it as UTF-8
    rows = list(csv.reader(io.StringIO(text[1:])))
    assert rows[0][:3] == ["صف", "ورودی", "پاسخ‌داده‌شده"]
    english = list(csv.reader(io.StringIO(invoke(
        loaded, "report", "--from", "2026-11-24", "--to", "2026-11-24", "--format", "csv"))))
    assert rows[1:] == english[1:]  # values stay machine-readable: the same cells


def test_the_persian_html_report(loaded, tmp_path):
    out = tmp_path / "report.html"
    invoke(loaded, "report", "--from", "1405-08-30", "--to", "1405-09-06", "--locale", "fa",
           "--format", "html", "-o", str(out))
    page = out.read_text("utf-8")
    assert '<html lang="fa" dir="rtl">' in page
    assert "۳۰ آبان ۱۴۰۵ – ۶ آذر ۱۴۰۵" in page
    assert 'id="trend"' in page and "روزانه" in page  # the per-day trend of a week
    # hourly, waits, abandons, trend, staffing
    assert page.count('<img class="chart"') == 5


def test_the_nightly_mail_in_persian(loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = invoke(loaded, "email", "--from", "1405-09-03", "--to", "1405-09-03",
                    "--locale", "fa",
                    "--recipient", "manager@example.com", "--dry-run")
    eml = tmp_path / "callkpi-report-2026-11-24.eml"
    assert output == f"۳ آذر ۱۴۰۵: در \u2068{eml}\u2069 نوشته شد\n"  # the manager's language
    raw = eml.read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "گزارش مرکز تماس: سه‌شنبه ۳ آذر ۱۴۰۵"
    plain = message.get_body(("plain",)).get_content()
    assert plain.startswith("گزارش مرکز تماس\nسه‌شنبه ۳ آذر ۱۴۰۵\n")
    html = message.get_body(("html",)).get_content()
    assert '<html lang="fa" dir="rtl">' in html and "سطح سرویس" in html
    assert not re.search(r'data-kpi="\w+"[^>]*>\s*<div[^>]*>[^<]*[A-Za-z]', html)
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) >= 2


def test_a_jalali_month_by_mail_is_one_mail_per_day(loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = invoke(loaded, "email", "--month", "1405-09", "--recipient", "manager@example.com",
                    "--dry-run")
    assert output.count(": wrote ") == 30
    assert output.splitlines()[0].startswith("2026-11-22: wrote")


def latin_outside_names(text: str) -> list[str]:
    """Latin letters and ASCII digits of a command's message, leaving out what it isolates
    (paths, addresses, names: U+2068 ... U+2069)."""
    return re.findall(r"[A-Za-z0-9]+", re.sub("\u2068[^\u2069]*\u2069", "", text))


def test_the_report_command_tells_the_manager_in_persian(loaded, tmp_path):
    """What `report` says to the one who runs it: the file written, and beside the numbers
    what is not settled yet (here: the period, not over)."""
    out = tmp_path / "آذر.json"
    today = dt.datetime.now(ZoneInfo("Asia/Tehran")).date().isoformat()  # never over
    result = CliRunner().invoke(cli, ["report", "--from", today, "--to", today,
                                      "--locale", "fa", "-o", str(out)], env=loaded)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"گزارش در \u2068{out}\u2069 نوشته شد\n"
    warnings = result.stderr.splitlines()
    assert warnings[0] == "هشدار: این دوره هنوز تمام نشده است: ارقام آن هنوز در حال افزایش‌اند."
    assert latin_outside_names(result.stdout + result.stderr) == []
    english = CliRunner().invoke(cli, ["report", "--from", today, "--to", today,
                                       "-o", str(out)], env=loaded)
    assert english.stdout == f"report written to {out}\n"
    assert english.stderr.startswith("Warning: The period is not over yet")
