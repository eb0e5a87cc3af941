"""Word timestamps: ``word_spoken`` fires when the listener hears the word, for every protocol.

The tone engine makes word timing exact: every non-space character is 50 ms of 440 Hz and every
space 50 ms of silence, so each word is one burst of tone after a gap.  The framework's real
``CustomAudioStreamTrack`` is played at its normal real-time pace by a ``Listener`` that pulls
frames like the WebRTC sender does and notes when each frame left and whether it carried tone.
A word is "heard" when the first loud frame after its gap leaves the track; its ``word_spoken``
event must come within 50 ms of that moment (a frame is 20 ms; the plugin polls every 10 ms).

Texts stay under 2 s of audio, so each test runs in real time in about 1-2 s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from videosdk.agents.room.output_stream import CustomAudioStreamTrack
from videosdk.agents.speech_generation import SpeechGeneration

from lmnt_local.server import Faults, LocalLMNTServer
from videosdk.plugins.lmnt import LMNTTTS

from track_helpers import FlushMarker, aiter_of, make_track, speak

pytestmark = pytest.mark.timeout(10)

VERSIONS = ["1.0", "1.1", "1.2"]
TOLERANCE = 0.05  # seconds between a word's first audible frame and its event
LOUD = 200  # a frame whose peak |sample| exceeds this carries tone (the tone peaks at 16383)


class Listener:
    """Plays a track in real time, recording ``(time it left, carried tone?)`` per frame."""

    def __init__(self, track: CustomAudioStreamTrack) -> None:
        self.track = track
        self.frames: list[tuple[float, bool]] = []
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            frame = await self.track.recv()  # paced: sleeps until the frame is due
            left = time.monotonic()
            peak = int(np.abs(frame.to_ndarray().astype(np.int32)).max())
            self.frames.append((left, peak > LOUD))

    def onsets(self, after: float = -math.inf, before: float = math.inf) -> list[float]:
        """When the first loud frame after each quiet stretch left the track."""
        out: list[float] = []
        quiet = True
        for left, loud in self.frames:
            if loud and quiet and after < left < before:
                out.append(left)
            quiet = not loud
        return out

    @property
    def idle(self) -> bool:
        return not self.track.frame_buffer

    async def stop(self) -> None:
        self._stop = True
        await asyncio.wait_for(self._task, 1)


class Words:
    """``word_spoken`` events as ``(time, word, cumulative_text)``."""

    def __init__(self, tts: LMNTTTS) -> None:
        self.events: list[tuple[float, str, str]] = []
        tts.on("word_spoken", self._on)

    def _on(self, data: dict[str, str]) -> None:
        assert set(data) == {"word", "cumulative_text"}
        self.events.append((time.monotonic(), data["word"], data["cumulative_text"]))

    def since(self, t: float) -> list[tuple[float, str, str]]:
        return [e for e in self.events if e[0] > t]


async def until(condition: Callable[[], bool], timeout: float = 4.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _tts(server: LocalLMNTServer, version: str, **kw: Any) -> LMNTTTS:
    return LMNTTTS(
        api_key="test-key",
        ws_url=server.ws_url,
        protocol_version=version,
        word_timestamps=True,
        **kw,
    )


def assert_heard_on_time(
    events: list[tuple[float, str, str]], onsets: list[float], text: str
) -> None:
    words = text.split()
    assert [w for _, w, _ in events] == words
    assert [c for _, _, c in events] == [" ".join(words[: i + 1]) for i in range(len(words))]
    assert len(onsets) == len(words), ("one burst of tone per word", onsets)
    late = [
        (word, round(t - onset, 3))
        for (t, word, _), onset in zip(events, onsets, strict=True)
        if abs(t - onset) > TOLERANCE
    ]
    assert late == [], "announced more than 50 ms away from the first frame of the word"


async def play_turn(
    tts: LMNTTTS, listener: Listener, words: Words, text: Any, expected: str
) -> tuple[float, list[tuple[float, str, str]]]:
    """One turn straight through the plugin; returns (when it began, its word events)."""
    began = time.monotonic()
    async with asyncio.timeout(4):
        await tts.synthesize(text)
    n = len(expected.split())
    await until(lambda: len(words.since(began)) >= n and listener.idle)
    await asyncio.sleep(0.1)  # the last frames leave; any stray event would show up
    return began, words.since(began)


@pytest.mark.parametrize("version", VERSIONS)
async def test_words_are_announced_as_they_are_heard(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    text = "Hi there big world. Yes."  # 24 characters: 1.2 s
    tts = _tts(lmnt_server, version)
    assert tts.supports_word_timestamps is True
    track = CustomAudioStreamTrack(asyncio.get_running_loop())  # normal real-time pacing
    tts.audio_track = track
    listener, words = Listener(track), Words(tts)
    try:
        began, events = await play_turn(tts, listener, words, text, text)
    finally:
        await listener.stop()
        await tts.aclose()
    assert_heard_on_time(events, listener.onsets(after=began), text)
    init = next(s for s in lmnt_server.sessions if s.texts).init
    if version == "1.0":
        assert init["return_extras"] is True and "return_timestamps" not in init
    else:
        assert init["return_timestamps"] is True and "return_extras" not in init


@pytest.mark.parametrize("version", VERSIONS)
async def test_timestamps_that_restart_after_a_flush_are_offset(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    """1.2 timings restart at 0 after every flush; the second segment must still be heard late."""
    items = ["Hi there.", FlushMarker(), "Big world now.", FlushMarker()]
    expected = "Hi there. Big world now."
    tts = _tts(lmnt_server, version)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    tts.audio_track = track
    listener, words = Listener(track), Words(tts)
    try:
        began, events = await play_turn(tts, listener, words, aiter_of(items), expected)
    finally:
        await listener.stop()
        await tts.aclose()
    assert_heard_on_time(events, listener.onsets(after=began), expected)
    record = next(s for s in lmnt_server.sessions if s.texts)
    assert record.commands[:4] == ["text", "flush", "text", "flush"]  # two segments really


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_turn_starts_afresh(lmnt_server: LocalLMNTServer, version: str) -> None:
    """Two turns straight through the plugin (no framework to reset it in between); typed
    versions run the second turn on the same, reused session."""
    tts = _tts(lmnt_server, version)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    tts.audio_track = track
    listener, words = Listener(track), Words(tts)
    try:
        began1, events1 = await play_turn(tts, listener, words, "One two.", "One two.")
        began2, events2 = await play_turn(tts, listener, words, "Three four.", "Three four.")
    finally:
        await listener.stop()
        await tts.aclose()
    assert_heard_on_time(events1, listener.onsets(after=began1, before=began2), "One two.")
    assert_heard_on_time(events2, listener.onsets(after=began2), "Three four.")
    if version != "1.0":
        assert len([s for s in lmnt_server.sessions if s.texts]) == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_speech_generation_interim_transcript(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    """The framework subscribes to ``word_spoken`` and keeps ``_tier2_spoken_transcript``; it
    must follow the words as heard and start empty every turn."""
    tts = _tts(lmnt_server, version)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    sg = SpeechGeneration(tts=tts)
    sg.set_audio_track(track)
    tts.loop = asyncio.get_running_loop()
    seen: list[tuple[str, str]] = []  # (cumulative_text, sg's interim transcript right then)
    tts.on(
        "word_spoken", lambda d: seen.append((d["cumulative_text"], sg._tier2_spoken_transcript))
    )
    listener, words = Listener(track), Words(tts)
    done = asyncio.Event()
    sg.on("last_audio_byte", lambda _=None: done.set())
    try:
        for text in ("Good morning.", "See you."):
            done.clear()
            seen.clear()
            began = time.monotonic()
            async with asyncio.timeout(4):
                await sg.synthesize(text)
                await done.wait()
            assert [interim for _, interim in seen] == [cumulative for cumulative, _ in seen]
            assert sg._tier2_spoken_transcript == text
            assert sg.compute_spoken_transcript() == text
            assert_heard_on_time(words.since(began), listener.onsets(after=began), text)
    finally:
        await listener.stop()
        await tts.aclose()


@pytest.mark.parametrize("version", VERSIONS)
async def test_interrupt_keeps_only_the_words_that_were_heard(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    """A barge-in through the framework: the transcript it stores is what was played."""
    lmnt_server.faults = Faults(pace=2.0)  # audio still streaming in when the user barges in
    text = "One two three four five six seven."  # 34 characters: 1.7 s
    tts = _tts(lmnt_server, version)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    sg = SpeechGeneration(tts=tts)
    sg.set_audio_track(track)
    tts.loop = asyncio.get_running_loop()
    listener, words = Listener(track), Words(tts)
    try:
        began = time.monotonic()
        speaking = asyncio.create_task(sg.synthesize(text))
        await until(lambda: len(words.events) >= 3)
        await asyncio.sleep(0.07)  # somewhere inside the fourth word or the gap before it
        interrupted_at = time.monotonic()
        await sg.interrupt()
        async with asyncio.timeout(1):
            await speaking
        await asyncio.sleep(0.6)  # longer than the framework's 0.4 s fade-out of the tail
    finally:
        await listener.stop()
        await tts.aclose()
    events = words.events
    assert [e for e in events if e[0] > interrupted_at] == [], "announced after the interrupt"
    spoken = events[-1][2]
    all_words = text.split()
    heard = spoken.split()
    assert 3 <= len(heard) < len(all_words)
    assert heard == all_words[: len(heard)]
    # The framework stores exactly the announced words as the interrupted reply.
    assert sg.spoken_transcript == spoken
    onsets = listener.onsets(after=began)
    # Every announced word had started playing (within a frame and the poll period) ...
    assert all(onsets[i] <= interrupted_at + TOLERANCE for i in range(len(heard)))
    # ... and every word that had clearly started playing was announced.
    started = [t for t in onsets if t < interrupted_at - TOLERANCE]
    assert len(heard) >= len(started)


async def test_off_by_default_and_nothing_is_requested(lmnt_server: LocalLMNTServer) -> None:
    tts = LMNTTTS(api_key="test-key", ws_url=lmnt_server.ws_url, protocol_version="1.2")
    assert tts.supports_word_timestamps is False
    words = Words(tts)
    try:
        await speak(tts, "Hi there.", track=make_track())
    finally:
        await tts.aclose()
    assert words.events == []
    init = next(s for s in lmnt_server.sessions if s.texts).init
    assert "return_timestamps" not in init and "return_extras" not in init


# -- where words are placed: exact on the stream's clock -------------------------------------

PLACEMENT_TEXT = ["Hi there big world.", FlushMarker(), "Yes, and then some more words here."]


@pytest.mark.parametrize(
    ("version", "fmt", "rate", "flushed"),
    [
        ("1.0", "pcm_s16le", 24000, False),
        ("1.1", "pcm_s16le", 24000, False),
        ("1.2", "pcm_s16le", 24000, True),
        ("1.2", "pcm_f32le", 8000, False),
        pytest.param("1.0", "pcm_s16le", 16000, False),
        pytest.param("1.1", "pcm_f32le", 8000, False),
        pytest.param("1.0", "ulaw", 8000, True),
        pytest.param("1.2", "pcm_s16le", 16000, True),
    ],
)
async def test_words_are_placed_exactly_on_the_stream_clock(
    lmnt_server: LocalLMNTServer,
    monkeypatch: pytest.MonkeyPatch,
    version: str,
    fmt: str,
    rate: int,
    flushed: bool,
) -> None:
    """The tone engine puts word *i* at exactly 50 ms x its character offset; the plugin must
    place it there (to the millisecond) on the turn's audio clock, whatever the wire rate and
    format, before it waits for playback to reach it.  Deterministic: no real-time track."""
    import re

    from videosdk.plugins.lmnt import words as words_module

    placed: list[Any] = []
    add = words_module.WordAnnouncer.add

    def recording_add(self: Any, timed: list[Any]) -> None:
        placed.extend(timed)
        add(self, timed)

    monkeypatch.setattr(words_module.WordAnnouncer, "add", recording_add)
    text = "Hi there big world. Yes, and then some more words here."
    items = PLACEMENT_TEXT if flushed else [text]
    tts = _tts(lmnt_server, version, format=fmt, sample_rate=rate)
    try:
        await speak(tts, aiter_of(items), track=make_track())
    finally:
        await tts.aclose()
    truth = [(m.group(0), m.start() * 0.05) for m in re.finditer(r"\S+", text)]
    assert [w.text for w in placed] == [word for word, _ in truth]
    off = [
        (w.text, round(1000 * (w.start - start)))
        for w, (_, start) in zip(placed, truth, strict=True)
    ]
    assert all(abs(ms) <= 2 for _, ms in off), off
