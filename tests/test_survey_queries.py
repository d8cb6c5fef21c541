"""The survey's skip-rule lookups answer from an index, not from days of every event."""

from __future__ import annotations

import sqlite3

import pytest

from callkpi.events import SOURCE_AGI, Kind, make_event
from callkpi.queries.survey import caller_answered_since
from callkpi.store import Batch

pytestmark = pytest.mark.backends("sqlite")  # the query plan is read from SQLite's EXPLAIN


async def test_a_recent_answer_is_found_through_the_callers_index(store):
    await store.write(Batch(events=[make_event(
        server="pbx", kind=Kind.SURVEY_ANSWER, ts=1795491300.0, source=SOURCE_AGI,
        call_id="1795491290.7", caller_number="5551234", discr="q1", value="5",
        reason="answered")]))
    assert await caller_answered_since(store, "pbx", "5551234", 1795491000, "answered", "x")
    assert not await caller_answered_since(store, "pbx", "5551234", 1795491000, "answered",
                                           "1795491290.7")
    assert not await caller_answered_since(store, "pbx", "5559999", 1795491000, "answered", "x")
    db = sqlite3.connect(store.path)
    try:
        plan = " ".join(str(row) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM events WHERE kind = 'survey-answer'"
            " AND server = ? AND caller_number = ? AND tsec >= ? AND reason = ?"
            " AND call_id <> ? LIMIT 1", ("pbx", "5551234", 0, "answered", "x")))
    finally:
        db.close()
    assert "events_survey_callers" in plan
