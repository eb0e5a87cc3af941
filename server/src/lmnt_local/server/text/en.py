"""English: written forms to what a person would say (money, numbers, units, codes, symbols...).

Rules are tried in the order of ``RULES``, leftmost match first; the earlier ones are the more
specific readings of the same digits (a phone number before a range, a date before a fraction,
a price before a plain number).  Each rule rewrites only what it must: in "5 kg" the number and
the unit are two pieces, so each caller word keeps its own speech.
"""

from __future__ import annotations

import re

from lmnt_local.server.text.en_codes import ID_RULES, WEB_AND_PHONE_RULES, spell
from lmnt_local.server.text.en_dates import DATE_RULES, TIME_RULES, month_name, previous_word
from lmnt_local.server.text.en_money import MONEY_RULES, adjectival
from lmnt_local.server.text.en_words import WORD_RULES
from lmnt_local.server.text.normalizer import (
    Normalized,
    Piece,
    Rule,
    RuleSet,
    Scan,
    alternation,
    register,
)
from lmnt_local.server.text.numbers_en import (
    cardinal,
    digits,
    fraction,
    number,
    ordinal,
    pairs,
    plural,
    year,
)
from lmnt_local.server.text.tables_en import (
    ATTACHED_ONLY_UNITS,
    MONTHS,
    UNITS,
    WEEKDAYS,
)

__all__ = ["RULES", "normalize_en", "say_as", "spell"]


_NUMERIC_KINDS = frozenset({"number", "money", "time"})
# --- numbers -------------------------------------------------------------------------------------

_DECADE_CUES = frozenset("the early late mid your my his her their our in".split())
_OF_AFTER = re.compile(r"\s+of\b")
_DECADE_PREFIX = re.compile(r"\b(?:mid|early|late)-$", re.IGNORECASE)  # "the mid-80s"


def _decade(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    n = m["n"]
    value = int(n)
    if len(n) == 4 and 1000 <= value <= 2090:
        said = year(value)
    elif value in (100, 1000):
        said = cardinal(value).split()[-1]
    elif value == 10 and _OF_AFTER.match(scan.text, m.end()):
        said = "ten"  # "10s of thousands": tens of thousands
    elif (
        len(n) == 2
        and value >= 10
        and (
            m.group().startswith(("'", "\u2019"))
            or previous_word(scan.text, m.start()).lower().rstrip("-") in _DECADE_CUES
            or _DECADE_PREFIX.search(scan.text, max(0, m.start() - 6), m.start()) is not None
        )
    ):
        said = cardinal(value)
    else:
        return None
    said = said[:-1] + "ies" if said.endswith("y") else said + "s"
    return [(m.start(), m.end(), said)]


_SPECIAL_FRACTIONS = {"24/7": "twenty-four seven", "50/50": "fifty-fifty", "9/11": "nine eleven"}
_COMMON_DENOMINATORS = frozenset({2, 3, 4, 5, 6, 8, 10, 16, 32, 64, 100})


def _fraction(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    special = _SPECIAL_FRACTIONS.get(m.group())
    if special:
        return [(m.start(), m.end(), special)]
    a, b = int(m["n"]), int(m["d"])
    if a + b == 100 and a % 10 == 0 and b % 10 == 0:  # "80/20": eighty-twenty
        return [(m.start(), m.end(), f"{cardinal(a)}-{cardinal(b)}")]
    if b == 0:
        return None
    if a < b and b in _COMMON_DENOMINATORS:
        said = fraction(a, b)
    elif 1 <= a <= 12 and 1 <= b <= 31:
        said = f"{month_name(tuple(MONTHS)[a - 1])} {ordinal(b)}"
    else:
        said = f"{cardinal(a)} over {cardinal(b)}"
    return [(m.start(), m.end(), said)]


def _mixed(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    a, b = int(m["n"]), int(m["d"])
    if not 0 < a < b or b not in _COMMON_DENOMINATORS:
        return None
    part = {(1, 2): "a half", (1, 4): "a quarter"}.get((a, b)) or fraction(a, b)
    return [(m.start(), m.end(), f"{number(m['w'])} and {part}")]


def _rating(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), f"{number(m['a'])} out of {cardinal(int(m['b']))}")]


def _ordinal(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), ordinal(int(m["n"].replace(",", ""))))]


_YEAR_CUES = frozenset(
    "in since by from until till of year circa before after during around early late mid "
    "spring summer fall autumn winter class copyright ©".split()
    + [name.lower() for name in MONTHS.values()]
    + list(MONTHS)
)
_STREET_AFTER = re.compile(
    r"\s+(?:[A-Z][a-z]+\s+){1,2}(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Ln|Lane|Dr|Drive"
    r"|Way|Ct|Court|Pl|Place|Pkwy|Parkway|Hwy|Highway|Ter|Terrace|Cir|Circle)\b"
    r"|\s+Broadway\b"
)
_YEAR_FOLLOWS = re.compile(r"[\"')\]]*(?:$|[.,;:!?)])|\s+(?:was|is|saw|will|had|has|brought)\b")
_QUARTER = re.compile(r"[qh][1-4]|fy|fiscal")
_FLIGHT_BEFORE = re.compile(r"\b[Ff]light\s+(?:[A-Z0-9]{2}\s?)?$")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)[\"'(]?$")


def _is_year(text: str, m: re.Match[str], value: int) -> bool:
    if not 1000 <= value <= 2099:
        return False
    before = previous_word(text, m.start()).lower()
    if before in _YEAR_CUES or (before == "the" and 1900 <= value <= 2099):
        return True
    if _QUARTER.fullmatch(before):  # "Q1 2026", "FY 2027"
        return True
    if (
        _SENTENCE_START.search(text, max(0, m.start() - 4), m.start())
        and text[m.end() : m.end() + 1] == " "
    ):
        return True
    return _YEAR_FOLLOWS.match(text, m.end()) is not None


def _number(m: re.Match[str], scan: Scan) -> list[Piece]:
    n = m["n"]
    text = scan.text
    if "," not in n and "." not in n:
        if n in ("911", "411"):
            said = digits(n)
        elif (len(n) > 1 and n[0] == "0") or len(n) >= 10:
            said = digits(n)
        elif len(n) >= 5 and not n.endswith("00"):
            said = digits(n)  # "55555", "94103": codes; amounts are written "12,345" or round
        elif _FLIGHT_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            said = pairs(n)  # "flight 405": four oh five
        elif _STREET_AFTER.match(text, m.end()):
            said = pairs(n)
        elif len(n) == 4 and _is_year(text, m, int(n)):
            said = year(int(n))
        else:
            said = cardinal(int(n))
    else:
        said = number(n)
    if m["neg"]:
        said = "minus " + said
    return [(m.start(), m.end(), said)]


_COUNT_BEFORE = re.compile(r"(-?[\d,]*\.?\d+)\s?$")


def _count_before(text: str, end: int, unit_end: int) -> str:
    """The written number a unit follows; "1" when the measure is adjectival ("a 10 km run")."""
    found = _COUNT_BEFORE.search(text, max(0, end - 24), end)
    if found is None:
        return ""
    return "1" if adjectival(text, found.start(), unit_end) else found.group(1)


_HOURS_BEFORE = re.compile(r"\d\s?(?:h|hr|hrs|hours?)\s*[\d.]+\s?$")


def _unit(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    if scan.last_kind not in ("number", "money") or not scan.after_previous(m.start()):
        return None
    table = UNITS if m["u"] in UNITS else ATTACHED_ONLY_UNITS
    one, many = table[m["u"]]
    text, start = scan.text, m.start("u")
    if m["u"] == "m" and _HOURS_BEFORE.search(text, max(0, start - 16), start):
        one, many = "minute", "minutes"  # "5h 30m"
    return [(start, m.end("u"), plural(_count_before(text, start, m.end("u")), one, many))]


def _degree(m: re.Match[str], scan: Scan) -> list[Piece]:
    count = _count_before(scan.text, m.start(), m.end())
    said = plural(count, "degree", "degrees")
    scale = m["scale"] or m["scale2"]
    if scale:
        said += " Celsius" if scale in "C\u2103" else " Fahrenheit"
    return [(m.start("deg"), m.end(), said)]


def _percent(m: re.Match[str], scan: Scan) -> list[Piece]:
    group = "p" if m["p"] else "p2"
    return [(m.start(group), m.end(group), "percent")]


def _score(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), f"{cardinal(int(m['a']))} to {cardinal(int(m['b']))}")]


def _ip_address(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), " dot ".join(pairs(part) for part in m.group().split(".")))]


def _height(m: re.Match[str], scan: Scan) -> list[Piece]:
    inches = int(m["in"])
    said = f"{cardinal(int(m['ft']))} foot" + (f" {cardinal(inches)}" if inches else "")
    return [(m.start(), m.end(), said)]


def _by(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), "by")]


def _dash(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    if scan.last_kind not in _NUMERIC_KINDS or not scan.after_previous(m.start()):
        return None
    return [(m.start("d"), m.end("d"), "to")]


_UNIT_NAMES = alternation(UNITS)
_DAY_NAMES = {**WEEKDAYS, **{name: name for name in WEEKDAYS.values()}}
_WEEKDAY = alternation(_DAY_NAMES)


def _weekday_range(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), f"{_DAY_NAMES[m['a']]} to {_DAY_NAMES[m['b']]}")]


RULES = [
    *WEB_AND_PHONE_RULES,
    *DATE_RULES,
    *TIME_RULES,
    *MONEY_RULES,
    Rule(
        "decade",
        r"(?<![\w.$])['\u2019]?(?P<n>\d{2}|\d{3}|\d{4})s(?!\w)",
        _decade,
        "number",
        first=r"'\u2019\d",
    ),
    Rule(
        "rating",
        r"(?<![\w.,/])(?P<a>\d+\.\d)/(?P<b>5|10|100)(?![\w/]|[.,]\d)",
        _rating,
        "number",
        first=r"\d",
    ),
    Rule(
        "mixed_fraction",
        r"(?<![\w.,/])(?P<w>\d+)\s(?P<n>\d{1,2})/(?P<d>\d{1,3})(?![\w/]|[.,]\d)",
        _mixed,
        "number",
        first=r"\d",
    ),
    Rule(
        "fraction",
        r"(?<![\w.,/])(?P<n>\d{1,3})/(?P<d>\d{1,3})(?![\w/]|[.,]\d)",
        _fraction,
        "number",
        first=r"\d",
    ),
    Rule(
        "ordinal",
        r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)(?!\w)",
        _ordinal,
        "number",
        first=r"\d",
    ),
    *ID_RULES,
    *WORD_RULES,
    Rule(
        "score",  # "3:2", "16:9": a score or a ratio (a time has two digits after the colon)
        r"(?<![\w:.])(?P<a>\d{1,2}):(?P<b>\d)(?![\w:]|[.,]\d)",
        _score,
        first=r"\d",
    ),
    Rule(
        "ip_address",
        r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.]|\.\d)",
        _ip_address,
        first=r"\d",
    ),
    Rule(
        "height",
        r"(?<![\w.])(?P<ft>[1-9])['\u2019\u2032](?P<in>\d|1[01])(?:\"|\u2033|'')?(?![\w])",
        _height,
        first=r"\d",
    ),
    Rule(
        "number",
        r"(?:(?<![\w.])|(?<=\dx))(?:(?<![\w.,)\]%-])(?P<neg>[-\u2212]))?(?P<n>\d{1,3}(?:,\d{3})+(?:\.\d+)?"
        r"|\d+(?:\.\d+)*|\.\d+)",
        _number,
        "number",
        first=r"\-\u2212\d.",
    ),
    Rule("by", r"(?<=\d)x(?=\d)", _by, first=r"x"),
    Rule("unit", rf"(?<=\d)\s?(?P<u>{_UNIT_NAMES})(?![\w])", _unit, "number", first=r"\sA-Za-z"),
    Rule("unit_attached", r"(?<=\d)(?P<u>in|t)(?![\w])", _unit, "number", first=r"it"),
    Rule(
        "degree",
        r"(?<=\d)\s?(?P<deg>°\s?(?P<scale>[CF](?![\w]))?|(?P<scale2>[\u2103\u2109]))",
        _degree,
        "number",
        first=r"\s°\u2103\u2109",
    ),
    Rule(
        "weekday_range",
        rf"\b(?P<a>{_WEEKDAY})\.?\s?[-\u2013]\s?(?P<b>{_WEEKDAY})\.?(?!\w)",
        _weekday_range,
        "date",
        first=r"MTWFS",
    ),
    Rule("percent", r"(?<=\d)\s?(?P<p>%)|(?P<p2>%)", _percent, "number", first=r"\s%"),
    Rule(
        "dash",
        r"(?<=[\w%.])\s?(?P<d>[-\u2013\u2014])\s?(?=[$€£¥]?\.?\d)",
        _dash,
        first=r"\s\-\u2013\u2014",
    ),
]

_ENGLISH = RuleSet(RULES)


_DIGIT_GROUPS = re.compile(r"\d+")
_WHOLE_NUMBER = re.compile(r"[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ORDINAL_TEXT = re.compile(r"(\d+)(?:st|nd|rd|th)?")


def say_as(interpret_as: str, text: str) -> str | None:
    """What to say for ``text`` read as SSML's ``say-as interpret-as`` asks, None when it cannot.

    For the markup layer: "characters"/"spell-out" spell, "telephone" reads digit groups,
    "digits" reads digits one by one, "cardinal"/"ordinal" read a number, "date" reads a date.
    """
    text = text.strip()
    kind = interpret_as.strip().lower()
    if kind in ("characters", "spell-out", "verbatim"):
        return spell(text) if text.isascii() and text.replace("-", "").isalnum() else None
    if kind == "telephone":
        groups = _DIGIT_GROUPS.findall(text)
        return ", ".join(digits(g) for g in groups) or None
    if kind == "digits":
        return digits(text) or None
    if kind == "cardinal" and _WHOLE_NUMBER.fullmatch(text):
        return number(text)
    if kind == "ordinal":
        found = _ORDINAL_TEXT.fullmatch(text)
        return ordinal(int(found.group(1))) if found else None
    if kind == "date":
        said = _ENGLISH.apply(text)
        return said.spoken if said.changed else None
    return None


def normalize_en(text: str) -> Normalized:
    """What a person would say for English ``text`` (see the module docstring)."""
    return _ENGLISH.apply(text)


register("en", normalize_en)
