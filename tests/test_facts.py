"""Per-call facts on hand-made event sequences; the expected values are worked out here."""

from __future__ import annotations

import random

import pytest

from callkpi.config import KpiConfig
from callkpi.events import CallLink, Kind
from callkpi.store import Batch
from reports.facts import refresh_facts
from test_facts_helpers import SERVER, Calls, calls_by_id, epoch

T = epoch("2026-03-10T09:00:00+00:00")
KPI = KpiConfig(wrapup_s={"q": 30.0})


def scenario() -> Calls:
    c = Calls()
    c.member("A", "q", T, T + 1000).member("B", "q2", T, T + 1000)
    # c1: hold 20..30 (10 s), talk 60 bridged; ACW pause 77..100 after the end at 75
    c.answered("c1", "q", "A", T + 10, wait=5, talk=60, number="111")
    c.hold("c1", T + 20, T + 30)
    c.pause("A", T + 77, T + 100)
    c.disposition("c1", T + 80, "sale")
    # c2: transferred at 263; hold from 220 never released: held until the end (43 s);
    # no pause: configured wrap-up 30 s, capped by A's next connect at 280 -> 17 s
    c.answered("c2", "q", "A", T + 200, wait=3, talk=60, number="222", transfer=True)
    c.hold("c2", T + 220)
    # c3: ends at 340, nothing after: configured wrap-up 30 s in full
    c.answered("c3", "q", "A", T + 270, wait=10, talk=60, number="111")
    # c4: queue q2 has no wrap-up configured and B does not pause: ACW 0
    c.answered("c4", "q2", "B", T + 300, wait=2, talk=20)
    # c5 waits, c6 talks when the PBX restarts at 600
    c.enter("c5", "q", T + 500)
    c.answered("c6", "q2", "B", T + 550, wait=10, talk=0, number="333")
    c.events.pop()  # c6 never completes
    c.ev(Kind.QUEUE_START, T + 600)
    # m1 is moved from q2 (exit-empty) to q: two queue calls
    c.left(Kind.EXIT_EMPTY, "m1", "q2", T + 700, wait=1, number="444")
    c.answered("m1", "q", "A", T + 702, wait=4, talk=30, number="444")
    return c


async def derive(store, events: Calls, kpi: KpiConfig = KPI) -> dict:
    await events.store_in(store)
    await refresh_facts(store, kpi)
    return await calls_by_id(store)


async def test_hold_talk_transfer_and_acw(store):
    calls = await derive(store, scenario())
    c1 = calls["c1@q"]
    assert (c1["outcome"], c1["wait_s"], c1["bridged_s"]) == ("answered", 5, 60)
    assert (c1["hold_s"], c1["talk_s"], c1["acw_s"]) == (10, 50, 23)  # ACW: 100 - 77
    assert c1["disposition"] == "sale" and c1["transferred"] == 0
    c2 = calls["c2@q"]
    assert c2["transferred"] == 1 and c2["outcome"] == "answered"
    assert (c2["hold_s"], c2["talk_s"], c2["acw_s"]) == (43, 17, 17)
    assert calls["c3@q"]["acw_s"] == 30
    assert calls["c4@q2"]["acw_s"] == 0


async def test_pbx_restart_closes_open_calls(store):
    calls = await derive(store, scenario())
    # the PBX was last heard of at T+560 (c6's connect): down from there until T+600
    c5 = calls["c5@q"]  # still waiting: closed, no wait
    assert (c5["outcome"], c5["ended_ts"], c5["wait_s"]) == ("closed", T + 560, None)
    c6 = calls["c6@q2"]  # connected, never completed: answered, its talk unknown
    assert (c6["outcome"], c6["ended_by_restart"], c6["ended_ts"]) == ("answered", 1, T + 560)
    assert (c6["agent"], c6["wait_s"], c6["bridged_s"], c6["talk_s"]) == ("B", 10, None, None)
    assert (c6["hold_s"], c6["acw_s"], c6["unsettled"]) == (None, None, 0)
    sessions = await store.fetch_all(
        "SELECT agent, start_ts, end_ts FROM agent_sessions ORDER BY agent, start_ts")
    # persistent members: the sessions go on after the restart, less the downtime
    assert sessions == [("A", T, T + 560), ("A", T + 600, T + 1000),
                        ("B", T, T + 560), ("B", T + 600, T + 1000)]


async def test_moved_caller_is_two_queue_calls(store):
    calls = await derive(store, scenario())
    assert calls["m1@q2"]["outcome"] == "exit_empty"
    assert calls["m1@q"]["outcome"] == "answered" and calls["m1@q"]["wait_s"] == 4


async def test_caller_gaps_skip_the_same_phone_call(store):
    calls = await derive(store, scenario())
    # 111 called at T+10 (c1) and T+270 (c3): 260 s apart
    assert (calls["c1@q"]["prev_gap_s"], calls["c1@q"]["next_gap_s"]) == (None, 260)
    assert (calls["c3@q"]["prev_gap_s"], calls["c3@q"]["next_gap_s"]) == (260, None)
    # m1's two queue calls are one phone call: neither is a repeat of the other
    assert calls["m1@q"]["prev_gap_s"] is None and calls["m1@q2"]["next_gap_s"] is None


async def test_acw_pause_up_to_the_next_connect(store):
    c = Calls().member("A", "q", T, T + 1000)
    c.answered("x1", "q", "A", T, wait=1, talk=10)  # ends at T+11
    c.pause("A", T + 15, None)  # never unpaused ...
    c.answered("x2", "q", "A", T + 40, wait=10, talk=10)  # ... connected at T+50
    c.answered("x3", "q", "A", T + 100, wait=1, talk=10)  # ends at T+111
    c.pause("A", T + 125, T + 200)  # 14 s after the end: not this call's ACW
    calls = await derive(store, c, KpiConfig())
    assert calls["x1@q"]["acw_s"] == 35  # 50 - 15
    assert calls["x3@q"]["acw_s"] == 0


async def test_survey_answers_link_to_the_queue_call(store):
    c = scenario()
    # answered on the survey channel, linked to the caller's call by its linkedid ...
    c.answer("agi-1", T + 90, "q1", "csat", "5", linkedid="c1")
    # ... or by call_links; queue and agent from the queue call, not the AGI's guess
    c.ev(Kind.SURVEY_ANSWER, T + 350, source="agi", call_id="agi-2", queue="wrong",
         agent="nobody", discr="q2", value="1", reason="answered",
         extra={"question_kind": "resolution"})
    await store.write(Batch(links=[CallLink(SERVER, "agi-2", "c3", T + 340)]))
    await derive(store, c)
    rows = await store.fetch_all(
        "SELECT call_id, queue, agent, answered, question, kind, value, status"
        " FROM survey_answers ORDER BY ts")
    assert rows == [("agi-1", "q", "A", 1, "q1", "csat", "5", "answered"),
                    ("agi-2", "q", "A", 1, "q2", "resolution", "1", "answered")]


async def test_late_hold_and_late_end_are_picked_up(store):
    c = Calls().member("A", "q", T, None)
    c.answered("c1", "q", "A", T + 10, wait=5, talk=60)
    complete = c.events.pop()
    calls = await derive(store, c)
    assert calls["c1@q"]["ended_ts"] is None and calls["c1@q"]["unsettled"] == 1
    c.events.append(complete)
    calls = await derive(store, c)
    assert calls["c1@q"]["bridged_s"] == 60 and calls["c1@q"]["hold_s"] == 0
    c.hold("c1", T + 20, T + 35)  # AMI's hold arrives after queue_log's end
    calls = await derive(store, c)
    assert (calls["c1@q"]["hold_s"], calls["c1@q"]["talk_s"]) == (15, 45)


@pytest.mark.parametrize("seed", range(12))
async def test_incremental_equals_rebuild(store, seed):
    events = scenario().events
    events += Calls().answer("agi-1", T + 90, "q1", "csat", "4", linkedid="c1").events
    rng = random.Random(seed)
    rng.shuffle(events)  # sources deliver late and out of order
    cuts = sorted(rng.sample(range(1, len(events)), 4))
    for lo, hi in zip([0, *cuts], [*cuts, len(events)]):
        await store.write(Batch(events=events[lo:hi]))
        await refresh_facts(store, KPI)
    incremental = await _all_facts(store)
    await refresh_facts(store, KPI, rebuild=True)
    assert await _all_facts(store) == incremental


async def _all_facts(store) -> list:
    return [
        await store.fetch_all("SELECT * FROM queue_calls ORDER BY id"),
        await store.fetch_all("SELECT * FROM agent_sessions ORDER BY agent, queue, start_ts"),
        await store.fetch_all("SELECT * FROM agent_pauses ORDER BY agent, start_ts"),
        await store.fetch_all("SELECT * FROM survey_answers ORDER BY id"),
    ]


async def test_changed_wrapup_settings_rebuild_the_facts(store):
    calls = await derive(store, scenario())
    assert calls["c3@q"]["acw_s"] == 30
    await refresh_facts(store, KpiConfig(wrapup_s={"q": 12.0}))
    assert (await calls_by_id(store))["c3@q"]["acw_s"] == 12


async def test_an_open_session_does_not_make_refreshes_reread_it(store):
    c = Calls().member("A", "q", T, None).pause("A", T + 5, None, reason="lunch")
    await derive(store, c)
    c.answered("late", "q", "A", T + 10_000, wait=2, talk=30)
    await c.store_in(store)
    result = await refresh_facts(store, KPI)
    assert (result.since, result.events) == (T + 10_000, 3)  # only the new call's events
    c.ev(Kind.MEMBER_REMOVE, T + 20_000, agent="A", queue="q")
    await derive(store, c)
    assert await store.fetch_all("SELECT start_ts, end_ts FROM agent_sessions") == [
        (T, T + 20_000)]
    assert await store.fetch_all("SELECT reason, start_ts, end_ts FROM agent_pauses") == [
        ("lunch", T + 5, T + 20_000)]  # leaving the last queue ends the pause


async def test_caller_gaps_in_chunks(store, monkeypatch):
    monkeypatch.setattr("reports.facts.GAP_CHUNK", 2)
    c = Calls().member("A", "q", T, None)
    for i in range(5):
        c.answered(f"a{i}", "q", "A", T + i, wait=1, talk=1, number=f"n{i}")
    await derive(store, c)
    for i in range(5):  # each number calls again 100 s later: refreshed in 3 chunks
        c.answered(f"b{i}", "q", "A", T + 100 + i, wait=1, talk=1, number=f"n{i}")
    calls = await derive(store, c)
    assert [calls[f"a{i}@q"]["next_gap_s"] for i in range(5)] == [100] * 5
    assert [calls[f"b{i}@q"]["prev_gap_s"] for i in range(5)] == [100] * 5
