"""What every speech engine of the local server is: its interface and the values it yields.

An engine turns a piece of text into mono s16 PCM at the rate the session asked for, plus the
start and duration of every word in that audio. The server owns buffering, flushing, encoding
and the wire; an engine only speaks.  Engines are async iterators so the first sentence of a
long text can be on the wire while later audio is still being made.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "INFERENCE_THREADS_ENV",
    "LMNT_VOICES",
    "MAX_SPEED",
    "MIN_SPEED",
    "PLAYBACK_LEAD",
    "EngineChunk",
    "LanguageError",
    "SpeechEngine",
    "VoiceInfo",
    "WordTiming",
    "check_request",
    "check_speed",
    "load_engine",
]

#: Inference threads of a process whose neural engine was not given ``workers`` (default: one
#: per core); ``lmnt-local serve --workers N`` sets it to cores / N for its workers.
INFERENCE_THREADS_ENV = "LMNT_INFERENCE_THREADS"

#: LMNT's documented range of ``speed`` (legacy docs): 0.25 (slow) to 2.0 (twice as fast).
MIN_SPEED, MAX_SPEED = 0.25, 2.0


def check_speed(speed: float) -> float:
    """``speed`` as a float, or ``ValueError`` naming the range (engines called directly)."""
    if not (isinstance(speed, int | float) and math.isfinite(speed)):
        raise ValueError(f"speed must be a number between {MIN_SPEED} and {MAX_SPEED}")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return float(speed)


#: Seconds of audio the caller already holds beyond what has played (how long it can wait for
#: more), set by the server around each ``synthesize`` call.  Engines that share a pool among
#: sessions schedule by it: the session closest to running dry (a new one: 0) goes first.
PLAYBACK_LEAD: ContextVar[float] = ContextVar("lmnt_playback_lead", default=0.0)


class LanguageError(ValueError):
    """No installed voice speaks the requested language: answered with an LMNT-shaped error
    (WebSocket error + close, HTTP 422) instead of speaking the text in the wrong language."""


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
    #: ISO 639-1 code (``"en"``) when the engine knows it; reported as ``language``.
    language: str | None = None

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {
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
        if self.language:
            body["language"] = self.language
        return body


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
    itself internally.  ``speed`` is LMNT's (0.25-2.0, 1 = natural pace); ``seed`` asks for
    repeatable output where the engine can give it.  An engine may raise :class:`LanguageError`
    before yielding anything when it cannot speak ``language``.

    An engine may also have a ``load()`` method (blocking, idempotent) that loads its model;
    the server calls it off the event loop in ``start()``, before it reports itself ready, so
    the first session does not pay for it (see :func:`load_engine`).
    """

    name: str

    def voices(self) -> list[VoiceInfo]: ...

    def has_voice(self, voice: str) -> bool: ...

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        language: str,
        sample_rate: int,
        speed: float = 1.0,
        seed: int | None = None,
    ) -> AsyncIterator[EngineChunk]: ...


def check_request(engine: object, voice: str, language: str) -> None:
    """:class:`LanguageError` now, at init, if the engine cannot speak ``language`` with
    ``voice`` (engines that route voices by language have a ``resolve(voice, language)``)."""
    resolve = getattr(engine, "resolve", None)
    if callable(resolve):
        resolve(voice, language)


def load_engine(engine: object) -> None:
    """Run the engine's optional ``load()`` (blocking): call it in a worker thread."""
    load = getattr(engine, "load", None)
    if callable(load):
        load()
