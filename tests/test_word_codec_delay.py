"""``word_spoken`` for compressed formats: words are placed where the listener hears them
(issue 22 item 6).

MP3 and WebM audio reaches the track later than the stream time the server's word timings
count from: the encoder's priming and the decoder's own delay come first.  The tone engine
makes every word a burst of tone after 50 ms of silence, so each word's true position in the
audio that was played is measurable; the plugin's placement of each word (seconds of the
turn's audio) must be within 20 ms of it, for every format and protocol.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from lmnt_local.server import LocalLMNTServer
from videosdk.plugins.lmnt import LMNTTTS

from track_helpers import TRACK_RATE, aiter_of, make_track, speak

TEXT = "Hi there big world. Yes, and then some more words here."
TOLERANCE = 0.020
# Legacy extras and 1.1 timestamps time words from the start of each wire frame: the server
# must time an encoded frame by the audio its bytes carry, not by the audio fed to the encoder,
# which holds some back (that put later frames 30-60 ms late and their words that much early).


def _onsets(pcm: bytes) -> list[float]:
    """Seconds at which each burst of tone starts (after at least 30 ms of quiet)."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float64))
    win = TRACK_RATE // 500  # 2 ms
    env = np.convolve(x, np.ones(win) / win, "same")
    loud = env > 0.25 * env.max()
    out: list[float] = []
    quiet_for = 10**9
    for i, on in enumerate(loud):
        if on:
            if quiet_for >= 0.030 * TRACK_RATE:
                out.append(i / TRACK_RATE)
            quiet_for = 0
        else:
            quiet_for += 1
    return out


def _assert_placed_where_heard(placed: list[Any], pcm: bytes, text: str) -> None:
    """Every word of ``text`` placed, in order, within TOLERANCE of its onset in the audio."""
    words = re.findall(r"\S+", text)
    assert [w.text for w in placed] == words
    heard = _onsets(pcm)
    assert len(heard) == len(words), heard
    off = [
        (w.text, round(1000 * (w.start - at)))
        for w, at in zip(placed, heard, strict=True)
        if abs(w.start - at) > TOLERANCE
    ]
    assert off == [], f"placed (ms) away from where the word is heard: {off}"


@pytest.mark.parametrize(
    ("version", "fmt", "rate"),
    [
        ("1.0", "mp3", 24000),
        ("1.1", "mp3", 16000),
        ("1.2", "mp3", 8000),
        ("1.2", "mp3", 24000),
        ("1.0", "webm", 24000),
        ("1.1", "webm", 24000),
        ("1.2", "webm", 16000),
        ("1.2", "webm", 24000),
        ("1.0", "pcm_s16le", 24000),
        ("1.2", "ulaw", 8000),
    ],
)
async def test_words_are_placed_where_they_are_heard(
    lmnt_server: LocalLMNTServer,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    fmt: str,
    rate: int,
) -> None:
    from videosdk.plugins.lmnt import words as words_module

    placed: list[Any] = []
    add = words_module.WordAnnouncer.add

    def recording_add(self: Any, timed: list[Any]) -> None:
        placed.extend(timed)
        add(self, timed)

    monkeypatch.setattr(words_module.WordAnnouncer, "add", recording_add)
    tts = LMNTTTS(
        api_key="test-key",
        ws_url=lmnt_server.ws_url,
        protocol_version=version,
        word_timestamps=True,
        format=fmt,
        sample_rate=rate,
    )
    try:
        pcm = await speak(tts, aiter_of([TEXT]), track=make_track())
    finally:
        await tts.aclose()
    _assert_placed_where_heard(placed, pcm, TEXT)


@pytest.mark.parametrize(
    ("version", "fmt", "rate"),
    [
        ("1.0", "mp3", 24000),
        ("1.1", "webm", 24000),
        ("1.2", "mp3", 8000),
        ("1.2", "mp3", 24000),
        ("1.2", "webm", 24000),
        ("1.2", "pcm_s16le", 24000),
    ],
)
async def test_words_after_a_flush_are_placed_where_they_are_heard(
    lmnt_server: LocalLMNTServer, version: str, fmt: str, rate: int
) -> None:
    """A flush mid-stream: the codec's held-back tail goes out, padded with silence, and 1.2
    timings restart from where the next audio starts (a frame behind the audio fed for MP3)."""
    import json

    import aiohttp

    from lmnt_local.protocol import WordSpan
    from videosdk.plugins.lmnt.audio import AudioPipeline
    from videosdk.plugins.lmnt.words import WordTimeline

    typed = version != "1.0"
    init: dict[str, Any] = {
        "X-API-Key": "test-key",
        "voice": "leah",
        "format": fmt,
        "sample_rate": rate,
        "lmnt-version": version,
        ("return_timestamps" if typed else "return_extras"): True,
    }
    first, second = "Hi there big world. ", "Yes, and then some more words here."
    if typed:
        commands: list[dict[str, Any]] = [
            {"type": "text", "text": first},
            {"type": "flush", "nonce": 1},
            {"type": "text", "text": second},
            {"type": "finish"},
        ]
    else:
        commands = [{"text": first}, {"flush": True}, {"text": second}, {"eof": True}]
    pipeline = AudioPipeline(fmt, rate, TRACK_RATE)
    timeline = WordTimeline(version)
    timeline.delay = pipeline.codec_delay
    placed: list[Any] = []
    pcm = b""
    async with aiohttp.ClientSession() as http, http.ws_connect(lmnt_server.ws_url) as ws:
        await ws.send_str(json.dumps(init))
        for command in commands:
            await ws.send_str(json.dumps(command))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                received, decoded = pipeline.seconds_received, pipeline.seconds_decoded
                pcm += await pipeline.afeed(msg.data)
                timeline.delay = pipeline.codec_delay
                now = pipeline.seconds_received
                if now is not None:
                    timeline.audio_span(received or 0.0, now)
                else:
                    timeline.audio(pipeline.seconds_decoded - decoded)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                m = json.loads(msg.data)
                items = m.get("timestamps") if typed else m.get("durations")
                if items:
                    spans = [WordSpan(x["text"], x["start"], x["duration"]) for x in items]
                    placed += timeline.timestamps(spans) if typed else timeline.extras(spans)
                if m.get("type") == "flush_complete":
                    timeline.segment_boundary()
        pcm += await pipeline.aflush()
    _assert_placed_where_heard(placed, pcm, first + second)
