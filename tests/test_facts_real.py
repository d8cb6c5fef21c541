"""The KPI rules of docs/kpis.md on what the real Asterisk 22 wrote (examples/recordings/,
recorded by scripts/record_kpi_patterns.py), each expected value worked out from the lines.

restarts.queue_log (times are offsets from 1796182792):
   0  members 1001, 1003 added; 1002 added PAUSED; 1003 paused "break"
   2  A enters support, 1001 answers        3  C waits in sales, B waits in support
   6  `core restart now`: 1001 paused ACW, A COMPLETECALLER 4 s, C and B ABANDON (3 s)
   8  QUEUESTART (members and pauses restored from the astdb, no ADDMEMBER/PAUSE)
  11  1003, 1002 UNPAUSE (never PAUSEd since the restart)   13  1001 unpaused; 1002 "meeting"
  14  D enters, 1001 answers   16  E waits   (kill -9)   24  QUEUESTART
  30  1002, 1001 UNPAUSE   31  F enters support, 1001 answers
  35  F BLINDTRANSFER to queue sales (same second: ENTERQUEUE sales, CONNECT 1003), 1001 ACW
  40  1001 re-paused "meeting" (Auto-Unpause), 1002 "meeting"   42  H waits in support
  45  `core stop now`: H ABANDON, F COMPLETEAGENT 10 s in sales, 1003 ACW   50  QUEUESTART
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pytest

from callkpi.config import Config, KpiConfig
from callkpi.events import Kind, make_event
from callkpi.store import Batch
from queue_log_parser.ingest import ingest_paths
from queue_log_parser.parser import LineParser
from reports.facts import refresh_facts
from reports.kpis import refresh_and_build
from test_facts_helpers import SERVER, calls_by_id

RECORDINGS = Path(__file__).parent.parent / "examples" / "recordings"
T0 = 1796182792
A, B, C = "1796182794.0", "1796182795.6", "1796182795.4"
D, E, F, H = "1796182806.0", "1796182808.4", "1796182823.0", "1796182834.6"
DAY = dt.date(2026, 12, 2)


def lines(name: str) -> list[str]:
    return (RECORDINGS / name).read_text().splitlines()


def events_of(raw: list[str]) -> list:
    parser = LineParser(SERVER)
    return [parser.parse(line) for line in raw]


async def facts_of(store, raw: list[str], kpi: KpiConfig | None = None) -> dict:
    await store.write(Batch(events=events_of(raw)))
    await refresh_facts(store, kpi or KpiConfig())
    return await calls_by_id(store)


def utc() -> Config:
    config = Config()
    config.report.timezone = "UTC"
    return config


async def test_a_graceful_restart_s_abandons_are_closed(store):
    calls = await facts_of(store, lines("restarts.queue_log"))
    # written in the shutdown second, nothing after them before QUEUESTART: not abandons
    for call in (f"{B}@support", f"{C}@sales", f"{H}@support"):
        assert (calls[call]["outcome"], calls[call]["wait_s"]) == ("closed", None), call
    # the call talking at the graceful restart got its end written: an ordinary answer
    a = calls[f"{A}@support"]
    assert (a["outcome"], a["bridged_s"], a["ended_by_restart"]) == ("answered", 4, 0)


async def test_a_call_cut_by_kill_9_was_answered_and_its_talk_is_unknown(store):
    calls = await facts_of(store, lines("restarts.queue_log"))
    d = calls[f"{D}@support"]  # CONNECT, then nothing until QUEUESTART
    assert (d["outcome"], d["ended_by_restart"], d["wait_s"], d["agent"]) == (
        "answered", 1, 0, "Agent 1001")
    assert (d["bridged_s"], d["talk_s"], d["hold_s"], d["acw_s"]) == (None, None, None, None)
    assert d["ended_ts"] == T0 + 16  # the PBX's last sign of life before the restart
    assert (calls[f"{E}@support"]["outcome"], calls[f"{E}@support"]["wait_s"]) == (
        "closed", None)  # still waiting


async def test_restart_kpis(store):
    await ingest_paths(store, [str(RECORDINGS / "restarts.queue_log")], server=SERVER,
                       batch_lines=1000)
    t = (await refresh_and_build(store, utc(), DAY, DAY))["totals"]
    assert (t["offered"], t["answered"], t["abandoned"], t["closed"], t["open"]) == (
        8, 4, 0, 4, 0)  # A, D, F twice | B, C, E, H
    assert (t["ended_by_restart"], t["transferred"]) == (1, 1)
    assert t["service_level_pct"] == 100.0  # 4 answered at once / (8 - 4 closed)
    assert t["abandon_rate_pct"] == 0.0
    assert t["asa_s"] == 0.0  # D counts: its wait is known
    assert t["avg_talk_s"] == 6.0  # (4 + 4 + 10) / 3: D's talk is unknown, not 0


async def test_persistent_members_and_their_pauses_outlive_restarts(store):
    await ingest_paths(store, [str(RECORDINGS / "restarts.queue_log")], server=SERVER,
                       batch_lines=1000)
    agents = (await refresh_and_build(store, utc(), DAY, DAY))["agents"]
    # each member 0..6, 8..16, 24..45 (down from the last event before each QUEUESTART)
    for name in ("Agent 1001", "Agent 1002", "Agent 1003"):
        assert agents[name]["staffed_s"] == 35.0, name
    # 1002: added paused 0..6 + 8..11 (the UNPAUSE after the restart ends it), meeting
    # 13..16 + 24..30, meeting 40..45
    assert agents["Agent 1002"]["paused_s"] == 23.0
    assert agents["Agent 1003"]["paused_s"] == 9.0  # break 0..6 + 8..11
    assert agents["Agent 1001"]["paused_s"] == 5.0  # meeting 40..45; ACW is not a pause
    pauses = await store.fetch_all(
        "SELECT reason, start_ts - ?, end_ts - ? FROM agent_pauses WHERE agent = 'Agent 1001'"
        " ORDER BY start_ts", (T0, T0))
    assert pauses == [("ACW", 6, 6), ("ACW", 8, 13), ("ACW", 35, 40), ("meeting", 40, 45),
                      ("meeting", 50, None)]


async def test_acw_runs_through_a_restart_less_the_downtime(store):
    calls = await facts_of(store, lines("restarts.queue_log"))
    assert calls[f"{A}@support"]["acw_s"] == 5  # ACW 6..6, down, 8..13
    assert calls[f"{F}@support"]["acw_s"] == 5  # ACW 35..40, then re-paused "meeting"


async def test_without_persistent_members_the_unpause_is_the_evidence(store):
    kpi = KpiConfig(persistent_members=False)
    await store.write(Batch(events=events_of(lines("restarts.queue_log"))))
    await refresh_facts(store, kpi)
    sessions = await store.fetch_all(
        "SELECT agent, start_ts - ?, end_ts - ? FROM agent_sessions ORDER BY agent, start_ts",
        (T0, T0))
    # each member shows up after each restart with no ADDMEMBER (an UNPAUSE, a CONNECT):
    # Asterisk restored it; after the last restart nothing shows it yet
    assert sessions == [
        ("Agent 1001", 0, 6), ("Agent 1001", 8, 16), ("Agent 1001", 24, 45),
        ("Agent 1002", 0, 6), ("Agent 1002", 8, 16), ("Agent 1002", 24, 45),
        ("Agent 1003", 0, 6), ("Agent 1003", 8, 16), ("Agent 1003", 24, 45)]
    pauses = await store.fetch_all(
        "SELECT reason, start_ts - ?, end_ts - ? FROM agent_pauses WHERE agent = 'Agent 1002'"
        " ORDER BY start_ts", (T0, T0))
    assert pauses == [("", 0, 6), ("", 8, 11), ("meeting", 13, 16), ("meeting", 24, 30),
                      ("meeting", 40, 45)]


async def test_a_member_added_paused_is_paused(store):
    raw = lines("restarts.queue_log")[:6]  # the members' setup
    await facts_of(store, raw)
    pauses = await store.fetch_all("SELECT agent, reason, start_ts - ? FROM agent_pauses"
                                   " ORDER BY agent", (T0,))
    assert pauses == [("Agent 1002", "", 0), ("Agent 1003", "break", 0)]


async def test_blind_transfer_into_another_queue_in_any_line_order(store):
    raw = lines("restarts.queue_log")
    second = [i for i, line in enumerate(raw) if line.startswith("1796182827|")]
    assert len(second) == 5
    # ENTERQUEUE sales and CONNECT before the BLINDTRANSFER of support: the same second
    block = [raw[i] for i in second]
    raw[second[0]:second[-1] + 1] = block[::-1]
    calls = await facts_of(store, raw)
    support, sales = calls[f"{F}@support"], calls[f"{F}@sales"]
    assert (support["outcome"], support["transferred"], support["agent"]) == (
        "answered", 1, "Agent 1001")
    assert (sales["outcome"], sales["transferred"], sales["agent"], sales["bridged_s"]) == (
        "answered", 0, "Agent 1003", 10)
    # one phone call, one FCR contact: its last answered leg
    assert (support["fcr_contact"], sales["fcr_contact"]) == (0, 1)


async def test_a_disposition_belongs_to_its_agent_s_call_in_its_queue(store):
    raw = lines("restarts.queue_log")
    # the dialplan's QueueLog(queue, callid, member, DISPOSITION, code) of 1001's call,
    # set after the caller was already talking to 1003 in sales
    raw.append(f"1796182833|{F}|support|Agent 1001|DISPOSITION|sale")
    calls = await facts_of(store, raw)
    assert calls[f"{F}@support"]["disposition"] == "sale"
    assert calls[f"{F}@sales"]["disposition"] == ""


async def test_interface_named_members_are_one_agent(store):
    """log_membername_as_agent = no: ADDMEMBER/REMOVEMEMBER name Local/1004@sim-agents/n,
    PAUSE and CONNECT name "Agent 1004"; AMI's QueueMemberAdded carries both."""
    raw = lines("interface-members.queue_log")
    config = utc()
    await ingest_paths(store, [str(RECORDINGS / "interface-members.queue_log")],
                       server=SERVER, batch_lines=1000)
    before = (await refresh_and_build(store, config, DAY, DAY))["agents"]
    assert set(before) == {"Agent 1004", "Local/1004@sim-agents/n"}  # two rows: wrong
    added = make_event(server=SERVER, kind=Kind.MEMBER_ADD, ts=float(raw[1].split("|")[0]),
                       source="ami", queue="support", agent="Agent 1004",
                       extra={"interface": "Local/1004@sim-agents/n"})
    await store.write(Batch(events=[added]))
    agents = (await refresh_and_build(store, config, DAY, DAY))["agents"]
    assert list(agents) == ["Agent 1004"]
    assert agents["Agent 1004"]["staffed_s"] == 9.0  # 1796182847..856
    assert agents["Agent 1004"]["paused_s"] == 1.0  # break 847..848; ACW is wrap-up
    assert agents["Agent 1004"]["answered"] == 1


async def test_interface_names_from_the_config(store):
    await ingest_paths(store, [str(RECORDINGS / "interface-members.queue_log")],
                       server=SERVER, batch_lines=1000)
    config = utc()
    config.agents.names = {"Local/1004@sim-agents/n": "Agent 1004"}
    report = await refresh_and_build(store, config, DAY, DAY)
    assert list(report["agents"]) == ["Agent 1004"]
    assert report["agents"]["Agent 1004"]["staffed_s"] == 9.0


async def test_same_second_order_and_file_order_change_nothing(store, make_store_url,
                                                                tmp_path):
    raw = lines("restarts.queue_log")
    rng = random.Random(7)
    by_second: dict[str, list[str]] = {}
    for line in raw:
        by_second.setdefault(line.split("|")[0], []).append(line)
    shuffled = []
    for second in by_second.values():
        rng.shuffle(second)
        shuffled += second
    half = len(shuffled) // 2
    old, new = tmp_path / "queue_log.1", tmp_path / "queue_log"
    old.write_text("\n".join(shuffled[:half]) + "\n")
    new.write_text("\n".join(shuffled[half:]) + "\n")
    await ingest_paths(store, [str(new), str(old)], server=SERVER, batch_lines=7)
    shuffled_report = await refresh_and_build(store, utc(), DAY, DAY)
    other = await _fresh_report(make_store_url(), raw)
    for key in ("totals", "queues", "agents", "intervals"):
        assert _stable(shuffled_report[key]) == _stable(other[key]), key


async def _fresh_report(url: str, raw: list[str]) -> dict:
    from callkpi.store import open_store

    store = await open_store(url)
    try:
        await store.write(Batch(events=events_of(raw)))
        return await refresh_and_build(store, utc(), DAY, DAY)
    finally:
        await store.close()


def _stable(value: object) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("seed", range(3))
async def test_incremental_equals_rebuild_on_the_recording(store, seed):
    events = events_of(lines("restarts.queue_log"))
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(events)), 4))
    for lo, hi in zip([0, *cuts], [*cuts, len(events)]):
        await store.write(Batch(events=events[lo:hi]))
        await refresh_facts(store, KpiConfig())
    incremental = await _all_facts(store)
    await refresh_facts(store, KpiConfig(), rebuild=True)
    assert await _all_facts(store) == incremental


async def _all_facts(store) -> list:
    return [
        await store.fetch_all("SELECT * FROM queue_calls ORDER BY id"),
        await store.fetch_all("SELECT * FROM agent_sessions ORDER BY agent, queue, start_ts"),
        await store.fetch_all("SELECT * FROM agent_pauses ORDER BY agent, start_ts"),
    ]


def test_db_info_warns_of_agents_named_like_interfaces(store_url, tmp_path):
    from click.testing import CliRunner

    from callkpi.cli import cli

    db = store_url
    env = {"CALLKPI_CONFIG": str(tmp_path / "none.toml"), "CALLKPI_REPORT_TIMEZONE": "UTC"}
    (tmp_path / "none.toml").write_text("")
    runner = CliRunner()
    for args in (["ingest", "--db", db, str(RECORDINGS / "interface-members.queue_log")],
                 ["facts", "--db", db]):
        assert runner.invoke(cli, args, env=env).exit_code == 0
    result = runner.invoke(cli, ["db", "info", "--db", db], env=env)
    assert result.exit_code == 0
    assert "agents named like member interfaces: Local/1004@sim-agents/n" in result.output
