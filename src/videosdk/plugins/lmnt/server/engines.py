"""Speech engines of the local server.

An engine turns a piece of text into mono s16 PCM at the rate the session asked for, plus the
start and duration of every word in that audio. The server owns buffering, flushing, encoding
and the wire; an engine only speaks.  Engines are async iterators so the first sentence of a
long text can be on the wire while later audio is still being made.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "EngineChunk",
    "SpeechEngine",
    "ToneEngine",
    "VoiceInfo",
    "WordTiming",
]


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One word of the synthesized text, timed against the audio of the same ``synthesize`` call.

    ``start`` and ``duration`` are seconds from the first sample that call yielded.
    """

    text: str
    start: float
    duration: float


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """A piece of audio: s16le mono bytes at the requested rate, and the words that start in it."""

    pcm: bytes
    words: tuple[WordTiming, ...] = ()


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """A voice as ``GET /v1/ai/voice/list`` reports it (LMNT's field names)."""

    id: str
    name: str
    gender: str = "female"
    description: str = ""
    owner: str = "system"
    state: str = "ready"
    type: str = "instant"
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "state": self.state,
            "type": self.type,
            "gender": self.gender,
            "description": self.description,
            "starred": False,
            "tags": list(self.tags),
        }


# LMNT's public system voices; engines map these names onto whatever they have.
LMNT_VOICES: tuple[VoiceInfo, ...] = (
    VoiceInfo("ava", "Ava", "female", "Clear, friendly American English"),
    VoiceInfo("leah", "Leah", "female", "Warm, conversational"),
    VoiceInfo("lily", "Lily", "female", "Bright and youthful"),
    VoiceInfo("amy", "Amy", "female", "Calm narrator"),
    VoiceInfo("elowen", "Elowen", "female", "Soft and airy"),
    VoiceInfo("morgan", "Morgan", "male", "Deep, steady"),
    VoiceInfo("ansel", "Ansel", "male", "Relaxed, casual"),
)


@runtime_checkable
class SpeechEngine(Protocol):
    """What the server needs from an engine.

    ``synthesize`` must not block the event loop for long (run heavy work in a thread) and must
    be safe to call from several sessions at once: an engine that is not re-entrant serialises
    itself internally.
    """

    name: str

    def voices(self) -> list[VoiceInfo]: ...

    def has_voice(self, voice: str) -> bool: ...

    def synthesize(
        self, text: str, *, voice: str, language: str, sample_rate: int
    ) -> AsyncIterator[EngineChunk]: ...


_WORD_RE = re.compile(r"\S+")


class ToneEngine:
    """A deterministic engine for tests: every non-space character is ``seconds_per_char`` of a
    sine at ``frequency`` Hz, every whitespace character the same length of silence.

    Known pitch and known duration make it possible to check what leaves the audio track to the
    sample, and the silences between words make word timestamps checkable against the audio.
    The sine is phase-continuous within one ``synthesize`` call, so its spectrum has one peak.
    """

    name = "tone"

    def __init__(
        self,
        *,
        frequency: float = 440.0,
        seconds_per_char: float = 0.05,
        amplitude: float = 0.5,
        chunk_seconds: float = 0.1,
    ) -> None:
        if frequency <= 0 or seconds_per_char <= 0 or not 0 < amplitude <= 1:
            raise ValueError("ToneEngine: frequency, seconds_per_char and amplitude must be > 0")
        self.frequency = frequency
        self.seconds_per_char = seconds_per_char
        self.amplitude = amplitude
        self.chunk_seconds = chunk_seconds

    def voices(self) -> list[VoiceInfo]:
        return list(LMNT_VOICES)

    def has_voice(self, voice: str) -> bool:
        return bool(voice)

    def duration_of(self, text: str) -> float:
        """Seconds of audio ``text`` produces: what tests compare against."""
        return len(text) * self.seconds_per_char

    def render(self, text: str, sample_rate: int) -> tuple[np.ndarray, list[WordTiming]]:
        """The whole utterance at once (also what the HTTP endpoint uses)."""
        per_char = round(self.seconds_per_char * sample_rate)
        n = per_char * len(text)
        t = np.arange(n, dtype=np.float64) / sample_rate
        wave = self.amplitude * np.sin(2 * math.pi * self.frequency * t)
        gate = np.repeat(
            np.array([0.0 if c.isspace() else 1.0 for c in text], dtype=np.float64), per_char
        )
        pcm = np.round(wave * gate * 32767).astype("<i2")
        words = [
            WordTiming(
                m.group(0),
                m.start() * per_char / sample_rate,
                (m.end() - m.start()) * per_char / sample_rate,
            )
            for m in _WORD_RE.finditer(text)
        ]
        return pcm, words

    async def synthesize(
        self, text: str, *, voice: str, language: str, sample_rate: int
    ) -> AsyncIterator[EngineChunk]:
        pcm, words = self.render(text, sample_rate)
        step = max(1, round(self.chunk_seconds * sample_rate))
        for start in range(0, len(pcm), step):
            end = min(start + step, len(pcm))
            t0, t1 = start / sample_rate, end / sample_rate
            inside = tuple(w for w in words if t0 <= w.start < t1)
            yield EngineChunk(pcm[start:end].tobytes(), inside)
            await asyncio.sleep(0)
