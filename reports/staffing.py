"""Staffing: per interval and queue, the agents Erlang C says the service-level target
needed (from the calls offered and their AHT) beside the agents the queue had (average
logged in and not on a non-wrap-up pause). docs/kpis.md, "Staffing".
"""

from __future__ import annotations

import bisect
from typing import Any, Callable

from callkpi.config import KpiConfig
from callkpi.queries import kpis as queries
from callkpi.queries.scope import Scope
from callkpi.store import Store
from reports.erlang import agents_needed

Span = tuple[float, float]


async def staffed_seconds(store: Store, kpi: KpiConfig, starts: list[int], hi: float,
                          scope: Scope) -> tuple[dict[tuple[int, str], float],
                                                 dict[int, float]]:
    """Agent-seconds logged in and not paused (wrap-up counts as working), per (interval
    index, queue) and per interval over all queues (an agent in two queues counts once)."""
    lo = starts[0]
    by_queue: dict[tuple[str, str], list[Span]] = {}
    for agent, in_queue, start, end in await queries.sessions_overlapping(store, lo, hi, scope):
        by_queue.setdefault((agent, in_queue), []).append(_clip(start, end, lo, hi))
    paused: dict[str, list[Span]] = {}
    for agent, reason, start, end in await queries.pauses_overlapping(store, lo, hi, scope):
        if reason not in kpi.wrapup_reasons:
            paused.setdefault(agent, []).append(_clip(start, end, lo, hi))
    per_queue: dict[tuple[int, str], float] = {}
    per_agent: dict[str, list[Span]] = {}
    for (agent, q), spans in by_queue.items():
        available = _minus(_union(spans), _union(paused.get(agent, [])))
        per_agent.setdefault(agent, []).extend(available)
        _spread(available, starts, hi, lambda i, s: _add(per_queue, (i, q), s))
    total: dict[int, float] = {}
    for spans in per_agent.values():
        _spread(_union(spans), starts, hi, lambda i, s: _add(total, i, s))
    return per_queue, total


def staffing_rows(starts: list[int], hi: float, iso: Callable[[float], str],
                  queue_sums: dict[tuple[int, str], dict[str, Any]],
                  period_aht: dict[str, float | None], staffed: dict[tuple[int, str], float],
                  service_level_s: float, target_pct: float | None) -> list[dict[str, Any]]:
    """One row per interval x queue (every queue with calls or agents in the period);
    agents_staffed is null for a queue with no session in the period (rule 17). An
    interval's AHT is the queue's AHT in it, else over the whole period (an interval
    with calls offered and none answered)."""
    queues = sorted({q for (_i, q) in queue_sums} | {q for (_i, q) in staffed})
    known = {q for (_i, q) in staffed}  # queues with a session in the period
    ends = [*starts[1:], hi]
    rows = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        for q in queues:
            kpis = queue_sums.get((i, q), {})
            offered = kpis.get("offered", 0)
            aht = kpis.get("aht_s") if kpis.get("aht_s") is not None else period_aht.get(q)
            needed = None
            if offered == 0:
                needed = 0
            elif aht is not None and target_pct is not None:
                needed = agents_needed(offered, aht, end - start, service_level_s,
                                       target_pct / 100.0)
            rows.append({"start": iso(start), "queue": q, "offered": offered,
                         "aht_s": aht, "agents_needed": needed,
                         # unknown when the log shows no session in the queue at all
                         "agents_staffed": round(staffed.get((i, q), 0.0) / (end - start), 3)
                         if q in known else None})
    return rows


def _spread(spans: list[Span], starts: list[int], hi: float,
            add: Callable[[int, float], None]) -> None:
    """Adds each span's seconds to the intervals it overlaps."""
    for start, end in spans:
        i = max(0, bisect.bisect_right(starts, start) - 1)
        while i < len(starts) and starts[i] < end:
            stop = starts[i + 1] if i + 1 < len(starts) else hi
            seconds = min(end, stop) - max(start, starts[i])
            if seconds > 0:
                add(i, seconds)
            i += 1


def _add(into: dict[Any, float], key: Any, seconds: float) -> None:
    into[key] = into.get(key, 0.0) + seconds


def _clip(start: float, end: float | None, lo: float, hi: float) -> Span:
    end = hi if end is None else min(end, hi)
    return max(start, lo), max(end, max(start, lo))


def _union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def _minus(spans: list[Span], holes: list[Span]) -> list[Span]:
    """spans less holes (both unions: sorted, disjoint)."""
    out: list[Span] = []
    for start, end in spans:
        for h_start, h_end in holes:
            if h_end <= start or h_start >= end:
                continue
            if h_start > start:
                out.append((start, h_start))
            start = max(start, h_end)
            if start >= end:
                break
        if start < end:
            out.append((start, end))
    return out
