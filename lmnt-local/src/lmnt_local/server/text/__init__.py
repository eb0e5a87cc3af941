"""The text front-end: what the server makes of a caller's text before an engine speaks it.

:mod:`.segment` (sentences, clauses and words), :mod:`.markup` (Markdown and SSML),
:mod:`.lexicon` (pronunciations), ``normalize(text, language)`` (written forms such as "$5.50",
"4/5/2026", "555-123-4567" turned into what a person would say, with a map back to the caller's
characters) and :mod:`.frontend` (the engine wrapper the server speaks through, which also maps
word timings back to the caller's words).
"""

from __future__ import annotations

from . import en as _en  # noqa: F401  (registers English)
from .normalize import Normalized, Token, identity, languages, normalize, register

__all__ = ["Normalized", "Token", "identity", "languages", "normalize", "register"]
