"""The text front-end: what the server makes of a caller's text before an engine speaks it.

``segment`` cuts sentences, clauses and words; ``normalize(text, language)`` turns written forms
("$5.50", "4/5/2026", "555-123-4567") into what a person would say, keeping a map back to the
caller's characters for word timestamps (see docs/text.md).
"""

from __future__ import annotations

from lmnt_local.server.text import en as _en  # noqa: F401  (registers English)
from lmnt_local.server.text.normalize import (
    Normalized,
    Token,
    identity,
    languages,
    normalize,
    register,
)

__all__ = ["Normalized", "Token", "identity", "languages", "normalize", "register"]
