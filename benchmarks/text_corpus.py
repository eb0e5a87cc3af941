"""How much of the written -> spoken corpus is said as meant, per category, before and after.

Run from the repository root::

    python benchmarks/text_corpus.py

"before" is the server without the normaliser: the text goes to the engine as written.  Two
columns judge it: ``as written`` counts the cases whose written text already equals the reading
(a lower bound), ``espeak`` counts those whose espeak-ng phonemes (en-us, what Piper and the espeak
engine say) equal the phonemes of the reading, stress and pauses aside: espeak's own rules read
some forms right ("3rd", "Mr.").  "after" is ``normalize()``: exact text, and the same espeak
comparison.  The espeak columns need the ``neural`` extra (piper-tts's phonemiser); without it
they print "-".  Rows marked ``known`` in the corpus count like any other.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, ensure_package, table

ensure_package()

from lmnt_local.server.text import normalize

CORPUS = REPO / "tests" / "data" / "text_corpus.tsv"
_NOT_SOUND = re.compile("[\\s\u02c8\u02cc\u02b2.,;:!?\"'()\\-\u2014\u2013]+")  # stress, pauses


def phonemiser() -> Callable[[str], str] | None:
    """Text -> espeak-ng en-us phonemes without stress or pauses, or None when not installed."""
    try:
        import espeakng_loader
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError:
        return None
    engine = EspeakPhonemizer(espeakng_loader.get_data_path())

    def say(text: str) -> str:
        phonemes = "".join("".join(s) for s in engine.phonemize("en-us", text))
        return _NOT_SOUND.sub("", phonemes)

    return say


def main() -> None:
    rows = [line.split("\t") for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    cases = [row[:3] for row in rows if len(row) >= 3 and not row[0].startswith("#")]
    say = phonemiser()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    still_wrong: list[str] = []
    for category, written, spoken in cases:
        after = normalize(written).spoken
        tally = counts[category]
        tally[0] += 1
        tally[1] += written == spoken
        tally[3] += after == spoken
        if say is not None:
            target = say(spoken)
            tally[2] += say(written) == target
            tally[4] += say(after) == target
        if after != spoken:
            still_wrong.append(f"- {category}: {written!r} -> {after!r} (meant {spoken!r})")

    def rate(hit: int, total: int, available: bool = True) -> str:
        return f"{hit}/{total} ({100 * hit / total:.1f} %)" if available else "-"

    table_rows = []
    total = [0, 0, 0, 0, 0]
    for category in sorted(counts):
        c = counts[category]
        total = [a + b for a, b in zip(total, c, strict=True)]
        table_rows.append(
            [
                category,
                c[0],
                rate(c[1], c[0]),
                rate(c[2], c[0], say is not None),
                rate(c[3], c[0]),
                rate(c[4], c[0], say is not None),
            ]
        )
    table_rows.append(
        [
            "**all**",
            total[0],
            rate(total[1], total[0]),
            rate(total[2], total[0], say is not None),
            rate(total[3], total[0]),
            rate(total[4], total[0], say is not None),
        ]
    )
    headers = [
        "category",
        "cases",
        "before: as written",
        "before: espeak",
        "after",
        "after: espeak",
    ]
    print("# Written -> spoken corpus (tests/data/text_corpus.tsv)\n")
    print(table(headers, table_rows))
    if still_wrong:
        print("\nStill read otherwise:\n" + "\n".join(still_wrong))


if __name__ == "__main__":
    main()
