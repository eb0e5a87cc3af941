"""The local LMNT-compatible server (WebSocket + HTTP) and its speech engines.

``LocalLMNTServer`` is what ``lmnt-local`` runs, what the plugin's tests talk to, and what
users can start in their own tests (see :mod:`videosdk.plugins.lmnt.testing`) or embed in an
application (``ThreadedLMNTServer`` for one that does not run asyncio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmnt_local.server.app import LocalLMNTServer, default_engine
from lmnt_local.server.config import ServerConfig
from lmnt_local.server.embed import ThreadedLMNTServer
from lmnt_local.server.engines import (
    LMNT_VOICES,
    EngineChunk,
    SpeechEngine,
    ToneEngine,
    VoiceInfo,
    WordTiming,
)
from lmnt_local.server.faults import Faults
from lmnt_local.server.record import SessionRecord

if TYPE_CHECKING:
    from lmnt_local.server.engines.espeak import EspeakEngine

__all__ = [
    "LMNT_VOICES",
    "EngineChunk",
    "EspeakEngine",
    "Faults",
    "LocalLMNTServer",
    "ServerConfig",
    "SessionRecord",
    "SpeechEngine",
    "ThreadedLMNTServer",
    "ToneEngine",
    "VoiceInfo",
    "WordTiming",
    "default_engine",
]


def __getattr__(name: str) -> Any:
    # espeak's module loads ctypes bindings; import it only when someone asks for it.
    if name == "EspeakEngine":
        from lmnt_local.server.engines.espeak import EspeakEngine

        return EspeakEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
