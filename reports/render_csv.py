"""The report as CSV: one row per queue, per agent, per interval or per interval x queue
(staffing).

Cells are made safe for spreadsheets: queue and agent names come from the PBX (and caller
input reaches some of them), so a cell starting with = + - @ tab or CR is prefixed with '
to stop a spreadsheet from running it as a formula.
"""

from __future__ import annotations

import csv
import io
from typing import Any

TABLES = ("queues", "agents", "intervals", "staffing")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def render_csv(report: dict[str, Any], table: str = "queues") -> str:
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, not {table!r}")
    rows = _rows(report, table)
    out = io.StringIO()
    if rows:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([_safe(k) for k in rows[0]])
        for row in rows:
            writer.writerow([_safe(v) for v in row.values()])
    return out.getvalue()


def _rows(report: dict[str, Any], table: str) -> list[dict[str, Any]]:
    if table in ("intervals", "staffing"):
        return report[table]
    key = "queue" if table == "queues" else "agent"
    return [{key: name, **kpis} for name, kpis in report[table].items()]


def _safe(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
