"""Which of two readings a WAV says: pocketsphinx forced alignment, one reading at a time.

Free recognition is too noisy to tell "five dollars and fifty cents" from "dollar five point
five zero" on synthetic speech, but aligning the audio to each word sequence and comparing the
mean acoustic probability of the aligned words separates them reliably with a natural voice
(``docs``: /work/shared/reference/voices.md).  espeak-ng's voice often fails to align: judge
readings with the neural voice.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from asr_helpers import RATE

_PAD = bytes(2 * RATE // 2)  # 0.5 s of silence either side: the aligner needs room for <sil>
_FILLERS = frozenset({"<s>", "</s>", "<sil>", "(NULL)", "[NOISE]"})


@lru_cache(maxsize=1)
def _aligner() -> Any:
    from pocketsphinx import Decoder

    return Decoder(
        samprate=RATE,
        lm=None,
        bestpath=False,
        beam=1e-120,
        wbeam=1e-100,
        pbeam=1e-120,
        loglevel="FATAL",
    )


def reading_words(reading: str) -> str:
    """A reading as the aligner's dictionary words (lower case, no punctuation)."""
    return " ".join(re.findall(r"[a-z']+", reading.lower()))


def alignment_score(pcm16k: bytes, reading: str) -> float:
    """Mean acoustic probability (0-1) of ``reading``'s words aligned to 16 kHz s16le audio;
    0 when the audio cannot be aligned to it at all."""
    decoder = _aligner()
    try:
        decoder.set_align_text(reading_words(reading))
    except RuntimeError:  # a word outside the recogniser's dictionary
        raise ValueError(f"reading {reading!r} has a word the aligner does not know") from None
    decoder.start_utt()
    decoder.process_raw(_PAD + pcm16k + _PAD, full_utt=True)
    decoder.end_utt()
    segments = [s for s in (decoder.seg() or []) if s.word not in _FILLERS]
    if not segments:
        return 0.0
    return sum(float(s.ascore) for s in segments) / len(segments)


def says(pcm16k: bytes, meant: str, literal: str) -> bool:
    """Whether the audio is ``meant`` rather than ``literal`` (forced choice)."""
    return alignment_score(pcm16k, meant) > alignment_score(pcm16k, literal)
