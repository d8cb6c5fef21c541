"""The report as one self-contained HTML page, for a browser (charts as data: URIs) or an
e-mail (charts as cid: parts), and the plain-text summary that goes beside it in the mail.

Layout for e-mail clients: tables, inline CSS (css-inline), PNG images, no script, no SVG,
no web fonts, 640 px wide at most. Every value from the store is escaped: queue, agent and
caller names are whatever a PBX user typed (jinja2 autoescape=True, for every template name).
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

import css_inline
import jinja2

from callkpi.config import ReportConfig

HEADLINE = (
    ("service_level_pct", "Service level"),
    ("asa_s", "ASA"),
    ("abandon_rate_pct", "Abandon rate"),
    ("aht_s", "AHT"),
    ("csat_pct", "CSAT"),
    ("fcr_pct", "FCR"),
)
DETAILS = (
    ("awt_s", "Avg. wait (all calls)"),
    ("max_wait_s", "Longest wait"),
    ("avg_talk_s", "Avg. talk"),
    ("avg_hold_s", "Avg. hold"),
    ("hold_rate_pct", "Calls put on hold"),
    ("avg_acw_s", "Avg. after-call work"),
    ("csat_avg", "CSAT average score"),
    ("survey_response_rate_pct", "Survey response rate"),
    ("fcr_survey_pct", "Resolved (survey)"),
    ("fcr_pending", "FCR pending (window open)"),
    ("repeat_call_rate_pct", "Repeat calls"),
    ("conversion_rate_pct", "Conversion"),
    ("ivr_calls", "IVR calls"),
    ("ivr_contained_pct", "IVR self-service"),
    ("ivr_to_queue_pct", "IVR to a queue"),
    ("ivr_hangup_pct", "IVR hang-ups"),
    ("attrition_pct", "Agent attrition"),
)
OUTCOMES = (
    ("offered", "offered"), ("answered", "answered"), ("abandoned", "abandoned"),
    ("short_abandoned", "short abandons"), ("timeout", "timed out"),
    ("exit_key", "left by key"), ("exit_empty", "no agents"), ("transferred", "transferred"),
)
# A percentage where less is better; every other percentage is better higher, every
# duration better lower.
LOWER_BETTER_PCT = {"abandon_rate_pct", "repeat_call_rate_pct", "ivr_hangup_pct",
                    "attrition_pct"}
DASH = "—"  # a ratio with nothing to divide by: never shown as 0
NBSP = "\u00a0"  # between a number and its unit, so "81.2 %" never breaks across lines

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=True,  # not select_autoescape: it keys on the file name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# @media rules cannot be inlined; keeping them lets a phone use the narrow layout.
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Tile:
    key: str
    label: str
    value: str
    target: str | None  # "≥ 80 %"
    met: bool | None  # None: no target or no value
    previous: str
    change: str | None  # "+2.1 pt"
    improved: bool | None  # None: no change or nothing to compare


def render_html(report: dict[str, Any], *, title: str | None = None,
                targets: dict[str, float] | None = None) -> str:
    """The report as one HTML file: charts embedded as data: URIs."""
    charts = _charts(report, targets)
    sources = {name: "data:image/png;base64," + base64.b64encode(png).decode() if png else None
               for name, png in charts.items()}
    return _render(report, title, targets, sources)


def render_email_parts(report: dict[str, Any], *, title: str | None = None,
                       targets: dict[str, float] | None = None
                       ) -> tuple[str, dict[str, bytes]]:
    """The report for a mail: HTML whose images are `cid:` references, and the PNG of each
    Content-ID (without angle brackets)."""
    charts = _charts(report, targets)
    sources = {name: f"cid:{_cid(name)}" if png else None for name, png in charts.items()}
    images = {_cid(name): png for name, png in charts.items() if png}
    return _render(report, title, targets, sources), images


def render_text(report: dict[str, Any], *, title: str | None = None,
                targets: dict[str, float] | None = None) -> str:
    """The plain-text summary: the mail's first part, for clients that show no HTML."""
    context = _context(report, title, targets, {})
    lines = [context["title"], context["period_label"], ""]
    for tile in context["tiles"]:
        line = f"{tile.label}: {tile.value}"
        if tile.met is not None:
            line += f" (target {tile.target}, {'met' if tile.met else 'missed'})"
        if tile.change:
            line += f"; {context['previous_label']}: {tile.previous}, {tile.change}"
        lines.append(line)
    lines += ["", "Calls: " + ", ".join(f"{value} {label}" for label, value in
                                        context["outcomes"])]
    for name, row in sorted(report["queues"].items()):
        lines.append(f"Queue {name}: {count(row['offered'])} offered, "
                     f"SL {pct(row['service_level_pct'])}, ASA {duration(row['asa_s'])}, "
                     f"abandoned {pct(row['abandon_rate_pct'])}")
    return "\n".join(lines).replace(NBSP, " ") + "\n"  # plain text: plain spaces


def subject_line(report: dict[str, Any], *, title: str | None = None) -> str:
    period = report["period"]
    return f"{title or ReportConfig().title}: {_period_label(period, _days(period))}"


def _charts(report: dict[str, Any], targets: dict[str, float] | None
            ) -> dict[str, bytes | None]:
    from reports.charts import render_charts  # matplotlib: only when a page is drawn

    return render_charts(report["charts"],
                         service_level_target=_targets(targets).get("service_level_pct"))


def _cid(chart: str) -> str:
    return f"{chart}@callkpi"


def _render(report: dict[str, Any], title: str | None, targets: dict[str, float] | None,
            images: dict[str, str | None]) -> str:
    page = _env.get_template("report.html").render(_context(report, title, targets, images))
    return _inliner.inline(page)


def _context(report: dict[str, Any], title: str | None, targets: dict[str, float] | None,
             images: dict[str, str | None]) -> dict[str, Any]:
    period, totals = report["period"], report["totals"]
    previous = report["previous_totals"]
    targets = _targets(targets)
    days = _days(period)
    agents = sorted(report["agents"].items(), key=lambda item: (-(item[1]["answered"] or 0),
                                                                item[0]))
    return {
        "title": title or ReportConfig().title,
        "period": period,
        "period_label": _period_label(period, days),
        "previous_label": "day before" if days == 1 else f"previous {days} days",
        "tiles": [_tile(key, label, totals.get(key), previous.get(key), targets.get(key))
                  for key, label in HEADLINE],
        "outcomes": [(label, count(totals.get(key))) for key, label in OUTCOMES],
        "details": [(label, fmt(key, totals.get(key)), fmt(key, previous.get(key)))
                    for key, label in DETAILS if key in totals],
        "queues": sorted(report["queues"].items()),
        "agents": agents,
        "survey": report["survey"],
        "totals": totals,
        "settings": report["settings"],
        "images": images,
        "fmt": fmt,
    }


def _tile(key: str, label: str, value: float | None, previous: float | None,
          target: float | None) -> Tile:
    lower = lower_is_better(key)
    met = None if value is None or target is None else (
        value <= target if lower else value >= target)
    # compared as shown, so an unchanged "81.2 %" is never coloured better or worse
    delta = None if value is None or previous is None else round(
        value - previous, 1 if key.endswith("_pct") else 0)
    return Tile(
        key=key, label=label, value=fmt(key, value),
        target=None if target is None else f"{'≤' if lower else '≥'} {fmt(key, target)}",
        met=met, previous=fmt(key, previous),
        change=None if delta is None else _signed(key, delta),
        improved=None if not delta else (delta < 0) == lower,
    )


def lower_is_better(key: str) -> bool:
    return key.endswith("_s") or key in LOWER_BETTER_PCT


def fmt(key: str, value: float | None) -> str:
    """One KPI value as people read it, by the unit its name ends in."""
    if key.endswith("_pct"):
        return pct(value)
    if key.endswith("_s"):
        return duration(value)
    if key == "csat_avg":
        return DASH if value is None else f"{value:.2f}"
    if key == "calls_per_hour":
        return DASH if value is None else f"{value:.1f}"
    return count(value)


def pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}{NBSP}%"


def count(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def duration(value: float | None) -> str:
    """Seconds as "25 s", "4:47" (m:ss) or "8:05:00" (h:mm:ss)."""
    if value is None:
        return DASH
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}{NBSP}s"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _signed(key: str, delta: float) -> str:
    sign = "+" if delta > 0 else "−" if delta < 0 else "±"
    if key.endswith("_pct"):
        return f"{sign}{abs(delta):.1f}{NBSP}pt"
    return sign + fmt(key, abs(delta))


def _targets(targets: dict[str, float] | None) -> dict[str, float]:
    return ReportConfig().targets if targets is None else targets


def _days(period: dict[str, Any]) -> int:
    first, last = (dt.date.fromisoformat(period[k]) for k in ("from", "to"))
    return (last - first).days + 1


def _period_label(period: dict[str, Any], days: int) -> str:
    first, last = (dt.date.fromisoformat(period[k]) for k in ("from", "to"))
    label = (f"{first:%A} {first.day} {first:%B %Y}" if days == 1
             else f"{first.day} {first:%b %Y} – {last.day} {last:%b %Y}")
    return label + (f", queue {period['queue']}" if period.get("queue") else "")
