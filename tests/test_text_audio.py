"""Text read as meant, judged through the audio of the real server with the neural voice.

Each case is a forced choice: the recogniser aligns the WAV to the reading a person means and to
the literal reading engines gave before the text front-end ("dollar five point five zero"), and
the meant one must fit better (:mod:`reading_helpers`).  Silence and word timings are measured
in the audio and the server's timestamps: orderings and ratios, never wall-clock times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from videosdk.plugins.lmnt.server import LocalLMNTServer
from videosdk.plugins.lmnt.server.config import ServerConfig

from neural_helpers import stream
from reading_helpers import says

pytestmark = pytest.mark.timeout(180)

RATE = 16000


@pytest.fixture
async def server(piper_engine: Any) -> AsyncIterator[LocalLMNTServer]:
    async with LocalLMNTServer(piper_engine) as srv:
        yield srv


async def speak(srv: LocalLMNTServer, text: str, version: str = "1.0") -> bytes:
    got = await stream(srv.ws_url, text, sample_rate=RATE, seed=7, **{"lmnt-version": version})
    assert not got.errors(), got.errors()
    return bytes(got.audio)


async def speak_http(srv: LocalLMNTServer, text: str, **fields: Any) -> dict[str, Any]:
    body = {"text": text, "voice": "ava", "format": "pcm_s16le", "sample_rate": RATE, "seed": 7}
    body.update(fields)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{srv.http_url}/v1/ai/speech", json=body, headers={"X-API-Key": "k"}
        ) as response:
            assert response.status == 200, await response.text()
            reply: dict[str, Any] = await response.json()
    return reply


#: (written, meant, literal): SSML, Markdown and the built-in lexicon (no normaliser needed).
MARKUP_CASES = [
    (
        "The total is **two** items.",
        "the total is two items",
        "the total is asterisk asterisk two asterisk asterisk items",
    ),
    ("Welcome to LMNT.", "welcome to lament", "welcome to l m n t"),
    (
        'Your code is <say-as interpret-as="characters">CAT</say-as>.',
        "your code is c a t",
        "your code is cat",
    ),
    (
        'The <sub alias="World Wide Web">WWW</sub> is big.',
        "the world wide web is big",
        "the w w w is big",
    ),
    (
        "<speak>Please <emphasis>hold</emphasis> the line.</speak>",
        "please hold the line",
        "less than speak greater than please less than emphasis greater than hold",
    ),
    ("## Order summary\n", "order summary", "hash hash order summary"),
    (
        "See [our guide](https://example.com/guide) today.",
        "see our guide today",
        "see our guide h t t p s example dot com guide today",
    ),
]


@pytest.mark.parametrize(("written", "meant", "literal"), MARKUP_CASES)
async def test_markup_and_lexicon_read_as_meant(
    server: LocalLMNTServer, written: str, meant: str, literal: str
) -> None:
    audio = await speak(server, written)
    assert says(audio, meant, literal), written


async def test_without_the_frontend_the_literal_reading_wins(piper_engine: Any) -> None:
    """The judge is not fooled: the same cases, read literally, choose the literal reading."""
    config = ServerConfig(text_frontend=False)
    async with LocalLMNTServer(piper_engine, config=config) as srv:
        audio = await speak(srv, "The total is **two** items.")
        assert says(audio, MARKUP_CASES[0][2], MARKUP_CASES[0][1])
        audio = await speak(srv, "Welcome to LMNT.")
        assert says(audio, "welcome to l m n t", "welcome to lament")


async def test_lexicon_file_ipa_reaches_the_voice(piper_engine: Any, tmp_path: Path) -> None:
    path = tmp_path / "lexicon.tsv"
    path.write_text("gizmo\t/ˈfaɪv ˈdɑlɚz/\nSQL\tsequel\n", encoding="utf-8")
    async with LocalLMNTServer(piper_engine, config=ServerConfig(lexicon=path)) as srv:
        audio = await speak(srv, "It costs gizmo.")
        assert says(audio, "it costs five dollars", "it costs gizmo")
        audio = await speak(srv, "We use SQL.")
        assert says(audio, "we use sequel", "we use s q l")
        # inline IPA, hibari-style
        audio = await speak(srv, "It costs [gizmo](/ˈfaɪv ˈdɑlɚz/).")
        assert says(audio, "it costs five dollars", "it costs gizmo")


def longest_silence(audio: bytes, rate: int = RATE) -> float:
    """Seconds of the longest stretch of 10 ms windows quieter than -40 dBFS."""
    samples = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    window = rate // 100
    frames = samples[: len(samples) // window * window].reshape(-1, window)
    quiet = np.sqrt((frames**2).mean(axis=1)) < 327.0
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best / 100


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_break_is_heard_as_silence(server: LocalLMNTServer, version: str) -> None:
    plain = await speak(server, "Hello there. How are you?", version)
    paused = await speak(server, 'Hello there. <break time="1s"/> How are you?', version)
    short = await speak(server, 'Hello there. <break time="300ms"/> How are you?', version)
    # the 1 s break is real silence: a gap of about a second the plain text does not have
    assert longest_silence(paused) >= 0.9
    assert longest_silence(paused) > longest_silence(short) > longest_silence(plain)
    extra = (len(paused) - len(plain)) / 2 / RATE
    assert 0.8 <= extra <= 1.3
    assert says(paused, "hello there how are you", "hello there break time equals one s how")


async def test_http_speaks_through_the_frontend(server: LocalLMNTServer) -> None:
    import base64

    reply = await speak_http(server, "Welcome to **LMNT**.", return_durations=True)
    audio = base64.b64decode(reply["audio"])
    assert says(audio, "welcome to lament", "welcome to asterisk asterisk l m n t")
    assert [w["text"] for w in reply["durations"]] == ["Welcome", "to", "LMNT."]
