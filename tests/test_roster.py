"""The agent roster as employment periods, and its attrition figures: a re-hire keeps the
earlier period, contradictions are refused in one line, and the old one-row-per-agent roster
migrates."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from click.testing import CliRunner

from callkpi.cli import cli
from callkpi.schema import MIGRATIONS
from callkpi.store import open_store
from reports import roster
from reports.roster import Employment, RosterError

D = dt.date


async def test_add_leave_list(store):
    assert await roster.add_agent(store, "Agent 1001", D(2025, 1, 6)) == \
        "added Agent 1001 (hired 2025-01-06)"
    await roster.add_agent(store, "Agent 1002", D(2025, 2, 1))
    assert await roster.leave_agent(store, "Agent 1002", D(2026, 3, 31)) == \
        "Agent 1002 left on 2026-03-31"
    assert await roster.list_agents(store) == [
        Employment("Agent 1001", D(2025, 1, 6)),
        Employment("Agent 1002", D(2025, 2, 1), D(2026, 3, 31))]


async def test_a_re_hire_keeps_the_earlier_employment(store):
    await roster.add_agent(store, "A", D(2025, 1, 6))
    await roster.leave_agent(store, "A", D(2025, 6, 30))
    assert await roster.add_agent(store, "A", D(2026, 2, 1)) == \
        "A hired again on 2026-02-01 (left on 2025-06-30)"
    assert await roster.list_agents(store) == [
        Employment("A", D(2025, 1, 6), D(2025, 6, 30)), Employment("A", D(2026, 2, 1))]
    await roster.leave_agent(store, "A", D(2026, 5, 31))  # the second leaving
    assert [p.left_on for p in await roster.list_agents(store)] == [D(2025, 6, 30),
                                                                  D(2026, 5, 31)]


async def test_contradictions_are_refused_and_change_nothing(store):
    await roster.add_agent(store, "A", D(2025, 1, 6))
    before = await roster.list_agents(store)
    with pytest.raises(RosterError, match=r"'A' is employed since 2025-01-06 with no leaving "
                                          r"date: record the leaving first .*--correct"):
        await roster.add_agent(store, "A", D(2025, 3, 1))  # it overwrote the hire date before
    await roster.leave_agent(store, "A", D(2025, 6, 30))
    with pytest.raises(RosterError, match="a hire on 2025-06-30 overlaps that"):
        await roster.add_agent(store, "A", D(2025, 6, 30))  # the leaving day is worked
    with pytest.raises(RosterError, match="a hire on 2024-01-01 overlaps"):
        await roster.add_agent(store, "A", D(2024, 1, 1))
    with pytest.raises(RosterError, match=r"'A' left on 2025-06-30 already .*--correct"):
        await roster.leave_agent(store, "A", D(2025, 7, 31))
    assert await roster.list_agents(store) == [Employment("A", D(2025, 1, 6), D(2025, 6, 30))]
    assert before != await roster.list_agents(store)  # only the leaving was recorded


async def test_the_same_change_twice_is_a_no_op(store):
    await roster.add_agent(store, "A", D(2025, 1, 6))
    assert await roster.add_agent(store, "A", D(2025, 1, 6)) == \
        "A is on the roster since 2025-01-06 already"
    await roster.leave_agent(store, "A", D(2025, 6, 30))
    assert await roster.leave_agent(store, "A", D(2025, 6, 30)) == \
        "A left on 2025-06-30 already"
    assert len(await roster.list_agents(store)) == 1


async def test_corrections(store):
    await roster.add_agent(store, "A", D(2024, 1, 1))
    await roster.leave_agent(store, "A", D(2024, 12, 31))
    await roster.add_agent(store, "A", D(2025, 3, 1))
    assert await roster.correct_hire(store, "A", D(2025, 2, 1)) == \
        "corrected the hire date of A: 2025-03-01 -> 2025-02-01"
    with pytest.raises(RosterError, match="overlaps the employment 2024-01-01 to 2024-12-31"):
        await roster.correct_hire(store, "A", D(2024, 6, 1))
    with pytest.raises(RosterError, match="has no leaving date to correct"):
        await roster.correct_leave(store, "A", D(2025, 9, 1))
    await roster.leave_agent(store, "A", D(2025, 9, 30))
    assert await roster.correct_leave(store, "A", D(2025, 10, 31)) == \
        "corrected the leaving date of A: 2025-09-30 -> 2025-10-31"
    with pytest.raises(RosterError, match="cannot leave on 2025-01-01"):
        await roster.correct_leave(store, "A", D(2025, 1, 1))
    assert await roster.list_agents(store) == [
        Employment("A", D(2024, 1, 1), D(2024, 12, 31)),
        Employment("A", D(2025, 2, 1), D(2025, 10, 31))]


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
                    "\"Smith, J\",2025-02-01,2026-03-31\n\"Smith, J\",2026-05-01,\n\n")
    assert await roster.import_csv(store, path) == 3
    assert await roster.list_agents(store) == [
        Employment("Agent 1001", D(2025, 1, 6)),
        Employment("Smith, J", D(2025, 2, 1), D(2026, 3, 31)),
        Employment("Smith, J", D(2026, 5, 1))]
    assert await roster.import_csv(store, path) == 3  # the same export again: nothing changes
    path.write_text("Agent 1001,2025-01-06,2026-06-30\n\"Smith, J\",2026-05-01\n")
    await roster.import_csv(store, path)  # a leaving added; a row without one keeps the roster's
    path.write_text("\"Smith, J\",2025-02-01\n")
    await roster.import_csv(store, path)
    assert await roster.list_agents(store) == [
        Employment("Agent 1001", D(2025, 1, 6), D(2026, 6, 30)),
        Employment("Smith, J", D(2025, 2, 1), D(2026, 3, 31)),
        Employment("Smith, J", D(2026, 5, 1))]


@pytest.mark.parametrize("text, error", [
    ("A,2025-13-01\n", "roster.csv:1: dates must be YYYY-MM-DD"),
    ("A,2025-01-01\nB\n", "roster.csv:2: expected name,hired_on"),
    ("A,2025-02-01,2025-01-01\n", "roster.csv:1: left_on is before hired_on"),
    ("A,2025-01-01,2025-06-30\nA,2025-06-01\n",
     "roster.csv:2: 'A': 2025-06-01 \\(no leaving date\\) overlaps the employment 2025-01-01 "
     "to 2025-06-30"),
    ("A,2025-01-01\nA,2026-01-01\n", "roster.csv:2: 'A': 2026-01-01 \\(no leaving date\\) "
     "overlaps the employment 2025-01-01 \\(no leaving date\\)"),
    ("B,2024-01-01,2024-05-31\n", "roster.csv:1: 'B' hired 2024-01-01 left on 2024-06-30 \\(on "
     "the roster\\), not 2024-05-31"),
])
async def test_import_rejects_bad_or_contradicting_files_whole(store, tmp_path, text, error):
    await roster.add_agent(store, "B", D(2024, 1, 1))
    await roster.leave_agent(store, "B", D(2024, 6, 30))
    before = await roster.list_agents(store)
    path = tmp_path / "roster.csv"
    path.write_text(text)
    with pytest.raises(RosterError, match=error):
        await roster.import_csv(store, path)
    assert await roster.list_agents(store) == before  # all or nothing


def test_headcount_and_attrition():
    agents = [Employment("a", D(2025, 1, 1)),  # all month
              Employment("b", D(2025, 1, 1), D(2026, 3, 10)),  # on 1..10: 10 days
              Employment("c", D(2026, 3, 21))]  # on 21..31: 11 days
    h = roster.headcount(agents, D(2026, 3, 1), D(2026, 3, 31))
    # average headcount = (31 + 10 + 11) / 31 days; one leaver
    assert h["avg_headcount"] == pytest.approx(52 / 31, abs=1e-3)
    assert h["attrition_pct"] == pytest.approx(100 * 31 / 52, abs=1e-3)
    assert (h["leavers"], h["hires"], h["headcount_start"], h["headcount_end"]) == (1, 1, 2, 2)
    assert roster.headcount([], D(2026, 3, 1), D(2026, 3, 31))["attrition_pct"] is None


async def test_attrition_over_a_re_hire(store):
    """b leaves on the 10th and is hired again on the 21st: one leaver, one hire, and b on
    the headcount of 21 days; the old roster made b employed from the 21st only, or (hired
    after left) never."""
    await roster.add_agent(store, "a", D(2025, 1, 1))
    await roster.add_agent(store, "b", D(2025, 1, 1))
    await roster.leave_agent(store, "b", D(2026, 3, 10))
    await roster.add_agent(store, "b", D(2026, 3, 21))
    h = roster.headcount(await roster.list_agents(store), D(2026, 3, 1), D(2026, 3, 31))
    assert (h["leavers"], h["hires"], h["headcount_start"], h["headcount_end"]) == (1, 1, 2, 2)
    assert h["avg_headcount"] == pytest.approx((31 + 10 + 11) / 31, abs=1e-3)
    april = roster.headcount(await roster.list_agents(store), D(2026, 4, 1), D(2026, 4, 30))
    assert (april["leavers"], april["hires"], april["avg_headcount"]) == (0, 0, 2)


# SQLite alone: a PostgreSQL store was born after this migration (it never held the old roster)
async def test_the_old_roster_migrates_to_periods(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for version in (1, 2, 3):
            conn.executescript(MIGRATIONS[version])
        conn.execute("PRAGMA user_version = 3")
        conn.executemany("INSERT INTO agents VALUES (?, ?, ?)", [
            ("A", "2025-01-06", None), ("B", "2025-02-01", "2026-03-31"),
            ("C", "2026-05-01", "2025-12-31")])  # C: re-hired over a leaving, hired after left
    store = await open_store(path)
    async with store:
        assert await roster.list_agents(store) == [
            Employment("A", D(2025, 1, 6)), Employment("B", D(2025, 2, 1), D(2026, 3, 31)),
            Employment("C", D(2026, 5, 1))]
        await roster.leave_agent(store, "C", D(2026, 8, 31))


def test_the_cli_says_what_it_did_and_refuses_in_one_line(make_store_url):
    env = {"CALLKPI_DB": make_store_url(empty=True), "CALLKPI_CONFIG": ""}

    def agents(*args: str):
        return CliRunner().invoke(cli, ["agents", *args], env=env)

    assert agents("add", "Agent 1001", "--hired", "2025-01-06").output == \
        "added Agent 1001 (hired 2025-01-06)\n"
    refused = agents("add", "Agent 1001", "--hired", "2025-03-01")
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert refused.output.startswith("Error: 'Agent 1001' is employed since 2025-01-06")
    assert agents("add", "Agent 1001", "--hired", "2025-01-07", "--correct").output == \
        "corrected the hire date of Agent 1001: 2025-01-06 -> 2025-01-07\n"
    assert agents("leave", "Agent 1001", "--on", "2025-06-30").output == \
        "Agent 1001 left on 2025-06-30\n"
    assert agents("add", "Agent 1001", "--hired", "2026-01-05").output == \
        "Agent 1001 hired again on 2026-01-05 (left on 2025-06-30)\n"
    assert agents("list").output == ("Agent 1001\thired 2025-01-07\tleft 2025-06-30\n"
                                     "Agent 1001\thired 2026-01-05\tleft -\n")
