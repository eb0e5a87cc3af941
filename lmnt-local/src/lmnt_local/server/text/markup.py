"""Markup a client sends, turned into what is said: Markdown stripped, a subset of SSML honoured.

LLMs write Markdown and some clients send SSML; neither may ever be read aloud ("asterisk
asterisk", "break time equals one s").  :func:`parse` turns a unit of caller text into
:class:`Run` pieces of plain text (each character remembering which of the caller's characters
it came from, so word timestamps can name the caller's words) and :class:`Pause` pieces (real
silence, from ``<break>``).

Markdown is stripped with span-keeping regular expressions rather than a Markdown library:
a parser such as markdown-it-py gives line numbers but no character offsets for inline text,
and the server must map every spoken word back to the characters the caller sent.  SSML tags
are read with the standard library's :class:`html.parser.HTMLParser` (lenient: a sentence-sized
unit may hold an opening tag whose closing tag arrives in a later unit).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal

__all__ = [
    "MAX_BREAK_SECONDS",
    "Pause",
    "Run",
    "looks_like_ssml",
    "parse",
    "strip_markdown",
]

#: Longest ``<break>`` honoured (as Amazon Polly and Google cap it): a typo cannot stall a turn.
MAX_BREAK_SECONDS = 10.0

Span = tuple[int, int]  # caller characters [start, end)


@dataclass(frozen=True, slots=True)
class Run:
    """A stretch of text said in one go.

    ``origin[i]`` is the caller span character ``i`` of ``text`` came from; characters of one
    ``<say-as>``/``<sub>``/``<phoneme>`` element all carry the element's whole content span,
    so its words are timed as one caller word.  ``kind``: ``"text"`` still goes through the
    lexicon and the normaliser; ``"said"`` is final words (say-as, sub); ``"ipa"`` is IPA to
    be spoken as phonemes.  ``rate`` multiplies the session's speed (``<prosody rate>``).
    """

    text: str
    origin: tuple[Span, ...]
    kind: Literal["text", "said", "ipa"] = "text"
    rate: float = 1.0


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence of ``seconds`` (an SSML ``<break>``)."""

    seconds: float


Piece = Run | Pause

# -- Markdown --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tracked:
    """Text with the caller span of every character, rewritten by regular expressions."""

    text: str
    origin: list[Span]

    def sub(
        self, pattern: re.Pattern[str], keep: Callable[[re.Match[str]], Sequence[object]]
    ) -> None:
        """Replace each match by ``keep(match)``: group numbers (kept with their origins) and
        strings (new text, credited to the whole match)."""
        out: list[str] = []
        origin: list[Span] = []
        last = 0
        for match in pattern.finditer(self.text):
            out.append(self.text[last : match.start()])
            origin.extend(self.origin[last : match.start()])
            whole = _cover(self.origin[match.start() : match.end()])
            for part in keep(match):
                if isinstance(part, int):
                    a, b = match.span(part)
                    if a >= 0:
                        out.append(self.text[a:b])
                        origin.extend(self.origin[a:b])
                else:
                    text = str(part)
                    out.append(text)
                    origin.extend([whole] * len(text))
            last = match.end()
        if not out:
            return
        out.append(self.text[last:])
        origin.extend(self.origin[last:])
        self.text = "".join(out)
        self.origin = origin


def _cover(spans: Sequence[Span]) -> Span:
    if not spans:
        return (0, 0)
    return (min(s for s, _ in spans), max(e for _, e in spans))


_M = re.MULTILINE
_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$\n?", _M)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$\n?", _M)
_TABLE_RULE = re.compile(
    r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$\n?", _M
)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", _M)
_QUOTE = re.compile(r"^[ \t]{0,3}(?:>[ \t]?)+", _M)
_LIST = re.compile(r"^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?", _M)
_TABLE_EDGE = re.compile(r"^[ \t]*\|[ \t]*|[ \t]*\|[ \t]*$", _M)
_TABLE_CELL = re.compile(r"[ \t]*\|[ \t]*")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\([^)\n]*\)")
_LINK = re.compile(r"\[([^\]\n]+)\](?:\((?!/)[^)\n]*\)|\[[^\]\n]*\])")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_CODE = re.compile(r"(`+)(.+?)\1")
_EMPHASIS = (
    re.compile(r"(\*{1,3})(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![\w])(_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w])"),
    re.compile(r"(~~)(?=\S)(.+?)(?<=\S)\1"),
)
# Asterisks left touching a word (an unclosed "**Note"): markup, not multiplication ("2 * 3").
_STRAY = re.compile(r"\*+(?=\w)|(?<=[\w.,!?:;)])\*+")
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\U0001f1e6-\U0001f1ff"
    "\ufe0f\u200d\u20e3\U000e0020-\U000e007f]+"
)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _blank(_: re.Match[str]) -> Sequence[object]:
    return ()


def _first(m: re.Match[str]) -> Sequence[object]:
    return (1,)


def _second(m: re.Match[str]) -> Sequence[object]:
    return (2,)


def _entity(m: re.Match[str]) -> Sequence[object]:
    decoded = html.unescape(m.group(0))
    return (decoded,) if decoded != m.group(0) else (0,)


def strip_markdown(text: str, origin: Sequence[Span]) -> tuple[str, list[Span]]:
    """``text`` without Markdown: the words of links, emphasis, headings, lists, code and
    tables stay, the marks go; table cells are parted by commas so they are heard apart.
    Inline IPA (``[word](/IPA/)``) is left for the lexicon stage."""
    t = _Tracked(text, list(origin))
    t.sub(_FENCE, _blank)
    t.sub(_RULE, _blank)
    t.sub(_TABLE_RULE, _blank)
    t.sub(_HEADING, lambda m: (1, "."))
    t.sub(_QUOTE, _blank)
    t.sub(_LIST, _blank)
    if "|" in t.text:
        t.sub(_TABLE_EDGE, _blank)
        t.sub(_TABLE_CELL, lambda m: (", ",))
    t.sub(_IMAGE, _first)
    t.sub(_LINK, _first)
    t.sub(_AUTOLINK, _first)
    t.sub(_CODE, _second)
    for pattern in _EMPHASIS:
        for _ in range(3):  # nested emphasis ("**bold _and italic_**")
            before = t.text
            t.sub(pattern, _second)
            if t.text == before:
                break
    t.sub(_STRAY, _blank)
    t.sub(_EMOJI, _blank)
    t.sub(_ENTITY, _entity)
    return t.text, t.origin


_MARKDOWN_HINT = re.compile(
    r"[*_`#\[|~>&]|^\s*(?:[-+]|\d{1,3}[.)])\s|^\s*-{3}|[\u2600-\u27bf\U0001f000-\U0001faff]", _M
)


# -- SSML ------------------------------------------------------------------------------------

#: Tags the server knows (honoured or deliberately dropped); any other tag-like text is still
#: dropped once the text is SSML, but only these make plain text count as SSML.
_KNOWN_TAGS = (
    "speak break say-as sub phoneme prosody emphasis p s voice audio mark lang w desc "
    "amazon:effect amazon:domain amazon:auto-breaths"
).split()
_SSML_TAG = re.compile(
    r"</?(?:" + "|".join(re.escape(t) for t in _KNOWN_TAGS) + r")(?=[\s/>])", re.I
)
# Any other well-formed tag (an LLM's "<br>", "<b>"): markup too, though not one we honour.
_HTML_TAG = re.compile(
    r"</?[A-Za-z][\w:-]*(?:\s+[\w:-]+(?:\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'|[^\s<>'\"]+))?)*\s*/?>"
)


def looks_like_ssml(text: str) -> bool:
    """SSML (or HTML) when a tag appears: ``<speak>``, ``<break/>``, ``<br>``...; a lone ``<``
    in prose ("x < y", "<3") never makes text markup."""
    return _SSML_TAG.search(text) is not None or _HTML_TAG.search(text) is not None


_STRENGTH = {
    "none": 0.0,
    "x-weak": 0.1,
    "weak": 0.25,
    "medium": 0.4,
    "strong": 0.75,
    "x-strong": 1.2,
}
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s)?\s*$", re.I)
_RATES = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.6}
_PERCENT = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*%\s*$")


def break_seconds(attrs: dict[str, str]) -> float:
    """Seconds of a ``<break>``: ``time`` ("500ms", "1s", "2"), else ``strength``, else
    medium; beyond :data:`MAX_BREAK_SECONDS` capped, unreadable values read as medium."""
    time = attrs.get("time")
    if time is not None:
        match = _TIME.match(time)
        if match:
            value = float(match.group(1))
            seconds = value / 1000 if (match.group(2) or "s").lower() == "ms" else value
            return min(seconds, MAX_BREAK_SECONDS)
    return _STRENGTH.get(attrs.get("strength", "medium").strip().lower(), _STRENGTH["medium"])


def prosody_rate(value: str | None) -> float:
    """``<prosody rate>`` as a speed factor: names, "80%" (of normal), "+20%"/"-20%" (change),
    or a plain factor; anything else is 1."""
    if value is None:
        return 1.0
    value = value.strip().lower()
    if value in _RATES:
        return _RATES[value]
    match = _PERCENT.match(value)
    if match:
        number = float(match.group(2)) / 100
        if match.group(1) == "+":
            return 1 + number
        if match.group(1) == "-":
            return max(0.1, 1 - number)
        return max(0.1, number)
    try:
        factor = float(value)
    except ValueError:
        return 1.0
    return factor if 0.1 <= factor <= 10 else 1.0


#: Tags that part words (HTML line and block tags an LLM may write): a space, not nothing.
_SPACED = frozenset("p s br div li tr td th ul ol h1 h2 h3 h4 h5 h6".split())


@dataclass(slots=True)
class _Element:
    tag: str
    attrs: dict[str, str]
    start: int  # caller index of the first content character
    chars: list[str] = field(default_factory=list)
    origin: list[Span] = field(default_factory=list)


class _SsmlReader(HTMLParser):
    """Walks the tags of one unit, emitting :class:`Run` and :class:`Pause` pieces.

    Unbalanced tags are tolerated: an opening tag without its end (the end comes in a later
    unit) applies to the rest of this unit, and an end tag without its start is dropped.
    """

    #: Elements whose content is collected and said as one caller word.
    _WHOLE = frozenset({"say-as", "sub", "phoneme"})
    #: Elements whose content is never said.
    _SILENT = frozenset({"desc", "mark"})

    def __init__(self, text: str, base: int) -> None:
        super().__init__(convert_charrefs=False)
        self._text = text
        self._base = base
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.pieces: list[Piece] = []
        self._chars: list[str] = []
        self._origin: list[Span] = []
        self._rates: list[tuple[str, float]] = []
        self._whole: _Element | None = None
        self._silent = 0

    # positions ------------------------------------------------------------------------------

    def _pos(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    @property
    def rate(self) -> float:
        rate = 1.0
        for _, factor in self._rates:
            rate *= factor
        return rate

    # output ---------------------------------------------------------------------------------

    def _add(self, text: str, origin: Sequence[Span]) -> None:
        if self._silent:
            return
        if self._whole is not None:
            self._whole.chars.append(text)
            self._whole.origin.extend(origin)
            return
        self._chars.append(text)
        self._origin.extend(origin)

    def _cut(self) -> None:
        """End the text run so far (before a pause or a change of rate)."""
        text = "".join(self._chars)
        if text:
            self.pieces.append(Run(text, tuple(self._origin), "text", self.rate))
        self._chars, self._origin = [], []

    def finish(self) -> list[Piece]:
        self.close()
        if self._whole is not None:  # unclosed say-as/sub/phoneme: say what it holds
            element, self._whole = self._whole, None
            self._end_whole(element)
        self._cut()
        return self.pieces

    # parser callbacks -----------------------------------------------------------------------

    def handle_data(self, data: str) -> None:
        start = self._base + self._pos()
        self._add(data, [(start + i, start + i + 1) for i in range(len(data))])

    def handle_entityref(self, name: str) -> None:
        self._entity(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._entity(f"&#{name};")

    def _entity(self, raw: str) -> None:
        start = self._base + self._pos()
        decoded = html.unescape(raw)
        self._add(decoded, [(start, start + len(raw))] * len(decoded))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "break":
            self._break(dict((k, v or "") for k, v in attrs))
        elif tag in _SPACED:
            self._space()
        # any other self-closing tag (<mark/>, <audio src/>) says nothing

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        end = self._pos() + len(self.get_starttag_text() or "")
        if tag == "break":
            self._break(values)
        elif tag == "prosody":
            self._cut()
            self._rates.append((tag, prosody_rate(values.get("rate"))))
        elif tag in self._SILENT:
            self._silent += 1
        elif tag in self._WHOLE and self._whole is None:
            self._whole = _Element(tag, values, self._base + end)
        elif tag in _SPACED:
            self._space()

    def handle_endtag(self, tag: str) -> None:
        if tag == "prosody":
            if self._rates:
                self._cut()
                self._rates.pop()
        elif tag in self._SILENT:
            self._silent = max(0, self._silent - 1)
        elif self._whole is not None and tag == self._whole.tag:
            element, self._whole = self._whole, None
            self._end_whole(element)
        elif tag in ("p", "s"):
            here = self._base + self._pos()
            self._add(". ", [(here, here)] * 2)
        elif tag in _SPACED:
            self._space()

    def _space(self) -> None:
        here = self._base + self._pos()
        self._add(" ", [(here, here)])

    def _break(self, attrs: dict[str, str]) -> None:
        if self._whole is not None or self._silent:
            return
        self._cut()
        seconds = break_seconds(attrs)
        if seconds > 0:
            self.pieces.append(Pause(seconds))

    def _end_whole(self, element: _Element) -> None:
        content = "".join(element.chars)
        span = _cover(element.origin) if element.origin else (element.start, element.start)
        said = _interpret(element, content)
        if said is None:  # not understood: the content as ordinary text
            self._chars.append(content)
            self._origin.extend(element.origin)
            return
        kind, words = said
        if not words.strip():
            return
        if kind == "ipa":
            self._cut()
            self.pieces.append(Run(words, (span,) * len(words), "ipa", self.rate))
            return
        # keep a space either side so the words never glue to their neighbours
        text = f" {words} "
        self._chars.append(text)
        self._origin.extend([span] * len(text))
        if kind == "said":
            self._cut_said(len(text))

    def _cut_said(self, length: int) -> None:
        """Make the last ``length`` characters a run of their own, kind ``said``."""
        head_chars = "".join(self._chars)
        said_text, head = head_chars[-length:], head_chars[:-length]
        said_origin, head_origin = self._origin[-length:], self._origin[:-length]
        self._chars, self._origin = [head], head_origin
        self._cut()
        self.pieces.append(Run(said_text, tuple(said_origin), "said", self.rate))


# -- say-as ----------------------------------------------------------------------------------

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


# -- the whole unit --------------------------------------------------------------------------


def parse(text: str) -> list[Piece]:
    """``text`` (one synthesis unit of caller text) as runs and pauses, markup removed."""
    pieces: list[Piece]
    if looks_like_ssml(text):
        reader = _SsmlReader(text, 0)
        reader.feed(text)
        pieces = reader.finish()
    else:
        pieces = [Run(text, tuple((i, i + 1) for i in range(len(text))))]
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, Run) and piece.kind == "text" and _MARKDOWN_HINT.search(piece.text):
            stripped, origin = strip_markdown(piece.text, piece.origin)
            if stripped:
                out.append(Run(stripped, tuple(origin), "text", piece.rate))
        else:
            out.append(piece)
    return out
