"""Issue 14 on one server: readiness, drain, Prometheus metrics, per-key limits, JSON logs.

Real server over real TCP with aiohttp clients; the tone engine (optionally paced by
``Faults``) makes the length of every turn known in advance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from lmnt_local.server.engines import EngineChunk
from lmnt_local.server.ops.limits import KeyLimit, LimitsConfig
from lmnt_local.server.ops.logs import JsonFormatter
from lmnt_local.server.ops.metrics import key_label

KEY = "sk-secret-key-0123456789"
INIT = {"X-API-Key": KEY, "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}
BYTES_PER_CHAR = 1200 * 2  # tone engine: 0.05 s per character at 24 kHz, s16


class SlowLoadingEngine(ToneEngine):
    """An engine whose blocking ``load()`` waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.loads = 0

    def load(self) -> None:
        self.loads += 1
        assert self.release.wait(10)


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def _turn(
    http: aiohttp.ClientSession, url: str, text: str, init: dict[str, Any] | None = None
) -> tuple[int, list[Any], int | None]:
    """One legacy turn: (audio bytes, text frames, close code)."""
    audio, texts = 0, []
    async with http.ws_connect(url) as ws:
        await ws.send_str(json.dumps(init or INIT))
        await ws.send_str(json.dumps({"text": text}))
        await ws.send_str(json.dumps({"eof": True}))
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                audio += len(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
        return audio, texts, ws.close_code


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- readiness -----------------------------------------------------------------------------


async def test_readiness_waits_for_the_engine_load_off_the_loop(
    http: aiohttp.ClientSession,
) -> None:
    engine = SlowLoadingEngine()
    srv = LocalLMNTServer(engine)
    starting = asyncio.create_task(srv.start())
    try:
        async with asyncio.timeout(10):
            while srv._port is None:
                await asyncio.sleep(0.01)
        base = srv.http_url
        # The loop answers while load() blocks its thread: live, not ready, no sessions.
        assert await _status(http, base + "/livez") == (200, {"status": "ok"})
        assert await _status(http, base + "/readyz") == (503, {"status": "loading"})
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(srv.ws_url)
        assert refused.value.status == 503
        engine.release.set()
        await asyncio.wait_for(starting, 10)
        assert await _status(http, base + "/readyz") == (200, {"status": "ready"})
        assert engine.loads == 1
    finally:
        engine.release.set()
        await srv.stop()


async def test_drain_finishes_in_flight_turns_and_refuses_new_work(
    http: aiohttp.ClientSession,
) -> None:
    text = "x" * 40  # 2 s of audio, paced at real time
    async with LocalLMNTServer(ToneEngine(), faults=Faults(pace=1.0)) as srv:
        busy = asyncio.create_task(_turn(http, srv.ws_url, text))
        idle = await http.ws_connect(srv.ws_url)  # a warm spare: init only
        await idle.send_str(json.dumps(INIT))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        drain = asyncio.create_task(srv.drain(10))
        await asyncio.sleep(0.2)
        # Out of rotation at once; the idle session is closed with 1001 at once.
        assert (await _status(http, srv.http_url + "/readyz"))[0] == 503
        msg = await idle.receive(timeout=2)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(srv.ws_url)
        assert refused.value.status == 503
        async with http.post(
            srv.http_url + "/v1/ai/speech/bytes",
            json={"text": "hi", "format": "raw", "voice": "ava"},
            headers={"X-API-Key": KEY},
        ) as resp:
            assert resp.status == 503
        # The in-flight turn is not cut: all of its audio, then a normal close.
        audio, _, code = await asyncio.wait_for(busy, 10)
        assert (audio, code) == (len(text) * BYTES_PER_CHAR, 1000)
        await asyncio.wait_for(drain, 10)
        assert time.monotonic() - started < 5
        await idle.close()


async def test_drain_deadline_closes_busy_sessions_with_1001(http: aiohttp.ClientSession) -> None:
    async with LocalLMNTServer(ToneEngine(), faults=Faults(pace=1.0)) as srv:
        busy = asyncio.create_task(_turn(http, srv.ws_url, "x" * 200))  # 10 s of audio
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await srv.drain(0.5)
        audio, _, code = await asyncio.wait_for(busy, 5)
        assert code == 1001 and 0 < audio < 200 * BYTES_PER_CHAR
        assert time.monotonic() - started < 3.5


# -- metrics -------------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_metrics_count_sessions_characters_latency_and_errors(
    http: aiohttp.ClientSession,
) -> None:
    async with LocalLMNTServer(ToneEngine(), api_keys=[KEY]) as srv:
        await _turn(http, srv.ws_url, "Hello there.")
        await _turn(http, srv.ws_url, "Bad key.", {**INIT, "X-API-Key": "sk-wrong-key"})
        async with http.get(srv.http_url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = await resp.text()
    assert KEY not in body and "sk-wrong-key" not in body  # keys are never label values
    s = _samples(body)
    assert s["lmnt_sessions_total"] == 2
    assert s["lmnt_active_sessions"] == 0
    assert s["lmnt_queue_depth"] == 0
    assert s[f'lmnt_characters_total{{key="{key_label(KEY)}"}}'] == len("Hello there.")
    assert s["lmnt_time_to_first_audio_seconds_count"] == 1
    assert 0 < s["lmnt_time_to_first_audio_seconds_sum"] < 2
    assert s["lmnt_real_time_factor_count"] >= 1
    assert s['lmnt_errors_total{type="authentication_error"}'] == 1


async def test_metrics_show_active_sessions_and_queue_depth(http: aiohttp.ClientSession) -> None:
    class Gated(ToneEngine):
        gate = asyncio.Event()

        async def synthesize(self, text: str, **kw: Any) -> AsyncIterator[EngineChunk]:
            await self.gate.wait()
            async for chunk in super().synthesize(text, **kw):
                yield chunk

    engine = Gated()
    async with LocalLMNTServer(engine) as srv:
        ws = await http.ws_connect(srv.ws_url)
        await ws.send_str(json.dumps(INIT))
        await ws.send_str(json.dumps({"text": "One. Two. Three. "}))
        await asyncio.sleep(0.3)
        async with http.get(srv.http_url + "/metrics") as resp:
            s = _samples(await resp.text())
        assert s["lmnt_active_sessions"] == 1
        assert s["lmnt_queue_depth"] == 2  # one unit at the engine, two waiting
        engine.gate.set()
        await ws.close()


# -- per-key limits ------------------------------------------------------------------------


async def test_per_key_session_limit_answers_rate_limit_error(http: aiohttp.ClientSession) -> None:
    limits = LimitsConfig(KeyLimit(max_sessions=1))
    async with LocalLMNTServer(ToneEngine(), limits=limits) as srv:
        first = await http.ws_connect(srv.ws_url)
        await first.send_str(json.dumps(INIT))
        await asyncio.sleep(0.1)
        _, texts, code = await _turn(http, srv.ws_url, "Hi.")
        assert code == 1008
        assert "too many concurrent sessions" in texts[-1]["error"]
        assert KEY not in json.dumps(texts)
        # Another key is not affected; the first key may open one again once it closes.
        audio, _, code = await _turn(http, srv.ws_url, "Hi.", {**INIT, "X-API-Key": "other"})
        assert (audio, code) == (3 * BYTES_PER_CHAR, 1000)
        await first.close()
        await asyncio.sleep(0.1)
        audio, _, code = await _turn(http, srv.ws_url, "Hi.")
        assert (audio, code) == (3 * BYTES_PER_CHAR, 1000)


async def test_characters_per_minute_on_websocket_and_http(http: aiohttp.ClientSession) -> None:
    limits = LimitsConfig(KeyLimit(chars_per_minute=30))
    async with LocalLMNTServer(ToneEngine(), limits=limits) as srv:
        audio, _, code = await _turn(http, srv.ws_url, "x" * 25)
        assert (audio, code) == (25 * BYTES_PER_CHAR, 1000)
        _, texts, code = await _turn(http, srv.ws_url, "y" * 10)
        assert code == 1008 and texts[-1]["error"].startswith("character rate limit exceeded")
        async with http.post(
            srv.http_url + "/v1/ai/speech/bytes",
            json={"text": "z" * 10, "format": "raw", "voice": "ava"},
            headers={"X-API-Key": KEY},
        ) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
        async with http.post(
            srv.http_url + "/v1/ai/speech/bytes",
            json={"text": "z" * 10, "format": "raw", "voice": "ava"},
            headers={"X-API-Key": "someone-else"},
        ) as resp:
            assert resp.status == 200


def test_limits_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        '[default]\nmax_sessions = 4\n\n[keys.support-bot]\nkey_env = "BOT_KEY"\n'
        "chars_per_minute = 1000\n"
    )
    env = {"BOT_KEY": "sk-bot", "LMNT_KEY_CHARS_PER_MINUTE": "500"}
    config = LimitsConfig.load(path, env)
    assert config.default == KeyLimit(max_sessions=4, chars_per_minute=500)
    assert config.keys["sk-bot"] == ("support-bot", KeyLimit(chars_per_minute=1000))
    env_only = LimitsConfig.load(None, {"LMNT_KEY_MAX_SESSIONS": "2"})
    assert env_only.default == KeyLimit(max_sessions=2)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[default]\nmax_sessions = 0\n", {}, "max_sessions must be > 0"),
        ("[default]\nmax_session = 3\n", {}, "unknown setting(s) ['max_session']"),
        ('[keys.a]\nkey_env = "NOPE"\n', {}, "$NOPE is not set"),
        ("[keys.a]\nmax_sessions = 1\n", {}, 'needs key = "..." or key_env'),
        ("[default\n", {}, "invalid TOML"),
        ("", {"LMNT_KEY_MAX_SESSIONS": "lots"}, "LMNT_KEY_MAX_SESSIONS must be an integer"),
    ],
)
def test_bad_limits_config_is_a_value_error(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        LimitsConfig.load(path, env)
    assert message in str(exc.value)


# -- logs ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _json_logs() -> Iterator[list[str]]:
    """The server's log records at DEBUG, as the JSON lines ``--log-format json`` writes."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger("lmnt_local.server")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_json_logs_carry_the_request_id(http: aiohttp.ClientSession) -> None:
    with _json_logs() as lines:
        async with LocalLMNTServer(ToneEngine(), api_keys=[KEY]) as srv:
            await _turn(http, srv.ws_url, "Hi.")
            await _turn(http, srv.ws_url, "Hi.", {**INIT, "X-API-Key": "sk-bad"})
            rids = [r.request_id for r in srv.sessions]
    records = [json.loads(line) for line in lines]
    for rid in rids:
        mine = [r for r in records if r.get("request_id") == rid]
        assert mine, f"no log line for {rid}"
        assert all(r["level"] and r["logger"] and r["time"].endswith("Z") for r in mine)
    assert not any(KEY in line or "sk-bad" in line for line in lines)


async def test_http_request_id_header_is_the_id_the_logs_carry(
    http: aiohttp.ClientSession,
) -> None:
    """One id per request: the ``request-id`` a client quotes in a bug report finds its log
    lines (an id the client sent in ``X-Request-Id`` is kept, as for WebSocket sessions)."""
    with _json_logs() as lines:
        async with LocalLMNTServer(ToneEngine(), api_keys=[KEY]) as srv:
            body = {"text": "Hi.", "voice": "ava", "format": "pcm_s16le"}
            url = srv.http_url + "/v1/ai/speech/bytes"
            given = "req_from_the_client_42"
            async with http.post(
                url, json=body, headers={"X-API-Key": KEY, "X-Request-Id": given}
            ) as resp:
                assert resp.status == 200
                await resp.read()
                assert resp.headers["request-id"] == given
            async with http.post(
                url, json={**body, "voice": "nobody"}, headers={"X-API-Key": KEY}
            ) as resp:
                assert resp.status == 422
                rid = resp.headers["request-id"]
            logging.getLogger("lmnt_local.server").info("outside any request: no id")
    assert rid.startswith("req_") and rid != given
    records = [json.loads(line) for line in lines]
    assert all(r.get("request_id") in (None, "", given, rid) for r in records), records
