"""English: written forms to what a person would say (money, numbers, units, codes, symbols...).

Rules are tried in the order of ``RULES``, leftmost match first; the earlier ones are the more
specific readings of the same digits (a phone number before a range, a date before a fraction,
a price before a plain number).  Each rule rewrites only what it must: in "5 kg" the number and
the unit are two pieces, so each caller word keeps its own speech.
"""

from __future__ import annotations

import re

from .en_codes import ID_RULES, WEB_AND_PHONE_RULES, spell
from .en_dates import DATE_RULES, TIME_RULES, month_name, previous_word
from .en_words import WORD_RULES
from .normalize import Normalized, Piece, Rule, RuleSet, Scan, alternation, register
from .numbers_en import (
    cardinal,
    decimal,
    digits,
    fraction,
    number,
    ordinal,
    pairs,
    plural,
    year,
)
from .tables_en import (
    ATTACHED_ONLY_UNITS,
    CURRENCIES,
    MONTHS,
    PER,
    SCALES,
    UNITS,
    WEEKDAYS,
)

__all__ = ["RULES", "normalize_en", "spell"]


_NUMERIC_KINDS = frozenset({"number", "money", "time"})
_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_SYMBOL_CURRENCY = r"US\$|C\$|A\$|[$€£¥₹₩]"
_CODE_CURRENCY = r"USD|EUR|GBP|JPY|CAD|AUD|INR|CHF"
_SCALE = r"(?:\s(?:thousand|million|billion|trillion)\b|(?:k|K|m|M|mn|MM|b|B|bn|BN|T)(?!\w))"


# --- money ----------------------------------------------------------------------------------------


_ADJECTIVAL = re.compile(r"(?:^|\s)[Aa]n?\s+$")


def adjectival(text: str, start: int) -> bool:
    """ "a 10 km run", "a $5 fee": a measure before a noun is said in the singular."""
    return _ADJECTIVAL.search(text, max(0, start - 8), start) is not None


def _amount_words(
    amount: str, scale: str | None, names: tuple[str, str, str, str], single: bool = False
) -> str:
    one, many, cent, cents = names
    if single and "." not in amount:
        many = one
    if scale:
        return f"{number(amount)} {SCALES[scale.strip()]} {many}"
    whole, _, frac = amount.replace(",", "").partition(".")
    if len(frac) > 2 or (frac and not cent):
        return f"{decimal(amount)} {many}"
    units = int(whole or "0")
    hundredths = int(frac.ljust(2, "0")) if frac else 0
    if units == 0 and hundredths:
        return f"{cardinal(hundredths)} {cent if hundredths == 1 else cents}"
    said = f"{cardinal(units)} {one if units == 1 else many}"
    if hundredths:
        said += f" and {cardinal(hundredths)} {cent if hundredths == 1 else cents}"
    return said


def _money(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    names = CURRENCIES[m["cur"]]
    if m["amt2"]:
        if m["scale"] and not m["scale2"]:
            return None
        low = _amount_words(m["amt"], m["scale"], names)
        high = _amount_words(m["amt2"], m["scale2"], names)
        if not m["scale"] and "." not in m["amt"] + m["amt2"]:
            low = number(m["amt"])  # "$5-10": five to ten dollars
        said = f"{low} to {high}"
    else:
        single = adjectival(scan.text, m.start())
        said = _amount_words(m["amt"], m["scale"], names, single)
    if m["neg"]:
        said = "minus " + said
    return [(m.start(), m.end(), said)]


def _per(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), "per " + PER[m["p"]])]


# --- numbers -------------------------------------------------------------------------------------

_DECADE_CUES = frozenset("the early late mid your my his her their our in".split())


def _decade(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    n = m["n"]
    value = int(n)
    if len(n) == 4 and 1000 <= value <= 2090:
        said = year(value)
    elif value in (100, 1000):
        said = cardinal(value).split()[-1]
    elif (
        len(n) == 2
        and value >= 10
        and (
            m.group().startswith(("'", "\u2019"))
            or previous_word(scan.text, m.start()).lower().rstrip("-") in _DECADE_CUES
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
)
_YEAR_FOLLOWS = re.compile(r"[\"')\]]*(?:$|[.,;:!?)])|\s+(?:was|is|saw|will|had|has|brought)\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)[\"'(]?$")


def _is_year(text: str, m: re.Match[str], value: int) -> bool:
    if not 1000 <= value <= 2099:
        return False
    if previous_word(text, m.start()).lower() in _YEAR_CUES:
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


def _count_before(text: str, end: int) -> str:
    """The written number a unit follows; "1" when the measure is adjectival ("a 10 km run")."""
    found = _COUNT_BEFORE.search(text, max(0, end - 24), end)
    if found is None:
        return ""
    return "1" if adjectival(text, found.start()) else found.group(1)


def _unit(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    if scan.last_kind not in ("number", "money") or not scan.after_previous(m.start()):
        return None
    table = UNITS if m["u"] in UNITS else ATTACHED_ONLY_UNITS
    one, many = table[m["u"]]
    return [(m.start("u"), m.end("u"), plural(_count_before(scan.text, m.start("u")), one, many))]


def _degree(m: re.Match[str], scan: Scan) -> list[Piece]:
    count = _count_before(scan.text, m.start())
    said = plural(count, "degree", "degrees")
    scale = m["scale"] or m["scale2"]
    if scale:
        said += " Celsius" if scale in "C\u2103" else " Fahrenheit"
    return [(m.start("deg"), m.end(), said)]


def _percent(m: re.Match[str], scan: Scan) -> list[Piece]:
    group = "p" if m["p"] else "p2"
    return [(m.start(group), m.end(group), "percent")]


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
    Rule(
        "money",
        rf"(?<![\w$€£¥])(?P<neg>[-\u2212])?(?P<cur>{_SYMBOL_CURRENCY})\s?(?P<amt>{_AMOUNT})"
        rf"(?P<scale>{_SCALE})?(?:\s?[-\u2013]\s?(?:{_SYMBOL_CURRENCY})?(?P<amt2>{_AMOUNT})"
        rf"(?P<scale2>{_SCALE})?)?",
        _money,
        "money",
    ),
    Rule(
        "money_code",
        rf"\b(?P<cur>{_CODE_CURRENCY})\s?(?P<neg>-)?(?P<amt>{_AMOUNT})(?P<scale>{_SCALE})?"
        r"(?P<amt2>(?!))?(?P<scale2>(?!))?",
        _money,
        "money",
    ),
    Rule(
        "money_after",
        rf"(?<![\w.,])(?P<neg>-)?(?P<amt>{_AMOUNT})(?P<scale>{_SCALE})?\s?"
        rf"(?P<cur>{_CODE_CURRENCY}|€|£)(?!\w)(?P<amt2>(?!))?(?P<scale2>(?!))?",
        _money,
        "money",
    ),
    Rule("per", rf"(?<=[\w.])/(?P<p>{alternation(PER)})(?!\w)", _per),
    Rule("decade", r"(?<![\w.$])['\u2019]?(?P<n>\d{2}|\d{3}|\d{4})s(?!\w)", _decade, "number"),
    Rule(
        "mixed_fraction",
        r"(?<![\w.,/])(?P<w>\d+)\s(?P<n>\d{1,2})/(?P<d>\d{1,3})(?![\w/]|[.,]\d)",
        _mixed,
        "number",
    ),
    Rule(
        "fraction",
        r"(?<![\w.,/])(?P<n>\d{1,3})/(?P<d>\d{1,3})(?![\w/]|[.,]\d)",
        _fraction,
        "number",
    ),
    Rule(
        "ordinal",
        r"(?<![\w.,])(?P<n>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)(?!\w)",
        _ordinal,
        "number",
    ),
    *ID_RULES,
    *WORD_RULES,
    Rule(
        "number",
        r"(?:(?<![\w.])|(?<=\dx))(?:(?<![\w.,)\]%-])(?P<neg>[-\u2212]))?(?P<n>\d{1,3}(?:,\d{3})+(?:\.\d+)?"
        r"|\d+(?:\.\d+)*|\.\d+)",
        _number,
        "number",
    ),
    Rule("by", r"(?<=\d)x(?=\d)", _by),
    Rule("unit", rf"(?<=\d)\s?(?P<u>{_UNIT_NAMES})(?![\w])", _unit, "number"),
    Rule("unit_attached", r"(?<=\d)(?P<u>in|t)(?![\w])", _unit, "number"),
    Rule(
        "degree",
        r"(?<=\d)\s?(?P<deg>°\s?(?P<scale>[CF](?![\w]))?|(?P<scale2>[\u2103\u2109]))",
        _degree,
        "number",
    ),
    Rule(
        "weekday_range",
        rf"\b(?P<a>{_WEEKDAY})\.?\s?[-\u2013]\s?(?P<b>{_WEEKDAY})\.?(?!\w)",
        _weekday_range,
        "date",
    ),
    Rule("percent", r"(?<=\d)\s?(?P<p>%)|(?P<p2>%)", _percent, "number"),
    Rule("dash", r"(?<=[\w%.])\s?(?P<d>[-\u2013\u2014])\s?(?=[$€£¥]?\.?\d)", _dash),
]

_ENGLISH = RuleSet(RULES)


def normalize_en(text: str) -> Normalized:
    """What a person would say for English ``text`` (see the module docstring)."""
    return _ENGLISH.apply(text)


register("en", normalize_en)
