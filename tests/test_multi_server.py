"""Several PBXs in one store: reports of one server or all, merged or kept apart, and the
caller who calls two of them. The same hand-made day happens on two servers at once, with
the same uniqueids and caller numbers (two Asterisks hand out the same ones)."""

from __future__ import annotations

import asyncio
import copy
import email
import email.policy
import json
import re

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.config import Config, KpiConfig, ReportConfig
from callkpi.events import Kind
from reports.kpis import refresh_and_build
from reports.mailer import recipients_key
from reports.render_html import render_html, render_text
from test_facts_helpers import Calls
from test_kpis import D, T, day

pytestmark = pytest.mark.backends("sqlite", "postgresql")

COUNTS = ("offered", "answered", "abandoned", "short_abandoned", "timeout", "exit_key",
          "exit_empty", "transferred", "ivr_calls")


def on(server: str, calls: Calls) -> Calls:
    calls.events = [e._replace(server=server) for e in calls.events]
    return calls


def cfg(merged: bool = True, servers: tuple[str, ...] = ()) -> Config:
    return Config(kpi=KpiConfig(short_abandon_s=5.0),
                  report=ReportConfig(timezone="UTC", merge_servers=merged,
                                      servers=list(servers)))


def without_time(report: dict) -> dict:
    report = copy.deepcopy(report)
    del report["period"]["generated_at"]
    return report


def renamed(report: dict, old: str, new: str) -> dict:
    """The report with every `name @ old` read as `name @ new`."""
    return json.loads(json.dumps(report).replace(f" @ {old}", f" @ {new}"))


async def test_each_servers_report_is_its_own_and_the_whole_their_sum(store):
    """Kept apart, a server's report of the two-server store is the report it had alone,
    and the report of all servers sums them: nothing twice, nothing lost."""
    await on("pbx-a", day()).store_in(store)
    alone = without_time(await refresh_and_build(store, cfg(merged=False), D, D))
    assert alone["period"]["servers"] == ["pbx-a"]
    assert set(alone["queues"]) == {"support @ pbx-a", "sales @ pbx-a"}
    assert set(alone["agents"]) == {"A @ pbx-a", "B @ pbx-a"}
    await on("pbx-b", day()).store_in(store)

    a = without_time(await refresh_and_build(store, cfg(False, ("pbx-a",)), D, D))
    b = without_time(await refresh_and_build(store, cfg(False, ("pbx-b",)), D, D))
    assert a == alone
    b_as_a = renamed(b, "pbx-b", "pbx-a")
    b_as_a["period"]["servers"] = ["pbx-a"]
    assert b_as_a == alone

    both = await refresh_and_build(store, cfg(merged=False), D, D)
    assert both["period"]["servers"] == ["pbx-a", "pbx-b"]
    assert both["period"]["servers_merged"] is False
    assert both["queues"] == {**a["queues"], **b["queues"]}
    assert both["agents"] == {**a["agents"], **b["agents"]}
    for key in COUNTS:
        assert both["totals"][key] == 2 * alone["totals"][key], key
    assert both["totals"]["service_level_pct"] == alone["totals"]["service_level_pct"]
    assert both["survey"]["surveys"] == 2 * alone["survey"]["surveys"]
    assert [r["offered"] for r in both["intervals"]] == [
        2 * r["offered"] for r in alone["intervals"]]


async def test_merged_servers_share_queues_and_agents(store):
    await on("pbx-a", day()).store_in(store)
    alone = await refresh_and_build(store, cfg(), D, D)
    await on("pbx-b", day()).store_in(store)
    both = await refresh_and_build(store, cfg(), D, D)
    assert both["period"]["servers"] == ["pbx-a", "pbx-b"]
    assert set(both["queues"]) == {"support", "sales"}
    assert set(both["agents"]) == {"A", "B"}
    for queue in ("support", "sales"):
        assert both["queues"][queue]["offered"] == 2 * alone["queues"][queue]["offered"]
    assert both["agents"]["A"]["answered"] == 2 * alone["agents"]["A"]["answered"]
    # staffed on both servers at the same hours: one person, counted once a second
    assert both["agents"]["A"]["staffed_s"] == alone["agents"]["A"]["staffed_s"]
    one = await refresh_and_build(store, cfg(servers=("pbx-b",)), D, D)
    assert one["period"]["servers"] == ["pbx-b"]
    assert one["queues"]["sales"]["offered"] == alone["queues"]["sales"]["offered"]


def caller_on_two_servers() -> list[Calls]:
    """Caller 999 is answered on pbx-a, then calls pbx-b ten minutes later; both PBXs gave
    the call the same uniqueid."""
    a, b = Calls(), Calls()
    a.answered("1773133200.7", "support", "A", T, wait=5, talk=60, number="999")
    b.answered("1773133200.7", "support", "A", T + 600, wait=5, talk=60, number="999")
    return [on("pbx-a", a), on("pbx-b", b)]


async def test_a_caller_on_two_merged_servers_is_one_customer(store):
    for calls in caller_on_two_servers():
        await calls.store_in(store)
    totals = (await refresh_and_build(store, cfg(), D, D))["totals"]
    assert totals["repeat_call_rate_pct"] == 50.0  # the second call repeats the first
    # pbx-a's contact was not resolved: its caller called again, on pbx-b
    assert await store.fetch_all(
        "SELECT server, prev_gap_s, next_gap_s FROM queue_calls ORDER BY server") == [
        ("pbx-a", None, 600.0), ("pbx-b", 600.0, None)]


async def test_a_caller_of_two_tenants_is_two_customers(store):
    for calls in caller_on_two_servers():
        await calls.store_in(store)
    totals = (await refresh_and_build(store, cfg(merged=False), D, D))["totals"]
    assert totals["repeat_call_rate_pct"] == 0.0


async def test_switching_merge_servers_derives_the_gaps_again(store):
    for calls in caller_on_two_servers():
        await calls.store_in(store)
    assert (await refresh_and_build(store, cfg(), D, D))["totals"]["repeat_call_rate_pct"] == 50.0
    apart = await refresh_and_build(store, cfg(merged=False), D, D)
    assert apart["totals"]["repeat_call_rate_pct"] == 0.0
    assert (await refresh_and_build(store, cfg(), D, D))["totals"]["repeat_call_rate_pct"] == 50.0


async def test_the_page_and_the_mail_name_the_servers_escaped(store):
    hostile = "<b>evil</b>\u202e"
    calls = Calls()
    calls.answered("c1", "q<1>", "A", T, wait=5, talk=60, number="1")
    await on(hostile, calls).store_in(store)
    await on("pbx-b", day()).store_in(store)
    report = await refresh_and_build(store, cfg(merged=False), D, D)
    page = re.sub(r' style="[^"]*"', "", render_html(report))  # (the inlined CSS)
    assert "<b>evil" not in page and "q<1>" not in page
    assert "servers <bdi>&lt;b&gt;evil&lt;/b&gt;</bdi>, <bdi>pbx-b</bdi> (kept apart)" in page
    assert "q&lt;1&gt; @ &lt;b&gt;evil&lt;/b&gt;" in page
    text = render_text(report)
    assert "servers \u2068<b>evil</b>\u2069, \u2068pbx-b\u2069 (kept apart)" in text
    persian = render_html(report, locale="fa")
    assert "سرورهای" in persian and "(جدا از هم)" in persian


async def test_cli_server_option_is_repeatable_and_shown_in_json_and_csv(store, store_url):
    await on("pbx-a", day()).store_in(store)
    await on("pbx-b", day()).store_in(store)
    await on("pbx-c", Calls().ev(Kind.QUEUE_START, T - 60)).store_in(store)
    args = ["--config", "/dev/null", "report", "--db", store_url, "--from", str(D), "--to", str(D)]

    def invoke(*more: str):  # (in a thread: the command runs its own event loop)
        return asyncio.to_thread(CliRunner().invoke, cli, [*args, *more], env={"TZ": "UTC"},
                                 catch_exceptions=False)

    out = await invoke("--server", "pbx-b", "--server", "pbx-a")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["period"]["servers"] == ["pbx-a", "pbx-b"]
    assert report["totals"]["offered"] == 2 * (await refresh_and_build(
        store, cfg(servers=("pbx-a",)), D, D))["totals"]["offered"]
    csv = await invoke("--server", "pbx-a", "--format", "csv")
    assert csv.exit_code == 0, csv.output
    header, *rows = csv.output.splitlines()
    assert header.endswith(",servers") and rows and all(r.endswith(",pbx-a") for r in rows)
    typo = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--server", "pbx-x"],
                                   env={"TZ": "UTC"})
    assert typo.exit_code == 1
    assert typo.output.strip().splitlines()[-1] == (
        "Error: server 'pbx-x' never appeared in the store (servers: pbx-a, pbx-b)")


def test_the_mail_of_some_servers_is_another_mail_than_of_all():
    assert recipients_key(["B@x.org", "a@x.org"]) == "a@x.org,b@x.org"
    assert recipients_key(["a@x.org"], ["pbx-b", "pbx-a", "pbx-b"]) == \
        "a@x.org (servers pbx-a, pbx-b)"


async def test_email_of_one_server_says_so_in_its_header(store, store_url, tmp_path,
                                                        monkeypatch):
    await on("pbx-a", day()).store_in(store)
    await on("pbx-b", day()).store_in(store)
    monkeypatch.chdir(tmp_path)  # --dry-run writes the .eml here
    args = ["--config", "/dev/null", "email", "--db", store_url, "--from", str(D), "--to",
            str(D), "--recipient", "boss@example.com", "--dry-run"]
    out = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--server", "pbx-b"],
                                  env={"TZ": "UTC"}, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    mail = email.message_from_bytes((tmp_path / f"callkpi-report-{D}.eml").read_bytes(),
                                    policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()
    assert "server \u2068pbx-b\u2069" in text.splitlines()[2]
    assert ">pbx-b</bdi>" in mail.get_body(("html",)).get_content()
    typo = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--server", "pbx-x"],
                                   env={"TZ": "UTC"})
    assert typo.exit_code == 1 and "server 'pbx-x' never appeared" in typo.output
