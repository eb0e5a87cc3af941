"""The text front-end every engine speaks through: markup, lexicon, normaliser, word mapping.

The server wraps its engine in :class:`TextFrontEnd` once, so every engine (neural, espeak-ng,
tone, any other) and every API (WebSocket legacy and typed, HTTP) hears the same text: Markdown
and SSML removed (:mod:`.markup`), pronunciations applied (:mod:`.lexicon`), written forms
said as meant (:mod:`.normalize`), ``<break>`` turned into real silence.  The engine's word
timings are mapped back to the words the caller wrote: "$5.50" is one timestamp from the start
of "five" to the end of "cents".

A text with nothing to change goes to the engine untouched (same call, same chunks), so the
front-end costs a plain sentence a few regular-expression scans and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lmnt_local.server.engines.base import (
    MAX_SPEED,
    MIN_SPEED,
    EngineChunk,
    SpeechEngine,
    VoiceInfo,
    WordTiming,
)
from lmnt_local.server.text.lexicon import Lexicon, ipa_to_respelling
from lmnt_local.server.text.markup import Pause, Run, Span, parse

__all__ = ["Segment", "Spoken", "TextFrontEnd", "phoneme_markup", "prepare"]


class _Normalized(Protocol):
    """What :func:`.normalize.normalize` returns (only what the front-end reads)."""

    @property
    def spoken(self) -> str: ...

    @property
    def tokens(self) -> Sequence[tuple[int, int, str]]: ...


Normalizer = Callable[..., _Normalized]


@dataclass(frozen=True, slots=True)
class _Identity:
    spoken: str
    tokens: Sequence[tuple[int, int, str]]


def _identity(text: str, language: str = "en") -> _Normalized:
    return _Identity(text, [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(text)])


def _default_normalizer() -> Normalizer:
    """The normaliser registry (:mod:`.normalize`): English, and any language registered."""
    from lmnt_local.server.text import normalize

    return normalize


_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Spoken:
    """What one engine call says: ``text``, and for its words the caller span each came from
    (``words``: spoken start, spoken end, caller start, caller end), ``rate`` times the speed."""

    text: str
    words: tuple[tuple[int, int, int, int], ...]
    rate: float = 1.0


Segment = Spoken | Pause


def phoneme_markup(engine: object) -> Callable[[str], str] | None:
    """How ``engine`` takes IPA inline (its ``phoneme_markup(ipa)`` method), or None."""
    method = getattr(engine, "phoneme_markup", None)
    return method if callable(method) else None


def prepare(
    text: str,
    *,
    language: str = "en",
    lexicon: Lexicon | None = None,
    normalizer: Normalizer = _identity,
    ipa: Callable[[str], str] | None = None,
) -> list[Segment]:
    """``text`` as what the engine says, segment by segment (see :class:`Spoken`)."""
    segments: list[Segment] = []
    parts: list[str] = []
    words: list[tuple[int, int, int, int]] = []
    rate: float | None = None

    def close() -> None:
        nonlocal parts, words
        spoken = "".join(parts)
        if spoken.strip():
            segments.append(Spoken(spoken, tuple(words), rate or 1.0))
        parts, words = [], []

    for piece in parse(text):
        if isinstance(piece, Pause):
            close()
            if segments and isinstance(segments[-1], Pause):
                segments[-1] = Pause(segments[-1].seconds + piece.seconds)
            else:
                segments.append(Pause(piece.seconds))
            continue
        if rate is not None and piece.rate != rate:
            close()
        rate = piece.rate
        runs = lexicon.apply(piece) if lexicon is not None else [piece]
        for run in runs:
            base = sum(len(p) for p in parts)
            said, mapped = _say(run, language, normalizer, ipa)
            if parts and said and not parts[-1][-1:].isspace() and run.kind == "ipa":
                said = " " + said
                mapped = [(a + 1, b + 1, c, d) for a, b, c, d in mapped]
            parts.append(said)
            words.extend((a + base, b + base, c, d) for a, b, c, d in mapped)
    close()
    return segments


_PHONEME_BRACKETS = re.compile(r"\[\[|\]\]")


def _say(
    run: Run, language: str, normalizer: Normalizer, ipa: Callable[[str], str] | None
) -> tuple[str, list[tuple[int, int, int, int]]]:
    """One run as spoken text and its word map (spoken span -> caller span)."""
    whole = _cover(run.origin)
    if run.kind == "ipa":
        said = ipa(run.text) if ipa is not None else ipa_to_respelling(run.text)
        return said, [(0, len(said), *whole)]
    if run.kind == "said":
        return run.text, [(m.start(), m.end(), *whole) for m in _WORD.finditer(run.text)]
    # "[[" is raw-phoneme syntax to some engines: caller text never reaches them as such
    text = _PHONEME_BRACKETS.sub(lambda m: "( " if m.group(0) == "[[" else " )", run.text)
    normalized = normalizer(text, language=language)
    spoken = normalized.spoken
    mapped: list[tuple[int, int, int, int]] = []
    cursor = 0
    for start, end, said in normalized.tokens:
        said = said.strip()
        if not said:
            continue
        at = spoken.find(said, cursor)
        if at < 0:
            continue
        # one entry per stretch of caller text: markup inside a word ("`items`.") is not it
        for a, b in _stretches(run.origin[start:end]) if end > start else [whole]:
            mapped.append((at, at + len(said), a, b))
        cursor = at + len(said)
    return spoken, mapped


def _stretches(spans: Sequence[Span]) -> list[Span]:
    """``spans`` merged where they touch or overlap, in order."""
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _cover(spans: Sequence[Span]) -> Span:
    return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0, 0)


class TextFrontEnd:
    """An engine that speaks ``engine`` after the text front-end (module docstring).

    Everything else (``voices``, ``resolve``, ``load``, ``name``...) is the engine's own.
    ``lexicon``: pronunciations (default: the built-in one, "LMNT" said "lament").
    """

    def __init__(
        self,
        engine: SpeechEngine,
        *,
        lexicon: Lexicon | None = None,
        normalizer: Normalizer | None = None,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.lexicon = lexicon if lexicon is not None else Lexicon()
        self._normalize = normalizer or _default_normalizer()
        self._ipa = phoneme_markup(engine)
        self._voice_languages: dict[str, str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def voices(self) -> list[VoiceInfo]:
        return self.engine.voices()

    def has_voice(self, voice: str) -> bool:
        return self.engine.has_voice(voice)

    def _language(self, voice: str, language: str) -> str:
        """The language the text is read in: the request's, or for ``auto`` (LMNT's default)
        the voice's own, else English."""
        if language != "auto":
            return language
        known = self._voice_languages
        if known is None:
            known = self._voice_languages = {v.id: v.language or "en" for v in self.voices()}
        return known.get(voice, "en")

    def prepare(
        self, text: str, language: str = "en", *, voice: str | None = None
    ) -> list[Segment]:
        """What the engine would be asked to say for ``text`` (for tests and tools)."""
        return prepare(
            text,
            language=language,
            lexicon=self.lexicon,
            normalizer=self._normalize,
            ipa=self._ipa if voice is None else self._ipa_for(voice, language),
        )

    def _ipa_for(self, voice: str, language: str) -> Callable[[str], str] | None:
        """The IPA notation of the engine that speaks ``voice``: a router (``auto``) hands each
        voice to another engine, and each takes phonemes in its own notation."""
        route = getattr(self.engine, "route", None)
        if not callable(route):
            return self._ipa
        try:
            return phoneme_markup(route(voice, language).engine)
        except ValueError:  # LanguageError: the request is refused before any text is read
            return None

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
        spoken_in = self._language(voice, language)
        segments = self.prepare(text, spoken_in, voice=voice) if text.strip() else []
        if not segments or _unchanged(text, segments):
            # nothing to change (or whitespace only): the engine's own call, chunk for chunk
            own = _engine_chunks(self.engine, text, voice, language, sample_rate, speed, seed)
            try:
                async for chunk in own:
                    yield chunk
            finally:  # closed now, not by the garbage collector: a reset stops the engine
                await own.aclose()
            return
        offset = 0.0  # seconds of audio yielded so far
        quiet = 0  # silent samples at the end of what was yielded (an engine's own end pause)
        for segment in segments:
            if isinstance(segment, Pause):
                # the break is the silence heard: what the engine already left counts
                samples = round(segment.seconds * sample_rate) - quiet
                if samples > 0:
                    yield EngineChunk(bytes(2 * samples))
                    offset += samples / sample_rate
                quiet = 0
                continue
            pace = min(MAX_SPEED, max(MIN_SPEED, speed * segment.rate))
            words = _WordMapper(text, segment)
            base = offset  # engine word times count from the first sample of this call
            held: list[bytes] = []
            chunks = _engine_chunks(
                self.engine, segment.text, voice, language, sample_rate, pace, seed
            )
            try:
                async for chunk in chunks:
                    ready = words.feed(chunk.words, base)
                    held.append(chunk.pcm)
                    if not words.open_group:
                        pcm = b"".join(held)
                        held.clear()
                        quiet = _quiet_tail(pcm, quiet)
                        yield EngineChunk(pcm, tuple(ready))
                        offset += len(pcm) / 2 / sample_rate
                    elif ready:
                        words.carry(ready)
            finally:
                await chunks.aclose()
            tail = words.finish()
            pcm = b"".join(held)
            if pcm or tail:
                quiet = _quiet_tail(pcm, quiet)
                yield EngineChunk(pcm, tuple(tail))
                offset += len(pcm) / 2 / sample_rate


_QUIET = 328  # |sample| below 1 % of full scale: silence


def _quiet_tail(pcm: bytes, before: int) -> int:
    """Silent samples at the end of the audio so far, given ``before`` before ``pcm``."""
    samples = np.frombuffer(pcm, dtype="<i2")
    if not samples.size:
        return before
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= _QUIET)
    return before + samples.size if not loud.size else int(samples.size - 1 - loud[-1])


def _unchanged(text: str, segments: list[Segment]) -> bool:
    if len(segments) != 1:
        return False
    only = segments[0]
    return isinstance(only, Spoken) and only.rate == 1.0 and only.text == text


async def _engine_chunks(
    engine: SpeechEngine,
    text: str,
    voice: str,
    language: str,
    sample_rate: int,
    speed: float,
    seed: int | None,
) -> AsyncGenerator[EngineChunk, None]:
    chunks = engine.synthesize(
        text, voice=voice, language=language, sample_rate=sample_rate, speed=speed, seed=seed
    )
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class _Group:
    """A caller word being timed: its caller spans, start and end (s), and how far into the
    spoken text its words run."""

    spans: list[Span]
    start: float
    end: float
    spoken_end: int

    def overlaps(self, spans: list[Span]) -> bool:
        return any(a < d and c < b for a, b in self.spans for c, d in spans)


class _WordMapper:
    """Turns an engine's word timings (words of the spoken text) into the caller's words.

    Consecutive engine words from overlapping caller spans become one word ("five dollars and
    fifty cents" -> "$5.50").  While such a group is still open (its spoken words run past the
    last engine word seen), :attr:`open_group` holds the audio back so the caller's word
    travels with the chunk it starts in, with its full duration.  A word's text is the
    caller's characters it was said from, markup between them left out ("**LMNT**." ->
    "LMNT.").
    """

    def __init__(self, caller: str, segment: Spoken) -> None:
        self._caller = caller
        self._spoken = segment.text
        self._map = segment.words
        self._cursor = 0  # spoken index after the last engine word found
        self._current: _Group | None = None
        self._carried: list[WordTiming] = []
        self.open_group = False

    def _locate(self, word: str) -> tuple[int, int] | None:
        at = self._spoken.find(word, self._cursor)
        if at < 0:
            return None
        self._cursor = at + len(word)
        return at, at + len(word)

    def _caller_spans(self, spoken: tuple[int, int]) -> tuple[list[Span], int] | None:
        """The caller spans an engine word was said from, and where in the spoken text the
        words of those spans end (a normalised word runs on past this engine word)."""
        a, b = spoken
        spans = sorted({(cs, ce) for ss, se, cs, ce in self._map if ss < b and a < se and cs < ce})
        if not spans:  # said from no caller character (a pause mark a tag added)
            return None
        spoken_end = max(
            (se for ss, se, cs, ce in self._map if any(cs < y and x < ce for x, y in spans)),
            default=b,
        )
        return spans, spoken_end

    def feed(self, words: Sequence[WordTiming], offset: float) -> list[WordTiming]:
        ready = self._carried
        self._carried = []
        for word in words:
            start, end = offset + word.start, offset + word.start + word.duration
            located = self._locate(word.text)
            found = self._caller_spans(located) if located is not None else None
            if found is None:
                self._close(ready)
                ready.append(WordTiming(word.text, start, word.duration))
                continue
            spans, spoken_end = found
            current = self._current
            if current is not None and current.overlaps(spans):
                current.spans.extend(sp for sp in spans if sp not in current.spans)
                current.end = max(current.end, end)
                current.spoken_end = max(current.spoken_end, spoken_end)
            else:
                self._close(ready)
                self._current = _Group(list(spans), start, end, spoken_end)
        current = self._current
        self.open_group = current is not None and current.spoken_end > self._cursor
        if current is not None and not self.open_group:
            self._close(ready)
        return ready

    def carry(self, words: list[WordTiming]) -> None:
        """Words finished while audio is held: they go out with the held audio."""
        self._carried = words + self._carried

    def _close(self, ready: list[WordTiming]) -> None:
        current, self._current = self._current, None
        if current is not None:
            text = _caller_text(self._caller, current.spans)
            ready.append(WordTiming(text, current.start, max(0.0, current.end - current.start)))

    def finish(self) -> list[WordTiming]:
        ready = self._carried
        self._carried = []
        self._close(ready)
        self.open_group = False
        return ready


def _caller_text(caller: str, spans: list[Span]) -> str:
    """The caller's characters of ``spans`` (merged where they touch), in order."""
    return "".join(caller[a:b] for a, b in _stretches(spans))
