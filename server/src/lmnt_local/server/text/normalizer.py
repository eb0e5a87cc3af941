"""Written text to what a person would say, with every spoken piece traced to the caller's text.

The engines phonemise what they are given, so "$5.50" reached espeak as "dollar five point five
zero".  ``normalize`` rewrites such written forms before any engine sees them, and keeps a map
from each spoken piece back to the characters it came from, because word timestamps must name
the caller's words ("$5.50" is one word that lasts from "five" to "cents").

The contract every language module keeps, and the property tests check:
- ``tokens`` are ordered, do not overlap, lie within the text, and cover every non-whitespace
  character of it; what lies between two tokens is whitespace, copied to ``spoken`` as it was.
- a token whose text needs nothing keeps it unchanged, so text with nothing to rewrite comes back
  identical, with one token per whitespace-separated word.

Languages plug in through ``register``; a language with no normaliser passes through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Normalized",
    "Rule",
    "RuleSet",
    "Token",
    "alternation",
    "identity",
    "languages",
    "normalize",
    "register",
]

_WORD = re.compile(r"\S+")
_ALNUM_END = re.compile(r"[^\W_]$")
_ALNUM_START = re.compile(r"^[^\W_]")


class Token(NamedTuple):
    """One piece of the caller's text and what is said for it."""

    source_start: int
    source_end: int
    spoken: str


@dataclass(frozen=True, slots=True)
class Normalized:
    """What to say for a text, and where each spoken piece came from.

    ``spoken_spans[i]`` is where ``tokens[i].spoken`` sits inside ``spoken``, so a word found in
    the engine's timings can be looked up in one bisect instead of re-aligning two strings.
    """

    source: str
    spoken: str
    tokens: list[Token]
    spoken_spans: list[tuple[int, int]] = field(repr=False)

    @property
    def changed(self) -> bool:
        return self.spoken != self.source


def assemble(source: str, tokens: Sequence[Token], changed: Sequence[bool]) -> Normalized:
    """Join tokens with the whitespace the caller put between them.

    Two rewritten pieces that touched in the source ("5kg", "2+2") need a space between their
    words; untouched neighbours ("COVID-" + "nineteen") stay joined as written.
    """
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length = 0
    previous_end = 0
    previous_spoken = ""
    previous_changed = False
    for index, token in enumerate(tokens):
        gap = source[previous_end : token.source_start]
        if (
            not gap
            and index
            and (previous_changed or changed[index])
            and token.spoken
            and _ALNUM_END.search(previous_spoken)
            and _ALNUM_START.search(token.spoken)
        ):
            gap = " "
        parts.append(gap)
        length += len(gap)
        spans.append((length, length + len(token.spoken)))
        parts.append(token.spoken)
        length += len(token.spoken)
        previous_end = token.source_end
        if token.spoken:
            previous_spoken = token.spoken
            previous_changed = changed[index]
    parts.append(source[previous_end:])
    return Normalized(source, "".join(parts), list(tokens), spans)


def alternation(words: Iterable[str]) -> str:
    """A regex alternative of ``words``, longest first so "hrs" wins over "h"."""
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def identity(text: str) -> Normalized:
    """The text as it is: one unchanged token per whitespace-separated word."""
    tokens = [Token(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    spans = [(t.source_start, t.source_end) for t in tokens]
    return Normalized(text, text, tokens, spans)


# A handler gets its rule's match and returns the rewritten pieces as (start, end, spoken) in
# source offsets, or None to let later rules (and finally the text itself) have the place.
Piece = tuple[int, int, str]
Handler = Callable[[re.Match[str], "Scan"], "list[Piece] | None"]

_NAMED_GROUP = re.compile(r"\(\?P<\w+>")


@dataclass(frozen=True, slots=True)
class Rule:
    """A written form: a pattern, what to say for it, and what kind of thing it is."""

    name: str
    pattern: str
    handler: Handler
    kind: str = "word"
    # the characters a match can start with, as a regex class body ("" for any): the combined
    # pattern tries the rule only where the text's next character could start it
    first: str = ""
    flags: int = 0


class Scan:
    """The state a handler may look at: the text and what the previous rewrite was."""

    __slots__ = ("last_end", "last_kind", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.last_kind = ""
        self.last_end = -1

    def after_previous(self, start: int) -> bool:
        """True when only whitespace separates ``start`` from the previous rewritten piece."""
        return self.last_end >= 0 and not self.text[self.last_end : start].strip()


# Every other character a rule could start with: ASCII punctuation, Latin-1 signs, dashes,
# quotes, currency, letterlike symbols (℃), number forms (⅓), arrows and maths.
_OTHER_SAMPLE = "".join(
    chr(c)
    for c in (*range(0x21, 0x7F), *range(0xA0, 0x250), *range(0x2010, 0x2300))
    if not chr(c).isalnum() or chr(c) in "½¼¾⅓⅔⅛"
)
# The first character of a position picks the rules tried there; a rule is in every class its
# ``first`` characters meet (or in all, without ``first``).  Trying about 8 rules instead of 45
# at each word start is what keeps a sentence well under a millisecond.
_CLASSES = (
    ("d", r"\d", "0123456789"),
    ("u", "A-Z", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("l", "a-z", "abcdefghijklmnopqrstuvwxyz"),
    ("s", r"\s", " \t\n\r\u00a0"),
    ("o", r"^\dA-Za-z\s", _OTHER_SAMPLE),
)


class RuleSet:
    """Rules tried leftmost-first, in priority order, in one compiled pass over the text.

    One alternation finds the next place any rule matches; that rule's own pattern then
    supplies the groups.  When a handler declines, the later rules get the same place before
    the text is left as it is.  Everything is compiled once, at import.

    Two things keep the pass fast: no rule starts between two word characters (a rule begins
    at a word's start, on a symbol or space, or on a unit right after digits: "5kg"), so those
    positions fail at once; and the branches are grouped by the class of the first character.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.compiled = [re.compile(r.pattern, r.flags) for r in self.rules]
        groups = []
        for key, lookahead, sample in _CLASSES:
            branches = []
            for index, rule in enumerate(self.rules):
                if rule.first and not re.search(f"[{rule.first}]", sample):
                    continue
                body = _NAMED_GROUP.sub("(?:", rule.pattern)
                if rule.flags & re.IGNORECASE:
                    body = f"(?i:{body})"
                branches.append(f"(?P<{key}{index}>{body})")
            groups.append(f"(?=[{lookahead}])(?:{'|'.join(branches)})")
        self.master = re.compile(
            r"(?:(?<!\w)|(?!\w)|(?<=\d)(?!\d)|(?<=\dx)|(?=[½¼¾⅓⅔⅛]))(?:" + "|".join(groups) + ")"
        )

    def apply(self, text: str) -> Normalized:
        tokens: list[Token] = []
        changed: list[bool] = []
        scan = Scan(text)
        done = 0
        pos = 0
        while True:
            found = self.master.search(text, pos)
            if found is None:
                break
            start = found.start()
            first = int(str(found.lastgroup)[1:])
            pieces: list[Piece] | None = None
            end = start
            for index in range(first, len(self.rules)):
                match = self.compiled[index].match(text, start)
                if match is None or match.end() == start:
                    continue
                pieces = self.rules[index].handler(match, scan)
                if pieces is not None:
                    end = match.end()
                    kind = self.rules[index].kind
                    break
            if pieces is None:
                pos = start + 1
                continue
            _literal(text, done, start, tokens, changed)
            cursor = start
            for p_start, p_end, spoken in sorted(pieces):
                _literal(text, cursor, p_start, tokens, changed)
                tokens.append(Token(p_start, p_end, spoken))
                changed.append(spoken != text[p_start:p_end])
                cursor = p_end
            _literal(text, cursor, end, tokens, changed)
            scan.last_kind = kind
            scan.last_end = end
            done = pos = end
        if not tokens:
            return identity(text)
        _literal(text, done, len(text), tokens, changed)
        return assemble(text, tokens, changed)


def _literal(text: str, start: int, end: int, tokens: list[Token], changed: list[bool]) -> None:
    for m in _WORD.finditer(text, start, end):
        tokens.append(Token(m.start(), m.end(), m.group()))
        changed.append(False)


Normalizer = Callable[[str], Normalized]
_REGISTRY: dict[str, Normalizer] = {}


def register(language: str, normalizer: Normalizer) -> None:
    """Make ``normalizer`` the one for ``language`` (a primary subtag such as "en")."""
    _REGISTRY[language.lower()] = normalizer


def languages() -> list[str]:
    return sorted(_REGISTRY)


def normalize(text: str, language: str = "en") -> Normalized:
    """What a person would say for ``text``; a language without a normaliser passes unchanged.

    ``language`` may carry a region ("en-US", "en_GB"): the primary subtag picks the normaliser.
    """
    primary = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    normalizer = _REGISTRY.get(primary)
    if normalizer is None:
        return identity(text)
    return normalizer(text)
