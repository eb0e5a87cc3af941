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
