"""The LMNT wire vocabulary both ends share: endpoint, versions, literal sets and JSON helpers.

It exists so the client codec (``protocol``) and the server codec (``protocol_server``) draw on
one definition of the wire without importing each other; ``protocol`` re-exports every public
name here, which is where callers import them from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

DEFAULT_WS_URL: Final = "wss://api.lmnt.com/v1/ai/speech/stream"
STREAM_PATH: Final = "/v1/ai/speech/stream"
LEGACY_VERSION: Final = "1.0"
TYPED_VERSIONS: Final = ("1.1", "1.2")
VERSIONS: Final = (LEGACY_VERSION, *TYPED_VERSIONS)

#: What the plugin accepts (the 1.0.30 constructor's ``format`` values).
FORMATS: Final = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
#: What a server accepts on the WebSocket: ``raw`` is the legacy name of 16-bit LE PCM.
SERVER_FORMATS: Final = (*FORMATS, "raw")
SAMPLE_RATES: Final = (8000, 16000, 24000)
MODELS: Final = ("aurora", "blizzard", "blizzard-2.0", "blizzard-2.1", "blizzard-dialogue")
LANGUAGES: Final = (
    "auto", "ar", "as", "bn", "cs", "da", "de", "en", "es", "fi", "fr", "hi", "id", "it", "ja",
    "ko", "ml", "mr", "nl", "pl", "pt", "ru", "sk", "sv", "ta", "te", "th", "tr", "uk", "ur",
    "vi", "zh",
)  # fmt: skip
ErrorType: TypeAlias = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "payment_required_error",
    "rate_limit_error",
    "internal_server_error",
]
ERROR_TYPES: Final = get_args(ErrorType)

JSON: TypeAlias = dict[str, Any]


def is_typed(version: str | None) -> bool:
    """True for the typed API (1.1/1.2); anything else speaks legacy, as the service did."""
    return version in TYPED_VERSIONS


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class WordSpan:
    text: str
    start: float
    duration: float


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _nonce(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _quote(msg: Any) -> str:
    """A bounded rendering of a peer's message for an error text.

    Never raises: the peer's JSON may hold NaN or Infinity, which our own encoder refuses, or
    lone surrogates, which no UTF-8 frame can carry (escaped here).  An ``X-API-Key`` member
    (a client re-sending its init frame) is masked: an error text is logged and sent back, and
    a key must reach neither.
    """
    if isinstance(msg, dict) and "X-API-Key" in msg:
        msg = {**msg, "X-API-Key": "***"}
    try:
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(msg)
    return _short(text).encode("utf-8", "backslashreplace").decode("utf-8")


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (legal in JSON escapes, not in UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
