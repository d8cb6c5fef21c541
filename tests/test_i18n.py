"""Every user-visible string is marked for translation and has its Persian translation; the
language's numbers, durations and dates; names isolated from the text around them."""

from __future__ import annotations

import ast
import datetime as dt
import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from report_fixture import agent, kpis, make_report
from reports.i18n import LOCALE_DIR, LocaleError, lang, translations
from reports.render_html import render_email_parts, render_html, render_text, subject_line

ROOT = Path(__file__).parent.parent
TEMPLATES = ROOT / "reports" / "templates"
NB = "\u00a0"


def extracted() -> set[str]:
    """The msgids Babel extracts with babel.cfg's methods and keywords."""
    method_map = [("reports/**.py", "python"), ("reports/templates/**.html", "jinja2")]
    options = {"reports/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options, keywords={
                "_": None, "gettext": None, "ngettext": (1, 2), "N_": None, "_t": (2,)}):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalog(code: str):
    with (LOCALE_DIR / code / "LC_MESSAGES" / "callkpi.po").open("rb") as po:
        return read_po(po, locale=code)


def test_every_marked_string_has_a_persian_translation():
    messages = extracted()
    assert len(messages) > 150
    fa = catalog("fa")
    missing = [m for m in sorted(messages) if m not in fa]
    assert not missing, f"not in the Persian catalog (pybabel update, docs/i18n.md): {missing}"
    untranslated = [m.id for m in fa if m.id and (
        "fuzzy" in m.flags or not (all(m.string) if isinstance(m.string, tuple) else m.string))]
    assert not untranslated, f"no Persian translation: {untranslated}"
    obsolete = [m.id for m in fa if m.id and (m.id if isinstance(m.id, str) else m.id[0])
                not in messages]
    assert not obsolete, f"translations of strings no longer used: {obsolete}"


# what `callkpi report` and `callkpi email` tell the manager who runs them goes through the
# catalog; the other commands' messages (ingest, agents, facts, ...) are for admins, in English
MANAGER_MESSAGES = {ROOT / "reports" / "email_command.py": None,
                    ROOT / "reports" / "commands.py": {"report"}}


@pytest.mark.parametrize("path", sorted(MANAGER_MESSAGES), ids=lambda p: p.name)
def test_the_manager_s_command_messages_are_marked_for_translation(path):
    """A `click.echo` of `report` or `email` prints a translated text, never a literal or an
    f-string (the catalog test above then makes sure it has its Persian)."""
    functions = MANAGER_MESSAGES[path]
    tree = ast.parse(path.read_text())
    scopes = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
              and (functions is None or node.name in functions)]
    assert scopes, path
    literal = []
    for scope in scopes:
        for call in ast.walk(scope):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "echo" and call.args
                    and isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp))):
                literal.append(f"{path.name}:{call.lineno}")
    assert not literal, f"echo of text not marked for translation: {literal}"


def test_translations_keep_their_placeholders():
    for message in catalog("fa"):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r"%\(\w+\)s", ids[-1]))
        for string in strings:
            got = set(re.findall(r"%\(\w+\)s", string))
            # a translation may drop a placeholder only where the words say it ("no change")
            assert got <= wanted and (got == wanted or message.id == "±%(amount)s"), message.id


class TemplateText(HTMLParser):
    """Text and human-readable attributes of a template, its Jinja parts taken out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag, attrs):
        self._style = tag == "style"
        self.found += [v for k, v in attrs if k in ("alt", "title", "aria-label") and v]

    def handle_endtag(self, tag):
        self._style = False

    def handle_data(self, data):
        if not self._style:
            self.found.append(data)


@pytest.mark.parametrize("template", sorted(TEMPLATES.glob("*.html")), ids=lambda p: p.name)
def test_no_template_text_is_left_unmarked(template):
    source = template.read_text("utf-8")
    source = re.sub(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", " ", source, flags=re.S)
    source = re.sub(r"<!--.*?-->", " ", source, flags=re.S)
    parser = TemplateText()
    parser.feed(source)
    words = [t.strip() for t in parser.found if re.search(r"[A-Za-z]", t)]
    assert not words, f"text not marked for translation in {template.name}: {words}"


def visible_text(page: str, hidden: set[str]) -> str:
    """The page's text without the names that came from the PBX and the style sheet."""
    text = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    text = re.sub(r"<bdi[^>]*>.*?</bdi>", " ", text, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    for name in hidden:
        text = text.replace(name, " ")
    return text


def persian_report() -> dict:
    """Every part of the page: restarts, waiting and withdrawn calls, agents the log cannot
    tell about, survey answers not counted, staffing unknown, FCR of settled days."""
    report = make_report(
        agents={"Alice Smith": agent(answered=3, aht_s=280.0), "PJSIP/1005": agent(answered=2)},
        queues={"support": kpis(offered=4, service_level_pct=75.0)},
        warnings={"staffed_unknown": ["PJSIP/1005"], "agents_like_interfaces": ["PJSIP/1005"]})
    report["period"]["calendar"] = "jalali"
    report["totals"] = report["totals"] | {"ended_by_restart": 2, "open": 1, "closed": 1,
                                           "withdrawn": 1}
    report["staffing"].append({"start": "2026-11-24T11:00:00+01:00", "queue": "support",
                               "offered": 3, "aht_s": 200.0, "agents_needed": 2,
                               "agents_staffed": None})
    return report


def without_isolated(plain: str) -> str:
    """Plain text without what it isolates (names, commands, settings)."""
    return re.sub("\u2068.*?\u2069", " ", plain)


@pytest.mark.parametrize("fcr_settled", ["settled", None], ids=["settled", "pending"])
def test_the_persian_report_has_no_english_word_left(fcr_settled):
    report = persian_report()
    if fcr_settled is None:
        report["fcr_settled"] = None
    page = render_html(report, locale="fa")
    text = visible_text(page, {"Europe/Berlin"})
    assert re.findall(r"[A-Za-z][A-Za-z_-]*", text) == [], text
    assert not re.search(r"[0-9]", text), "Latin digits in the Persian page"
    plain = render_text(report, locale="fa")
    assert not re.search(r"[A-Za-z0-9]", without_isolated(plain)), plain


def test_the_persian_fcr_tile_and_warnings_read_in_persian_with_jalali_dates():
    report = persian_report()
    page = visible_text(render_html(report, locale="fa"), set())
    page = " ".join(page.split())
    # settled on 21 Nov (30 Aban), this day's contacts known on 28 Nov (7 Azar)
    assert "برای ۳۰ آبان ۱۴۰۵ (قطعی)" in page
    assert "۵۲ نخستین تماس این دوره در انتظار، نتیجه در ۷ آذر ۱۴۰۵" in page
    assert "نظرسنجی: ۷۹٫۰٪" in page
    assert page.count("نامعلوم") >= 3  # the agent row, the staffing row, and why
    report["fcr_settled"] = None
    plain = render_text(report, locale="fa")
    assert "حل در اولین تماس: در انتظار؛ ۵۲ نخستین تماس، نتیجه در ۷ آذر ۱۴۰۵؛ نظرسنجی: ۷۹٫۰٪" \
        in plain


def test_persian_numbers_durations_and_dates():
    fa = lang("fa", "jalali")
    assert fa.pct(72.5) == "۷۲٫۵٪"
    assert fa.count(12345) == "۱۲٬۳۴۵"
    assert fa.duration(25) == f"۲۵{NB}ثانیه" and fa.duration(287.4) == "۴:۴۷"
    assert fa.duration(3725) == "۱:۰۲:۰۵"
    assert fa.day(dt.date(2026, 11, 24)) == "سه‌شنبه ۳ آذر ۱۴۰۵"
    assert fa.month(dt.date(2026, 12, 21)) == "آذر ۱۴۰۵"
    assert fa.signed("service_level_pct", -4.7) == f"۴٫۷{NB}واحد درصد کمتر"
    en = lang("en")
    assert en.pct(72.5) == f"72.5{NB}%" and en.count(12345) == "12,345"
    assert en.day(dt.date(2026, 11, 24)) == "Tuesday 24 November 2026"
    assert en.signed("service_level_pct", -4.7) == f"−4.7{NB}pt"
    assert lang("en", "jalali").day(dt.date(2026, 11, 24)) == "Tuesday 3 Azar 1405"
    assert lang("fa", "gregorian").day(dt.date(2026, 11, 24)) == "سه‌شنبه ۲۴ نوامبر ۲۰۲۶"


def test_an_unknown_locale_is_one_clear_error():
    with pytest.raises(LocaleError, match="locale must be one of en, fa, not 'de'"):
        translations("de")


def test_the_persian_page_is_right_to_left_in_the_browser_file_and_the_mail():
    report = persian_report()
    for page in (render_html(report, locale="fa"), render_email_parts(report, locale="fa")[0]):
        assert re.search(r'<html lang="fa" dir="rtl"', page)
        assert re.search(r'<table[^>]*class="page"[^>]*dir="rtl"', page)
        assert 'text-align: right' in page  # the inlined start side
        assert "۳ آذر ۱۴۰۵" in page
    assert subject_line(report, locale="fa") == "گزارش مرکز تماس: سه‌شنبه ۳ آذر ۱۴۰۵"


BIDI_ATTACKS = ["\u202eevil\u202c", "\u2067abc\u2069", "x\u200fy", "\u202dAgent\u061c 7"]


@pytest.mark.parametrize("name", BIDI_ATTACKS)
@pytest.mark.parametrize("locale", ["en", "fa"])
def test_bidi_controls_in_a_name_never_reach_the_page_or_the_mail(name, locale):
    report = make_report(queues={name: kpis(offered=1)}, agents={name: agent(answered=1)},
                         warnings={"staffed_unknown": [name], "agents_like_interfaces": [name]})
    report["period"]["queue"] = name
    controls = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
    for page in (render_html(report, locale=locale, title=name),
                 render_email_parts(report, locale=locale, title=name)[0]):
        assert not controls.search(page)
        cleaned = controls.sub("", name)
        isolated = re.findall(rf'<bdi[^>]*>{re.escape(html.escape(cleaned))}</bdi>', page)
        assert len(isolated) >= 5  # the title, the period's queue, the queue, the agent,
        # the warning that names it
    text = render_text(report, locale=locale, title=name)
    assert not re.search("[\u202a-\u202e\u200e\u200f\u061c]", text)
    assert f"\u2068{controls.sub('', name)}\u2069" in text  # isolated in plain text too
    assert not controls.search(subject_line(report, locale=locale, title=name).replace(
        "\u2068", "").replace("\u2069", ""))
