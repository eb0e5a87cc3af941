"""Markdown stripped from caller text, each kept character still knowing its caller span.

Apart from SSML: Markdown is rewritten by span-keeping regular expressions over plain text, SSML
is read tag by tag by a parser; the two share only the span types of :mod:`.pieces`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmnt_local.server.text.pieces import Span, _cover

__all__ = ["strip_markdown"]


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
