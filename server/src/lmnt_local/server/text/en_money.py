"""English money: "$5.50", "€20", "£12.99", "¥500", "$1.2M", "-$42.10", "$5-10", "20 EUR".

"$5.50" is five dollars and fifty cents; cents alone are cents ("$0.99"); a scale reads the
amount as a number ("$1.2M": one point two million dollars); a price before a noun after "a" or
"the" is singular ("a $25 fee": a twenty-five dollar fee).
"""

from __future__ import annotations

import re

from lmnt_local.server.text.normalizer import Piece, Rule, Scan, alternation
from lmnt_local.server.text.numbers_en import cardinal, decimal, number
from lmnt_local.server.text.tables_en import CURRENCIES, PER, SCALES

__all__ = ["MONEY_RULES", "adjectival"]

_AMOUNT = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
_SYMBOL_CURRENCY = r"US\$|C\$|A\$|[$€£¥₹₩]"
_CODE_CURRENCY = r"USD|EUR|GBP|JPY|CAD|AUD|INR|CHF"
_SCALE = r"(?:\s(?:thousand|million|billion|trillion)\b|(?:k|K|m|M|mn|MM|b|B|bn|BN|T)(?!\w))"


_ARTICLE_BEFORE = re.compile(r"(?:^|\s)[Aa]n?\s+$")
_DETERMINER_BEFORE = re.compile(
    r"(?:^|\s)(?:[Tt]he|[Yy]our|[Mm]y|[Oo]ur|[Tt]heir|[Hh]is|[Hh]er|[Tt]his|[Tt]hat|[Ee]ach|[Ee]very)\s+$"
)
# words that follow a measure without it being an adjective: "the 5 kg of rice", "the 5 km left"
_NOT_A_NOUN = frozenset(
    "of per in on at to for from and or with left remaining total each a an the is are was were "
    "will would can could should may might ago away long wide tall high deep old later before "
    "after over under more less than then so free max min up down off out into by now today "
    "tonight tomorrow yet still behind ahead apart back extra or nor but if when".split()
)
_WORD_AFTER = re.compile(r"\s+([a-z]+)\b")


def adjectival(text: str, start: int, end: int) -> bool:
    """A measure before a noun is said in the singular: "a 10 km run", "the 5 kg box".

    After "a"/"an" it always is; after "the", "your", "this"... only when a noun follows
    ("your 10 GB plan" but "the 5 kg of rice").
    """
    if _ARTICLE_BEFORE.search(text, max(0, start - 8), start) is not None:
        return True
    if _DETERMINER_BEFORE.search(text, max(0, start - 8), start) is None:
        return False
    after = _WORD_AFTER.match(text, end)
    return after is not None and after.group(1) not in _NOT_A_NOUN


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


_DECIMAL_COMMA = re.compile(r"\d+,\d\d")


def _money(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    names = CURRENCIES[m["cur"]]
    amount = m["amt"]
    if m["cur"] == "€" and _DECIMAL_COMMA.fullmatch(amount):
        amount = amount.replace(",", ".")  # "5,50 €": the euro countries' decimal comma
    if m["amt2"]:
        if m["scale"] and not m["scale2"]:
            return None
        low = _amount_words(m["amt"], m["scale"], names)
        high = _amount_words(m["amt2"], m["scale2"], names)
        if not m["scale"] and "." not in m["amt"] + m["amt2"]:
            low = number(m["amt"])  # "$5-10": five to ten dollars
        said = f"{low} to {high}"
    else:
        single = adjectival(scan.text, m.start(), m.end())
        said = _amount_words(amount, m["scale"], names, single)
    if m["neg"]:
        said = "minus " + said
    return [(m.start(), m.end(), said)]


def _per(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), "per " + PER[m["p"]])]


MONEY_RULES = [
    Rule(
        "money",
        rf"(?<![\w$€£¥])(?P<neg>[-\u2212])?(?P<cur>{_SYMBOL_CURRENCY})\s?(?P<amt>{_AMOUNT})"
        rf"(?P<scale>{_SCALE})?(?:\s?[-\u2013]\s?(?:{_SYMBOL_CURRENCY})?(?P<amt2>{_AMOUNT})"
        rf"(?P<scale2>{_SCALE})?)?",
        _money,
        "money",
        first=r"\-\u2212$€£¥₹₩UCA",
    ),
    Rule(
        "money_code",
        rf"\b(?P<cur>{_CODE_CURRENCY})\s?(?P<neg>-)?(?P<amt>{_AMOUNT})(?P<scale>{_SCALE})?"
        r"(?P<amt2>(?!))?(?P<scale2>(?!))?",
        _money,
        "money",
        first=r"UEGJCAI",
    ),
    Rule(
        "money_after",
        rf"(?<![\w.,])(?P<neg>-)?(?P<amt>\d+,\d\d(?=\s?€)|{_AMOUNT})(?P<scale>{_SCALE})?\s?"
        rf"(?P<cur>{_CODE_CURRENCY}|€|£)(?!\w)(?P<amt2>(?!))?(?P<scale2>(?!))?",
        _money,
        "money",
        first=r"\-\d.",
    ),
    Rule("per", rf"(?<=[\w.])/(?P<p>{alternation(PER)})(?!\w)", _per, first=r"/"),
]
