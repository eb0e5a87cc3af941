"""How close the engines' word timestamps are to the audio: each word's start against
pocketsphinx's forced alignment of the same audio, and the first word against the energy onset.

Run from the repository root (needs the ``[test]`` extra for pocketsphinx)::

    python benchmarks/word_timing.py [--engines hibari,neural]

Harvard list 1 (ten sentences, 80 words), 16 kHz, seed 1.  The aligner has its own bias
(pocketsphinx marks a word's start some tens of ms early), so compare engines side by side
rather than reading one figure alone; the energy onset of each sentence's first word is the
bias-free check.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import cpu_count_note, ensure_package

ensure_package()

import numpy as np

from lmnt_local.server.engines import make_engine

from asr_helpers import RATE, SENTENCES, align


async def _measure(name: str) -> None:
    engine = make_engine(name)
    getattr(engine, "load", lambda: None)()
    starts: list[float] = []
    onsets: list[float] = []
    for text in SENTENCES[1:]:
        chunks = [
            c
            async for c in engine.synthesize(
                text, voice="ava", language="en", sample_rate=RATE, seed=1
            )
        ]
        pcm = b"".join(c.pcm for c in chunks)
        words = [w for c in chunks for w in c.words]
        samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
        loud = np.flatnonzero(samples > 0.02 * 32768)
        if loud.size and words:
            onsets.append(words[0].start - loud[0] / RATE)
        aligned = align(pcm, text)
        if len(aligned) != len(words):
            print(f"{name}: alignment failed for {text!r}", file=sys.stderr)
            continue
        starts += [w.start - a for w, (_, a, _) in zip(words, aligned, strict=True)]
    absolute = sorted(abs(x) for x in starts)
    p90 = absolute[min(len(absolute) - 1, round(0.9 * (len(absolute) - 1)))]
    print(
        f"{name:<8}{len(starts):>6}{statistics.mean(starts) * 1e3:>10.0f}"
        f"{statistics.median(absolute) * 1e3:>10.0f}{statistics.mean(absolute) * 1e3:>10.0f}"
        f"{p90 * 1e3:>10.0f}{statistics.mean(onsets) * 1e3:>12.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--engines", default="hibari,neural")
    args = parser.parse_args()
    print(cpu_count_note())
    print(
        f"{'engine':<8}{'words':>6}{'bias':>10}{'median':>10}{'mean':>10}{'p90':>10}"
        f"{'1st-onset':>12}\n{'':<14}{'ms':>10}{'|ms|':>10}{'|ms|':>10}{'|ms|':>10}{'ms':>12}"
    )
    for name in [n.strip() for n in args.engines.split(",") if n.strip()]:
        await _measure(name)


if __name__ == "__main__":
    asyncio.run(main())
