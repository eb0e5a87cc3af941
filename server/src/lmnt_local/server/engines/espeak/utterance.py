"""One ``synthesize()`` call of the espeak engine, spoken sentence by sentence.

The synth callback's side: it times the words from espeak's WORD events, paces each sentence to
``1 / speed`` of its length, resamples, and hands 20-100 ms chunks to the caller's event loop.
Apart from the engine because this is the state the worker thread and the consumer share for one
call; the engine only turns a request into one of these.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from lmnt_local.server.engines.base import EngineChunk, WordTiming
from lmnt_local.server.engines.espeak.library import (
    _CHARS_UTF8,
    _EE_OK,
    _ENDPAUSE,
    _EVENT_LIST_TERMINATED,
    _EVENT_WORD,
    _LOCK,
    _PHONEMES,
    _POS_CHARACTER,
    _Runtime,
)

# Output chunking: at least 20 ms (except the very last chunk), at most 100 ms.
_MIN_CHUNK_SECONDS = 0.020
_MAX_CHUNK_SECONDS = 0.100

# A word's sound ends at the last sample louder than this before the next word starts; espeak's
# pauses are digital silence, so trimming below about -48 dBFS only removes pauses.
_SILENCE_THRESHOLD = 128

_WPM_PER_SPEED = 175
_MIN_WPM, _MAX_WPM = 80, 450


def _rate_and_gap(speed: float) -> tuple[int, int]:
    """espeak's rate (wpm) and word gap for ``speed``, as close as espeak's own pacing allows.

    espeak's pace is not proportional to its rate (pauses shrink faster than speech: 350 wpm
    is 2.08-2.13x faster than 175 on sentences, 3x on "Hello.") and it stops at 80 wpm, so
    this is only the first step: each sentence is then padded or trimmed in its trailing
    silence to the exact length (:meth:`_Utterance._fit`).  Measured on Harvard sentences:
    duration(wpm) ~ (175 / wpm) ** 1.05; at 80 wpm each unit of word gap adds ~5 %.
    """
    wpm = _WPM_PER_SPEED * speed ** (1 / 1.05)
    if wpm >= _MIN_WPM:
        return min(_MAX_WPM, round(wpm)), 0
    slower = (_MIN_WPM / wpm) ** 1.05  # what 80 wpm still lacks
    return _MIN_WPM, max(0, math.ceil((slower - 1) / 0.05))


_TOKEN = re.compile(r"\S+")
# Scripts written without spaces: espeak's word events inside one token split it into words.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)


@dataclass(slots=True)
class _OpenWord:
    """A word whose end is not known yet: it ends where the next one starts."""

    text_start: int  # character span in the current sentence
    text_end: int
    token: int
    start: int  # native samples from the start of the utterance
    #: Tokens espeak gave no event of ("the" in "on the", "—"), said within this word's time:
    #: timed as parts of it, so every token of the text is a timed word.
    before: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)


class _Utterance:
    """One ``synthesize()`` call: state shared by the worker thread and the consumer.

    Everything but ``cancel`` and the queue runs on the worker thread, one sentence at a time, so
    it needs no locking of its own.
    """

    def __init__(
        self,
        runtime: _Runtime,
        loop: asyncio.AbstractEventLoop,
        sentences: list[str],
        voice: str,
        speed: float,
        sample_rate: int,
    ) -> None:
        self.queue: asyncio.Queue[EngineChunk | BaseException | None] = asyncio.Queue()
        self._runtime = runtime
        self._loop = loop
        self._sentences = sentences
        self._voice = voice
        self._speed = speed
        self._wpm, self._gap = _rate_and_gap(speed)
        self._native = runtime.native_rate
        self._rate = sample_rate
        self._resampler = soxr.ResampleStream(
            self._native, sample_rate, 1, dtype="int16", quality="HQ"
        )
        self._cancelled = threading.Event()
        self._min_chunk = max(1, round(_MIN_CHUNK_SECONDS * sample_rate))
        self._max_chunk = max(self._min_chunk, round(_MAX_CHUNK_SECONDS * sample_rate))
        self._in_total = 0  # native samples spoken so far
        self._sentence_start = 0
        self._last_loud = -1  # native index of the last sample above the silence threshold
        self._sentence = ""
        self._token_starts: list[int] = []
        self._token_ends: list[int] = []
        self._open: _OpenWord | None = None
        self._next_token = 0  # the first token of the sentence no word covers yet
        self._ready: list[WordTiming] = []  # timed words not yet attached to a chunk
        self._pending: list[npt.NDArray[np.int16]] = []  # resampled, not yet emitted
        self._pending_len = 0
        self.emitted = 0  # output samples handed to the consumer

    # -- consumer side -------------------------------------------------------------------------

    def start(self) -> None:
        self._submit(0)

    def cancel(self) -> None:
        """Stop at the next synth callback (which then returns 1) and skip later sentences."""
        self._cancelled.set()

    # -- worker side ---------------------------------------------------------------------------

    def _submit(self, index: int) -> None:
        try:
            self._runtime.executor.submit(self._speak, index)
        except RuntimeError as exc:  # executor shut down at interpreter exit
            self.fail(exc)

    def _speak(self, index: int) -> None:
        if self._cancelled.is_set():
            return
        try:
            self._speak_sentence(index)
            if self._cancelled.is_set():
                return
            if index + 1 < len(self._sentences):
                # Re-queue rather than loop: other utterances' sentences get their turn.
                self._submit(index + 1)
            else:
                self._finish()
        except BaseException as exc:
            self.fail(exc)

    def _speak_sentence(self, index: int) -> None:
        sentence = self._sentences[index]
        self._sentence = sentence
        spans = [m.span() for m in _TOKEN.finditer(sentence)]
        self._token_starts = [s for s, _ in spans]
        self._next_token = 0
        self._token_ends = [e for _, e in spans]
        self._sentence_start = self._in_total
        data = sentence.encode("utf-8")
        with _LOCK:
            runtime = self._runtime
            natural = None
            if self._speed != 1.0:  # its length at speed 1: ~1 ms of CPU per second of speech
                counter = _Counter(self._cancelled)
                runtime.select(self._voice, _WPM_PER_SPEED)
                runtime.active = counter
                try:
                    runtime.lib.espeak_Synth(
                        data,
                        len(data) + 1,
                        0,
                        _POS_CHARACTER,
                        0,
                        _CHARS_UTF8 | _ENDPAUSE,
                        None,
                        None,
                    )
                finally:
                    runtime.active = None
                natural = counter.samples
            runtime.select(self._voice, self._wpm, self._gap)
            runtime.active = self
            try:
                status = runtime.lib.espeak_Synth(
                    data,
                    len(data) + 1,
                    0,
                    _POS_CHARACTER,
                    0,
                    _CHARS_UTF8 | _ENDPAUSE | _PHONEMES,
                    None,
                    None,
                )
            finally:
                runtime.active = None
        if self._cancelled.is_set():
            return
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        if self._open is not None:
            self._open.after.extend(range(self._open.token + 1, len(spans)))
            self._close_open(self._in_total, self._in_total, _NO_LOUD)
        if natural is not None:
            self._fit(round(natural / self._speed))
        if self._next_token < len(spans):  # no word event at all ("..."): the sentence's time
            start = self._sentence_start
            self._open = _OpenWord(*spans[self._next_token], self._next_token, start)
            self._open.after.extend(range(self._next_token + 1, len(spans)))
            self._close_open(max(self._in_total, start + 1), self._in_total, _NO_LOUD)
        self._emit(final=False)

    def _fit(self, target: int) -> None:
        """Make the sentence ``target`` native samples long: pad its trailing silence, or trim
        it (audio after the last loud sample is held back while ``speed`` is not 1)."""
        spoken = self._in_total - self._sentence_start
        if spoken < target:
            silence = np.zeros(target - spoken, dtype=np.int16)
            self._in_total += silence.size
            self._push(self._resampler.resample_chunk(silence))
            return
        loud_end = max(self._last_loud + 1, self._sentence_start)
        spare = min(spoken - target, self._in_total - loud_end)  # native silence we may drop
        cut = min(self._pending_len, spare * self._rate // self._native)
        if cut <= 0:
            return
        audio = np.concatenate(self._pending)[: self._pending_len - cut]
        self._pending = [audio] if audio.size else []
        self._pending_len = int(audio.size)
        self._in_total -= cut * self._native // self._rate

    def on_audio(self, wav: Any, count: int, events: Any) -> int:
        """The synth callback: copy, time the words, resample, hand over what is ready."""
        if self._cancelled.is_set():
            return 1
        buffer_start = self._in_total
        if wav and count > 0:
            samples = np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True)
        else:
            samples = np.zeros(0, dtype=np.int16)
        loud = np.flatnonzero((samples > _SILENCE_THRESHOLD) | (samples < -_SILENCE_THRESHOLD))
        if events:
            i = 0
            while (event := events[i]).type != _EVENT_LIST_TERMINATED:
                if event.type == _EVENT_WORD:
                    position = self._sentence_start + round(
                        event.audio_position * self._native / 1000
                    )
                    self._on_word(event.text_position - 1, position, buffer_start, loud)
                i += 1
        if loud.size:
            self._last_loud = buffer_start + int(loud[-1])
        self._in_total += samples.size
        if samples.size:
            self._push(self._resampler.resample_chunk(samples))
            self._emit(final=False)
        return 0

    def _token_at(self, char: int) -> int | None:
        i = bisect.bisect_right(self._token_starts, char) - 1
        if i >= 0 and char < self._token_ends[i]:
            return i
        return i + 1 if i + 1 < len(self._token_starts) else None

    def _on_word(
        self, char: int, position: int, buffer_start: int, loud: npt.NDArray[np.intp]
    ) -> None:
        token = self._token_at(char)
        if token is None:
            return
        # Never start a word in audio already handed out (would break chunk attachment).
        floor = -(-self.emitted * self._native // self._rate)
        position = max(position, floor)
        current = self._open
        if current is not None:
            if token < current.token:
                return
            if token == current.token:
                # Another event inside the same token: "42" -> "forty two" stays one word,
                # but unspaced scripts (Chinese, Thai...) are split where espeak splits them.
                splittable = (
                    current.text_start < char < current.text_end
                    and _UNSPACED.match(self._sentence, char) is not None
                    and _UNSPACED.match(self._sentence, char - 1) is not None
                )
                if not splittable or position <= current.start:
                    return
                current.text_end = char
                self._close_open(position, buffer_start, loud)
                self._open = _OpenWord(char, self._token_ends[token], token, position)
                return
            if position <= current.start:
                # Two tokens spoken from the same instant: they share the word's time.
                current.after.extend(range(current.token + 1, token + 1))
                current.token = token
                return
            current.after.extend(range(current.token + 1, token))
            self._close_open(position, buffer_start, loud)
        elif token < self._next_token:
            return
        word = _OpenWord(self._token_starts[token], self._token_ends[token], token, position)
        word.before.extend(range(self._next_token, token))
        self._open = word

    def _close_open(self, end: int, buffer_start: int, loud: npt.NDArray[np.intp]) -> None:
        """Time the open word: it lasts until ``end`` minus any silence before it."""
        word = self._open
        assert word is not None
        self._open = None
        k = int(np.searchsorted(loud, end - buffer_start))
        last = buffer_start + int(loud[k - 1]) if k > 0 else self._last_loud
        sound_end = last + 1 if word.start <= last < end else end
        sound_end = max(sound_end, word.start + 1)
        own = self._sentence[word.text_start : word.text_end]
        texts = [self._token_text(t) for t in word.before]
        texts += [own, *(self._token_text(t) for t in word.after)]
        self._next_token = max(self._next_token, word.token + 1, *(t + 1 for t in word.after))
        # Shared by length of text: "on the" said as one gives "on" and "the" a part each.
        weights = np.cumsum([0] + [max(1, len(t)) for t in texts], dtype=np.float64)
        edges = word.start + (sound_end - word.start) * weights / weights[-1]
        for k, text in enumerate(texts):
            self._ready.append(
                WordTiming(
                    text,
                    float(edges[k]) / self._native,
                    float(edges[k + 1] - edges[k]) / self._native,
                )
            )

    def _token_text(self, token: int) -> str:
        return self._sentence[self._token_starts[token] : self._token_ends[token]]

    def _push(self, audio: npt.NDArray[np.int16]) -> None:
        audio = np.asarray(audio, dtype=np.int16).reshape(-1)
        if audio.size:
            self._pending.append(audio)
            self._pending_len += audio.size

    def _emit(self, *, final: bool) -> None:
        """Hand out pending audio in 20-100 ms chunks, each with the words that start in it.

        Until the end, audio stops short of the open word (its chunk needs its duration) and
        keeps one sample back, so words timed at the very end always have a chunk to ride in.
        """
        total = self.emitted + self._pending_len
        if final:
            limit = total
        else:
            limit = total - 1
            if self._open is not None:
                limit = min(limit, self._open.start * self._rate // self._native)
            if self._speed != 1.0:  # the silence after the last sound may be trimmed (_fit)
                limit = min(limit, (self._last_loud + 1) * self._rate // self._native)
        available = limit - self.emitted
        if available <= 0 or (not final and available < self._min_chunk):
            return
        audio = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        rest = audio[available:]
        self._pending = [rest] if rest.size else []
        self._pending_len = int(rest.size)
        pieces = math.ceil(available / self._max_chunk)
        bounds = [available * k // pieces for k in range(pieces + 1)]
        for k in range(pieces):
            first, last = bounds[k], bounds[k + 1]
            end_sample = self.emitted + last
            words: list[WordTiming] = []
            while self._ready and (
                (final and k == pieces - 1) or self._ready[0].start * self._rate < end_sample
            ):
                words.append(self._clamp(self._ready.pop(0), end_sample))
            self._post(EngineChunk(audio[first:last].tobytes(), tuple(words)))
        self.emitted += available

    def _clamp(self, word: WordTiming, end_sample: int) -> WordTiming:
        """Keep a word's start inside the audio produced (only rounding can push it out)."""
        latest = (end_sample - 1) / self._rate
        if word.start <= latest:
            return word
        return WordTiming(word.text, latest, min(word.duration, 1 / self._rate))

    def _finish(self) -> None:
        self._push(self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True))
        self._emit(final=True)
        self._post(None)

    def fail(self, exc: BaseException) -> None:
        self._cancelled.set()
        self._post(exc)

    def _post(self, item: EngineChunk | BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody will read this utterance any more
            self._cancelled.set()


_NO_LOUD: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)


class _Counter:
    """Stands in for an utterance in the synth callback to measure a sentence's length."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.samples = 0
        self._cancelled = cancelled

    def on_audio(self, wav: Any, count: int, events: Any) -> int:
        self.samples += max(0, count) if wav else 0
        return 1 if self._cancelled.is_set() else 0

    def fail(self, exc: BaseException) -> None:
        self._cancelled.set()
