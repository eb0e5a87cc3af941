"""Warm connections: prewarm, one spare per turn, typed sessions reused, nothing leaked."""

from __future__ import annotations

import asyncio
import dataclasses

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS

from audio_helpers import active_span
from track_helpers import TRACK_RATE, Drain, make_track

TEXT = "Hello there."


def _tts(server: LocalLMNTServer, **kw: object) -> LMNTTTS:
    tts = LMNTTTS(api_key="test-key", ws_url=server.ws_url, **kw)  # type: ignore[arg-type]
    tts.audio_track = make_track()
    return tts


async def _turn(tts: LMNTTTS, text: str = TEXT, **kw: object) -> bytes:
    drain = Drain(tts.audio_track)
    async with asyncio.timeout(5):
        await tts.synthesize(text, **kw)
    await asyncio.sleep(0.02)
    return await drain.stop()


def _lmnt_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("lmnt-") and not t.done()]


async def test_legacy_turns_use_a_spare_opened_during_the_previous_turn(
    lmnt_server: LocalLMNTServer,
) -> None:
    tts = _tts(lmnt_server)
    await tts.prewarm()
    assert len(lmnt_server.sessions) == 1 and lmnt_server.sessions[0].texts == []
    for _ in range(3):
        await _turn(tts)
    spoken = [s for s in lmnt_server.sessions if s.texts]
    # Three turns, three connections that spoke, plus exactly one spare waiting: no turn paid
    # for a handshake of its own (the first used the prewarmed one).
    assert [s.text for s in spoken] == [TEXT] * 3
    assert len(lmnt_server.sessions) == 4
    assert lmnt_server.sessions[0] is spoken[0]
    await tts.aclose()
    assert tts._pool.open_connections == 0
    await asyncio.sleep(0.05)
    assert _lmnt_tasks() == []


async def test_spare_with_other_options_is_replaced_silently(lmnt_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_server)
    errors: list[str] = []
    tts.on("error", errors.append)
    await tts.prewarm()
    pcm = await _turn(tts, voice_id="morgan")  # per-call voice: the spare says "ava"
    assert errors == []
    assert active_span(pcm, TRACK_RATE)[1] > 0.5
    spoken = [s for s in lmnt_server.sessions if s.texts]
    assert spoken[0].init["voice"] == "morgan"
    assert lmnt_server.sessions[0].texts == []  # the mismatched spare was closed unused
    await tts.aclose()


async def test_dead_or_old_spare_costs_only_a_reconnect(lmnt_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_server)
    errors: list[str] = []
    tts.on("error", errors.append)
    await tts.prewarm()
    # The server drops every idle connection (a restart, an idle timeout...).
    await lmnt_server.stop()
    await lmnt_server.start()
    tts.ws_url = lmnt_server.ws_url  # 1.0.30 read ws_url at every turn: so do we
    await asyncio.sleep(0.05)
    pcm = await _turn(tts)
    assert errors == [] and active_span(pcm, TRACK_RATE)[1] > 0.5
    # An aged spare is not trusted either.
    tts._pool.settings = dataclasses.replace(tts._pool.settings, spare_max_age=0.01)
    await asyncio.sleep(0.05)
    pcm = await _turn(tts)
    assert errors == [] and active_span(pcm, TRACK_RATE)[1] > 0.5
    await tts.aclose()


async def test_typed_session_is_reused_across_turns(lmnt_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_server, protocol_version="1.2")
    await tts.prewarm()
    for _ in range(3):
        pcm = await _turn(tts)
        start, end = active_span(pcm, TRACK_RATE)
        assert abs((end - start) - ToneEngine().duration_of(TEXT)) < 0.02
    assert len(lmnt_server.sessions) == 1
    session = lmnt_server.sessions[0]
    assert session.texts == [TEXT] * 3
    assert "eof" not in session.commands and session.commands.count("flush") == 3
    await tts.aclose()


async def test_interrupt_in_a_reused_session_starts_a_fresh_one(
    lmnt_server: LocalLMNTServer,
) -> None:
    lmnt_server.faults = Faults(pace=1.0)
    tts = _tts(lmnt_server, protocol_version="1.2")
    task = asyncio.create_task(tts.synthesize("A long sentence that plays for a while. " * 2))
    async with asyncio.timeout(3):
        while tts.audio_track._cumulative_input_samples == 0:
            await asyncio.sleep(0.005)
    await tts.interrupt()
    async with asyncio.timeout(0.5):
        await task
    lmnt_server.faults = Faults()
    tail = Drain(tts.audio_track)  # the framework's own fade-out of the interrupted turn
    async with asyncio.timeout(2):
        while tts.audio_track.frame_buffer:
            await asyncio.sleep(0.005)
    await tail.stop()
    pcm = await _turn(tts)
    start, end = active_span(pcm, TRACK_RATE)
    assert abs((end - start) - ToneEngine().duration_of(TEXT)) < 0.02
    assert len(lmnt_server.sessions) >= 2
    await tts.aclose()


async def test_mp3_typed_sessions_end_per_turn(lmnt_server: LocalLMNTServer) -> None:
    """MP3 encoders hold their tail until the stream ends, so a reused session would lose it."""
    tts = _tts(lmnt_server, protocol_version="1.2", format="mp3", warm_connection=False)
    for _ in range(2):
        pcm = await _turn(tts)
        start, end = active_span(pcm, TRACK_RATE)
        assert abs((end - start) - ToneEngine().duration_of(TEXT)) < 0.02
    assert [s.commands[-1] for s in lmnt_server.sessions] == ["eof", "eof"]
    await tts.aclose()


async def test_prewarm_against_a_server_that_never_answers_is_bounded() -> None:
    import socket
    import time

    with socket.socket() as listener:  # accepts TCP, never answers the upgrade
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/ai/speech/stream"
        tts = LMNTTTS(api_key="test-key", ws_url=url, connect_timeout=30)
        tts.PREWARM_WAIT = 0.2
        t0 = time.monotonic()
        await tts.prewarm()
        assert time.monotonic() - t0 < 0.5
        await tts.aclose()
        await asyncio.sleep(0)
        assert _lmnt_tasks() == []
