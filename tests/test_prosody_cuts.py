"""Where the neural engine may cut a sentence to speak sooner (issue 22 item 3).

A cut costs prosody, so it is made only on the first piece of a turn (nothing left to play)
and only at a phrase boundary a listener expects; the pieces share one loudness.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lmnt_local.server.text.segment import first_clause_split, speech_pieces

LONG = "We are open from nine in the morning until six in the evening every weekday."


@pytest.mark.parametrize(
    "sentence",
    [
        LONG,  # the old rule: "from nine in | the morning"
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "Please bring the forms with you because of the new rules at the desk.",
    ],
)
def test_no_cut_without_a_phrase_boundary(sentence: str) -> None:
    assert first_clause_split(sentence) == [sentence]


@pytest.mark.parametrize(
    "sentence, first",
    [
        ("Thanks for waiting, your order is on its way and will arrive soon.", "waiting, "),
        (
            "I checked the account and the payment went through early this morning for you.",
            "account ",
        ),
    ],
)
def test_cuts_only_after_punctuation_or_before_a_conjunction(sentence: str, first: str) -> None:
    head, rest = first_clause_split(sentence)
    assert head.endswith(first) and head + rest == sentence


def test_never_after_an_article_or_preposition() -> None:
    sentence = "I went back to the and then some other words follow here too."
    assert first_clause_split(sentence) == [sentence]


def test_only_the_first_piece_of_a_turn_is_cut() -> None:
    text = "Thanks for waiting, your order is on its way and will arrive soon. Bye now."
    assert len(speech_pieces(text, 0.0)) == 3  # first sentence cut, listener has nothing
    assert speech_pieces(text, 0.5) == [  # audio queued: every sentence whole
        "Thanks for waiting, your order is on its way and will arrive soon.",
        "Bye now.",
    ]


async def test_the_pieces_of_a_cut_sentence_share_one_gain(piper_engine: Any) -> None:
    """Loudness is set per utterance: the second piece is scaled by the first piece's gain
    (limited at its peaks only), not peak-normalised on its own as it was."""
    voice = piper_engine._voice(piper_engine.resolve("ava", "en"))
    head, rest = first_clause_split(
        "Thanks for waiting, your order is on its way and will arrive very soon today."
    )
    first = voice.render(head, 1.0, 1, 24000)
    alone = voice.render(rest, 1.0, 1, 24000)  # as if it were a whole utterance
    shared = voice.render(rest, 1.0, 1, 24000, gain=first.gain)
    assert first.gain is not None and alone.gain is not None
    assert shared.gain == first.gain
    level = float(np.sqrt(np.mean(shared.pcm.astype(np.float64) ** 2)))
    own = float(np.sqrt(np.mean(alone.pcm.astype(np.float64) ** 2)))
    expected = first.gain / alone.gain
    assert 0.8 * expected < level / own < 1.05 * expected, (level / own, expected)
