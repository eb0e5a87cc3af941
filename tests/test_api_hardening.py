"""Regression tests of issue 13: the LMNT API details and the server defects a self-hosted
deployment would hit (memory, encoding on the loop, flush acknowledgements, invalid text, keys
in logs).  Each test failed on the code before its fix; all talk to the real server over TCP.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import io
import json
import logging
import sys
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from lmnt_local.server import Faults, LocalLMNTServer, ServerConfig, ToneEngine

pytestmark = pytest.mark.asyncio

TONE = ToneEngine()
KEY = "sesame-hardening-key-0123456789"
PCM = {"X-API-Key": KEY, "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}


def pcm_len(text: str, rate: int = 24000) -> int:
    return round(TONE.seconds_per_char * rate) * len(text) * 2


async def converse(url: str, *frames: Any, raw: bool = False) -> tuple[list[Any], int | None]:
    """Send frames (dicts as JSON, str as is), read to the close: (events, close code)."""
    events: list[Any] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for frame in frames:
            await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        async with asyncio.timeout(10):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    events.append(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))
    return events, ws.close_code


def audio_of(events: list[Any]) -> bytes:
    return b"".join(e for e in events if isinstance(e, bytes))


# -- HTTP errors in each API version's shape ----------------------------------------------------


async def test_http_errors_legacy_shapes() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        async with aiohttp.ClientSession() as http:
            speech = srv.http_url + "/v1/ai/speech/bytes"
            async with http.post(speech, json={"text": "Hi", "voice": "ava"}) as resp:
                assert (resp.status, await resp.json()) == (401, {"error": "Invalid API key"})
            ok = {"X-API-Key": KEY}
            async with http.post(speech, json={"text": "Hi", "voice": "x"}, headers=ok) as resp:
                body = await resp.json()
                assert resp.status == 422 and body["detail"][0]["loc"] == ["body", "voice"]
            async with http.get(srv.http_url + "/v1/ai/voice/zzz", headers=ok) as resp:
                assert (resp.status, await resp.json()) == (
                    404,
                    {"detail": "voice 'zzz' not found"},
                )
            async with http.get(srv.http_url + "/nope", headers=ok) as resp:
                assert (resp.status, await resp.json()) == (404, {"detail": "Not Found"})


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_http_errors_typed_envelope(version: str) -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        async with aiohttp.ClientSession(headers={"lmnt-version": version}) as http:
            speech = srv.http_url + "/v1/ai/speech"
            cases = [
                ("post", speech, {}, 401, "authentication_error"),
                ("post", speech, {"X-API-Key": "bad"}, 403, "permission_error"),
                ("get", srv.http_url + "/nope", {"X-API-Key": KEY}, 404, "not_found_error"),
                ("post", speech, {"X-API-Key": KEY}, 422, "invalid_request_error"),
            ]
            for method, url, headers, status, kind in cases:
                async with http.request(
                    method, url, json={"text": "Hi", "voice": "nobody"}, headers=headers
                ) as resp:
                    body = await resp.json()
                    assert resp.status == status, (url, body)
                    assert set(body) == {"error"} and body["error"]["type"] == kind
                    assert isinstance(body["error"]["message"], str)
                    assert resp.headers["request-id"].startswith("req_")


async def test_cloning_is_answered_not_404() -> None:
    async with LocalLMNTServer(engine=TONE) as srv:
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("name", "me")
            form.add_field("file", b"\0" * 100_000, filename="v.wav")
            async with http.post(
                srv.http_url + "/v1/ai/voice", data=form, headers={"X-API-Key": "k"}
            ) as resp:
                assert resp.status == 501 and resp.headers["x-should-retry"] == "false"
                assert "cloning is not available" in (await resp.json())["error"]


# -- voices, flush and reset on the WebSocket ---------------------------------------------------


@pytest.mark.parametrize("version", [None, "1.2"])
async def test_unknown_voice_is_refused_not_spoken(version: str | None) -> None:
    init = {**PCM, "voice": "avaa"} | ({"lmnt-version": version} if version else {})
    async with LocalLMNTServer(engine=TONE) as srv:
        events, code = await converse(srv.ws_url, init, {"text": "Hello."}, {"eof": True})
    assert code == 1002 and audio_of(events) == b""
    error = events[-1]["error"]
    message = error if version is None else error["message"]
    assert "unknown voice 'avaa'" in message and "ava, leah" in message


async def test_interim_flush_and_reset_are_acknowledged() -> None:
    """protocol_version 2 clients get ``{"complete": ..., "nonce": N}`` after the audio."""
    async with LocalLMNTServer(engine=TONE) as srv:
        events, code = await converse(
            srv.ws_url,
            {**PCM, "protocol_version": 2},
            {"text": "Hello there"},
            {"command": "flush", "nonce": 1},
            {"text": "dropped"},
            {"command": "reset", "nonce": 2},
            {"command": "eof"},
        )
    assert code == 1000
    acks = [e for e in events if isinstance(e, dict)]
    assert acks == [{"complete": "flush", "nonce": 1}, {"complete": "reset", "nonce": 2}]
    flush_at = events.index({"complete": "flush", "nonce": 1})
    assert len(audio_of(events[:flush_at])) == pcm_len("Hello there")
    assert len(audio_of(events)) == pcm_len("Hello there")


async def test_reset_drops_only_unflushed_text() -> None:
    """Flushed text is spoken whole even when a reset arrives while it is still being sent."""
    async with LocalLMNTServer(engine=TONE, faults=Faults(pace=4.0)) as srv:
        events, code = await converse(
            srv.ws_url,
            {**PCM, "lmnt-version": "1.2"},
            {"type": "text", "text": "flushed words here"},  # 0.9 s of audio, sent at 4x
            {"type": "flush", "nonce": 1},
            {"type": "text", "text": "Complete but unflushed. And more"},
            {"type": "reset", "nonce": 2},
            {"type": "text", "text": "after"},
            {"type": "finish"},
        )
    assert code == 1000
    kinds = [e.get("type") for e in events if isinstance(e, dict)]
    assert kinds == ["ready", "flush_complete", "reset_complete"]
    assert len(audio_of(events)) == pcm_len("flushed words here") + pcm_len("after")


# -- defect 4: flush_complete follows the end of the flushed audio (mp3, webm) -----------------


def _decoded_seconds_of_tone(data: bytes, fmt: str) -> float:
    """Seconds of loud tone in an encoded stream (codec priming and padding are silence)."""
    container = av.open(io.BytesIO(data), format={"mp3": "mp3", "webm": "webm"}[fmt])
    chunks, rate = [], 24000
    for frame in container.decode(audio=0):
        rate = frame.sample_rate
        chunks.append(frame.to_ndarray().astype(np.float64).reshape(-1))
    samples = np.concatenate(chunks)
    if np.abs(samples).max() > 2:
        samples = samples / 32768.0
    block = rate // 200  # 5 ms blocks; the tone's RMS is 0.35, silence's ~0
    blocks = samples[: len(samples) // block * block].reshape(-1, block)
    loud = np.sqrt((blocks**2).mean(axis=1)) > 0.2
    return float(np.count_nonzero(loud) * block / rate)


@pytest.mark.parametrize("fmt", ["mp3", "webm"])
async def test_flush_complete_follows_all_flushed_audio(fmt: str) -> None:
    text = "Hello world"  # 10 letters of tone = 0.5 s, then the rest of the session waits
    async with LocalLMNTServer(engine=TONE) as srv:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(json.dumps({**PCM, "format": fmt, "lmnt-version": "1.2"}))
            await ws.send_str(json.dumps({"type": "text", "text": text}))
            await ws.send_str(json.dumps({"type": "flush", "nonce": 7}))
            audio = bytearray()
            async with asyncio.timeout(10):
                while True:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        audio += msg.data
                    elif json.loads(msg.data)["type"] == "flush_complete":
                        break
            await ws.send_str(json.dumps({"type": "finish"}))
    tone = _decoded_seconds_of_tone(bytes(audio), fmt)
    assert tone >= 0.5 - 0.012, f"{fmt}: only {tone:.3f} s of the 0.5 s tone before the ack"


# -- defect 7: lone surrogates ------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "1.2"])
async def test_lone_surrogate_in_text_is_an_lmnt_error(version: str | None) -> None:
    init = {**PCM} | ({"lmnt-version": version} if version else {})
    async with LocalLMNTServer(engine=TONE) as srv:
        events, code = await converse(srv.ws_url, init, '{"text": "bad \\ud800 text"}')
        assert code == 1007 and audio_of(events) == b""
        error = events[-1]["error"]
        assert "surrogate" in (error if version is None else error["message"])
        # in the init frame too (a key or voice no UTF-8 frame can carry)
        events, code = await converse(srv.ws_url, '{"X-API-Key": "k\\udfff", "voice": "ava"}')
        assert code == 1002 and "surrogate" in events[-1]["error"]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                srv.http_url + "/v1/ai/speech/bytes",
                data='{"text": "bad \\ud800 text", "voice": "ava", "format": "pcm_s16le"}',
                headers={"X-API-Key": "k", "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 422
                assert "surrogate" in (await resp.json())["detail"][0]["msg"]


# -- defect 8: no key in logs or replies --------------------------------------------------------


async def test_init_sent_twice_leaks_no_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="videosdk.plugins.lmnt")
    caplog.set_level(logging.DEBUG, logger="lmnt_local")
    async with LocalLMNTServer(engine=TONE) as srv:
        events, code = await converse(srv.ws_url, PCM, PCM)
        typed = {**PCM, "lmnt-version": "1.1"}
        typed_events, typed_code = await converse(srv.ws_url, typed, typed)
    assert code == typed_code == 1002
    replies = json.dumps(events) + json.dumps(typed_events)
    assert "unrecognised message" in replies or "unknown" in replies
    assert KEY not in replies
    assert KEY not in caplog.text
    assert "session" in caplog.text  # the error was logged, masked


# -- defect 1: bounded memory ------------------------------------------------------------------


async def test_refused_connections_with_huge_inits_keep_no_memory() -> None:
    """300 wrong-key connections with a 900 KB init frame each: nothing of them stays."""
    init = json.dumps({**PCM, "X-API-Key": "wrong", "pad": "x" * 900_000})
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        async with aiohttp.ClientSession() as http:

            async def one() -> int | None:
                async with http.ws_connect(srv.ws_url) as ws:
                    await ws.send_str(init)
                    async for _ in ws:
                        pass
                return ws.close_code

            await one()  # warm up
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                codes = []
                for _ in range(6):
                    codes += await asyncio.gather(*(one() for _ in range(50)))
                await asyncio.sleep(0.5)  # let the last transports finish closing
                gc.collect()
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        assert grown < 5_000_000, f"{grown / 1e6:.1f} MB kept after 300 refused connections"
        assert set(codes) == {1009}  # refused before the frame is parsed
        assert len(srv.sessions) == 301 and all(r.init is None for r in srv.sessions)


async def test_records_keep_bounded_text() -> None:
    config = ServerConfig(max_record_chars=100, max_session_records=3)
    async with LocalLMNTServer(engine=TONE, config=config) as srv:
        for _ in range(5):
            await converse(srv.ws_url, PCM, {"text": "y" * 80}, {"text": "z" * 80}, {"eof": True})
        assert len(srv.sessions) == 3
        record = srv.sessions[-1]
        assert record.texts == ["y" * 80, "z" * 20] and record.texts_truncated


# -- defect 2: encoding off the event loop ------------------------------------------------------

_LOOP_LAG = Path(__file__).resolve().parent.parent / "benchmarks" / "loop_lag.py"


def _loop_lag() -> ModuleType:
    name = "lmnt_benchmarks_loop_lag"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _LOOP_LAG)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.timeout(90)
async def test_mp3_sessions_do_not_stall_the_loop() -> None:
    """20 mp3 sessions at full speed (the server in its own process): before the fix the loop
    lagged 150 ms at the median and a new session waited ~1 s for audio."""
    # The new session starts 0.3 s in: on a quiet machine the 20 sessions end after ~1 s.
    result = await _loop_lag().measure(20, seconds=5.0, timeout=60.0, probe_after=0.3)
    print(result)
    assert result.completed == 20
    # Ratios to the run's own wall time, which a busy machine stretches as it does the lags
    # (issue 21 item 14): the loop's median lag and the new session's wait for its first audio
    # stay under 2 % and 5 % of the run.  Measured, mp3 encoded on the loop: 71 ms and 319 ms
    # of 1.84 s (both fail); fixed: 0.5 ms and 6 ms of 1.86 s.
    assert result.lag_p50 < result.wall / 50, result
    assert result.new_session_ttfa < result.wall / 20, result
