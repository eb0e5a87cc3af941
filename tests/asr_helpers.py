"""Intelligibility by an independent recogniser: pocketsphinx 5 with the en-us model its wheel
ships, so no download.  A rough proxy for a listener, but an unbiased one: it knows nothing of
our engines, and it cannot be satisfied by a tone, noise or scrambled speech."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

RATE = 16000  # what the bundled acoustic model was trained on

#: The sentence the issue measured plus Harvard list 1 (IEEE 1969): phonetically balanced.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog at five thirty.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
)


@lru_cache(maxsize=1)
def _decoder() -> Any:
    from pocketsphinx import Decoder

    return Decoder(samprate=RATE, loglevel="FATAL")


def transcribe(pcm16k: bytes) -> str:
    """What the recogniser hears in 16 kHz mono s16le audio."""
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm16k, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp is not None else ""


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words): Levenshtein over words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def wer(references: Sequence[str], audios: Sequence[bytes]) -> float:
    """Word error rate over a set: total errors / total reference words."""
    errors = total = 0
    for reference, audio in zip(references, audios, strict=True):
        e, n = word_errors(reference, transcribe(audio))
        errors += e
        total += n
    return errors / total


def align(pcm16k: bytes, text: str) -> list[tuple[str, float, float]]:
    """(word, start, end) in seconds of each word of ``text`` in the audio, by pocketsphinx's
    forced alignment (``[]`` when it cannot align).  The audio is padded with 0.5 s of silence
    each side, which alignment needs; times are of the unpadded audio."""
    from pocketsphinx import Decoder

    pad = b"\0\0" * (RATE // 2)
    decoder = Decoder(
        samprate=RATE,
        lm=None,
        bestpath=False,
        beam=1e-120,
        wbeam=1e-100,
        pbeam=1e-120,
        loglevel="FATAL",
    )
    decoder.set_align_text(" ".join(words(text)))
    decoder.start_utt()
    decoder.process_raw(pad + pcm16k + pad, full_utt=True)
    decoder.end_utt()
    frames_per_second = 100
    return [
        (
            seg.word,
            seg.start_frame / frames_per_second - 0.5,
            seg.end_frame / frames_per_second - 0.5,
        )
        for seg in decoder.seg()
        if not seg.word.startswith(("<", "["))
    ]
