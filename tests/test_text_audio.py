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

from lmnt_local.server import LocalLMNTServer
from lmnt_local.server.config import ServerConfig

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


#: (written, meant, literal): written forms the normaliser says as meant.
NORMALISED_CASES = [
    (
        "The fee is $5.50.",
        "the fee is five dollars and fifty cents",
        "the fee is dollar five point five zero",
    ),
    (
        "We meet on 4/5/2026.",
        "we meet on april fifth twenty twenty six",
        "we meet on four slash five slash two thousand and twenty six",
    ),
    (
        "Call 555-123-4567.",
        "call five five five one two three four five six seven",
        "call five hundred fifty five minus one hundred twenty three minus four thousand five "
        "hundred sixty seven",
    ),
    (
        'Call <say-as interpret-as="telephone">911</say-as>.',
        "call nine one one",
        "call nine hundred and eleven",
    ),
]


@pytest.mark.parametrize(("written", "meant", "literal"), NORMALISED_CASES)
async def test_money_dates_and_phones_read_as_meant(
    server: LocalLMNTServer, written: str, meant: str, literal: str
) -> None:
    audio = await speak(server, written, "1.2")
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


async def test_a_price_is_one_timestamp_spanning_its_words(server: LocalLMNTServer) -> None:
    """ "$5.50" is one word from the start of "five" to the end of "cents": timed against the
    same sentence written out, which the voice says identically (seeded, no noise)."""

    async def timestamps(text: str) -> list[dict[str, Any]]:
        got = await stream(
            server.ws_url,
            text,
            sample_rate=RATE,
            seed=7,
            return_timestamps=True,
            **{"lmnt-version": "1.2"},
        )
        return [
            w for _, m in got.messages if m.get("type") == "timestamps" for w in m["timestamps"]
        ]

    written = await timestamps("It costs $5.50 today.")
    spelled = await timestamps("It costs five dollars and fifty cents today.")
    assert [w["text"] for w in written] == ["It", "costs", "$5.50", "today."]
    price = written[2]
    five, cents = spelled[2], spelled[6]
    assert (five["text"], cents["text"]) == ("five", "cents")
    frame = 0.02  # the timestamps are rounded to the millisecond; the voice is the same
    assert abs(price["start"] - five["start"]) < frame
    assert abs(price["start"] + price["duration"] - (cents["start"] + cents["duration"])) < frame
    assert written[3]["start"] >= price["start"] + price["duration"]


#: Typical agent sentences: (written, meant, literal as engines read it before the front-end).
AGENT_SENTENCES = [
    (
        "Your total is $42.50.",
        "your total is forty two dollars and fifty cents",
        "your total is dollar forty two point five zero",
    ),
    (
        "The fee is $5.50 per month.",
        "the fee is five dollars and fifty cents per month",
        "the fee is dollar five point five zero per month",
    ),
    (
        "That will be €20, please.",
        "that will be twenty euros please",
        "that will be euro twenty please",
    ),
    (
        "Shipping costs £7.99.",
        "shipping costs seven pounds and ninety nine pence",
        "shipping costs pound seven point nine nine",
    ),
    (
        "It costs $1.2M.",
        "it costs one point two million dollars",
        "it costs dollar one point two m",
    ),
    (
        "Your appointment is on 4/5/2026.",
        "your appointment is on april fifth twenty twenty six",
        "your appointment is on four slash five slash two thousand and twenty six",
    ),
    (
        "The order shipped on 2026-04-05.",
        "the order shipped on april fifth twenty twenty six",
        "the order shipped on two thousand and twenty six zero four zero five",
    ),
    (
        "Call us at 555-123-4567.",
        "call us at five five five one two three four five six seven",
        "call us at five hundred fifty five minus one hundred twenty three minus four thousand "
        "five hundred sixty seven",
    ),
    (
        "In an emergency, dial 911.",
        "in an emergency dial nine one one",
        "in an emergency dial nine hundred and eleven",
    ),
    (
        "Call 1-800-555-0199 any time.",
        "call one eight hundred five five five zero one nine nine any time",
        "call one minus eight hundred minus five hundred fifty five minus one hundred ninety "
        "nine any time",
    ),
    (
        "Your ZIP code is 94107.",
        "your zip code is nine four one zero seven",
        "your zip code is ninety four thousand one hundred and seven",
    ),
    ("It's 20°C outside.", "it's twenty degrees celsius outside", "it's twenty degrees c outside"),
    (
        "The package weighs 5 kg.",
        "the package weighs five kilograms",
        "the package weighs five k g",
    ),
    (
        "Delivery takes 2-3 days.",
        "delivery takes two to three days",
        "delivery takes two three days",
    ),
    (
        "Refunds take 5-7 business days.",
        "refunds take five to seven business days",
        "refunds take five seven business days",
    ),
    ("You are 3rd in line.", "you are third in line", "you are three r d in line"),
    (
        "The speed limit is 65 mph.",
        "the speed limit is sixty five miles per hour",
        "the speed limit is sixty five m p h",
    ),
    (
        "Your plan includes 50 GB of data.",
        "your plan includes fifty gigabytes of data",
        "your plan includes fifty g b of data",
    ),
    ("Henry VIII had six wives.", "henry the eighth had six wives", "henry v i i i had six wives"),
    (
        "World War II ended in 1945.",
        "world war two ended in nineteen forty five",
        "world war i i ended in one thousand nine hundred and forty five",
    ),
    (
        "Email help@example.com for support.",
        "email help at example dot com for support",
        "email help example com for support",
    ),
    (
        "We're **open** until nine today.",
        "we're open until nine today",
        "we're asterisk asterisk open asterisk asterisk until nine today",
    ),
    ("## Order summary\n", "order summary", "hash hash order summary"),
    ("* Two large pizzas\n", "two large pizzas", "asterisk two large pizzas"),
    (
        "Visit [our site](https://example.com) for details.",
        "visit our site for details",
        "visit our site h t t p s example dot com for details",
    ),
    ("Welcome to LMNT!", "welcome to lament", "welcome to l m n t"),
    (
        "Your total is **$42.50**.",
        "your total is forty two dollars and fifty cents",
        "your total is asterisk asterisk dollar forty two point five zero asterisk asterisk",
    ),
    (
        "The meeting is at 9:30pm.",
        "the meeting is at nine thirty p m",
        "the meeting is at nine colon thirty p m",
    ),
    (
        "Check-in opens at 14:05.",
        "check in opens at fourteen oh five",
        "check in opens at fourteen colon zero five",
    ),
    (
        "Your order #4521 has shipped.",
        "your order number four five two one has shipped",
        "your order hash four thousand five hundred and twenty one has shipped",
    ),
    (
        'Your code is <say-as interpret-as="characters">XJ9</say-as>.',
        "your code is x j nine",
        "your code is less than say as interpret as characters",
    ),
    (
        'Please hold. <break time="500ms"/> Thanks for waiting.',
        "please hold thanks for waiting",
        "please hold break time equals five hundred m s thanks",
    ),
]


@pytest.mark.slow
async def test_agent_sentences_are_said_as_meant(server: LocalLMNTServer) -> None:
    """The share of typical agent sentences said as meant (goal: 90 %), printed.

    Slow (about 40 s on a busy 2-core machine: 32 sentences, two alignments each); the
    categories it spans are in the default run through the cases above.
    """
    assert len(AGENT_SENTENCES) >= 30
    missed = []
    for written, meant, literal in AGENT_SENTENCES:
        audio = await speak(server, written)
        if not says(audio, meant, literal):
            missed.append(written)
    share = 1 - len(missed) / len(AGENT_SENTENCES)
    print(
        f"\nagent sentences said as meant: {share:.0%} of {len(AGENT_SENTENCES)}; missed: {missed}"
    )
    assert share >= 0.9, missed


@pytest.mark.parametrize("engine_fixture", ["piper_engine", "hibari_engine"])
async def test_each_neural_engine_reads_as_meant(
    request: pytest.FixtureRequest, engine_fixture: str, tmp_path: Path
) -> None:
    """The same front-end before both neural voices: markup, the lexicon's IPA (hibari takes it
    in misaki's notation, Piper as raw phonemes), LMNT, a price."""
    engine = request.getfixturevalue(engine_fixture)
    path = tmp_path / "lexicon.tsv"
    path.write_text("gizmo\t/ˈfaɪv ˈdɑlɚz/\n", encoding="utf-8")
    cases = [
        ("It costs gizmo.", "it costs five dollars", "it costs gizmo"),
        ("Welcome to LMNT.", "welcome to lament", "welcome to l m n t"),
        ("The fee is $5.50.", "the fee is five dollars and fifty cents",
         "the fee is dollar five point five zero"),
        ("The total is **two** items.", "the total is two items",
         "the total is asterisk asterisk two asterisk asterisk items"),
    ]  # fmt: skip
    async with LocalLMNTServer(engine, config=ServerConfig(lexicon=path)) as srv:
        for written, meant, literal in cases:
            audio = await speak(srv, written)
            assert says(audio, meant, literal), (engine_fixture, written)
