"""The survey's skip rules' lookups in the events table (agi_plugin/survey.py)."""

from __future__ import annotations

from typing import Sequence

from callkpi.events import Kind
from callkpi.queries import marks
from callkpi.store import Store


async def caller_answered_since(store: Store, server: str, caller_number: str,
                                since_tsec: int, answered: str, other_than: str) -> bool:
    """Did this number answer a survey question (status `answered`) since then, on a call
    other than `other_than`? (The kind is written out, not a parameter: it is what lets the
    database use the partial index events_survey_callers.)"""
    return bool(await store.fetch_all(
        f"SELECT 1 FROM events WHERE kind = '{Kind.SURVEY_ANSWER}' AND server = ?"
        " AND caller_number = ? AND tsec >= ? AND reason = ? AND call_id <> ? LIMIT 1",
        (server, caller_number, since_tsec, answered, other_than)))


async def talk_time(store: Store, server: str, call_id: str, since_tsec: int) -> float | None:
    """The call's talk time from its latest complete (or transfer) event, if stored."""
    rows = await store.fetch_all(
        "SELECT talk_s FROM events WHERE tsec >= ? AND server = ? AND call_id = ?"
        " AND kind IN (?, ?) AND talk_s IS NOT NULL ORDER BY ts DESC LIMIT 1",
        (since_tsec, server, call_id, Kind.COMPLETE, Kind.TRANSFER))
    return float(rows[0][0]) if rows else None


async def surveyed_calls(store: Store, server: str, call_ids: Sequence[str], since_tsec: int
                         ) -> set[str]:
    """Those of the calls with survey answers stored since then."""
    rows = await store.fetch_all(
        f"SELECT DISTINCT call_id FROM events WHERE tsec >= ? AND server = ?"
        f" AND kind = ? AND call_id IN ({marks(call_ids)})",
        (since_tsec, server, Kind.SURVEY_ANSWER, *call_ids))
    return {call_id for (call_id,) in rows}
