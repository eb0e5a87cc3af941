"""The text front-end: what the engines are given to say, and where it came from.

``normalize(text, language)`` turns written forms ("$5.50", "4/5/2026", "555-123-4567") into
what a person would say, keeping a map back to the caller's characters for word timestamps.
"""

from __future__ import annotations

from . import en as _en  # noqa: F401  (registers English)
from .normalize import Normalized, Token, identity, languages, normalize, register

__all__ = ["Normalized", "Token", "identity", "languages", "normalize", "register"]
