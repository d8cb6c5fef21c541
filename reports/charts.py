"""The report's charts as PNG bytes (e-mail clients block SVG).

matplotlib's object API on the Agg canvas: no pyplot, so no global figure state and no GUI
backend; only the HTML/e-mail job imports this module (matplotlib is slow to import:
docs/reports.md).
Charts are drawn at twice the size they are shown so they stay sharp on phone screens.

Text is drawn with Vazirmatn (shipped in reports/fonts/ with its licence), so a PNG looks the
same whichever machine drew it. matplotlib (3.11 and later) lays text out with libraqm:
Persian letters are joined and right-to-left runs ordered by the renderer itself, so text is
handed to it in logical order; axis numbers are written in the language's digits. Time still
runs left to right on every axis, as on a Persian clock or calendar chart.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from reports.calendar import is_weekend
from reports.i18n import Lang, lang as get_lang

WIDTH_IN = 5.0  # 1000 px at DPI, shown 600 px wide (see templates/report.html)
SIZE_IN = (WIDTH_IN, 2.3)
DPI = 200
MIN_HOURS = 8
FONT = 9  # points: 15 px on the image shown 600 px wide, 9 px on a phone
HEADROOM = 0.15  # of the tallest bar: space between it and the top of its panel
OFFERED, ANSWERED, LEVEL, ABANDON, TARGET, GRID, INK, AHT, WEEKEND, NEEDED, SHORT = (
    "#93c5fd", "#1d4ed8", "#ea580c", "#dc2626", "#6b7280", "#e5e7eb", "#374151", "#7c3aed",
    "#f3f4f6", "#b91c1c", "#fecaca")
FONT_DIR = Path(__file__).parent / "fonts"
FONT_FAMILY = "Vazirmatn"
MAX_TREND_LABELS = 16


def render_charts(report: dict[str, Any], *, service_level_target: float | None = None,
                  lang: Lang | None = None) -> dict[str, bytes | None]:
    """PNG bytes of each chart of a report; None where there is nothing to draw (the
    template says so in words instead of showing an empty frame)."""
    lang = lang or get_lang()
    charts, intervals = report["charts"], report.get("intervals", [])
    days = _days(report["period"])
    with _fonts():
        return {
            "hourly": hourly_chart(charts.get("hourly", []), service_level_target, lang, days),
            "wait_histogram": wait_histogram_chart(charts.get("wait_histogram", []), lang),
            "abandon_curve": abandon_curve_chart(charts.get("abandon_curve", []), lang),
            "trend": trend_chart(intervals, report["period"], service_level_target, lang)
            if shows_trend_chart(report) else None,
            "staffing": staffing_chart(intervals, report["period"], lang),
        }


def shows_trend_chart(report: dict[str, Any]) -> bool:
    """A trend needs two intervals; one day's hours are the hourly chart already."""
    period = report["period"]
    return len(report.get("intervals", [])) > 1 and not (
        period.get("interval") == "hour" and _days(period) == 1)


# ------------------------------------------------------------------------ the charts
def hourly_chart(rows: Sequence[dict[str, Any]], service_level_target: float | None = None,
                 lang: Lang | None = None, days: int = 1) -> bytes | None:
    fig = hourly_figure(rows, service_level_target, lang or get_lang(), days)
    return None if fig is None else _png(fig)


def hourly_figure(rows: Sequence[dict[str, Any]], service_level_target: float | None,
                  lang: Lang, days: int = 1) -> Figure | None:
    """Offered and answered calls per hour of the day (bars; summed over the days of the
    period) under the service level per hour (line, its own panel with the target)."""
    busy = [r["hour"] for r in rows if r["offered"]]
    if not busy:
        return None
    first, last = _working_day(min(busy), max(busy))
    rows = [r for r in rows if first <= r["hour"] <= last]
    hours = [r["hour"] for r in rows]
    fig, (level, calls) = _panels(lang, 2.8, (1, 2))
    _service_level(level, hours, [r["service_level_pct"] for r in rows],
                   service_level_target, lang)
    _bars(calls, hours, [r["offered"] for r in rows], [r["answered"] for r in rows], lang)
    step = 1 if len(hours) <= 12 else 2
    calls.set_xticks(hours[::step], [lang.digits(f"{h:02d}") for h in hours[::step]])
    calls.set_xlim(first - 0.6, last + 0.6)
    calls.set_xlabel(_t(lang, "hour of the day"), fontsize=FONT)
    calls.set_ylabel(_t(lang, "calls") if days == 1 else _shape(
        lang, lang.ngettext("calls (%(num)s day)", "calls (%(num)s days added up)", days)),
        fontsize=FONT)
    _legend(fig, [level, calls], lang)
    return fig


def wait_histogram_chart(rows: Sequence[dict[str, Any]], lang: Lang | None = None
                         ) -> bytes | None:
    """Queue calls by how long they waited, in the report's buckets."""
    lang = lang or get_lang()
    if not any(r["calls"] for r in rows):
        return None
    fig, ax = _figure(lang)
    labels = [_bucket_label(r["from_s"], r["to_s"], lang) for r in rows]
    positions = range(len(rows))
    ax.bar(positions, [r["calls"] for r in rows], width=0.75, color=ANSWERED)
    ax.set_xticks(positions, labels)
    _headroom(ax, [r["calls"] for r in rows])
    ax.set_xlabel(_t(lang, "wait (seconds)"), fontsize=FONT)
    ax.set_ylabel(_t(lang, "calls"), fontsize=FONT)
    return _png(fig)


def abandon_curve_chart(rows: Sequence[dict[str, Any]], lang: Lang | None = None
                        ) -> bytes | None:
    """Of the callers who abandoned, the share who had hung up by each wait time."""
    lang = lang or get_lang()
    if all(r["abandoned_pct"] is None for r in rows):  # nobody abandoned
        return None
    fig, ax = _figure(lang)
    waits = [r["wait_s"] for r in rows]
    ax.plot(waits, [_nan(r["abandoned_pct"]) for r in rows], color=ABANDON, marker="o",
            markersize=3, linewidth=1.8)
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.set_xlabel(_t(lang, "wait (seconds)"), fontsize=FONT)
    ax.set_ylabel(_t(lang, "% of abandons"), fontsize=FONT)
    return _png(fig)


def trend_chart(intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                service_level_target: float | None, lang: Lang | None = None) -> bytes | None:
    fig = trend_figure(intervals, period, service_level_target, lang or get_lang())
    return None if fig is None else _png(fig)


def trend_figure(intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                 service_level_target: float | None, lang: Lang) -> Figure | None:
    """Per interval: service level (with its target), AHT in minutes, offered and answered."""
    if not any(r["offered"] for r in intervals):
        return None
    x = list(range(len(intervals)))
    fig, (level, aht, calls) = _panels(lang, 3.6, (1, 1, 2))
    _service_level(level, x, [r["service_level_pct"] for r in intervals],
                   service_level_target, lang)
    aht.plot(x, [_nan(r["aht_s"] and r["aht_s"] / 60) for r in intervals], color=AHT,
             marker="o", markersize=3, linewidth=1.8, label=_t(lang, "AHT (minutes)"))
    aht.set_ylim(bottom=0)
    aht.margins(y=HEADROOM)
    aht.yaxis.set_major_locator(MaxNLocator(nbins=3))
    _bars(calls, x, [r["offered"] for r in intervals], [r["answered"] for r in intervals], lang)
    _interval_axis(calls, intervals, period, lang)
    for panel in (level, aht, calls):
        _shade_weekends(panel, intervals, period, lang)
    _legend(fig, [level, aht, calls], lang)
    return fig


def staffing_chart(intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                   lang: Lang | None = None) -> bytes | None:
    fig = staffing_figure(intervals, period, lang or get_lang())
    return None if fig is None else _png(fig)


def staffing_figure(intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                    lang: Lang) -> Figure | None:
    """Agents needed for the service-level target (Erlang C) against the agents staffed
    (logged in and not paused, on average), per interval; short intervals shaded. Staffing
    the log cannot tell (no login seen) is unknown: no bar, never short, said so in the
    legend."""
    if not any(r.get("agents_needed") or r.get("agents_staffed") for r in intervals):
        return None
    x = list(range(len(intervals)))
    needed = [_nan(r.get("agents_needed")) for r in intervals]
    had = [_nan(r.get("agents_staffed")) for r in intervals]
    fig, ax = _figure(lang, 2.6)
    for i, (n, h) in enumerate(zip(needed, had)):
        if h < n:  # (False when either is unknown)
            ax.axvspan(i - 0.5, i + 0.5, color=SHORT, linewidth=0, zorder=0)
    if all(math.isnan(h) for h in had):
        ax.plot([], [], " ", label=_t(lang, "agents staffed: unknown"))
    else:
        ax.bar(x, [0 if math.isnan(h) else h for h in had], width=0.7, color=OFFERED,
               label=_t(lang, "agents staffed"))
    ax.step(x, needed, where="mid", color=NEEDED, linewidth=1.8,
            label=_t(lang, "agents needed"))
    ax.plot([], [], color=SHORT, linewidth=6, label=_t(lang, "short-staffed"))
    _headroom(ax, [v for v in needed + had if not math.isnan(v)])
    ax.set_ylabel(_t(lang, "agents"), fontsize=FONT)
    _interval_axis(ax, intervals, period, lang)
    _legend(fig, [ax], lang)
    return fig


# ------------------------------------------------------------------------ parts
def _panels(lang: Lang, height_in: float, ratios: tuple[int, ...]) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(len(ratios), 1, sharex=True,
                             gridspec_kw={"height_ratios": ratios}))
    for ax in axes:
        _style(ax, lang)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    return fig, axes


def _figure(lang: Lang, height_in: float = SIZE_IN[1]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _style(ax, lang)
    return fig, ax


def _style(ax: Axes, lang: Lang) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=FONT, colors=INK)
    digits = FuncFormatter(lambda value, _pos: _number(value, lang))
    ax.yaxis.set_major_formatter(digits)
    ax.xaxis.set_major_formatter(digits)


def _service_level(ax: Axes, x: Sequence[float], values: Sequence[float | None],
                   target: float | None, lang: Lang) -> None:
    """The service level in its own panel, so its target line never crosses a call bar."""
    ax.plot(x, [_nan(v) for v in values], color=LEVEL, marker="o", markersize=3,
            linewidth=1.8, label=_t(lang, "service level %"))
    if target is not None:
        ax.axhline(target, color=TARGET, linestyle="--", linewidth=1,
                   label=_t(lang, "SL target"))
    ax.set_ylim(0, 110)
    ax.set_yticks([0, 50, 100])
    ax.set_ylabel("%", fontsize=FONT)


def _bars(ax: Axes, x: Sequence[float], offered: Sequence[int], answered: Sequence[int],
          lang: Lang) -> None:
    ax.bar(x, offered, width=0.8, color=OFFERED, label=_t(lang, "offered"))
    ax.bar(x, answered, width=0.5, color=ANSWERED, label=_t(lang, "answered"))
    _headroom(ax, offered)


def _headroom(ax: Axes, heights: Sequence[float]) -> None:
    """Integer ticks and a gap above the tallest bar, so no bar touches the frame."""
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_ylim(0, max(max(heights, default=0), 1) * (1 + HEADROOM))


def _interval_axis(ax: Axes, intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                   lang: Lang) -> None:
    x = list(range(len(intervals)))
    step = max(1, math.ceil(len(x) / MAX_TREND_LABELS))
    labels = [_shape(lang, interval_label(r["start"], period, lang, short=True))
              for r in intervals]
    ax.set_xticks(x[::step], labels[::step], rotation=90 if len(x[::step]) > 7 else 0)
    ax.set_xlim(-0.6, len(x) - 0.4)


def interval_label(start: str, period: dict[str, Any], lang: Lang, short: bool = False) -> str:
    """An interval as its reader names it: "10:00", "Tue 24 Nov", "week from Sat 28 Nov",
    "November 2026" (Jalali: "آذر ۱۴۰۵"); `short` for an axis: "24 Nov", "28 Nov"."""
    moment = dt.datetime.fromisoformat(start)
    day, interval = moment.date(), period.get("interval")
    if interval == "hour":
        clock = lang.time(moment)
        return clock if _days(period) == 1 else f"{lang.day_month(day, short=True)} {clock}"
    if interval == "month":
        return lang.month(day)
    if short:
        return lang.day_month(day, short=True)
    if interval == "week":
        return lang.gettext("week from %(day)s", day=lang.short_day(day))
    return lang.short_day(day)


def _shade_weekends(ax: Axes, intervals: Sequence[dict[str, Any]], period: dict[str, Any],
                    lang: Lang) -> None:
    """Days of the weekend (Friday with the Jalali calendar) shaded behind daily trends."""
    if period.get("interval") != "day":
        return
    for i, row in enumerate(intervals):
        if is_weekend(dt.date.fromisoformat(row["start"][:10]), lang.calendar):
            ax.axvspan(i - 0.5, i + 0.5, color=WEEKEND, linewidth=0, zorder=0)


def _legend(fig: Figure, axes: Sequence[Axes], lang: Lang) -> None:
    handles, labels = [], []
    for ax in axes:
        h, l = ax.get_legend_handles_labels()
        handles += h
        labels += l
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4),
               frameon=False, fontsize=8)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


@contextmanager
def _fonts() -> Iterator[None]:
    """Vazirmatn for every text drawn (registered once from the shipped files)."""
    known = {f.fname for f in font_manager.fontManager.ttflist}
    for path in sorted(FONT_DIR.glob("*.ttf")):
        if str(path) not in known:
            font_manager.fontManager.addfont(str(path))
    with matplotlib.rc_context({"font.family": FONT_FAMILY}):
        yield


def _t(lang: Lang, message: str) -> str:
    """A message for matplotlib: translated, digits localised."""
    return _shape(lang, lang.gettext(message))


def _shape(lang: Lang, text: str) -> str:
    """Text as matplotlib is given it: in logical order (it shapes and orders it), digits
    as the language writes them."""
    return lang.digits(text)


def _number(value: float, lang: Lang) -> str:
    return lang.number(value, 0 if float(value).is_integer() else 1)


def _working_day(first: int, last: int) -> tuple[int, int]:
    """The hours to show: those with calls, widened to MIN_HOURS (within 0..23) so that
    a lone busy hour is not one bar as wide as the chart."""
    first = max(0, first - max(0, MIN_HOURS - (last - first + 1)) // 2)
    last = min(23, max(last, first + MIN_HOURS - 1))
    return max(0, min(first, last - MIN_HOURS + 1)), last


def _bucket_label(from_s: float, to_s: float | None, lang: Lang) -> str:
    text = f"{from_s:g}+" if to_s is None else f"{from_s:g}–{to_s:g}"
    return lang.digits(text)


def _days(period: dict[str, Any]) -> int:
    first, last = (dt.date.fromisoformat(period[k]) for k in ("from", "to"))
    return (last - first).days + 1


def _nan(value: float | None) -> float:
    """matplotlib leaves a gap at NaN: an hour without calls has no service level."""
    return math.nan if value is None else value
