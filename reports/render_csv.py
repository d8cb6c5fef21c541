"""The report as CSV: one row per queue, per agent, per interval or per interval x queue
(staffing).

Cells are made safe for spreadsheets: queue and agent names come from the PBX (and caller
input reaches some of them), so a cell starting with = + - @ tab or CR is prefixed with '
to stop a spreadsheet from running it as a formula.

The last column names the servers whose calls are in (space-separated).

The header row is the JSON keys in English; in another language it is the columns' names in
that language, after a UTF-8 byte-order mark (so a spreadsheet opens it as UTF-8). Values stay
machine-readable in every language: plain digits, a dot for decimals, ISO dates.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from reports.i18n import N_, lang

TABLES = ("queues", "agents", "intervals", "staffing")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"
COLUMNS = {
    "queue": N_("queue"), "agent": N_("agent"), "start": N_("start"),
    "start_jalali": N_("start (Jalali)"), "offered": N_("offered"),
    "answered": N_("answered"), "abandoned": N_("abandoned"),
    "short_abandoned": N_("short abandons"), "timeout": N_("timed out"),
    "exit_key": N_("left by key"), "exit_empty": N_("no agents"),
    "withdrawn": N_("withdrawn"), "transferred": N_("transferred"),
    "closed": N_("waiting when the PBX restarted"),
    "ended_by_restart": N_("talking when the PBX restarted"), "open": N_("still waiting"),
    "abandon_rate_pct": N_("abandon rate %"), "asa_s": N_("ASA (s)"),
    "awt_s": N_("avg. wait (s)"), "max_wait_s": N_("longest wait (s)"),
    "service_level_pct": N_("service level %"), "avg_acw_s": N_("avg. after-call work (s)"),
    "aht_s": N_("AHT (s)"), "avg_talk_s": N_("avg. talk (s)"), "avg_hold_s": N_("avg. hold (s)"),
    "hold_rate_pct": N_("calls put on hold %"), "csat_pct": N_("CSAT %"),
    "csat_avg": N_("CSAT average score"),
    "survey_response_rate_pct": N_("survey response rate %"), "fcr_pct": N_("FCR %"),
    "fcr_pending": N_("FCR pending"), "fcr_survey_pct": N_("resolved (survey) %"),
    "repeat_call_rate_pct": N_("repeat calls %"), "conversion_rate_pct": N_("conversion %"),
    "ivr_calls": N_("IVR calls"), "ivr_contained_pct": N_("IVR self-service %"),
    "ivr_to_queue_pct": N_("IVR to a queue %"), "ivr_hangup_pct": N_("IVR hang-ups %"),
    "ring_no_answer": N_("rang, not answered"), "talk_s": N_("talk (s)"),
    "hold_s": N_("hold (s)"), "acw_s": N_("after-call work (s)"), "staffed_s": N_("staffed (s)"),
    "paused_s": N_("paused (s)"), "calls_per_hour": N_("calls per hour"),
    "occupancy_pct": N_("occupancy %"), "agents_needed": N_("agents needed"),
    "agents_staffed": N_("agents staffed"), "servers": N_("servers"),
}


def render_csv(report: dict[str, Any], table: str = "queues", locale: str = "en") -> str:
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, not {table!r}")
    rows = _rows(report, table)
    out = io.StringIO()
    if rows:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([_safe(k) for k in _header(list(rows[0]), locale)])
        for row in rows:
            writer.writerow([_safe(v) for v in row.values()])
    text = out.getvalue()
    return BOM + text if locale != "en" and text else text


def _header(keys: list[str], locale: str) -> list[str]:
    """The JSON keys; in another language their names (a key without one stays a key)."""
    if locale == "en":
        return keys
    language = lang(locale)
    return [language.gettext(COLUMNS[k]) if k in COLUMNS else k for k in keys]


def _rows(report: dict[str, Any], table: str) -> list[dict[str, Any]]:
    """The table's rows, each ending with the servers the report covers (so the exports of
    several servers' reports stay apart when put together)."""
    servers = {"servers": " ".join(report.get("period", {}).get("servers") or [])}
    if table in ("intervals", "staffing"):
        return [{**row, **servers} for row in report[table]]
    key = "queue" if table == "queues" else "agent"
    return [{key: name, **kpis, **servers} for name, kpis in report[table].items()]


def _safe(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
