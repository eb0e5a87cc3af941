"""Does the server say the words?  An independent recogniser transcribes what it sends.

pocketsphinx 5 (its wheel ships the en-us model) transcribes the server's HTTP audio at 16 kHz
for fixed sentences (``asr_helpers.SENTENCES``: the issue's sentence plus Harvard list 1), and
the word error rate must stay under a bound per engine, set from measurements with a margin
(docs/performance.md; this 2-core machine, pocketsphinx 5.1.1):

============  ==============================  =============
engine        measured WER, 11 sentences      bound
============  ==============================  =============
neural        0.33-0.41 (issue), 0.37 here    0.55
espeak        0.91-0.99                       (forced choice instead: see its test)
tone          1.00                            (must fail)
============  ==============================  =============

The same check must fail for the tone engine and for the neural engine's own audio garbled
(time-reversed; shuffled in 100 ms blocks): a bound that passes those measures nothing.  The
default run checks four sentences; ``-m slow`` runs all eleven for neural, and a forced choice
between readings for espeak.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np
import pytest

from lmnt_local.server import LocalLMNTServer, ToneEngine

from asr_helpers import RATE, SENTENCES, wer

pytest.importorskip("pocketsphinx", reason="the intelligibility test needs the [test] extra")
pytestmark = pytest.mark.timeout(180)

SHORT = SENTENCES[:4]
BOUNDS = {"neural": 0.55, "tone": 0.5}
SHORT_BOUND = 0.5  # neural measured 0.14-0.24 on these four


async def _speak_all(engine: Any, sentences: Sequence[str]) -> list[bytes]:
    audios = []
    async with LocalLMNTServer(engine=engine) as srv, aiohttp.ClientSession() as http:
        for text in sentences:
            body = {"text": text, "voice": "ava", "format": "pcm_s16le", "sample_rate": RATE}
            async with http.post(
                f"{srv.http_url}/v1/ai/speech/bytes", json=body, headers={"X-API-Key": "k"}
            ) as resp:
                assert resp.status == 200
                audios.append(await resp.read())
    return audios


def assert_intelligible(sentences: Sequence[str], audios: Sequence[bytes], bound: float) -> float:
    rate = wer(sentences, audios)
    assert rate <= bound, f"word error rate {rate:.2f} > {bound}"
    return rate


def _reversed(pcm: bytes) -> bytes:
    return np.frombuffer(pcm, dtype="<i2")[::-1].tobytes()


def _shuffled(pcm: bytes) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2")
    block = RATE // 10
    blocks = [x[i : i + block] for i in range(0, len(x), block)]
    order = np.random.default_rng(0).permutation(len(blocks))
    return np.concatenate([blocks[i] for i in order]).tobytes()


async def test_neural_speech_is_intelligible_and_garbled_speech_is_not(piper_engine: Any) -> None:
    audios = await _speak_all(piper_engine, SHORT)
    assert_intelligible(SHORT, audios, SHORT_BOUND)
    for garble in (_reversed, _shuffled):  # two sentences each keep the default run short
        with pytest.raises(AssertionError, match="word error rate"):
            assert_intelligible(SHORT[:2], [garble(a) for a in audios[:2]], SHORT_BOUND)


async def test_a_tone_is_not_speech() -> None:
    audios = await _speak_all(ToneEngine(), SHORT[:1])
    with pytest.raises(AssertionError, match="word error rate"):
        assert_intelligible(SHORT[:1], audios, SHORT_BOUND)


@pytest.mark.slow
async def test_eleven_sentences_neural(piper_engine: Any) -> None:
    audios = await _speak_all(piper_engine, SENTENCES)
    assert_intelligible(SENTENCES, audios, BOUNDS["neural"])
    with pytest.raises(AssertionError, match="word error rate"):
        assert_intelligible(SENTENCES, [_shuffled(a) for a in audios], BOUNDS["neural"])


@pytest.mark.slow
async def test_espeak_says_each_sentence_rather_than_another() -> None:
    """espeak-ng is intelligible to people but not to pocketsphinx's free recognition (WER
    0.93-0.99 from run to run, where its own garbled audio scores 0.98-1.0: a WER bound there
    measured noise).  A forced choice is sharp: each sentence's audio must align better with
    its own text than with the next Harvard sentence's.  Measured: 11/11; shuffled in 100 ms
    blocks 3/11, time-reversed 4/11; the tone 0/11."""
    from lmnt_local.server.engines import make_engine

    from reading_helpers import says

    audios = await _speak_all(make_engine("espeak"), SENTENCES)
    n = len(SENTENCES)

    def chosen(garble: Any) -> int:
        return sum(says(garble(audios[i]), SENTENCES[i], SENTENCES[(i + 1) % n]) for i in range(n))

    assert chosen(lambda pcm: pcm) >= n - 1
    assert chosen(_shuffled) <= n // 2
    assert chosen(_reversed) <= n // 2
