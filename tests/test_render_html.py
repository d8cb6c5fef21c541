"""The HTML report: the tiles' values, targets and changes, None as a dash, everything
escaped, one self-contained e-mail-safe file, and its mail variant with cid: images."""

import base64
import html
import re
from html.parser import HTMLParser

import pytest

from report_fixture import AGENTS, QUEUES, agent, empty_report, kpis, make_report
from reports import render_html as r
from reports.render_html import (duration, fmt, lower_is_better, pct, render_email_parts,
                                 render_html, render_text)

XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>',
       "'><svg onload=alert(3)>"]
NB = "\u00a0"
SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "table", "tbody", "tr", "td",
             "th", "div", "span", "p", "b", "h1", "h2", "img", "bdi"}


def tile(page: str, key: str) -> str:
    """The HTML of one headline tile."""
    match = re.search(rf'<td[^>]*data-kpi="{key}"[^>]*>(.*?)</td>', page, re.S)
    assert match, f"no tile {key}"
    return match.group(1)


def tile_value(page: str, key: str) -> tuple[str, str]:
    """(the value's classes, the value text) of a tile."""
    match = re.search(r'<div class="(value[^"]*)"[^>]*>([^<]*)</div>', tile(page, key))
    assert match is not None, key
    return match.group(1), html.unescape(match.group(2))


class Elements(HTMLParser):
    """The tags, attributes and text a browser would see."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(make_report())


def test_the_six_headline_tiles_show_value_target_and_the_day_before(page):
    assert tile_value(page, "service_level_pct") == ("value missed", f"76.5{NB}%")
    assert tile_value(page, "asa_s") == ("value missed", f"25{NB}s")  # lower is better
    assert tile_value(page, "abandon_rate_pct") == ("value missed", f"8.1{NB}%")
    assert tile_value(page, "aht_s") == ("value met", "4:47")
    assert tile_value(page, "csat_pct") == ("value met", f"88.2{NB}%")
    assert tile_value(page, "fcr_pct") == ("value missed", f"71.4{NB}%")
    sl = html.unescape(tile(page, "service_level_pct"))
    assert f"target ≥ 80.0{NB}%" in sl
    assert f"was 81.2{NB}%" in sl
    assert re.search(rf'class="worse"[^>]*>−4.7{NB}pt<', sl)
    aht = html.unescape(tile(page, "aht_s"))
    assert "target ≤ 5:00" in aht and "was 4:55" in aht
    assert re.search(rf'class="better"[^>]*>−8{NB}s<', aht)  # shorter handle time: better
    assert re.search(rf'class="worse"[^>]*>\+6{NB}s<', html.unescape(tile(page, "asa_s")))
    assert "the day before" in page


def test_targets_come_from_the_caller_and_a_missing_one_colours_nothing():
    page = render_html(make_report(), targets={"service_level_pct": 70.0})
    assert tile_value(page, "service_level_pct")[0] == "value met"
    assert tile_value(page, "aht_s")[0] == "value"
    assert "no target" in tile(page, "aht_s")


def test_a_value_on_the_target_meets_it():
    report = make_report(totals=kpis(service_level_pct=80.0, abandon_rate_pct=5.0))
    page = render_html(report)
    assert tile_value(page, "service_level_pct")[0] == "value met"
    assert tile_value(page, "abandon_rate_pct")[0] == "value met"


def test_none_is_a_dash_never_zero():
    page = render_html(empty_report())
    for key, _ in r.HEADLINE:
        assert tile_value(page, key) == ("value", "—")  # neither met nor missed
        assert "was —" in html.unescape(tile(page, key))
    assert page.count("No calls in this period.") == 3
    assert "<img" not in page
    assert "No agent was logged in." in page and "No survey answers" in page


def test_a_zero_is_a_zero():
    page = render_html(make_report(totals=kpis(offered=3, abandoned=3, abandon_rate_pct=100.0,
                                               service_level_pct=0.0)))
    assert tile_value(page, "service_level_pct") == ("value missed", f"0.0{NB}%")


def test_the_multi_day_period_compares_with_the_period_before():
    report = make_report()
    report["period"] |= {"from": "2026-11-16", "to": "2026-11-22", "queue": "sales"}
    page = render_html(report)
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "16 Nov 2026 – 22 Nov 2026, queue sales" in text
    assert "the previous 7 days" in page


def test_queues_agents_and_survey_tables(page):
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert re.search(rf"support\s+301\s+73.8{NB}%\s+27{NB}s\s+9.1{NB}%\s+5:01\s+86.0{NB}%", text)
    # the league table: most answered first; an agent without calls shows dashes
    names = re.findall(r"(Alice Smith|Bob Jones|Carol|Dave \(new\))\s", text)
    assert names == ["Alice Smith", "Bob Jones", "Carol", "Dave (new)"]
    assert re.search(r"Carol\s+113\s+5:00\s+87.5\s%\s+15.1\s+—\s+71.0", text.replace(NB, " "))
    assert re.search(r"Dave \(new\)\s+0\s+—\s+—\s+—\s+—\s+—", text)
    assert re.search(r"141\s+surveys\s+·\s+17\s+incomplete", text)
    assert re.search(r"csat\s+\(satisfaction\)\s+136\s+2\s+5\s+3", text)
    assert re.search(r"key\s+5\s*:\s+79", text)


@pytest.mark.parametrize("evil", XSS)
def test_every_name_from_the_pbx_is_escaped(evil):
    report = make_report(
        queues={evil: kpis(offered=1)},
        agents={evil: agent(answered=1)},
        survey={"questions": {evil: {"kind": evil, "answers": {evil: 1}, "invalid": 0,
                                     "no_response": 0, "hangup": 0}},
                "surveys": 1, "incomplete": 0},
    )
    report["period"] |= {"queue": evil, "timezone": evil}
    for page in (render_html(report, title=evil), render_email_parts(report, title=evil)[0]):
        assert "<script" not in page and "<svg" not in page and "<img src=x" not in page
        seen = Elements(page)
        assert {tag for tag, _ in seen.tags} <= SAFE_TAGS
        assert not [a for _, attrs in seen.tags for a in attrs if a.startswith("on")]
        assert [src for tag, attrs in seen.tags if tag == "img" for src in [attrs["src"]]
                if not src.startswith(("data:image/png;base64,", "cid:"))] == []
        # shown as text: in the title, the period line, both tables and the survey
        assert sum(evil in text for text in seen.text) >= 6


def test_autoescape_does_not_depend_on_the_template_name():
    assert r._environment("en").from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


def test_one_self_contained_mail_safe_file(page):
    assert "max-width: 640px" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert "<script" not in page and "<svg" not in page and "<link" not in page
    assert "@font-face" not in page
    # CSS inlined: the tile value carries its own style; only @media stays in <style>
    assert re.search(r'<div class="value missed" style="[^"]*font-size: 24px', page)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert all(s.strip().startswith("@media") for s in styles)
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 3
    for src in sources:
        prefix, data = src.split(",", 1)
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_mail_variant_refers_to_its_images_by_content_id():
    page, images = render_email_parts(make_report())
    assert set(images) == {"hourly@callkpi", "wait_histogram@callkpi", "abandon_curve@callkpi"}
    assert sorted(re.findall(r'<img[^>]* src="cid:([^"]+)"', page)) == sorted(images)
    assert "data:" not in page
    assert all(png[:4] == b"\x89PNG" for png in images.values())


def test_no_image_part_for_an_empty_chart():
    page, images = render_email_parts(empty_report())
    assert images == {} and "cid:" not in page


def test_the_plain_text_summary():
    text = render_text(make_report(), title="Support daily")
    lines = text.splitlines()
    assert lines[:2] == ["Support daily", "Tuesday 24 November 2026"]
    assert ("Service level: 76.5 % (target ≥ 80.0 %, missed); day before: 81.2 %, −4.7 pt"
            in lines)
    assert "AHT: 4:47 (target ≤ 5:00, met); day before: 4:55, −8 s" in lines
    assert any(line.startswith("Calls: 412 offered, 371 answered, 33 abandoned") for line in lines)
    assert "Queue \u2068sales\u2069: 111 offered, SL 83.6 %, ASA 18 s, abandoned 5.5 %" in lines
    assert NB not in text
    empty = render_text(empty_report())
    assert "Service level: —\n" in empty  # no target verdict without a value


@pytest.mark.parametrize("value, shown", [
    (None, "—"), (0, f"0{NB}s"), (24.6, f"25{NB}s"), (59.6, "1:00"), (287.4, "4:47"),
    (3725, "1:02:05")])
def test_durations(value, shown):
    assert duration(value) == shown


def test_units_by_name():
    assert pct(None) == "—" and pct(0.0) == f"0.0{NB}%"
    assert fmt("offered", 1234) == "1,234" and fmt("offered", None) == "—"
    assert fmt("csat_avg", 4.314) == "4.31" and fmt("calls_per_hour", 16.44) == "16.4"
    assert [k for k in ("service_level_pct", "abandon_rate_pct", "asa_s", "aht_s", "csat_pct",
                        "fcr_pct", "repeat_call_rate_pct") if lower_is_better(k)] == [
        "abandon_rate_pct", "asa_s", "aht_s", "repeat_call_rate_pct"]


def test_a_big_call_center_fits_in_gmail_before_it_clips():
    """Gmail cuts a mail's HTML after 102 kB ("[Message clipped]"): 150 agents, 30 queues."""
    report = make_report(agents={f"Agent {n:03d}": AGENTS["Alice Smith"] for n in range(150)},
                         queues={f"queue-{n:02d}": QUEUES["sales"] for n in range(30)})
    page, _ = render_email_parts(report)
    assert page.count("Agent 1") == 50
    assert len(page.encode()) < 102_000


def test_a_change_too_small_to_show_is_no_change():
    report = make_report(totals=kpis(service_level_pct=80.01, aht_s=300.2),
                         previous_totals=kpis(service_level_pct=80.0, aht_s=300.0))
    page = html.unescape(render_html(report))
    assert f"±0.0{NB}pt" in tile(page, "service_level_pct")
    assert "±0 s".replace(" ", NB) in tile(page, "aht_s")
    assert 'class="better"' not in page and 'class="worse"' not in page


def staffed_report() -> dict:
    """A week with the KPI layer's staffing numbers and its restart and open counts."""
    report = make_report(totals=kpis(offered=412, answered=371) | {"ended_by_restart": 3,
                                                                   "open": 2})
    report["period"] |= {"from": "2026-11-23", "to": "2026-11-29", "interval": "day"}
    report["intervals"] = [
        {"start": f"2026-11-{d}T00:00:00+01:00", **kpis(offered=60, answered=55),
         "agents_needed": 6, "agents_staffed": 6.5 if d % 2 else 4.25} for d in range(23, 30)]
    report["staffing"] = [
        {"start": f"2026-11-{d}T00:00:00+01:00", "queue": "support", "offered": 60,
         "aht_s": 281.0, "agents_needed": 6, "agents_staffed": 6.5 if d % 2 else 4.25}
        for d in range(23, 30)]
    return report


def test_needed_versus_staffed_agents_as_a_chart_and_a_table():
    page = render_html(staffed_report())
    section = re.search(r'id="staffing"[^>]*>(.*?)</td></tr>\s*<tr><td class="pad" id="queues"',
                        page, re.S).group(1)
    assert section.count('<img class="chart"') == 1
    text = html.unescape(re.sub(r"<[^>]+>", " ", section))
    assert re.search(r"Mon 23 Nov\s+support\s+60\s+4:41\s+6\s+6.5", text)
    assert len(re.findall(r'class="short"[^>]*>4.2', section)) == 3  # 24, 26, 28 Nov: short
    # no staffing numbers: no section
    assert 'id="staffing"' not in render_html(make_report(staffing=[]))


def test_calls_ended_by_a_restart_and_still_open_are_counted_where_the_report_has_them():
    text = html.unescape(re.sub(r"<[^>]+>", " ", render_html(staffed_report())))
    assert re.search(r"3\s+ended by a PBX restart\s+·\s+2\s+still open", text)
    assert "ended by a PBX restart" not in render_html(make_report())


def test_a_multi_day_report_has_its_trend_and_says_the_hours_are_added_up():
    page = render_html(staffed_report())
    assert "Calls and service level per hour of the day, the 7 days added up" in page
    trend = re.search(r'id="trend"[^>]*>(.*?)id="staffing"', page, re.S).group(1)
    assert re.search(r"<h2[^>]*>Per day</h2>", trend) and trend.count("<img") == 1
    assert len(re.findall(r"<tr", trend)) == 9  # a header, 7 days, the next section
    week = staffed_report()
    week["period"]["interval"] = "week"
    week["intervals"] = week["intervals"][:1]
    assert 'id="trend"' not in render_html(week)  # one interval is no trend
