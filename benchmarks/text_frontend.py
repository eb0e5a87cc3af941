"""How long the text front-end's normaliser takes per sentence (the issue's goal: p99 <= 1 ms).

Run from the repository root::

    python benchmarks/text_frontend.py [--rounds 20] [--seconds 20]

Every written sentence of ``tests/data/text_corpus.tsv`` is normalised ``--rounds`` times (a
warm-up round first, uncounted), each call timed on its own; a second set joins four corpus
sentences into one ~150-character paragraph-like sentence, the longest an agent usually sends at
once.  Bounded in rounds and in seconds.  The CPU model and the 1-minute load average are printed
beside the figures: on a shared machine they are only as quiet as it was.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cpu_model, ensure_package, load_note, percentile, table

ensure_package()

from lmnt_local.server.text import normalize

CORPUS = REPO / "tests" / "data" / "text_corpus.tsv"


def sentences() -> list[str]:
    rows = [line.split("\t") for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [row[1] for row in rows if len(row) >= 3 and not row[0].startswith("#")]


def measure(texts: list[str], rounds: int, deadline: float) -> tuple[list[float], list[float]]:
    """Microseconds per call (wall clock, and this thread's CPU time), one per sentence a round.

    The wall clock is what a caller waits, including time the scheduler gave to other processes
    on a busy machine; the thread's CPU time is what the normaliser itself costs.
    """
    for text in texts:  # warm-up: first-use costs are not what a busy server pays
        normalize(text)
    wall: list[float] = []
    cpu: list[float] = []
    clock, thread_clock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(rounds):
        for text in texts:
            start, start_cpu = clock(), thread_clock()
            normalize(text)
            cpu.append((thread_clock() - start_cpu) / 1000)
            wall.append((clock() - start) / 1000)
        if time.monotonic() > deadline:
            break
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="stop after this long")
    args = parser.parse_args()
    texts = sentences()
    joined = [" ".join(texts[i : i + 4]) for i in range(0, len(texts) - 3, 4)]
    deadline = time.monotonic() + args.seconds
    rows = []
    for name, group in (("corpus sentence", texts), ("four sentences joined", joined)):
        wall, cpu = measure(group, args.rounds, deadline)
        chars = sum(len(t) for t in group) / len(group)
        for clock, samples in (("wall", wall), ("CPU", cpu)):
            rows.append(
                [
                    name,
                    clock,
                    len(group),
                    f"{chars:.0f}",
                    len(samples),
                    f"{percentile(samples, 50):.0f}",
                    f"{percentile(samples, 90):.0f}",
                    f"{percentile(samples, 99):.0f}",
                    f"{max(samples):.0f}",
                ]
            )
    print("# Text front-end: normalize() per sentence\n")
    print(f"{cpu_model()}, Python {sys.version.split()[0]}, {load_note()}\n")
    headers = [
        "set",
        "clock",
        "texts",
        "mean chars",
        "calls",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
    ]
    print(table(headers, rows))
    print("\nGoal: p99 <= 1000 µs per sentence.")


if __name__ == "__main__":
    main()
