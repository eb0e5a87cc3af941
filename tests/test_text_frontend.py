"""The text front-end without audio judgement: markup, lexicon, and the engine wrapper.

The tone engine makes the wrapper checkable to the sample: every character of the text the
engine is given lasts 50 ms, so durations say exactly what reached the engine, and the word
timings it yields can be compared with the caller's words.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lmnt_local.server import LocalLMNTServer
from lmnt_local.server.config import ServerConfig
from lmnt_local.server.engines import ToneEngine
from lmnt_local.server.engines.base import EngineChunk, WordTiming
from lmnt_local.server.text.frontend import Spoken, TextFrontEnd, prepare
from lmnt_local.server.text.lexicon import Lexicon, LexiconError, ipa_to_respelling
from lmnt_local.server.text.markup import (
    MAX_BREAK_SECONDS,
    Pause,
    looks_like_ssml,
    parse,
)

from neural_helpers import stream

pytestmark = pytest.mark.timeout(30)


def spoken(text: str, lexicon: Lexicon | None = None) -> str:
    """Everything the engine is asked to say, pauses as "|", spaces collapsed."""
    out = []
    for segment in prepare(text, lexicon=lexicon):
        out.append("|" if isinstance(segment, Pause) else segment.text)
    return " ".join(" ".join(out).split())


# -- Markdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("It is **two** items.", "It is two items."),
        ("It is __two__ items.", "It is two items."),
        ("An *important* and _subtle_ point.", "An important and subtle point."),
        ("***Very*** good ~~bad~~.", "Very good bad."),
        ("**Bold with _italic_ inside**.", "Bold with italic inside."),
        ("## Your order\n", "Your order."),
        ("- first item\n", "first item"),
        ("1. Open the app\n", "Open the app"),
        ("> quoted words\n", "quoted words"),
        ("See [the help page](https://example.com/help) now.", "See the help page now."),
        ("Look ![a cat](cat.png) here.", "Look a cat here."),
        ("Run `pip install` now.", "Run pip install now."),
        ("```python\n", ""),
        ("---\n", ""),
        ("| Item | Price |\n", "Item, Price"),
        ("|------|:-----:|\n", ""),
        ("Great job! 🎉👍", "Great job!"),
        ("**Note", "Note"),
        ("two**", "two"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("2 * 3 is six", "2 * 3 is six"),
        ("x < y and y > z", "x < y and y > z"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
    ],
)
def test_markdown_is_never_read(written: str, said: str) -> None:
    assert spoken(written) == said


# -- SSML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("<speak>Hello there.</speak>", "Hello there."),
        ('Wait <break time="500ms"/> now.', "Wait | now."),
        (
            'Call <say-as interpret-as="telephone">555-123-4567</say-as>.',
            "Call five five five, one two three, four five six seven .",
        ),
        ('Code <say-as interpret-as="characters">AB1</say-as>.', "Code A B one ."),
        ('<say-as interpret-as="spell-out">hey</say-as>', "H E Y"),
        ('On <say-as interpret-as="date" format="dmy">5/4/2026</say-as>', "On April 5th, 2026"),
        ('The <say-as interpret-as="ordinal">3</say-as> try', "The third try"),
        ('<say-as interpret-as="cardinal">1,234</say-as>', "one thousand two hundred thirty-four"),
        ('The <sub alias="World Wide Web">WWW</sub> grew.', "The World Wide Web grew."),
        ("<speak><emphasis>Really</emphasis> <mark name='x'/>yes</speak>", "Really yes"),
        ("<speak>a<desc>never said</desc>b</speak>", "ab"),
        ("<speak>AT&amp;T &lt;3</speak>", "AT&T <3"),
        ("Line one<br/>line two", "Line one line two"),
        ("<speak>Hello", "Hello"),  # the end tag comes in a later unit
        ("world.</speak>", "world."),
    ],
)
def test_ssml_subset(written: str, said: str) -> None:
    assert spoken(written) == said


def test_break_lengths() -> None:
    def pauses(text: str) -> list[float]:
        return [p.seconds for p in parse(text) if isinstance(p, Pause)]

    assert pauses('a <break time="1s"/> b') == [1.0]
    assert pauses('a <break time="250ms"/> b') == [0.25]
    assert pauses('a <break time="1.5s"/> b') == [1.5]
    assert pauses('a <break time="90s"/> b') == [MAX_BREAK_SECONDS]
    assert pauses('a <break strength="x-strong"/> b')[0] > pauses('a <break strength="weak"/>')[0]
    assert pauses("a <break/> b") == pauses('a <break time="nonsense"/> b') != []
    assert pauses('a <break strength="none"/> b') == []


def test_prosody_rate_splits_the_text() -> None:
    segments = prepare(
        '<prosody rate="slow">Slow words.</prosody> Normal. <prosody rate="150%">Quick.</prosody>'
    )
    rates = [s.rate for s in segments if isinstance(s, Spoken)]
    assert rates[0] < rates[1] == 1.0 < rates[2]


def test_phoneme_tag_reaches_an_engine_that_takes_ipa() -> None:
    segments = prepare(
        'Say <phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme>.',
        ipa=lambda ipa: f"[[{ipa}]]",
    )
    assert isinstance(segments[0], Spoken) and "[[təˈmɑːtoʊ]]" in segments[0].text


def test_ssml_is_recognised_only_by_tags() -> None:
    assert looks_like_ssml('<break time="1s"/>') and looks_like_ssml("<speak>x</speak>")
    assert not looks_like_ssml("if a < b and c > d") and not looks_like_ssml("I <3 it")


# -- lexicon ----------------------------------------------------------------------------------


def test_builtin_lmnt_is_said_lament() -> None:
    assert spoken("LMNT's voices, by LMNT.", Lexicon()) == "lament's voices, by lament."
    assert spoken("Ask lmnt.", Lexicon()) == "Ask lament."
    assert spoken("ELEMENTS and LMNTX", Lexicon()) == "ELEMENTS and LMNTX"


def test_lexicon_file(tmp_path: Path) -> None:
    path = tmp_path / "words.tsv"
    path.write_text(
        "# pronunciations\nUS\tyou ess\nnginx\tengine x\nNew York  the big apple\nNguyen\t/wɪn/\n",
        encoding="utf-8",
    )
    lexicon = Lexicon.load(path)
    assert len(lexicon) == 5  # four and the built-in LMNT
    # capitals: exact case only; lower case: any case; phrases across spaces
    assert spoken("US and us use Nginx in New  York.", lexicon) == (
        "you ess and us use engine x in the big apple."
    )
    assert spoken("Mr Nguyen", lexicon) == f"Mr {ipa_to_respelling('wɪn')}"


def test_inline_ipa() -> None:
    segments = prepare("A [word](/wɜːd/) here.", lexicon=Lexicon(), ipa=lambda p: f"[[{p}]]")
    assert isinstance(segments[0], Spoken) and segments[0].text == "A [[wɜːd]] here."
    assert spoken("A [word](/wɜːd/) here.", Lexicon()) == "A werd here."


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ("just-one-column\n", ":1: expected"),
        (b"\xff\xfe bad", "not UTF-8"),
    ],
)
def test_bad_lexicon_files_say_what_is_wrong(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "lexicon.tsv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(LexiconError, match=re.escape(problem)):
        Lexicon.load(path)
    with pytest.raises(LexiconError):
        LocalLMNTServer(ToneEngine(), config=ServerConfig(lexicon=path))


def test_ipa_respelling() -> None:
    assert ipa_to_respelling("ləˈmɛnt") == "luh-ment"
    assert ipa_to_respelling("ˈsiːkwəl") == "seekwuhl"


# -- the wrapper on the tone engine ----------------------------------------------------------


async def _speak(
    frontend: TextFrontEnd, text: str, rate: int = 8000
) -> tuple[float, list[WordTiming]]:
    samples = 0
    words: list[WordTiming] = []
    async for chunk in frontend.synthesize(text, voice="ava", language="en", sample_rate=rate):
        samples += len(chunk.pcm) // 2
        words.extend(chunk.words)
    return samples / rate, words


def _money(text: str, language: str = "en") -> object:
    """A stand-in normaliser that expands "$5.50" only (the real one is tested elsewhere)."""
    from lmnt_local.server.text.frontend import _Identity

    out, tokens = [], []
    for match in re.finditer(r"\S+", text):
        word = match.group(0)
        if word.startswith("$5.50"):
            tokens.append((match.start(), match.start() + 5, "five dollars and fifty cents"))
            out.append("five dollars and fifty cents" + word[5:])
        else:
            tokens.append((match.start(), match.end(), word))
            out.append(word)
    return _Identity(" ".join(out), tokens)


async def test_plain_text_reaches_the_engine_untouched() -> None:
    tone = ToneEngine()
    seconds, words = await _speak(TextFrontEnd(tone), "Hello there, world. ")
    assert seconds == pytest.approx(tone.duration_of("Hello there, world. "))
    assert [w.text for w in words] == ["Hello", "there,", "world."]


async def test_markup_is_not_given_to_the_engine() -> None:
    tone = ToneEngine()
    frontend = TextFrontEnd(tone)
    marked, _ = await _speak(frontend, "It is **two** `items`.")
    plain, _ = await _speak(frontend, "It is two items.")
    assert marked == pytest.approx(plain)


async def test_break_is_real_silence() -> None:
    frontend = TextFrontEnd(ToneEngine())
    with_break, words = await _speak(frontend, 'Hi <break time="1s"/> there')
    without, _ = await _speak(frontend, "Hi there")
    assert with_break - without == pytest.approx(1.0, abs=0.06)  # the tone keeps both spaces
    assert [w.text for w in words] == ["Hi", "there"]
    assert words[1].start - (words[0].start + words[0].duration) >= 1.0


async def test_a_normalised_word_is_one_timestamp() -> None:
    frontend = TextFrontEnd(ToneEngine(), normalizer=_money)  # type: ignore[arg-type]
    _, words = await _speak(frontend, "It costs **$5.50** today.")
    assert [w.text for w in words] == ["It", "costs", "$5.50", "today."]
    tone = ToneEngine()
    price = words[2]
    # "five dollars and fifty cents": 28 characters of tone from the start of "five"
    assert price.duration == pytest.approx(tone.duration_of("five dollars and fifty cents"))
    assert price.start == pytest.approx(tone.duration_of("It costs "))
    assert words[3].start == pytest.approx(price.start + price.duration + 0.05)


async def test_server_applies_the_frontend_on_every_api() -> None:
    tone = ToneEngine()
    async with LocalLMNTServer(tone) as srv:
        for version in ("1.0", "1.2"):
            got = await stream(srv.ws_url, "**two**", **{"lmnt-version": version})
            assert len(got.audio) / 2 / 24000 == pytest.approx(tone.duration_of("two"), abs=0.01)
        import aiohttp

        async with aiohttp.ClientSession() as session:
            body = {"text": "**two**", "voice": "ava", "format": "wav", "return_durations": True}
            async with session.post(
                f"{srv.http_url}/v1/ai/speech", json=body, headers={"X-API-Key": "k"}
            ) as response:
                reply = await response.json()
            assert [w["text"] for w in reply["durations"]] == ["two"]
            body = {
                "model": "tts-1",
                "input": "**two**",
                "voice": "alloy",
                "response_format": "pcm",
            }
            async with session.post(
                f"{srv.http_url}/v1/audio/speech", json=body, headers={"Authorization": "Bearer k"}
            ) as response:
                assert response.status == 200, await response.text()
                pcm = await response.read()
        # OpenAI's API too (24 kHz s16le)
        assert len(pcm) / 2 / 24000 == pytest.approx(tone.duration_of("two"), abs=0.01)
    async with LocalLMNTServer(tone, config=ServerConfig(text_frontend=False)) as srv:
        got = await stream(srv.ws_url, "**two**")
        assert len(got.audio) / 2 / 24000 == pytest.approx(tone.duration_of("**two**"), abs=0.01)


async def test_frontend_passes_engine_attributes() -> None:
    tone = ToneEngine()
    frontend = TextFrontEnd(tone)
    assert frontend.name == "tone" and frontend.duration_of("ab") == tone.duration_of("ab")
    assert frontend.voices() == tone.voices()
    await asyncio.sleep(0)


async def test_espeak_hears_no_markup_and_takes_breaks() -> None:
    """espeak-ng is deterministic: the marked-up text gives exactly the plain text's audio."""
    from lmnt_local.server.engines.espeak import EspeakEngine

    if not EspeakEngine.available():
        pytest.skip("espeak-ng is not installed")
    frontend = TextFrontEnd(EspeakEngine())
    marked, words = await _speak(frontend, "It is **two** `items`.", rate=16000)
    plain, _ = await _speak(frontend, "It is two items.", rate=16000)
    assert marked == pytest.approx(plain, abs=0.001)
    assert [w.text for w in words] == ["It", "is", "two", "items."]
    raw, _ = await _speak(frontend, "Wait for it.", rate=16000)
    paused, _ = await _speak(frontend, 'Wait <break time="1s"/> for it.', rate=16000)
    assert 0.9 <= paused - raw <= 1.3


# -- serve --lexicon ---------------------------------------------------------------------------


def test_serve_refuses_a_bad_lexicon_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmnt_local.cli.app import main

    missing = tmp_path / "missing.tsv"
    assert main(["serve", "--port", "0", "--engine", "tone", "--lexicon", str(missing)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("lmnt-local: --lexicon: ") and "does not exist" in line


def test_serve_speaks_with_the_lexicon_file(tmp_path: Path) -> None:
    """``serve --lexicon``: the tone engine hears the respelling (its audio is 50 ms a letter)."""
    import json
    import subprocess
    import sys
    import urllib.request

    from env_helpers import subprocess_env

    lexicon = tmp_path / "words.tsv"
    lexicon.write_text("SQL\tsequel\n", encoding="utf-8")
    argv = [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--port", "0"]
    argv += ["--engine", "tone", "--lexicon", str(lexicon)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("LMNT-compatible server on "), first
        http = "http" + first.split()[-1].removeprefix("ws").split("/v1/", 1)[0]
        request = urllib.request.Request(
            f"{http}/v1/ai/speech",
            data=json.dumps(
                {"text": "SQL", "voice": "ava", "format": "wav", "return_durations": True}
            ).encode(),
            headers={"X-API-Key": "k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
    finally:
        proc.kill()
        proc.wait(5)
    [word] = reply["durations"]
    assert word["text"] == "SQL"
    assert word["duration"] == pytest.approx(ToneEngine().duration_of("sequel"), abs=0.01)


async def test_espeak_takes_ipa_as_phonemes() -> None:
    """A lexicon's IPA reaches espeak-ng as phonemes: "gizmo" said /ˈfaɪv ˈdɑlɚz/ sounds as
    long as "five dollars" (a respelling "fuhyv-dahlerz" would not), timed as the caller's word."""
    from lmnt_local.server.engines.espeak import EspeakEngine

    if not EspeakEngine.available():
        pytest.skip("espeak-ng is not installed")
    frontend = TextFrontEnd(EspeakEngine(), lexicon=Lexicon({"gizmo": "/ˈfaɪv ˈdɑlɚz/"}))
    said, words = await _speak(frontend, "It costs gizmo.", rate=16000)
    spelled, _ = await _speak(frontend, "It costs five dollars.", rate=16000)
    literal, _ = await _speak(TextFrontEnd(EspeakEngine()), "It costs gizmo.", rate=16000)
    assert abs(said - spelled) < 0.2 * abs(literal - spelled) or said == pytest.approx(spelled)
    assert [w.text for w in words] == ["It", "costs", "gizmo."]


# -- any text: no crash, words in order --------------------------------------------------------

_MARKUP_ALPHABET = "ab 5$.,*_`#[]()/<>\"'=&;|~!\n-:%" + "é🎉"
_PIECES = [
    "<speak>",
    "</speak>",
    '<break time="1s"/>',
    "<say-as interpret-as='telephone'>",
    "</say-as>",
    '<sub alias="x">',
    "</sub>",
    '<phoneme ph="ˈfaɪv">',
    "</phoneme>",
    '<prosody rate="slow">',
    "</prosody>",
    "**",
    "[w](/ˈa/)",
    "$5.50",
    "LMNT",
    "&amp;",
]


def test_any_text_is_prepared_without_error() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.lists(
        st.one_of(st.sampled_from(_PIECES), st.text(_MARKUP_ALPHABET, max_size=8)), max_size=12
    ).map("".join)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(text)
    def check(written: str) -> None:
        segments = prepare(written, lexicon=Lexicon(), ipa=lambda p: f"[[{p}]]")
        for segment in segments:
            if isinstance(segment, Pause):
                assert 0 < segment.seconds <= MAX_BREAK_SECONDS
            else:
                for a, b, c, d in segment.words:
                    assert 0 <= a < b <= len(segment.text) and 0 <= c <= d <= len(written)

    check()


async def test_any_text_gives_ordered_caller_words() -> None:
    import random

    rng = random.Random(20)
    frontend = TextFrontEnd(ToneEngine(seconds_per_char=0.001))
    for _ in range(100):
        written = "".join(rng.choice([*_PIECES, "word ", "12 ", ". "]) for _ in range(10))
        _, words = await _speak(frontend, written)
        starts = [w.start for w in words]
        assert starts == sorted(starts), written
        assert all(w.text and w.duration >= 0 for w in words), written


async def _stream_pieces(url: str, pieces: list[str]) -> tuple[float, list[str]]:
    """Legacy session: each piece its own text message, then eof; (audio seconds, words)."""
    import json

    import aiohttp

    init = {"X-API-Key": "k", "voice": "ava", "format": "pcm_s16le", "sample_rate": 8000}
    samples, words = 0, []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps({**init, "return_extras": True}))
        for piece in pieces:
            await ws.send_str(json.dumps({"text": piece}))
        await ws.send_str(json.dumps({"eof": True}))
        async with asyncio.timeout(10):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    samples += len(msg.data) // 2
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    words += [w["text"] for w in json.loads(msg.data).get("durations", [])]
    return samples / 8000, words


@pytest.mark.parametrize(
    ("pieces", "words"),
    [
        (["It costs $5.", "50 today."], ["It", "costs", "$5.50", "today."]),
        (["It is **", "two** ok."], ["It", "is", "two", "ok."]),
        (["Wait <brea", 'k time="1s"/> now.'], ["Wait", "now."]),
    ],
)
async def test_a_token_split_across_messages_is_read_whole(
    pieces: list[str], words: list[str]
) -> None:
    """Markup and written forms cut between messages sound and are timed as if sent whole."""
    async with LocalLMNTServer(ToneEngine()) as srv:
        split = await _stream_pieces(srv.ws_url, pieces)
        whole = await _stream_pieces(srv.ws_url, ["".join(pieces)])
    assert split == whole
    assert split[1] == words


class _Counting:
    """The tone engine, noting when a synthesis is closed (a reset must stop it at once)."""

    def __init__(self) -> None:
        self._tone = ToneEngine()
        self.name = "counting"
        self.voices = self._tone.voices
        self.has_voice = self._tone.has_voice
        self.closed = 0

    async def synthesize(self, text: str, **kwargs: Any) -> AsyncIterator[EngineChunk]:
        try:
            async for chunk in self._tone.synthesize(text, **kwargs):
                yield chunk
        finally:
            self.closed += 1


@pytest.mark.parametrize("text", ["plain words here", "**marked** words here"])
async def test_closing_the_frontend_closes_the_engine_at_once(text: str) -> None:
    engine = _Counting()
    frontend = TextFrontEnd(engine)  # type: ignore[arg-type]
    chunks = frontend.synthesize(text, voice="ava", language="en", sample_rate=8000)
    await anext(chunks)
    await chunks.aclose()  # type: ignore[attr-defined]
    assert engine.closed == 1


@pytest.mark.parametrize(
    ("module", "cls", "said"),
    [
        ("lmnt_local.server.engines.piper", "PiperEngine", "[[ˈfaɪv]] [[ˈdɑlɚz]]"),
        ("lmnt_local.server.engines.espeak", "EspeakEngine", "[['faIv]] [['dA:l3z]]"),
        ("lmnt_local.server.engines.hibari", "HibariEngine", "[w](/fˈIv/) [w](/dˈɑləɹz/)"),
    ],
)
def test_engines_take_ipa_in_their_own_notation(module: str, cls: str, said: str) -> None:
    """The lexicon's IPA reaches each engine as phonemes it reads (one block per word)."""
    import importlib

    try:
        engine_class = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        pytest.skip(f"{cls} is not installed: {exc}")
    segments = prepare(
        "It costs gizmo.",
        lexicon=Lexicon({"gizmo": "/ˈfaɪv ˈdɑlɚz/"}),
        ipa=engine_class.phoneme_markup,
    )
    assert isinstance(segments[0], Spoken) and segments[0].text == f"It costs {said}."


def test_behind_the_router_each_voice_gets_its_own_engines_ipa() -> None:
    """``auto`` is a router: ava speaks with hibari and morgan with Piper, and the lexicon's IPA
    must reach each in the notation of the engine that speaks it (not a respelling)."""
    pytest.importorskip("hibari")
    pytest.importorskip("piper")
    from lmnt_local.server.engines.hibari import HibariEngine
    from lmnt_local.server.engines.piper import PiperEngine
    from lmnt_local.server.engines.router import RouterEngine

    front = TextFrontEnd(
        RouterEngine([HibariEngine(), PiperEngine()]),
        lexicon=Lexicon({"gizmo": "/ˈfaɪv ˈdɑlɚz/"}),
    )
    said = {
        voice: front.prepare("It costs gizmo.", "en", voice=voice)[0] for voice in ("ava", "morgan")
    }
    assert isinstance(said["ava"], Spoken) and isinstance(said["morgan"], Spoken)
    assert said["ava"].text == "It costs [w](/fˈIv/) [w](/dˈɑləɹz/)."
    assert said["morgan"].text == "It costs [[ˈfaɪv]] [[ˈdɑlɚz]]."
