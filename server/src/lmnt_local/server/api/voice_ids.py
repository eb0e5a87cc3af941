"""Which voice ids the server speaks: exactly the ones it lists, nothing else.

LMNT refused voices it did not have; an engine that quietly read an unknown id with some
default voice would hide a typo until someone listened.  Shared by the WebSocket init check and
the HTTP endpoints so both doors refuse the same ids with the same words.
"""

from __future__ import annotations

from lmnt_local.server.engines import SpeechEngine

__all__ = ["known_voice", "unknown_voice_message"]


def known_voice(engine: SpeechEngine, voice: str) -> bool:
    return any(v.id == voice for v in engine.voices())


def unknown_voice_message(engine: SpeechEngine, voice: str) -> str:
    ids = ", ".join(v.id for v in engine.voices())
    shown = voice if len(voice) <= 40 else voice[:40] + "..."
    return f"voice: unknown voice {shown!r}; available voices: {ids}"
