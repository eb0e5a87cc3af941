"""The offline speech engine: espeak-ng driven through ``ctypes``.

espeak-ng is the one engine that installs from PyPI alone (the ``espeakng-loader`` wheel carries
the library and its data), needs no model download, speaks ~100 languages and runs about 1000x
faster than real time. Its sound is robotic, but it is real speech with real word timings, which
is what a local stand-in for LMNT needs.

The library has process-wide state and is not re-entrant (two threads synthesizing at once crash
the process), so this module owns exactly one initialisation, one lock and one worker thread.
Every ``synthesize()`` call becomes an ``_Utterance`` that the worker speaks one sentence at a
time; sentences of concurrent calls interleave in FIFO order, so one long text cannot hold the
first sentence of another session hostage. The synth callback runs on the worker thread while
espeak is inside ``espeak_Synth``; it resamples what it gets and hands finished chunks to the
caller's event loop with ``call_soon_threadsafe``, so audio streams out while the rest of the
text is still being spoken.

The bundled espeak-ng is GPL-3.0-or-later, which is why it is the optional ``[local]`` extra.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import ctypes.util
import math
import re
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    EngineChunk,
    VoiceInfo,
    WordTiming,
    check_speed,
)
from lmnt_local.server.text.segment import CONTROL_CHARS, split_sentences

__all__ = ["LANGUAGE_VOICES", "VOICE_VARIANTS", "EspeakEngine", "split_sentences"]

# What the ``espeak`` extra installs; naming the package itself would fetch the index's 1.0.30.
_INSTALL_HINT = "pip install 'espeakng-loader>=0.2.4,<0.3'"

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path calls exit(1) inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x1
_ENDPAUSE = 0x1000  # a sentence-final pause after every Synth call: sentences join naturally
_PHONEMES = 0x100  # [[ ]] holds phoneme mnemonics (the text front-end's IPA, converted)
_PARAM_RATE = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EE_OK = 0

# LMNT voice id -> espeak voice variant (a file in espeak-ng-data/voices/!v). Measured median
# pitch with en-us: f3 216 Hz, f4 182 Hz, Annie 242 Hz, f2 200 Hz, f5 208 Hz (breathy),
# m1 95 Hz, m3 107 Hz. Variants are language independent, so "de+f3" keeps Ava's character.
VOICE_VARIANTS: dict[str, str] = {
    "ava": "f3",  # clear, friendly
    "leah": "f4",  # warm, lower female
    "lily": "Annie",  # bright, the highest
    "amy": "f2",  # calm narrator
    "elowen": "f5",  # soft and airy (breathy variant)
    "morgan": "m1",  # deep
    "ansel": "m3",  # relaxed
}

# ISO-639-1 (LMNT's list, plus aliases) -> espeak voice file, where the plain code is not the
# right file or not listed under that code. Everything else is looked up in espeak's own list.
LANGUAGE_VOICES: dict[str, str] = {
    "en": "en-us",  # LMNT's voices are American
    "zh": "cmn",  # Mandarin; espeak lists it as "cmn"
    "pt": "pt-br",  # Brazilian Portuguese: the common target; "pt-pt" gives Portugal
    "pt-pt": "pt",
    "fr": "fr",  # espeak lists French (France) as "fr-fr" but the file is "fr"
    "en-gb": "en",
    "no": "nb",
}

_DEFAULT_LANGUAGE_VOICE = "en-us"

# Output chunking: at least 20 ms (except the very last chunk), at most 100 ms.
_MIN_CHUNK_SECONDS = 0.020
_MAX_CHUNK_SECONDS = 0.100

# A word's sound ends at the last sample louder than this before the next word starts; espeak's
# pauses are digital silence, so trimming below about -48 dBFS only removes pauses.
_SILENCE_THRESHOLD = 128

_WPM_PER_SPEED = 175
_MIN_WPM, _MAX_WPM = 80, 450
_PARAM_WORDGAP = 7  # extra pause between words, 10 ms units


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


_MIN_RATE, _MAX_RATE = 8000, 48000

_LOCK = threading.Lock()
"""Held around every call into libespeak-ng: the library is not re-entrant."""


class _EspeakEvent(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union { int; const char*; char[8] }
    )


class _EspeakVoice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


def _locate_library() -> tuple[str, str | None]:
    """Where libespeak-ng and its data are: the wheel first, then a system library.

    Returns the library path and the data path (``None``: the system library's built-in one).
    """
    try:
        import espeakng_loader
    except ImportError:
        pass
    else:
        library = str(espeakng_loader.get_library_path())
        if Path(library).exists():
            try:
                return library, str(espeakng_loader.get_data_path())
            except RuntimeError:
                pass
    found = ctypes.util.find_library("espeak-ng")
    if found:
        return found, None
    raise RuntimeError(
        "The local speech engine needs libespeak-ng: install it with "
        f"{_INSTALL_HINT} (or the system package libespeak-ng1)."
    )


class _Runtime:
    """The one initialised libespeak-ng of this process, with its worker thread."""

    def __init__(self) -> None:
        library_path, data_path = _locate_library()
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise RuntimeError(f"Cannot load {library_path} ({exc}); try {_INSTALL_HINT}") from exc
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SYNTH_CALLBACK,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        self.lib = lib
        data = data_path.encode() if data_path is not None else None
        native_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT
        )
        if native_rate <= 0:
            raise RuntimeError(
                f"espeak_Initialize failed ({native_rate}) with data path {data_path!r}; "
                f"reinstall with {_INSTALL_HINT}"
            )
        self.native_rate: int = native_rate
        # ctypes does not keep the trampoline alive: this reference must outlive every Synth.
        self._callback = _SYNTH_CALLBACK(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self.active: _Utterance | _Counter | None = None
        self._voice: str | None = None
        self.languages, self.voice_files = self._list_voices()
        # One thread rather than the loop's default executor: jobs queued behind the lock would
        # otherwise sit on executor threads that DNS lookups and file I/O need.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")

    def _list_voices(self) -> tuple[dict[str, str], frozenset[str]]:
        """Language tag -> voice file name, and the set of voice file names (both lower case)."""
        languages: dict[str, str] = {}
        files: set[str] = set()
        table = self.lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            voice = table[i].contents
            i += 1
            if not voice.identifier or not voice.languages:
                continue
            file = voice.identifier.decode(errors="replace").rsplit("/", 1)[-1].lower()
            files.add(file)
            # languages: repeated (priority byte, NUL-terminated name), ended by a 0 priority.
            address = voice.languages
            while ctypes.string_at(address, 1)[0] != 0:
                tag = ctypes.string_at(address + 1)
                address += 2 + len(tag)
                languages.setdefault(tag.decode(errors="replace").lower(), file)
        return languages, frozenset(files)

    def select(self, voice: str, wpm: int, gap: int = 0) -> None:
        """Make ``voice`` current (caller holds ``_LOCK``); falls back rather than fails."""
        if voice != self._voice:
            base = voice.split("+", 1)[0]
            for candidate in (voice, base, _DEFAULT_LANGUAGE_VOICE):
                if self.lib.espeak_SetVoiceByName(candidate.encode()) == _EE_OK:
                    break
            else:
                raise RuntimeError(f"espeak-ng has no voice {voice!r} and no English fallback")
            self._voice = voice
        self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
        self.lib.espeak_SetParameter(_PARAM_WORDGAP, gap, 0)

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        utterance = self.active
        if utterance is None:
            return 0
        try:
            return utterance.on_audio(wav, count, events)
        except BaseException as exc:  # never let an exception unwind into C
            utterance.fail(exc)
            return 1


_RUNTIME: _Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def _runtime() -> _Runtime:
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            with _LOCK:
                _RUNTIME = _Runtime()
        return _RUNTIME


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


class EspeakEngine:
    """LMNT's voices and languages mapped onto espeak-ng, streamed sentence by sentence.

    Voices: each LMNT id picks an espeak variant (``VOICE_VARIANTS``); ids it does not know
    (custom or cloned LMNT voices) speak with ``default_voice`` rather than failing, because a
    local stand-in should keep a session alive. Languages: an ISO-639-1 code picks the espeak
    language file and keeps the voice's variant (``de`` + Ava -> ``de+f3``); ``auto``, empty and
    unknown codes speak English.

    Word timings: ``start`` is when espeak's WORD event says the word begins; ``duration`` runs
    to the next word's start (or the end of the sentence), minus the silence before it, i.e. to
    the end of the word's own sound. Words are whitespace tokens (``"42"`` is one word although
    espeak says two), except that runs of Chinese, Japanese, Thai... are split where espeak
    splits them.
    """

    name = "espeak"

    def __init__(
        self, *, default_voice: str = "ava", voice_variants: Mapping[str, str] | None = None
    ) -> None:
        variants = dict(VOICE_VARIANTS)
        variants.update({k.lower(): v for k, v in (voice_variants or {}).items()})
        if default_voice.lower() not in variants:
            raise ValueError(f"default_voice {default_voice!r} is not one of {sorted(variants)}")
        self._variants = variants
        self._default_variant = variants[default_voice.lower()]
        self._runtime = _runtime()

    @staticmethod
    def available() -> bool:
        """Whether a libespeak-ng can be found (without loading it): lets the server pick."""
        try:
            _locate_library()
        except RuntimeError:
            return False
        return True

    def voices(self) -> list[VoiceInfo]:
        return list(LMNT_VOICES)

    def has_voice(self, voice: str) -> bool:
        return bool(voice)

    def espeak_voice(self, voice: str, language: str) -> str:
        """The espeak voice name a request speaks with, e.g. ``("ava", "de") -> "de+f3"``."""
        variant = self._variants.get(voice.strip().lower(), self._default_variant)
        return f"{self._language_file(language)}+{variant}"

    def speaks(self, language: str) -> bool:
        """Whether espeak-ng has a voice for ``language`` (``auto`` and empty: yes, English);
        an unknown code would otherwise be read with English rules."""
        tag = language.strip().lower().replace("_", "-")
        if not tag or tag == "auto":
            return True
        files = self._runtime.voice_files
        for candidate in (tag, tag.split("-", 1)[0]):
            override = LANGUAGE_VOICES.get(candidate)
            if override is not None and override in files:
                return True
            if candidate in self._runtime.languages:
                return True
        return False

    def _language_file(self, language: str) -> str:
        tag = language.strip().lower().replace("_", "-")
        if not tag or tag == "auto":
            return _DEFAULT_LANGUAGE_VOICE
        files = self._runtime.voice_files
        for candidate in (tag, tag.split("-", 1)[0]):
            override = LANGUAGE_VOICES.get(candidate)
            if override is not None and override in files:
                return override
            listed = self._runtime.languages.get(candidate)
            if listed is not None:
                return listed
        return _DEFAULT_LANGUAGE_VOICE

    @staticmethod
    def phoneme_markup(ipa: str) -> str:
        """IPA said as written, through espeak-ng's ``[[ ]]`` phoneme input (converted to its
        mnemonics); one block per word, so each word keeps its own timing."""
        from lmnt_local.server.text.lexicon import ipa_to_espeak

        return " ".join(f"[[{ipa_to_espeak(word)}]]" for word in ipa.split())

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
        """``speed`` divides each sentence's length at speed 1 (espeak's rate and word gap,
        then its trailing pause padded or trimmed: :func:`_rate_and_gap`); ``seed`` has
        nothing to choose here: espeak is not random."""
        if not _MIN_RATE <= sample_rate <= _MAX_RATE:
            raise ValueError(f"sample_rate must be {_MIN_RATE}-{_MAX_RATE} Hz, got {sample_rate}")
        check_speed(speed)
        sentences = split_sentences(CONTROL_CHARS.sub(" ", text))
        if not sentences:
            return
        utterance = _Utterance(
            self._runtime,
            asyncio.get_running_loop(),
            sentences,
            self.espeak_voice(voice, language),
            speed,
            sample_rate,
        )
        utterance.start()
        try:
            while True:
                item = await utterance.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # aclose(), cancellation or an error: the callback aborts espeak at its next call,
            # so the lock is free again within one ~60 ms buffer of synthesis (well under 1 ms).
            utterance.cancel()
