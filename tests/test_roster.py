"""The agent roster and its attrition figures."""

from __future__ import annotations

import datetime as dt

import pytest

from reports import roster
from reports.roster import Agent, RosterError

D = dt.date


async def test_add_leave_list(store):
    await roster.add_agent(store, "Agent 1001", D(2025, 1, 6))
    await roster.add_agent(store, "Agent 1002", D(2025, 2, 1))
    await roster.leave_agent(store, "Agent 1002", D(2026, 3, 31))
    assert await roster.list_agents(store) == [
        Agent("Agent 1001", D(2025, 1, 6)), Agent("Agent 1002", D(2025, 2, 1), D(2026, 3, 31))]


async def test_leave_errors(store):
    with pytest.raises(RosterError, match="no agent named"):
        await roster.leave_agent(store, "ghost", D(2026, 1, 1))
    await roster.add_agent(store, "A", D(2026, 1, 10))
    with pytest.raises(RosterError, match="cannot leave"):
        await roster.leave_agent(store, "A", D(2026, 1, 9))
    with pytest.raises(RosterError, match="needs a name"):
        await roster.add_agent(store, " ", D(2026, 1, 9))


async def test_import_csv(store, tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("name,hired_on,left_on\nAgent 1001,2025-01-06,\n"
                    "\"Smith, J\",2025-02-01,2026-03-31\n\n")
    assert await roster.import_csv(store, path) == 2
    assert await roster.list_agents(store) == [
        Agent("Agent 1001", D(2025, 1, 6)), Agent("Smith, J", D(2025, 2, 1), D(2026, 3, 31))]


@pytest.mark.parametrize("text, error", [
    ("A,2025-13-01\n", "roster.csv:1: dates must be YYYY-MM-DD"),
    ("A,2025-01-01\nB\n", "roster.csv:2: expected name,hired_on"),
    ("A,2025-02-01,2025-01-01\n", "roster.csv:1: left_on is before hired_on"),
])
async def test_import_rejects_bad_rows_whole(store, tmp_path, text, error):
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(RosterError, match=error):
        await roster.import_csv(store, path)
    assert await roster.list_agents(store) == []  # all or nothing


def test_headcount_and_attrition():
    agents = [Agent("a", D(2025, 1, 1)),  # all month
              Agent("b", D(2025, 1, 1), D(2026, 3, 10)),  # on 1..10: 10 days
              Agent("c", D(2026, 3, 21))]  # on 21..31: 11 days
    h = roster.headcount(agents, D(2026, 3, 1), D(2026, 3, 31))
    # average headcount = (31 + 10 + 11) / 31 days; one leaver
    assert h["avg_headcount"] == pytest.approx(52 / 31, abs=1e-3)
    assert h["attrition_pct"] == pytest.approx(100 * 31 / 52, abs=1e-3)
    assert (h["leavers"], h["hires"], h["headcount_start"], h["headcount_end"]) == (1, 1, 2, 2)
    assert roster.headcount([], D(2026, 3, 1), D(2026, 3, 31))["attrition_pct"] is None
