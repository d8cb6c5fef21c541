"""The KPI engine: the report dict every renderer (JSON, CSV, HTML, e-mail) reads.

docs/kpis.md defines each KPI; this module computes exactly that. The heavy lifting is SQL
(callkpi/queries/kpis.py): the queue calls of the period are summed per (15-minute bucket,
queue, outcome) in one grouped query over the covering index queue_calls_report (and per
agent in another); Python then folds the groups into local-time intervals, queues and hours. Every real time zone
offset is a whole number of quarter hours, so a 15-minute UTC bucket never straddles a local
hour, day or week boundary, DST changes included.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import os
import re
from typing import Any, Iterable, Literal
from zoneinfo import ZoneInfo

from callkpi.config import Config, KpiConfig
from callkpi.errors import UserError
from callkpi.queries import kpis as q
from callkpi.queries.kpis import ABANDON_CURVE_S, WAIT_BELOW, WAIT_BINS
from callkpi.queries.scope import Scope, servers_in
from callkpi.store import Store
from reports import roster, staffing
from reports.calendar import (INTERVALS, Period, add_calendar_labels, calendar_for,
                              local_midnight)
from reports.facts import BUCKET_S, FactsResult, data_end, refresh_facts

# outcomes whose wait counts in the average wait (a closed call has none; an open one no end)
WAITED = ("answered", "abandoned", "timeout", "exit_key", "exit_empty", "withdrawn")
ANSWERED_ONLY = ("in_sl", "held", "fcr_resolved", "fcr_repeat", "fcr_first", "converted",
                 "transferred", "talk", "hold", "acw", "handled", "ended_by_restart")


class ReportError(UserError):
    """The report cannot be built as asked; the message is meant for the user."""


# ----------------------------------------------------------------------------- sums
class Sums(dict):
    """Named totals of a group; `max_wait` combines by max, everything else adds."""

    def add(self, other: dict[str, Any]) -> None:
        for key, value in other.items():
            if value is None:
                continue
            mine = self.get(key)
            if mine is None:
                self[key] = value
            elif key == "max_wait":
                self[key] = max(mine, value)
            else:
                self[key] = mine + value


def _merge(into: dict[tuple, Sums], key: tuple, sums: Sums) -> None:
    """Adds `sums` under `key`; the first Sums of a key is taken as it is (there are tens
    of thousands of groups a month, and copying each into an empty Sums first was slower)."""
    mine = into.get(key)
    if mine is None:
        into[key] = sums
    else:
        mine.add(sums)


def _fold(outcome: str, group: dict[str, Any]) -> Sums:
    """One (…, outcome) group's sums as the named totals queue_kpis() reads."""
    calls = group["calls"]
    sums = Sums(offered=calls, known=group.get("known"), repeats=group.get("repeats"))
    if outcome == "abandoned":  # a wait Asterisk left empty is not known to be short
        short = group["short"] or 0
        sums.update(abandoned=calls - short, short_abandoned=short)
    elif outcome in ("answered", "timeout", "exit_key", "exit_empty", "withdrawn", "closed",
                     "open"):
        sums[outcome] = calls
    if outcome in WAITED:
        sums.update(waited=group.get("waits"), waited_wait=group.get("wait") or 0.0,
                    max_wait=group.get("max_wait"))
        sums.update({name: group.get(name) or 0 for name in WAIT_BELOW})
    if outcome == "answered":
        sums.update({name: group.get(name) or 0 for name in ANSWERED_ONLY})
        sums["answered_wait"] = group.get("wait") or 0.0
        sums["fcr_pending"] = _fcr_pending(sums)
    return sums


def _fcr_pending(sums: Sums) -> int:
    """A first contact is resolved, a repeat or pending: pending ones are what is left."""
    return sums["fcr_first"] - sums["fcr_resolved"] - sums["fcr_repeat"]


async def _call_sums(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope,
                     end_of_data: float, group: q.Group) -> dict[tuple, Sums]:
    """Sums of the queue calls that entered in [lo, hi), per (queue, bucket), per agent or
    in total."""
    out: dict[tuple, Sums] = {}
    for key, outcome, sums in await q.call_groups(store, kpi, lo, hi, scope, end_of_data,
                                                  group):
        _merge(out, key, _fold(outcome, sums))
    return out


# Occupancy is time-sliced: an agent's handle time in a period is that of the calls that
# entered in it (summed anyway), less what runs past its end, plus what calls that entered in
# the day before it ran into it.
CARRY_OVER_S = 86400


async def _work_across(store: Store, lo: int, hi: int, scope: Scope
                       ) -> dict[str, float]:
    """Per agent: handle time inside [lo, hi) of calls that entered in the day before it,
    less the handle time after hi of calls that entered in the day before hi."""
    out = await q.handle_time_carried_in(store, lo, hi, scope, lo - CARRY_OVER_S)
    for agent, work in (await q.handle_time_spilled_out(store, hi, scope,
                                                        hi - CARRY_OVER_S)).items():
        out[agent] = out.get(agent, 0.0) - work
    return out


async def _survey_sums(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope,
                       group: Literal["bucket", "agent"]) -> dict[tuple, Sums]:
    valid = [str(d) for d in range(1, kpi.csat_scale + 1)]
    good = [d for d in valid if int(d) >= csat_good_min(kpi)]
    return {key: Sums(sums) for key, sums in
            (await q.survey_groups(store, lo, hi, scope, group, valid, good)).items()}


async def _ivr_sums(store: Store, lo: int, hi: int, scope: Scope) -> dict[tuple, Sums]:
    """IVR exits are not queue calls: counted from the ivr-exit events (queue = target) and
    from the IVR paths of QueueMetrics-style IVRAPPEND lines."""
    return {key: Sums(sums) for key, sums in (await q.ivr_groups(store, lo, hi, scope)).items()}


async def _bucket_sums(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope,
                       end_of_data: float, group: q.Group = "bucket") -> dict[tuple, Sums]:
    """Everything summed per (queue, 15-minute bucket), or in total (group="total")."""
    merged: dict[tuple, Sums] = {}
    for part in await asyncio.gather(_call_sums(store, kpi, lo, hi, scope, end_of_data, group),
                                     _survey_sums(store, kpi, lo, hi, scope, "bucket"),
                                     _ivr_sums(store, lo, hi, scope)):
        for key, sums in part.items():
            _merge(merged, key if group == "bucket" else ("",), sums)
    return merged


# ----------------------------------------------------------------------------- KPIs
def ratio(num: float | None, den: float | None, scale: float = 1.0) -> float | None:
    """num / den × scale; None when the denominator is 0 (never 0, never an error)."""
    if not den:
        return None
    return round((num or 0) * scale / den, 3)


def pct(num: float | None, den: float | None) -> float | None:
    return ratio(num, den, 100.0)


def csat_good_min(kpi: KpiConfig) -> int:
    """The lowest good CSAT score: the scale's two highest points unless configured."""
    return kpi.csat_good_min or max(1, kpi.csat_scale - 1)


def fcr_pct(s: dict[str, Any]) -> float | None:
    """Resolved / (resolved + repeated), only when no first contact is still pending: repeats
    are known at once and resolution only when the window is over, so a figure with pending
    contacts would be biased low (docs/kpis.md)."""
    g = lambda name: s.get(name) or 0  # noqa: E731
    if g("fcr_first") - g("fcr_resolved") - g("fcr_repeat") > 0:
        return None
    return pct(g("fcr_resolved"), g("fcr_resolved") + g("fcr_repeat"))


def queue_kpis(s: dict[str, Any]) -> dict[str, Any]:
    g = lambda name: s.get(name) or 0  # noqa: E731
    # neither a caller cut by a restart while waiting nor one still waiting got or refused
    # service: out of the service level and abandon rate
    base = g("offered") - g("short_abandoned") - g("closed") - g("open")
    answered = g("answered")
    handled = g("handled")
    return {
        "offered": g("offered"),
        "answered": answered,
        "abandoned": g("abandoned"),
        "short_abandoned": g("short_abandoned"),
        "timeout": g("timeout"),
        "exit_key": g("exit_key"),
        "exit_empty": g("exit_empty"),
        "withdrawn": g("withdrawn"),
        "transferred": g("transferred"),
        "closed": g("closed"),
        "open": g("open"),
        "ended_by_restart": g("ended_by_restart"),
        "abandon_rate_pct": pct(g("abandoned"), base),
        "asa_s": ratio(g("answered_wait"), answered),
        "awt_s": ratio(g("waited_wait"), g("waited")),
        "max_wait_s": s.get("max_wait"),
        "service_level_pct": pct(g("in_sl"), base),
        "avg_acw_s": ratio(g("acw"), handled),
        "aht_s": ratio(g("talk") + g("hold") + g("acw"), handled),
        "avg_talk_s": ratio(g("talk"), handled),
        "avg_hold_s": ratio(g("hold"), handled),
        "hold_rate_pct": pct(g("held"), handled),
        "csat_pct": pct(g("csat_good"), g("csat_valid")),
        "csat_avg": ratio(g("csat_total"), g("csat_valid")),
        "survey_response_rate_pct": pct(g("scored_calls"), answered),
        "fcr_pct": fcr_pct(s),
        "fcr_pending": g("fcr_pending"),
        "fcr_survey_pct": pct(g("resolution_yes"), g("resolution_answers")),
        "repeat_call_rate_pct": pct(g("repeats"), g("known")),
        "conversion_rate_pct": pct(g("converted"), answered),
        "ivr_calls": g("ivr_calls"),
        "ivr_contained_pct": pct(g("ivr_self_service"), g("ivr_calls")),
        "ivr_to_queue_pct": pct(g("ivr_to_queue"), g("ivr_calls")),
        "ivr_hangup_pct": pct(g("ivr_hangup"), g("ivr_calls")),
    }


def agent_kpis(s: dict[str, Any], staffed_s: float | None, paused_s: float | None, rna: int,
               work_s: float) -> dict[str, Any]:
    """One agent's KPIs; staffed_s None: the log never showed the agent logged in in the
    period (a static member, or one logged in before the history), so every figure per
    staffed hour is unknown rather than 0."""
    g = lambda name: s.get(name) or 0  # noqa: E731
    answered = g("answered")
    occupancy = None if staffed_s is None else pct(work_s, staffed_s - (paused_s or 0.0))
    return {
        "answered": answered,
        "ring_no_answer": rna,
        "talk_s": round(g("talk"), 3),
        "hold_s": round(g("hold"), 3),
        "acw_s": round(g("acw"), 3),
        "aht_s": ratio(g("talk") + g("hold") + g("acw"), g("handled")),
        "staffed_s": None if staffed_s is None else round(staffed_s, 3),
        "paused_s": None if paused_s is None else round(paused_s, 3),
        "calls_per_hour": None if staffed_s is None else ratio(answered, staffed_s, 3600.0),
        "occupancy_pct": None if occupancy is None else min(occupancy, 100.0),
        "csat_pct": pct(g("csat_good"), g("csat_valid")),
        "fcr_pct": fcr_pct(s),
        "conversion_rate_pct": pct(g("converted"), answered),
    }


# ---------------------------------------------------------------------------- agents
async def _agent_times(store: Store, kpi: KpiConfig, lo: float, hi: float, scope: Scope
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """(staffed seconds, non-wrap-up paused seconds while staffed) per agent in [lo, hi)."""
    sessions: dict[str, list[tuple[float, float]]] = {}
    for agent, in_queue, start, end in await q.sessions_overlapping(store, lo, hi, scope):
        sessions.setdefault(agent, []).append(_clip(start, end, lo, hi))
    staffed = {a: _union(spans) for a, spans in sessions.items()}
    paused: dict[str, float] = {}
    for agent, reason, start, end in await q.pauses_overlapping(store, lo, hi, scope):
        if reason in kpi.wrapup_reasons or agent not in staffed:
            continue
        span = _clip(start, end, lo, hi)
        paused[agent] = paused.get(agent, 0.0) + sum(
            _overlap(span, s) for s in staffed[agent])
    return {a: sum(e - s for s, e in spans) for a, spans in staffed.items()}, paused


def _clip(start: float, end: float | None, lo: float, hi: float) -> tuple[float, float]:
    end = hi if end is None else min(end, hi)
    return max(start, lo), max(end, max(start, lo))


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


async def _agents(store: Store, kpi: KpiConfig, period: Period, scope: Scope,
                  end_of_data: float) -> dict[str, dict[str, Any]]:
    lo, hi = period.start_ts, period.end_ts
    calls, surveys, (staffed, paused), rna, across = await asyncio.gather(
        _call_sums(store, kpi, lo, hi, scope, end_of_data, "agent"),
        _survey_sums(store, kpi, lo, hi, scope, "agent"),
        _agent_times(store, kpi, lo, min(hi, end_of_data), scope),
        q.ring_no_answer_counts(store, lo, hi, scope),
        _work_across(store, lo, hi, scope))
    for key, sums in surveys.items():
        _merge(calls, key, sums)
    names = {k[0] for k in calls} | set(staffed) | set(rna)
    names.discard("")
    return {name: agent_kpis(calls.get((name,), {}), staffed.get(name),
                             paused.get(name, 0.0) if name in staffed else None,
                             rna.get(name, 0), _work(calls.get((name,), {})) + across.get(name, 0.0))
            for name in sorted(names)}


def _work(s: dict[str, Any]) -> float:
    return (s.get("talk") or 0.0) + (s.get("hold") or 0.0) + (s.get("acw") or 0.0)


# ---------------------------------------------------------------------------- charts
def _wait_histogram(total: Sums) -> list[dict]:
    """[from_s, to_s) bins of the waits in the awt_s population, from the cumulative sums."""
    below = [0, *(total.get(name) or 0 for name in WAIT_BELOW), total.get("waited") or 0]
    edges = [*WAIT_BINS, None]
    return [{"from_s": edges[i], "to_s": edges[i + 1], "calls": below[i + 1] - below[i]}
            for i in range(len(WAIT_BINS))]


async def _abandon_curve(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope
                         ) -> list[dict]:
    """Share of the abandoned calls (as counted in `abandoned`) that had waited <= t."""
    abandoned, by_t = await q.abandoned_by_wait(store, lo, hi, scope, kpi.short_abandon_s,
                                                ABANDON_CURVE_S)
    return [{"wait_s": t, "abandoned_pct": pct(n, abandoned)}
            for t, n in zip(ABANDON_CURVE_S, by_t)]


def _hourly(buckets: dict[tuple, Sums], period: Period) -> list[dict]:
    hours = [Sums() for _ in range(24)]
    for (_queue, bucket), sums in buckets.items():
        hours[dt.datetime.fromtimestamp(bucket * BUCKET_S, period.tz).hour].add(sums)
    return [{"hour": h, "offered": s.get("offered") or 0, "answered": s.get("answered") or 0,
             "service_level_pct": queue_kpis(s)["service_level_pct"]}
            for h, s in enumerate(hours)]


# ---------------------------------------------------------------------------- survey
async def _survey_summary(store: Store, lo: int, hi: int, scope: Scope) -> dict[str, Any]:
    questions: dict[str, dict[str, Any]] = {}
    orphans = repeats = 0
    for question, kind, status, value, counted, orphan, count in await q.answer_groups(
            store, lo, hi, scope):
        if not counted:  # a second survey of a call: stored, never counted
            repeats += count
            continue
        orphans += count if orphan else 0
        entry = questions.setdefault(question, {"kind": kind, "answers": {}, "invalid": 0,
                                                "no_response": 0, "hangup": 0})
        if status == "answered":
            entry["answers"][value] = entry["answers"].get(value, 0) + count
        elif status in ("invalid", "no-response", "hangup"):
            entry[status.replace("-", "_")] += count
    surveys, incomplete = await q.surveys_and_hangups(store, lo, hi, scope)
    return {"questions": questions, "surveys": surveys, "incomplete": incomplete,
            # answers whose call the store has not seen (counted here, not in CSAT or FCR;
            # they link when the call's events arrive) and answers of a second survey
            "orphans": orphans, "repeat_surveys": repeats}


# ---------------------------------------------------------------------------- report
def check_request(config: Config, start: dt.date, end: dt.date, interval: str) -> ZoneInfo:
    """The report's time zone, once the request is known to make sense (else ReportError)."""
    if interval not in INTERVALS:
        raise ReportError(f"interval must be one of {', '.join(INTERVALS)}, not {interval!r}")
    if end < start:
        raise ReportError(f"--to {end} is before --from {start}")
    try:
        return ZoneInfo(report_timezone(config.report.timezone))
    except (ValueError, KeyError, OSError):
        raise ReportError(f"unknown time zone {config.report.timezone!r} in [report]") from None


def report_timezone(configured: str) -> str:
    """The zone of the report's days: `[report] timezone`, else this machine's (callkpi runs
    beside the PBX): TZ, then /etc/localtime, then /etc/timezone; UTC only when none names
    a zone."""
    if configured:
        return configured
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    link = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in link:
        candidates.append(link.split("/zoneinfo/", 1)[1])
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            candidates.append(f.read().strip())
    except OSError:
        pass
    for name in candidates:
        try:
            if name:
                ZoneInfo(name)
                return name
        except (ValueError, KeyError, OSError):
            continue
    return "UTC"


async def refresh_and_build(store: Store, config: Config, start: dt.date, end: dt.date,
                            queue: str | None = None, interval: str = "day") -> dict[str, Any]:
    """The report as of the latest events: the facts brought up to date first (a write),
    then `build_report` (a read). What a reader that shows the latest numbers calls."""
    check_request(config, start, end, interval)
    await refresh(store, config)
    return await build_report(store, config, start, end, queue, interval)


async def refresh(store: Store, config: Config, *, rebuild: bool = False) -> FactsResult:
    """The facts brought up to date under the config's settings ([agents] names, [report]
    merge_servers): what a reader calls before `build_report` (a write)."""
    return await refresh_facts(store, config.kpi, rebuild=rebuild, names=config.agents.names,
                               merge_servers=config.report.merge_servers)


async def build_report(store: Store, config: Config, start: dt.date, end: dt.date,
                       queue: str | None = None, interval: str = "day") -> dict[str, Any]:
    """The report over the local days start..end inclusive, of one queue or all, of the
    servers of [report] servers or all (see docs/reports.md), from the facts as they were
    last refreshed: a pure read, writing nothing (`refresh_and_build` refreshes them
    first)."""
    tz = check_request(config, start, end, interval)
    kpi = config.kpi
    scope = Scope(queue, tuple(sorted(set(config.report.servers))), config.report.merge_servers)
    end_of_data = await data_end(store) or 0.0
    calendar = calendar_for(config.report.calendar, config.report.locale)
    period = Period(start, end, tz, calendar)
    prev = period.previous()
    lo, hi = period.start_ts, period.end_ts
    # independent reads, awaited together: the store runs them side by side
    starts = period.interval_starts(interval)
    staffed_task = asyncio.ensure_future(staffing.staffed_seconds(
        store, kpi, starts, max(lo, min(hi, end_of_data)), scope))
    settled = _settled_days(kpi, period, end_of_data)
    # (when the period itself is settled, its totals are the figure: no query)
    fcr_task = asyncio.ensure_future(_fcr_settled(
        store, kpi, period, None if settled == (start, end) else settled, scope, end_of_data))
    try:
        buckets, previous, agents, agent_table, abandon_curve, survey = await asyncio.gather(
            _bucket_sums(store, kpi, lo, hi, scope, end_of_data),
            _bucket_sums(store, kpi, prev.start_ts, prev.end_ts, scope, end_of_data,
                         group="total"),
            roster.list_agents(store),
            _agents(store, kpi, period, scope, end_of_data),
            _abandon_curve(store, kpi, lo, hi, scope),
            _survey_summary(store, lo, hi, scope))
        (staffed, staffed_all), fcr_settled = await staffed_task, await fcr_task
        servers_covered = await servers_in(store, scope)
    finally:  # (a failed read leaves no task behind)
        for task in (staffed_task, fcr_task):
            task.cancel()
    totals = _total(buckets.values())
    if settled == (start, end):
        fcr_settled = {"from": start.isoformat(), "to": end.isoformat(), **_fcr_of(totals)}
    queues = _by_queue(buckets)
    staffing_table = staffing.staffing_rows(
        starts, hi, period.iso, _interval_queue_kpis(buckets, starts),
        {q: k["aht_s"] for q, k in queues.items()}, staffed, kpi.service_level_s,
        config.report.targets.get("service_level_pct"))
    return add_calendar_labels({
        "period": {
            "from": start.isoformat(), "to": end.isoformat(), "timezone": tz.key,
            "queue": queue, "interval": interval, "calendar": calendar,
            # the servers whose calls are in, and whether their queues and agents of one
            # name are one (else named `name @ server`)
            "servers": servers_covered, "servers_merged": scope.merged,
            "start": period.iso(period.start_ts),
            "end": period.iso(period.end_ts),
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "settings": {
            "service_level_s": kpi.service_level_s, "short_abandon_s": kpi.short_abandon_s,
            "repeat_window_h": kpi.repeat_window_h, "wrapup_reasons": list(kpi.wrapup_reasons),
            "csat_scale": kpi.csat_scale, "conversion_codes": list(kpi.conversion_codes),
        },
        "totals": {**queue_kpis(totals),
                   **roster.headcount(agents, start, end)},
        "previous_totals": {**queue_kpis(_total(previous.values())),
                            **roster.headcount(agents, prev.start, prev.end)},
        "queues": queues,
        "agents": agent_table,
        "intervals": _intervals(buckets, period, interval, staffing_table, staffed_all),
        "staffing": staffing_table,
        "fcr_settled": fcr_settled,
        "warnings": _warnings(agent_table),
        "charts": {
            "hourly": _hourly(buckets, period),
            "wait_histogram": _wait_histogram(totals),
            "abandon_curve": abandon_curve,
        },
        "survey": survey,
    })


def _total(groups: Iterable[Sums]) -> Sums:
    total = Sums()
    for sums in groups:
        total.add(sums)
    return total


def _by_queue(buckets: dict[tuple, Sums]) -> dict[str, dict[str, Any]]:
    """Queue calls per queue (IVR exits with no target queue belong to no queue)."""
    queues: dict[str, Sums] = {}
    for (queue, _bucket), sums in buckets.items():
        if queue:
            queues.setdefault(queue, Sums()).add(sums)
    return {name: queue_kpis(queues[name]) for name in sorted(queues)}


def _intervals(buckets: dict[tuple, Sums], period: Period, interval: str,
               staffing_table: list[dict[str, Any]], staffed_all: dict[int, float]
               ) -> list[dict]:
    starts = period.interval_starts(interval)
    sums = [Sums() for _ in starts]
    for (_queue, bucket), group in buckets.items():
        sums[bisect.bisect_right(starts, bucket * BUCKET_S) - 1].add(group)
    needed: dict[str, list[int | None]] = {}
    for row in staffing_table:
        needed.setdefault(row["start"], []).append(row["agents_needed"])
    ends = [*starts[1:], period.end_ts]
    out = []
    for i, (t, s) in enumerate(zip(starts, sums)):
        start = period.iso(t)
        per_queue = needed.get(start, [])
        out.append({"start": start, **queue_kpis(s),
                    # each queue is its own Erlang C system: their needs add up
                    "agents_needed": None if None in per_queue else sum(
                        n for n in per_queue if n is not None),
                    "agents_staffed": round(staffed_all.get(i, 0.0) / (ends[i] - t), 3)
                    if staffed_all else None})
    return out


def _interval_queue_kpis(buckets: dict[tuple, Sums], starts: list[int]
                         ) -> dict[tuple[int, str], dict[str, Any]]:
    sums: dict[tuple[int, str], Sums] = {}
    for (queue, bucket), group in buckets.items():
        if queue:
            i = bisect.bisect_right(starts, bucket * BUCKET_S) - 1
            sums.setdefault((i, queue), Sums()).add(group)
    return {key: queue_kpis(s) for key, s in sums.items()}


def _settled_days(kpi: KpiConfig, period: Period, end_of_data: float
                  ) -> tuple[dt.date, dt.date] | None:
    """The latest days, as many as the period's and ending at its last day at the latest,
    whose every first contact's window is over; None when no day is settled yet."""
    window = kpi.repeat_window_h * 3600
    last = period.end
    while local_midnight(last + dt.timedelta(days=1), period.tz) + window > end_of_data:
        last -= dt.timedelta(days=1)
        if last < period.start - dt.timedelta(days=366):
            return None
    return last - (period.end - period.start), last


async def _fcr_settled(store: Store, kpi: KpiConfig, period: Period,
                       days: tuple[dt.date, dt.date] | None, scope: Scope,
                       end_of_data: float) -> dict[str, Any] | None:
    """FCR over the settled days (_settled_days): a day's FCR read the next morning would
    be biased to 0 % (repeats are known at once, resolution only after the window)."""
    if days is None:
        return None
    first, last = days
    lo = local_midnight(first, period.tz)
    hi = local_midnight(last + dt.timedelta(days=1), period.tz)
    sums = await q.fcr_sums(store, kpi, lo, hi, scope, end_of_data)
    return {"from": first.isoformat(), "to": last.isoformat(), **_fcr_of(sums)}


def _fcr_of(sums: dict[str, Any]) -> dict[str, Any]:
    return {"fcr_pct": fcr_pct(sums), "resolved": sums.get("fcr_resolved") or 0,
            "repeated": sums.get("fcr_repeat") or 0}


# member interfaces as Asterisk's channel drivers name them (PJSIP/1001, Local/1001@agents/n)
INTERFACE = re.compile(r"^(PJSIP|SIP|IAX2|DAHDI|Local|SCCP|MGCP|UNISTIM|H323|OOH323|Motif|"
                       r"Agent|Console|WebSocket|Skype)/", re.IGNORECASE)


def looks_like_interface(name: str) -> bool:
    return bool(INTERFACE.match(name))


async def agents_like_interfaces(store: Store) -> list[str]:
    """Agents of the facts (as last refreshed) named like a member interface."""
    return sorted(a for a in await q.session_agents(store) if looks_like_interface(a))


def _warnings(agent_table: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """What the manager should know the numbers cannot say (docs/reports.md)."""
    return {
        # the log never showed them logged in during the period: staffed time unknown
        "staffed_unknown": [a for a, k in agent_table.items() if k["staffed_s"] is None],
        # named by their interface: map them in [agents] names (or run `callkpi listen`)
        "agents_like_interfaces": [a for a in agent_table if looks_like_interface(a)],
    }
