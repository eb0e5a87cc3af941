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

The pieces are in :mod:`.pieces`, Markdown in :mod:`.markdown`, SSML in :mod:`.ssml` (with the
readings of ``<say-as>``, ``<sub>`` and ``<phoneme>`` in :mod:`.say_as`); this module joins them.
"""

from __future__ import annotations

from lmnt_local.server.text.markdown import _MARKDOWN_HINT, strip_markdown
from lmnt_local.server.text.pieces import Pause, Piece, Run
from lmnt_local.server.text.pieces import Span as Span  # lexicon and frontend import it here
from lmnt_local.server.text.ssml import MAX_BREAK_SECONDS, _SsmlReader, looks_like_ssml
from lmnt_local.server.text.ssml import break_seconds as break_seconds
from lmnt_local.server.text.ssml import prosody_rate as prosody_rate

__all__ = [
    "MAX_BREAK_SECONDS",
    "Pause",
    "Run",
    "looks_like_ssml",
    "parse",
    "strip_markdown",
]

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
