"""The test tone engine: known pitch, known duration, word timings checkable to the sample."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import numpy as np

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    EngineChunk,
    VoiceInfo,
    WordTiming,
    check_speed,
)

__all__ = ["ToneEngine"]


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

    def duration_of(self, text: str, speed: float = 1.0) -> float:
        """Seconds of audio ``text`` produces: what tests compare against."""
        return len(text) * self.seconds_per_char / speed

    def render(
        self, text: str, sample_rate: int, speed: float = 1.0
    ) -> tuple[np.ndarray, list[WordTiming]]:
        """The whole utterance at once; ``speed`` 2 makes every character half as long."""
        per_char = round(self.seconds_per_char / check_speed(speed) * sample_rate)
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
        self,
        text: str,
        *,
        voice: str,
        language: str,
        sample_rate: int,
        speed: float = 1.0,
        seed: int | None = None,
    ) -> AsyncIterator[EngineChunk]:
        pcm, words = self.render(text, sample_rate, speed)
        step = max(1, round(self.chunk_seconds * sample_rate))
        for start in range(0, len(pcm), step):
            end = min(start + step, len(pcm))
            t0, t1 = start / sample_rate, end / sample_rate
            inside = tuple(w for w in words if t0 <= w.start < t1)
            yield EngineChunk(pcm[start:end].tobytes(), inside)
            await asyncio.sleep(0)
