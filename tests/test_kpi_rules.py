"""The KPI rules of docs/kpis.md that the recordings of test_facts_real.py do not cover, each
on queue_log lines in the layout Asterisk 22 writes them (examples/recordings/answered,
abandon, wrapup: the same fields, other callers and times) and, for what only AMI or the AGI
say, events of the shape the listener and the survey write (docs/events.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from callkpi.config import Config
from callkpi.events import Kind, make_event
from callkpi.store import Batch
from queue_log_parser.parser import LineParser
from reports.facts import refresh_facts
from reports.kpis import refresh_and_build
from test_facts_helpers import SERVER, calls_by_id

T = 1795491291  # 2026-11-24 01:34:51 UTC
DAY = dt.date(2026, 11, 24)
H = 3600


def cfg(**kpi) -> Config:
    config = Config()
    config.report.timezone = "UTC"
    for key, value in kpi.items():
        setattr(config.kpi, key, value)
    return config


def member(t: int, agent: str = "Agent 1001", queue: str = "support") -> str:
    return f"{t}|MANAGER|{queue}|{agent}|ADDMEMBER|"


def answered(t: int, uid: str, number: str, wait: int = 0, talk: int = 5,
             agent: str = "Agent 1001", queue: str = "support", end: str = "COMPLETEAGENT"
             ) -> list[str]:
    return [f"{t}|{uid}|{queue}|NONE|ENTERQUEUE||{number}|1|Cust",
            f"{t + wait}|{uid}|{queue}|{agent}|CONNECT|{wait}|{uid}2|0",
            f"{t + wait + talk}|{uid}|{queue}|{agent}|{end}|{wait}|{talk}|1"]


def abandoned(t: int, uid: str, number: str, wait: int = 4, queue: str = "support"
              ) -> list[str]:
    return [f"{t}|{uid}|{queue}|NONE|ENTERQUEUE||{number}|1|Cust",
            f"{t + wait}|{uid}|{queue}|NONE|ABANDON|1|1|{wait}"]


async def store_lines(store, lines: list[str], *more) -> None:
    parser = LineParser(SERVER)
    await store.write(Batch(events=[parser.parse(line) for line in lines] + list(more)))


async def report(store, config: Config | None = None, day: dt.date = DAY, **kw) -> dict:
    return await refresh_and_build(store, config or cfg(), day, day, **kw)


def ami(kind: str, ts: float, **data) -> object:
    return make_event(server=SERVER, kind=kind, ts=ts, source="ami", **data)


def answer(call_id: str, ts: float, question: str, kind: str, value: str, session: str):
    return make_event(server=SERVER, kind=Kind.SURVEY_ANSWER, ts=ts, source="agi",
                      call_id=call_id, discr=question, value=value, reason="answered",
                      extra={"question_kind": kind, "session": session})


async def test_rule5_an_end_without_its_connect_names_the_agent(store):
    lines = [member(T - 60), *answered(T, "u1", "5550001", wait=3, talk=40)]
    del lines[2]  # the CONNECT line lost
    await store_lines(store, lines)
    r = await report(store)
    assert r["totals"]["answered"] == 1 and r["totals"]["asa_s"] == 3.0
    assert r["agents"]["Agent 1001"]["answered"] == 1
    assert r["agents"]["Agent 1001"]["talk_s"] == 40.0


async def test_rule7_the_same_line_twice_is_two_queue_calls(store):
    # a caller looping into an empty queue: ENTERQUEUE + EXITEMPTY twice in one second; the
    # store keeps both copies apart (its key) and the facts count what is stored
    parser = LineParser(SERVER)
    first = [parser.parse(f"{T}|u1|sales|NONE|ENTERQUEUE||5550001|1|Cust"),
             parser.parse(f"{T}|u1|sales|NONE|EXITEMPTY|1|1|0")]
    again = [e._replace(discr="#2") for e in first]
    await store.write(Batch(events=[first[0], again[0], first[1], again[1]]))
    t = (await report(store))["totals"]
    assert (t["offered"], t["exit_empty"]) == (2, 2)


async def test_rule8_occupancy_is_time_sliced_and_never_above_100(store):
    # staffed 23:00..01:00; one call from 23:50 talks 40 min: 10 min on the first day
    late = int(dt.datetime(2026, 11, 24, 23, 50, tzinfo=dt.timezone.utc).timestamp())
    lines = [member(late - 50 * 60), *answered(late, "u1", "5550001", talk=40 * 60),
             f"{late + 70 * 60}|MANAGER|support|Agent 1001|REMOVEMEMBER|"]
    await store_lines(store, lines)
    first = (await report(store))["agents"]["Agent 1001"]
    assert first["staffed_s"] == 3600.0
    assert first["occupancy_pct"] == pytest.approx(100 * 600 / 3600, abs=1e-3)  # not 40/60
    second = (await report(store, day=DAY + dt.timedelta(days=1)))["agents"]["Agent 1001"]
    assert second["answered"] == 0 and second["occupancy_pct"] == pytest.approx(50.0)


async def test_rule9_no_number_caller_ids_are_not_repeats(store):
    lines = [member(T - 60)]
    for i, number in enumerate(("anonymous", "Anonymous", "restricted", "5550001",
                                "5550001")):
        lines += answered(T + 100 * i, f"u{i}", number)
    await store_lines(store, lines)
    t = (await report(store))["totals"]
    assert t["repeat_call_rate_pct"] == 50.0  # the second 5550001 of two known calls
    t = (await report(store, cfg(no_number=[])))["totals"]
    assert t["repeat_call_rate_pct"] == 20.0  # every caller id a number: 1 repeat of 5


async def test_rule10_calls_with_no_end_yet_are_open(store):
    lines = [member(T - 60), *abandoned(T, "u1", "5550001"),
             f"{T + 10}|u2|support|NONE|ENTERQUEUE||5550002|1|Cust"]  # still waiting
    await store_lines(store, lines)
    t = (await report(store))["totals"]
    assert (t["offered"], t["open"], t["abandoned"]) == (2, 1, 1)
    assert t["abandon_rate_pct"] == 100.0  # 1 / (2 - 1 open)


async def test_rule11_acw_starts_at_the_call_s_end(store):
    # the auto-ACW pause is written by the agent's hang-up handler, a second before the
    # COMPLETE line here; after-call work still starts at the end
    lines = [member(T - 60), *answered(T, "u1", "5550001", talk=20),
             f"{T + 19}|NONE|NONE|Agent 1001|PAUSEALL|ACW",
             f"{T + 19}|NONE|support|Agent 1001|PAUSE|ACW",
             f"{T + 50}|NONE|NONE|Agent 1001|UNPAUSEALL|",
             f"{T + 50}|NONE|support|Agent 1001|UNPAUSE|"]
    await store_lines(store, lines)
    await refresh_facts(store, cfg().kpi)
    assert (await calls_by_id(store))["u1@support"]["acw_s"] == 30  # 20..50, not 19..50


async def test_rule12_days_are_the_machine_s_local_days(store, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tehran")  # +03:30: 22:00 UTC on the 24th is the 25th
    late = int(dt.datetime(2026, 11, 24, 22, 0, tzinfo=dt.timezone.utc).timestamp())
    await store_lines(store, abandoned(late, "u1", "5550001"))
    r = await refresh_and_build(store, Config(), DAY + dt.timedelta(days=1),
                           DAY + dt.timedelta(days=1))
    assert (r["period"]["timezone"], r["totals"]["offered"]) == ("Asia/Tehran", 1)
    assert (await refresh_and_build(store, Config(), DAY, DAY))["totals"]["offered"] == 0


async def test_rule13_csat_is_top_two_box_on_any_scale(store):
    lines = [member(T - 60)]
    answers = []
    for i, score in enumerate(("10", "9", "8", "4")):
        lines += answered(T + 100 * i, f"u{i}", f"555000{i}")
        answers.append(answer(f"u{i}", T + 100 * i + 10, "q1", "csat", score, f"s{i}"))
    await store_lines(store, lines, *answers)
    assert (await report(store, cfg(csat_scale=10)))["totals"]["csat_pct"] == 50.0
    assert (await report(store, cfg(csat_scale=10, csat_good_min=8)))["totals"][
        "csat_pct"] == 75.0


async def test_rule15_a_contact_is_a_phone_call(store):
    day = 24 * H
    lines = [member(T - 60),
             # 5550001 abandons, calls back and is answered: the abandoned attempt is no
             # prior contact, and no call follows: resolved (the data runs 4 days on)
             *abandoned(T, "a1", "5550001"), *answered(T + 300, "a2", "5550001"),
             # 5550002 is answered in support and blind-transferred into sales, answered
             # again: one contact (its last leg) ...
             f"{T + 1000}|b1|support|NONE|ENTERQUEUE||5550002|1|Cust",
             f"{T + 1000}|b1|support|Agent 1001|CONNECT|0|b12|0",
             f"{T + 1030}|b1|support|Agent 1001|BLINDTRANSFER|sales|callkpi-queue|0|30|1",
             f"{T + 1030}|b1|sales|NONE|ENTERQUEUE||5550002|1|Cust",
             f"{T + 1030}|b1|sales|Agent 1003|CONNECT|0|b13|0",
             f"{T + 1090}|b1|sales|Agent 1003|COMPLETEAGENT|0|60|1",
             # ... repeated by another call an hour later (itself no first contact)
             *answered(T + 1000 + H, "b2", "5550002"),
             f"{T + 4 * day}|MANAGER|support|Agent 1001|REMOVEMEMBER|"]
    await store_lines(store, lines)
    t = (await report(store))["totals"]
    # contacts: a2 resolved, b1 repeated (counted once, not once per queue leg)
    assert (t["fcr_pending"], t["fcr_pct"]) == (0, 50.0)
    assert t["repeat_call_rate_pct"] == 40.0  # a2 after a1, b2 after b1: 2 of 5 queue calls


async def test_rule16_one_survey_per_call_and_orphans(store):
    lines = [member(T - 60), *answered(T, "u1", "5550001")]
    first = answer("u1", T + 10, "q1", "csat", "5", "s1")
    second = answer("u1", T + 60, "q1", "csat", "1", "s2")  # surveyed again
    orphan = answer("u9", T + 70, "q1", "csat", "1", "s3")  # its call not in the store
    await store_lines(store, lines, first, second, orphan)
    r = await report(store)
    assert (r["totals"]["csat_pct"], r["totals"]["csat_avg"]) == (100.0, 5.0)
    assert (r["survey"]["orphans"], r["survey"]["repeat_surveys"]) == (1, 1)
    assert r["survey"]["questions"]["q1"]["answers"] == {"1": 1, "5": 1}  # + the orphan
    # the orphan's call arrives later (a late queue_log file): it links and counts
    await store_lines(store, answered(T + 20, "u9", "5550009"))
    r = await report(store)
    assert (r["totals"]["csat_pct"], r["survey"]["orphans"]) == (50.0, 0)


async def test_rule17_staffed_time_unknown_is_not_zero(store):
    # a static member (queues.conf member =>): never an ADDMEMBER
    await store_lines(store, answered(T, "u1", "5550001", agent="Agent 1005"))
    r = await report(store)
    a = r["agents"]["Agent 1005"]
    assert (a["answered"], a["staffed_s"], a["occupancy_pct"], a["calls_per_hour"]) == (
        1, None, None, None)
    assert r["warnings"]["staffed_unknown"] == ["Agent 1005"]
    # AMI says what it is: the listener's QueueStatus at login (LoginTime from Asterisk)
    state = ami(Kind.MEMBER_STATE, T - 3600.5, queue="support", agent="Agent 1005",
                extra={"interface": "PJSIP/1005", "login_time": T - 7200, "status": "1"})
    await store.write(Batch(events=[state]))
    a = (await report(store))["agents"]["Agent 1005"]
    assert a["staffed_s"] == 7205.0  # from its LoginTime to the last event (T + 5)
    assert a["occupancy_pct"] == pytest.approx(100 * 5 / 7205, abs=1e-3)


async def test_rule17_member_state_pauses(store):
    await store_lines(store, [member(T - 600)])
    paused = ami(Kind.MEMBER_STATE, T + 0.5, queue="support", agent="Agent 1001",
                 reason="paused", value="lunch",
                 extra={"interface": "PJSIP/1001", "last_pause": T - 300})
    back = ami(Kind.MEMBER_STATE, T + 600.5, queue="support", agent="Agent 1001",
               extra={"interface": "PJSIP/1001"})
    await store.write(Batch(events=[paused, back]))
    await refresh_facts(store, cfg().kpi)
    assert await store.fetch_all("SELECT reason, start_ts, end_ts FROM agent_pauses") == [
        ("lunch", T - 300, T + 600.5)]  # from Asterisk's LastPause to the unpaused state


async def test_rule18_fcr_of_settled_days_beside_the_pending_day(store):
    old = T - 4 * 24 * H  # the 20th: its 72 h window is over by the 24th 00:00
    lines = [member(old - 60), *answered(old, "o1", "5550001"), *answered(old + 60, "o2",
                                                                           "5550002"),
             *answered(old + 2 * H, "o3", "5550002"),  # a repeat of o2
             *answered(T, "n1", "5550003")]  # today's contact: pending
    await store_lines(store, lines)
    r = await report(store)
    assert (r["totals"]["fcr_pct"], r["totals"]["fcr_pending"]) == (None, 1)
    settled = r["fcr_settled"]
    assert (settled["from"], settled["to"]) == ("2026-11-20", "2026-11-20")
    assert (settled["fcr_pct"], settled["resolved"], settled["repeated"]) == (50.0, 1, 1)


async def test_staffing_needed_vs_had(store):
    # an hour: 100 calls of 180 s handle time offered in 30 minutes... here 20 calls of
    # 180 s in one hour = 1 Erlang; two agents logged in all hour, one on a 30-min break
    start = int(dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc).timestamp())
    lines = [member(start - 60, "Agent 1001"), member(start - 60, "Agent 1002"),
             f"{start + 600}|NONE|support|Agent 1002|PAUSE|break",
             f"{start + 2400}|NONE|support|Agent 1002|UNPAUSE|"]
    for i in range(20):
        agent = "Agent 1001" if i % 2 else "Agent 1002"
        lines += answered(start + 180 * i, f"u{i}", f"55500{i:02d}", talk=180, agent=agent)
    lines.append(f"{start + 2 * H}|MANAGER|support|Agent 1001|REMOVEMEMBER|")
    await store_lines(store, lines)
    r = await report(store, interval="hour")
    row = next(x for x in r["staffing"] if x["start"] == "2026-11-24T10:00:00+00:00")
    # A = 20 x 180 / 3600 = 1 Erlang; 80 % within 20 s needs 3 agents (2 give 73.7 %)
    assert (row["queue"], row["offered"], row["aht_s"], row["agents_needed"]) == (
        "support", 20, 180.0, 3)
    assert row["agents_staffed"] == 1.5  # 1 + (1 - 30 min of break)
    hour = next(i for i in r["intervals"] if i["start"] == row["start"])
    assert (hour["agents_needed"], hour["agents_staffed"]) == (3, 1.5)
    quiet = next(x for x in r["staffing"] if x["start"] == "2026-11-24T11:00:00+00:00")
    assert (quiet["agents_needed"], quiet["agents_staffed"]) == (0, 2.0)


async def test_rule17_a_member_state_raised_around_a_logged_change_does_not_overrule_it(store):
    # queue_log's REMOVEMEMBER is stamped T (whole second); a QueueMemberStatus Asterisk
    # raised just before the removal arrives stamped T + 0.3
    await store_lines(store, [member(T - 600), f"{T}|MANAGER|support|Agent 1001|REMOVEMEMBER|"])
    stale = ami(Kind.MEMBER_STATE, T + 0.3, queue="support", agent="Agent 1001",
                extra={"interface": "PJSIP/1001", "login_time": T - 600})
    later = ami(Kind.MEMBER_STATE, T + 3600.5, queue="sales", agent="Agent 1002",
                extra={"interface": "PJSIP/1002"})
    await store.write(Batch(events=[stale, later]))
    await refresh_facts(store, cfg().kpi)
    assert await store.fetch_all(
        "SELECT agent, start_ts, end_ts FROM agent_sessions ORDER BY start_ts") == [
        ("Agent 1001", T - 600, T), ("Agent 1002", T + 3600.5, None)]


async def test_rule19_queuemetrics_ivrappend_lines_feed_the_ivr_kpis(store):
    # FreePBX's QueueMetrics module: QueueLog(NONE,${UNIQUEID},NONE,INFO,IVRAPPEND|key|menu)
    lines = [member(T - 60),
             f"{T}|v1|NONE|NONE|INFO|IVRAPPEND|1|ivr-main",
             f"{T + 4}|v1|NONE|NONE|INFO|IVRAPPEND|2|ivr-billing",
             *answered(T + 6, "v1", "5550001", queue="support"),
             f"{T + 100}|v2|NONE|NONE|INFO|IVRAPPEND|9|ivr-main",  # never reaches a queue
             f"{T + 200}|v3|NONE|NONE|INFO|IVRAPPEND|1|ivr-main"]
    await store_lines(store, lines)
    r = await report(store)
    t = r["totals"]
    assert (t["ivr_calls"], t["ivr_to_queue_pct"]) == (3, pytest.approx(100 / 3, abs=1e-3))
    # a call that reached no queue was served in the IVR or hung up there: these lines
    # cannot tell which, so it is neither contained nor a hang-up
    assert (t["ivr_contained_pct"], t["ivr_hangup_pct"]) == (0.0, 0.0)
    assert r["queues"]["support"]["ivr_calls"] == 1
    paths = await store.fetch_all("SELECT call_id, path, node, outcome, queue FROM ivr_paths"
                                  " ORDER BY call_id")
    assert paths[0] == ("v1", "ivr-main:1 > ivr-billing:2", "ivr-billing", "to-queue",
                        "support")
    # v3's queue entry arrives later (a late file): its path is derived again
    await store_lines(store, answered(T + 205, "v3", "5550003", queue="sales"))
    t = (await report(store))["totals"]
    assert t["ivr_to_queue_pct"] == pytest.approx(200 / 3, abs=1e-3)
