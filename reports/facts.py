"""Per-call facts: one row per queue call (table `queue_calls`), the agents' sessions and
pauses, and survey answers linked to the call they rate, derived from the events table.

Built incrementally. `facts_state` keeps the last events.id derived; a refresh re-derives
everything from a time `w0` early enough that every fact the new events can change is
rebuilt: the earliest new event, the entry of any call still unsettled (not ended, or its
after-call work still open) or ended shortly before the new events, and of any call the new
events name (a late AMI hold or a late queue_log line). Calls that entered before `w0` are
final and kept; sessions and pauses still open at `w0` resume from their stored start;
events before `w0` are not read again.

docs/kpis.md defines what each column means; this module computes exactly that.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from callkpi.config import KpiConfig
from callkpi.events import Kind, base_discr
from callkpi.store import Store

# Queue calls are summed per 15-minute UTC bucket of their entry (column entered_bucket):
# every real time zone offset is a whole number of quarter hours.
BUCKET_S = 900

# caller numbers per statement when updating their calls' gaps
GAP_CHUNK = 500

# A wrap-up pause counts as a call's ACW when it starts this close to the call's end.
ACW_PAUSE_WINDOW_S = 10.0

CALL_KINDS = (
    Kind.ENTER_QUEUE, Kind.CONNECT, Kind.COMPLETE, Kind.TRANSFER, Kind.ABANDON,
    Kind.EXIT_TIMEOUT, Kind.EXIT_KEY, Kind.EXIT_EMPTY, Kind.WITHDRAW,
    Kind.HOLD, Kind.UNHOLD, Kind.DISPOSITION,
)
AGENT_KINDS = (
    Kind.PAUSE, Kind.PAUSE_ALL, Kind.UNPAUSE, Kind.UNPAUSE_ALL, Kind.MEMBER_ADD,
    Kind.MEMBER_REMOVE, Kind.AGENT_LOGIN, Kind.AGENT_LOGOFF,
)
FACT_KINDS = (*CALL_KINDS, *AGENT_KINDS, Kind.QUEUE_START, Kind.SURVEY_ANSWER)

# queue-leaving events and the outcome each gives the queue call
EXIT_OUTCOMES = {
    Kind.ABANDON: "abandoned",
    Kind.EXIT_TIMEOUT: "timeout",
    Kind.EXIT_KEY: "exit_key",
    Kind.EXIT_EMPTY: "exit_empty",
    Kind.WITHDRAW: "withdrawn",
}

CALL_COLUMNS = (
    "id", "server", "call_id", "queue", "entered_ts", "entered_tsec", "ended_ts", "outcome",
    "wait_s", "connect_ts", "agent", "bridged_s", "talk_s", "hold_s", "acw_s",
    "caller_number", "disposition", "transferred", "prev_gap_s", "next_gap_s", "unsettled",
    "entered_bucket",
)
SURVEY_COLUMNS = (
    "id", "server", "call_id", "queue_call", "queue", "agent", "entered_tsec", "answered",
    "question", "kind", "value", "status", "ts",
)


@dataclass
class QueueCall:
    id: int
    server: str
    call_id: str
    queue: str
    entered_ts: float
    caller_number: str
    outcome: str = "open"
    ended_ts: float | None = None
    wait_s: float | None = None
    connect_ts: float | None = None
    agent: str = ""
    bridged_s: float | None = None
    transferred: bool = False
    disposition: str = ""
    holds: list[tuple[str, float]] = field(default_factory=list)
    hold_s: float | None = None
    acw_s: float | None = None
    unsettled: bool = True

    @property
    def talk_s(self) -> float | None:
        if self.bridged_s is None:
            return None
        return max(0.0, self.bridged_s - (self.hold_s or 0.0))

    def row(self) -> tuple:
        return (
            self.id, self.server, self.call_id, self.queue, self.entered_ts,
            int(self.entered_ts), self.ended_ts, self.outcome, self.wait_s, self.connect_ts,
            self.agent, self.bridged_s, self.talk_s, self.hold_s, self.acw_s,
            self.caller_number, self.disposition, int(self.transferred), None, None,
            int(self.unsettled), int(self.entered_ts) // BUCKET_S,
        )


@dataclass
class Interval:
    """An agent session or pause: open while end is None."""

    server: str
    agent: str
    label: str  # the queue of a session, the reason of a pause
    start: float
    end: float | None = None


@dataclass
class FactsResult:
    events: int  # events read
    calls: int  # queue calls (re)derived
    since: float | None  # w0, None when nothing was new


class Deriver:
    """One pass over events in (ts, id) order, from w0 on."""

    def __init__(self, kpi: KpiConfig) -> None:
        self.kpi = kpi
        self.wrapup_reasons = set(kpi.wrapup_reasons)
        self.calls: list[QueueCall] = []
        self.last_call: dict[tuple[str, str], QueueCall] = {}  # (server, call_id) -> latest
        self.open_calls: dict[tuple[str, str], QueueCall] = {}
        self.sessions: list[Interval] = []
        self.open_sessions: dict[tuple[str, str, str], Interval] = {}
        self.pauses: list[Interval] = []
        self.open_pause: dict[tuple[str, str], Interval] = {}
        self.connects: dict[tuple[str, str], list[float]] = {}
        self.answers: list[tuple] = []  # survey-answer event rows, linked after the pass
        self.events = 0

    def feed(self, ev: tuple) -> None:
        (eid, server, call_id, kind, queue, agent, ts, wait_s, talk_s, reason,
         caller_number, value, discr, extra) = ev
        self.events += 1
        if kind == Kind.ENTER_QUEUE:
            call = QueueCall(eid, server, call_id, queue, ts, caller_number)
            self.calls.append(call)
            self.last_call[(server, call_id)] = call
            self.open_calls[(server, call_id)] = call
        elif kind == Kind.CONNECT:
            self._connect(server, call_id, agent, ts, wait_s)
        elif kind in (Kind.COMPLETE, Kind.TRANSFER):
            self._complete(server, call_id, kind, ts, wait_s, talk_s)
        elif kind in EXIT_OUTCOMES:
            if call := self.open_calls.pop((server, call_id), None):
                call.outcome, call.ended_ts, call.wait_s = EXIT_OUTCOMES[kind], ts, wait_s
        elif kind in (Kind.HOLD, Kind.UNHOLD):
            if call := self.last_call.get((server, call_id)):
                call.holds.append((kind, ts))
        elif kind == Kind.DISPOSITION:
            call = self.last_call.get((server, call_id))
            if call and call.connect_ts is not None:
                call.disposition = value
        elif kind == Kind.QUEUE_START:
            self._pbx_restart(server, ts)
        elif kind == Kind.SURVEY_ANSWER:
            self.answers.append(ev)
        else:
            self._agent_event(server, kind, queue, agent, ts, reason or base_discr(discr))

    def _connect(self, server: str, call_id: str, agent: str, ts: float,
                 wait_s: float | None) -> None:
        self.connects.setdefault((server, agent), []).append(ts)
        call = self.open_calls.get((server, call_id))
        if call and call.connect_ts is None:
            call.outcome, call.connect_ts, call.agent, call.wait_s = "answered", ts, agent, wait_s

    def _complete(self, server: str, call_id: str, kind: str, ts: float,
                  wait_s: float | None, talk_s: float | None) -> None:
        call = self.open_calls.pop((server, call_id), None)
        if call is None:
            return
        if call.connect_ts is None:  # CONNECT lost: the end still says it was answered
            call.connect_ts = ts - (talk_s or 0.0)
            call.wait_s = wait_s
        call.outcome, call.ended_ts = "answered", ts
        call.bridged_s = talk_s if talk_s is not None else ts - call.connect_ts
        call.transferred = kind == Kind.TRANSFER

    def _close(self, call: QueueCall, ts: float) -> None:
        """The PBX restarted (kill -9, crash) with the call open: it is `closed` at the
        restart, with no wait; a connected one keeps its agent and the time it was bridged
        until the restart, for information only (Asterisk never said how it ended)."""
        call.outcome, call.ended_ts, call.wait_s = "closed", ts, None
        if call.connect_ts is not None:
            call.bridged_s = max(0.0, ts - call.connect_ts)

    def _pbx_restart(self, server: str, ts: float) -> None:
        for key in [k for k in self.open_calls if k[0] == server]:
            self._close(self.open_calls.pop(key), ts)
        for key in [k for k in self.open_sessions if k[0] == server]:
            self.open_sessions.pop(key).end = ts
        for key in [k for k in self.open_pause if k[0] == server]:
            self.open_pause.pop(key).end = ts

    def _agent_event(self, server: str, kind: str, queue: str, agent: str, ts: float,
                     reason: str) -> None:
        if kind in (Kind.MEMBER_ADD, Kind.AGENT_LOGIN):
            key = (server, agent, queue)
            if key not in self.open_sessions:
                self.open_sessions[key] = session = Interval(server, agent, queue, ts)
                self.sessions.append(session)
        elif kind in (Kind.MEMBER_REMOVE, Kind.AGENT_LOGOFF):
            if session := self.open_sessions.pop((server, agent, queue), None):
                session.end = ts
            if not any(k[:2] == (server, agent) for k in self.open_sessions):
                if pause := self.open_pause.pop((server, agent), None):
                    pause.end = ts  # logged out of every queue: no longer paused
        elif kind in (Kind.PAUSE, Kind.PAUSE_ALL):
            current = self.open_pause.get((server, agent))
            if current and current.label == reason:
                return  # the same pause reported per queue
            if current:
                current.end = ts
            self.open_pause[(server, agent)] = pause = Interval(server, agent, reason, ts)
            self.pauses.append(pause)
        elif kind in (Kind.UNPAUSE, Kind.UNPAUSE_ALL):
            if pause := self.open_pause.pop((server, agent), None):
                pause.end = ts

    def finish(self, data_end: float) -> None:
        """Hold and after-call work need what came after each call: compute them last."""
        wrapup_pauses: dict[tuple[str, str], list[Interval]] = {}
        for pause in self.pauses:
            if pause.label in self.wrapup_reasons:
                wrapup_pauses.setdefault((pause.server, pause.agent), []).append(pause)
        for call in self.calls:
            if call.connect_ts is not None:
                call.hold_s = _hold_seconds(call)
            if call.ended_ts is None:
                call.unsettled = True
            elif call.outcome == "answered" and call.agent:
                call.acw_s, call.unsettled = self._acw(
                    call, wrapup_pauses.get((call.server, call.agent), []), data_end)
            else:
                call.unsettled = False

    def _acw(self, call: QueueCall, pauses: list[Interval], data_end: float
             ) -> tuple[float, bool]:
        """(acw seconds, still unsettled) per docs/kpis.md."""
        end = call.ended_ts
        assert end is not None and call.connect_ts is not None
        connects = self.connects.get((call.server, call.agent), [])
        i = bisect.bisect_left(connects, end)
        while i < len(connects) and connects[i] <= call.connect_ts:
            i += 1
        next_connect = connects[i] if i < len(connects) else None
        pause = next((p for p in pauses if abs(p.start - end) <= ACW_PAUSE_WINDOW_S
                      and p.start >= call.connect_ts), None)
        if pause is not None:
            stops = [t for t in (pause.end, next_connect) if t is not None]
            stop = min(stops) if stops else data_end
            return max(0.0, stop - pause.start), not stops
        late_pause_possible = end + ACW_PAUSE_WINDOW_S > data_end
        wrapup = self.kpi.wrapup_s.get(call.queue, 0.0)
        if wrapup <= 0:
            return 0.0, late_pause_possible
        if next_connect is not None and next_connect - end < wrapup:
            return max(0.0, next_connect - end), late_pause_possible
        return wrapup, late_pause_possible or (next_connect is None and end + wrapup > data_end)


def _hold_seconds(call: QueueCall) -> float:
    """Hold/Unhold pairs between connect and end; a hold never released ends with the call."""
    assert call.connect_ts is not None
    end = call.ended_ts
    total, since = 0.0, None
    for kind, ts in call.holds:
        if kind == Kind.HOLD and since is None:
            since = ts
        elif kind == Kind.UNHOLD and since is not None:
            total += _clipped(since, ts, call.connect_ts, end)
            since = None
    if since is not None and end is not None:
        total += _clipped(since, end, call.connect_ts, end)
    if call.bridged_s is not None:
        total = min(total, call.bridged_s)
    return total


def _clipped(start: float, stop: float, lo: float, hi: float | None) -> float:
    if hi is not None:
        stop = min(stop, hi)
    return max(0.0, stop - max(start, lo))


# ------------------------------------------------------------------------ the refresh
async def refresh_facts(store: Store, kpi: KpiConfig, *, rebuild: bool = False) -> FactsResult:
    """Bring the facts up to date with the events table (everything again with rebuild)."""
    state = await _read_state(store)
    settings = settings_fingerprint(kpi)
    rebuild = rebuild or state.get("settings") != settings
    watermark = 0 if rebuild else int(state.get("events_id", 0))
    (last_id, data_end) = (await store.fetch_all("SELECT max(id), max(ts) FROM events"))[0]
    if last_id is None or (last_id <= watermark and not rebuild):
        return FactsResult(0, 0, None)
    w0 = None if rebuild else await _rederive_from(store, watermark)
    deriver = Deriver(kpi)
    if w0 is not None:
        await _resume_open_intervals(store, deriver, w0)
    sql = (f"SELECT id, server, call_id, kind, queue, agent, ts, wait_s, talk_s, reason,"
           f" caller_number, value, discr, extra FROM events"
           f" WHERE kind IN ({_marks(FACT_KINDS)}) AND id <= ?")
    params: list[Any] = [*FACT_KINDS, last_id]
    if w0 is not None:
        sql += " AND tsec >= ?"
        params.append(int(w0))
    async for ev in store.iter_rows(sql + " ORDER BY ts, id", params):
        if w0 is None or ev[6] >= w0:
            deriver.feed(ev)
    deriver.finish(data_end)
    answers = await _link_answers(store, deriver, w0)
    async with store.transaction() as tx:
        await _clear(tx, w0)
        await tx.executemany(insert_sql("queue_calls", CALL_COLUMNS),
                             [c.row() for c in deriver.calls])
        await tx.executemany(
            "INSERT INTO agent_sessions (server, agent, queue, start_ts, end_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            [(s.server, s.agent, s.label, s.start, s.end) for s in deriver.sessions])
        await tx.executemany(
            "INSERT INTO agent_pauses (server, agent, reason, start_ts, end_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            [(p.server, p.agent, p.label, p.start, p.end) for p in deriver.pauses])
        await tx.executemany(insert_sql("survey_answers", SURVEY_COLUMNS), answers)
        numbers = None if w0 is None else {c.caller_number for c in deriver.calls}
        await _update_caller_gaps(tx, numbers)
        for name, value in (("events_id", last_id), ("settings", settings),
                            ("data_end", data_end)):
            await tx.execute(
                "INSERT INTO facts_state (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, str(value)))
    return FactsResult(deriver.events, len(deriver.calls), w0)


async def data_end(store: Store) -> float | None:
    """The time of the last event the facts were built from (FCR windows end there)."""
    value = (await _read_state(store)).get("data_end")
    return float(value) if value not in (None, "None") else None


def settings_fingerprint(kpi: KpiConfig) -> str:
    # the facts' ACW depends on these: change them and the facts are rebuilt
    return json.dumps({"wrapup_reasons": sorted(kpi.wrapup_reasons),
                       "wrapup_s": kpi.wrapup_s}, sort_keys=True)


async def _read_state(store: Store) -> dict[str, str]:
    return dict(await store.fetch_all("SELECT name, value FROM facts_state"))


async def _rederive_from(store: Store, watermark: int) -> float:
    """w0: the earliest time any fact the new events can change starts (see module doc)."""
    (t_new,) = (await store.fetch_all("SELECT min(ts) FROM events WHERE id > ?", (watermark,)))[0]
    lookback = ACW_PAUSE_WINDOW_S + max([0.0, *await _wrapups(store)])
    candidates = [t_new]
    for sql, params in (
        ("SELECT min(entered_ts) FROM queue_calls WHERE unsettled = 1 OR ended_ts >= ?",
         (t_new - lookback,)),
        ("SELECT min(c.entered_ts) FROM queue_calls c JOIN events e"
         " ON e.server = c.server AND e.call_id = c.call_id"
         " WHERE e.id > ? AND e.call_id <> ''", (watermark,)),
    ):
        (value,) = (await store.fetch_all(sql, params))[0]
        if value is not None:
            candidates.append(value)
    return min(candidates)


async def _wrapups(store: Store) -> list[float]:
    state = await _read_state(store)
    settings = json.loads(state.get("settings", "{}"))
    return [float(v) for v in settings.get("wrapup_s", {}).values()]


async def _resume_open_intervals(store: Store, deriver: Deriver, w0: float) -> None:
    """Sessions and pauses that began before w0 and had not ended by then are rebuilt from
    their stored start, open: their end (if any) is among the events replayed from w0. An
    agent logged in for months does not make every refresh reread those months."""
    where = "start_ts < ? AND (end_ts IS NULL OR end_ts >= ?)"
    for server, agent, queue, start in await store.fetch_all(
            f"SELECT server, agent, queue, start_ts FROM agent_sessions WHERE {where}", (w0, w0)):
        session = Interval(server, agent, queue, start)
        deriver.sessions.append(session)
        deriver.open_sessions[(server, agent, queue)] = session
    for server, agent, reason, start in await store.fetch_all(
            f"SELECT server, agent, reason, start_ts FROM agent_pauses WHERE {where}", (w0, w0)):
        pause = Interval(server, agent, reason, start)
        deriver.pauses.append(pause)
        deriver.open_pause[(server, agent)] = pause


async def _clear(tx: Any, w0: float | None) -> None:
    if w0 is None:
        for table in ("queue_calls", "agent_sessions", "agent_pauses", "survey_answers"):
            await tx.execute(f"DELETE FROM {table}")
        return
    await tx.execute("DELETE FROM queue_calls WHERE entered_ts >= ?", (w0,))
    # what began later, and what _resume_open_intervals() rebuilds
    await tx.execute("DELETE FROM agent_sessions WHERE end_ts IS NULL OR end_ts >= ?", (w0,))
    await tx.execute("DELETE FROM agent_pauses WHERE end_ts IS NULL OR end_ts >= ?", (w0,))
    await tx.execute("DELETE FROM survey_answers WHERE ts >= ?", (w0,))


async def _link_answers(store: Store, deriver: Deriver, w0: float | None) -> list[tuple]:
    """Each survey answer with the queue call it rates: the call with the answer's call_id,
    else the call its channel is linked to (call_links, extra.linkedid). Queue and agent
    come from that call (the AGI may know them wrongly); unlinked answers keep their own."""
    rows = []
    for (eid, server, call_id, _kind, queue, agent, ts, _w, _t, reason, _n, value, discr,
         extra) in deriver.answers:
        info = json.loads(extra) if extra else {}
        call = await _rated_call(store, deriver, server, call_id, info.get("linkedid", ""), ts)
        if call:
            qc_id, queue, agent, entered, answered = call
        else:
            qc_id, entered, answered = None, ts, 0
        rows.append((eid, server, call_id, qc_id, queue, agent, int(entered), answered,
                     discr, info.get("question_kind", ""), value, reason, ts))
    return rows


async def _rated_call(store: Store, deriver: Deriver, server: str, call_id: str,
                      linkedid: str, ts: float) -> tuple | None:
    ids = [i for i in dict.fromkeys([call_id, linkedid]) if i]
    ids += [r[0] for r in await store.fetch_all(
        "SELECT linked_id FROM call_links WHERE server = ? AND uniqueid = ?", (server, call_id))]
    for rid in dict.fromkeys(ids):
        if call := deriver.last_call.get((server, rid)):
            return (call.id, call.queue, call.agent, call.entered_ts,
                    int(call.outcome == "answered"))
    rows = await store.fetch_all(
        f"SELECT id, queue, agent, entered_ts, outcome FROM queue_calls WHERE server = ?"
        f" AND (call_id IN ({_marks(ids)}) OR call_id IN (SELECT uniqueid FROM call_links"
        f" WHERE server = ? AND linked_id IN ({_marks(ids)}))) AND entered_ts <= ?"
        f" ORDER BY entered_ts DESC", (server, *ids, server, *ids, ts))
    if not rows:
        return None
    qc_id, queue, agent, entered, outcome = rows[0]
    return qc_id, queue, agent, entered, int(outcome == "answered")


async def _update_caller_gaps(tx: Any, numbers: set[str] | None) -> None:
    """prev_gap_s / next_gap_s: seconds to the nearest queue call from the same number that
    is another phone call (another call_id), for FCR and repeat calls. All numbers, or the
    given ones (in chunks: a database caps the parameters of one statement)."""
    select = ("SELECT id, caller_number, call_id, entered_ts FROM queue_calls"
              " WHERE caller_number <> ''")
    order = " ORDER BY caller_number, entered_ts, id"
    if numbers is None:
        await _write_gaps(tx, await tx.fetch_all(select + order))
        return
    wanted = sorted(numbers - {""})
    for lo in range(0, len(wanted), GAP_CHUNK):
        chunk = wanted[lo:lo + GAP_CHUNK]
        await _write_gaps(tx, await tx.fetch_all(
            f"{select} AND caller_number IN ({_marks(chunk)}){order}", chunk))


async def _write_gaps(tx: Any, rows: list[tuple]) -> None:
    updates = []
    for number_rows in _group_by_number(rows):
        updates.extend(_gaps(number_rows))
    await tx.executemany(
        "UPDATE queue_calls SET prev_gap_s = ?, next_gap_s = ? WHERE id = ?", updates)


def _group_by_number(rows: list[tuple]) -> Iterable[list[tuple]]:
    group: list[tuple] = []
    for row in rows:
        if group and row[1] != group[0][1]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _gaps(rows: list[tuple]) -> list[tuple]:
    """One number's calls in time order -> (prev_gap_s, next_gap_s, id), in linear time."""
    prev = _nearest_other_call([(r[2], r[3]) for r in rows])
    nxt = _nearest_other_call([(r[2], -r[3]) for r in reversed(rows)])[::-1]
    return [(p, n, r[0]) for r, p, n in zip(rows, prev, nxt)]


def _nearest_other_call(calls: list[tuple[str, float]]) -> list[float | None]:
    """For each (call_id, t) in order, t minus the t of the latest earlier entry with another
    call_id. Keeps the latest entry and the latest one with a call_id other than its."""
    out: list[float | None] = []
    latest: tuple[str, float] | None = None
    before_latest: float | None = None  # latest t whose call_id differs from latest's
    for call_id, t in calls:
        if latest is None:
            out.append(None)
        elif latest[0] != call_id:
            out.append(abs(t - latest[1]))
        else:
            out.append(None if before_latest is None else abs(t - before_latest))
        if latest is not None and latest[0] != call_id:
            before_latest = latest[1]
        latest = (call_id, t)
    return out


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_marks(columns)})"
