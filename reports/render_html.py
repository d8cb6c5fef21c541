"""The report as one self-contained HTML page, for a browser (charts as data: URIs) or an
e-mail (charts as cid: parts), and the plain-text summary that goes beside it in the mail,
in the report's language (`locale`: en, fa) and its calendar (`period.calendar`).

Layout for e-mail clients: tables, inline CSS (css-inline), PNG images, no script, no SVG,
no web fonts, 640 px wide at most; right to left for Persian (`dir="rtl"`, every alignment
mirrored). Every value from the store is escaped: queue, agent and caller names are whatever
a PBX user typed (jinja2 autoescape=True, for every template name), and each is shown inside
its own bidi isolate with Unicode's bidi controls removed, so a name can neither run into the
text around it nor reorder it.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import css_inline
import jinja2
from markupsafe import Markup, escape

from callkpi.config import ReportConfig
from reports.calendar import JALALI
from reports.i18n import DASH, NBSP, Lang, N_, clean, isolate_text, lang as get_lang
from reports.notices import agent_warnings, fcr_known

HEADLINE = (
    ("service_level_pct", N_("Service level")),
    ("asa_s", N_("ASA")),
    ("abandon_rate_pct", N_("Abandon rate")),
    ("aht_s", N_("AHT")),
    ("csat_pct", N_("CSAT")),
    ("fcr_pct", N_("FCR")),
)
DETAILS = (
    ("awt_s", N_("Avg. wait (all calls)")),
    ("max_wait_s", N_("Longest wait")),
    ("avg_talk_s", N_("Avg. talk")),
    ("avg_hold_s", N_("Avg. hold")),
    ("hold_rate_pct", N_("Calls put on hold")),
    ("avg_acw_s", N_("Avg. after-call work")),
    ("csat_avg", N_("CSAT average score")),
    ("survey_response_rate_pct", N_("Survey response rate")),
    ("fcr_survey_pct", N_("Resolved (survey)")),
    ("fcr_pending", N_("FCR pending (window open)")),
    ("repeat_call_rate_pct", N_("Repeat calls")),
    ("conversion_rate_pct", N_("Conversion")),
    ("ivr_calls", N_("IVR calls")),
    ("ivr_contained_pct", N_("IVR self-service")),
    ("ivr_to_queue_pct", N_("IVR to a queue")),
    ("ivr_hangup_pct", N_("IVR hang-ups")),
    ("attrition_pct", N_("Agent attrition")),
)
# the calls' outcomes (transferred and talking at a restart are answered calls too)
OUTCOMES = (
    ("offered", N_("offered")), ("answered", N_("answered")), ("abandoned", N_("abandoned")),
    ("short_abandoned", N_("short abandons")), ("timeout", N_("timed out")),
    ("exit_key", N_("left by key")), ("exit_empty", N_("no agents")),
    ("withdrawn", N_("withdrawn")), ("transferred", N_("transferred")),
    ("ended_by_restart", N_("talking when the PBX restarted")),
    ("closed", N_("waiting when the PBX restarted")), ("open", N_("still waiting")),
)
# rare outcomes, shown only when some calls had them
OPTIONAL_OUTCOMES = {"withdrawn", "ended_by_restart", "closed", "open"}
# outcomes that keep a call out of the rates' denominators or its talk out of the averages:
# the page says so when there are some
UNRATED_OUTCOMES = ("ended_by_restart", "closed", "open")
QUESTION_KINDS = {"csat": N_("satisfaction"), "resolution": N_("resolved?")}
# One line for a manager whose KPI missed its target: what the figure means and the usual
# levers (industry practice; the FCR benchmark is the one SQM Group publishes).
ADVICE = {
    "service_level_pct": N_(
        "Fewer calls than planned were answered in time: staff the busy hours of the hourly "
        "chart, keep breaks out of the peaks and let agents of quieter queues help."),
    "asa_s": N_(
        "Callers wait too long for an agent: add agents at the peaks, keep after-call work "
        "short and offer a call-back instead of a long wait."),
    "abandon_rate_pct": N_(
        "Callers give up before an agent answers: staff the peaks, tell callers their place "
        "in the queue and offer a call-back; 5 % or less is a common goal."),
    "aht_s": N_(
        "Calls take longer than planned: coach the call flow, give agents quick access to "
        "customer data and a knowledge base, and review long holds and wrap-ups."),
    "csat_pct": N_(
        "Fewer callers are satisfied than targeted: listen to the low-scored calls, coach "
        "clear answers and courtesy, and fix the causes callers name again and again."),
    "fcr_pct": N_(
        "At or above 80 % is world-class; only about 5 % of centers reach it. To lift it: "
        "train agents, give them the customer's data and history, and set a clear "
        "escalation path."),
}
# A percentage where less is better; every other percentage is better higher, every
# duration better lower.
LOWER_BETTER_PCT = {"abandon_rate_pct", "repeat_call_rate_pct", "ivr_hangup_pct",
                    "attrition_pct"}
MAX_TABLE_ROWS = 62  # rows of the trend and staffing tables (two months of days)

# @media rules cannot be inlined; keeping them lets a phone use the narrow layout.
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def isolate(value: Any) -> Markup:
    """A name for the page: escaped, bidi controls removed, in its own bidi isolate."""
    return Markup("<bdi>%s</bdi>") % escape(clean(value))


@lru_cache(maxsize=None)
def _environment(code: str) -> jinja2.Environment:
    """The template environment of a language (its gettext installed)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,  # not select_autoescape: it keys on the file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    translations = get_lang(code).translations
    env.install_gettext_callables(translations.gettext, translations.ngettext,  # type: ignore[attr-defined]
                                  newstyle=True)
    env.filters["isolate"] = isolate
    env.filters["clean"] = clean
    return env


@dataclass(frozen=True)
class Tile:
    key: str
    label: str
    value: str
    target: str | None  # "≥ 80 %"
    met: bool | None  # None: no target or no value
    previous: str | None  # None: the figure is not the period's own, so not compared
    change: str | None  # "+2.1 pt"
    improved: bool | None  # None: no change or nothing to compare
    advice: str | None  # when the target is missed
    covers: str | None = None  # the days of a figure that is not the period's own
    pending: bool = False  # no figure yet: the value says so in words
    notes: tuple[str, ...] = ()  # more lines under the target


def render_html(report: dict[str, Any], *, title: str | None = None,
                targets: dict[str, float] | None = None, locale: str = "en") -> str:
    """The report as one HTML file: charts embedded as data: URIs."""
    lang = _lang(report, locale)
    charts = _charts(report, targets, lang)
    sources = {name: "data:image/png;base64," + base64.b64encode(png).decode() if png else None
               for name, png in charts.items()}
    return _render(report, title, targets, sources, lang)


def render_email_parts(report: dict[str, Any], *, title: str | None = None,
                       targets: dict[str, float] | None = None, locale: str = "en"
                       ) -> tuple[str, dict[str, bytes]]:
    """The report for a mail: HTML whose images are `cid:` references, and the PNG of each
    Content-ID (without angle brackets)."""
    lang = _lang(report, locale)
    charts = _charts(report, targets, lang)
    sources = {name: f"cid:{_cid(name)}" if png else None for name, png in charts.items()}
    images = {_cid(name): png for name, png in charts.items() if png}
    return _render(report, title, targets, sources, lang), images


def render_text(report: dict[str, Any], *, title: str | None = None,
                targets: dict[str, float] | None = None, locale: str = "en") -> str:
    """The plain-text summary: the mail's first part, for clients that show no HTML."""
    lang = _lang(report, locale)
    _ = lang.gettext
    context = _context(report, title, targets, {}, lang)
    lines = [clean(context["title"]), _text_period(report["period"], lang)]
    lines += [servers, ""] if (servers := servers_label(report["period"], lang)) else [""]
    for tile in context["tiles"]:
        lines += _text_tile(tile, context["previous_label"], lang)
    lines += ["", _("Calls: %(outcomes)s", outcomes=lang.comma.join(
        f"{value} {label}" for label, value in context["outcomes"]))]
    if context["restart_note"]:
        lines.append("  " + context["restart_note"])
    for name, row in sorted(report["queues"].items()):
        lines.append(_("Queue %(name)s: %(offered)s offered, SL %(sl)s, ASA %(asa)s, "
                       "abandoned %(abandoned)s", name=isolate_text(name),
                       offered=lang.count(row["offered"]), sl=lang.pct(row["service_level_pct"]),
                       asa=lang.duration(row["asa_s"]),
                       abandoned=lang.pct(row["abandon_rate_pct"])))
    lines += _text_survey(report["survey"], lang)
    warnings = agent_warnings(report["warnings"], lang, isolate_text)
    if warnings:
        lines += ["", *warnings]
    return "\n".join(lines).replace(NBSP, " ") + "\n"  # plain text: plain spaces


def _text_tile(tile: Tile, previous_label: str, lang: Lang) -> list[str]:
    """A headline tile as a line of the plain-text summary (and its advice, indented)."""
    _ = lang.gettext
    label = f"{tile.label} {tile.covers}" if tile.covers else tile.label
    line = f"{label}: {tile.value}"
    if tile.met is not None:
        line += " " + (_("(target %(target)s, met)", target=tile.target) if tile.met
                       else _("(target %(target)s, missed)", target=tile.target))
    if tile.change:
        line += _("; %(before)s: %(value)s, %(change)s", before=previous_label,
                  value=tile.previous, change=tile.change)
    line += "".join(_("; %(note)s", note=note) for note in tile.notes)
    return [line, "  " + tile.advice] if tile.advice else [line]


def _text_survey(survey: dict[str, Any], lang: Lang) -> list[str]:
    """The survey in a line, with the answers it does not count; nothing without answers."""
    if not survey["surveys"] and not survey.get("repeat_surveys"):
        return []
    line = lang.gettext("Survey: %(surveys)s surveys, %(incomplete)s incomplete",
                        surveys=lang.count(survey["surveys"]),
                        incomplete=lang.count(survey["incomplete"]))
    return [line, *("  " + note for note in _survey_notes(survey, lang))]


def subject_line(report: dict[str, Any], *, title: str | None = None,
                 locale: str = "en") -> str:
    lang = _lang(report, locale)
    return f"{clean(_title(title, lang))}: {_text_period(report['period'], lang)}"


def _text_period(period: dict[str, Any], lang: Lang) -> str:
    """The period as plain text: its days, and its queue if it is one queue's."""
    label = _period_label(period, _days(period), lang)
    if period.get("queue"):
        label += lang.gettext(", queue %(name)s", name=isolate_text(period["queue"]))
    return label


def servers_label(period: dict[str, Any], lang: Lang, page: bool = False) -> str:
    """The servers whose calls are in ("servers kept apart" when their queues and agents of
    one name are not merged), names isolated for the page or for plain text; "" when the
    store has no calls yet."""
    servers = period.get("servers") or []
    if not servers:
        return ""
    if page:
        names: str = Markup(escape(lang.comma)).join(isolate(s) for s in servers)
    else:
        names = lang.comma.join(isolate_text(s) for s in servers)
    label = lang.ngettext("server %(names)s", "servers %(names)s", len(servers), names=names)
    if not period.get("servers_merged", True):
        label += escape(" ") + escape(lang.gettext("(kept apart)")) if page else \
            " " + lang.gettext("(kept apart)")
    return label


def _lang(report: dict[str, Any], locale: str) -> Lang:
    return get_lang(locale, report["period"].get("calendar", ""))


def _title(title: str | None, lang: Lang) -> str:
    return title or lang.gettext("Call-center report")


def _charts(report: dict[str, Any], targets: dict[str, float] | None, lang: Lang
            ) -> dict[str, bytes | None]:
    from reports.charts import render_charts  # matplotlib: only when a page is drawn

    return render_charts(report, service_level_target=_targets(targets).get("service_level_pct"),
                         lang=lang)


def _cid(chart: str) -> str:
    return f"{chart}@callkpi"


def _render(report: dict[str, Any], title: str | None, targets: dict[str, float] | None,
            images: dict[str, str | None], lang: Lang) -> str:
    template = _environment(lang.code).get_template("report.html")
    return _inliner.inline(template.render(_context(report, title, targets, images, lang)))


def _context(report: dict[str, Any], title: str | None, targets: dict[str, float] | None,
             images: dict[str, str | None], lang: Lang) -> dict[str, Any]:
    from reports.charts import interval_label  # (matplotlib is loaded by then anyway)

    period, totals = report["period"], report["totals"]
    previous = report["previous_totals"]
    targets = _targets(targets)
    days = _days(period)
    _ = lang.gettext
    agents = sorted(report["agents"].items(), key=lambda item: (-(item[1]["answered"] or 0),
                                                                item[0]))
    trend = [r for r in report.get("intervals", [])
             if period.get("interval") != "hour" or r["offered"]]
    staffing = [r for r in report.get("staffing", [])
                if r.get("offered") or r.get("agents_staffed")]
    warnings = report["warnings"]
    return {
        "lang": lang,
        "t": lang,
        "title": _title(title, lang),
        "period": period,
        "period_label": _period_label(period, days, lang),
        "servers_label": servers_label(period, lang, page=True),
        "days": days,
        "previous_label": _("day before") if days == 1 else lang.ngettext(
            "previous %(num)s day", "previous %(num)s days", days),
        "tiles": [_fcr_tile(report, targets.get(key), lang) if key == "fcr_pct" else
                  _tile(key, _(label), totals.get(key), previous.get(key), targets.get(key),
                        lang) for key, label in HEADLINE],
        "outcomes": [(_(label), lang.count(totals.get(key))) for key, label in OUTCOMES
                     if key not in OPTIONAL_OUTCOMES or totals.get(key)],
        "restart_note": _(
            "Calls talking when the PBX restarted count as answered, their talk time unknown; "
            "callers waiting then, and callers still waiting, are left out of the service "
            "level and the abandon rate.") if any(totals.get(k) for k in UNRATED_OUTCOMES)
        else None,
        "details": [(_(label), lang.fmt(key, totals.get(key)), lang.fmt(key, previous.get(key)))
                    for key, label in DETAILS if key in totals],
        "queues": sorted(report["queues"].items()),
        "agents": agents,
        "survey": report["survey"],
        "survey_notes": _survey_notes(report["survey"], lang),
        "agent_warnings": agent_warnings(warnings, lang, isolate),
        "staffing_unknown": any(r.get("agents_staffed") is None for r in staffing),
        "totals": totals,
        "settings": report["settings"],
        "images": images,
        "fmt": lang.fmt,
        "trend": [(interval_label(r["start"], period, lang), r) for r in trend],
        "trend_cut": len(trend) > MAX_TABLE_ROWS,
        "staffing": [(interval_label(r["start"], period, lang), r) for r in staffing],
        "staffing_cut": len(staffing) > MAX_TABLE_ROWS,
        "question_kinds": {kind: _(label) for kind, label in QUESTION_KINDS.items()},
        "generated": _generated(period["generated_at"], lang),
    }


def _tile(key: str, label: str, value: float | None, previous: float | None,
          target: float | None, lang: Lang) -> Tile:
    lower = lower_is_better(key)
    met = None if value is None or target is None else (
        value <= target if lower else value >= target)
    # compared as shown, so an unchanged "81.2 %" is never coloured better or worse
    delta = None if value is None or previous is None else round(
        value - previous, 1 if key.endswith("_pct") else 0)
    return Tile(
        key=key, label=label, value=lang.fmt(key, value),
        target=_shown_target(key, target, lang), met=met, previous=lang.fmt(key, previous),
        change=None if delta is None else lang.signed(key, delta),
        improved=None if not delta else (delta < 0) == lower,
        advice=lang.gettext(ADVICE[key]) if met is False and key in ADVICE else None,
    )


def _fcr_tile(report: dict[str, Any], target: float | None, lang: Lang) -> Tile:
    """FCR is known only once every first contact's repeat window is over (docs/kpis.md,
    rule 18), and a figure with contacts still pending would read low: the tile shows the
    period's figure when none is pending, else the latest settled days' figure labelled
    with their dates, else "pending" and the day it will be known; the survey's beside."""
    _ = lang.gettext
    totals, label = report["totals"], _("FCR")
    value, pending = totals.get("fcr_pct"), totals.get("fcr_pending") or 0
    survey = _("survey: %(value)s", value=lang.pct(totals.get("fcr_survey_pct")))
    if value is not None or not pending:
        tile = _tile("fcr_pct", label, value, report["previous_totals"].get("fcr_pct"),
                     target, lang)
        return replace(tile, notes=(survey,))
    known = fcr_known(report["period"], report["settings"], lang)
    settled = report.get("fcr_settled") or {}
    if settled.get("fcr_pct") is None:
        return replace(_tile("fcr_pct", label, None, None, target, lang), value=_("pending"),
                       pending=True, previous=None, notes=(lang.ngettext(
                           "%(num)s first contact, known on %(day)s",
                           "%(num)s first contacts, known on %(day)s", pending, day=known),
                           survey))
    first, last = (dt.date.fromisoformat(settled[k]) for k in ("from", "to"))
    tile = _tile("fcr_pct", label, settled["fcr_pct"], None, target, lang)
    return replace(tile, previous=None, covers=_("for %(days)s (settled)", days=lang.days(
        first, last)), notes=(survey, lang.ngettext(
            "%(num)s first contact of this period pending, known on %(day)s",
            "%(num)s first contacts of this period pending, known on %(day)s", pending,
            day=known)))


def _survey_notes(survey: dict[str, Any], lang: Lang) -> list[str]:
    """The survey answers CSAT and FCR leave out (docs/kpis.md, rule 16)."""
    notes = []
    if survey.get("orphans"):
        notes.append(lang.ngettext(
            "%(num)s answer is not matched to a queue call yet: counted here, not in CSAT "
            "or FCR.", "%(num)s answers are not matched to a queue call yet: counted here, "
            "not in CSAT or FCR.", survey["orphans"]))
    if survey.get("repeat_surveys"):
        notes.append(lang.ngettext(
            "%(num)s answer came from a second survey of the same call: not counted.",
            "%(num)s answers came from a second survey of the same call: not counted.",
            survey["repeat_surveys"]))
    return notes


def _shown_target(key: str, target: float | None, lang: Lang) -> str | None:
    """"≥ 80.0 %", "≤ 20 s"; None without a target."""
    if target is None:
        return None
    shown = lang.fmt(key, target)
    return (lang.gettext("≤ %(value)s", value=shown) if lower_is_better(key)
            else lang.gettext("≥ %(value)s", value=shown))


def lower_is_better(key: str) -> bool:
    return key.endswith("_s") or key in LOWER_BETTER_PCT


# English formatting, kept as plain functions for the callers that have no language
fmt = get_lang().fmt
pct = get_lang().pct
count = get_lang().count
duration = get_lang().duration


def _targets(targets: dict[str, float] | None) -> dict[str, float]:
    return ReportConfig().targets if targets is None else targets


def _days(period: dict[str, Any]) -> int:
    first, last = (dt.date.fromisoformat(period[k]) for k in ("from", "to"))
    return (last - first).days + 1


def _generated(iso: str, lang: Lang) -> str:
    """When the report was made, in the report's calendar: "2026-11-25T06:00:02+01:00",
    "۴ آذر ۱۴۰۵ ۰۶:۰۰ (+01:00)"."""
    if not lang.rtl and lang.calendar != JALALI:
        return iso
    moment = dt.datetime.fromisoformat(iso)
    return (f"{lang.day_month(moment.date())} {lang.year(moment.date())} "
            f"{lang.time(moment)} ({lang.digits(iso[19:])})")


def _period_label(period: dict[str, Any], days: int, lang: Lang) -> str:
    first, last = (dt.date.fromisoformat(period[k]) for k in ("from", "to"))
    return lang.day(first) if days == 1 else lang.day_range(first, last)


__all__ = ["DASH", "render_html", "render_email_parts", "render_text", "subject_line",
           "fmt", "pct", "count", "duration", "lower_is_better", "isolate", "clean"]
