"""The report's charts: real PNGs with something drawn, none for a period without calls,
matplotlib only through its object API, loaded only when a chart is drawn; the service-level
target in its own panel, bars clear of the frame; Persian text shaped and ordered right to
left with the shipped font (no missing glyph) and Persian digits on the axes."""

import io
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.font_manager import FontProperties, fontManager, get_font
from matplotlib.ft2font import LoadFlags
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image

from report_fixture import empty_report, kpis, make_report
from reports import charts as c
from reports.charts import (_fonts, _working_day, abandon_curve_chart, hourly_chart,
                            hourly_figure, render_charts, staffing_figure, trend_figure,
                            wait_histogram_chart)
from reports.i18n import lang

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EN, FA = lang("en"), lang("fa", "jalali")


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC
    return struct.unpack(">II", png[16:24])


def distinct_colours(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None  # None: more colours than maxcolors
    return len(colours)


def week_report(**period) -> dict:
    """Seven days, one interval a day, with staffing numbers."""
    report = make_report()
    report["period"] |= {"from": "2026-11-21", "to": "2026-11-27", "interval": "day",
                         "calendar": "jalali"} | period
    report["intervals"] = [
        {"start": f"2026-11-{day}T00:00:00+03:30",
         **kpis(offered=300 + day, answered=280, service_level_pct=70.0 + day % 5,
                aht_s=280.0 + day), "agents_needed": 9 + day % 3,
         "agents_staffed": 8.5 + day % 2}
        for day in range(21, 28)]
    return report


def test_every_chart_is_a_png_twice_the_size_it_is_shown():
    charts = render_charts(week_report(), service_level_target=80.0)
    sizes = {"hourly": (1000, 560), "wait_histogram": (1000, 460),
             "abandon_curve": (1000, 460), "trend": (1000, 720), "staffing": (1000, 520)}
    assert {name: png_size(png) for name, png in charts.items()} == sizes
    for png in charts.values():
        assert distinct_colours(png) > 20  # bars, lines, anti-aliased text: not a blank frame


def test_the_service_level_target_is_drawn_in_its_own_panel_away_from_the_bars():
    rows = make_report()["charts"]["hourly"]
    assert hourly_chart(rows, 80.0) != hourly_chart(rows, None)
    level, calls = hourly_figure(rows, 80.0, EN).axes[:2]
    dashed = [line for line in level.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == [80.0]
    assert not [line for line in calls.get_lines() if isinstance(line, Line2D)]
    assert [p for p in calls.patches if isinstance(p, Rectangle)]  # the bars are here


@pytest.mark.parametrize("figure", [
    lambda: hourly_figure(make_report()["charts"]["hourly"], 80.0, EN),
    lambda: trend_figure(week_report()["intervals"], week_report()["period"], 80.0, EN),
    lambda: staffing_figure(week_report()["intervals"], week_report()["period"], EN),
])
def test_bars_never_touch_the_frame(figure):
    for ax in figure().axes:
        bottom, top = ax.get_ylim()
        left, right = ax.get_xlim()
        for bar in ax.patches:
            if bar.get_height() <= 0 or bar.get_width() >= right - left:
                continue  # (an empty bar; a shaded background span)
            assert bar.get_y() + bar.get_height() < top - 0.1 * (top - bottom)
            assert left < bar.get_x() and bar.get_x() + bar.get_width() < right


def test_an_hour_without_service_level_is_a_gap_not_a_crash():
    rows = [{"hour": 9, "offered": 3, "answered": 0, "service_level_pct": None},
            {"hour": 10, "offered": 0, "answered": 0, "service_level_pct": None},
            {"hour": 11, "offered": 5, "answered": 5, "service_level_pct": 100.0}]
    assert png_size(hourly_chart(rows, 80.0)) == (1000, 560)


def test_a_period_without_calls_has_no_charts():
    assert render_charts(empty_report()) == {
        "hourly": None, "wait_histogram": None, "abandon_curve": None, "trend": None,
        "staffing": None}
    assert hourly_chart([]) is None
    assert wait_histogram_chart([]) is None
    assert abandon_curve_chart([]) is None
    assert abandon_curve_chart([{"wait_s": 0, "abandoned_pct": None}]) is None


def test_an_open_ended_bucket_and_a_single_point():
    rows = [{"from_s": 0, "to_s": None, "calls": 4}]
    assert png_size(wait_histogram_chart(rows)) == (1000, 460)
    assert png_size(abandon_curve_chart([{"wait_s": 0, "abandoned_pct": 100.0}])) == (1000, 460)


def test_the_trend_is_drawn_for_several_days_not_for_one_days_hours():
    assert render_charts(make_report())["trend"] is None  # one day, per hour: the hourly chart
    assert render_charts(week_report())["trend"] is not None
    report = week_report()
    report["intervals"] = report["intervals"][:1]
    assert render_charts(report)["trend"] is None  # one interval is no trend


def test_the_hourly_chart_of_several_days_says_it_adds_them_up():
    figure = hourly_figure(make_report()["charts"]["hourly"], 80.0, EN, days=7)
    assert figure.axes[1].get_ylabel() == "calls (7 days added up)"


def test_fridays_are_the_weekend_of_a_jalali_trend_saturday_and_sunday_otherwise():
    def shaded(report: dict, language) -> list[int]:
        figure = trend_figure(report["intervals"], report["period"], 80.0, language)
        assert figure is not None
        spans = [p for p in figure.axes[-1].patches
                 if isinstance(p, Rectangle) and p.get_width() == 1.0]
        return sorted(round(p.get_x() + 0.5) for p in spans)

    # 21 Nov 2026 is a Saturday: Friday is the 7th day, Saturday and Sunday the 1st and 2nd
    assert shaded(week_report(), FA) == [6]
    assert shaded(week_report(calendar="gregorian"), lang("en", "gregorian")) == [0, 1]


def test_no_staffing_chart_without_staffing_numbers():
    assert render_charts(make_report())["staffing"] is None


def test_staffing_the_log_cannot_tell_is_never_drawn_as_zero_or_short():
    def short_spans(figure) -> int:
        return sum(1 for p in figure.axes[0].patches
                   if isinstance(p, Rectangle) and p.get_width() == 1.0)

    report = week_report()
    known = staffing_figure(report["intervals"], report["period"], EN)
    assert short_spans(known) == 5  # 9 + day % 3 needed against 8.5 + day % 2 staffed
    for row in report["intervals"]:
        row["agents_staffed"] = None  # no login seen in the whole period
    unknown = staffing_figure(report["intervals"], report["period"], EN)
    assert short_spans(unknown) == 0
    assert not [p for p in unknown.axes[0].patches if p.get_width() < 1.0]  # no bar at all
    assert [t.get_text() for t in unknown.legends[0].get_texts()] == [
        "agents staffed: unknown", "agents needed", "short-staffed"]


def chart_texts(figure) -> list[str]:
    texts = [figure.axes[0].get_ylabel()]
    for ax in figure.axes:
        texts += [ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    for legend in figure.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    return [t for t in texts if t]


def persian_figures() -> list:
    report = week_report()
    with _fonts():
        return [hourly_figure(report["charts"]["hourly"], 80.0, FA, days=7),
                trend_figure(report["intervals"], report["period"], 80.0, FA),
                staffing_figure(report["intervals"], report["period"], FA)]


def test_persian_charts_speak_persian_with_persian_digits():
    for figure in persian_figures():
        figure.canvas.draw()  # tick labels are made when drawn
        texts = chart_texts(figure)
        assert texts and not [t for t in texts if re.search(r"[0-9A-Za-z]", t)], texts
        assert any(re.search(r"[۰-۹]", t) for t in texts)


def test_persian_chart_text_has_every_glyph_and_runs_right_to_left():
    """What the renderer lays out: no glyph is the font's "missing" box (tofu), and the
    first letter of a Persian label is drawn right of its last."""
    with _fonts():
        font = get_font(fontManager._find_fonts_by_props(FontProperties(family="Vazirmatn")))
    font.set_size(9, 200)
    assert Path(font.fname).name.startswith("Vazirmatn")
    for figure in persian_figures():
        figure.canvas.draw()
        for text in chart_texts(figure):
            glyphs = font._layout(text, LoadFlags.NO_HINTING)
            assert all(g.glyph_index != 0 for g in glyphs), f"tofu in {text!r}"
    glyphs = font._layout("ساعت روز", LoadFlags.NO_HINTING)
    x = {g.char: g.x for g in glyphs}
    assert x["س"] > x["ز"]  # "س" starts the label: rightmost


def test_matplotlib_is_loaded_only_to_draw_and_never_pyplot():
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import reports.render_html as r\n"
        "assert 'matplotlib' not in sys.modules, 'imported with the renderer'\n"
        "from report_fixture import make_report\n"
        "r.render_html(make_report())\n"
        "assert 'matplotlib' in sys.modules\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr


def test_the_shipped_font_comes_with_its_licence():
    fonts = Path(c.__file__).parent / "fonts"
    assert sorted(p.name for p in fonts.glob("*.ttf")) == ["Vazirmatn-Bold.ttf",
                                                           "Vazirmatn-Regular.ttf"]
    assert "SIL OPEN FONT LICENSE Version 1.1" in (fonts / "OFL.txt").read_text()


@pytest.mark.parametrize("busy, shown", [
    ((3, 3), (0, 7)), ((23, 23), (16, 23)), ((12, 12), (9, 16)), ((0, 23), (0, 23)),
    ((8, 17), (8, 17)), ((8, 9), (5, 12))])
def test_the_hours_shown_are_the_busy_ones_at_least_eight(busy, shown):
    assert _working_day(*busy) == shown
