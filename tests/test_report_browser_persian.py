"""The Persian report in a real browser (Playwright driving Debian's Chromium, no browser
download): right to left, Persian digits and Jalali dates in the DOM, nothing overflowing a
390 px phone, every character drawable by an installed font (no tofu), charts shown whole;
and screenshots at phone and desktop width (kept in the test's tmp directory to look at).
The mail's HTML is checked the same way: it is the same page with cid: images."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

from browser_fixture import browser, load  # noqa: F401 (browser: a fixture)
from report_fixture import agent, kpis, make_report
from reports.render_html import render_email_parts, render_html

pytestmark = pytest.mark.browser

PHONE, DESKTOP = 390, 1280


def persian_report(locale: str = "fa") -> dict:
    """Long names, and what the log cannot tell yet: FCR of this day pending (the settled
    days' shown), an agent never seen logging in, one named by its interface, calls cut by
    a PBX restart, survey answers not counted."""
    report = make_report(
        queues={"پشتیبانی-ویژه-مشتریان-سازمانی-منطقه-تهران": kpis(offered=9, answered=8),
                "sales": kpis(offered=3, answered=3, service_level_pct=100.0)},
        agents={"مریم حسینی‌نژاد": agent(answered=4, aht_s=281.0, staffed_s=28800.0,
                                        paused_s=1800.0, occupancy_pct=71.2,
                                        calls_per_hour=0.5),
                "SIP/2001-0000aaaabbbbccccddddeeeeffff0000": agent(answered=3),
                "علی رضایی (ثابت)": agent(answered=12, aht_s=300.0, csat_pct=90.0)},
        warnings={"staffed_unknown": ["SIP/2001-0000aaaabbbbccccddddeeeeffff0000",
                                      "علی رضایی (ثابت)"],
                  "agents_like_interfaces": ["SIP/2001-0000aaaabbbbccccddddeeeeffff0000"]})
    report["totals"] |= {"ended_by_restart": 2, "closed": 1, "open": 1}
    report["period"] |= {"calendar": "jalali" if locale == "fa" else "gregorian",
                         "timezone": "Asia/Tehran", "end": "2026-11-25T00:00:00+03:30"}
    return report


@pytest.mark.parametrize("locale", ["fa", "en"])
@pytest.mark.parametrize("settled", [True, False], ids=["settled", "pending"])
def test_screenshots_at_phone_and_desktop_width(browser, tmp_path, locale, settled):
    report = persian_report(locale)
    if not settled:
        report["fcr_settled"] = None
    for width in (PHONE, DESKTOP):
        page = load(browser, render_html(report, locale=locale), width, tmp_path)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shot = tmp_path / f"{locale}-{'settled' if settled else 'pending'}-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
        assert image.size[0] == width and image.size[1] > 2000
        colours = image.getcolors(maxcolors=1 << 20)
        assert len(colours) > 200, f"{width}px: a blank page"
        page.close()


def test_the_dom_is_right_to_left_with_persian_digits_and_jalali_dates(browser, tmp_path):
    page = load(browser, render_html(persian_report(), locale="fa"), DESKTOP, tmp_path)
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert page.evaluate("document.documentElement.lang") == "fa"
    assert page.evaluate("getComputedStyle(document.querySelector('.tiles')).direction") == "rtl"
    assert page.inner_text("#period") == "سه‌شنبه ۳ آذر ۱۴۰۵"
    values = page.eval_on_selector_all("[data-kpi] .value", "els => els.map(e => e.textContent)")
    assert values == ["۷۶٫۵٪", "۲۵\u00a0ثانیه", "۸٫۱٪", "۴:۴۷", "۸۸٫۲٪", "۷۲٫۵٪"]
    # the first tile is the rightmost of its row, as a right-to-left reader starts
    lefts = page.eval_on_selector_all(
        "[data-kpi]", "els => els.slice(0, 3).map(e => e.getBoundingClientRect().left)")
    assert lefts == sorted(lefts, reverse=True)
    text = page.inner_text("body")
    names = ["sales", "SIP/2001-0000aaaabbbbccccddddeeeeffff0000", "Asia/Tehran", "csat",
             "resolved", "callkpi listen", "[agents] names", "callkpi.toml"]
    for name in names:
        text = text.replace(name, "")
    assert not re.search(r"[0-9]", text), "Latin digits in the Persian page"
    page.close()


def test_what_the_log_cannot_tell_yet_reads_in_persian(browser, tmp_path):
    page = load(browser, render_html(persian_report(), locale="fa"), PHONE, tmp_path)
    fcr = " ".join(page.inner_text("[data-kpi=fcr_pct]").split())
    # the settled day's figure with its Jalali date; this day's contacts and when they settle
    assert fcr.startswith("حل در اولین تماس ۷۲٫۵٪ برای ۳۰ آبان ۱۴۰۵ (قطعی)"), fcr
    assert "۵۲ نخستین تماس این دوره در انتظار، نتیجه در ۷ آذر ۱۴۰۵" in fcr
    assert "قبلاً" not in fcr  # not the period's own figure: not compared
    unknown = page.eval_on_selector_all(
        "#agents td.unknown", "tds => tds.map(td => [td.innerText, td.colSpan])")
    assert unknown == [["نامعلوم", 2], ["نامعلوم", 2]]
    warnings = page.eval_on_selector_all(
        "#agents .warn", "ps => ps.map(p => [getComputedStyle(p).direction, p.innerText])")
    assert [direction for direction, _ in warnings] == ["rtl", "rtl"]
    assert warnings[0][1].startswith("زمان حضور، اشغال و تماس در ساعت ۲ کارشناس نامعلوم است")
    # a command inside the Persian sentence keeps its own left-to-right order
    assert page.eval_on_selector_all(
        "#agents .warn bdi", "els => els.map(e => e.matches(':dir(ltr)'))") == [True] * 5
    page.close()


def test_nothing_overflows_a_phone_and_the_charts_are_shown_whole(browser, tmp_path):
    page = load(browser, render_html(persian_report(), locale="fa"), PHONE, tmp_path)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
    outside = page.evaluate("""() => Array.from(document.body.querySelectorAll('*'))
        .map(e => e.getBoundingClientRect())
        .filter(r => r.width > 0 && (r.left < -0.5 || r.right > window.innerWidth + 0.5))
        .length""")
    assert outside == 0, "an element sticks out of the page"
    images = page.eval_on_selector_all("img", """els => els.map(i => [i.naturalWidth,
        i.getBoundingClientRect().width])""")
    assert len(images) == 3
    assert all(natural == 1000 and 300 < shown <= PHONE - 20 for natural, shown in images)
    page.close()


def test_every_character_has_a_font_no_tofu(browser, tmp_path):
    """Chromium draws a character with the first installed font that has it (fontconfig):
    each character of the page's text must be in one."""
    if shutil.which("fc-list") is None:
        pytest.fail("fc-list (fontconfig) is missing")
    page = load(browser, render_html(persian_report(), locale="fa"), DESKTOP, tmp_path)
    characters = set(page.inner_text("body")) - set(" \n\t\u00a0\u200c")
    page.close()
    missing = [c for c in sorted(characters) if not subprocess.run(
        ["fc-list", f":charset={ord(c):x}", "family"], capture_output=True, text=True
    ).stdout.strip()]
    assert not missing, f"no installed font has {missing}"


def test_the_mail_html_is_right_to_left_too(browser, tmp_path):
    html, images = render_email_parts(persian_report(), locale="fa")
    assert len(images) == 3
    page = load(browser, html, PHONE, tmp_path)
    assert page.evaluate("document.documentElement.dir") == "rtl"
    assert page.evaluate("getComputedStyle(document.querySelector('td.pad')).textAlign") == \
        "right"
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
    page.close()


def test_a_bidi_override_in_a_name_does_not_reorder_the_page(browser, tmp_path):
    """A queue named with RIGHT-TO-LEFT OVERRIDE would draw the text after it backwards;
    the control is removed and the name isolated, so the row reads as it should."""
    evil = "\u202eevil"
    report = make_report(queues={evil: kpis(offered=7, answered=7)})
    page = load(browser, render_html(report), DESKTOP, tmp_path)
    cells = page.eval_on_selector_all("#queues tr", "rows => rows[1].innerText")
    assert cells.split("\t")[:2] == ["evil", "7"]
    page.close()
