"""The agent roster's SQL (table `agent_employment`, days stored as YYYY-MM-DD text);
reports/roster.py keeps its rules."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Sequence

from callkpi.queries import Reader
from callkpi.store import Transaction

PERIODS = "SELECT name, hired_on, left_on FROM agent_employment"
# an import row without a leaving date says nothing about one the roster has
UPSERT = """
INSERT INTO agent_employment (name, hired_on, left_on) VALUES (?, ?, ?)
ON CONFLICT (name, hired_on) DO UPDATE
    SET left_on = COALESCE(excluded.left_on, agent_employment.left_on)
"""


class PeriodRow(NamedTuple):
    name: str
    hired_on: dt.date
    left_on: dt.date | None


async def all_periods(db: Reader) -> list[PeriodRow]:
    """Every employment period, by name then hire date."""
    return _periods(await db.fetch_all(PERIODS + " ORDER BY name, hired_on"))


async def periods_of(db: Reader, name: str) -> list[PeriodRow]:
    """One agent's periods, by hire date."""
    return _periods(await db.fetch_all(PERIODS + " WHERE name = ? ORDER BY hired_on", (name,)))


async def upsert_periods(tx: Transaction, periods: Sequence[PeriodRow]) -> None:
    """Add periods; one on the roster already (same name and hire date) takes the leaving
    date given, and keeps its own where none is."""
    await tx.executemany(UPSERT, [(name, hired_on.isoformat(), left_on and left_on.isoformat())
                                  for name, hired_on, left_on in periods])


async def set_hired_on(tx: Transaction, name: str, hired_on: dt.date, new_hired_on: dt.date
                       ) -> None:
    await tx.execute("UPDATE agent_employment SET hired_on = ? WHERE name = ?"
                     " AND hired_on = ?", (new_hired_on.isoformat(), name, hired_on.isoformat()))


async def set_left_on(tx: Transaction, name: str, hired_on: dt.date, left_on: dt.date) -> None:
    await tx.execute("UPDATE agent_employment SET left_on = ? WHERE name = ? AND hired_on = ?",
                     (left_on.isoformat(), name, hired_on.isoformat()))


def _periods(rows: list[tuple]) -> list[PeriodRow]:
    return [PeriodRow(name, dt.date.fromisoformat(hired_on),
                      dt.date.fromisoformat(left_on) if left_on else None)
            for name, hired_on, left_on in rows]
