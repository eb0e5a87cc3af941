""":class:`PiperEngine`: LMNT's voice names and languages routed to installed Piper voices.

Apart from the voice files and the model because this is the request-facing part: which voice a
request speaks with, which models are checked and kept loaded, and the stream of pieces.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from lmnt_local.server.engines.base import (
    LMNT_VOICES,
    EngineChunk,
    LanguageError,
    VoiceInfo,
    check_speed,
)
from lmnt_local.server.engines.piper.model import _Loaded
from lmnt_local.server.engines.piper.voices import PiperVoiceFile, _skip, find_voices
from lmnt_local.server.engines.pool import (
    Rendered,
    default_threads,
    shared_pool,
    speak_pieces,
    text_pieces,
)

__all__ = ["PiperEngine"]

_MIN_RATE, _MAX_RATE = 8000, 48000


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
