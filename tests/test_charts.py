"""The report's charts: real PNGs with something drawn, none for a period without calls, and
matplotlib only through its object API, loaded only when a chart is drawn."""

import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from report_fixture import empty_report, make_report
from reports.charts import (_working_day, abandon_curve_chart, hourly_chart, render_charts,
                            wait_histogram_chart)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC
    return struct.unpack(">II", png[16:24])


def distinct_colours(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None  # None: more colours than maxcolors
    return len(colours)


def test_every_chart_is_a_png_twice_the_size_it_is_shown():
    charts = render_charts(make_report()["charts"], service_level_target=80.0)
    assert set(charts) == {"hourly", "wait_histogram", "abandon_curve"}
    for png in charts.values():
        assert png_size(png) == (1000, 460)  # shown 600 px wide (max-width 608 px)
        assert distinct_colours(png) > 20  # bars, lines, anti-aliased text: not a blank frame


def test_the_service_level_target_is_drawn():
    rows = make_report()["charts"]["hourly"]
    assert hourly_chart(rows, 80.0) != hourly_chart(rows, None)


def test_an_hour_without_service_level_is_a_gap_not_a_crash():
    rows = [{"hour": 9, "offered": 3, "answered": 0, "service_level_pct": None},
            {"hour": 10, "offered": 0, "answered": 0, "service_level_pct": None},
            {"hour": 11, "offered": 5, "answered": 5, "service_level_pct": 100.0}]
    assert png_size(hourly_chart(rows, 80.0)) == (1000, 460)


def test_a_period_without_calls_has_no_charts():
    assert render_charts(empty_report()["charts"]) == {
        "hourly": None, "wait_histogram": None, "abandon_curve": None}
    assert hourly_chart([]) is None
    assert wait_histogram_chart([]) is None
    assert abandon_curve_chart([]) is None
    assert abandon_curve_chart([{"wait_s": 0, "abandoned_pct": None}]) is None


def test_an_open_ended_bucket_and_a_single_point():
    rows = [{"from_s": 0, "to_s": None, "calls": 4}]
    assert png_size(wait_histogram_chart(rows)) == (1000, 460)
    assert png_size(abandon_curve_chart([{"wait_s": 0, "abandoned_pct": 100.0}])) == (1000, 460)


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


@pytest.mark.parametrize("busy, shown", [
    ((3, 3), (0, 7)), ((23, 23), (16, 23)), ((12, 12), (9, 16)), ((0, 23), (0, 23)),
    ((8, 17), (8, 17)), ((8, 9), (5, 12))])
def test_the_hours_shown_are_the_busy_ones_at_least_eight(busy, shown):
    assert _working_day(*busy) == shown
