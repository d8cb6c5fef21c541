"""The agent roster (table `agent_employment`): each period an agent was employed, for
attrition. An agent who leaves and is hired again has two periods; the first keeps its leaving
date.

A period runs from `hired_on` through `left_on` inclusive (the leaving day is the last working
day; an open period has no `left_on`). An agent's periods never overlap, and only the latest
can be open: a change that would contradict that is refused with one line saying why and what
to do instead, never applied silently.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from callkpi.errors import UserError
from callkpi.queries import roster as q
from callkpi.store import Store, Transaction


class RosterError(UserError):
    """A roster change that cannot be made; the message is meant for the user."""


@dataclass(frozen=True)
class Employment:
    """One period an agent was employed."""

    name: str
    hired_on: dt.date
    left_on: dt.date | None = None

    def employed_on(self, day: dt.date) -> bool:
        return self.hired_on <= day and (self.left_on is None or day <= self.left_on)

    def overlaps(self, other: "Employment") -> bool:
        return (other.left_on is None or self.hired_on <= other.left_on) and \
            (self.left_on is None or other.hired_on <= self.left_on)

    def describe(self) -> str:
        return f"{self.hired_on} to {self.left_on}" if self.left_on \
            else f"{self.hired_on} (no leaving date)"


async def add_agent(store: Store, name: str, hired_on: dt.date) -> str:
    """Hire `name` on `hired_on`: a first hire, or a re-hire after the last period ended.
    Returns what was done, as a line for the user."""
    _check_name(name)
    async with store.transaction() as tx:
        periods = await _periods(tx, name)
        if any(p.hired_on == hired_on for p in periods):
            return f"{name} is on the roster since {hired_on} already"
        if periods and periods[-1].left_on is None:
            raise RosterError(
                f"{name!r} is employed since {periods[-1].hired_on} with no leaving date: "
                f"record the leaving first (agents leave {name!r} --on DAY), or correct the "
                "hire date with --correct")
        if periods and hired_on <= _last_day(periods[-1]):
            raise RosterError(
                f"{name!r} was employed until {periods[-1].left_on}: a hire on {hired_on} "
                "overlaps that (a re-hire starts after the leaving day)")
        await q.upsert_periods(tx, [q.PeriodRow(name, hired_on, None)])
    if periods:
        return f"{name} hired again on {hired_on} (left on {periods[-1].left_on})"
    return f"added {name} (hired {hired_on})"


async def correct_hire(store: Store, name: str, hired_on: dt.date) -> str:
    """Change the hire date of `name`'s latest period."""
    async with store.transaction() as tx:
        periods = await _periods(tx, name)
        latest = _latest(periods, name)
        corrected = Employment(name, hired_on, latest.left_on)
        _check_period(corrected, periods[:-1], f"{name!r}")
        await q.set_hired_on(tx, name, latest.hired_on, hired_on)
    return f"corrected the hire date of {name}: {latest.hired_on} -> {hired_on}"


async def leave_agent(store: Store, name: str, left_on: dt.date) -> str:
    """Record that `name` left on `left_on` (their last working day)."""
    async with store.transaction() as tx:
        latest = _latest(await _periods(tx, name), name)
        if latest.left_on == left_on:
            return f"{name} left on {left_on} already"
        if latest.left_on is not None:
            raise RosterError(
                f"{name!r} left on {latest.left_on} already (hired {latest.hired_on}): correct "
                f"the leaving date with --correct, or hire them again first (agents add)")
        if left_on < latest.hired_on:
            raise RosterError(f"{name!r} was hired on {latest.hired_on}, cannot leave on "
                              f"{left_on}")
        await _set_left(tx, latest, left_on)
    return f"{name} left on {left_on}"


async def correct_leave(store: Store, name: str, left_on: dt.date) -> str:
    """Change the leaving date of `name`'s latest period."""
    async with store.transaction() as tx:
        latest = _latest(await _periods(tx, name), name)
        if latest.left_on is None:
            raise RosterError(f"{name!r} has no leaving date to correct: agents leave "
                              f"{name!r} --on DAY records one")
        if left_on < latest.hired_on:
            raise RosterError(f"{name!r} was hired on {latest.hired_on}, cannot leave on "
                              f"{left_on}")
        await _set_left(tx, latest, left_on)
    return f"corrected the leaving date of {name}: {latest.left_on} -> {left_on}"


async def list_agents(store: Store) -> list[Employment]:
    """Every employment period, by name then hire date."""
    return [Employment(*row) for row in await q.all_periods(store)]


async def import_csv(store: Store, path: str | Path) -> int:
    """Read `name,hired_on[,left_on]` rows, one employment period each (a header row is
    allowed). A row for a period on the roster already (same name and hire date) may add its
    leaving date (one without says nothing of it); any contradiction (another leaving date, an
    overlap) refuses the whole file with the row it is on. Returns the number of rows."""
    rows = [(line, _parse_row(row, line, path)) for line, row in _csv_rows(path)]
    async with store.transaction() as tx:
        merged: dict[str, dict[dt.date, Employment]] = defaultdict(dict)
        for period in (Employment(*row) for row in await q.all_periods(tx)):
            merged[period.name][period.hired_on] = period
        for line, period in rows:
            _merge(merged[period.name], period, f"{path}:{line}")
        await q.upsert_periods(tx, [q.PeriodRow(p.name, p.hired_on, p.left_on)
                                    for _, p in rows])
    return len(rows)


def headcount(periods: list[Employment], start: dt.date, end: dt.date
              ) -> dict[str, float | int | None]:
    """Attrition over the days start..end inclusive: leavers / average daily headcount. An
    agent's periods do not overlap, so a day counts each agent once; a leaving and a hire in
    the period are one leaver and one hire."""
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    daily = [sum(p.employed_on(d) for p in periods) for d in days]
    average = sum(daily) / len(daily) if daily else 0
    leavers = sum(1 for p in periods if p.left_on and start <= p.left_on <= end)
    return {
        "attrition_pct": round(leavers / average * 100, 3) if average else None,
        "leavers": leavers,
        "hires": sum(1 for p in periods if start <= p.hired_on <= end),
        "headcount_start": daily[0] if daily else 0,
        "headcount_end": daily[-1] if daily else 0,
        "avg_headcount": round(average, 3),
    }


def _merge(known: dict[dt.date, Employment], period: Employment, where: str) -> None:
    """Add an imported period to an agent's known ones, or refuse it with `where`."""
    same = known.get(period.hired_on)
    if same is not None and None not in (same.left_on, period.left_on) \
            and same.left_on != period.left_on:
        raise RosterError(f"{where}: {period.name!r} hired {period.hired_on} left on "
                          f"{same.left_on} (on the roster), not {period.left_on}")
    merged = same if same is not None and period.left_on is None else period
    others = [p for hired, p in known.items() if hired != period.hired_on]
    _check_period(merged, others, f"{where}: {period.name!r}")
    known[period.hired_on] = merged


def _check_period(period: Employment, others: list[Employment], who: str) -> None:
    if period.left_on is not None and period.left_on < period.hired_on:
        raise RosterError(f"{who}: left on {period.left_on}, before the hire on "
                          f"{period.hired_on}")
    for other in others:
        if period.overlaps(other):  # an open period overlaps every later one
            raise RosterError(f"{who}: {period.describe()} overlaps the employment "
                              f"{other.describe()}")


def _last_day(period: Employment) -> dt.date:
    assert period.left_on is not None
    return period.left_on


def _latest(periods: list[Employment], name: str) -> Employment:
    if not periods:
        raise RosterError(f"no agent named {name!r} on the roster")
    return periods[-1]


async def _periods(tx: Transaction, name: str) -> list[Employment]:
    return [Employment(*row) for row in await q.periods_of(tx, name)]


async def _set_left(tx: Transaction, period: Employment, left_on: dt.date) -> None:
    await q.set_left_on(tx, period.name, period.hired_on, left_on)


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


def _parse_row(row: list[str], line: int, path: str | Path) -> Employment:
    cells = [c.strip() for c in row] + [""] * 3
    name, hired, left = cells[:3]
    if len([c for c in row if c.strip()]) > 3 or not name or not hired:
        raise RosterError(f"{path}:{line}: expected name,hired_on[,left_on]")
    try:
        period = Employment(name, dt.date.fromisoformat(hired),
                            dt.date.fromisoformat(left) if left else None)
    except ValueError:
        raise RosterError(f"{path}:{line}: dates must be YYYY-MM-DD") from None
    if period.left_on and period.left_on < period.hired_on:
        raise RosterError(f"{path}:{line}: left_on is before hired_on")
    return period
