"""The report's language: translated text (gettext catalogs managed with Babel), numbers,
percentages, durations and dates as a reader of that language writes them.

The catalogs are `reports/locale/<lang>/LC_MESSAGES/callkpi.po`, the source of truth; they are
compiled in memory with Babel when a language is first used (a few milliseconds), so a clone
never runs stale `.mo` files and needs no build step. docs/i18n.md says how to add a string
or a language.
"""

from __future__ import annotations

import datetime as dt
import gettext
import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import jdatetime
from babel import Locale
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from markupsafe import Markup, escape

from callkpi.errors import UserError
from reports.calendar import JALALI, calendar_for, jalali

LOCALES = ("en", "fa")
RTL = frozenset({"fa"})
DOMAIN = "callkpi"
LOCALE_DIR = Path(__file__).parent / "locale"
DASH = "—"  # a ratio with nothing to divide by: never shown as 0
NBSP = "\u00a0"  # between a number and its unit, so "81.2 %" never breaks across lines
# the numbering systems whose digits are not 0-9, as the locale's default ones
NATIVE_DIGITS = {"arabext": "۰۱۲۳۴۵۶۷۸۹"}


# Unicode's explicit bidi formatting characters (embeddings, overrides, isolates, marks):
# removed from every name, which is isolated by markup or FSI ... PDI instead.
BIDI_CONTROLS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068"
                                       "\u2069\u200e\u200f\u061c"))
FSI, PDI = "\u2068", "\u2069"  # first-strong isolate ... pop: the plain-text isolate


def N_(message: str) -> str:
    """Marks a string for translation where it is defined; it is translated where shown."""
    return message


class LocaleError(UserError):
    """An unknown language; the message lists the known ones."""


@lru_cache(maxsize=None)
def translations(code: str) -> gettext.NullTranslations:
    """The catalog of a language, compiled from its .po file (English: the source text)."""
    if code == "en":
        return gettext.NullTranslations()
    if code not in LOCALES:
        raise LocaleError(f"locale must be one of {', '.join(LOCALES)}, not {code!r}")
    with (LOCALE_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        catalog = read_po(po, locale=code, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)  # a fuzzy guess is never shown
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


class Lang:
    """One language and calendar: `gettext`, and every value formatted for its reader."""

    def __init__(self, code: str = "en", calendar: str = "") -> None:
        self.translations = translations(code)
        self.code = code
        self.calendar = calendar_for(calendar, code)
        self.rtl = code in RTL
        self.dir = "rtl" if self.rtl else "ltr"
        self.start, self.end = ("right", "left") if self.rtl else ("left", "right")
        self._babel = Locale.parse(code)
        numbering = self._babel.default_numbering_system
        self._digits = str.maketrans("0123456789", NATIVE_DIGITS.get(numbering, "0123456789"))
        self._percent = (NBSP + "%") if code == "en" else \
            self._babel.number_symbols[numbering]["percentSign"]
        self._numbering = numbering
        self.comma = self.gettext(", ")  # between the items of a list

    # ---------------------------------------------------------------- text
    def gettext(self, message: str, **values: Any) -> str:
        text = self.translations.gettext(message)
        return _fill(text, values) if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        text = self.translations.ngettext(singular, plural, n)
        return _fill(text, {"num": self.count(n), **values})

    def digits(self, text: str) -> str:
        """The ASCII digits of a text as this language writes them."""
        return text.translate(self._digits)

    # ---------------------------------------------------------------- numbers
    def number(self, value: float, decimals: int = 0) -> str:
        pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
        return self.digits(format_decimal(value, format=pattern, locale=self._babel,
                                          numbering_system=self._numbering))

    def count(self, value: float | None) -> str:
        return DASH if value is None else self.number(value)

    def pct(self, value: float | None) -> str:
        return DASH if value is None else self.number(value, 1) + self._percent

    def duration(self, value: float | None) -> str:
        """Seconds as "25 s", "4:47" (m:ss) or "8:05:00" (h:mm:ss)."""
        if value is None:
            return DASH
        seconds = round(value)
        if seconds < 60:
            return self.gettext("%(seconds)s\u00a0s", seconds=self.number(seconds))
        hours, rest = divmod(seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
        return self.digits(clock)

    def fmt(self, key: str, value: float | None) -> str:
        """One KPI value as people read it, by the unit its name ends in."""
        if key.endswith("_pct"):
            return self.pct(value)
        if key.endswith("_s"):
            return self.duration(value)
        if key in ("csat_avg",):
            return DASH if value is None else self.number(value, 2)
        if key in ("calls_per_hour", "agents_staffed"):
            return DASH if value is None else self.number(value, 1)
        return self.count(value)

    def signed(self, key: str, delta: float) -> str:
        """A change: "+2.1 pt" (percentage points), "−8 s" (Persian says "more", "less")."""
        amount = self.gettext("%(points)s\u00a0pt", points=self.number(abs(delta), 1)) \
            if key.endswith("_pct") else self.fmt(key, abs(delta))
        if delta > 0:
            return self.gettext("+%(amount)s", amount=amount)
        if delta < 0:
            return self.gettext("−%(amount)s", amount=amount)
        return self.gettext("±%(amount)s", amount=amount)

    # ---------------------------------------------------------------- dates
    def day(self, day: dt.date) -> str:
        """"Tuesday 24 November 2026"; Jalali: "سه‌شنبه ۳ آذر ۱۴۰۵"."""
        return f"{self.weekday(day)} {self.day_month(day)} {self.year(day)}"

    def short_day(self, day: dt.date) -> str:
        """"Tue 24 Nov" for a table row; Persian keeps whole names ("سه‌شنبه ۳ آذر")."""
        if self.calendar == JALALI:
            return f"{self.weekday(day, short=True)} {self.day_month(day, short=True)}"
        return self.digits(format_date(day, "EEE d MMM", locale=self._babel))

    def day_month(self, day: dt.date, short: bool = False) -> str:
        if self.calendar == JALALI:
            j = jalali(day)
            months = _jalali_names(self.code, "months_short" if short else "months")
            return self.digits(f"{j.day} {months[j.month - 1]}")
        return self.digits(format_date(day, "d MMM" if short else "d MMMM",
                                       locale=self._babel))

    def year(self, day: dt.date) -> str:
        return self.digits(str(jalali(day).year if self.calendar == JALALI else day.year))

    def weekday(self, day: dt.date, short: bool = False) -> str:
        if self.calendar == JALALI:
            names = _jalali_names(self.code, "weekdays_short" if short else "weekdays")
            return names[jalali(day).weekday()]
        return format_date(day, "EEE" if short else "EEEE", locale=self._babel)

    def month(self, day: dt.date) -> str:
        """"November 2026"; Jalali: "آذر ۱۴۰۵"."""
        if self.calendar == JALALI:
            return f"{_jalali_names(self.code, 'months')[jalali(day).month - 1]} {self.year(day)}"
        return self.digits(format_date(day, "LLLL y", locale=self._babel))

    def date(self, day: dt.date) -> str:
        """"24 Nov 2026"; Jalali: "۳ آذر ۱۴۰۵"."""
        return f"{self.day_month(day, short=not self.rtl)} {self.year(day)}"

    def day_range(self, first: dt.date, last: dt.date) -> str:
        """"16 Nov 2026 – 22 Nov 2026"."""
        return " – ".join(self.date(d) for d in (first, last))

    def days(self, first: dt.date, last: dt.date) -> str:
        """One day as "24 Nov 2026", several as a range."""
        return self.date(first) if first == last else self.day_range(first, last)

    def time(self, moment: dt.datetime) -> str:
        return self.digits(f"{moment:%H:%M}")


def _fill(text: str, values: dict[str, Any]) -> str:
    """A translation's placeholders filled in. When a value is markup (a name isolated for
    an HTML page), the sentence becomes markup: its text and every plain value escaped."""
    if any(isinstance(value, Markup) for value in values.values()):
        return escape(text) % values
    return text % values


def _jalali_names(code: str, which: str) -> list[str]:
    """jdatetime's Jalali month and weekday names (weekdays from Saturday)."""
    suffix = "fa" if code == "fa" else "en"
    if which == "months_short" and suffix == "fa":
        which = "months"  # Persian month names are short already
    if which == "weekdays_short" and suffix == "fa":
        which = "weekdays"
    names: list[str] = getattr(jdatetime.date, f"j_{which}_{suffix}")
    return names


def clean(value: Any) -> str:
    """A name with the bidi controls it may carry removed."""
    return str(value).translate(BIDI_CONTROLS)


def isolate_text(value: Any) -> str:
    """A name for plain text (mail summary, subject, a command's message): controls removed,
    Unicode isolate."""
    return FSI + clean(value) + PDI


def lang(code: str = "en", calendar: str = "") -> Lang:
    return _lang(code, calendar)


@lru_cache(maxsize=None)
def _lang(code: str, calendar: str) -> Lang:
    return Lang(code, calendar)
