"""The report's SQL (reports/kpis.py and reports/staffing.py keep the rules): aggregates over
the facts of a period, summed in the database and folded into KPIs above.

Queue calls are read by (15-minute bucket, queue) over the covering index
queue_calls_report; survey answers by their entry's bucket (index survey_answers_bucket);
events by their second. A period starts and ends on a bucket boundary (every real time
zone offset is a whole number of quarter hours).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Sequence

from callkpi.config import KpiConfig
from callkpi.events import Kind
from callkpi.queries import marks
from callkpi.queries.facts import BUCKET_S
from callkpi.queries.scope import Scope
from callkpi.store import Store

WAIT_BINS = (0, 10, 20, 30, 60, 120, 300)  # histogram bin edges, seconds; the last is open
ABANDON_CURVE_S = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)

# The queue calls of a period are grouped by (bucket, queue, outcome): the outcome counts are
# the groups' sizes, and these sums are taken per group; reports/kpis.py keeps the ones that
# mean something for the group's outcome (talk of answered calls, short waits of abandons,
# ...). Parameters are named; their values come from _sum_columns(). Each count is
# COUNT(CASE <branches> END): the calls the branches give 1 (NULL is not counted; cheaper per
# row than SUM of 1 or 0). FCR classes are CASE chains (cheaper per row than ANDs of ORs) that
# first rule out calls that are no first contact (anonymous, not its phone call's contact leg,
# or the number's answered call within the window before).
_NOT_FIRST = ("WHEN caller_number = '' THEN NULL WHEN fcr_contact = 0 THEN NULL"
              " WHEN fcr_prev_gap_s <= ? THEN NULL")
CALL_COUNTS = (
    ("short", "WHEN wait_s < ? THEN 1", ("short",)),
    ("in_sl", "WHEN wait_s <= ? THEN 1", ("sl",)),
    ("held", "WHEN hold_s > 0 THEN 1", ()),
    ("known", "WHEN caller_number <> '' THEN 1", ()),
    ("repeats", "WHEN caller_number = '' THEN NULL WHEN prev_gap_s <= ? THEN 1", ("window",)),
    ("fcr_resolved", f"{_NOT_FIRST} WHEN next_gap_s <= ? THEN NULL WHEN entered_ts <= ? THEN 1",
     ("window", "window", "window_over")),
    ("fcr_repeat", f"{_NOT_FIRST} WHEN next_gap_s <= ? THEN 1", ("window", "window")),
    ("fcr_first", f"{_NOT_FIRST} ELSE 1", ("window",)),
    ("converted", "WHEN disposition IN ({codes}) THEN 1", ("codes",)),
    # the wait histogram, cumulative: waits below each bin edge (constants, not input)
    *((f"wait_lt_{edge}", f"WHEN wait_s < {edge} THEN 1", ()) for edge in WAIT_BINS[1:]),
)
WAIT_BELOW = tuple(f"wait_lt_{edge}" for edge in WAIT_BINS[1:])
CALL_AGGREGATES = (
    ("calls", "COUNT(*)"),
    ("wait", "SUM(wait_s)"),
    ("waits", "COUNT(wait_s)"),
    ("max_wait", "MAX(wait_s)"),
    ("transferred", "SUM(transferred)"),
    ("talk", "SUM(talk_s)"),
    ("hold", "SUM(hold_s)"),
    ("acw", "SUM(acw_s)"),
    # answered calls whose talk is known (ended, and not cut by a restart): the averages'
    # denominator
    ("handled", "COUNT(talk_s)"),
    ("ended_by_restart", "SUM(ended_by_restart)"),
)
# what the agent table needs of each agent's answered calls
AGENT_SUMS = frozenset(("calls", "talk", "hold", "acw", "converted", "fcr_resolved",
                        "fcr_repeat", "fcr_first", "handled", "ended_by_restart"))
FCR_SUMS = frozenset(("fcr_first", "fcr_resolved", "fcr_repeat"))
SURVEY_SUMS = ("csat_valid", "csat_good", "csat_total", "resolution_answers", "resolution_yes",
               "scored_calls")
IVR_SUMS = ("ivr_calls", "ivr_self_service", "ivr_to_queue", "ivr_hangup")

# the survey answers are read by this expression's range, in its order: the index
# survey_answers_bucket leads with it
SURVEY_BUCKET = f"entered_tsec / {BUCKET_S}"

# An answered call's handle time (talk + hold + ACW) as a span from its connect (entry +
# wait), from columns of the covering index.
W_START = "(entered_ts + COALESCE(wait_s, 0))"
W_END = f"({W_START} + talk_s + COALESCE(hold_s, 0) + COALESCE(acw_s, 0))"

Group = Literal["bucket", "agent", "total"]


class CallGroup(NamedTuple):
    """One group of queue calls of one outcome: key is (queue, bucket), (agent,) or ("",)."""

    key: tuple
    outcome: str
    sums: dict[str, Any]  # CALL_AGGREGATES' and CALL_COUNTS' names -> value


class Span(NamedTuple):
    """An agent session (label: its queue) or pause (label: its reason)."""

    agent: str
    label: str
    start_ts: float
    end_ts: float | None


class AnswerGroup(NamedTuple):
    question: str
    kind: str
    status: str
    value: str
    counted: int
    orphan: bool  # its queue call is not known
    answers: int


# ------------------------------------------------------------------------ queue calls
async def call_groups(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope,
                      end_of_data: float, group: Group) -> list[CallGroup]:
    """The queue calls that entered in [lo, hi), summed per (queue, bucket, outcome), per
    agent (answered calls only, AGENT_SUMS) or per outcome in total."""
    where, params = _range(lo // BUCKET_S, hi // BUCKET_S, scope, "entered_bucket")
    agent, queue = scope.name("agent"), scope.name("queue")
    if group == "agent":
        columns, names, sum_params = _sum_columns(kpi, end_of_data, AGENT_SUMS)
        where += " AND outcome = 'answered' AND agent <> ''"
        # one outcome: grouping by agent alone sorts a shorter key
        keys, outcome, group_by = agent, "'answered'", agent
    else:
        columns, names, sum_params = _sum_columns(kpi, end_of_data)
        keys = f"entered_bucket, {queue}" if group == "bucket" else "''"
        # PostgreSQL refuses a constant in GROUP BY
        outcome, group_by = "outcome", f"entered_bucket, {queue}, outcome" \
            if group == "bucket" else "outcome"
    sql = (f"SELECT {keys}, {outcome}, {columns} FROM queue_calls WHERE {where}"
           f" GROUP BY {group_by}")
    width = 2 if group == "bucket" else 1
    return [CallGroup((row[1], row[0]) if group == "bucket" else tuple(row[:width]),
                      row[width], dict(zip(names, row[width + 1:])))
            for row in await store.fetch_all(sql, [*sum_params, *params])]


async def fcr_sums(store: Store, kpi: KpiConfig, lo: int, hi: int, scope: Scope,
                   end_of_data: float) -> dict[str, Any]:
    """FCR_SUMS of the answered queue calls that entered in [lo, hi)."""
    columns, names, params = _sum_columns(kpi, end_of_data, FCR_SUMS)
    where, range_params = _range(lo // BUCKET_S, hi // BUCKET_S, scope, "entered_bucket")
    row = (await store.fetch_all(
        f"SELECT {columns} FROM queue_calls WHERE {where} AND outcome = 'answered'",
        [*params, *range_params]))[0]
    return dict(zip(names, row))


async def handle_time_carried_in(store: Store, lo: int, hi: int, scope: Scope,
                                 since: int) -> dict[str, float]:
    """Per agent: the handle time inside [lo, hi) of the answered calls that entered in
    [since, lo) (min(end, hi) - lo of those still working at lo)."""
    part = f"CASE WHEN {W_END} > ? THEN ? ELSE {W_END} END - ?"
    return await _handle_time(store, part, [hi, hi, lo], since, lo, scope, lo)


async def handle_time_spilled_out(store: Store, hi: int, scope: Scope, since: int
                                  ) -> dict[str, float]:
    """Per agent: the handle time after hi of the answered calls that entered in
    [since, hi) (end - max(start, hi) of those still working at hi)."""
    part = f"{W_END} - CASE WHEN {W_START} > ? THEN {W_START} ELSE ? END"
    return await _handle_time(store, part, [hi, hi], since, hi, scope, hi)


async def _handle_time(store: Store, part: str, part_params: list[Any], first: int,
                       last: int, scope: Scope, edge: int) -> dict[str, float]:
    where, params = _range(first // BUCKET_S, last // BUCKET_S, scope, "entered_bucket")
    agent = scope.name("agent")
    return dict(await store.fetch_all(
        f"SELECT {agent}, SUM({part}) FROM queue_calls WHERE {where}"
        f" AND outcome = 'answered' AND agent <> '' AND talk_s IS NOT NULL"
        f" AND {W_END} > ? GROUP BY {agent}", [*part_params, *params, edge]))


async def abandoned_by_wait(store: Store, lo: int, hi: int, scope: Scope,
                            min_wait_s: float, edges: Sequence[float]
                            ) -> tuple[int, list[int]]:
    """The abandoned queue calls that entered in [lo, hi) having waited `min_wait_s` or
    more, and how many of them had waited <= each edge."""
    where, params = _range(lo // BUCKET_S, hi // BUCKET_S, scope, "entered_bucket")
    curve = ", ".join("COUNT(CASE WHEN wait_s <= ? THEN 1 END)" for _ in edges)
    abandoned, *by_edge = (await store.fetch_all(
        f"SELECT COUNT(*), {curve} FROM queue_calls WHERE {where}"
        f" AND outcome = 'abandoned' AND wait_s >= ?", [*edges, *params, min_wait_s]))[0]
    return abandoned, by_edge


def _sum_columns(kpi: KpiConfig, end_of_data: float, only: frozenset[str] | None = None
                 ) -> tuple[str, list[str], list[Any]]:
    """The SELECT list of the per-group sums (all, or those named in `only`), their names and
    their parameters."""
    values: dict[str, list[Any]] = {
        "short": [kpi.short_abandon_s], "sl": [kpi.service_level_s],
        "window": [kpi.repeat_window_h * 3600],
        # a call's repeat window is over when it entered at least a window before the data end
        "window_over": [end_of_data - kpi.repeat_window_h * 3600],
        "codes": list(kpi.conversion_codes)}
    codes = marks(kpi.conversion_codes) or "NULL"
    names, parts, params = [], [], []
    for name, expr in CALL_AGGREGATES:
        if only is not None and name not in only:
            continue
        names.append(name)
        parts.append(expr)
    for name, case, param_names in CALL_COUNTS:
        if only is not None and name not in only:
            continue
        names.append(name)
        parts.append(f"COUNT(CASE {case.replace('{codes}', codes)} END)")
        for param in param_names:
            params.extend(values[param])
    return ", ".join(parts), names, params


# ------------------------------------------------------------------------ agents
async def sessions_overlapping(store: Store, lo: float, hi: float, scope: Scope
                               ) -> list[Span]:
    """The scope's agent sessions (label: queue) that overlap [lo, hi)."""
    where, params = scope.where(_DURING, [hi, lo])
    return [Span(*row) for row in await store.fetch_all(
        f"SELECT {scope.name('agent')}, {scope.name('queue')}, start_ts, end_ts"
        f" FROM agent_sessions WHERE {where}", params)]


async def pauses_overlapping(store: Store, lo: float, hi: float, scope: Scope) -> list[Span]:
    """The scope's servers' agent pauses (label: reason; a pause is of every queue) that
    overlap [lo, hi)."""
    where, params = scope.where(_DURING, [hi, lo], queue=False)
    return [Span(*row) for row in await store.fetch_all(
        f"SELECT {scope.name('agent')}, reason, start_ts, end_ts FROM agent_pauses"
        f" WHERE {where}", params)]


_DURING = "start_ts < ? AND (end_ts IS NULL OR end_ts > ?)"


async def ring_no_answer_counts(store: Store, lo: int, hi: int, scope: Scope
                                ) -> dict[str, int]:
    """Per agent: the calls rung and not answered in [lo, hi)."""
    where, params = _range(lo, hi, scope, column="tsec")
    agent = scope.name("agent")
    return dict(await store.fetch_all(
        f"SELECT {agent}, COUNT(*) FROM events WHERE kind = ? AND {where} GROUP BY {agent}",
        [Kind.RING_NO_ANSWER, *params]))


async def session_agents(store: Store) -> list[str]:
    """Every agent with a session in the facts."""
    return [agent for (agent,) in await store.fetch_all(
        "SELECT DISTINCT agent FROM agent_sessions")]


# ------------------------------------------------------------------------ survey, IVR
async def survey_groups(store: Store, lo: int, hi: int, scope: Scope,
                        group: Literal["bucket", "agent"], valid: Sequence[str],
                        good: Sequence[str]) -> dict[tuple, dict[str, Any]]:
    """SURVEY_SUMS of the counted answers of the queue calls that entered in [lo, hi), per
    (queue, bucket) or per (agent,): CSAT answers are those in `valid`, good ones in
    `good`."""
    where, params = _survey_range(lo, hi, scope)
    # the index's order
    keys = scope.name("agent") if group == "agent" else f"{SURVEY_BUCKET}, {scope.name('queue')}"
    csat = f"kind = 'csat' AND status = 'answered' AND value IN ({marks(valid) or 'NULL'})"
    resolution = "kind = 'resolution' AND status = 'answered' AND value IN ('1', '2')"
    sql = (f"SELECT {keys},"
           f" COUNT(CASE WHEN {csat} THEN 1 END),"
           f" COUNT(CASE WHEN {csat} AND value IN ({marks(good) or 'NULL'}) THEN 1 END),"
           f" SUM(CASE WHEN {csat} THEN CAST(value AS INTEGER) ELSE 0 END),"
           f" COUNT(CASE WHEN {resolution} THEN 1 END),"
           f" COUNT(CASE WHEN {resolution} AND value = '1' THEN 1 END),"
           f" COUNT(DISTINCT CASE WHEN {csat} AND answered = 1 THEN queue_call END)"
           # an orphan (its call unknown) and a second survey of a call count in neither
           f" FROM survey_answers WHERE {where} AND counted = 1 AND queue_call IS NOT NULL"
           f" GROUP BY {keys}")
    width = 1 if group == "agent" else 2
    rows = await store.fetch_all(sql, [*valid, *valid, *good, *valid, *valid, *params])
    return {tuple(reversed(r[:width])): dict(zip(SURVEY_SUMS, r[width:])) for r in rows}


async def answer_groups(store: Store, lo: int, hi: int, scope: Scope
                        ) -> list[AnswerGroup]:
    """The survey answers of the queue calls that entered in [lo, hi), counted per question,
    kind, status, value, counted and orphan, by question then value."""
    where, params = _survey_range(lo, hi, scope)
    return [AnswerGroup(question, kind, status, value, counted, bool(orphan), count)
            for question, kind, status, value, counted, orphan, count in await store.fetch_all(
                f"SELECT question, kind, status, value, counted, queue_call IS NULL, COUNT(*)"
                f" FROM survey_answers WHERE {where}"
                f" GROUP BY question, kind, status, value, counted, queue_call IS NULL"
                f" ORDER BY question, value", params)]


async def surveys_and_hangups(store: Store, lo: int, hi: int, scope: Scope
                              ) -> tuple[int, int]:
    """The counted surveys (one per server and call) of the queue calls that entered in
    [lo, hi), and how many of them the caller hung up on."""
    where, params = _survey_range(lo, hi, scope)
    (surveys, hung_up), = await store.fetch_all(
        f"SELECT COUNT(*), SUM(hung_up) FROM (SELECT server, call_id,"
        f" MAX(CASE WHEN status = 'hangup' THEN 1 ELSE 0 END) AS hung_up FROM survey_answers"
        f" WHERE {where} AND counted = 1 GROUP BY server, call_id) AS surveyed", params)
    return surveys, hung_up or 0


async def ivr_groups(store: Store, lo: int, hi: int, scope: Scope
                     ) -> dict[tuple, dict[str, Any]]:
    """IVR_SUMS per (target queue, bucket) of the IVR exits in [lo, hi): the ivr-exit events
    and the IVR paths of QueueMetrics-style IVRAPPEND lines (facts table ivr_paths)."""
    where, params = _range(lo, hi, scope, column="tsec")
    queue = scope.name("queue")
    sql = (f"SELECT queue, tsec / {BUCKET_S}, COUNT(*),"
           f" COUNT(CASE WHEN value = 'self-service' THEN 1 END),"
           f" COUNT(CASE WHEN value = 'to-queue' THEN 1 END),"
           f" COUNT(CASE WHEN value = 'hangup' THEN 1 END)"
           f" FROM (SELECT {queue} AS queue, tsec, value FROM events WHERE kind = ? AND {where}"
           f" UNION ALL SELECT {queue} AS queue, tsec, outcome FROM ivr_paths WHERE {where})"
           f" AS exits"
           f" GROUP BY queue, tsec / {BUCKET_S}")
    rows = await store.fetch_all(sql, [Kind.IVR_EXIT, *params, *params])
    return {tuple(r[:2]): dict(zip(IVR_SUMS, r[2:])) for r in rows}


# ------------------------------------------------------------------------ ranges
def _range(lo: int, hi: int, scope: Scope, column: str) -> tuple[str, list[Any]]:
    return scope.where(f"{column} >= ? AND {column} < ?", [lo, hi])


def _survey_range(lo: int, hi: int, scope: Scope) -> tuple[str, list[Any]]:
    return _range(lo // BUCKET_S, hi // BUCKET_S, scope, SURVEY_BUCKET)
