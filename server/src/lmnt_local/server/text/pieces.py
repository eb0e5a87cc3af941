"""What markup parsing yields: runs of text that remember the caller's characters, and pauses.

Apart so the Markdown and SSML readers, the lexicon and the front-end share these types without
importing one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Pause", "Piece", "Run", "Span"]

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


def _cover(spans: Sequence[Span]) -> Span:
    if not spans:
        return (0, 0)
    return (min(s for s, _ in spans), max(e for _, e in spans))
