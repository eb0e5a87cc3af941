"""English words that are not said as written: abbreviations, titles, Roman numerals, symbols."""

from __future__ import annotations

import re

from lmnt_local.server.text.en_dates import previous_word, sentence_ends_after
from lmnt_local.server.text.normalizer import Piece, Rule, Scan, alternation
from lmnt_local.server.text.numbers_en import cardinal, ordinal
from lmnt_local.server.text.tables_en import (
    ABBREVIATIONS,
    ORDINAL_CUES,
    REGNAL_NAMES,
    ROMAN_CARDINAL_CUES,
    STREET_SUFFIXES,
    SYMBOLS,
    TITLES,
)

__all__ = ["WORD_RULES", "roman_value"]


_ROMAN = r"(?=[MDCLXVI])M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def roman_value(numeral: str) -> int:
    total = 0
    for i, c in enumerate(numeral):
        value = _ROMAN_VALUES[c]
        following = _ROMAN_VALUES[numeral[i + 1]] if i + 1 < len(numeral) else 0
        total += -value if following > value else value
    return total


_CLAUSE_END = re.compile(r"[\"')\]]*(?:$|[.,;:!?])")
_TEXT_END = re.compile(r"[\"')\]]*\s*(?:$|\n)")
_START_OF_SENTENCE = re.compile(r"(?:^|[.!?]\s+)[\"'(]?$")
_FIRST_WORD = re.compile(r"(?:^|[.!?]\s+)[\"'(]?\S+\s+$")


def _lone_i_is_pronoun(m: re.Match[str], text: str) -> bool:
    """ "Elizabeth I" is a queen at the end of a clause; "Elizabeth I think" is a pronoun."""
    return m["num"] == "I" and _CLAUSE_END.match(text, m.end()) is None


def _regnal(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    if _lone_i_is_pronoun(m, scan.text):
        return None
    return [(m.start("num"), m.end("num"), "the " + ordinal(roman_value(m["num"])))]


def _roman_cardinal(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    return [(m.start("num"), m.end("num"), cardinal(roman_value(m["num"])))]


_HOUSE_NUMBER_BEFORE = re.compile(r"\d+[A-Za-z]?\s+(?:[A-Z][a-z]+\.?\s+){1,3}$")
_CAPITAL_AFTER = re.compile(r"\s+[A-Z]")
_ALWAYS_TITLE = frozenset({"Mr", "Mrs", "Ms", "Prof"})
_TITLE_ANYWAY = frozenset({"Mr", "Mrs", "Ms", "Dr", "Prof"})
_BARE_OK = frozenset({"Dr", "Mr", "Mrs", "Ms", "St", "Prof"})


def _title_or_street(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    """ "Dr. Smith" is a doctor, "Elm Dr." a drive; "St. Paul" a saint, "Main St." a street."""
    text = scan.text
    word, dot = m["t"], m["dot"] or ""
    before = previous_word(text, m.start())
    house = _HOUSE_NUMBER_BEFORE.search(text, max(0, m.start() - 60), m.start()) is not None
    start = m.start()
    start_of_sentence = _START_OF_SENTENCE.search(text, max(0, start - 8), start) is not None
    # "Visit St. Paul": the capital before starts the sentence, so it says nothing of a street
    first_word = _FIRST_WORD.search(text, max(0, start - 40), start) is not None
    capital_before = before[:1].isupper() and not start_of_sentence
    if capital_before and first_word and not house:
        capital_before = False
    capital_after = _CAPITAL_AFTER.match(text, m.end()) is not None
    if not dot and word not in _BARE_OK and word not in STREET_SUFFIXES:
        return None
    if (
        word in STREET_SUFFIXES
        and word not in _ALWAYS_TITLE
        and (house or (capital_before and (not capital_after or word != "Dr")))
    ):
        said = STREET_SUFFIXES[word]
        if dot and sentence_ends_after(text, m.end()):
            said += "."
        return [(m.start(), m.end(), said)]
    if word in TITLES and capital_after and (dot or word in _BARE_OK):
        return [(m.start(), m.end(), TITLES[word])]
    if dot and word in _TITLE_ANYWAY:  # "Mr. and Mrs. Garcia"
        return [(m.start(), m.end(), TITLES[word])]
    return None


_KEEP_FINAL_DOT = frozenset({"etc.", "Jr.", "Sr.", "Inc.", "approx."})


def _abbreviation(m: re.Match[str], scan: Scan) -> list[Piece]:
    written = m.group()
    said = ABBREVIATIONS[written]
    if written.endswith(".") and not said.endswith("."):
        at_end = _TEXT_END.match(scan.text, m.end()) is not None
        if at_end or (written in _KEEP_FINAL_DOT and sentence_ends_after(scan.text, m.end())):
            said += "."
    return [(m.start(), m.end(), said)]


def _with(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), "without" if m.group().endswith("o") else "with")]


def _symbol(m: re.Match[str], scan: Scan) -> list[Piece]:
    symbol = m.group()
    text = scan.text
    if symbol == "#":
        said = "hashtag"
    elif symbol == "<":
        said = "less than"
    elif symbol.endswith(">"):
        # "Settings > Privacy" is a path through menus; "5 > 3" a comparison
        digit_near = (
            text[m.start() - 1 : m.start()].isdigit() or text[m.end() + 1 : m.end() + 2].isdigit()
        )
        said = "greater than" if digit_near or not symbol.startswith(" ") else ","
        if said != ",":
            return [(m.end() - 1, m.end(), said)]
    elif symbol in "½¼¾⅓⅔⅛" and m.start() and text[m.start() - 1].isdigit():
        said = "and " + SYMBOLS[symbol].replace("one ", "a ", 1)
    else:
        said = SYMBOLS[symbol]
    return [(m.start(), m.end(), said)]


_TITLE_WORDS = sorted(set(TITLES) | set(STREET_SUFFIXES))
_SYMBOL_CHARS = "".join(re.escape(c) for c in SYMBOLS if c not in "~")

WORD_RULES = [
    Rule(
        "regnal",
        rf"\b(?:{alternation([*REGNAL_NAMES, *ORDINAL_CUES])})\s(?P<num>{_ROMAN})(?![\w'\u2019-])",
        _regnal,
        first=r"A-Z",
    ),
    Rule(
        "roman_cardinal",
        rf"(?<![\w.])(?:{alternation(ROMAN_CARDINAL_CUES)})\s(?P<num>{_ROMAN})(?![\w'\u2019-])",
        _roman_cardinal,
        first=r"A-Z",
    ),
    Rule(
        "title_or_street",
        rf"\b(?P<t>{alternation(_TITLE_WORDS)})(?P<dot>\.)?(?![\w'\u2019])",
        _title_or_street,
        first=r"A-Z",
    ),
    Rule("with", r"(?<![\w/])w/o?(?=[\s\w])", _with, first=r"w"),
    Rule(
        "abbreviation",
        rf"(?<![\w.])(?:{alternation(ABBREVIATIONS)})(?![\w'\u2019])",
        _abbreviation,
        first=r"A-Za-z",
    ),
    Rule(
        "symbol",
        rf"[{_SYMBOL_CHARS}]|#(?=[A-Za-z])|~(?=\s?\d)|(?<=\s)<(?=\s)|(?<=\S)\s>(?=\s)",
        _symbol,
    ),
]
