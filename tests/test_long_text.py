"""Long text (issue 11.1): a whole book chapter spoken through every entry point, and the send
path that makes that possible (coalescing, pacing, session budget, rate-limit retries).

The chapter is ``tests/data/acts-kjv.txt`` (130 000 characters of real prose; source and licence
in its header), more than the local server accepts in one session (100 000) and, sent one
message per sentence as before, far more than its 200 messages a second.  The tone engine runs
at 0.5 ms per character so an hour of "speech" is 65 s of audio whose length is exact:
``ToneEngine.duration_of`` of the text the server received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from videosdk.agents import Agent, AgentSession, Pipeline
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.protocol import ErrorFrame, split_complete_sentences
from lmnt_local.server import Faults, ServerConfig, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS, LMNTRateLimitError, LMNTServerError
from videosdk.plugins.lmnt.connection import error_from_frame
from videosdk.plugins.lmnt.sending import (
    MAX_MESSAGE_CHARS,
    SESSION_TEXT_BUDGET,
    SendPacer,
    TextCursor,
)
from videosdk.plugins.lmnt.testing import start_local_server

from track_helpers import TRACK_RATE, Drain, FlushMarker, aiter_of, make_track

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_FILE = ROOT / "tests" / "data" / "acts-kjv.txt"
FAST_TONE = ToneEngine(seconds_per_char=0.0005)
LIMIT = ServerConfig().max_text_chars  # the local server's per-session text limit
# Session records keep only 20 000 characters by default (bounded memory); these tests read
# back every word a session received, so its record keeps as much as a session may send.
# The tone engine hears the text as sent (no text front-end: verse numbers stay digits), so
# the audio's length says exactly which characters reached it.
RECORDING = ServerConfig(max_record_chars=LIMIT, text_frontend=False)
FLUSH = object()


def chapter() -> str:
    lines = [line for line in CHAPTER_FILE.read_text().splitlines(True) if not line.startswith("#")]
    return "".join(lines).strip()


def sentences(text: str) -> list[str]:
    """The chapter as the framework's sentence chunker streams it: stripped sentences."""
    done, rest = split_complete_sentences(text, keep_whitespace=False)
    return [s.strip() for s in done if s.strip()] + ([rest.strip()] if rest.strip() else [])


def words(text: str) -> list[str]:
    return text.split()


def _spoken_sessions(server: Any) -> list[Any]:
    return [s for s in server.sessions if s.texts]


def _assert_whole_chapter(server: Any, pcm_seconds: float, text: str, exact: bool = True) -> None:
    """Every word reached the server exactly once, no session over its limit, none refused, and
    the audio is the exact length of what was sent (plus at most the final frame's padding).

    ``exact=False``: the framework's text filter rewrote some of it on the way (it drops
    parentheses and spells out symbols), so only the start, the end and the size are compared.
    """
    spoken = _spoken_sessions(server)
    assert len(spoken) >= 2, "130 000 characters do not fit in one session"
    assert all(len(s.text) <= LIMIT for s in spoken), [len(s.text) for s in spoken]
    assert all(s.error is None for s in server.sessions), [s.error for s in server.sessions]
    sent = "".join(s.text for s in spoken)
    if exact:
        assert words(sent) == words(text)
    else:
        assert words(sent)[:20] == words(text)[:20] and words(sent)[-20:] == words(text)[-20:]
        assert abs(len(words(sent)) - len(words(text))) < 0.01 * len(words(text))
    expected = FAST_TONE.duration_of(sent)
    assert expected > 60
    # No padding between the sessions of a turn: one 20 ms frame at most, at its very end.
    assert -1e-6 < pcm_seconds - expected < 0.02 + 1e-6, (pcm_seconds, expected)


# -- the send path, piece by piece -----------------------------------------------------------


def test_cursor_coalesces_queued_items_into_bounded_messages() -> None:
    items: list[object] = ["One. ", "Two. ", "x" * 10, FLUSH, "Three."]
    cursor = TextCursor(items, FLUSH)
    assert cursor.take(12) == "One. Two. "  # "x"*10 would not fit: it starts the next message
    assert cursor.take(12) == "x" * 10
    assert cursor.take(12) is FLUSH
    assert cursor.take(12) == "Three."
    assert not cursor.pending() and cursor.take(12) == ""
    items.append(" Four.")  # the list is live: items that arrive later are read too
    assert cursor.pending() and cursor.take(12) == " Four."


def test_cursor_cuts_a_long_item_after_a_sentence_or_space_and_resumes() -> None:
    text = "Alpha beta. Gamma delta epsilon zeta eta theta."
    cursor = TextCursor([text], FLUSH)
    pieces = [str(cursor.take(20))]
    assert pieces[0] == "Alpha beta. "  # a sentence end in the window's second half wins
    mark = cursor.position
    pieces.append(str(cursor.take(20)))
    assert pieces[-1] == "Gamma delta epsilon "  # else the cut goes after the last space
    cursor.position = mark  # a message taken but not sent is put back
    assert cursor.take(20) == pieces[-1]
    while cursor.pending():
        pieces.append(str(cursor.take(20)))
    assert "".join(pieces) == text
    assert all(0 < len(p) <= 20 for p in pieces)
    assert TextCursor(["y" * 25], FLUSH).take(10) == "y" * 10  # no space: cut hard


async def test_pacer_keeps_every_one_second_window_under_its_bound() -> None:
    pacer = SendPacer(rate=100.0, burst=5)
    stamps = []
    async with asyncio.timeout(5):
        for _ in range(60):
            await pacer.take()
            stamps.append(time.monotonic())
    assert stamps[4] - stamps[0] < 0.05  # the burst goes at once
    assert stamps[-1] - stamps[0] >= (60 - 5) / 100 - 0.02  # then 100 a second, no faster
    # A sliding half-second window never holds more than burst + rate/2 messages.
    assert all(sum(1 for t in stamps if s <= t < s + 0.5) <= 5 + 50 + 1 for s in stamps)


def test_rate_limit_answers_are_a_typed_retryable_error() -> None:
    typed = ErrorFrame("too fast", type="rate_limit_error", request_id="req_1")
    legacy = ErrorFrame("rate limit exceeded")
    other = ErrorFrame("something broke", type="internal_server_error")
    for frame in (typed, legacy):
        err = error_from_frame(frame, "sk-key")
        assert isinstance(err, LMNTRateLimitError) and isinstance(err, LMNTServerError)
        assert err.retryable and err.retry_after >= 1.0
    assert not isinstance(error_from_frame(other, "sk-key"), LMNTRateLimitError)


# -- the chapter through the plugin, the framework and the CLI -------------------------------


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_chapter_through_synthesize_with_an_iterator_of_sentences(version: str) -> None:
    """Before: "rate limit exceeded" after 200 sentences.  1.2 also reuses its session across
    turns, so the budget carries over: a second turn goes on in a fresh session as needed."""
    text = chapter()
    assert len(text) >= 100_000
    server = await start_local_server(config=RECORDING, engine=FAST_TONE)
    tts = LMNTTTS(api_key="k", ws_url=server.ws_url, protocol_version=version, sample_rate=8000)
    track = make_track()
    tts.audio_track = track
    errors: list[Any] = []
    tts.on("error", lambda message: errors.append(message))
    drain = Drain(track)
    try:
        t0 = time.monotonic()
        async with asyncio.timeout(30):
            await tts.synthesize(aiter_of([*sentences(text), FlushMarker()]))
            while len(track.audio_data_buffer) or track.frame_buffer:
                await asyncio.sleep(0.01)
        elapsed = time.monotonic() - t0
    finally:
        pcm = await drain.stop()
        await tts.aclose()
        await server.stop()
    assert errors == []
    _assert_whole_chapter(server, len(pcm) / 2 / TRACK_RATE, text)
    # Coalesced: about one message per MAX_MESSAGE_CHARS, not one per sentence (1 400).
    messages = sum(s.commands.count("text") for s in server.sessions)
    assert messages <= len(text) // (MAX_MESSAGE_CHARS // 2), messages
    assert elapsed < 20


async def test_a_reused_session_moves_on_when_its_budget_is_spent() -> None:
    """Typed sessions serve many turns; their text adds up on the server's per-session count."""
    text = chapter()
    half = text[: text.rindex(". ", 0, SESSION_TEXT_BUDGET * 2 // 3) + 1]
    server = await start_local_server(config=RECORDING, engine=FAST_TONE)
    tts = LMNTTTS(api_key="k", ws_url=server.ws_url, protocol_version="1.1", sample_rate=8000)
    track = make_track()
    tts.audio_track = track
    drain = Drain(track)
    try:
        async with asyncio.timeout(30):
            for _ in range(2):
                await tts.synthesize(aiter_of([*sentences(half), FlushMarker()]))
    finally:
        await drain.stop()
        await tts.aclose()
        await server.stop()
    spoken = _spoken_sessions(server)
    assert len(spoken) == 2 and all(len(s.text) <= LIMIT for s in spoken)
    assert all(s.error is None for s in server.sessions)
    # Two turns in a row on one session: nothing between the first's end and the second's start.
    assert "".join("".join(s.text for s in spoken).split()) == "".join(words(half)) * 2


async def test_chapter_through_agent_session_say() -> None:
    """The framework's real ``AgentSession.say()`` from ``on_enter``: one 130 000-character
    string (before: one oversized message and a traceback out of ``on_enter``)."""
    text = chapter()
    loop = asyncio.get_running_loop()
    server = await start_local_server(config=RECORDING, engine=FAST_TONE)
    tts = LMNTTTS(api_key="k", ws_url=server.ws_url, sample_rate=8000)
    pipeline = Pipeline(tts=tts)
    track = CustomAudioStreamTrack(loop)
    pipeline._set_loop_and_audio_track(loop, track)  # what JobContext.connect() does
    track._start = 0.0
    track._speaking_grace_period = 0.0

    class Reader(Agent):  # type: ignore[misc]
        async def on_enter(self) -> None:
            await self.session.say(text)

        async def on_exit(self) -> None:
            pass

    session = AgentSession(agent=Reader(instructions="Read aloud."), pipeline=pipeline)
    errors: list[Any] = []
    tts.on("error", lambda message: errors.append(message))
    drain = Drain(track)
    try:
        async with asyncio.timeout(40):
            await session.start()  # on_enter: the chapter, played to its end
            while len(track.audio_data_buffer) >= track.chunk_size or track.frame_buffer:
                await asyncio.sleep(0.01)
    finally:
        pcm = await drain.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.close(), 5)
        await tts.aclose()
        await server.stop()
    assert errors == []
    _assert_whole_chapter(server, len(pcm) / 2 / TRACK_RATE, text, exact=False)


async def test_chapter_through_the_cli(tmp_path: Path) -> None:
    """``lmnt-local say`` as a user runs it (a fresh interpreter, the text on stdin), against a
    server on loopback; the WAV holds the whole chapter."""
    text = chapter()
    server = await start_local_server(config=RECORDING, engine=FAST_TONE)
    out = tmp_path / "chapter.wav"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMNT_")}
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lmnt_local.cli.app", "say", "--ws-url", server.ws_url,
            "--sample-rate", "8000", "-o", str(out),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(text.encode()), 45)
    finally:
        await server.stop()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "rate limit" not in stderr.decode()
    with wave.open(str(out), "rb") as w:
        seconds = w.getnframes() / w.getframerate()
    _assert_whole_chapter(server, seconds, text)


# -- rate limits from any LMNT-compatible server ----------------------------------------------


async def test_a_rate_limited_turn_is_retried_later_without_a_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that counts stricter than our pacing answers ``rate_limit_error``: the turn is
    retried after the back-off, and the text already pulled goes out coalesced and paced."""
    caplog.set_level(logging.WARNING, logger="videosdk.plugins.lmnt")
    error = json.dumps({"type": "error", "error": {"type": "rate_limit_error",
                                                    "message": "rate limit exceeded"}})  # fmt: skip
    server = await start_local_server(
        config=RECORDING,
        engine=FAST_TONE,
        faults=Faults(script=(error,), script_after="text", close_code=1008),
    )
    tts = LMNTTTS(api_key="k", ws_url=server.ws_url, protocol_version="1.1",
                  warm_connection=False, retry_backoff=0.01)  # fmt: skip
    track = make_track()
    tts.audio_track = track
    drain = Drain(track)
    text = sentences(chapter())[:300]

    async def heal() -> None:  # only the first session is refused
        while not (server.sessions and server.sessions[0].done.is_set()):
            await asyncio.sleep(0.005)
        server.faults = Faults()

    healer = asyncio.get_running_loop().create_task(heal())
    try:
        async with asyncio.timeout(20):
            await tts.synthesize(aiter_of([*text, FlushMarker()], delay=0.0005))
    finally:
        healer.cancel()
        await drain.stop()
        await tts.aclose()
        await server.stop()
    first, second = server.sessions[0], server.sessions[-1]
    assert len(server.sessions) == 2
    assert any("retrying (1/2) in 1.00 s" in r.getMessage() for r in caplog.records)
    assert second.started_at - first.started_at >= 1.0  # the back-off of a rate limit
    assert words(second.text) == words(" ".join(text))
    # Resent coalesced: a few large messages, not the 300 sentences the caller streamed.
    assert second.commands.count("text") <= len(second.text) // (MAX_MESSAGE_CHARS // 2) + 2


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
async def test_word_times_run_on_across_the_sessions_of_a_turn(
    version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn split over several sessions is one stream to the listener: word *i* is at
    exactly its character offset x the tone's time per character, in every session (1.2's
    cumulative timestamps restart with each session)."""
    import re

    from videosdk.plugins.lmnt import turn as turn_module
    from videosdk.plugins.lmnt import words as words_module

    monkeypatch.setattr(turn_module, "SESSION_TEXT_BUDGET", 300)  # many sessions, quickly
    monkeypatch.setattr(turn_module, "MAX_MESSAGE_CHARS", 100)
    placed: list[Any] = []
    add = words_module.WordAnnouncer.add

    def recording_add(self: Any, timed: list[Any]) -> None:
        placed.extend(timed)
        add(self, timed)

    monkeypatch.setattr(words_module.WordAnnouncer, "add", recording_add)
    items = sentences(chapter()[:2000])
    server = await start_local_server(config=RECORDING, engine=FAST_TONE)
    tts = LMNTTTS(api_key="k", ws_url=server.ws_url, protocol_version=version,
                  word_timestamps=True, sample_rate=16000)  # fmt: skip
    track = make_track()
    tts.audio_track = track
    drain = Drain(track)
    try:
        async with asyncio.timeout(20):
            await tts.synthesize(aiter_of([*items, FlushMarker()]))
    finally:
        await drain.stop()
        await tts.aclose()
        await server.stop()
    spoken = _spoken_sessions(server)
    assert len(spoken) >= 6 and all(len(s.text) <= 300 for s in spoken)
    sent = "".join(s.text for s in spoken)
    truth = [
        (m.group(0), m.start() * FAST_TONE.seconds_per_char) for m in re.finditer(r"\S+", sent)
    ]
    assert [w.text for w in placed] == [word for word, _ in truth]
    worst = max(abs(w.start - start) for w, (_, start) in zip(placed, truth, strict=True))
    assert worst < 0.001, worst
