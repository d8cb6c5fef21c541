"""The report's charts as PNG bytes (e-mail clients block SVG).

matplotlib's object API on the Agg canvas: no pyplot, so no global figure state and no GUI
backend; only the HTML/e-mail job imports this module (matplotlib is slow to import:
docs/reports.md).
Charts are drawn at twice the size they are shown so they stay sharp on phone screens.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# 1000 x 460 px, shown at 600 px wide (see templates/report.html)
SIZE_IN = (5.0, 2.3)
DPI = 200
MIN_HOURS = 8
FONT = 9  # points: 15 px on the image shown 600 px wide, 9 px on a phone
OFFERED, ANSWERED, LEVEL, ABANDON, TARGET, GRID, INK = (
    "#93c5fd", "#1d4ed8", "#ea580c", "#dc2626", "#6b7280", "#e5e7eb", "#374151")


def render_charts(charts: dict[str, Any], *, service_level_target: float | None = None
                  ) -> dict[str, bytes | None]:
    """PNG bytes of each chart of a report's `charts` section; None where there is no call
    to draw (the template says so in words instead of showing an empty frame)."""
    return {
        "hourly": hourly_chart(charts.get("hourly", []), service_level_target),
        "wait_histogram": wait_histogram_chart(charts.get("wait_histogram", [])),
        "abandon_curve": abandon_curve_chart(charts.get("abandon_curve", [])),
    }


def hourly_chart(rows: Sequence[dict[str, Any]], service_level_target: float | None = None
                 ) -> bytes | None:
    """Offered and answered calls per hour (bars) and the service level (line, right axis)."""
    busy = [r["hour"] for r in rows if r["offered"]]
    if not busy:
        return None
    first, last = _working_day(min(busy), max(busy))
    rows = [r for r in rows if first <= r["hour"] <= last]
    hours = [r["hour"] for r in rows]
    fig, ax = _figure()
    ax.bar(hours, [r["offered"] for r in rows], width=0.8, color=OFFERED, label="offered")
    ax.bar(hours, [r["answered"] for r in rows], width=0.5, color=ANSWERED, label="answered")
    step = 1 if len(hours) <= 12 else 2
    ax.set_xticks(hours[::step], [f"{h:02d}" for h in hours[::step]])
    ax.set_xlim(first - 0.6, last + 0.6)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_xlabel("hour", fontsize=FONT)
    ax.set_ylabel("calls", fontsize=FONT)
    level = ax.twinx()
    level.plot(hours, [_nan(r["service_level_pct"]) for r in rows], color=LEVEL, marker="o",
               markersize=3, linewidth=1.8, label="service level %")
    if service_level_target is not None:
        level.axhline(service_level_target, color=TARGET, linestyle="--", linewidth=1,
                      label="SL target")
    level.set_ylim(0, 105)
    level.set_ylabel("service level %", fontsize=FONT)
    level.tick_params(labelsize=FONT, colors=INK)
    level.spines[["top", "left", "bottom"]].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + level.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", ncols=4, frameon=False, fontsize=8,
              bbox_to_anchor=(0, 1.2))
    return _png(fig)


def wait_histogram_chart(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Queue calls by how long they waited, in the report's buckets."""
    if not any(r["calls"] for r in rows):
        return None
    fig, ax = _figure()
    labels = [_bucket_label(r["from_s"], r["to_s"]) for r in rows]
    positions = range(len(rows))
    ax.bar(positions, [r["calls"] for r in rows], width=0.75, color=ANSWERED)
    ax.set_xticks(positions, labels)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.set_xlabel("wait (seconds)", fontsize=FONT)
    ax.set_ylabel("calls", fontsize=FONT)
    return _png(fig)


def abandon_curve_chart(rows: Sequence[dict[str, Any]]) -> bytes | None:
    """Of the callers who abandoned, the share who had hung up by each wait time."""
    if all(r["abandoned_pct"] is None for r in rows):  # nobody abandoned
        return None
    fig, ax = _figure()
    waits = [r["wait_s"] for r in rows]
    ax.plot(waits, [_nan(r["abandoned_pct"]) for r in rows], color=ABANDON, marker="o",
            markersize=3, linewidth=1.8)
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.set_xlabel("wait (seconds)", fontsize=FONT)
    ax.set_ylabel("% of abandons", fontsize=FONT)
    return _png(fig)


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=FONT, colors=INK)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def _working_day(first: int, last: int) -> tuple[int, int]:
    """The hours to show: those with calls, widened to MIN_HOURS (within 0..23) so that
    a lone busy hour is not one bar as wide as the chart."""
    first = max(0, first - max(0, MIN_HOURS - (last - first + 1)) // 2)
    last = min(23, max(last, first + MIN_HOURS - 1))
    return max(0, min(first, last - MIN_HOURS + 1)), last


def _bucket_label(from_s: float, to_s: float | None) -> str:
    return f"{from_s:g}+" if to_s is None else f"{from_s:g}–{to_s:g}"


def _nan(value: float | None) -> float:
    """matplotlib leaves a gap at NaN: an hour without calls has no service level."""
    return math.nan if value is None else value
