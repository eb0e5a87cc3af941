"""Connection lifecycle under the framework's real calls (issue 10 items 2, 8, 9, 10).

Each test reproduces what a real agent does (``prewarm`` at session start, ``aclose`` on a
hang-up, a warm spare the server drops while idle, ``change_pipeline`` with the same instance)
against real sockets on loopback: the package's local server with its fault injection, or a
"black hole" TCP listener that accepts and never answers (a server that is up but stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

from videosdk.plugins.lmnt import LMNTTTS, LMNTAuthError, LMNTTimeoutError
from videosdk.plugins.lmnt.server import Faults, LocalLMNTServer

from track_helpers import make_track, speak

pytestmark = pytest.mark.timeout(60)

KEY = "lifecycle-test-key-0001"


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A ws:// URL whose TCP connect succeeds and whose upgrade is never answered."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/ai/speech/stream"
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# -- item 8: prewarm() overlapped by aclose() ---------------------------------------------------


async def test_prewarm_never_raises_when_aclose_overlaps_it() -> None:
    """A hang-up during session start: prewarm() is documented never to raise."""
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=5)
        warming = asyncio.create_task(tts.prewarm())
        await asyncio.sleep(0.2)  # the spare is mid-handshake
        t0 = time.monotonic()
        await tts.aclose()
        await asyncio.wait_for(warming, 3)  # returns normally: no CancelledError
        assert time.monotonic() - t0 < 2.0
        assert warming.exception() is None


async def test_prewarm_still_propagates_its_own_cancellation() -> None:
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=5)
        warming = asyncio.create_task(tts.prewarm())
        await asyncio.sleep(0.2)
        warming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await warming
        await tts.aclose()


# -- item 9: one connect_timeout bounds a turn, spare or not -----------------------------------


async def test_a_turn_waiting_for_a_connecting_spare_fails_within_connect_timeout() -> None:
    connect_timeout = 2.0
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=connect_timeout, max_retries=2)
        tts.PREWARM_WAIT = 0.2  # the session starts while the spare is still connecting
        tts.audio_track = make_track()
        try:
            await tts.prewarm()
            t0 = time.monotonic()
            with pytest.raises(LMNTTimeoutError, match="within 2 s"):
                await tts.synthesize("Hello there.")
            elapsed = time.monotonic() - t0
        finally:
            await tts.aclose()
    # Before the fix: the rest of the spare's budget, then a fresh full one (~3.8 s here).
    assert elapsed < connect_timeout + 0.8, elapsed


# -- item 10: an error frame on the idle spare ---------------------------------------------------


def _idle_notice(version: str, message: str, error_type: str) -> Faults:
    """The server says something about the idle connection, then closes it."""
    if version == "1.0":
        frame = json.dumps({"error": message})
    else:
        frame = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return Faults(script=(frame,), script_after="init", script_end="close")


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_an_error_frame_on_the_idle_spare_is_replaced_transparently(
    version: str, lmnt_server: LocalLMNTServer
) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, protocol_version=version)
    errors: list[str] = []
    tts.on("error", lambda msg: errors.append(str(msg)))
    try:
        lmnt_server.faults = _idle_notice(version, "idle timeout, closing", "timeout_error")
        await tts.prewarm()
        await asyncio.sleep(0.3)  # the notice and the close reach the spare
        lmnt_server.faults = Faults()
        pcm = await speak(tts, "Hello there.")
    finally:
        await tts.aclose()
    assert len(pcm) > 0.3 * 24000 * 2  # the turn was spoken
    assert errors == []
    assert [s.text for s in lmnt_server.sessions if s.texts] == ["Hello there."]


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_an_auth_rejection_on_the_idle_spare_still_fails_the_turn(
    version: str, lmnt_server: LocalLMNTServer
) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, protocol_version=version)
    tts.audio_track = make_track()
    try:
        lmnt_server.faults = _idle_notice(version, "Invalid API key", "authentication_error")
        await tts.prewarm()
        await asyncio.sleep(0.3)
        lmnt_server.faults = Faults()
        t0 = time.monotonic()
        with pytest.raises(LMNTAuthError):
            await tts.synthesize("Hello there.")
        assert time.monotonic() - t0 < 1.0
    finally:
        await tts.aclose()
    assert not [s for s in lmnt_server.sessions if s.texts]  # no text went anywhere
