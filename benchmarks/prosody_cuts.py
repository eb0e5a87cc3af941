"""What cutting a sentence for latency costs the neural engine's prosody (issue 22 item 3).

Run from the repository root::

    python benchmarks/prosody_cuts.py

For typical agent sentences, each rendered three ways with the Piper voice (seed fixed, so
the model's noise is off): ``whole`` (one piece, the reference); ``old`` (the former rule: every
sentence over 11 words cut after its first clause or after word 8 whatever it is, each piece
peak-normalised alone); ``new`` (the current rule: only at a phrase boundary, the pieces sharing
the first piece's gain).  At each cut it reports:

* ``pause``: the silence between the last word of the first piece and the first word of the
  second, minus the pause at the same word boundary in the whole rendering (ms);
* ``level``: the change in speech level across the cut (median dB of voiced 20 ms frames in the
  400 ms either side) minus the same change in the whole rendering (dB);
* ``length``: the cut rendering's duration over the whole one.

A sentence the rule leaves whole has no cut and costs nothing (``-``).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common

common.ensure_package()

SENTENCES = [
    "We are open from nine in the morning until six in the evening every weekday.",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Thanks for waiting, your order is on its way and will arrive very soon today.",
    "I checked the account and the payment went through early this morning for you.",
    "If you need anything else, just let me know and I will be happy to help you.",
    "Your appointment with the doctor is confirmed for Tuesday at three in the afternoon.",
    "Please bring the forms with you because of the new rules at the front desk.",
    "The package was delivered to the front door of your building at noon yesterday.",
]
RATE = 22050  # the voice's own rate: no resampling in the measurement
_JOINERS = frozenset("and but or so because which that while although when where who".split())
_CLAUSE = re.compile(r"(?:[,;:]|\s[\u2013\u2014-])\s+|[\u2013\u2014]\s*")


def old_split(sentence: str, min_words: int = 3, max_words: int = 8) -> list[str]:
    """The former rule, kept here to measure against."""
    spans = [m.span() for m in re.finditer(r"\S+", sentence)]
    if len(spans) <= max_words + min_words:
        return [sentence]
    for match in _CLAUSE.finditer(sentence):
        before = sum(1 for s, _ in spans if s < match.start())
        if before > max_words:
            break
        if before >= min_words:
            return [sentence[: match.end()], sentence[match.end() :]]
    for i in range(max_words, min_words - 1, -1):
        start, end = spans[i]
        if sentence[start:end].lower().strip(",.;:") in _JOINERS:
            return [sentence[:start], sentence[start:]]
    cut = spans[max_words][0]
    return [sentence[:cut], sentence[cut:]]


def _level(pcm: np.ndarray[Any, Any]) -> float:
    x = pcm.astype(np.float64) / 32768
    frames = x[: x.size // 441 * 441].reshape(-1, 441)
    db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    voiced = db[db > -45]
    return float(np.median(voiced)) if voiced.size else -99.0


def _measure(voice: Any, sentence: str, pieces: list[str], shared: bool) -> tuple[float, ...]:
    """(pause difference ms, level-change difference dB, length ratio) at the one cut."""
    whole = voice.render(sentence, 1.0, 1, RATE)
    first = voice.render(pieces[0], 1.0, 1, RATE)
    second = voice.render(pieces[1], 1.0, 1, RATE, gain=first.gain if shared else None)
    k = len(first.words)
    w = whole.words
    boundary = int(w[k].start * RATE)
    pause_whole = w[k].start - (w[k - 1].start + w[k - 1].duration)
    last = first.words[-1]
    pause_cut = (first.pcm.size / RATE - (last.start + last.duration)) + second.words[0].start
    win = int(0.4 * RATE)
    change_whole = _level(whole.pcm[boundary : boundary + win]) - _level(
        whole.pcm[max(0, boundary - win) : boundary]
    )
    change_cut = _level(second.pcm[:win]) - _level(first.pcm[-win:])
    length = (first.pcm.size + second.pcm.size) / whole.pcm.size
    return (pause_cut - pause_whole) * 1e3, change_cut - change_whole, length


def main() -> None:
    from lmnt_local.server.engines import PiperEngine
    from lmnt_local.server.text.segment import first_clause_split

    engine = PiperEngine()
    engine.load()
    voice = engine._voice(engine.resolve("ava", "en"))
    rows = []
    sums: dict[str, list[tuple[float, ...]]] = {"old": [], "new": []}
    for sentence in SENTENCES:
        row: list[object] = [sentence[:44] + "..."]
        for name, pieces, shared in (
            ("old", old_split(sentence), False),
            ("new", first_clause_split(sentence), True),
        ):
            if len(pieces) < 2:
                row += [f"{name}: whole", "-", "-", "-"]
                continue
            pause, level, length = _measure(voice, sentence, pieces, shared)
            sums[name].append((abs(pause), abs(level), length))
            cut_after = pieces[0].split()[-1]
            row += [
                f"{name}: after {cut_after!r}",
                f"{pause:+.0f}",
                f"{level:+.1f}",
                f"{length:.3f}",
            ]
        rows.append(row)
    print(f"CPU: {platform.processor() or platform.machine()}; {common.cpu_count_note()}")
    headers = ["sentence", "old cut", "pause ms", "level dB", "length",
               "new cut", "pause ms", "level dB", "length"]  # fmt: skip
    print(common.table(headers, rows))
    for name, got in sums.items():
        if got:
            pauses, levels, lengths = zip(*got, strict=True)
            print(f"{name}: {len(got)}/{len(SENTENCES)} sentences cut; mean |pause| "
                  f"{np.mean(pauses):.0f} ms, mean |level| {np.mean(levels):.1f} dB, "
                  f"mean length x{np.mean(lengths):.3f}")  # fmt: skip
        else:
            print(f"{name}: 0/{len(SENTENCES)} sentences cut")
    print("new: and only the first sentence of a turn, when nothing is left to play (lead 0)")


if __name__ == "__main__":
    main()
