"""What the content of a ``<say-as>``, ``<sub>`` or ``<phoneme>`` element is said as.

Apart from the tag reader: these are readings of words (letters, telephone numbers, dates,
ordinals, aliases, IPA), where the reader only walks tags and keeps spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from lmnt_local.server.text.pieces import Span


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]
    start: int  # caller index of the first content character
    chars: list[str] = field(default_factory=list)
    origin: list[Span] = field(default_factory=list)


_ONES = "zero one two three four five six seven eight nine".split()
_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_DATE_PARTS = re.compile(r"\d+")


def _letters(text: str) -> str:
    """Each letter and digit said on its own ("ABC1" -> "A B C one")."""
    out = []
    for char in text:
        if char.isdigit():
            out.append(_ONES[int(char)] if char in "0123456789" else char)
        elif char.isalnum():
            out.append(char.upper())
    return " ".join(out)


def _telephone(text: str) -> str:
    """Digits one by one, a comma between groups ("555-123-4567")."""
    groups = [g for g in re.split(r"[^0-9A-Za-z+]+", text) if g]
    spoken = []
    for group in groups:
        words = ["plus" if c == "+" else _ONES[int(c)] if c.isdigit() else c.upper() for c in group]
        spoken.append(" ".join(words))
    return ", ".join(spoken)


def _date(text: str, fmt: str) -> str | None:
    """A numeric date in ``fmt`` order (mdy, dmy, ymd, md, dm, my, y) as "Month Dth, YYYY",
    left for the normaliser to read ordinals and years."""
    numbers = [int(n) for n in _DATE_PARTS.findall(text)]
    fmt = (fmt or ("ymd" if re.match(r"^\s*\d{4}", text) else "mdy")).lower()
    if len(numbers) != len(fmt) or not set(fmt) <= set("dmy"):
        return None
    parts = dict(zip(fmt, numbers, strict=True))
    month, day, year = parts.get("m"), parts.get("d"), parts.get("y")
    if month is not None and not 1 <= month <= 12:
        return None
    if day is not None and not 1 <= day <= 31:
        return None
    words = []
    if month is not None:
        words.append(_MONTHS[month - 1])
    if day is not None:
        words.append(_ordinal_digits(day))
    out = " ".join(words)
    if year is not None:
        out = f"{out}, {year}" if out else str(year)
    return out


def _ordinal_digits(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _interpret(
    element: _Element, content: str
) -> tuple[Literal["text", "said", "ipa"], str] | None:
    """What an element's content is said as: (kind, words), or None to read it as text."""
    attrs = element.attrs
    if element.tag == "sub":
        alias = attrs.get("alias")
        return ("said", alias) if alias is not None else None
    if element.tag == "phoneme":
        if attrs.get("alphabet", "ipa").lower() == "ipa" and attrs.get("ph", "").strip():
            return "ipa", attrs["ph"].strip().strip("/[]")
        return None
    how = attrs.get("interpret-as", "").strip().lower()
    if how == "date" and attrs.get("format"):
        date = _date(content, attrs["format"])
        return ("text", date) if date is not None else None
    if how in ("characters", "spell-out", "verbatim"):
        # a letter a word ("C A T"): an engine reads "CAT" or "AB" as a word, not letters
        return "said", _letters(content)
    from lmnt_local.server.text.en import say_as  # on first use: its rules take a while

    said = say_as(how, content)  # the normaliser's English readings
    if said is not None:
        return "said", said
    if how in ("telephone", "phone"):
        return "said", _telephone(content)
    if how == "date":
        date = _date(content, attrs.get("format", ""))
        return ("text", date) if date is not None else None
    if how in ("cardinal", "number"):
        digits = content.replace(",", "").strip()
        return ("text", digits) if re.fullmatch(r"[+-]?\d+(?:\.\d+)?", digits) else None
    if how == "ordinal":
        digits = content.replace(",", "").strip()
        if re.fullmatch(r"\d+", digits):
            return "text", _ordinal_digits(int(digits))
        return None
    return None
