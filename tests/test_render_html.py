"""The HTML report: the tiles' values, targets and changes, None as a dash, everything
escaped, one self-contained e-mail-safe file, and its mail variant with cid: images."""

import base64
import html
import re
from html.parser import HTMLParser

import pytest

from report_fixture import AGENTS, QUEUES, agent, empty_report, kpis, make_report
from reports.kpis import refresh_and_build
from test_kpi_rules import DAY, H, T, answer, answered, cfg, member, store_lines
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
    assert tile_value(page, "fcr_pct") == ("value missed", f"72.5{NB}%")  # (settled: below)
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
                "surveys": 1, "incomplete": 0, "orphans": 1, "repeat_surveys": 1},
        warnings={"staffed_unknown": [evil], "agents_like_interfaces": [evil]},
    )
    report["period"] |= {"queue": evil, "timezone": evil}
    for page in (render_html(report, title=evil), render_email_parts(report, title=evil)[0]):
        assert "<script" not in page and "<svg" not in page and "<img src=x" not in page
        seen = Elements(page)
        assert {tag for tag, _ in seen.tags} <= SAFE_TAGS
        assert not [a for _, attrs in seen.tags for a in attrs if a.startswith("on")]
        assert [src for tag, attrs in seen.tags if tag == "img" for src in [attrs["src"]]
                if not src.startswith(("data:image/png;base64,", "cid:"))] == []
        # shown as text: in the title, the period line, both tables, the survey and the
        # warning about agents named like interfaces
        assert sum(evil in text for text in seen.text) >= 7


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


def test_staffing_the_log_cannot_tell_is_unknown_never_short():
    report = staffed_report()
    report["staffing"].append({"start": "2026-11-23T00:00:00+01:00", "queue": "sales",
                               "offered": 12, "aht_s": 250.0, "agents_needed": 3,
                               "agents_staffed": None})
    page = render_html(report)
    row = re.search(r"<tr[^>]*>(?:(?!<tr).)*?sales</bdi>.*?</tr>", page, re.S).group(0)
    assert re.search(r'class="unknown"[^>]*>unknown</td>', row) and "short" not in row
    assert "“unknown”: the log shows no agent logged in to that queue" in html.unescape(page)
    assert "“unknown”" not in html.unescape(render_html(staffed_report()))


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
    report = staffed_report()
    report["totals"] |= {"withdrawn": 1, "closed": 4}
    text = html.unescape(re.sub(r"<[^>]+>", " ", render_html(report)))
    # every outcome of the offered calls is there, so they add up
    assert re.search(r"1\s+withdrawn\s+·\s+0\s+transferred\s+·\s+3\s+talking when the PBX "
                     r"restarted\s+·\s+4\s+waiting when the PBX restarted\s+·\s+2\s+still "
                     r"waiting", text)
    assert "count as answered, their talk time unknown" in text  # what they do to the KPIs
    plain = render_text(report)
    assert ", 3 talking when the PBX restarted, 4 waiting when the PBX restarted, 2 still " \
        "waiting\n  Calls talking when the PBX restarted count as answered" in plain
    for page in (render_html(make_report()), render_text(make_report())):
        assert "PBX restarted" not in page and "withdrawn" not in page and "still" not in page


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


# ------------------------------------------------------------------ FCR (docs/kpis.md, rule 18)
def words(page: str) -> str:
    """A page's text, its white space (no-break spaces included) one plain space."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def fcr_tile(page: str) -> str:
    return words(tile(page, "fcr_pct"))


def test_fcr_is_the_period_s_own_when_no_first_contact_is_pending():
    report = make_report(fcr_settled={"from": "2026-11-24", "to": "2026-11-24",
                                      "fcr_pct": 71.4, "resolved": 250, "repeated": 100})
    report["totals"] |= {"fcr_pct": 71.4, "fcr_pending": 0}
    page = render_html(report)
    assert tile_value(page, "fcr_pct") == ("value missed", f"71.4{NB}%")
    shown = fcr_tile(page)
    assert "was 73.9 % −2.5 pt" in shown and "survey: 79.0 %" in shown
    assert "settled" not in shown and "pending" not in shown
    line = next(x for x in render_text(report).splitlines() if x.startswith("FCR"))
    assert line == ("FCR: 71.4 % (target ≥ 75.0 %, missed); day before: 73.9 %, −2.5 pt; "
                    "survey: 79.0 %")


def test_with_contacts_pending_fcr_is_the_latest_settled_days_labelled_with_their_dates():
    page = render_html(make_report())  # 24 Nov: 52 first contacts pending; 21 Nov settled
    assert tile_value(page, "fcr_pct") == ("value missed", f"72.5{NB}%")
    shown = fcr_tile(page)
    assert shown.startswith("FCR 72.5 % for 21 Nov 2026 (settled) target ≥ 75.0 %")
    assert "52 first contacts of this period pending, known on 28 Nov 2026" in shown
    assert "survey: 79.0 %" in shown
    assert "was" not in shown  # not the period's figure: nothing to compare it with
    assert "At or above 80 %" in shown  # its target missed: the advice
    line = next(x for x in render_text(make_report()).splitlines() if x.startswith("FCR"))
    assert line == ("FCR for 21 Nov 2026 (settled): 72.5 % (target ≥ 75.0 %, missed); "
                    "survey: 79.0 %; 52 first contacts of this period pending, known on "
                    "28 Nov 2026")
    week = make_report(fcr_settled={"from": "2026-11-14", "to": "2026-11-20", "fcr_pct": 81.0,
                                    "resolved": 810, "repeated": 190})
    week["period"] |= {"from": "2026-11-16", "to": "2026-11-22",
                       "end": "2026-11-23T00:00:00+01:00"}
    shown = fcr_tile(render_html(week))
    assert "for 14 Nov 2026 – 20 Nov 2026 (settled)" in shown
    assert "known on 26 Nov 2026" in shown


@pytest.mark.parametrize("settled", [None, {"from": "2026-11-21", "to": "2026-11-21",
                                            "fcr_pct": None, "resolved": 0, "repeated": 0}])
def test_fcr_with_nothing_settled_is_pending_until_a_day_a_manager_can_read(settled):
    report = make_report(fcr_settled=settled)
    page = render_html(report)
    assert tile_value(page, "fcr_pct") == ("value pending", "pending")
    shown = fcr_tile(page)
    assert shown == ("FCR pending target ≥ 75.0 % 52 first contacts, known on 28 Nov 2026 "
                     "survey: 79.0 %")
    line = next(x for x in render_text(report).splitlines() if x.startswith("FCR"))
    assert line == "FCR: pending; 52 first contacts, known on 28 Nov 2026; survey: 79.0 %"


def test_fcr_known_on_is_the_report_s_local_time_after_the_window():
    report = make_report()
    report["settings"]["repeat_window_h"] = 36.0
    assert "known on 26 Nov 2026 12:00" in fcr_tile(render_html(report))
    report["period"] |= {"from": "2026-03-28", "to": "2026-03-28",
                         "end": "2026-03-29T00:00:00+01:00"}  # Berlin goes to summer time
    report["settings"]["repeat_window_h"] = 72.0
    assert "known on 1 Apr 2026 01:00" in fcr_tile(render_html(report))


def test_fcr_with_no_first_contact_at_all_is_a_dash():
    report = make_report()
    report["totals"] |= {"fcr_pct": None, "fcr_pending": 0, "fcr_survey_pct": None}
    page = render_html(report)
    assert tile_value(page, "fcr_pct") == ("value", "—")
    assert fcr_tile(page).endswith("was 73.9 % survey: —")


# ------------------------------------------------- what the log cannot tell about the agents
def unknown_agents_report() -> dict:
    return make_report(
        agents=AGENTS | {"PJSIP/1005": agent(answered=9, aht_s=250.0, csat_pct=80.0),
                         "Erin Static": agent(answered=20, aht_s=270.0, csat_pct=90.0)},
        warnings={"staffed_unknown": ["Erin Static", "PJSIP/1005"],
                  "agents_like_interfaces": ["PJSIP/1005"]})


def test_an_agent_whose_staffed_time_the_log_cannot_tell_shows_unknown_never_zero():
    page = render_html(unknown_agents_report())
    section = re.search(r'id="agents".*?</table>', page, re.S).group(0)
    text = words(section)
    assert "Erin Static 20 4:30 unknown 90.0 % —" in text
    assert "PJSIP/1005 9 4:10 unknown 80.0 % —" in text
    cells = re.findall(r'<td([^>]*)>unknown</td>', section)  # one under both columns
    assert len(cells) == 2 and all('colspan="2"' in c and 'class="unknown"' in c for c in cells)
    assert "Dave (new) 0 — — — — —" in text  # known staffed time, nothing to divide: dashes
    assert ("Staffed time, occupancy and calls per hour unknown for 2 agents: the log never "
            "showed them log in during this period (static members, or logged in before the "
            "oldest log callkpi read). callkpi listen learns it from Asterisk.") in text
    assert re.search(r"<bdi[^>]*>callkpi listen</bdi>", section)  # a command stays LTR


def test_agents_named_like_interfaces_get_one_line_telling_the_admin_what_to_do():
    page = render_html(unknown_agents_report())
    text = words(page)
    assert ("1 agent is named by its member interface ( PJSIP/1005 ), so one person can show "
            "as two rows: give it its name in [agents] names in callkpi.toml , or run callkpi listen "
            ", which learns the names from Asterisk.") in text
    assert page.count('class="warn"') == 2
    for name in ("PJSIP/1005", "[agents] names", "callkpi.toml", "callkpi listen"):
        assert re.search(rf"<bdi[^>]*>{re.escape(name)}</bdi>", page)
    plain = render_text(unknown_agents_report())
    assert ("\n1 agent is named by its member interface (\u2068PJSIP/1005\u2069), so one "
            "person can show as two rows: give it its name in \u2068[agents] names\u2069 in "
            "\u2068callkpi.toml\u2069, or run \u2068callkpi listen\u2069, which learns the names "
            "from Asterisk.\n") in plain
    assert "Staffed time, occupancy and calls per hour unknown for 2 agents" in plain
    assert 'class="warn"' not in render_html(make_report())
    assert "unknown" not in render_text(make_report())


# ------------------------------------------------------- survey answers not counted (rule 16)
def test_survey_answers_without_their_call_and_second_surveys_are_said_apart():
    page = render_html(make_report())
    section = words(re.search(r'id="survey".*?</td></tr>', page, re.S).group(0))
    assert ("141 surveys · 17 incomplete · CSAT average 4.31 of 5 2 answers are not matched "
            "to a queue call yet: counted here, not in CSAT or FCR. 1 answer came from a second "
            "survey of the same call: not counted.") in section
    plain = render_text(make_report())
    assert ("Survey: 141 surveys, 17 incomplete\n  2 answers are not matched to a queue call "
            "yet: counted here, not in CSAT or FCR.\n  1 answer came from a second survey of "
            "the same call: not counted.\n") in plain
    clean = make_report()
    clean["survey"] |= {"orphans": 0, "repeat_surveys": 0}
    assert "not matched" not in render_html(clean) and "second survey" not in render_html(clean)
    only_repeats = empty_report()
    only_repeats["survey"]["repeat_surveys"] = 2
    assert "2 answers came from a second survey" in render_html(only_repeats)
    assert "Survey:" not in render_text(empty_report())


# ------------------------------------------ through a real store: what the KPI layer reports
async def test_the_kpi_layer_s_unknowns_reach_the_page_and_the_mail(store):
    """Queue_log lines as Asterisk writes them, a survey answer as the AGI writes it, the
    real store and KPI layer: a settled day's FCR beside today's pending contacts, a static
    member whose staffed time the log cannot tell, an agent named by its interface, an answer
    whose call the store has not seen."""
    old = T - 4 * 24 * H  # 20 Nov: its window is over by the 24th
    lines = [member(old - 60), *answered(old, "o1", "5550001"),
             *answered(old + 60, "o2", "5550002"), *answered(old + 2 * H, "o3", "5550002"),
             *answered(T, "n1", "5550003"),
             *answered(T + 60, "s1", "5550004", agent="Agent 1005"),  # static: no ADDMEMBER
             member(T - 600, agent="PJSIP/1009")]  # its member name never learned
    orphan = answer("u9", T + 70, "q1", "csat", "1", "s3")
    await store_lines(store, lines, orphan)
    report = await refresh_and_build(store, cfg(), DAY, DAY, interval="hour")
    assert report["warnings"] == {"staffed_unknown": ["Agent 1005"],
                                  "agents_like_interfaces": ["PJSIP/1009"]}
    page = words(render_html(report))
    assert ("FCR 50.0 % for 20 Nov 2026 (settled) target ≥ 75.0 % survey: — 2 first contacts "
            "of this period pending, known on 28 Nov 2026") in page
    assert "Agent 1005 1 5 s unknown — —" in page
    assert "unknown for 1 agent: the log never showed the agent log in" in page
    assert "1 agent is named by its member interface ( PJSIP/1009 )" in page
    assert "1 answer is not matched to a queue call yet" in page
    plain = render_text(report)
    assert ("FCR for 20 Nov 2026 (settled): 50.0 % (target ≥ 75.0 %, missed); survey: —; "
            "2 first contacts of this period pending, known on 28 Nov 2026") in plain
    report["period"]["calendar"] = "jalali"
    persian = words(render_html(report, locale="fa"))
    assert "۵۰٫۰٪ برای ۲۹ آبان ۱۴۰۵ (قطعی)" in persian
    assert "۲ نخستین تماس این دوره در انتظار، نتیجه در ۷ آذر ۱۴۰۵" in persian


def test_what_the_report_command_warns_of_in_both_languages():
    from reports.i18n import lang
    from reports.notices import report_warnings

    report = make_report(warnings={"staffed_unknown": ["PJSIP/1005"],
                                   "agents_like_interfaces": ["PJSIP/1005\u202e"]})
    report["period"]["generated_at"] = "2026-11-24T15:00:00+01:00"  # the day is not over
    report["totals"] = report["totals"] | {"open": 2, "fcr_pending": 1}
    english = report_warnings(report, lang("en"))
    assert [w[:40] for w in english] == [
        "Warning: The period is not over yet: its", "Warning: 2 callers were still waiting at",
        "Warning: FCR is not settled: 1 first con", "Warning: Staffed time, occupancy and cal",
        "Warning: 1 agent is named by its member "]
    assert "known on 28 Nov 2026." in english[2] and "(PJSIP/1005)" in english[4]
    persian = report_warnings(report, lang("fa", "jalali"))
    assert len(persian) == 5 and all(w.startswith("هشدار: ") for w in persian)
    assert "\u2068PJSIP/1005\u2069" in persian[4] and "\u202e" not in "".join(persian)
    outside = re.sub("\u2068[^\u2069]*\u2069", "", "".join(persian))
    assert not re.search(r"[A-Za-z0-9]", outside)
    settled = make_report()
    settled["totals"] = settled["totals"] | {"fcr_pending": 0}
    assert report_warnings(settled, lang("en")) == []
