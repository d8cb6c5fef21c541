"""A hand-made report dict of the exact shape `reports.kpis.build_report` returns, so the
renderers and the mailer are tested against known numbers (and against None everywhere)."""

from __future__ import annotations

import copy
from typing import Any

KPI_KEYS = (
    "offered", "answered", "abandoned", "short_abandoned", "timeout", "exit_key", "exit_empty",
    "transferred", "closed", "open", "ended_by_restart", "abandon_rate_pct", "asa_s", "awt_s", "max_wait_s",
    "service_level_pct", "avg_acw_s", "aht_s", "avg_talk_s", "avg_hold_s", "hold_rate_pct",
    "csat_pct", "csat_avg", "survey_response_rate_pct", "fcr_pct", "fcr_pending",
    "fcr_survey_pct", "repeat_call_rate_pct", "conversion_rate_pct", "ivr_calls",
    "ivr_contained_pct", "ivr_to_queue_pct", "ivr_hangup_pct",
)
AGENT_KEYS = (
    "answered", "ring_no_answer", "talk_s", "hold_s", "acw_s", "aht_s", "staffed_s", "paused_s",
    "calls_per_hour", "occupancy_pct", "csat_pct", "fcr_pct", "conversion_rate_pct",
)
COUNTS = ("offered", "answered", "abandoned", "short_abandoned", "timeout", "exit_key",
          "exit_empty", "transferred", "closed", "open", "ended_by_restart", "fcr_pending",
          "ivr_calls")


def kpis(**values: Any) -> dict[str, Any]:
    """A KPI dict: the given values, every other ratio None and every other count 0."""
    unknown = set(values) - set(KPI_KEYS) - {"attrition_pct"}
    assert not unknown, unknown
    base = {k: (0 if k in COUNTS else None) for k in KPI_KEYS}
    return base | values


def agent(**values: Any) -> dict[str, Any]:
    unknown = set(values) - set(AGENT_KEYS)
    assert not unknown, unknown
    base = {k: (0 if k in ("answered", "ring_no_answer") else None) for k in AGENT_KEYS}
    return base | values


TOTALS = kpis(
    offered=412, answered=371, abandoned=33, short_abandoned=4, timeout=2, exit_key=1,
    exit_empty=1, transferred=12, closed=0, abandon_rate_pct=8.1, asa_s=24.6, awt_s=27.9,
    max_wait_s=312.0, service_level_pct=76.5, avg_acw_s=21.0, aht_s=287.4, avg_talk_s=248.2,
    avg_hold_s=18.2, hold_rate_pct=14.3, csat_pct=88.2, csat_avg=4.31,
    survey_response_rate_pct=36.7, fcr_pct=None, fcr_pending=52, fcr_survey_pct=79.0,
    repeat_call_rate_pct=9.8, conversion_rate_pct=12.4, ivr_calls=540, ivr_contained_pct=18.5,
    ivr_to_queue_pct=76.3, ivr_hangup_pct=5.2, attrition_pct=0.0,
)
PREVIOUS = kpis(
    offered=398, answered=367, abandoned=26, short_abandoned=3, abandon_rate_pct=6.6,
    asa_s=19.1, awt_s=22.0, max_wait_s=250.0, service_level_pct=81.2, avg_acw_s=20.0,
    aht_s=295.0, avg_talk_s=255.0, avg_hold_s=20.0, hold_rate_pct=15.0, csat_pct=85.0,
    csat_avg=4.2, fcr_pct=73.9, repeat_call_rate_pct=9.0, conversion_rate_pct=11.0,
    attrition_pct=0.0,
)
QUEUES = {
    "support": kpis(offered=301, answered=270, abandoned=27, short_abandoned=3,
                    abandon_rate_pct=9.1, asa_s=27.2, service_level_pct=73.8, aht_s=301.0,
                    csat_pct=86.0, fcr_pct=69.0),
    "sales": kpis(offered=111, answered=101, abandoned=6, short_abandoned=1,
                  abandon_rate_pct=5.5, asa_s=17.7, service_level_pct=83.6, aht_s=250.9,
                  csat_pct=93.0, fcr_pct=77.0, conversion_rate_pct=45.5),
}
AGENTS = {
    "Alice Smith": agent(answered=131, ring_no_answer=2, talk_s=32011.0, hold_s=2300.0,
                         acw_s=2610.0, aht_s=281.8, staffed_s=28800.0, paused_s=1800.0,
                         calls_per_hour=16.4, occupancy_pct=91.0, csat_pct=92.0, fcr_pct=74.0,
                         conversion_rate_pct=10.0),
    "Bob Jones": agent(answered=127, ring_no_answer=5, talk_s=30500.0, hold_s=2100.0,
                       acw_s=2700.0, aht_s=278.0, staffed_s=28800.0, paused_s=3600.0,
                       calls_per_hour=15.9, occupancy_pct=84.1, csat_pct=85.0, fcr_pct=70.0,
                       conversion_rate_pct=14.2),
    "Carol": agent(answered=113, ring_no_answer=0, talk_s=29000.0, hold_s=2400.0,
                   acw_s=2500.0, aht_s=300.0, staffed_s=27000.0, paused_s=900.0,
                   calls_per_hour=15.1, occupancy_pct=87.5, csat_pct=None, fcr_pct=71.0,
                   conversion_rate_pct=None),
    "Dave (new)": agent(ring_no_answer=1, staffed_s=3600.0, paused_s=3600.0),
}
OFFERED_BY_HOUR = {8: 22, 9: 48, 10: 61, 11: 55, 12: 37, 13: 42, 14: 51, 15: 46, 16: 33, 17: 17}


def hourly() -> list[dict[str, Any]]:
    rows = []
    for hour in range(24):
        offered = OFFERED_BY_HOUR.get(hour, 0)
        answered = round(offered * 0.9)
        sl = None if offered == 0 else round(100.0 - offered * 0.45, 1)
        rows.append({"hour": hour, "offered": offered, "answered": answered,
                     "service_level_pct": sl})
    return rows


WAIT_HISTOGRAM: list[dict[str, Any]] = [
    {"from_s": 0, "to_s": 10, "calls": 190}, {"from_s": 10, "to_s": 20, "calls": 94},
    {"from_s": 20, "to_s": 30, "calls": 41}, {"from_s": 30, "to_s": 60, "calls": 39},
    {"from_s": 60, "to_s": 120, "calls": 28}, {"from_s": 120, "to_s": 300, "calls": 17},
    {"from_s": 300, "to_s": None, "calls": 3},
]
# of the calls abandoned, the share that had hung up by each wait (cumulative, to 100)
ABANDON_CURVE: list[dict[str, Any]] = [
    {"wait_s": t, "abandoned_pct": p} for t, p in (
        (0, 0.0), (5, 6.1), (10, 15.2), (15, 24.2), (20, 36.4), (30, 51.5), (45, 63.6),
        (60, 72.7), (90, 81.8), (120, 87.9), (180, 93.9), (300, 100.0))
]
SURVEY = {
    "questions": {
        "csat": {"kind": "csat", "answers": {"1": 4, "2": 3, "3": 9, "4": 41, "5": 79},
                 "invalid": 2, "no_response": 5, "hangup": 3},
        "resolved": {"kind": "resolution", "answers": {"1": 98, "2": 26},
                     "invalid": 1, "no_response": 6, "hangup": 5},
    },
    "surveys": 141,
    "incomplete": 17,
    "orphans": 2,
    "repeat_surveys": 1,
}
# two hours of one queue: needed vs had (docs/reports.md, `staffing`)
STAFFING = [
    {"start": "2026-11-24T09:00:00+01:00", "queue": "support", "offered": 48, "aht_s": 301.0,
     "agents_needed": 7, "agents_staffed": 6.5},
    {"start": "2026-11-24T10:00:00+01:00", "queue": "support", "offered": 61, "aht_s": 295.0,
     "agents_needed": 8, "agents_staffed": 8.25},
]


def make_report(**overrides: Any) -> dict[str, Any]:
    """The sample day; top-level keys in `overrides` replace the sample's."""
    report = {
        "period": {"from": "2026-11-24", "to": "2026-11-24", "timezone": "Europe/Berlin",
                   "queue": None, "interval": "hour",
                   "start": "2026-11-24T00:00:00+01:00", "end": "2026-11-25T00:00:00+01:00",
                   "generated_at": "2026-11-25T06:00:02+01:00"},
        "settings": {"service_level_s": 20.0, "short_abandon_s": 0.0, "repeat_window_h": 72.0,
                     "wrapup_reasons": ["ACW", "wrapup"], "csat_scale": 5,
                     "conversion_codes": ["sale"]},
        "totals": TOTALS,
        "previous_totals": PREVIOUS,
        "queues": QUEUES,
        "agents": AGENTS,
        "intervals": [{"start": f"2026-11-24T{h:02d}:00:00+01:00",
                       **kpis(offered=n, answered=round(n * 0.9))}
                      for h, n in OFFERED_BY_HOUR.items()],
        "staffing": STAFFING,
        "fcr_settled": {"from": "2026-11-21", "to": "2026-11-21", "fcr_pct": 72.5,
                        "resolved": 290, "repeated": 110},
        "warnings": {"staffed_unknown": [], "agents_like_interfaces": []},
        "charts": {"hourly": hourly(), "wait_histogram": WAIT_HISTOGRAM,
                   "abandon_curve": ABANDON_CURVE},
        "survey": SURVEY,
    }
    return copy.deepcopy(report | overrides)


def empty_report() -> dict[str, Any]:
    """A day without a single call: every count 0, every ratio None."""
    return make_report(
        totals=kpis(attrition_pct=None), previous_totals=kpis(attrition_pct=None),
        queues={}, agents={}, intervals=[],
        charts={"hourly": [{"hour": h, "offered": 0, "answered": 0, "service_level_pct": None}
                           for h in range(24)],
                "wait_histogram": [{**row, "calls": 0} for row in WAIT_HISTOGRAM],
                "abandon_curve": [{**row, "abandoned_pct": None} for row in ABANDON_CURVE]},
        staffing=[], fcr_settled=None,
        survey={"questions": {}, "surveys": 0, "incomplete": 0, "orphans": 0,
                "repeat_surveys": 0},
    )
