"""The HTML report in a real browser (headless Chromium): it draws something at phone and
desktop width, the tiles and the three charts are there, nothing overflows a 390 px phone,
and names from the PBX never become markup.

Chromium's window cannot be narrower than 500 px, so layouts are measured inside an iframe
of the width under test; a probe script (in the test's copy only: the report has none)
writes what the page looks like into the parent, and `--dump-dom` prints it.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from report_fixture import agent, empty_report, kpis, make_report
from reports.render_html import render_html

pytestmark = pytest.mark.browser

PHONE, DESKTOP = 390, 1280
PROBE = """<script>
window.addEventListener('load', function () {
  var doc = document.documentElement, right = 0;
  Array.prototype.forEach.call(document.body.querySelectorAll('*'), function (el) {
    right = Math.max(right, el.getBoundingClientRect().right);
  });
  var withHandlers = Array.prototype.filter.call(document.querySelectorAll('*'), function (el) {
    return Array.prototype.some.call(el.attributes, function (a) { return /^on/i.test(a.name); });
  });
  parent.document.getElementById('out').textContent = JSON.stringify({
    width: window.innerWidth, scrollWidth: doc.scrollWidth, right: right,
    tiles: Array.prototype.map.call(document.querySelectorAll('[data-kpi]'), function (t) {
      return [t.getAttribute('data-kpi'), t.querySelector('.value').textContent,
              t.getBoundingClientRect().width];
    }),
    images: Array.prototype.map.call(document.images, function (i) {
      return {src: i.src.slice(0, 21), natural: i.naturalWidth,
              shown: i.getBoundingClientRect().width};
    }),
    scripts: document.scripts.length, svg: document.querySelectorAll('svg').length,
    handlers: withHandlers.length
  });
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(chromium: str, tmp_path: Path, url: str, *args: str) -> str:
    command = [chromium, "--headless", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args, url]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root otherwise
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(chromium: str, tmp_path: Path, page: Path, width: int) -> Image.Image:
    shot = tmp_path / f"shot-{width}.png"
    run_chromium(chromium, tmp_path, page.as_uri(), f"--window-size={width},2400",
                 f"--screenshot={shot}")
    return Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")


def probe(chromium: str, tmp_path: Path, page_html: str, width: int) -> dict:
    """Load the page in an iframe `width` px wide; what the probe saw."""
    frame = page_html.replace("</body>", PROBE + "</body>")
    wrapper = tmp_path / f"probe-{width}.html"
    wrapper.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><pre id="out"></pre>'
        f'<iframe width="{width}" height="3000" style="border:0" '
        f'srcdoc="{html.escape(frame, quote=True)}"></iframe></body></html>', "utf-8")
    dom = run_chromium(chromium, tmp_path, wrapper.as_uri(), "--window-size=1400,1000",
                       "--virtual-time-budget=10000", "--dump-dom")
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), "the probe did not run"
    return json.loads(html.unescape(found.group(1)))


def long_names_report() -> dict:
    """Names as long as a PBX lets them be: they must wrap, not widen the page."""
    return make_report(
        queues={"support-premium-enterprise-customers-emea-escalations": kpis(offered=9),
                "sales": kpis(offered=3)},
        agents={"Maximiliane Alexandra von Hohenzollern-Sigmaringen": agent(answered=4),
                "SIP/2001-0000aaaabbbbccccddddeeeeffff0000": agent(answered=3)},
    )


def test_screenshots_at_phone_and_desktop_width_show_the_report(chromium, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_html(make_report()), "utf-8")
    for width in (PHONE, DESKTOP):
        image = screenshot(chromium, tmp_path, page, width)
        assert image.size == (width, 2400)
        colours = image.getcolors(maxcolors=1 << 20)
        assert len(colours) > 200, f"{width}px: a blank page"
        background = max(colours)[1]
        inked = sum(n for n, colour in colours if colour != background)
        assert inked > 0.2 * width * 2400, f"{width}px: almost nothing drawn"


def test_tiles_and_charts_are_there_and_nothing_overflows_a_phone(chromium, tmp_path):
    seen = probe(chromium, tmp_path, render_html(long_names_report()), PHONE)
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


def test_the_desktop_page_is_640_px_wide_at_most(chromium, tmp_path):
    seen = probe(chromium, tmp_path, render_html(make_report()), DESKTOP)
    assert seen["scrollWidth"] <= DESKTOP
    assert all(image["shown"] == 608 for image in seen["images"])
    assert all(width < 640 / 3 for _, _, width in seen["tiles"])


def test_a_day_without_calls_renders_without_images(chromium, tmp_path):
    seen = probe(chromium, tmp_path, render_html(empty_report()), PHONE)
    assert seen["images"] == []
    assert [value for _, value, _ in seen["tiles"]] == ["—"] * 6
    assert seen["scrollWidth"] <= PHONE


def test_hostile_names_stay_text_in_the_browser(chromium, tmp_path):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script><svg onload=alert(3)>'
    report = make_report(queues={evil: kpis(offered=1)}, agents={evil: agent(answered=1)})
    report["period"]["queue"] = evil
    seen = probe(chromium, tmp_path, render_html(report, title=evil), PHONE)
    assert seen["scripts"] == 1  # the probe's own
    assert seen["svg"] == 0 and seen["handlers"] == 0
    assert len(seen["images"]) == 3  # the charts, no <img src=x>
