"""The HTML report in a real browser (Playwright driving Debian's Chromium, no browser
download): it draws something at phone and desktop width, the tiles and the three charts are
there, nothing overflows a 390 px phone, and names from the PBX never become markup. The
screenshots stay in the test's tmp directory, to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from browser_fixture import browser, load  # noqa: F401 (browser: a fixture)
from report_fixture import agent, empty_report, kpis, make_report
from reports.render_html import render_html

pytestmark = pytest.mark.browser

PHONE, DESKTOP = 390, 1280
# what the page looks like, measured in the browser (the page itself runs no script)
MEASURE = """() => {
  const right = Math.max(0, ...Array.from(document.body.querySelectorAll('*'),
                                          el => el.getBoundingClientRect().right));
  const withHandlers = Array.from(document.querySelectorAll('*')).filter(
      el => Array.from(el.attributes).some(a => /^on/i.test(a.name)));
  return {
    width: window.innerWidth, scrollWidth: document.documentElement.scrollWidth, right: right,
    tiles: Array.from(document.querySelectorAll('[data-kpi]'), t => [
        t.getAttribute('data-kpi'), t.querySelector('.value').textContent,
        t.getBoundingClientRect().width]),
    images: Array.from(document.images, i => ({src: i.src.slice(0, 21),
        natural: i.naturalWidth, shown: i.getBoundingClientRect().width})),
    scripts: document.scripts.length, svg: document.querySelectorAll('svg').length,
    handlers: withHandlers.length
  };
}"""


def measure(browser: Any, tmp_path: Path, page_html: str, width: int) -> dict:
    """Load the page in a viewport `width` px wide; what it looks like there."""
    page = load(browser, page_html, width, tmp_path)
    try:
        seen: dict = page.evaluate(MEASURE)
    finally:
        page.close()
    return seen


def long_names_report() -> dict:
    """Names as long as a PBX lets them be: they must wrap, not widen the page."""
    return make_report(
        queues={"support-premium-enterprise-customers-emea-escalations": kpis(offered=9),
                "sales": kpis(offered=3)},
        agents={"Maximiliane Alexandra von Hohenzollern-Sigmaringen": agent(answered=4),
                "SIP/2001-0000aaaabbbbccccddddeeeeffff0000": agent(answered=3)},
    )


def test_screenshots_at_phone_and_desktop_width_show_the_report(browser, tmp_path):
    for width in (PHONE, DESKTOP):
        page = load(browser, render_html(make_report()), width, tmp_path, height=2400)
        shot = tmp_path / f"shot-{width}.png"
        page.screenshot(path=str(shot))
        page.close()
        image = Image.open(shot).convert("RGB")
        assert image.size == (width, 2400)
        colours = image.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200, f"{width}px: a blank page"
        background = max(colours)[1]
        inked = sum(n for n, colour in colours if colour != background)
        assert inked > 0.2 * width * 2400, f"{width}px: almost nothing drawn"


def test_tiles_and_charts_are_there_and_nothing_overflows_a_phone(browser, tmp_path):
    seen = measure(browser, tmp_path, render_html(long_names_report()), PHONE)
    assert seen["width"] == PHONE
    assert seen["scrollWidth"] <= PHONE, "horizontal scrolling on a phone"
    assert seen["right"] <= PHONE, "an element sticks out of the page"
    assert [key for key, _, _ in seen["tiles"]] == [
        "service_level_pct", "asa_s", "abandon_rate_pct", "aht_s", "csat_pct", "fcr_pct"]
    assert all(width > 100 for _, _, width in seen["tiles"])  # three readable tiles a row
    assert len(seen["images"]) == 3
    for image in seen["images"]:
        assert image["src"] == "data:image/png;base64"
        assert image["natural"] == 1000  # decoded by the browser
        assert 300 < image["shown"] <= PHONE - 20


def test_the_desktop_page_is_640_px_wide_at_most(browser, tmp_path):
    seen = measure(browser, tmp_path, render_html(make_report()), DESKTOP)
    assert seen["scrollWidth"] <= DESKTOP
    assert all(image["shown"] == 608 for image in seen["images"])
    assert all(width < 640 / 3 for _, _, width in seen["tiles"])


def test_a_day_without_calls_renders_without_images(browser, tmp_path):
    seen = measure(browser, tmp_path, render_html(empty_report()), PHONE)
    assert seen["images"] == []
    assert [value for _, value, _ in seen["tiles"]] == ["—"] * 6
    assert seen["scrollWidth"] <= PHONE


def test_hostile_names_stay_text_in_the_browser(browser, tmp_path):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script><svg onload=alert(3)>'
    report = make_report(queues={evil: kpis(offered=1)}, agents={evil: agent(answered=1)})
    report["period"]["queue"] = evil
    seen = measure(browser, tmp_path, render_html(report, title=evil), PHONE)
    assert seen["scripts"] == 0
    assert seen["svg"] == 0 and seen["handlers"] == 0
    assert len(seen["images"]) == 3  # the charts, no <img src=x>
