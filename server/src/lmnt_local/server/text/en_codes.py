"""English codes and addresses: web addresses, phone numbers, order numbers, ZIP codes, codes.

A person reads these out character by character or in digit groups, never as quantities:
"555-123-4567" is "five five five, one two three, four five six seven", "#4521" is "number four
five two one", "AB12C" is spelled.
"""

from __future__ import annotations

import re

from lmnt_local.server.text.normalizer import Piece, Rule, Scan
from lmnt_local.server.text.numbers_en import DIGIT_WORDS, cardinal, digits, pairs
from lmnt_local.server.text.tables_en import US_STATES

__all__ = ["ID_RULES", "WEB_AND_PHONE_RULES", "spell"]


def spell(code: str) -> str:
    """A code as a person reads it out: letters in capital runs, digits one by one.

    "AB12C" -> "AB one two C": a run of capitals reads as letters in every engine tried, where a
    lone "A" between spaces is read as the article.  Dashes become short pauses.
    """
    said: list[str] = []
    for part in re.findall(r"[A-Za-z]+|\d|-", code):
        if part == "-":
            if said:
                said[-1] += ","
        elif part.isdigit():
            said.append(DIGIT_WORDS[int(part)])
        else:
            said.append(part.upper())
    return " ".join(said)


# --- the web ------------------------------------------------------------------------------------

_SEPARATORS = {".": "dot", "-": "dash", "_": "underscore", "+": "plus", "/": "slash", ":": ""}


def _say_address(text: str) -> str:
    words: list[str] = []
    for part in re.findall(r"[A-Za-z]+|\d+|[._+/:-]", text):
        if part in _SEPARATORS:
            if _SEPARATORS[part]:
                words.append(_SEPARATORS[part])
        elif part.isdigit():
            words.append(digits(part) if len(part) > 2 or part[0] == "0" else cardinal(int(part)))
        elif part.lower() == "www":
            words.append("w w w")
        else:
            words.append(part.lower())
    return " ".join(words)


def _email(m: re.Match[str], scan: Scan) -> list[Piece]:
    local, _, domain = m.group().partition("@")
    return [(m.start(), m.end(), f"{_say_address(local)} at {_say_address(domain)}")]


def _url(m: re.Match[str], scan: Scan) -> list[Piece]:
    # the scheme and the query string are not said: "example dot com slash pricing"
    address = re.sub(r"^https?://", "", m.group().split("?", 1)[0], flags=re.IGNORECASE)
    return [(m.start(), m.end(), _say_address(address.rstrip("/")))]


_TLD = "com|org|net|io|ai|co|dev|app|gov|edu|us|uk|de|fr|ca|info|biz|me|tv|ly|sh|xyz|gg|fm"

# --- phone numbers, ids, codes ------------------------------------------------------------------


def _digit_group(group: str) -> str:
    if group in ("800", "900"):
        return cardinal(int(group))
    return digits(group)


def _phone(m: re.Match[str], scan: Scan) -> list[Piece]:
    groups = re.findall(r"\d+", m.group())
    said = ", ".join(_digit_group(g) for g in groups)
    if m.group().startswith("+"):
        said = "plus " + said
    return [(m.start(), m.end(), said)]


def _star(m: re.Match[str], scan: Scan) -> list[Piece]:
    return [(m.start(), m.end(), "star " + digits(m["n"]))]  # "*67": a phone service code


def _hash(m: re.Match[str], scan: Scan) -> list[Piece]:
    n = m["n"]
    said = cardinal(int(n)) if len(n) <= 2 and n[0] != "0" else digits(n)
    return [(m.start(), m.end(), "number " + said)]


def _number_word(m: re.Match[str], scan: Scan) -> list[Piece]:
    """ "No. 5": number five ("Nos. 5-7": numbers)."""
    return [(m.start(), m.end(), "numbers" if m.group().lower() == "nos." else "number")]


# cues that are ordinary words in lower case ("order 100 units", "in case 200 come"): an id
# only with a mark ("order #", "order number:") or capitalised ("Case 5567", "Room 204")
_ID_NEEDS_MARK = frozenset(
    {"order", "customer", "member", "account", "case", "room", "unit", "gate", "suite"}
)


_SAID_IN_PAIRS = frozenset({"room", "suite", "gate", "unit", "apartment", "apt."})


def _id(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    code = m["code"]
    if not any(c.isdigit() for c in code) or len(code) < 3:
        return None
    mark = m["mark"] or ""
    cue = m["cue"]
    if not mark.strip() and (cue.lower() == "order" or (cue in _ID_NEEDS_MARK)):
        return None
    if cue.lower() in _SAID_IN_PAIRS and code.isdigit():
        said = pairs(code)  # "Room 204": two oh four
    else:
        said = spell(code)
    pieces = [(m.start("code"), m.end("code"), said)]
    if m["mark"] and re.search(r"#|[Nn]o\.|[Nn]um\.", mark):
        pieces.append((m.start("mark"), m.end("mark"), "number"))
    return pieces


def _zip(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    if scan.text[max(0, m.start() - 3) : m.start() - 1] not in US_STATES:
        return None
    said = digits(m["zip"]) + (", " + digits(m["plus"]) if m["plus"] else "")
    return [(m.start(), m.end(), said)]


_UNIT_LIKE = re.compile(r"\d+(?:GB|MB|KB|TB|GHz|MHz|kHz|Hz|AM|PM|K|M|B|BN|W|V|L|T)")


_VANITY = re.compile(r"(?:1-)?8\d\d-[A-Z]{3,}")


def _code(m: re.Match[str], scan: Scan) -> list[Piece] | None:
    code = m.group()
    if _UNIT_LIKE.fullmatch(code):
        return None
    if _VANITY.fullmatch(code):  # "1-800-FLOWERS": one, eight hundred, Flowers
        *groups, word = code.split("-")
        return [(m.start(), m.end(), ", ".join([*map(_digit_group, groups), word.capitalize()]))]
    head = code.split("-", 1)[0]
    if "-" in code and len(head) >= 4 and head.isalpha():  # "COVID-19": a name and a number
        return None
    return [(m.start(), m.end(), spell(code))]


WEB_AND_PHONE_RULES = [
    Rule(
        "email",
        r"(?<![\w.+-])[A-Za-z0-9][\w.+-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
        r"\.[A-Za-z]{2,24}(?![\w-])",
        _email,
        first=r"A-Za-z0-9",
    ),
    Rule(
        "url",
        # labels bounded as DNS bounds them: no start in a long word scans to its end
        r"(?<![\w@.])(?:(?:https?://|www\.)(?:[\w-]{1,63}\.){1,8}[A-Za-z]{2,24}"
        r"|(?:[\w-]{1,63}\.){1,8}(?:" + _TLD + r"))(?::\d+)?(?:/(?:[\w~%+-]|[./](?=[\w~%+-]))*)?"
        r"(?:\?[\w=&%+-]+(?:\.[\w=&%+-]+)*)?(?![\w-])",
        _url,
        first=r"\w",
    ),
    Rule(
        "phone",
        r"(?<![\w+$€£¥.,/-])(?:\+?1[-. ])?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"
        r"(?![\w-]|[.,]\d)",
        _phone,
        first=r"\d+(",
    ),
    Rule(
        "phone_intl", r"(?<![\w+])\+\d{1,3}(?:[ -]\d{1,4}){2,5}(?![\w-]|[.,]\d)", _phone, first=r"+"
    ),
    Rule("phone_local", r"(?<![\w.,/$-])\d{3}-\d{4}(?![\w-]|[.,]\d)", _phone, first=r"\d"),
    # card and account numbers written in groups of four: "4111 1111 1111 1111"
    Rule(
        "digit_groups",
        r"(?<![\w.,])\d{4}(?:[ -]\d{4}){2,4}(?![\w-]|[.,]\d)",
        _phone,
        first=r"\d",
    ),
]

ID_RULES = [
    Rule("star_code", r"(?<![\w*])\*(?P<n>\d{2,3})(?!\w)", _star, first=r"*"),
    Rule("hash", r"(?<![\w&#])#\s?(?P<n>\d+)(?!\w)", _hash, first=r"#"),
    Rule(
        "number_abbreviation", r"\b(?:No|no|Nos|nos|Num|num)\.(?=\s?\d)", _number_word, first=r"Nn"
    ),
    Rule(
        "id",
        r"\b(?P<cue>(?i:order|confirmation|tracking|reference|ref|account|invoice|ticket|booking"
        r"|policy|claim|case|transaction|member|customer|reservation|serial|PIN|zip|zip code"
        r"|postal code|extension|ext\.?|ending in|room|suite|gate|unit|apartment|apt\.))"
        r"(?P<mark>\s?#|\s(?i:number|no\.|num\.|id"
        r"|code))?(?::|\sis)?\s?(?P<code>[A-Z0-9](?:[A-Z0-9-]*[A-Z0-9])?)(?![\w-])",
        _id,
        first=r"A-Za-z",
    ),
    Rule("zip", r"(?<=[A-Z]{2}\s)(?P<zip>\d{5})(?:-(?P<plus>\d{4}))?(?![\w-])", _zip, first=r"\d"),
    Rule(
        "code",
        r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*(?![\w-])",
        _code,
        first=r"A-Z0-9",
    ),
]
