"""The hibari engine: a small Apache-2.0 neural voice (``hibari-tts``) with its own G2P.

hibari needs only numpy and onnxruntime (no espeak-ng, so no GPL), bundles the American
female voice ``heart`` at 24 kHz and renders about ten times cheaper than Piper.  Its other
voices are whole models of the same shape that hibari itself downloads on first use; a server
never downloads inside a request, so they are read from disk only.

Voice files on disk (the layout of hibari's own download cache, ``$HIBARI_HOME``): a directory
holding the model files under the names of hibari's registry (``hibari/assets/voices.json``,
the ``file`` of each voice), side by side::

    DIR/af_kore.int8.onnx        kore    American female
    DIR/bf_emma.int8.onnx        emma    British female
    DIR/am_fenrir_v2.int8.onnx   fenrir  American male
    DIR/bm_fable.int8.onnx       fable   British male

Every ``voice_dirs`` entry (the directories Piper voices come from too) is searched that way,
then hibari's own cache directory, so a voice fetched with ``hibari --voice NAME`` or with
``HIBARI_HOME=DIR`` is found as well.  A file is used only if its size and sha256 match the
registry: a truncated or foreign file is skipped with a warning naming it.

Like the Piper engine (:mod:`lmnt_local.server.engines.piper`), a text is rendered sentence by
sentence in the shared earliest-deadline-first pool (:mod:`lmnt_local.server.engines.pool`);
unlike it, no sentence's text is ever cut: a turn's long first sentence is made in two steps
at the audio level instead (:mod:`lmnt_local.server.engines.hibari_audio`).  The model is
cut at its phoneme durations (:mod:`lmnt_local.server.engines.durations`): the engine
chooses the duration of every phoneme, which makes ``speed`` exact over LMNT's whole
0.25-2.0 (hibari itself offers 0.5-2.0 and rounds each phoneme to whole 25 ms steps of at
least one, so its 2.0 is not twice as fast), and gives every word of the caller's text its
time (``word_times`` of :mod:`lmnt_local.server.text.segment`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
import soxr

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    PLAYBACK_LEAD,
    EngineChunk,
    LanguageError,
    VoiceInfo,
    WordTiming,
    check_speed,
)
from lmnt_local.server.engines.durations import SplitSession, allocate, split_model
from lmnt_local.server.engines.hibari_audio import plan_seam, synth, two_steps
from lmnt_local.server.engines.pool import (
    Rendered,
    default_threads,
    shared_pool,
    speak_pieces,
    text_pieces,
)
from lmnt_local.server.text.segment import phoneme_owners, word_spans, word_times

__all__ = ["HibariEngine", "HibariVoiceFile", "find_voices"]

log = logging.getLogger("lmnt_local.server")

_MIN_RATE, _MAX_RATE = 8000, 48000
#: The graph's tensors either side of the rounding of the durations (hibari 0.2.x): the raw
#: durations at speed 1 (``exp(log d) - 1``) and the whole 25 ms steps the decoder expands.
_RAW, _DURATIONS = "/Sub_output_0", "/Cast_32_output_0"
#: Samples of the model's 24 kHz output per duration step (two 12.5 ms frames).
_STEP = 600
#: Samples a phoneme's sound starts before its first frame: the vocoder's inverse STFT is
#: centred (n_fft 1200), so a frame sounds from half a window before it.  Measured: without it,
#: word starts came 22 ms after the energy onset and 27 ms later than Piper's against
#: pocketsphinx's alignment.
_LEAD = 600
#: hibari cuts a sentence's phonemes at clause punctuation beyond this (the model's context).
_MAX_PHONEMES = 400
_CLAUSE = re.compile(r"(?<=[,;:\u2014])\s+")


@dataclass(frozen=True, slots=True)
class HibariVoiceFile:
    """A hibari voice model on disk and what hibari's registry says about it."""

    id: str
    model: Path
    gender: str
    accent: str  # "American" / "British"
    locale: str  # e.g. "en-US"
    british: bool

    def info(self) -> VoiceInfo:
        return VoiceInfo(
            self.id,
            self.id.capitalize(),
            self.gender,
            f"hibari voice, {self.accent} English, {self.gender}",
            tags=("hibari", self.locale),
            language="en",
        )


def _registry() -> dict[str, dict[str, Any]]:
    from hibari.voices import VOICES

    return dict(VOICES)


def _cache_dir() -> Path | None:
    from hibari.voices import cache_dir

    try:
        return Path(cache_dir())
    except (OSError, RuntimeError):  # no home directory
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_voices(voice_dirs: Sequence[Path] = ()) -> list[HibariVoiceFile]:
    """The bundled voice, then registry voices found (checked) in ``voice_dirs`` and in
    hibari's cache directory.  Nothing is downloaded."""
    from hibari.voices import voice_path

    found: dict[str, HibariVoiceFile] = {}
    directories = [Path(d) for d in voice_dirs]
    for directory in directories:
        if not directory.is_dir():
            raise ValueError(f"voice directory {str(directory)!r} does not exist")
    cache = _cache_dir()
    if cache is not None and cache.is_dir():
        directories.append(cache)
    for name, entry in _registry().items():
        locale = str(entry.get("language", "en-US"))
        if entry.get("bundled"):
            path = Path(voice_path(name, download_missing=False))
        else:
            present = [d / entry["file"] for d in directories if (d / entry["file"]).is_file()]
            if not present:
                continue
            path = present[0]
            problem = _check(path, entry)
            if problem:
                log.warning("hibari voice %s skipped: %s (%s)", name, problem, path)
                continue
        found[name] = HibariVoiceFile(
            name,
            path,
            str(entry.get("gender", "unknown")),
            str(entry.get("accent", "American")),
            locale,
            bool(entry.get("british")),
        )
    return list(found.values())


def _check(path: Path, entry: dict[str, Any]) -> str | None:
    size = path.stat().st_size
    if size != int(entry.get("bytes", size)):
        return f"{size} bytes, the registry says {entry['bytes']}"
    if "sha256" in entry and _sha256(path) != entry["sha256"]:
        return "sha256 does not match hibari's registry"
    return None


class _Loaded:
    """A voice in memory: the model cut at its durations, shared by every pool thread."""

    def __init__(self, file: HibariVoiceFile, g2p: Any, vocab: dict[str, int]) -> None:
        import onnx

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # concurrency comes from the pool, one run per core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.model = SplitSession(
            split_model(onnx.load(str(file.model)), raw=_RAW, durations=_DURATIONS), options
        )
        self.g2p = g2p
        self.vocab = vocab
        # A word said alone always has the same phonemes, and replies repeat their words: the
        # word timing's per-word G2P was ~2 ms of a 14-word sentence's ~18 ms first step.
        self.word_phonemes = functools.lru_cache(maxsize=8192)(self._word_phonemes)

    def _word_phonemes(self, word: str) -> tuple[str, ...]:
        return tuple(p for p in str(self.g2p(word)) if p in self.vocab)

    def render(
        self, text: str, speed: float, seed: int | None, index: int, rate: int, first: bool
    ) -> Rendered:
        """One piece: phonemes in context, one model run per chunk, words from durations.

        ``first``: the turn's first piece, whose latency the listener hears; a long one is
        made in two steps (:mod:`~lmnt_local.server.engines.hibari_audio`), its first second
        returned now and the rest as :attr:`Rendered.rest`."""
        spans = word_spans(text)
        phonemes = self._phonemes(text)
        words_alone = [self.word_phonemes(text[a:b]) for a, b in spans]
        entropy = np.random.SeedSequence().entropy if seed is None else seed
        noise: list[int] = [int(entropy), index]  # type: ignore[arg-type]
        spoken: list[str] = []
        bounds: list[tuple[float, float]] = []
        audio: list[npt.NDArray[np.float32]] = []
        rest: Callable[[], npt.NDArray[np.float32]] | None = None
        total = 0  # samples at 24 kHz
        for chunk_index, chunk in enumerate(phonemes):
            ids = [0, *(self.vocab[p] for p in chunk), 0]

            def durations(raw: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
                natural = np.maximum(1, np.round(raw)).astype(np.int64)
                return allocate(raw, natural, speed)

            encoded, steps = self.model.encode({"ids": np.asarray([ids], np.int64)}, durations)
            seam = plan_seam(steps) if first and len(phonemes) == 1 else None
            if seam is None:
                outputs = self.model.decode(encoded, steps)
                rng = np.random.default_rng([*noise, chunk_index])
                audio.append(np.asarray(synth([o[0] for o in outputs], rng), dtype=np.float32))
            else:
                head, rest = two_steps(self.model, encoded, steps, seam, [*noise, chunk_index])
                audio.append(head)
            edges = total + np.concatenate(([0], np.cumsum(steps))) * _STEP
            for k, phoneme in enumerate(chunk, start=1):  # id 0 at each end is padding
                spoken.append(phoneme)
                begin, finish = (max(0, int(edges[j]) - _LEAD) / 24000 for j in (k, k + 1))
                bounds.append((begin, finish))
            total = int(edges[-1])
        owners = phoneme_owners(spoken, words_alone)
        times = word_times(spans, spoken, owners, bounds, total / 24000)
        words = [WordTiming(text[a:b], s, d) for (a, b), (s, d) in zip(spans, times, strict=True)]
        native = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
        if rest is None:
            if rate != 24000 and native.size:
                native = np.asarray(soxr.resample(native, 24000, rate, quality="HQ"))
            return Rendered(_pcm(native), words)
        return _in_two(native, rest, words, rate)

    def _phonemes(self, text: str) -> list[list[str]]:
        """The model's phonemes for ``text`` (those its vocabulary has), in chunks it can take."""
        string = str(self.g2p(text))
        chunks: list[str] = []
        current = ""
        for part in _CLAUSE.split(string) if len(string) > _MAX_PHONEMES else [string]:
            while len(part) > _MAX_PHONEMES:  # no clause mark: cut at a space
                cut = part.rfind(" ", 0, _MAX_PHONEMES)
                cut = cut if cut > 0 else _MAX_PHONEMES
                if current:
                    chunks.append(current)
                    current = ""
                chunks.append(part[:cut])
                part = part[cut:].lstrip()
            if current and len(current) + len(part) + 1 > _MAX_PHONEMES:
                chunks.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
        if current:
            chunks.append(current)
        kept = [[p for p in c if p in self.vocab] for c in chunks]
        return [c for c in kept if any(not p.isspace() for p in c)]


class HibariEngine:
    """Natural speech from hibari voices; every LMNT voice name speaks with ``heart`` for now.

    ``voice_dirs``: directories holding extra hibari voice files (see the module docstring).
    ``workers``: inference threads (default: ``$LMNT_INFERENCE_THREADS``, else one per core,
    at most 8), shared with any other neural engine of the process.
    """

    name = "hibari"

    def __init__(self, *, voice_dirs: Sequence[Path] = (), workers: int | None = None) -> None:
        self._files = {v.id: v for v in find_voices(voice_dirs)}
        self._default = "heart"
        if self._default not in self._files:
            raise RuntimeError("hibari's bundled voice 'heart' is missing from its package")
        self._workers = workers or default_threads()
        if self._workers < 1:
            raise ValueError("workers must be >= 1")
        self._loaded: dict[str, _Loaded] = {}
        self._g2p: dict[bool, Any] = {}
        self._load_lock = threading.Lock()

    # -- voices ----------------------------------------------------------------------------

    def voices(self) -> list[VoiceInfo]:
        target = self._files[self._default]
        aliases = [
            VoiceInfo(
                lmnt.id,
                lmnt.name,
                target.gender,
                f"LMNT's {lmnt.name}, spoken here by hibari voice {target.id}"
                + (
                    ""
                    if lmnt.gender == target.gender
                    else f" ({target.gender}: no {lmnt.gender} voice)"
                ),
                tags=("alias", target.id),
                language="en",
            )
            for lmnt in LMNT_VOICES
        ]
        return aliases + [v.info() for v in self._files.values()]

    def has_voice(self, voice: str) -> bool:
        return voice in self._files or voice.lower() in {v.id for v in LMNT_VOICES}

    def resolve(self, voice: str, language: str) -> str:
        """The hibari voice a request speaks with, or :class:`LanguageError`."""
        if language not in ("auto", "en"):
            raise LanguageError(f"language: hibari voices speak English ('en'), not {language!r}")
        return voice if voice in self._files else self._default

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the default voice and its G2P and start the inference threads (blocking)."""
        self._voice(self._default)
        shared_pool(self._workers)

    def _voice(self, voice_id: str) -> _Loaded:
        loaded = self._loaded.get(voice_id)
        if loaded is None:
            with self._load_lock:
                loaded = self._loaded.get(voice_id)
                if loaded is None:
                    file = self._files[voice_id]
                    loaded = _Loaded(file, self._g2p_for(file.british), _vocab())
                    loaded.g2p("Warm up.")  # the OOV net and tagger load on first use
                    self._loaded[voice_id] = loaded
        return loaded

    def _g2p_for(self, british: bool) -> Any:
        g2p = self._g2p.get(british)
        if g2p is None:
            from hibari.g2p import G2P

            g2p = self._g2p[british] = G2P(british=british)
        return g2p

    # -- speaking --------------------------------------------------------------------------

    @staticmethod
    def phoneme_markup(ipa: str) -> str:
        """IPA said as written, through hibari's inline pronunciation ("[word](/phonemes/)",
        misaki's notation); one per word, so each word keeps its own timing."""
        from lmnt_local.server.text.lexicon import ipa_to_misaki

        return " ".join(f"[w](/{ipa_to_misaki(word)}/)" for word in ipa.split())

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
        """``speed`` divides every phoneme's duration (exactly, to 25 ms per piece); a
        ``seed`` fixes the voice's noise, so the same text and seed give the same samples."""
        if not _MIN_RATE <= sample_rate <= _MAX_RATE:
            raise ValueError(f"sample_rate must be {_MIN_RATE}-{_MAX_RATE} Hz, got {sample_rate}")
        check_speed(speed)
        target = self.resolve(voice, language)
        # No text cut after the first phrase: a long first sentence is made in two steps
        # with its whole prosody instead (hibari_audio), when nothing is queued before it.
        pieces = text_pieces(text, first_clause=False)
        first = PLAYBACK_LEAD.get() <= 0.0

        def render(index: int, piece: str) -> Rendered:
            voice = self._voice(target)
            return voice.render(piece, speed, seed, index, sample_rate, first and index == 0)

        async for chunk in speak_pieces(pieces, render, shared_pool(self._workers), sample_rate):
            yield chunk


def _vocab() -> dict[str, int]:
    import json

    from hibari.tts import ASSETS

    with open(Path(ASSETS) / "vocab.json", encoding="utf-8") as file:
        vocab: dict[str, int] = json.load(file)
    return vocab


def _pcm(native: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    pcm: npt.NDArray[np.int16] = np.clip(native * 32767.0, -32767, 32767).astype(np.int16)
    return pcm


def _in_two(
    head: npt.NDArray[np.float32],
    rest: Callable[[], npt.NDArray[np.float32]],
    words: list[WordTiming],
    rate: int,
) -> Rendered:
    """The first step's audio with the words that start in it, and the rest to come: one
    resampler carries the signal across the seam (resampling the halves apart would click)."""
    stream = (
        soxr.ResampleStream(24000, rate, 1, dtype="float32", quality="HQ")
        if rate != 24000
        else None
    )
    first = _pcm(head if stream is None else stream.resample_chunk(head))
    split = first.size / rate
    later = [WordTiming(w.text, w.start - split, w.duration) for w in words if w.start >= split]

    def second() -> Rendered:
        tail = rest()
        return Rendered(
            _pcm(tail if stream is None else stream.resample_chunk(tail, last=True)), later
        )

    return Rendered(first, [w for w in words if w.start < split], rest=second)
