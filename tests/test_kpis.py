"""Every KPI on a hand-made day; each expected figure is worked out in the comments."""

from __future__ import annotations

import datetime as dt

import pytest

from callkpi.config import Config, KpiConfig, ReportConfig
from callkpi.events import Kind
from reports import roster
from reports.kpis import refresh_and_build
from test_facts_helpers import Calls, epoch

D = dt.date(2026, 3, 10)
T = epoch("2026-03-10T09:00:00+00:00")
DAY = 86400


def config(tz: str = "UTC", **kpi) -> Config:
    return Config(kpi=KpiConfig(**{"short_abandon_s": 5.0, **kpi}),
                  report=ReportConfig(timezone=tz))


def approx(value):
    return pytest.approx(value, abs=1e-3)


def day() -> Calls:
    c = Calls()
    c.member("A", "support", T - 3600, T + 4 * DAY)  # staffed 08:00 .. past the day
    c.member("B", "sales", T, T + 3600)  # staffed one hour
    # s1: wait 10, bridged 100 of which hold 20 -> talk 80; ACW pause 30 s; a sale
    c.ivr("s1", T - 5, "to-queue", "support")
    c.answered("s1", "support", "A", T, wait=10, talk=100, number="111")
    c.hold("s1", T + 30, T + 50)
    c.pause("A", T + 110, T + 140)
    c.disposition("s1", T + 115, "sale")
    c.answer("s1", T + 112, "q1", "csat", "5").answer("s1", T + 113, "q2", "resolution", "1")
    c.ev(Kind.RING_NO_ANSWER, T + 190, call_id="s2", queue="support", agent="A", ring_s=15)
    # s2: wait 30, talk 60, ACW pause 10 s
    c.ivr("s2", T + 195, "to-queue", "support")
    c.answered("s2", "support", "A", T + 200, wait=30, talk=60, number="222")
    c.pause("A", T + 290, T + 300)
    c.disposition("s2", T + 295, "info")
    c.answer("s2", T + 292, "q1", "csat", "3").answer("s2", T + 293, "q2", "resolution", "2")
    # s3: abandons after 3 s (< short_abandon_s 5): a short abandon
    c.ivr("s3", T + 395, "to-queue", "support")
    c.left(Kind.ABANDON, "s3", "support", T + 400, wait=3, number="333")
    # s4: 111 again 500 s after s1 (a repeat), abandons after 40 s
    c.left(Kind.ABANDON, "s4", "support", T + 500, wait=40, number="111")
    # s5: wait 5, talk 50, transferred, no pause and no wrap-up: ACW 0; a sale
    c.answered("s5", "sales", "B", T + 600, wait=5, talk=50, number="444", transfer=True)
    c.disposition("s5", T + 660, "sale")
    c.answer("s5", T + 661, "q1", "csat", "", status="no-response")
    c.answer("s5", T + 662, "q2", "resolution", "", status="hangup")
    c.left(Kind.EXIT_TIMEOUT, "s6", "sales", T + 700, wait=60)  # no caller number
    c.left(Kind.EXIT_KEY, "s7", "sales", T + 800, wait=12, number="555")
    c.left(Kind.EXIT_EMPTY, "s8", "sales", T + 900, wait=0, number="666")
    c.ivr("i1", T + 1000, "self-service").ivr("i2", T + 1001, "hangup")
    c.pause("A", T + 1000, T + 1600, reason="break")  # 600 s paused, not wrap-up
    return c


async def report_of(store, c: Calls, cfg: Config | None = None, start=D, end=D, **kw) -> dict:
    await c.store_in(store)
    return await refresh_and_build(store, cfg or config(), start, end, **kw)


async def test_totals(store):
    t = (await report_of(store, day()))["totals"]
    counts = {k: t[k] for k in ("offered", "answered", "abandoned", "short_abandoned",
                                "timeout", "exit_key", "exit_empty", "transferred", "closed")}
    assert counts == {"offered": 8, "answered": 3, "abandoned": 1, "short_abandoned": 1,
                      "timeout": 1, "exit_key": 1, "exit_empty": 1, "transferred": 1,
                      "closed": 0}
    assert t["abandon_rate_pct"] == approx(100 * 1 / 7)  # 1 / (8 offered - 1 short)
    assert t["asa_s"] == approx(15.0)  # (10 + 30 + 5) / 3
    assert t["awt_s"] == approx(20.0)  # (10+30+3+40+5+60+12+0) / 8
    assert t["max_wait_s"] == 60
    assert t["service_level_pct"] == approx(100 * 2 / 7)  # s1, s5 within 20 s / 7
    assert t["avg_acw_s"] == approx(40 / 3)  # 30 + 10 + 0
    assert t["aht_s"] == approx(250 / 3)  # talk 80+60+50 + hold 20 + acw 40
    assert t["avg_talk_s"] == approx(190 / 3)
    assert t["avg_hold_s"] == approx(20 / 3)
    assert t["hold_rate_pct"] == approx(100 / 3)
    assert t["csat_pct"] == approx(50.0)  # scores 5 and 3: one >= 4
    assert t["csat_avg"] == approx(4.0)
    assert t["survey_response_rate_pct"] == approx(200 / 3)  # s1, s2 scored / 3 answered
    assert t["fcr_pct"] == approx(200 / 3)  # s2, s5 resolved; s1 repeated by s4
    assert t["fcr_pending"] == 0  # the data runs 4 days on (A's removal)
    assert t["fcr_survey_pct"] == approx(50.0)  # one yes, one no
    assert t["repeat_call_rate_pct"] == approx(100 / 7)  # s4 of 7 calls with a number
    assert t["conversion_rate_pct"] == approx(200 / 3)  # s1, s5
    assert t["ivr_calls"] == 5
    assert t["ivr_contained_pct"] == approx(20.0)
    assert t["ivr_to_queue_pct"] == approx(60.0)
    assert t["ivr_hangup_pct"] == approx(20.0)


async def test_queues(store):
    q = (await report_of(store, day()))["queues"]
    assert set(q) == {"support", "sales"}
    s = q["support"]
    assert (s["offered"], s["answered"], s["abandoned"], s["short_abandoned"]) == (4, 2, 1, 1)
    assert s["abandon_rate_pct"] == approx(100 / 3)  # 1 / (4 - 1)
    assert s["service_level_pct"] == approx(100 / 3)  # s1 only
    assert s["asa_s"] == approx(20.0)  # (10 + 30) / 2
    assert s["awt_s"] == approx(83 / 4)  # (10 + 30 + 3 + 40) / 4
    assert s["ivr_calls"] == 3 and s["ivr_to_queue_pct"] == approx(100.0)
    sales = q["sales"]
    assert (sales["offered"], sales["answered"], sales["transferred"]) == (4, 1, 1)
    assert sales["service_level_pct"] == approx(25.0)
    assert sales["conversion_rate_pct"] == approx(100.0)
    assert sales["csat_pct"] is None  # no valid score in sales


async def test_agents(store):
    a = (await report_of(store, day()))["agents"]
    assert set(a) == {"A", "B"}
    assert a["A"] == {
        "answered": 2, "ring_no_answer": 1, "talk_s": 140, "hold_s": 20, "acw_s": 40,
        "aht_s": 100.0,
        "staffed_s": 16 * 3600,  # 08:00 .. midnight: clipped to the day
        "paused_s": 600,
        "calls_per_hour": 0.125,  # 2 calls / 16 h
        "occupancy_pct": approx(100 * 200 / (57600 - 600)),
        "csat_pct": 50.0, "fcr_pct": 50.0, "conversion_rate_pct": 50.0,
    }
    b = a["B"]
    assert (b["answered"], b["staffed_s"], b["calls_per_hour"]) == (1, 3600, 1.0)
    assert b["occupancy_pct"] == approx(100 * 50 / 3600)
    assert (b["csat_pct"], b["fcr_pct"], b["conversion_rate_pct"]) == (None, 100.0, 100.0)


async def test_charts_and_survey(store):
    r = await report_of(store, day())
    nine = r["charts"]["hourly"][9]
    assert nine == {"hour": 9, "offered": 8, "answered": 3,
                    "service_level_pct": approx(100 * 2 / 7)}
    assert r["charts"]["hourly"][8]["service_level_pct"] is None
    hist = {h["from_s"]: h["calls"] for h in r["charts"]["wait_histogram"]}
    assert hist == {0: 3, 10: 2, 20: 0, 30: 2, 60: 1, 120: 0, 300: 0}  # 3,5,0 | 10,12 | 30,40 | 60
    assert r["charts"]["wait_histogram"][-1]["to_s"] is None
    curve = {p["wait_s"]: p["abandoned_pct"] for p in r["charts"]["abandon_curve"]}
    assert (curve[30], curve[45]) == (0.0, 100.0)  # the one counted abandon waited 40 s
    assert r["survey"] == {
        "questions": {
            "q1": {"kind": "csat", "answers": {"3": 1, "5": 1}, "invalid": 0, "no_response": 1,
                   "hangup": 0},
            "q2": {"kind": "resolution", "answers": {"1": 1, "2": 1}, "invalid": 0,
                   "no_response": 0, "hangup": 1},
        },
        "surveys": 3, "incomplete": 1, "orphans": 0, "repeat_surveys": 0}


async def test_zero_denominators_are_null(store):
    r = await report_of(store, Calls(), end=D + dt.timedelta(days=1))
    for kpis in (r["totals"], r["previous_totals"], *r["intervals"]):
        assert kpis["offered"] == 0
        for key, value in kpis.items():
            if key.endswith(("_pct", "_s", "_avg")):
                assert value is None, key
    assert r["queues"] == {} and r["agents"] == {}
    assert r["survey"] == {"questions": {}, "surveys": 0, "incomplete": 0, "orphans": 0,
                           "repeat_surveys": 0}


async def test_previous_period_and_attrition(store):
    c = Calls()
    c.answered("p1", "q", "A", T - DAY, wait=1, talk=10)  # the day before
    c.answered("n1", "q", "A", T, wait=1, talk=10)
    c.member("A", "q", T - 2 * DAY, T + DAY)
    await roster.add_agent(store, "A", dt.date(2025, 1, 1))
    await roster.add_agent(store, "B", dt.date(2026, 3, 1))
    await roster.leave_agent(store, "B", D)  # B's last day is the report's day
    await roster.add_agent(store, "C", D)
    r = await report_of(store, c)
    assert r["previous_totals"]["offered"] == 1 and r["totals"]["offered"] == 1
    t = r["totals"]
    assert (t["leavers"], t["hires"], t["headcount_start"], t["avg_headcount"]) == (1, 1, 3, 3)
    assert t["attrition_pct"] == approx(100 / 3)
    p = r["previous_totals"]  # the 9th: A and B employed, nobody left
    assert (p["avg_headcount"], p["attrition_pct"]) == (2, 0.0)


async def test_pending_fcr_window(store):
    c = Calls().answered("f1", "q", "A", T, wait=1, talk=10, number="999")
    c.member("A", "q", T - 60, T + 3600)  # the data ends an hour later: 72 h not over
    t = (await report_of(store, c))["totals"]
    assert (t["fcr_pct"], t["fcr_pending"]) == (None, 1)


async def test_short_abandon_threshold_is_a_setting(store):
    c = Calls().left(Kind.ABANDON, "a1", "q", T, wait=3).left(Kind.ABANDON, "a2", "q", T, wait=8)
    t = (await report_of(store, c, config(short_abandon_s=0.0)))["totals"]
    assert (t["abandoned"], t["short_abandoned"], t["abandon_rate_pct"]) == (2, 0, 100.0)
    t = (await refresh_and_build(store, config(short_abandon_s=5.0), D, D))["totals"]
    assert (t["abandoned"], t["short_abandoned"], t["abandon_rate_pct"]) == (1, 1, 100.0)
    t = (await refresh_and_build(store, config(short_abandon_s=10.0), D, D))["totals"]
    assert (t["abandoned"], t["short_abandoned"], t["abandon_rate_pct"]) == (0, 2, None)


async def test_call_spanning_midnight_belongs_to_its_entry_day(store):
    c = Calls().answered("m", "q", "A", epoch("2026-03-10T23:59:50+00:00"), wait=30, talk=300)
    r = await report_of(store, c)
    assert (r["totals"]["answered"], r["totals"]["asa_s"]) == (1, 30.0)
    after = D + dt.timedelta(days=1)
    nxt = await refresh_and_build(store, config(), after, after)
    assert nxt["totals"]["offered"] == 0


async def test_dst_autumn_day_has_25_hours(store):
    c = Calls()
    c.left(Kind.ABANDON, "first", "q", epoch("2026-10-25T02:30:00+02:00"), wait=50)
    c.left(Kind.ABANDON, "second", "q", epoch("2026-10-25T02:30:00+01:00"), wait=50)
    c.left(Kind.ABANDON, "late", "q", epoch("2026-10-25T23:30:00+01:00"), wait=50)
    c.left(Kind.ABANDON, "next", "q", epoch("2026-10-26T00:10:00+01:00"), wait=50)
    day_ = dt.date(2026, 10, 25)
    r = await report_of(store, c, config("Europe/Paris"), day_, day_, interval="hour")
    starts = [i["start"] for i in r["intervals"]]
    assert len(starts) == 25
    assert starts[:4] == ["2026-10-25T00:00:00+02:00", "2026-10-25T01:00:00+02:00",
                          "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    assert starts[-1] == "2026-10-25T23:00:00+01:00"
    offered = [i["offered"] for i in r["intervals"]]
    assert offered[2] == offered[3] == offered[24] == 1 and sum(offered) == 3
    assert r["period"]["end"] == "2026-10-26T00:00:00+01:00"
    assert r["charts"]["hourly"][2]["offered"] == 2  # both 02:30s are local hour 2


async def test_dst_spring_day_has_23_hours(store):
    c = Calls()
    c.left(Kind.ABANDON, "a", "q", epoch("2026-03-29T01:30:00+01:00"), wait=5)
    c.left(Kind.ABANDON, "b", "q", epoch("2026-03-29T03:30:00+02:00"), wait=5)
    day_ = dt.date(2026, 3, 29)
    r = await report_of(store, c, config("Europe/Paris"), day_, day_, interval="hour")
    starts = [i["start"] for i in r["intervals"]]
    assert len(starts) == 23
    assert starts[1:3] == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"]
    assert [i["offered"] for i in r["intervals"]][1:3] == [1, 1]
    days = await refresh_and_build(store, config("Europe/Paris"), day_, day_ + dt.timedelta(days=1))
    assert [i["start"] for i in days["intervals"]] == ["2026-03-29T00:00:00+01:00",
                                                       "2026-03-30T00:00:00+02:00"]


async def test_week_intervals_start_on_monday(store):
    c = Calls().left(Kind.ABANDON, "w", "q", epoch("2026-03-16T10:00:00+00:00"), wait=9)
    r = await report_of(store, c, start=dt.date(2026, 3, 11), end=dt.date(2026, 3, 17),
                        interval="week")
    assert [(i["start"], i["offered"]) for i in r["intervals"]] == [
        ("2026-03-11T00:00:00+00:00", 0), ("2026-03-16T00:00:00+00:00", 1)]


async def test_queue_filter(store):
    r = await report_of(store, day(), queue="sales")
    assert list(r["queues"]) == ["sales"] and r["totals"]["offered"] == 4
    assert set(r["agents"]) == {"B"}
    assert r["period"]["queue"] == "sales"


async def test_report_shape(store):
    r = await report_of(store, day())
    assert list(r) == ["period", "settings", "totals", "previous_totals", "queues", "agents",
                       "intervals", "staffing", "fcr_settled", "warnings", "charts", "survey"]
    assert set(r["period"]) == {"from", "to", "timezone", "queue", "interval", "calendar",
                                "start", "end", "generated_at", "servers", "servers_merged"}
    assert r["settings"] == {"service_level_s": 20.0, "short_abandon_s": 5.0,
                             "repeat_window_h": 72.0, "wrapup_reasons": ["ACW", "wrapup"],
                             "csat_scale": 5, "conversion_codes": ["sale"]}
    assert set(r["charts"]) == {"hourly", "wait_histogram", "abandon_curve"}
    assert len(r["charts"]["hourly"]) == 24


async def test_restart_closes_open_calls_out_of_the_averages(store):
    c = Calls()
    c.left(Kind.ABANDON, "a", "q", T, wait=10)
    c.enter("open", "q", T + 100)  # still waiting when the PBX is killed
    c.ev(Kind.QUEUE_START, T + 400)
    c.ev(Kind.ABANDON, T + 500, call_id="blank", queue="q")  # Asterisk left the wait empty
    c.enter("blank", "q", T + 450)
    t = (await report_of(store, c, config(short_abandon_s=5.0)))["totals"]
    assert (t["offered"], t["closed"], t["abandoned"]) == (3, 1, 2)
    assert (t["awt_s"], t["max_wait_s"]) == (10.0, 10)  # neither closed nor blank wait
    assert t["abandon_rate_pct"] == 100.0  # 2 / (3 offered - 1 closed): closed is no refusal


async def test_abandon_curve_and_histogram_edges(store):
    c = Calls()
    for call_id, wait in (("a", 5), ("b", 20), ("c", 20.5), ("d", 301)):
        c.left(Kind.ABANDON, call_id, "q", T, wait=wait)
    r = await report_of(store, c, config(short_abandon_s=0.0))
    curve = {p["wait_s"]: p["abandoned_pct"] for p in r["charts"]["abandon_curve"]}
    assert (curve[0], curve[5], curve[15], curve[20], curve[30], curve[300]) == (
        0.0, 25.0, 25.0, 50.0, 75.0, 75.0)  # "by t" includes a wait of exactly t
    hist = {h["from_s"]: h["calls"] for h in r["charts"]["wait_histogram"]}
    assert hist == {0: 1, 10: 0, 20: 2, 30: 0, 60: 0, 120: 0, 300: 1}  # [from, to)
