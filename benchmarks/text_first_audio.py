"""What the text front-end costs: CPU per sentence, and first audio with and without it.

Run from the repository root::

    python benchmarks/text_first_audio.py [--engines neural,espeak] [--runs 20]

1. ``prepare()`` (markup, lexicon, normaliser, word map) over typical agent sentences, each
   timed 200 times: p50 and p99 microseconds per sentence.
2. First audio (seconds from ``synthesize()`` to its first chunk) of the same engine called
   directly and through :class:`TextFrontEnd`, interleaved run by run so both see the same
   machine: plain text (the front-end passes it through) and text it rewrites (Markdown, a
   price).  Bounded: ``--runs`` per row.  The CPU model and the load average are printed: on a
   shared machine the figures are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_count_note, ensure_package, load_note, ms, percentile, table

ensure_package()

from lmnt_local.server.engines import SpeechEngine
from lmnt_local.server.text.frontend import TextFrontEnd

SENTENCES = [
    "Hello, how can I help you today?",
    "Your total is $42.50, and it ships on 4/5/2026.",
    "Call us at 555-123-4567 or email help@example.com.",
    "We're **open** until 9:30pm, see [our hours](https://example.com/hours).",
    "## Order summary\n",
    '<speak>Please hold. <break time="500ms"/> Your code is '
    '<say-as interpret-as="characters">XJ9</say-as>.</speak>',
    "Welcome to LMNT! Your order #4521 weighs 5 kg and arrives in 2-3 days.",
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
]
FIRST_AUDIO = {
    "plain": "Hello, how can I help you today?",
    "rewritten": "Your **total** is $42.50 today.",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def prepare_costs(frontend: TextFrontEnd, repeats: int = 200) -> list[list[object]]:
    rows: list[list[object]] = []
    every: list[float] = []
    for text in SENTENCES:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            frontend.prepare(text, "en")
            times.append(time.perf_counter() - start)
        every.extend(times)
        shown = text.replace("\n", " ")[:48]
        rows.append(
            [shown, f"{percentile(times, 50) * 1e6:.0f}", f"{percentile(times, 99) * 1e6:.0f}"]
        )
    rows.append(["all", f"{percentile(every, 50) * 1e6:.0f}", f"{percentile(every, 99) * 1e6:.0f}"])
    return rows


async def first_chunk(engine: SpeechEngine, text: str, rate: int) -> float:
    start = time.perf_counter()
    chunks = engine.synthesize(text, voice="ava", language="en", sample_rate=rate)
    try:
        async for _ in chunks:
            return time.perf_counter() - start
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engines", default="neural,espeak")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rate", type=int, default=24000)
    args = parser.parse_args()
    runs = max(1, min(args.runs, 200))
    from lmnt_local.server.engines import EngineUnavailable, load_engine, make_engine

    print(f"{cpu_model()}; {cpu_count_note()}")
    print("\nprepare() per sentence (microseconds)\n")
    print(table(["sentence", "p50 us", "p99 us"], prepare_costs(TextFrontEnd(make_engine("tone")))))
    rows: list[list[object]] = []
    for name in args.engines.split(","):
        try:
            engine = make_engine(name)
        except EngineUnavailable as exc:
            print(f"{name}: {exc}, skipped", file=sys.stderr)
            continue
        load_engine(engine)
        frontend = TextFrontEnd(engine)
        for label, text in FIRST_AUDIO.items():
            direct: list[float] = []
            wrapped: list[float] = []
            await first_chunk(engine, text, args.rate)  # warm caches for both
            for _ in range(runs):
                direct.append(await first_chunk(engine, text, args.rate))
                wrapped.append(await first_chunk(frontend, text, args.rate))
            rows.append(
                [
                    name,
                    label,
                    ms(percentile(direct, 50)),
                    ms(percentile(wrapped, 50)),
                    ms(percentile(direct, 95)),
                    ms(percentile(wrapped, 95)),
                    load_note(),
                ]
            )
    print("\nfirst audio (ms): engine alone vs through the text front-end\n")
    headers = ["engine", "text", "p50 alone", "p50 front-end", "p95 alone", "p95 front-end", "load"]
    print(table(headers, rows))


if __name__ == "__main__":
    asyncio.run(main())
