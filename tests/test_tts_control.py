"""Interrupts, failures and FallbackTTS, each with a time bound, against the real server."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from typing import Any

import pytest
from videosdk.agents.tts.fallback_tts import FallbackTTS

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import (
    LMNTTTS,
    LMNTAuthError,
    LMNTConnectionError,
    LMNTProtocolError,
    LMNTRateLimitError,
    LMNTServerError,
    LMNTTimeoutError,
)

from audio_helpers import active_span, estimate_pitch
from track_helpers import TRACK_RATE, Drain, FlushMarker, aiter_of, free_port, make_track, speak

LONG = "This sentence is long enough to keep the server busy for many seconds of audio. " * 3

# Orderings, not times (issue 21 item 14): a failure must end before the wait a defect would
# fall into, the plugin's default timeouts or the server's ``retry-after: 1``.
_DEFAULTS = inspect.signature(LMNTTTS).parameters
DEFAULT_CONNECT_TIMEOUT: float = _DEFAULTS["connect_timeout"].default  # 10 s
DEFAULT_RECEIVE_TIMEOUT: float = _DEFAULTS["receive_timeout"].default  # 5 s
RETRY_AFTER = 1.0  # the local server's retry-after on a 429


def _tts(url: str, **kw: Any) -> LMNTTTS:
    kw.setdefault("api_key", "test-key")
    return LMNTTTS(ws_url=url, **kw)


def _errors(tts: LMNTTTS) -> list[str]:
    seen: list[str] = []
    tts.on("error", lambda msg: seen.append(str(msg)))
    return seen


def assert_tone_span(pcm: bytes, text: str) -> None:
    """The tone lasts as long as the text, give or take the spaces between sentences: the server
    may speak a sentence as soon as it is complete, and then the 50 ms space is not spoken."""
    start, end = active_span(pcm, TRACK_RATE)
    joined = ToneEngine().duration_of(text)
    split = ToneEngine().duration_of(text.replace(". ", "."))
    assert split - 0.02 < end - start < joined + 0.02, (end - start, split, joined)


async def test_interrupt_stops_audio_at_once_and_next_turn_works(
    lmnt_server: LocalLMNTServer,
) -> None:
    lmnt_server.faults = Faults(pace=1.0)  # audio trickles in real time, so the turn is live
    track = make_track()  # no SpeechGeneration: the track accepts late bytes, so a leak shows
    tts = _tts(lmnt_server.ws_url)
    tts.audio_track = track
    errors = _errors(tts)
    try:
        started = time.monotonic()
        task = asyncio.create_task(tts.synthesize(LONG))
        async with asyncio.timeout(5):
            while track._cumulative_input_samples < TRACK_RATE // 4:
                await asyncio.sleep(0.005)
        t0 = time.monotonic()
        await tts.interrupt()
        pushed_at_interrupt = track._cumulative_input_samples
        await tts.interrupt()  # idempotent
        # The rest of the turn streams in real time: waiting for it would take this long.
        rest = ToneEngine().duration_of(LONG) - pushed_at_interrupt / TRACK_RATE
        async with asyncio.timeout(rest / 2):  # a hang guard: the ordering is asserted below
            await task
        returned_in = time.monotonic() - t0
        await asyncio.sleep(0.3)  # give late frames every chance to leak
        assert track._cumulative_input_samples == pushed_at_interrupt
        # An ordering: stopping the turn is quicker than starting it and playing its first
        # quarter second was (0.25 s of real-time audio at least).
        assert returned_in < t0 - started, (returned_in, t0 - started)
        record = next(s for s in lmnt_server.sessions if s.texts)  # not the warm spare
        async with asyncio.timeout(2):
            await record.done.wait()
        assert record.client_closed_early
        assert errors == []
        # The next turn is whole and clean.
        pcm = await speak(tts, "Next turn.")
        start, end = active_span(pcm, TRACK_RATE)
        assert abs((end - start) - ToneEngine().duration_of("Next turn.")) < 0.02
    finally:
        await tts.aclose()


async def test_interrupt_without_turn_or_track_is_harmless() -> None:
    tts = _tts("ws://127.0.0.1:9/x")
    await tts.interrupt()
    await tts.interrupt()
    await tts.aclose()
    await tts.aclose()


async def test_cancelled_synthesize_reraises_and_cleans_up(lmnt_server: LocalLMNTServer) -> None:
    lmnt_server.faults = Faults(pace=1.0)
    tts = _tts(lmnt_server.ws_url, warm_connection=False)
    tts.audio_track = make_track()
    task = asyncio.create_task(tts.synthesize(LONG))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert tts._pool.open_connections == 0
    await tts.aclose()


async def test_connection_refused_raises_fast() -> None:
    tts = _tts(
        f"ws://127.0.0.1:{free_port()}/v1/ai/speech/stream", max_retries=1, retry_backoff=0.01
    )
    tts.audio_track = make_track()
    errors = _errors(tts)
    t0 = time.monotonic()
    with pytest.raises(LMNTConnectionError, match="could not connect"):
        await tts.synthesize("Hello")
    # The refusal ended it, before the default 10 s connect timeout could have.
    assert time.monotonic() - t0 < DEFAULT_CONNECT_TIMEOUT
    assert len(errors) == 1 and "could not connect" in errors[0]
    await tts.aclose()


async def test_connect_timeout_is_bounded() -> None:
    # A listening socket that never accepts: the TCP handshake completes, the upgrade never does.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        tts = _tts(f"ws://127.0.0.1:{port}/x", connect_timeout=0.3)
        tts.audio_track = make_track()
        t0 = time.monotonic()
        with pytest.raises(LMNTTimeoutError, match="within 0.3 s"):
            await tts.synthesize("Hello")
        # The 0.3 s option bounded it, before the default 10 s connect timeout could have.
        assert time.monotonic() - t0 < DEFAULT_CONNECT_TIMEOUT
        await tts.aclose()


async def test_invalid_key_is_an_auth_error_before_any_text_is_lost() -> None:
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"the-good-key"}) as server:
        tts = _tts(server.ws_url, api_key="a-bad-key-1234")
        tts.audio_track = make_track()
        errors = _errors(tts)
        t0 = time.monotonic()
        with pytest.raises(LMNTAuthError, match="Invalid API key") as info:
            await tts.synthesize("Hello")
        # The server's refusal ended it, before the default 5 s receive timeout could have.
        assert time.monotonic() - t0 < DEFAULT_RECEIVE_TIMEOUT
        assert not info.value.retryable
        assert "a-bad-key-1234" not in str(info.value) and "a-bad-key-1234" not in errors[0]
        assert len(server.sessions) == 1  # permanent: not retried
        assert server.sessions[0].close_code == 1002
        await tts.aclose()


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, LMNTAuthError), (403, LMNTAuthError), (429, LMNTRateLimitError),
     (500, LMNTServerError)],
)  # fmt: skip
async def test_handshake_status(lmnt_server: LocalLMNTServer, status: int, kind: type) -> None:
    lmnt_server.faults = Faults(reject_handshake_status=status)
    tts = _tts(lmnt_server.ws_url, max_retries=1, retry_backoff=0.01)
    tts.audio_track = make_track()
    t0 = time.monotonic()
    with pytest.raises(kind, match=str(status)):
        await tts.synthesize("Hello")
    elapsed = time.monotonic() - t0
    # A 429's retry waits for the server's ``retry-after: 1`` (and only then): one such wait,
    # never two.  The other statuses fail at once: no retry-after wait, no 5 s receive timeout.
    if status == 429:
        assert RETRY_AFTER <= elapsed < 2 * RETRY_AFTER, elapsed
    else:
        assert elapsed < RETRY_AFTER, elapsed
    await tts.aclose()


async def test_transient_failure_is_retried_and_text_resent(lmnt_server: LocalLMNTServer) -> None:
    """The first connection is dropped before audio; the retry resends the text already pulled
    and the turn plays once, in full."""
    lmnt_server.faults = Faults(drop_before_audio=True)
    tts = _tts(lmnt_server.ws_url, retry_backoff=0.01, warm_connection=False)

    async def text() -> Any:
        yield "First sentence."
        lmnt_server.faults = Faults()  # heal the server once text was pulled
        await asyncio.sleep(0.05)
        yield "Second one."
        yield FlushMarker()

    try:
        pcm = await speak(tts, text())
    finally:
        await tts.aclose()
    assert_tone_span(pcm, "First sentence. Second one.")
    spoken = [s.text for s in lmnt_server.sessions if s.audio_bytes_sent]
    assert spoken == ["First sentence. Second one. "]  # each sentence ends with its space


async def test_silent_server_times_out(lmnt_server: LocalLMNTServer) -> None:
    lmnt_server.faults = Faults(hang_after_init=True)
    tts = _tts(lmnt_server.ws_url, receive_timeout=0.3, max_retries=0)
    tts.audio_track = make_track()
    t0 = time.monotonic()
    with pytest.raises(LMNTTimeoutError, match="sent nothing for 0.3 s"):
        await tts.synthesize("Hello")
    # The 0.3 s option bounded it, before the default 5 s receive timeout could have.
    assert time.monotonic() - t0 < DEFAULT_RECEIVE_TIMEOUT
    await tts.aclose()


async def test_error_after_audio_is_reported_not_raised(lmnt_server: LocalLMNTServer) -> None:
    lmnt_server.faults = Faults(error_after_bytes=(4000, "synthesis exploded"))
    track = make_track()
    tts = _tts(lmnt_server.ws_url)
    tts.audio_track = track
    errors = _errors(tts)
    try:
        async with asyncio.timeout(2):
            await tts.synthesize(LONG)
    finally:
        await tts.aclose()
    assert len(errors) == 1 and "synthesis exploded" in errors[0]
    assert track._cumulative_input_samples > 0
    assert len(track.audio_data_buffer) == 0  # ended on a whole frame


async def test_error_before_audio_raises(lmnt_server: LocalLMNTServer) -> None:
    lmnt_server.faults = Faults(error_before_audio="model overloaded")
    tts = _tts(lmnt_server.ws_url, max_retries=0)
    tts.audio_track = make_track()
    with pytest.raises(LMNTServerError, match="model overloaded"):
        async with asyncio.timeout(2):
            await tts.synthesize("Hello")
    await tts.aclose()


async def test_malformed_json_is_a_protocol_error(lmnt_server: LocalLMNTServer) -> None:
    lmnt_server.faults = Faults(malformed_json=True)
    tts = _tts(lmnt_server.ws_url)
    tts.audio_track = make_track()
    with pytest.raises(LMNTProtocolError, match="invalid JSON"):
        async with asyncio.timeout(2):
            await tts.synthesize("Hello")
    await tts.aclose()


async def test_fallback_tts_speaks_the_same_turn_once(lmnt_server: LocalLMNTServer) -> None:
    dead = _tts(f"ws://127.0.0.1:{free_port()}/v1/ai/speech/stream", max_retries=0)
    good = _tts(lmnt_server.ws_url)
    fallback = FallbackTTS([dead, good], temporary_disable_sec=60)
    text = aiter_of(["Sure.", "Here is the rest.", FlushMarker()])
    try:
        pcm = await speak(fallback, text)
    finally:
        await fallback.aclose()
        await dead.aclose()
        await good.aclose()
    spoken = [s.text for s in lmnt_server.sessions if s.text]
    assert spoken == ["Sure. Here is the rest. "]  # each sentence ends with its space
    assert_tone_span(pcm, "Sure. Here is the rest.")
    assert abs(estimate_pitch(pcm, TRACK_RATE) - 440) < 4.4


async def test_aclose_is_idempotent_and_releases_everything(lmnt_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_server.ws_url)
    tts.audio_track = make_track()
    await tts.prewarm()
    await tts.synthesize("Hello.")
    await tts.aclose()
    await tts.aclose()
    assert tts._pool.open_connections == 0
    # Usable again, as 1.0.30 was (the framework's change_pipeline closes, then re-attaches).
    await tts.synthesize("Hello again.")
    await tts.aclose()
    assert tts._pool.open_connections == 0
    assert [s.text for s in lmnt_server.sessions if s.texts] == ["Hello.", "Hello again."]


async def test_prewarm_never_raises_and_is_idempotent(lmnt_server: LocalLMNTServer) -> None:
    bad = _tts(f"ws://127.0.0.1:{free_port()}/x")
    await bad.prewarm()  # logged, not raised
    await bad.aclose()
    tts = _tts(lmnt_server.ws_url)
    await tts.prewarm()
    await tts.prewarm()
    await asyncio.sleep(0.05)
    assert len(lmnt_server.sessions) == 1
    tts.audio_track = make_track()
    drain = Drain(tts.audio_track)
    await tts.synthesize("Hello.")
    await drain.stop()
    assert lmnt_server.sessions[0].texts == ["Hello."]  # the turn used the warm connection
    await tts.aclose()
