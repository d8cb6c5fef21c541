"""The facts refresh's SQL (reports/facts.py keeps the rules): the events it derives from,
the facts tables it rewrites (queue_calls, agent_sessions, agent_pauses, survey_answers,
ivr_paths), the member names it learned (agent_aliases) and its watermark (facts_state)."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Iterable, NamedTuple, Sequence

from callkpi.queries import Reader, marks
from callkpi.store import Store, Transaction

# Queue calls are summed per 15-minute UTC bucket of their entry (queue_calls.entered_bucket,
# survey answers by entered_tsec / BUCKET_S): every real time zone offset is a whole number
# of quarter hours. Change it and the facts must be derived again.
BUCKET_S = 900

# the columns of a derived row, in the order the facts layer builds its tuples
CALL_COLUMNS = (
    "id", "server", "call_id", "queue", "entered_ts", "entered_tsec", "ended_ts", "outcome",
    "wait_s", "connect_ts", "agent", "bridged_s", "talk_s", "hold_s", "acw_s",
    "caller_number", "disposition", "transferred", "prev_gap_s", "next_gap_s", "unsettled",
    "entered_bucket", "ended_by_restart", "fcr_contact", "fcr_prev_gap_s",
)
IVR_COLUMNS = ("id", "server", "call_id", "first_ts", "ts", "tsec", "path", "node", "outcome",
               "queue")
SURVEY_COLUMNS = (
    "id", "server", "call_id", "queue_call", "queue", "agent", "entered_tsec", "answered",
    "question", "kind", "value", "status", "ts", "session", "counted",
)
FACT_COLUMNS = ("id", "server", "call_id", "kind", "queue", "agent", "ts", "wait_s", "talk_s",
                "reason", "caller_number", "value", "discr", "extra")
# an event as the facts read it: FACT_COLUMNS' values, in that order (a plain tuple: the
# refresh reads millions of them)
FactEvent = tuple[Any, ...]
FACT_TABLES = ("queue_calls", "agent_sessions", "agent_pauses", "survey_answers", "ivr_paths")


class Span(NamedTuple):
    """An agent session (label: its queue) or pause (label: its reason)."""

    server: str
    agent: str
    label: str
    start_ts: float
    end_ts: float | None


class RatedCall(NamedTuple):
    id: int
    queue: str
    agent: str
    entered_ts: float
    outcome: str


# (id, caller_number, call_id, entered_ts, outcome): what the caller gaps are computed from
GapRow = tuple[int, str, str, str, float, str]  # id, number, server, call id, entry, outcome


# ------------------------------------------------------------------------ events
async def events_end(store: Store) -> tuple[int | None, float | None]:
    """The last event's id and the latest event time (None, None: no events)."""
    (last_id, last_ts), = await store.fetch_all("SELECT max(id), max(ts) FROM events")
    return last_id, last_ts


def fact_events(store: Store, kinds: Sequence[str], up_to_id: int, since_tsec: int | None
                ) -> AsyncIterator[FactEvent]:
    """The events of `kinds` up to id `up_to_id` (from second `since_tsec` on), streamed in
    (ts, id) order."""
    sql = (f"SELECT {', '.join(FACT_COLUMNS)} FROM events"
           f" WHERE kind IN ({marks(kinds)}) AND id <= ?")
    params: list[Any] = [*kinds, up_to_id]
    if since_tsec is not None:
        sql += " AND tsec >= ?"
        params.append(since_tsec)
    return store.iter_rows(sql + " ORDER BY ts, id", params)


async def first_ts_after(store: Store, after_id: int) -> float | None:
    """The earliest time of an event with an id above `after_id`."""
    return await _value(store, "SELECT min(ts) FROM events WHERE id > ?", (after_id,))


async def last_seen_before(store: Store, ts: float, kinds: Sequence[str]
                           ) -> list[tuple[str, float]]:
    """(server, time of its last event of `kinds` before `ts`) for the servers that had one
    in the last such second."""
    return await store.fetch_all(
        f"SELECT server, max(ts) FROM events WHERE tsec = (SELECT max(tsec) FROM events"
        f" WHERE tsec <= ? AND ts < ? AND kind IN ({marks(kinds)})) AND ts < ? AND kind IN"
        f" ({marks(kinds)}) GROUP BY server", (int(ts), ts, *kinds, ts, *kinds))


async def alias_events(store: Store, after_id: int, up_to_id: int, kinds: Sequence[str]
                       ) -> list[tuple[str, str, str]]:
    """(server, agent, extra) of the AMI events of `kinds` with ids in (after_id, up_to_id],
    in id order: they name a member and its interface."""
    return await store.fetch_all(
        f"SELECT server, agent, extra FROM events WHERE id > ? AND id <= ? AND"
        f" source = 'ami' AND kind IN ({marks(kinds)}) ORDER BY id",
        (after_id, up_to_id, *kinds))


async def linked_ids(store: Store, server: str, uniqueid: str) -> list[str]:
    """The calls (linked ids) a channel is linked to."""
    return [linked for (linked,) in await store.fetch_all(
        "SELECT linked_id FROM call_links WHERE server = ? AND uniqueid = ?",
        (server, uniqueid))]


# ------------------------------------------------------------------------ facts: reads
async def facts_state(store: Store) -> dict[str, str]:
    """The refresh's state: events_id (its watermark), settings, data_end, written (a
    mark of the last write: claim_facts)."""
    return dict(await store.fetch_all("SELECT name, value FROM facts_state"))


async def first_entry_unsettled_or_ended_since(store: Store, ts: float) -> float | None:
    """The earliest entry of a queue call not settled yet, or that ended at `ts` or later."""
    return await _value(
        store, "SELECT min(entered_ts) FROM queue_calls WHERE unsettled = 1 OR ended_ts >= ?",
        (ts,))


async def first_entry_named_after(store: Store, after_id: int) -> float | None:
    """The earliest entry of a queue call an event with an id above `after_id` names."""
    return await _value(
        store, "SELECT min(c.entered_ts) FROM queue_calls c JOIN events e"
        " ON e.server = c.server AND e.call_id = c.call_id"
        " WHERE e.id > ? AND e.call_id <> ''", (after_id,))


async def first_ivr_path_named_after(store: Store, after_id: int) -> float | None:
    """The earliest start of an IVR path an event with an id above `after_id` names."""
    return await _value(
        store, "SELECT min(p.first_ts) FROM ivr_paths p JOIN events e"
        " ON e.server = p.server AND e.call_id = p.call_id"
        " WHERE e.id > ? AND e.call_id <> ''", (after_id,))


async def sessions_open_at(store: Store, ts: float) -> list[Span]:
    """Agent sessions begun before `ts` and not ended by then."""
    return await _spans(store, "agent_sessions", "queue", ts)


async def pauses_open_at(store: Store, ts: float) -> list[Span]:
    """Agent pauses begun before `ts` and not ended by then."""
    return await _spans(store, "agent_pauses", "reason", ts)


async def _spans(store: Store, table: str, label: str, ts: float) -> list[Span]:
    return [Span(*row) for row in await store.fetch_all(
        f"SELECT server, agent, {label}, start_ts, end_ts FROM {table}"
        " WHERE start_ts < ? AND (end_ts IS NULL OR end_ts >= ?)", (ts, ts))]


async def agent_aliases(store: Store) -> dict[tuple[str, str], str]:
    """(server, interface) -> member name, as learned so far."""
    return {(server, interface): name for server, interface, name in await store.fetch_all(
        "SELECT server, interface, name FROM agent_aliases")}


async def first_session_start(store: Store, server: str, agent: str) -> float | None:
    return await _value(
        store, "SELECT min(start_ts) FROM agent_sessions WHERE server = ? AND agent = ?",
        (server, agent))


async def answers_before(store: Store, ts: float, queue_calls: Sequence[int]
                         ) -> list[tuple[int, float, int, str]]:
    """(queue_call, ts, id, session) of the stored survey answers before `ts` that rate
    these queue calls."""
    return await store.fetch_all(
        f"SELECT queue_call, ts, id, session FROM survey_answers WHERE ts < ? AND"
        f" queue_call IN ({marks(queue_calls)})", (ts, *queue_calls))


async def latest_call_rated(store: Store, server: str, call_ids: Sequence[str], ts: float
                            ) -> RatedCall | None:
    """The latest queue call entered by `ts` of these call ids, or of the calls their
    channels are linked to (call_links)."""
    rows = await store.fetch_all(
        f"SELECT id, queue, agent, entered_ts, outcome FROM queue_calls WHERE server = ?"
        f" AND (call_id IN ({marks(call_ids)}) OR call_id IN (SELECT uniqueid FROM call_links"
        f" WHERE server = ? AND linked_id IN ({marks(call_ids)}))) AND entered_ts <= ?"
        f" ORDER BY entered_ts DESC", (server, *call_ids, server, *call_ids, ts))
    return RatedCall(*rows[0]) if rows else None


async def queue_seen(store: Store, queue: str) -> bool:
    """Has the store ever seen `queue` (a call in it, or a member)?"""
    (seen,), = await store.fetch_all(
        "SELECT EXISTS (SELECT 1 FROM queue_calls WHERE queue = ?)"
        " OR EXISTS (SELECT 1 FROM agent_sessions WHERE queue = ?)", (queue, queue))
    return bool(seen)


async def known_queues(store: Store) -> list[str]:
    """Every queue the store has seen, by name."""
    return [queue for (queue,) in await store.fetch_all(
        "SELECT queue FROM queue_calls UNION SELECT queue FROM agent_sessions ORDER BY 1")]


# ------------------------------------------------------------------------ facts: writes
async def clear_facts(tx: Transaction, since: float | None) -> None:
    """Drop the facts a refresh from `since` derives again (all of them for None): what
    began later, and the sessions and pauses still open then (they are resumed)."""
    if since is None:
        for table in FACT_TABLES:
            await tx.execute(f"DELETE FROM {table}")
        return
    await tx.execute("DELETE FROM queue_calls WHERE entered_ts >= ?", (since,))
    await tx.execute("DELETE FROM agent_sessions WHERE end_ts IS NULL OR end_ts >= ?", (since,))
    await tx.execute("DELETE FROM agent_pauses WHERE end_ts IS NULL OR end_ts >= ?", (since,))
    await tx.execute("DELETE FROM survey_answers WHERE ts >= ?", (since,))
    await tx.execute("DELETE FROM ivr_paths WHERE first_ts >= ?", (since,))


async def insert_queue_calls(tx: Transaction, rows: Sequence[Sequence[Any]]) -> None:
    """Rows of CALL_COLUMNS."""
    await tx.executemany(_insert("queue_calls", CALL_COLUMNS), rows)


async def insert_sessions(tx: Transaction, sessions: Iterable[Span]) -> None:
    await tx.executemany(
        "INSERT INTO agent_sessions (server, agent, queue, start_ts, end_ts)"
        " VALUES (?, ?, ?, ?, ?)", list(sessions))


async def insert_pauses(tx: Transaction, pauses: Iterable[Span]) -> None:
    await tx.executemany(
        "INSERT INTO agent_pauses (server, agent, reason, start_ts, end_ts)"
        " VALUES (?, ?, ?, ?, ?)", list(pauses))


async def insert_survey_answers(tx: Transaction, rows: Sequence[Sequence[Any]]) -> None:
    """Rows of SURVEY_COLUMNS."""
    await tx.executemany(_insert("survey_answers", SURVEY_COLUMNS), rows)


async def insert_ivr_paths(tx: Transaction, rows: Sequence[Sequence[Any]]) -> None:
    """Rows of IVR_COLUMNS."""
    await tx.executemany(_insert("ivr_paths", IVR_COLUMNS), rows)


async def store_aliases(tx: Transaction, aliases: Sequence[tuple[str, str, str]]) -> None:
    """(server, interface, member name): learned, or renamed."""
    await tx.executemany(
        "INSERT INTO agent_aliases (server, interface, name) VALUES (?, ?, ?)"
        " ON CONFLICT (server, interface) DO UPDATE SET name = excluded.name", aliases)


async def calls_of_numbers(tx: Transaction, numbers: Sequence[str] | None,
                           merge_servers: bool) -> list[GapRow]:
    """The queue calls of these caller numbers (all known numbers for None) in customer
    order: by number (by server and number when servers are not merged), then entry, then
    id."""
    sql = ("SELECT id, caller_number, server, call_id, entered_ts, outcome FROM queue_calls"
           " WHERE caller_number <> ''")
    if numbers is not None:
        sql += f" AND caller_number IN ({marks(numbers)})"
    customer = "caller_number" if merge_servers else "server, caller_number"
    return await tx.fetch_all(f"{sql} ORDER BY {customer}, entered_ts, id", numbers or ())


async def set_caller_gaps(tx: Transaction,
                          gaps: Sequence[tuple[float | None, float | None, float | None, int]]
                          ) -> None:
    """(prev_gap_s, next_gap_s, fcr_prev_gap_s, queue call id) rows."""
    await tx.executemany(
        "UPDATE queue_calls SET prev_gap_s = ?, next_gap_s = ?, fcr_prev_gap_s = ?"
        " WHERE id = ?", gaps)


async def claim_facts(tx: Transaction, seen: str | None, *, overwrite: bool) -> bool:
    """Claim the facts for this refresh's write: their mark (facts_state `written`, a new
    value at every refresh's write) as this refresh read it, `seen` (None: none yet), is
    replaced by a new one. False, changing nothing, when another refresh wrote them since,
    unless `overwrite` (a rebuild's facts depend on none written before). As a write
    transaction's first statement it also holds off every other refresh until this one
    commits: SQLite's write lock does already, and on PostgreSQL the row's lock makes a
    second refresh wait, then find the mark changed."""
    mark = uuid.uuid4().hex
    if overwrite:
        await tx.execute("INSERT INTO facts_state (name, value) VALUES ('written', ?)"
                         " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (mark,))
        return True
    if seen is None:
        return bool(await tx.execute(
            "INSERT INTO facts_state (name, value) VALUES ('written', ?)"
            " ON CONFLICT (name) DO NOTHING", (mark,)))
    return bool(await tx.execute(
        "UPDATE facts_state SET value = ? WHERE name = 'written' AND value = ?", (mark, seen)))


async def set_facts_state(tx: Transaction, state: dict[str, str]) -> None:
    for name, value in state.items():
        await tx.execute(
            "INSERT INTO facts_state (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(columns)})"


async def _value(db: Reader, sql: str, params: Sequence[Any]) -> Any:
    """The one value of a one-row query."""
    (value,), = await db.fetch_all(sql, params)
    return value
