"""What making a turn's first sentence in two steps buys and costs the hibari engine.

Run from the repository root (a quiet machine for the times; the ratios hold under load)::

    python benchmarks/first_sentence_steps.py [--repeats 7]

For each sentence (the agent sentences of ``prosody_cuts.py`` and a longer one), rendered by
the hibari engine in-process, one inference thread, seed fixed, both ways the server makes it:

* ``whole``: the sentence at once (what a later sentence gets, audio already queued);
* ``steps``: as a turn's first sentence (nothing queued): its first ~0.9 s, then the rest.

Columns: audio seconds; first audio (wall time to the first chunk, median of the repeats) both
ways; CPU time (this process, whole call) both ways; ``seam``: the largest level difference
between the two renderings in the 20 ms windows around the seam (dB; 0 would be bit-identical:
the int8 model quantizes each run by its tensors' range, so two runs differ a little
everywhere); ``elsewhere``: the same over the speech away from the seam (in the first step:
after the seam the rest is the sentence decoded at once), the yardstick; ``same``: equal
length and equal word times.  Every loop is bounded by ``--repeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common

common.ensure_package()

from prosody_cuts import SENTENCES

LONG = (
    "When the quick brown fox finally jumped, the lazy dog who was sleeping by the warm "
    "fire in the old farmhouse did not even notice it at all."
)
RATE = 24000


async def _call(engine: Any, text: str, lead: float) -> tuple[float, float, list[Any]]:
    """(seconds to the first chunk, CPU seconds of the whole call, the chunks)."""
    from lmnt_local.server.engines import PLAYBACK_LEAD

    token = PLAYBACK_LEAD.set(lead)
    try:
        cpu = time.process_time()
        began = time.perf_counter()
        first = 0.0
        chunks = []
        async for chunk in engine.synthesize(
            text, voice="ava", language="auto", sample_rate=RATE, seed=1
        ):
            if not chunks:
                first = time.perf_counter() - began
            chunks.append(chunk)
        return first, time.process_time() - cpu, chunks
    finally:
        PLAYBACK_LEAD.reset(token)


def _envelope(pcm: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    frames = pcm[: pcm.size // 480 * 480].astype(np.float64).reshape(-1, 480)
    return np.asarray(10 * np.log10((frames**2).mean(axis=1) + 1.0))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    common.quiet_logs()
    from lmnt_local.server.engines.hibari import HibariEngine

    engine = HibariEngine(workers=1)
    engine.load()
    await _call(engine, LONG, 0.0)  # warm up
    rows = []
    ratios = []
    for text in [*SENTENCES, LONG]:
        steps_first, whole_first, steps_cpu, whole_cpu = [], [], [], []
        for _ in range(max(1, args.repeats)):
            a, cpu_a, two = await _call(engine, text, 0.0)
            b, cpu_b, one = await _call(engine, text, 5.0)
            steps_first.append(a)
            whole_first.append(b)
            steps_cpu.append(cpu_a)
            whole_cpu.append(cpu_b)
        joined = np.concatenate([np.frombuffer(c.pcm, np.int16) for c in two])
        at_once = np.concatenate([np.frombuffer(c.pcm, np.int16) for c in one])
        seam_db = elsewhere_db = "-"
        if len(two) > 1:
            seam = len(two[0].pcm) // 2 // 480
            theirs = _envelope(at_once)
            diff = np.abs(_envelope(joined) - theirs)
            seam_db = f"{diff[max(0, seam - 3) : seam + 6].max():.2f}"
            away = np.ones(diff.size, bool)
            away[max(0, seam - 10) : seam + 10] = False
            away &= theirs > np.median(theirs) - 10.0  # speech, not the pauses
            elsewhere_db = f"{diff[away].max():.2f}" if away.any() else "-"
            ratios.append(statistics.median(steps_first) / statistics.median(whole_first))
        same = joined.size == at_once.size and [
            (w.text, round(w.start, 6)) for c in two for w in c.words
        ] == [(w.text, round(w.start, 6)) for c in one for w in c.words]
        rows.append(
            (
                text[:38] + "…",
                f"{at_once.size / RATE:.2f}",
                len(two),
                common.ms(statistics.median(steps_first)),
                common.ms(statistics.median(whole_first)),
                common.ms(statistics.median(steps_cpu)),
                common.ms(statistics.median(whole_cpu)),
                seam_db,
                elsewhere_db,
                "yes" if same else "NO",
            )
        )
    print(f"CPU: {common.cpu_count_note()}")
    print(f"hibari, one inference thread, {RATE} Hz, seed 1, median of {args.repeats}")
    headers = (
        "sentence", "audio s", "chunks", "first: steps", "first: whole",
        "CPU: steps", "CPU: whole", "seam dB", "elsewhere dB", "same",
    )  # fmt: skip
    print(common.table(headers, rows))
    if ratios:
        print(
            f"first audio, steps / whole: median {statistics.median(ratios):.2f} "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}) over {len(ratios)} two-step sentences"
        )


if __name__ == "__main__":
    asyncio.run(main())
