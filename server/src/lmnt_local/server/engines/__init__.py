"""Speech engines of the local server, one module or package each, and the choice between them.

An engine turns a piece of text into mono s16 PCM at the rate the session asked for, plus the
start and duration of every word in that audio. The server owns buffering, flushing, encoding
and the wire; an engine only speaks.  Engines are async iterators so the first sentence of a
long text can be on the wire while later audio is still being made.

Only :mod:`.base` and :mod:`.tone` load here: espeak-ng and Piper are optional
(GPL) extras, imported when asked for, so the plugin imports without any engine installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    MAX_SPEED,
    MIN_SPEED,
    PLAYBACK_LEAD,
    EngineChunk,
    LanguageError,
    SpeechEngine,
    VoiceInfo,
    WordTiming,
    check_request,
    check_speed,
    load_engine,
)
from lmnt_local.server.engines.select import (
    ENGINE_NAMES,
    EngineUnavailable,
    best_engine,
    make_engine,
)
from lmnt_local.server.engines.tone import ToneEngine

if TYPE_CHECKING:
    from lmnt_local.server.engines.espeak import EspeakEngine
    from lmnt_local.server.engines.piper import PiperEngine

__all__ = [
    "ENGINE_NAMES",
    "LMNT_VOICES",
    "MAX_SPEED",
    "MIN_SPEED",
    "PLAYBACK_LEAD",
    "EngineChunk",
    "EngineUnavailable",
    "EspeakEngine",
    "LanguageError",
    "PiperEngine",
    "SpeechEngine",
    "ToneEngine",
    "VoiceInfo",
    "WordTiming",
    "best_engine",
    "check_request",
    "check_speed",
    "load_engine",
    "make_engine",
]


def __getattr__(name: str) -> Any:
    if name == "EspeakEngine":
        from lmnt_local.server.engines.espeak import EspeakEngine

        return EspeakEngine
    if name == "PiperEngine":
        from lmnt_local.server.engines.piper import PiperEngine

        return PiperEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
