"""The model-free text front-end the engines share: sentences, clauses, and words.

Engines speak a sentence at a time so the first one can be on the wire while later ones are
made; a neural engine also cuts a long sentence after its first clause, because it renders a
whole piece before any of its audio exists.  Words are whitespace tokens of the original text
("42", "Dr.", "$5" stay one word each), whatever the engine makes of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

__all__ = [
    "CONTROL_CHARS",
    "PAUSES",
    "first_clause_split",
    "phoneme_owners",
    "speech_pieces",
    "split_sentences",
    "word_spans",
    "word_times",
]

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WORD = re.compile(r"\S+")

_ABBREVIATIONS = frozenset(
    # not "no": "I said no. Then..." ends a sentence far more often than "No. 5" continues one
    "mr mrs ms dr prof st jr sr vs etc e.g i.e fig mt approx dept".split()
)
_CLOSERS = r"[\"'\u2019\u201d)\]\u300d\u300f]*"  # quotes and brackets after a terminator
_SENTENCE_END = re.compile(
    r"[.!?\u2026]+" + _CLOSERS + r"\s+"  # Latin-style: needs a following space ("3.5" stays)
    r"|[\u3002\uff01\uff1f]+" + _CLOSERS + r"\s*"  # CJK full stop, !, ?: no space needed
    r"|\s*\n\s*"  # line breaks end a sentence too
)
_LAST_WORD = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Cut ``text`` where a listener hears a sentence end, so each piece can be spoken alone.

    espeak puts the same pause after a lone sentence (ENDPAUSE) as between two sentences of one
    text, so speaking piece by piece costs no naturalness and lets the first piece out early.
    Abbreviations ("Dr. Smith") and initials ("J. Smith") do not end a sentence.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        head = text[start : match.start()]
        if match.group(0)[:1] == ".":
            last = _LAST_WORD.search(head)
            word = last.group(1).lower().lstrip("(\"'\u201c\u2018") if last else ""
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        piece = text[start : match.end()].strip()
        if piece:
            pieces.append(piece)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words (whitespace tokens) of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


# A clause ends at , ; : or a dash followed by a space; "3,000" and "a:b" do not split.
_CLAUSE_END = re.compile(r"(?:[,;:]|\s[\u2013\u2014-])\s+|[\u2013\u2014]\s*")
_JOINERS = frozenset("and but or so because which that while although when where who".split())
# Words a phrase cannot end on: a listener hears a pause after them as a break mid-phrase.
_FUNCTION_WORDS = frozenset(
    (
        "a an the this that these those my your his her its our their some any no every each "
        "of in on at to for from with by about into onto over under after before between "
        "through during without within among against toward towards upon than as like per "
        "is are was were be been am has have had do does did will would can could shall "
        "should may might must not very more most i you he she it we they me him us them"
    ).split()
)


def _bare(word: str) -> str:
    return word.lower().strip("\"'()[]\u201c\u201d\u2018\u2019")


def first_clause_split(sentence: str, *, min_words: int = 3, max_words: int = 8) -> list[str]:
    """``sentence`` as [first part, rest] when it is long and has a phrase boundary early
    enough, else ``[sentence]``.

    Eight words are about 2 s of speech, which Piper renders in ~110 ms of one core: the first
    audio stays near the 150 ms goal while the rest renders as it plays.  A cut costs prosody
    (the engine ends the first part as if the sentence ended there), so it is only made where
    a listener expects a break anyway: after a clause boundary (``,`` ``;`` ``:`` a dash) from
    ``min_words`` to ``max_words`` words in, else before a conjunction ("and", "because",
    "which"...) that follows a content word.  Never after an article or a preposition, and
    never after an arbitrary word count: without such a boundary the sentence stays whole.
    Pieces are exact slices: their concatenation is ``sentence``.
    """
    spans = word_spans(sentence)
    if len(spans) <= max_words + min_words:
        return [sentence]
    for match in _CLAUSE_END.finditer(sentence):
        words_before = sum(1 for s, _ in spans if s < match.start())
        if words_before > max_words:
            break
        if words_before >= min_words:
            return [sentence[: match.end()], sentence[match.end() :]]
    for i in range(min_words, max_words + 1):
        start, end = spans[i]
        before = sentence[spans[i - 1][0] : spans[i - 1][1]]
        if _bare(sentence[start:end]).strip(",.;:") in _JOINERS:
            if _bare(before).strip(",.;:") not in _FUNCTION_WORDS:
                return [sentence[:start], sentence[start:]]
    return [sentence]


def speech_pieces(text: str, lead: float) -> list[str]:
    """What a neural engine renders, piece by piece, for one call: its sentences, the first
    cut after its first phrase only when the listener has nothing left to play (``lead`` is
    0: the first piece of a turn).  With audio still queued, the whole sentence renders in
    time and is spoken with its own prosody."""
    sentences = split_sentences(text)
    if sentences and lead <= 0.0:
        return [*first_clause_split(sentences[0]), *sentences[1:]]
    return sentences


def phoneme_owners(spoken: Sequence[str], words: Sequence[Sequence[str]]) -> list[int]:
    """For each phoneme of ``spoken`` (a whole piece's phonemes), the index of the word it
    belongs to, given ``words``: the phonemes of each word said alone.

    The phonemizer reads a piece in context ("for the" becomes one reduced "fɚðə", "$42.50"
    six words), so the two sequences differ; they are aligned as strings and every phoneme
    that does not match takes the word of the phoneme before it.  Owners never decrease, so
    the word times built from them are monotonic.  Empty ``words``: all ``-1``.
    """
    reference: list[str] = []
    owner_of: list[int] = []
    for index, phonemes in enumerate(words):
        for phoneme in phonemes:
            if not phoneme.isspace():
                reference.append(phoneme)
                owner_of.append(index)
    owners = [-1] * len(spoken)
    if not owner_of:
        return owners
    matcher = SequenceMatcher(None, list(spoken), reference, autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            owners[a + k] = owner_of[b + k]
    current = 0
    for i, owner in enumerate(owners):
        current = max(current, owner)
        owners[i] = current
    return owners


#: Phonemes that are pauses, not sound of a word: left out of a word's start and end.
PAUSES = frozenset(" ,.;:!?\u2014\u2013\u2026-\"'()\u201c\u201d")
#: The least time a word gets when it has no sound of its own ("—", "&" read as nothing).
_MIN_WORD = 0.02


def word_times(
    spans: Sequence[tuple[int, int]],
    spoken: Sequence[str],
    owners: Sequence[int],
    bounds: Sequence[tuple[float, float]],
    seconds: float,
) -> list[tuple[float, float]]:
    """(start, duration) in seconds of each word of ``spans``, from the time each spoken
    phoneme occupies (``bounds``) and the word that owns it (:func:`phoneme_owners`).

    A word runs from its first to its last sounding phoneme.  Every word is timed, in order
    and inside the audio: a word without sound ("—", "...") takes the pause it owns, or else
    shares the gap beside it (borrowing from the word before when there is no gap), so a
    client highlighting words never sees one vanish.
    """
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    quiet_first: dict[int, float] = {}
    quiet_last: dict[int, float] = {}
    for phoneme, owner, (begin, finish) in zip(spoken, owners, bounds, strict=True):
        if owner < 0:
            continue
        if phoneme in PAUSES:
            quiet_first.setdefault(owner, begin)
            quiet_last[owner] = finish
        else:
            first.setdefault(owner, begin)
            last[owner] = finish
    timed: list[tuple[float, float] | None] = []
    cursor = 0.0
    for index in range(len(spans)):
        if index in first:
            a, b = first[index], last[index]
        elif index in quiet_first:
            a, b = quiet_first[index], quiet_last[index]
        else:
            timed.append(None)
            continue
        start = max(cursor, min(a, seconds))
        end = max(start, min(b, seconds))
        timed.append((start, end))
        cursor = end
    return _fill_untimed(timed, seconds)


def _fill_untimed(
    timed: list[tuple[float, float] | None], seconds: float
) -> list[tuple[float, float]]:
    """Give each run of untimed words an even share of the gap around it, widened into the
    word before when the gap is too small; zero-length words get ``_MIN_WORD`` where the audio
    allows."""
    out: list[tuple[float, float]] = []
    index = 0
    while index < len(timed):
        item = timed[index]
        if item is not None:
            out.append(item)
            index += 1
            continue
        run_end = index
        while run_end < len(timed) and timed[run_end] is None:
            run_end += 1
        count = run_end - index
        left = out[-1][1] if out else 0.0
        following = timed[run_end] if run_end < len(timed) else None
        right = following[0] if following is not None else seconds
        need = count * _MIN_WORD
        if right - left < need and out:  # borrow from the word before, keeping it half
            start, end = out[-1]
            left = max(start + (end - start) / 2, right - need)
            out[-1] = (start, left)
        share = max(0.0, right - left) / count
        for k in range(count):
            out.append((left + k * share, left + (k + 1) * share))
        index = run_end
    return [(float(a), float(b - a)) for a, b in out]
