"""Pronunciation control: a lexicon file, inline IPA, and the built-in "LMNT" said "lament".

A lexicon maps a word or phrase to how it is said: IPA between slashes (``/ləˈmɛnt/``) or a
respelling in letters (``lament``).  IPA reaches engines that take phonemes (Piper, through its
``[[ ]]`` raw-phoneme input); any other engine gets a respelling made from the IPA
(:func:`ipa_to_respelling`), which is rougher: give a respelling where it matters.

File format (UTF-8, one entry a line, ``#`` starts a comment)::

    # word or phrase <TAB or two+ spaces> pronunciation
    LMNT        lament
    nginx       engine x
    Nguyen      /wɪn/
    SQL         sequel

Case rule: an entry written with any capital letter matches only that exact case ("US" the
country, not "us"); an entry written all in lower case matches any case ("nginx", "Nginx").
Phrases match across any run of spaces.  The longest entry wins where two overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmnt_local.server.text.markup import Run, Span

__all__ = [
    "BUILTIN",
    "Lexicon",
    "LexiconError",
    "ipa_to_espeak",
    "ipa_to_misaki",
    "ipa_to_respelling",
]

#: Entries every server has (a lexicon file may override them).
BUILTIN: dict[str, str] = {"lmnt": "lament"}  # any case: "LMNT", "Lmnt"

_SEPARATOR = re.compile(r"\t+| {2,}")
_INLINE_IPA = re.compile(r"\[([^\[\]\n]+)\]\(/([^/()\n]+)/\)")
_MAX_ENTRIES = 100_000


class LexiconError(ValueError):
    """A lexicon file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    said: str  # IPA (without slashes) or a respelling
    ipa: bool


def _parse_pronunciation(value: str) -> tuple[str, bool]:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "/":
        return value[1:-1].strip(), True
    if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
        return value[1:-1].strip(), True
    return value, False


class Lexicon:
    """Words and phrases with their pronunciations; see the module docstring for the rules."""

    def __init__(self, entries: dict[str, str] | None = None, *, builtin: bool = True) -> None:
        merged = dict(BUILTIN) if builtin else {}
        merged.update(entries or {})
        self._entries: list[_Entry] = []
        for key, value in merged.items():
            key = " ".join(key.split())
            said, ipa = _parse_pronunciation(value)
            if not key or not said:
                raise LexiconError(f"lexicon entry {key!r}: empty word or pronunciation")
            self._entries.append(_Entry(key, said, ipa))
        self._pattern = self._compile(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: str | Path, *, builtin: bool = True) -> Lexicon:
        """Read a lexicon file (format in the module docstring), or :class:`LexiconError`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LexiconError(f"lexicon file {str(path)!r} does not exist") from None
        except UnicodeDecodeError:
            raise LexiconError(f"lexicon file {str(path)!r} is not UTF-8 text") from None
        except OSError as exc:
            raise LexiconError(f"lexicon file {str(path)!r} cannot be read: {exc}") from None
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
            if not line.strip():
                continue
            parts = _SEPARATOR.split(line.strip(), maxsplit=1)
            if len(parts) != 2 or not parts[1].strip():
                raise LexiconError(
                    f"{path}:{number}: expected 'word<TAB>pronunciation', got {line.strip()!r}"
                )
            entries[parts[0]] = parts[1]
            if len(entries) > _MAX_ENTRIES:
                raise LexiconError(f"{path}: more than {_MAX_ENTRIES} entries")
        return cls(entries, builtin=builtin)

    @staticmethod
    def _compile(entries: Iterable[_Entry]) -> re.Pattern[str] | None:
        alternatives = []
        for index, entry in sorted(
            enumerate(entries), key=lambda item: len(item[1].key), reverse=True
        ):
            words = r"\s+".join(re.escape(w) for w in entry.key.split())
            if entry.key == entry.key.lower():
                words = f"(?i:{words})"
            alternatives.append(f"(?P<e{index}>{words})")
        if not alternatives:
            return None
        return re.compile(r"(?<![\w'’-])(?:" + "|".join(alternatives) + r")(?![\w-])")

    def apply(self, run: Run) -> list[Run]:
        """``run`` with inline IPA and lexicon words made runs of their own (``"ipa"`` or
        ``"said"``); the rest stays ``"text"`` for the normaliser."""
        if run.kind != "text":
            return [run]
        out: list[Run] = []
        text, origin = run.text, run.origin
        last = 0
        for start, end, said, ipa in self._matches(text):
            if start > last:
                out.append(Run(text[last:start], origin[last:start], "text", run.rate))
            span = _cover(origin[start:end])
            out.append(Run(said, (span,) * len(said), "ipa" if ipa else "said", run.rate))
            last = end
        if not out:
            return [run]
        if last < len(text):
            out.append(Run(text[last:], origin[last:], "text", run.rate))
        return out

    def _matches(self, text: str) -> list[tuple[int, int, str, bool]]:
        found: list[tuple[int, int, str, bool]] = []
        taken: list[Span] = []
        for match in _INLINE_IPA.finditer(text):
            found.append((match.start(), match.end(), match.group(2).strip(), True))
            taken.append(match.span())
        if self._pattern is not None:
            for match in self._pattern.finditer(text):
                if any(a < match.end() and match.start() < b for a, b in taken):
                    continue
                assert match.lastgroup is not None
                entry = self._entries[int(match.lastgroup[1:])]
                found.append((match.start(), match.end(), entry.said, entry.ipa))
        return sorted(found)


def _cover(spans: tuple[Span, ...]) -> Span:
    return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (0, 0)


# -- IPA to letters, for engines that cannot take phonemes ----------------------------------

_IPA_LETTERS = sorted(
    {
        "tʃ": "ch",
        "ʧ": "ch",
        "dʒ": "j",
        "ʤ": "j",
        "θ": "th",
        "ð": "th",
        "ʃ": "sh",
        "ʒ": "zh",
        "ŋ": "ng",
        "ɹ": "r",
        "ɾ": "t",
        "ʔ": "",
        "j": "y",
        "ɡ": "g",
        "ɫ": "l",
        "x": "kh",
        "eɪ": "ay",
        "aɪ": "eye",
        "ɔɪ": "oy",
        "aʊ": "ow",
        "oʊ": "oh",
        "əʊ": "oh",
        "ɪə": "eer",
        "eə": "air",
        "ʊə": "oor",
        "iː": "ee",
        "i": "ee",
        "ɪ": "i",
        "e": "e",
        "ɛ": "e",
        "æ": "a",
        "ɑː": "ah",
        "ɑ": "ah",
        "ɒ": "o",
        "ɔː": "aw",
        "ɔ": "aw",
        "ʊ": "oo",
        "uː": "oo",
        "u": "oo",
        "ʌ": "u",
        "ə": "uh",
        "ɚ": "er",
        "ɝ": "er",
        "ɜː": "er",
        "ɜ": "er",
        "ᵻ": "i",
        "ɐ": "uh",
        "o": "oh",
        "a": "ah",
        "ː": "",
        "ˌ": "",
        ".": "",
    }.items(),
    key=lambda item: -len(item[0]),
)


def _scan(ipa: str, table: Sequence[tuple[str, str]]) -> Iterator[tuple[str | None, str]]:
    """IPA read left to right, longest symbol of ``table`` first (tables are sorted so):
    ``(replacement, symbol)`` for a symbol the table has, ``(None, char)`` for any other
    character, which each notation treats its own way."""
    i = 0
    while i < len(ipa):
        for symbol, replacement in table:
            if ipa.startswith(symbol, i):
                yield replacement, symbol
                i += len(symbol)
                break
        else:
            yield None, ipa[i]
            i += 1


def ipa_to_respelling(ipa: str) -> str:
    """Rough English letters for IPA ("ləˈmɛnt" -> "luh-ment"): a primary stress mark starts
    a new hyphenated part, which most letter-to-sound rules read as a syllable break."""
    out: list[str] = []
    for letters, char in _scan(ipa, _IPA_LETTERS):
        if letters is not None:
            out.append(letters)
        elif char == "ˈ":
            if out and out[-1] not in ("-", " "):
                out.append("-")
        elif char.isspace():
            out.append(" ")
        else:
            out.append(char if char.isascii() and char.isalpha() else "")
    return re.sub(r"-+", "-", "".join(out)).strip("- ") or ipa


# -- IPA to espeak-ng's phoneme mnemonics (its [[ ]] input) --------------------------------

_IPA_ESPEAK = sorted(
    {
        "tʃ": "tS",
        "ʧ": "tS",
        "dʒ": "dZ",
        "ʤ": "dZ",
        "eɪ": "eI",
        "aɪ": "aI",
        "ɔɪ": "OI",
        "oʊ": "oU",
        "əʊ": "oU",
        "aʊ": "aU",
        "ɪə": "i@",
        "eə": "e@",
        "ʊə": "U@",
        "iː": "i:",
        "uː": "u:",
        "ɑː": "A:",
        "ɔː": "O:",
        "ɜː": "3:",
        "ɝ": "3:",
        "ɚ": "3",
        "ə": "@",
        "ɐ": "a#",
        "ɪ": "I",
        "ᵻ": "I",
        "i": "i",
        "ɛ": "E",
        "e": "E",
        "æ": "a",
        "ɑ": "A:",
        "ɒ": "0",
        "ɔ": "O:",
        "ʊ": "U",
        "u": "u:",
        "ʌ": "V",
        "o": "oU",
        "a": "a",
        "θ": "T",
        "ð": "D",
        "ʃ": "S",
        "ʒ": "Z",
        "ŋ": "N",
        "ɹ": "r",
        "ɾ": "t",
        "ɡ": "g",
        "ɫ": "l",
        "ʔ": "",
        "ˈ": "'",
        "ˌ": ",",
        "ː": ":",
        ".": "",
    }.items(),
    key=lambda item: -len(item[0]),
)
_ESPEAK_PLAIN = frozenset("pbtdkgfvszhmnlwjrx")


def ipa_to_espeak(ipa: str) -> str:
    """IPA as espeak-ng's English phoneme mnemonics ("ˈfaɪv" -> "'faIv"), for its ``[[ ]]``
    phoneme input; symbols it has no mnemonic for are left out."""
    return "".join(
        mnemonic
        if mnemonic is not None
        else char
        if char in _ESPEAK_PLAIN
        else " "
        if char.isspace()
        else ""
        for mnemonic, char in _scan(ipa, _IPA_ESPEAK)
    )


# -- IPA to misaki's phonemes (hibari's inline "[word](/phonemes/)") --------------------------

_IPA_MISAKI = sorted(
    {
        "aɪ": "I",
        "eɪ": "A",
        "oʊ": "O",
        "əʊ": "O",
        "aʊ": "W",
        "ɔɪ": "Y",
        "dʒ": "ʤ",
        "tʃ": "ʧ",
        "g": "ɡ",
        "r": "ɹ",
        "ɝ": "ɜɹ",
        "ɚ": "əɹ",
        "e": "A",
        "o": "O",
        ".": "",
    }.items(),
    key=lambda item: -len(item[0]),
)
_MISAKI_VOWELS = frozenset("aeiouæɑɒɔəɛɜɪʊʌAIOWYᵻɐ")


def ipa_to_misaki(ipa: str) -> str:
    """IPA in misaki's notation, which hibari's G2P takes inline: diphthongs and affricates as
    one symbol ("aɪ" -> "I", "dʒ" -> "ʤ") and a stress mark just before its vowel, as misaki
    writes them ("ˈfaɪv" -> "fˈIv")."""
    symbols = [char if found is None else found for found, char in _scan(ipa, _IPA_MISAKI)]
    out: list[str] = []
    stress = ""
    for symbol in "".join(symbols):
        if symbol in "ˈˌ":
            stress = symbol
        elif symbol in _MISAKI_VOWELS and stress:
            out.extend((stress, symbol))
            stress = ""
        else:
            out.append(symbol)
    return "".join(out) + stress
