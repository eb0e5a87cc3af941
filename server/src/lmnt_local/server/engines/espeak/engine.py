""":class:`EspeakEngine`: LMNT's voices and languages mapped onto espeak-ng's voices.

Apart from the library and the utterance because this is the request-facing part: which espeak
voice a request speaks with, whether a language is spoken at all, and the stream of chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from lmnt_local.server.engines.base import LMNT_VOICES, EngineChunk, VoiceInfo, check_speed
from lmnt_local.server.engines.espeak.library import (
    _DEFAULT_LANGUAGE_VOICE,
    _locate_library,
    _runtime,
)
from lmnt_local.server.engines.espeak.utterance import _Utterance
from lmnt_local.server.text.segment import CONTROL_CHARS, split_sentences

__all__ = ["LANGUAGE_VOICES", "VOICE_VARIANTS", "EspeakEngine"]

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

_MIN_RATE, _MAX_RATE = 8000, 48000


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
