"""The text front-end: what the server makes of a caller's text before an engine speaks it.

``segment`` cuts sentences, clauses and words; ``markup`` strips Markdown and honours an SSML
subset; ``lexicon`` applies pronunciations; ``normalize(text, language)`` turns written forms
("$5.50", "4/5/2026", "555-123-4567") into what a person would say, keeping a map back to the
caller's characters for word timestamps; ``frontend`` is the engine wrapper the server speaks
through, running them in that order and mapping word timings back to the caller's words (see
docs/text.md).

The normaliser's names load on first use: the engines import ``segment`` alone and should not
pay for compiling the English rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmnt_local.server.text.normalizer import (
        Normalized,
        Token,
        identity,
        languages,
        normalize,
        register,
    )

__all__ = ["Normalized", "Token", "identity", "languages", "normalize", "register"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lmnt_local.server.text import (
        en,  # noqa: F401  (registers English)
        normalizer,
    )

    for public in __all__:
        globals()[public] = getattr(normalizer, public)
    return globals()[name]
