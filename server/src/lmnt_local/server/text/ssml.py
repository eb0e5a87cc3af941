"""The SSML subset the server honours, read tag by tag into runs and pauses.

Apart from Markdown and from the readings of ``<say-as>`` (:mod:`.say_as`): this module only
recognises SSML, walks its tags with the standard library's lenient HTML parser and turns
``<break>`` and ``<prosody rate>`` into pauses and speed factors.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from html.parser import HTMLParser

from lmnt_local.server.text.pieces import Pause, Piece, Run, Span, _cover
from lmnt_local.server.text.say_as import _Element, _interpret

__all__ = ["MAX_BREAK_SECONDS", "break_seconds", "looks_like_ssml", "prosody_rate"]

#: Longest ``<break>`` honoured (as Amazon Polly and Google cap it): a typo cannot stall a turn.
MAX_BREAK_SECONDS = 10.0

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
