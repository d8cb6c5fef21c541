"""The agent roster (table `agents`): who was hired when and who left when, for attrition.

An agent is on the headcount of a day from `hired_on` through `left_on` (the leaving day
still counts: it is the last working day).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from callkpi.errors import UserError
from callkpi.store import Store


class RosterError(UserError):
    """A roster change that cannot be made; the message is meant for the user."""


@dataclass
class Agent:
    name: str
    hired_on: dt.date
    left_on: dt.date | None = None

    def employed_on(self, day: dt.date) -> bool:
        return self.hired_on <= day and (self.left_on is None or day <= self.left_on)


async def add_agent(store: Store, name: str, hired_on: dt.date) -> None:
    """Add an agent, or correct the hire date of one already on the roster."""
    _check_name(name)
    await store.execute(
        "INSERT INTO agents (name, hired_on) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET hired_on = excluded.hired_on",
        (name, hired_on.isoformat()))


async def leave_agent(store: Store, name: str, left_on: dt.date) -> None:
    agent = await _get(store, name)
    if agent is None:
        raise RosterError(f"no agent named {name!r} on the roster")
    if left_on < agent.hired_on:
        raise RosterError(f"{name!r} was hired on {agent.hired_on}, cannot leave on {left_on}")
    await store.execute("UPDATE agents SET left_on = ? WHERE name = ?",
                        (left_on.isoformat(), name))


async def list_agents(store: Store) -> list[Agent]:
    rows = await store.fetch_all("SELECT name, hired_on, left_on FROM agents ORDER BY name")
    return [_agent(row) for row in rows]


async def import_csv(store: Store, path: str | Path) -> int:
    """Read `name,hired_on[,left_on]` rows (a header row is allowed); all or nothing.
    Returns the number of agents written."""
    agents = [_parse_row(row, i, path) for i, row in _csv_rows(path)]
    async with store.transaction() as tx:
        await tx.executemany(
            "INSERT INTO agents (name, hired_on, left_on) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET hired_on = excluded.hired_on,"
            " left_on = excluded.left_on",
            [(a.name, a.hired_on.isoformat(), a.left_on and a.left_on.isoformat())
             for a in agents])
    return len(agents)


def headcount(agents: list[Agent], start: dt.date, end: dt.date) -> dict[str, float | int | None]:
    """Attrition over the days start..end inclusive: leavers / average daily headcount."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    daily = [sum(a.employed_on(d) for a in agents) for d in days]
    average = sum(daily) / len(daily) if daily else 0
    leavers = sum(1 for a in agents if a.left_on and start <= a.left_on <= end)
    return {
        "attrition_pct": round(leavers / average * 100, 3) if average else None,
        "leavers": leavers,
        "hires": sum(1 for a in agents if start <= a.hired_on <= end),
        "headcount_start": daily[0] if daily else 0,
        "headcount_end": daily[-1] if daily else 0,
        "avg_headcount": round(average, 3),
    }


async def _get(store: Store, name: str) -> Agent | None:
    rows = await store.fetch_all(
        "SELECT name, hired_on, left_on FROM agents WHERE name = ?", (name,))
    return _agent(rows[0]) if rows else None


def _agent(row: tuple) -> Agent:
    name, hired_on, left_on = row
    return Agent(name, dt.date.fromisoformat(hired_on),
                 dt.date.fromisoformat(left_on) if left_on else None)


def _check_name(name: str) -> None:
    if not name.strip():
        raise RosterError("an agent needs a name (the name Asterisk logs, e.g. 'Agent 1001')")


def _csv_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except OSError as exc:
        raise RosterError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RosterError(f"{path}: not a UTF-8 CSV file: {exc}") from None
    rows = [(i, row) for i, row in rows if any(cell.strip() for cell in row)]
    if rows and [c.strip().lower() for c in rows[0][1][:2]] == ["name", "hired_on"]:
        rows = rows[1:]
    return rows


def _parse_row(row: list[str], line: int, path: str | Path) -> Agent:
    cells = [c.strip() for c in row] + [""] * 3
    name, hired, left = cells[:3]
    if len([c for c in row if c.strip()]) > 3 or not name or not hired:
        raise RosterError(f"{path}:{line}: expected name,hired_on[,left_on]")
    try:
        agent = Agent(name, dt.date.fromisoformat(hired),
                      dt.date.fromisoformat(left) if left else None)
    except ValueError:
        raise RosterError(f"{path}:{line}: dates must be YYYY-MM-DD") from None
    if agent.left_on and agent.left_on < agent.hired_on:
        raise RosterError(f"{path}:{line}: left_on is before hired_on")
    return agent
