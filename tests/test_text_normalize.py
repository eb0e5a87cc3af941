"""The text front-end's normaliser: the written -> spoken corpus, and properties on any text.

``tests/data/text_corpus.tsv`` holds what a person says for written forms agents produce
(money, dates, times, phone and order numbers, units, abbreviations, ...), one category a row;
rows marked ``known`` are read otherwise today and listed in docs/text.md (strict xfail: fixing
one fails the run until the mark goes).  ``benchmarks/text_corpus.py`` prints the pass rate per
category, before (the text passed as written) and after.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmnt_local.server.text import (
    Normalized,
    Token,
    identity,
    languages,
    normalize,
    register,
)
from lmnt_local.server.text.en import _ENGLISH, RULES, say_as, spell
from lmnt_local.server.text.tables_en import ABBREVIATIONS

CORPUS = Path(__file__).parent / "data" / "text_corpus.tsv"
CATEGORIES = {
    "money", "cardinal", "ordinal", "decimal", "fraction", "percent", "range", "year",
    "large_number", "date", "time", "duration", "phone", "zip", "order_number", "code", "unit",
    "abbreviation", "roman", "web", "symbol", "passthrough", "sentence",
}  # fmt: skip


def _rows() -> list[tuple[str, str, str, bool]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        assert len(fields) in (3, 4), f"corpus line needs 3 or 4 tab-separated fields: {line!r}"
        rows.append((fields[0], fields[1], fields[2], fields[3:] == ["known"]))
    return rows


ROWS = _rows()


def test_corpus_covers_every_category() -> None:
    assert len(ROWS) >= 250
    counts = {c: sum(1 for row in ROWS if row[0] == c) for c in CATEGORIES}
    assert {row[0] for row in ROWS} == CATEGORIES
    assert min(counts.values()) >= 5, counts


@pytest.mark.parametrize(
    ("category", "written", "spoken"),
    [
        pytest.param(c, w, s, marks=[pytest.mark.xfail(strict=True)] if known else [], id=w)
        for c, w, s, known in ROWS
    ],
)
def test_corpus(category: str, written: str, spoken: str) -> None:
    assert normalize(written).spoken == spoken


def _check_invariants(result: Normalized) -> None:
    """Tokens ordered, disjoint, inside the text, covering every non-space character."""
    text = result.source
    cursor = 0
    pieces = []
    for token, (s_start, s_end) in zip(result.tokens, result.spoken_spans, strict=True):
        assert 0 <= cursor <= token.source_start < token.source_end <= len(text)
        assert not text[cursor : token.source_start].strip(), "a gap holds more than whitespace"
        assert result.spoken[s_start:s_end] == token.spoken
        pieces.append(token)
        cursor = token.source_end
    assert not text[cursor:].strip()
    assert len(pieces) == len(result.tokens)


def test_a_price_is_one_caller_word_with_its_whole_reading() -> None:
    result = normalize("It costs $5.50.")
    assert result.spoken == "It costs five dollars and fifty cents."
    assert result.tokens == [
        Token(0, 2, "It"),
        Token(3, 8, "costs"),
        Token(9, 14, "five dollars and fifty cents"),
        Token(14, 15, "."),
    ]
    start, end = result.spoken_spans[2]
    assert result.spoken[start:end] == "five dollars and fifty cents"
    assert result.spoken[end:] == "."  # the sentence's full stop stays a full stop


def test_number_and_unit_stay_two_caller_words() -> None:
    result = normalize("Lift 5 kg now")
    assert [t.spoken for t in result.tokens] == ["Lift", "five", "kilograms", "now"]
    assert [(t.source_start, t.source_end) for t in result.tokens] == [
        (0, 4),
        (5, 6),
        (7, 9),
        (10, 13),
    ]


def test_touching_rewrites_get_a_space_and_untouched_neighbours_do_not() -> None:
    assert normalize("5kg").spoken == "five kilograms"
    assert normalize("2+2=4").spoken == "two plus two equals four"
    assert normalize("COVID-19").spoken == "COVID-nineteen"
    assert normalize("(911)").spoken == "(nine one one)"


def test_whitespace_between_words_is_kept() -> None:
    result = normalize("Pay  $5\nthen\tgo")
    assert result.spoken == "Pay  five dollars\nthen\tgo"


def test_plain_text_comes_back_identical_with_identity_spans() -> None:
    text = "Hello, how can I help you today?"
    result = normalize(text)
    assert result.spoken == text and not result.changed
    assert result.tokens == identity(text).tokens
    assert [(t.source_start, t.source_end) for t in result.tokens] == [
        (m.start(), m.end()) for m in re.finditer(r"\S+", text)
    ]


def test_other_languages_pass_unchanged_and_regions_use_their_language() -> None:
    assert normalize("Il coûte 5,50 € le 4/5/2026.", "fr").spoken == "Il coûte 5,50 € le 4/5/2026."
    assert normalize("$5", "en-US").spoken == "five dollars"
    assert normalize("$5", "en_GB").spoken == "five dollars"
    assert "en" in languages()


def test_a_language_plugs_in_through_the_registry() -> None:
    def shout(text: str) -> Normalized:
        plain = identity(text)
        tokens = [Token(t.source_start, t.source_end, t.spoken.upper()) for t in plain.tokens]
        return Normalized(text, text.upper(), tokens, plain.spoken_spans)

    register("zz", shout)
    assert normalize("hola amigo", "zz-ZZ").spoken == "HOLA AMIGO"


def test_spell_reads_codes_as_letters_and_digits() -> None:
    assert spell("AB12C") == "AB one two C"
    assert spell("XK-4421-B") == "XK, four four two one, B"


def test_the_combined_pattern_looks_wherever_a_rule_can_start() -> None:
    """The speed-ups (skipping word interiors, grouping by first character) lose no match."""
    texts = [w for _, w, _, _ in ROWS]
    texts += [" ".join(texts[i : i + 4]) for i in range(0, len(texts) - 3, 4)]
    for rule, compiled in zip(RULES, _ENGLISH.compiled, strict=True):
        first = re.compile(f"[{rule.first}]") if rule.first else None
        for text in texts:
            for found in compiled.finditer(text):
                if first is not None:
                    assert first.match(text, found.start()), (rule.name, text, found.start())
                assert _ENGLISH.master.match(text, found.start()), (rule.name, text)


BARE_WORDS = {k for k in ABBREVIATIONS if not k.endswith((".", "/"))}
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text(max_size=120))
@example("$5.50-$" + "9" * 40)
@example("1/0 and 0/0 and 99:99 and 13/45/2026 and 2026-13-45 and #0")
@example("\u00a0$\u00a05 \u2028 9\u202fam ½½ ++ -- ..")
def test_never_raises_and_spans_trace_the_text(text: str) -> None:
    _check_invariants(normalize(text))


WRITTEN = st.lists(
    st.sampled_from(
        ["$5.50", "4/5/2026", "9:30pm", "555-123-4567", "#4521", "AB12C", "20°C", "5 kg",
         "Dr.", "St.", "Henry VIII", "e.g.", "help@example.com", "2-3", "1990s", "1/2", "&",
         "-5", "3rd", "12.5%", "$1.2M", "Dec.", "3", "Mon,", "Jan", "x", "word", "The", ".",
         ",", "(", ")", "-", "—", "'", "I", "a", "am", "pm", "in", "St", "of", "2026"]
    ),
    max_size=14,
)  # fmt: skip


@PROPERTY
@given(WRITTEN, st.sampled_from([" ", "", "  ", "\n"]))
def test_written_forms_in_any_order_keep_the_invariants(words: list[str], glue: str) -> None:
    _check_invariants(normalize(glue.join(words)))


@PROPERTY
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,;:!?'\n", max_size=120))
def test_text_without_digits_or_symbols_is_unchanged(text: str) -> None:
    if set(re.findall(r"[a-z]+", text)) & BARE_WORDS:
        return  # "vs", "aka", "hrs": said in full (tests above)
    result = normalize(text)
    assert result.spoken == text
    assert [t.spoken for t in result.tokens] == text.split()


def _cpu_seconds(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        normalize(text)
        best = min(best, time.thread_time() - start)
    return best


@pytest.mark.parametrize("unit", ["1-", "Dr. ", "a-", "a@", "$1,", "etc. ", "+1 "])
def test_cost_grows_linearly_with_hostile_text(unit: str) -> None:
    """A text 4x longer costs about 4x (quadratic would be 16x): no rule rescans the text."""
    short = _cpu_seconds(unit * 500)
    long = _cpu_seconds(unit * 2000)
    assert long < 9 * max(short, 1e-4), (unit, short, long)


@pytest.mark.parametrize(
    ("kind", "text", "said"),
    [
        ("characters", "AB12C", "AB one two C"),
        ("spell-out", "xk-4", "XK, four"),
        ("telephone", "555-123-4567", "five five five, one two three, four five six seven"),
        ("digits", "4521", "four five two one"),
        ("cardinal", "1,250", "one thousand two hundred fifty"),
        ("ordinal", "21", "twenty-first"),
        ("ordinal", "3rd", "third"),
        ("date", "4/5/2026", "April fifth, twenty twenty-six"),
        ("cardinal", "many", None),
        ("date", "soon", None),
        ("unknown-kind", "5", None),
    ],
)
def test_say_as_reads_a_fragment_as_asked(kind: str, text: str, said: str | None) -> None:
    """The building block for SSML ``say-as`` (the markup layer decides when to use it)."""
    assert say_as(kind, text) == said


def test_the_engines_import_segment_without_compiling_the_rules() -> None:
    """The rules compile when the normaliser is first used, not when an engine imports."""
    code = (
        "import sys, lmnt_local.server.text.segment\n"
        "assert 'lmnt_local.server.text.en' not in sys.modules\n"
        "from lmnt_local.server.text import normalize\n"
        "assert normalize('$5').spoken == 'five dollars'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
