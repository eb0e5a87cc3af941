"""How fast the local speech engines are: real-time factor, time to first chunk, concurrency.

Run from the repository root::

    python benchmarks/engine_speed.py [--rate 24000] [--engines hibari,neural,espeak,tone]

Every loop is bounded (5 paragraph runs, 20 first-chunk runs, 3 rounds per concurrency level), so
the whole script takes a few seconds for espeak and about a minute for each neural engine
(hibari, Piper: they share one inference pool, as in the server). The
ToneEngine is there as a floor: it does no linguistic work, so the gap to it is what speaking
costs.  The 1-minute load average is printed with each engine's rows: on a shared machine the
numbers are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

# _common sits beside this script; the script may also be loaded by path (tests/test_soak.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_count_note, ensure_package, load_note

ensure_package()

from lmnt_local.server.engines import SpeechEngine

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."
#: The issue's latency goal is stated for a 20-word first sentence.
LONG_SENTENCE = (
    "When the quick brown fox jumped over the lazy dog, the farmer laughed and "
    "went back to his quiet house."
)
PARAGRAPH = " ".join(
    [
        "Local speech synthesis lets a voice agent run its whole pipeline on one machine.",
        "Nothing leaves the network, and tests do not depend on a paid service being up.",
        "The engine splits long text into sentences and speaks them one after another.",
        "While the second sentence is being made, the first is already on its way out.",
        "Each chunk carries the words that start inside it, with their times in seconds.",
        "A caption track can follow the speech without guessing where the words fall.",
        "Concurrent sessions take turns sentence by sentence on a single worker thread.",
        "That keeps a library which is not re-entrant from crashing the whole process.",
        "The audio is resampled to the rate each session asked for as it streams.",
        "Eight, sixteen and twenty-four kilohertz are the rates the protocol allows.",
        "Robotic as it sounds, the voice is intelligible and its timing is real.",
        "That is enough to exercise barge-in, flushing, captions and pacing end to end.",
        "A neural engine could sit behind the same interface when quality matters more.",
        "Until then this one costs almost nothing and answers in well under a millisecond.",
        "The numbers below say how much headroom a single core of this machine has left.",
        "They are medians of several runs, so one slow outlier does not decide the result.",
    ]
)

#: For engines far slower than espeak: the first four sentences (~15 s of speech).
SHORT_PARAGRAPH = ". ".join(PARAGRAPH.split(". ")[:4]) + "."


def _engines(names: list[str]) -> list[SpeechEngine]:
    from lmnt_local.server.engines import EngineUnavailable, make_engine

    engines: list[SpeechEngine] = []
    for name in names:
        try:
            engine = make_engine(name)
        except EngineUnavailable as exc:
            print(f"{name}: {exc}, skipped", file=sys.stderr)
            continue
        load = getattr(engine, "load", None)
        if callable(load):
            load()  # what the server does in start(): not part of any timing below
        engines.append(engine)
    return engines


async def _speak(engine: SpeechEngine, text: str, rate: int) -> tuple[float, float]:
    """(seconds until the first chunk, seconds of audio) for one synthesis."""
    start = time.perf_counter()
    first = -1.0
    samples = 0
    async for chunk in engine.synthesize(text, voice="ava", language="en", sample_rate=rate):
        if first < 0:
            first = time.perf_counter() - start
        samples += len(chunk.pcm) // 2
    return first, samples / rate


async def _real_time_factor(engine: SpeechEngine, rate: int, runs: int = 5) -> tuple[float, float]:
    """Median audio seconds per wall second and per CPU second (all threads) for PARAGRAPH."""
    wall_rtf, cpu_rtf = [], []
    for _ in range(runs):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        _, audio = await _speak(engine, PARAGRAPH, rate)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        wall_rtf.append(audio / wall)
        cpu_rtf.append(audio / max(cpu, 1e-9))
    return statistics.median(wall_rtf), statistics.median(cpu_rtf)


async def _first_chunk(
    engine: SpeechEngine, rate: int, text: str = SENTENCE, runs: int = 20
) -> tuple[float, float]:
    """Median and p95 seconds from calling synthesize() to the first chunk of ``text``."""
    times = sorted([(await _speak(engine, text, rate))[0] for _ in range(runs)])
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95


async def _concurrent(
    engine: SpeechEngine, rate: int, tasks: int, rounds: int = 3, text: str = PARAGRAPH
) -> tuple[float, float]:
    """Median (audio seconds per wall second over all tasks, worst first-chunk seconds)."""
    throughput, worst_first = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        results = await asyncio.gather(*(_speak(engine, text, rate) for _ in range(tasks)))
        wall = time.perf_counter() - start
        throughput.append(sum(audio for _, audio in results) / wall)
        worst_first.append(max(first for first, _ in results))
    return statistics.median(throughput), statistics.median(worst_first)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=24000, choices=(8000, 16000, 24000))
    parser.add_argument("--engines", default="hibari,neural,espeak,tone")
    args = parser.parse_args()
    rate = args.rate

    print(f"sample rate {rate} Hz; paragraph {len(PARAGRAPH.split())} words; time.perf_counter")
    print(f"{cpu_count_note()}\n")
    header = f"{'engine':<8} {'metric':<44} {'value':>14}"
    print(header)
    print("-" * len(header))
    for engine in _engines([n.strip() for n in args.engines.split(",") if n.strip()]):
        await _speak(engine, SENTENCE, rate)  # warm-up: library init, first allocations
        started = time.perf_counter()
        _, audio = await _speak(engine, PARAGRAPH, rate)
        slow = audio / (time.perf_counter() - started) < 100
        # A neural engine is ~20x real time: fewer, shorter runs keep the script near a minute.
        runs, text = (2, SHORT_PARAGRAPH) if slow else (5, PARAGRAPH)
        wall_rtf, cpu_rtf = await _real_time_factor(engine, rate, runs)
        median_first, p95_first = await _first_chunk(engine, rate, runs=10 if slow else 20)
        median_long, p95_long = await _first_chunk(
            engine, rate, LONG_SENTENCE, runs=10 if slow else 20
        )
        rows = [
            ("paragraph audio (s)", f"{audio:.1f}"),
            (f"real-time factor, wall (median of {runs})", f"{wall_rtf:.0f}x"),
            (f"real-time factor, CPU (median of {runs})", f"{cpu_rtf:.0f}x"),
            ("CPU ms per audio second", f"{1e3 / cpu_rtf:.1f}"),
            ("CPU s per audio s", f"{1 / cpu_rtf:.4f}"),
            ("first chunk, one sentence: median", f"{median_first * 1e3:.2f} ms"),
            ("first chunk, one sentence: p95", f"{p95_first * 1e3:.2f} ms"),
            ("first chunk, 20-word sentence: median", f"{median_long * 1e3:.2f} ms"),
            ("first chunk, 20-word sentence: p95", f"{p95_long * 1e3:.2f} ms"),
        ]
        for tasks in (1, 2, 4, 8):
            throughput, worst = await _concurrent(engine, rate, tasks, 1 if slow else 3, text)
            rows.append((f"{tasks} concurrent: audio s per wall s", f"{throughput:.0f}x"))
            rows.append((f"{tasks} concurrent: slowest first chunk", f"{worst * 1e3:.2f} ms"))
        for metric, value in rows:
            print(f"{engine.name:<8} {metric:<44} {value:>14}")
        print(f"{engine.name:<8} {'load average at the end':<44} {load_note().split()[-1]:>14}")
        print()


if __name__ == "__main__":
    asyncio.run(main())
