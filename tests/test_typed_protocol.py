"""The typed LMNT API (``lmnt-version`` 1.1 and 1.2) as the plugin speaks it, seen on the wire.

A recording relay (``WireTap``) sits between ``LMNTTTS`` and the local server and keeps every
frame in both directions, so the assertions are about what really crossed the socket: the init
frame's ``lmnt-version``, typed ``text``/``flush``/``finish`` commands with their nonces, the
server's ``ready``/``flush_complete`` answers.  Audio is checked where the listener gets it, on
the framework's track; errors are checked for the server's request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from lmnt_local.protocol import FORMATS, STREAM_PATH
from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import (
    LMNTTTS,
    LMNTAuthError,
    LMNTConnectionError,
    LMNTError,
    LMNTProtocolError,
    LMNTServerError,
)

from audio_helpers import active_span, estimate_pitch
from track_helpers import FRAME_BYTES, TRACK_RATE, FlushMarker, aiter_of, make_track, speak

pytestmark = pytest.mark.timeout(10)

TYPED = ["1.1", "1.2"]
TONE = ToneEngine()
KEY = "typed-test-key-0123"


class WireTap:
    """A WebSocket relay on loopback that records every frame between a client and a server.

    ``connections`` holds one list per client connection of ``(direction, payload)``:
    ``("c2s", json)``, ``("s2c", json)``, ``("s2c-audio", n_bytes)`` and ``("close", code, by)``.
    Close codes are relayed; a dropped upstream (1006) drops the client connection too.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.connections: list[list[tuple[Any, ...]]] = []
        self._runner: web.AppRunner | None = None
        self.ws_url = ""

    async def __aenter__(self) -> WireTap:
        app = web.Application()
        app.router.add_get(STREAM_PATH, self._relay)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.ws_url = f"ws://127.0.0.1:{port}{STREAM_PATH}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await asyncio.wait_for(self._runner.cleanup(), 2)

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        log: list[tuple[Any, ...]] = []
        self.connections.append(log)
        down = web.WebSocketResponse()
        await down.prepare(request)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self.upstream) as up,
        ):

            async def client_to_server() -> None:
                async for msg in down:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        log.append(("c2s", json.loads(msg.data)))
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await up.send_str(msg.data)
                log.append(("close", down.close_code, "client"))
                await up.close(code=down.close_code or 1000)

            async def server_to_client() -> None:
                async for msg in up:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            log.append(("s2c", json.loads(msg.data)))
                            await down.send_str(msg.data)
                        elif msg.type is aiohttp.WSMsgType.BINARY:
                            log.append(("s2c-audio", len(msg.data)))
                            await down.send_bytes(msg.data)
                code = up.close_code
                log.append(("close", code, "server"))
                if code in (None, 1005, 1006):
                    if request.transport is not None:
                        request.transport.abort()
                else:
                    await down.close(code=code)

            tasks = [
                asyncio.create_task(client_to_server()),
                asyncio.create_task(server_to_client()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                await asyncio.wait(tasks, timeout=1.0)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return down


def sent(log: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [entry[1] for entry in log if entry[0] == "c2s"]


def received(log: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [entry[1] for entry in log if entry[0] == "s2c"]


def spoken_logs(tap: WireTap) -> list[list[tuple[Any, ...]]]:
    """Connections that carried a turn (a warm spare that was never used has no text)."""
    return [log for log in tap.connections if any(m.get("type") == "text" for m in sent(log))]


@contextlib.asynccontextmanager
async def tapped(server: LocalLMNTServer) -> AsyncIterator[WireTap]:
    async with WireTap(server.ws_url) as tap:
        yield tap


def _tts(url: str, **kw: Any) -> LMNTTTS:
    kw.setdefault("api_key", KEY)
    return LMNTTTS(ws_url=url, **kw)


def assert_tone(pcm: bytes, text: str, tolerance: float = 0.02) -> None:
    assert len(pcm) % FRAME_BYTES == 0
    pitch = estimate_pitch(pcm, TRACK_RATE)
    assert abs(pitch - TONE.frequency) / TONE.frequency < 0.01, pitch
    start, end = active_span(pcm, TRACK_RATE)
    assert abs((end - start) - TONE.duration_of(text)) < tolerance, (end - start, text)


# -- what crosses the wire -----------------------------------------------------------------


@pytest.mark.parametrize("version", TYPED)
async def test_typed_commands_and_answers_on_the_wire(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    """One turn with two flushes, a session per turn: text, flush 1, text, flush 2, finish."""
    async with tapped(lmnt_server) as tap:
        tts = _tts(tap.ws_url, protocol_version=version, reuse_sessions=False)
        try:
            pcm = await speak(
                tts, aiter_of(["Hello there.", FlushMarker(), "How are you?", FlushMarker()])
            )
        finally:
            await tts.aclose()
    assert_tone(pcm, "Hello there. How are you?")

    [log] = spoken_logs(tap)
    frames = sent(log)
    init = frames[0]
    assert init["lmnt-version"] == version
    assert init["type"] == "init" and init["X-API-Key"] == KEY
    assert init["format"] == "pcm_s16le" and init["sample_rate"] == 24000
    assert "return_extras" not in init and "return_timestamps" not in init  # not asked for
    assert frames[1:] == [
        # the chunker's stripped space put back after each sentence: complete at once
        {"type": "text", "text": "Hello there. "},
        {"type": "flush", "nonce": 1},
        {"type": "text", "text": "How are you? "},
        {"type": "flush", "nonce": 2},
        {"type": "finish"},
    ]
    answers = received(log)
    assert answers[0]["type"] == "ready" and answers[0]["request_id"].startswith("req_")
    assert [a for a in answers if a["type"] == "flush_complete"] == [
        {"type": "flush_complete", "nonce": 1},
        {"type": "flush_complete", "nonce": 2},
    ]
    assert not any("error" in a for a in answers)
    assert ("close", 1000, "server") in log  # the server ended the session after finish
    # The server saw the same: a typed session of that version, every command typed.
    record = next(s for s in lmnt_server.sessions if s.texts)
    assert record.version == version and record.init["lmnt-version"] == version
    assert record.commands == ["text", "flush", "text", "flush", "eof"]
    assert record.request_id == answers[0]["request_id"]


@pytest.mark.parametrize("version", TYPED)
async def test_reused_typed_session_ends_each_turn_with_a_flush(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    """PCM over the typed API keeps one session: each turn is text + flush, never finish."""
    async with tapped(lmnt_server) as tap:
        tts = _tts(tap.ws_url, protocol_version=version)
        try:
            await tts.prewarm()
            for text in ("First turn.", "Second turn here."):
                assert_tone(await speak(tts, text), text)
        finally:
            await tts.aclose()
    [log] = spoken_logs(tap)
    kinds = [m["type"] for m in sent(log)]
    assert kinds == ["init", "text", "flush", "text", "flush"]
    assert [m["text"] for m in sent(log) if m["type"] == "text"] == [
        "First turn. ",  # the space after a sentence says it is complete
        "Second turn here. ",
    ]
    assert len(lmnt_server.sessions) == 1  # the prewarmed connection served both turns


async def test_nonces_keep_increasing_across_turns_of_a_reused_session(
    lmnt_server: LocalLMNTServer,
) -> None:
    """One nonce counter per session, as LMNT's SDKs keep: a reused session never sees a nonce
    twice, so no acknowledgement can be mistaken for another turn's."""
    async with tapped(lmnt_server) as tap:
        tts = _tts(tap.ws_url, protocol_version="1.2")
        try:
            for text in ("One.", "Two.", "Three."):
                await speak(tts, text)
        finally:
            await tts.aclose()
    [log] = spoken_logs(tap)
    nonces = [m["nonce"] for m in sent(log) if m["type"] == "flush"]
    assert nonces == [1, 2, 3]


@pytest.mark.parametrize("version", TYPED)
async def test_word_timestamps_are_requested_the_typed_way(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    async with tapped(lmnt_server) as tap:
        tts = _tts(tap.ws_url, protocol_version=version, word_timestamps=True)
        try:
            await speak(tts, "Hi there.")
        finally:
            await tts.aclose()
    [log] = spoken_logs(tap)
    init = sent(log)[0]
    assert init["return_timestamps"] is True and "return_extras" not in init
    stamps = [a for a in received(log) if a["type"] == "timestamps"]
    assert [w["text"] for a in stamps for w in a["timestamps"]] == ["Hi", "there."]


# -- audio ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", TYPED)
@pytest.mark.parametrize(
    ("fmt", "rate"),
    [(fmt, (8000, 16000, 24000)[i % 3]) for i, fmt in enumerate(FORMATS)] + [("pcm_s16le", 8000)],
)
async def test_typed_audio_pitch_and_duration(
    lmnt_server: LocalLMNTServer, version: str, fmt: str, rate: int
) -> None:
    text = "Typed audio, heard right."
    tts = _tts(lmnt_server.ws_url, protocol_version=version, format=fmt, sample_rate=rate)
    try:
        for _ in range(2):  # the second turn runs on a reused session where the format allows
            assert_tone(await speak(tts, text), text)
    finally:
        await tts.aclose()
    record = lmnt_server.sessions[-1]
    assert record.version == version
    assert (record.init["format"], record.init["sample_rate"]) == (fmt, rate)


# -- errors carry the server's request id --------------------------------------------------


@pytest.mark.parametrize("version", TYPED)
async def test_invalid_key_is_an_auth_error_with_the_request_id(version: str) -> None:
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"the-only-good-key"}) as server:
        tts = _tts(server.ws_url, protocol_version=version, api_key="a-wrong-key-4567")
        tts.audio_track = make_track()
        errors: list[str] = []
        tts.on("error", lambda message: errors.append(str(message)))
        try:
            with pytest.raises(LMNTAuthError) as info:
                async with asyncio.timeout(3):
                    await tts.synthesize("Hello.")
        finally:
            await tts.aclose()
    err = info.value
    assert err.request_id is not None and err.request_id.startswith("req_")
    assert err.request_id in {s.request_id for s in server.sessions}
    assert err.request_id in str(err)
    assert err.error_type == "authentication_error" and err.server_message == "Invalid API key"
    assert err.retryable is False
    assert errors and err.request_id in errors[0]
    assert "a-wrong-key-4567" not in str(err) + "".join(errors)
    # Not retried: a rejected key fails the same way every time.
    assert sum(1 for s in server.sessions if s.texts) <= 1


@pytest.mark.parametrize("version", TYPED)
async def test_server_error_before_audio_raises_with_the_request_id(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    lmnt_server.faults = Faults(error_before_audio="engine on fire")
    tts = _tts(lmnt_server.ws_url, protocol_version=version, max_retries=0)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTServerError) as info:
            async with asyncio.timeout(3):
                await tts.synthesize("Hello.")
    finally:
        await tts.aclose()
    err = info.value
    record = next(s for s in lmnt_server.sessions if s.texts)
    assert err.request_id == record.request_id and err.request_id in str(err)
    assert err.server_message == "engine on fire"
    assert err.error_type == "internal_server_error" and err.retryable is True


@pytest.mark.parametrize("version", TYPED)
async def test_server_error_after_audio_is_emitted_with_the_request_id(
    lmnt_server: LocalLMNTServer, version: str
) -> None:
    lmnt_server.faults = Faults(error_after_bytes=(8192, "lost the plot"))
    tts = _tts(lmnt_server.ws_url, protocol_version=version)
    tts.audio_track = make_track()
    errors: list[str] = []
    tts.on("error", lambda message: errors.append(str(message)))
    try:
        async with asyncio.timeout(3):
            await tts.synthesize("A sentence long enough for several frames.")  # returns
    finally:
        await tts.aclose()
    record = next(s for s in lmnt_server.sessions if s.texts)
    assert len(errors) == 1
    assert "lost the plot" in errors[0] and record.request_id in errors[0]


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        (Faults(unknown_message=True), LMNTProtocolError),
        (Faults(drop_before_audio=True), LMNTConnectionError),
    ],
    ids=["protocol-error", "dropped"],
)
async def test_client_side_errors_carry_the_sessions_request_id(
    lmnt_server: LocalLMNTServer, faults: Faults, kind: type[LMNTError]
) -> None:
    """Errors the client detects itself (not error frames) quote the session's request id too,
    even on a fresh connection whose ``ready`` arrived after the turn started."""
    lmnt_server.faults = faults
    tts = _tts(lmnt_server.ws_url, protocol_version="1.2", max_retries=0, warm_connection=False)
    tts.audio_track = make_track()
    try:
        with pytest.raises(kind) as info:
            async with asyncio.timeout(3):
                await tts.synthesize("Hello.")
    finally:
        await tts.aclose()
    [record] = lmnt_server.sessions
    assert info.value.request_id == record.request_id
