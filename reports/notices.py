"""What a reader of the numbers should know beside them, in the report's language: lines the
page, the mail's text and the `report` command share, and the messages `report` and `email`
give the manager who runs them (docs/i18n.md: which command messages are translated)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable
from zoneinfo import ZoneInfo

from reports.i18n import Lang, clean, isolate_text


def in_text(value: Any, lang: Lang) -> str:
    """A path, address or name inside a command's message: bidi controls removed; in a
    right-to-left language set apart, so its left-to-right run keeps its place (in English
    it stays as typed, to be copied)."""
    return isolate_text(value) if lang.rtl else clean(value)


def day_in_text(day: dt.date, lang: Lang) -> str:
    """A day at the start of a command's line: ISO in English (what scripts read), the
    language's own date otherwise ("۳ آذر ۱۴۰۵")."""
    return day.isoformat() if lang.code == "en" else lang.date(day)


def fcr_known(period: dict[str, Any], settings: dict[str, Any], lang: Lang) -> str:
    """When the period's last first contact leaves its repeat window: the period's end plus
    the window, in the report's zone ("28 Nov 2026"; with the time when not at midnight)."""
    moment = dt.datetime.fromisoformat(period["end"]) + dt.timedelta(
        hours=settings["repeat_window_h"])
    try:
        moment = moment.astimezone(ZoneInfo(period["timezone"]))
    except (ValueError, KeyError, OSError):  # an unknown zone: the period's own offset
        pass
    shown = lang.date(moment.date())
    return shown if moment.time() == dt.time() else f"{shown} {lang.time(moment)}"


def agent_warnings(warnings: dict[str, list[str]], lang: Lang,
                   name: Callable[[str], str]) -> list[str]:
    """One line for each thing about the agents the log cannot tell (docs/kpis.md, rules
    14 and 17). `name` isolates a name, a command or a setting: `isolate` for the page
    (the line is then markup), `isolate_text` for plain text."""
    lines = []
    helpers = {"listen": name("callkpi listen"), "setting": name("[agents] names"),
               "file": name("callkpi.toml")}
    unknown = warnings.get("staffed_unknown") or []
    if unknown:
        lines.append(lang.ngettext(
            "Staffed time, occupancy and calls per hour unknown for %(num)s agent: the log "
            "never showed the agent log in during this period (a static member, or one "
            "logged in before the oldest log callkpi read). %(listen)s learns it from "
            "Asterisk.",
            "Staffed time, occupancy and calls per hour unknown for %(num)s agents: the log "
            "never showed them log in during this period (static members, or logged in "
            "before the oldest log callkpi read). %(listen)s learns it from Asterisk.",
            len(unknown), **helpers))
    interfaces = warnings.get("agents_like_interfaces") or []
    if interfaces:
        lines.append(lang.ngettext(
            "%(num)s agent is named by its member interface (%(example)s), so one person can "
            "show as two rows: give it its name in %(setting)s in %(file)s, or run "
            "%(listen)s, which learns the names from Asterisk.",
            "%(num)s agents are named by their member interface (%(example)s), so one person "
            "can show as two rows: give them their names in %(setting)s in %(file)s, or run "
            "%(listen)s, which learns the names from Asterisk.", len(interfaces),
            example=name(interfaces[0]), **helpers))
    return lines


def report_warnings(report: dict[str, Any], lang: Lang) -> list[str]:
    """What `callkpi report` says beside the numbers, for a reader of JSON or CSV (which
    carry no notes): the period not over, callers still waiting, FCR not known yet, the
    agents the log cannot tell about."""
    period, totals = report["period"], report["totals"]
    lines = []
    if dt.datetime.fromisoformat(period["end"]) > dt.datetime.fromisoformat(
            period["generated_at"]):
        lines.append(lang.gettext("The period is not over yet: its figures are still "
                                  "growing."))
    if totals.get("open"):
        lines.append(lang.ngettext(
            "%(num)s caller was still waiting at the latest event in the store: left out of "
            "the service level and the abandon rate until the call ends.",
            "%(num)s callers were still waiting at the latest event in the store: left out "
            "of the service level and the abandon rate until their calls end.",
            totals["open"]))
    if totals.get("fcr_pending"):
        lines.append(lang.ngettext(
            "FCR is not settled: %(num)s first contact is still in its repeat window, known "
            "on %(day)s.",
            "FCR is not settled: %(num)s first contacts are still in their repeat window, "
            "known on %(day)s.", totals["fcr_pending"],
            day=fcr_known(period, report["settings"], lang)))
    lines += agent_warnings(report["warnings"], lang, lambda n: in_text(n, lang))
    return [lang.gettext("Warning: %(text)s", text=line) for line in lines]


def report_written(path: str, lang: Lang) -> str:
    return lang.gettext("report written to %(path)s", path=in_text(path, lang))
