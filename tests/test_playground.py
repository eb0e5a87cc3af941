"""The playground page at ``/``, in a real headless Chromium against the real local server.

The page is exercised the way a person uses it: it loads, lists the voices, speaks through the
typed WebSocket API, plays with Web Audio, highlights each word when the audio clock reaches
it, reports server errors, and works against a server that wants its own key.  What the page
claims is checked against what the server recorded and against the tone engine's exact PCM.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from lmnt_local.server import Faults, LocalLMNTServer, ServerConfig, ToneEngine
from videosdk.plugins.lmnt.testing import make_tls_contexts

from browser_helpers import chromium_page, find_chromium

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on this machine (apt-get install -y chromium; .ci/run installs it)",
)

TEXT = "one two three four"
KEY = "pg-secret-key-4711"


def _words_js() -> str:
    return (
        "[...document.querySelectorAll('#words .word')].map(e => ({text: e.textContent,"
        " start: Number(e.dataset.start), heardAt: e.dataset.heardAt === undefined ? null"
        " : Number(e.dataset.heardAt), heard: e.classList.contains('heard')}))"
    )


async def _speak(page: Any, text: str, state: str = "done", timeout: float = 15_000) -> None:
    await page.fill("#text", text)
    await page.click("#speak")
    ends = ", ".join(f"body[data-state={json.dumps(s)}]" for s in {state, "error"})
    await page.wait_for_selector(ends, state="attached", timeout=timeout)
    reached = await page.evaluate("document.body.dataset.state")
    assert reached == state, await page.inner_text("#error")


def _same_origin(urls: list[str], server: LocalLMNTServer) -> list[str]:
    """The URLs that left the server's origin (the page must work offline)."""
    hosts = (server.http_url + "/", server.ws_url)
    return [u for u in urls if not u.startswith(hosts) and not u.startswith("data:")]


# -- the route, over plain HTTP ----------------------------------------------------------------


async def test_page_and_assets_are_served_with_a_strict_policy(lmnt_server: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(lmnt_server.http_url + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        assert '<meta name="lmnt-key-required" content="false">' in page
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert not re.search(r"(src|href)=\"(https?:)?//", page), "nothing remote may load"
        for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
            async with http.get(f"{lmnt_server.http_url}/playground/{name}") as resp:
                assert resp.status == 200 and resp.content_type == kind
                body = await resp.text()
                assert not re.search(r"https?://(?!127\.0\.0\.1)", body)
        async with http.get(lmnt_server.http_url + "/playground/../app.py") as resp:
            assert resp.status == 404
        async with http.get(lmnt_server.http_url + "/playground/index.html") as resp:
            assert resp.status == 404


async def test_the_page_knows_when_a_server_wants_its_own_key() -> None:
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={KEY}) as srv:
        async with aiohttp.ClientSession() as http, http.get(srv.http_url + "/") as resp:
            page = await resp.text()
    assert '<meta name="lmnt-key-required" content="true">' in page
    assert KEY not in page


# -- in the browser --------------------------------------------------------------------------


@needs_chromium
async def test_speaks_plays_and_highlights_each_word_when_heard() -> None:
    engine = ToneEngine()
    async with (
        LocalLMNTServer(engine=engine) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        voices = await page.eval_on_selector_all(
            ".voice", "els => els.map(e => [e.dataset.voice, e.innerText])"
        )
        assert [v[0] for v in voices] == [v.id for v in engine.voices()]
        assert all(v.gender in text for v, (_, text) in zip(engine.voices(), voices, strict=True))
        await page.click('.voice[data-voice="morgan"]')
        await _speak(page, TEXT)

        # Words in order, each highlighted when the audio clock reached it, not on arrival:
        # the gaps between highlights follow the gaps between word starts.
        words = await page.evaluate(_words_js())
        assert [w["text"] for w in words] == TEXT.split()
        assert all(w["heard"] and w["heardAt"] is not None for w in words)
        heard = [w["heardAt"] - words[0]["heardAt"] for w in words]
        starts = [w["start"] - words[0]["start"] for w in words]
        assert heard == sorted(heard)
        assert max(abs(h - s) for h, s in zip(heard, starts, strict=True)) < 0.3, (heard, starts)
        assert heard[-1] > 0.4  # 0.7 s of speech between first and last word start

        ttfa = await page.inner_text("#ttfa")
        rtf = await page.inner_text("#rtf")
        assert re.fullmatch(r"\d+ ms", ttfa), ttfa
        assert 0 < float(rtf.split()[0]) < 1, rtf
        assert await page.inner_text("#duration") == f"{engine.duration_of(TEXT):.2f} s"

        # The typed API, with timestamps, as an agent would use it; the key masked on record.
        (session,) = srv.sessions
        assert session.version == "1.2" and session.init is not None
        assert session.init["return_timestamps"] is True
        assert session.init["voice"] == "morgan" and session.init["format"] == "pcm_s16le"
        assert session.text == TEXT and session.close_code == 1000

        # Download: a WAV with exactly the samples the engine made.
        async with page.expect_download() as info:
            await page.click("#download")
        download = await info.value
        assert download.suggested_filename == "lmnt-morgan-24000.wav"
        data = await _read(download)
        with wave.open(io.BytesIO(data)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
            pcm = wav.readframes(wav.getnframes())
        assert pcm == engine.render(TEXT, 24000)[0].tobytes()

        snippet = await page.inner_text("#snippet")
        assert 'voice="morgan"' in snippet and 'protocol_version="1.2"' in snippet
        assert f"LMNT_WS_URL={srv.ws_url}" in await page.inner_text("#snippet-env")
        assert log.errors == []
        assert _same_origin(log.requests, srv) == []


async def _read(download: Any) -> bytes:
    path = await download.path()
    return await asyncio.to_thread(Path(path).read_bytes)


class _Voice:
    """A voice as an engine that knows its language lists it (``language``, ISO 639-1)."""

    def __init__(self, voice_id: str, gender: str, language: str) -> None:
        self.id, self.gender, self.language = voice_id, gender, language

    def to_json(self) -> dict[str, object]:
        return {
            **{"id": self.id, "name": self.id.title(), "owner": "system", "state": "ready"},
            **{"type": "instant", "gender": self.gender, "language": self.language},
        }


class _LanguageToneEngine(ToneEngine):
    def voices(self) -> list[Any]:
        return [_Voice("hannah", "female", "de"), _Voice("tomas", "male", "es")]


@needs_chromium
async def test_ulaw_is_decoded_in_the_page_and_mp3_is_played_as_pcm() -> None:
    engine = _LanguageToneEngine()
    async with (
        LocalLMNTServer(engine=engine) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        labels = await page.eval_on_selector_all(".voice", "els => els.map(e => e.innerText)")
        assert [label.split("\n") for label in labels] == [
            ["Hannah", "female · de"],
            ["Tomas", "male · es"],
        ]
        await page.select_option("#format", "ulaw")
        await page.select_option("#rate", "8000")
        assert await page.is_hidden("#format-note")
        await _speak(page, "two words")
        samples = await page.evaluate("document.querySelector('#duration').textContent")
        assert samples == f"{engine.duration_of('two words'):.2f} s"
        async with page.expect_download() as info:
            await page.click("#download")
        with wave.open(io.BytesIO(await _read(await info.value))) as wav:
            assert wav.getframerate() == 8000
            got = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
        want = engine.render("two words", 8000)[0].astype(float)
        assert got.shape == want.shape  # the WAV header of the µ-law stream was not played
        assert np.corrcoef(got, want)[0, 1] > 0.99

        await page.select_option("#format", "mp3")
        note = await page.inner_text("#format-note")
        assert "pcm_s16le" in note and "mp3" in note
        assert 'format="mp3"' in await page.inner_text("#snippet")
        await page.fill("#speed", "1.5")
        await page.dispatch_event("#speed", "input")
        await page.fill("#text", "again")
        await page.press("#text", "Control+Enter")
        await page.wait_for_selector('body[data-state="done"]', state="attached", timeout=15_000)
        assert [s.init["format"] for s in srv.sessions if s.init] == ["ulaw", "pcm_s16le"]
        assert srv.sessions[1].init is not None and srv.sessions[1].init["speed"] == 1.5
        assert log.errors == []


@needs_chromium
async def test_a_server_error_is_reported_clearly() -> None:
    async with (
        LocalLMNTServer(engine=ToneEngine()) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        srv.faults = Faults(error_before_audio="the engine caught fire")
        await _speak(page, TEXT, state="error")
        message = await page.inner_text("#error")
        assert "the engine caught fire" in message and "internal_server_error" in message
        assert srv.sessions[0].request_id in message
        assert await page.is_visible("#error")
        assert log.errors == []

        # An error mid-stream: what was heard stays downloadable.
        srv.faults = Faults(error_after_bytes=(8192, "lost the plot"))
        await _speak(page, TEXT, state="error")
        assert "lost the plot" in await page.inner_text("#error")
        assert await page.is_enabled("#download")

        # The upgrade itself refused: the page says it could not connect.
        srv.faults = Faults(reject_handshake_status=503)
        await _speak(page, TEXT, state="error")
        log.errors.clear()  # the browser itself logs the refused upgrade
        assert "Could not open the WebSocket" in await page.inner_text("#error")

        # And the next turn works again, with the old error cleared.
        srv.faults = Faults()
        await _speak(page, "fine now")
        assert await page.is_hidden("#error")
        assert log.errors == []


@needs_chromium
async def test_a_server_that_requires_a_key_works_and_the_key_stays_in_the_tab() -> None:
    async with (
        LocalLMNTServer(engine=ToneEngine(), api_keys={KEY}) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector("text=accepts only its own API keys")
        assert await page.is_disabled("#speak")
        assert log.errors == []  # no request was made that had to fail

        await page.fill("#key", "wrong-key")
        await page.press("#key", "Enter")
        await page.wait_for_selector("text=refused this API key")
        assert await page.is_disabled("#speak")

        await page.fill("#key", KEY)
        await page.click("#use-key")
        await page.wait_for_selector(".voice")
        await _speak(page, "with a key")
        assert srv.sessions[-1].init is not None and srv.sessions[-1].init["X-API-Key"] == "***"
        assert srv.sessions[-1].close_code == 1000

        stored = await page.evaluate(
            "({session: {...sessionStorage}, local: localStorage.length, url: location.href})"
        )
        assert KEY in stored["session"].values() and stored["local"] == 0
        assert await page.context.cookies() == []
        assert all(KEY not in url for url in [*log.requests, stored["url"]])
        assert "LMNT_API_KEY=<your key>" in await page.inner_text("#snippet-env")
        assert KEY not in await page.inner_text("body")
        # Only the refused key produced a console error (the browser logs the 403 itself).
        assert all("403" in e for e in log.errors), log.errors


@needs_chromium
async def test_a_text_beyond_one_frame_is_sent_whole_and_stop_ends_the_turn() -> None:
    # 70,000 characters: more than the server takes in one message (64 KiB), so the page
    # must split it; 1 ms of tone per character keeps the audio small, and real-time pacing
    # keeps the server sending when Stop is pressed.
    text = " ".join(["word"] * 14_000)
    engine = ToneEngine(seconds_per_char=0.001)
    async with (
        # The record keeps every character (20 000 by default: bounded memory).
        LocalLMNTServer(
            engine=engine, faults=Faults(pace=1.0), config=ServerConfig(max_record_chars=80_000)
        ) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        await _speak(page, text, state="playing")
        await page.wait_for_selector(".word.heard")
        await page.click("#stop")
        await page.wait_for_selector('body[data-state="stopped"]', timeout=5000)
        heard = await page.locator(".word.heard").count()
        await asyncio.sleep(0.5)  # 0.5 s of playback would highlight ~100 more words
        assert await page.locator(".word.heard").count() == heard
        (session,) = srv.sessions
        await asyncio.wait_for(session.done.wait(), 5)
        assert session.text == text and len(session.texts) > 1
        assert session.closed_by == "client"
        assert await page.is_hidden("#error")
        assert await page.is_enabled("#download")
        assert log.errors == []


@needs_chromium
async def test_over_tls_the_page_speaks_over_wss() -> None:
    server_ctx, _ = make_tls_contexts()
    async with (
        LocalLMNTServer(engine=ToneEngine(), ssl_context=server_ctx) as srv,
        chromium_page(CHROMIUM or "", ignore_https_errors=True) as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        await _speak(page, "secure words")
        assert srv.ws_url.startswith("wss://")
        assert f"LMNT_WS_URL={srv.ws_url}" in await page.inner_text("#snippet-env")
        assert srv.ws_url in log.requests and srv.sessions[0].close_code == 1000
        assert log.errors == []


@needs_chromium
async def test_a_silent_server_is_reported_not_waited_on_forever() -> None:
    async with (
        LocalLMNTServer(engine=ToneEngine(), faults=Faults(hang_after_init=True)) as srv,
        chromium_page(CHROMIUM or "") as (page, log),
    ):
        await page.clock.install()  # the page's timers, so 10 s of silence take no 10 s
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        await page.fill("#text", TEXT)
        await page.click("#speak")
        await asyncio.wait_for(_first_session(srv), 5)
        await page.clock.fast_forward(5_000)
        assert await page.evaluate("document.body.dataset.state") == "connecting"
        await page.clock.fast_forward(6_000)
        await page.wait_for_selector('body[data-state="error"]', state="attached", timeout=5000)
        assert "sent nothing for 10 s" in await page.inner_text("#error")
        await asyncio.wait_for(srv.sessions[0].done.wait(), 5)
        assert srv.sessions[0].closed_by == "client"
        assert log.errors == []


async def _first_session(srv: LocalLMNTServer) -> None:
    while not srv.sessions or srv.sessions[0].init is None:
        await asyncio.sleep(0.02)


_OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5)
    .map(e => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${[...e.classList].join('.')}`
      + ` right=${Math.round(e.getBoundingClientRect().right)}`);
  return {width, scroll: document.documentElement.scrollWidth, wide};
}"""


@needs_chromium
async def test_fits_a_360_px_phone_screen_without_sideways_scrolling() -> None:
    """Issue 18: on a 360 px wide phone the page, its voices, controls, spoken words and
    metrics all fit the width; nothing needs a sideways scroll, before or after speaking."""
    long_word = "Supercalifragilisticexpialidocious-and-then-some-more-hyphenated-words"
    async with (
        LocalLMNTServer(engine=ToneEngine()) as srv,
        chromium_page(CHROMIUM or "", width=360, height=740) as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        before = await page.evaluate(_OVERFLOW_JS)
        await _speak(page, f"{TEXT} {long_word}.")
        after = await page.evaluate(_OVERFLOW_JS)
        await page.fill("#text", "")
        await page.click("#speak")  # an error state too, if the page shows one for no text
        error = await page.evaluate(_OVERFLOW_JS)
    for state in (before, after, error):
        assert state["width"] == 360
        assert state["scroll"] <= state["width"], state
        assert state["wide"] == [], state
    assert log.errors == []
