"""The local LMNT server over real TCP (and TLS), driven by aiohttp client WebSockets.

Every test is bounded in time (``@bounded``) and talks only to 127.0.0.1.  The tone engine
makes audio lengths and word timings exact, so assertions compare bytes, not approximations.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import aiohttp
import pytest
import pytest_asyncio

from lmnt_local.server import (
    EngineChunk,
    Faults,
    LocalLMNTServer,
    ServerConfig,
    SessionRecord,
    ToneEngine,
)
from videosdk.plugins.lmnt.testing import (  # noqa: F401 - fixtures used by name
    lmnt_server,
    lmnt_tls_server,
    start_local_server,
)

pytestmark = pytest.mark.asyncio

P = ParamSpec("P")
R = TypeVar("R")

TONE = ToneEngine()
LEGACY = {"X-API-Key": "test-key", "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}


def typed(version: str = "1.2", **extra: Any) -> dict[str, Any]:
    return {**LEGACY, "lmnt-version": version, "type": "init", **extra}


def pcm_bytes(text: str, rate: int = 24000) -> int:
    """Exact s16le length of the tone engine's audio for ``text``."""
    return round(TONE.seconds_per_char * rate) * len(text) * 2


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Fail a test that runs longer than ``seconds`` instead of hanging the suite."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            async with asyncio.timeout(seconds):
                return await fn(*args, **kwargs)

        return run

    return wrap


@dataclass
class Run:
    """What a client saw: events in order (kind, payload, arrival time) and the close code."""

    events: list[tuple[str, Any, float]] = field(default_factory=list)
    close_code: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]

    @property
    def binaries(self) -> list[bytes]:
        return [d for k, d, _ in self.events if k == "binary"]

    @property
    def audio(self) -> bytes:
        return b"".join(self.binaries)

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [d for k, d, _ in self.events if k == "json"]
        return [m for m in out if kind is None or m.get("type") == kind]

    def first(self, kind: str) -> float:
        return next(t for k, _, t in self.events if k == kind) - self.started


async def read_all(ws: aiohttp.ClientWebSocketResponse, run: Run) -> Run:
    async for msg in ws:
        now = time.monotonic()
        if msg.type is aiohttp.WSMsgType.BINARY:
            run.events.append(("binary", msg.data, now))
        elif msg.type is aiohttp.WSMsgType.TEXT:
            try:
                run.events.append(("json", json.loads(msg.data), now))
            except ValueError:
                run.events.append(("text", msg.data, now))
    run.close_code = ws.close_code
    return run


async def converse(
    url: str, init: dict[str, Any], *commands: dict[str, Any], **connect: Any
) -> Run:
    """Send init and commands, then read until the server closes."""
    run = Run()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, **connect) as ws:
        await ws.send_str(json.dumps(init))
        for command in commands:
            await ws.send_str(json.dumps(command))
        return await read_all(ws, run)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[LocalLMNTServer]:
    srv = await start_local_server()
    try:
        yield srv
    finally:
        await srv.stop()


async def finished(srv: LocalLMNTServer, index: int = -1) -> SessionRecord:
    rec = srv.sessions[index]
    await asyncio.wait_for(rec.done.wait(), 3)
    return rec


# -- legacy protocol ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@bounded(5)
async def test_legacy_tone_has_exact_duration(server: LocalLMNTServer, rate: int) -> None:
    init = {**LEGACY, "sample_rate": rate}
    run = await converse(server.ws_url, init, {"text": "Hello world"}, {"eof": True})
    assert run.close_code == 1000
    assert len(run.audio) == pcm_bytes("Hello world", rate)
    assert run.messages() == []  # legacy without extras sends no JSON at all
    assert all(len(b) <= 4096 for b in run.binaries)
    rec = await finished(server)
    assert rec.version == "1.0" and rec.texts == ["Hello world"] and rec.text == "Hello world"
    assert rec.commands == ["text", "eof"]
    assert rec.init is not None and rec.init["X-API-Key"] == "***"
    assert rec.audio_bytes_sent == len(run.audio) and rec.frames_sent == len(run.binaries)
    assert (rec.close_code, rec.closed_by, rec.client_closed_early) == (1000, "server", False)
    assert rec.ended_at is not None and rec.ended_at >= rec.started_at


@bounded(5)
async def test_audio_lasts_exactly_the_whole_text() -> None:
    """Sentence splitting and long-sentence cutting never lose or add a character."""
    text = "First sentence.  Second one! A rather long third sentence without end"
    pieces = [text[:20], text[20:41], text[41:]]
    async with LocalLMNTServer(engine=TONE, config=ServerConfig(max_unit_chars=16)) as srv:
        run = await converse(
            srv.ws_url, LEGACY, *({"text": p} for p in pieces), {"flush": True}, {"eof": True}
        )
    assert len(run.audio) == pcm_bytes(text)
    assert max(len(b) for b in run.binaries) <= 4096


@bounded(5)
async def test_legacy_extras_precede_every_frame(server: LocalLMNTServer) -> None:
    text = "Hi there. Bye now"
    run = await converse(
        server.ws_url, {**LEGACY, "return_extras": True}, {"text": text}, {"eof": True}
    )
    kinds = run.kinds
    assert kinds == ["json", "binary"] * (len(kinds) // 2)
    extras = run.messages()
    assert all(set(m) == {"durations", "buffer_empty"} for m in extras)
    words = [d["text"] for m in extras for d in m["durations"]]
    assert words == ["Hi", "there.", "Bye", "now"]
    assert extras[-1]["buffer_empty"] is True
    assert not any(m["buffer_empty"] for m in extras[:-1] if m is not extras[-1])
    # durations restart at 0 for each chunk: a start never exceeds its own frame's length
    for (_, meta, _), (_, audio, _) in zip(run.events[::2], run.events[1::2], strict=True):
        for d in meta["durations"]:
            assert 0 <= d["start"] < len(audio) / 48000


@bounded(5)
async def test_legacy_send_extras_alias_and_flush(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps({**LEGACY, "send_extras": True}))
        await ws.send_str(json.dumps({"text": "No full stop"}))
        await ws.send_str(json.dumps({"flush": True}))
        got = 0
        while got < pcm_bytes("No full stop"):  # flushed audio arrives, socket stays open
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                got += len(msg.data)
            else:
                meta = json.loads(msg.data)
        assert meta["buffer_empty"] is True
        assert not ws.closed
        await ws.send_str(json.dumps({"eof": True}))
        run = await read_all(ws, Run())
    assert run.close_code == 1000 and run.audio == b""


@bounded(5)
async def test_legacy_complete_sentence_speaks_before_flush(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps(LEGACY))
        await ws.send_str(json.dumps({"text": "One sentence. And a half"}))
        msg = await ws.receive(timeout=2)
        assert msg.type is aiohttp.WSMsgType.BINARY  # no flush needed for a complete sentence
        await ws.send_str(json.dumps({"eof": True}))
        run = await read_all(ws, Run())
    total = len(msg.data) + len(run.audio)  # the space between sentences is a pause
    assert total == pcm_bytes("One sentence. And a half")


@bounded(5)
async def test_legacy_accepts_typed_commands(server: LocalLMNTServer) -> None:
    run = await converse(server.ws_url, LEGACY, {"type": "text", "text": "ab"}, {"command": "eof"})
    assert run.close_code == 1000 and len(run.audio) == pcm_bytes("ab")


# -- typed protocol -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@bounded(5)
async def test_typed_ready_flush_complete_finish(server: LocalLMNTServer, version: str) -> None:
    run = await converse(
        server.ws_url,
        typed(version),
        {"type": "flush", "nonce": 1},  # empty buffer: still acknowledged
        {"type": "text", "text": "Hello"},
        {"type": "flush", "nonce": 2},
        {"type": "text", "text": "again"},
        {"type": "finish"},
    )
    assert run.close_code == 1000
    ready = run.events[0]
    assert ready[0] == "json" and ready[1]["type"] == "ready"
    assert ready[1]["request_id"].startswith("req_")
    assert ready[1]["request_id"] == server.sessions[-1].request_id
    acks = [(i, e[1]) for i, e in enumerate(run.events) if e[0] == "json" and "nonce" in e[1]]
    assert [a["nonce"] for _, a in acks] == [1, 2]
    assert all(a["type"] == "flush_complete" for _, a in acks)
    second = acks[1][0]
    before = b"".join(d for k, d, _ in run.events[:second] if k == "binary")
    assert len(before) == pcm_bytes("Hello")  # the ack follows all of its flush's audio
    assert len(run.audio) == pcm_bytes("Hello") + pcm_bytes("again")
    assert run.messages("timestamps") == []  # not requested
    rec = await finished(server)
    assert rec.commands == ["flush", "text", "flush", "text", "eof"]
    assert rec.version == version


@bounded(5)
async def test_timestamps_follow_frames_and_are_cumulative_in_1_2(
    server: LocalLMNTServer,
) -> None:
    run = await converse(
        server.ws_url,
        typed("1.2", return_timestamps=True),
        {"type": "text", "text": "aa bb. cc"},
        {"type": "flush", "nonce": 7},
        {"type": "text", "text": "dd ee"},
        {"type": "finish"},
    )
    body = [e for e in run.events[1:] if not (e[0] == "json" and "nonce" in e[1])]
    assert [k for k, _, _ in body] == ["binary", "json"] * (len(body) // 2)
    spans = [(s["text"], s["start"]) for m in run.messages("timestamps") for s in m["timestamps"]]
    # "aa bb. " is one unit, "cc" the next; the flush resets the clock for "dd ee"
    assert spans == [("aa", 0.0), ("bb.", 0.15), ("cc", 0.35), ("dd", 0.0), ("ee", 0.15)]


@bounded(5)
async def test_timestamps_restart_per_chunk_in_1_1(server: LocalLMNTServer) -> None:
    text = "one two three four five six seven eight"
    run = await converse(
        server.ws_url,
        typed("1.1", return_timestamps=True),
        {"type": "text", "text": text},
        {"type": "finish"},
    )
    body = run.events[1:]  # after ready: binary, timestamps, binary, timestamps...
    pairs = [(d, m) for (_, d, _), (_, m, _) in zip(body[::2], body[1::2], strict=True)]
    words = [s for _, m in pairs for s in m["timestamps"]]
    assert [w["text"] for w in words] == text.split()
    for audio, meta in pairs:
        for span in meta["timestamps"]:
            assert 0 <= span["start"] < len(audio) / 48000
    assert max(w["start"] for w in words) < 4096 / 48000  # never cumulative


@bounded(5)
async def test_reset_drops_buffered_text(server: LocalLMNTServer) -> None:
    run = await converse(
        server.ws_url,
        typed("1.2"),
        {"type": "text", "text": "never spoken"},
        {"type": "reset", "nonce": 1},
        {"type": "text", "text": "spoken"},
        {"type": "finish"},
    )
    assert run.messages("reset_complete") == [{"type": "reset_complete", "nonce": 1}]
    assert len(run.audio) == pcm_bytes("spoken")
    rec = await finished(server)
    assert rec.texts == ["never spoken", "spoken"]
    assert rec.commands == ["text", "reset", "text", "eof"]


@bounded(5)
async def test_reset_drops_audio_not_yet_sent() -> None:
    long = "x" * 200 + ". "  # 10 s of tone, sent at 10x real time
    async with LocalLMNTServer(engine=TONE, faults=Faults(pace=10.0)) as srv:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(json.dumps(typed("1.2", return_timestamps=True)))
            await ws.send_str(json.dumps({"type": "text", "text": long}))
            run = Run()
            while len(run.binaries) < 2:
                await read_one(ws, run)
            await ws.send_str(json.dumps({"type": "reset", "nonce": 5}))
            await ws.send_str(json.dumps({"type": "text", "text": "ok"}))
            await ws.send_str(json.dumps({"type": "finish"}))
            await read_all(ws, run)
    ack = next(i for i, e in enumerate(run.events) if e[0] == "json" and "nonce" in e[1])
    after = b"".join(d for k, d, _ in run.events[ack:] if k == "binary")
    assert len(after) == pcm_bytes("ok")
    assert len(run.audio) < pcm_bytes("x" * 201) // 2
    stamps = [m for k, m, _ in run.events[ack:] if k == "json" and m["type"] == "timestamps"]
    assert stamps[0]["timestamps"] == [{"text": "ok", "start": 0.0, "duration": 0.1}]
    assert run.close_code == 1000


async def read_one(ws: aiohttp.ClientWebSocketResponse, run: Run) -> None:
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.BINARY:
        run.events.append(("binary", msg.data, time.monotonic()))
    elif msg.type is aiohttp.WSMsgType.TEXT:
        run.events.append(("json", json.loads(msg.data), time.monotonic()))
    else:
        raise AssertionError(f"unexpected {msg.type}")


# -- errors and limits --------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "1.2"])
@bounded(5)
async def test_invalid_key_errors_and_closes_1002(version: str | None) -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={"right"}) as srv:
        init = {**(typed(version) if version else LEGACY), "X-API-Key": "wrong"}
        run = await converse(srv.ws_url, init, {"text": "hi"}, {"eof": True})
        assert run.close_code == 1002 and run.audio == b""
        (err,) = run.messages()
        if version:
            assert err["error"] == {"type": "authentication_error", "message": "Invalid API key"}
            assert err["request_id"].startswith("req_")
        else:
            assert err == {"error": "Invalid API key"}
        ok = await converse(srv.ws_url, {**LEGACY, "X-API-Key": "right"}, {"eof": True})
        assert ok.close_code == 1000


@bounded(5)
async def test_null_field_and_missing_key_close_1002(server: LocalLMNTServer) -> None:
    run = await converse(server.ws_url, {**LEGACY, "model": None})
    assert run.close_code == 1002 and run.audio == b""
    assert run.messages() == [{"error": "model: Input should not be null"}]
    typed_init = typed("1.1")
    del typed_init["X-API-Key"]
    run = await converse(server.ws_url, typed_init)
    assert run.close_code == 1002
    assert run.messages()[0]["error"]["type"] == "authentication_error"


LIMITS = ServerConfig(max_frame_bytes=2048, max_text_chars=300, max_messages_per_second=30)


def too_big() -> list[str | bytes]:
    return [json.dumps({"text": "a" * 3000})]


def too_much_text() -> list[str | bytes]:
    return [json.dumps({"text": "b" * 200})] * 2


def flood() -> list[str | bytes]:
    return [json.dumps({"text": "c"})] * 200


@pytest.mark.parametrize(
    ("frames", "code", "message"),
    [
        (too_big, 1009, "message too large"),
        (too_much_text, 1008, "text limit exceeded"),
        (flood, 1008, "rate limit exceeded"),
        (lambda: [b"\x00\x01"], 1003, "binary messages are not accepted"),
        (lambda: ["{not json"], 1002, "valid JSON"),
        (lambda: ['{"type": "dance"}'], 1002, "unknown message type"),
        (lambda: ['{"hello": 1}'], 1002, "unrecognised message"),
        (lambda: ["[1, 2]"], 1002, "JSON object"),
    ],
    ids=["frame", "text", "rate", "binary", "json", "unknown", "unrecognised", "array"],
)
@bounded(8)
async def test_limits_answer_with_error_and_close(
    frames: Callable[[], list[str | bytes]], code: int, message: str
) -> None:
    async with LocalLMNTServer(engine=TONE, config=LIMITS) as srv:
        slow = asyncio.create_task(  # a well-behaved neighbour, running throughout
            converse(srv.ws_url, LEGACY, {"text": "neighbour"}, {"eof": True})
        )
        run = Run()
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(json.dumps(LEGACY))
            for frame in frames():
                if ws.closed:
                    break
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            await read_all(ws, run)
        assert run.close_code == code
        (err,) = run.messages()
        assert message in err["error"]
        neighbour = await slow
        assert neighbour.close_code == 1000
        assert len(neighbour.audio) == pcm_bytes("neighbour")
        after = await converse(srv.ws_url, LEGACY, {"text": "after"}, {"eof": True})
        assert len(after.audio) == pcm_bytes("after")
        bad = next(r for r in srv.sessions if r.error)
        await asyncio.wait_for(bad.done.wait(), 3)
        assert (bad.closed_by, bad.close_code) == ("server", code)


@bounded(5)
async def test_typed_limit_error_is_structured() -> None:
    async with LocalLMNTServer(engine=TONE, config=LIMITS) as srv:
        run = await converse(srv.ws_url, typed("1.2"), *([{"type": "text", "text": "c"}] * 100))
    assert run.close_code == 1008
    err = run.messages("error")[0]
    assert err["error"] == {"type": "rate_limit_error", "message": "rate limit exceeded"}


@bounded(5)
async def test_frames_the_reader_refuses(server: LocalLMNTServer) -> None:
    cfg = ServerConfig(max_frame_bytes=1024)
    async with LocalLMNTServer(engine=TONE, config=cfg) as srv:
        run = await converse(srv.ws_url, LEGACY, {"text": "y" * 20_000})  # > 16 x the limit
    assert run.close_code == 1009 and run.messages() == []  # refused unread: no error frame
    assert (srv.sessions[0].closed_by, srv.sessions[0].close_code) == ("server", 1009)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps(LEGACY))
        await ws.send_frame(b"\xff\xfe", aiohttp.WSMsgType.TEXT)  # not UTF-8
        run = await read_all(ws, Run())
    assert run.close_code == 1007
    rec = await finished(server)
    assert (rec.closed_by, rec.close_code) == ("server", 1007)


class BrokenEngine(ToneEngine):
    async def synthesize(
        self, text: str, *, voice: str, language: str, sample_rate: int
    ) -> AsyncIterator[EngineChunk]:
        async for chunk in super().synthesize(
            text, voice=voice, language=language, sample_rate=sample_rate
        ):
            yield chunk
            raise RuntimeError("engine broke")


@bounded(5)
async def test_engine_failure_ends_only_that_session() -> None:
    async with LocalLMNTServer(engine=BrokenEngine()) as srv:
        run = await converse(srv.ws_url, typed(), *SAY_TYPED)
        assert run.close_code == 1011
        assert run.messages("error")[0]["error"]["type"] == "internal_server_error"
        assert len(run.audio) < pcm_bytes("Hello world")  # queued audio is dropped
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.http_url + "/health_check") as resp:
                assert resp.status == 200


@bounded(5)
async def test_eof_then_close_is_abandon(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps(LEGACY))
        await ws.send_str(json.dumps({"text": "q" * 400}))
        await ws.send_str(json.dumps({"eof": True}))
        await ws.close()  # the pitfall: a close frame after eof abandons the request
    rec = await finished(server)
    assert (rec.closed_by, rec.client_closed_early) == ("client", True)
    assert rec.commands == ["text", "eof"]
    assert rec.audio_bytes_sent < pcm_bytes("q" * 400)


@bounded(20)
async def test_default_engine_speaks() -> None:
    async with LocalLMNTServer() as srv:  # the best installed: neural, espeak, else the tone
        run = await converse(srv.ws_url, typed(), {"type": "text", "text": "Hello."},
                             {"type": "finish"})  # fmt: skip
    assert run.close_code == 1000 and len(run.audio) > 4800  # > 0.1 s of speech


@bounded(5)
async def test_client_close_abandons_the_session() -> None:
    async with LocalLMNTServer(engine=TONE, faults=Faults(pace=5.0)) as srv:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(json.dumps(LEGACY))
            await ws.send_str(json.dumps({"text": "z" * 100}))
            await ws.send_str(json.dumps({"eof": True}))
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY
            await ws.close()
        rec = await finished(srv)
        sent = rec.audio_bytes_sent
        await asyncio.sleep(0.3)
        assert rec.audio_bytes_sent == sent < pcm_bytes("z" * 100)
        assert (rec.closed_by, rec.close_code, rec.client_closed_early) == ("client", 1000, True)


@bounded(5)
async def test_wrong_path_is_404(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url + "-does-not-exist")
        assert info.value.status == 404
        async with http.get(server.http_url + "/nope") as resp:
            assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}


# -- faults -------------------------------------------------------------------------------


async def with_faults(faults: Faults, init: dict[str, Any], *commands: dict[str, Any]) -> Run:
    async with LocalLMNTServer(engine=TONE, faults=faults) as srv:
        return await converse(srv.ws_url, init, *commands, max_msg_size=0)


SAY = ({"text": "Hello world"}, {"eof": True})
SAY_TYPED = ({"type": "text", "text": "Hello world"}, {"type": "finish"})


@pytest.mark.parametrize("status", [401, 403, 429, 500])
@bounded(5)
async def test_fault_reject_handshake(status: int) -> None:
    async with LocalLMNTServer(engine=TONE, faults=Faults(reject_handshake_status=status)) as srv:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(srv.ws_url)
            assert info.value.status == status
            async with http.get(srv.ws_url.replace("ws", "http", 1)) as resp:
                assert resp.status == status and "error" in await resp.json()


@bounded(5)
async def test_fault_latency_delays_every_message_without_adding_up() -> None:
    run = await with_faults(Faults(latency=0.3), typed("1.2"), *SAY_TYPED)
    assert run.first("json") >= 0.55  # handshake + ready
    spread = run.events[-1][2] - run.events[0][2]
    assert spread < 0.25  # pipelined: later messages are not delayed again
    assert len(run.audio) == pcm_bytes("Hello world")


@bounded(5)
async def test_fault_processing_delay_and_pace() -> None:
    run = await with_faults(Faults(processing_delay=0.4), LEGACY, *SAY)
    assert 0.4 <= run.first("binary") < 1.5
    text = "a" * 12  # 0.6 s of audio, real time
    run = await with_faults(Faults(pace=1.0), LEGACY, {"text": text}, {"eof": True})
    took = run.events[-1][2] - run.events[0][2]
    assert 0.6 - 4096 / 48000 - 0.05 <= took < 1.2
    assert len(run.audio) == pcm_bytes(text)


@pytest.mark.parametrize("version", [None, "1.2"])
@bounded(5)
async def test_fault_error_before_audio(version: str | None) -> None:
    init = typed(version) if version else LEGACY
    run = await with_faults(Faults(error_before_audio="engine on fire"), init, *SAY)
    assert run.close_code == 1011 and run.audio == b""
    err = run.messages()[-1]
    assert err["error"] == (
        {"type": "internal_server_error", "message": "engine on fire"}
        if version
        else "engine on fire"
    )


@bounded(5)
async def test_fault_error_after_bytes() -> None:
    run = await with_faults(Faults(error_after_bytes=(5000, "later")), LEGACY, *SAY)
    assert run.close_code == 1011
    assert 5000 <= len(run.audio) < pcm_bytes("Hello world")
    assert run.kinds[-1] == "json" and run.messages()[-1] == {"error": "later"}


@bounded(5)
async def test_fault_drops() -> None:
    run = await with_faults(Faults(drop_after_bytes=6000), LEGACY, *SAY)
    assert run.close_code == 1006 and run.messages() == []
    assert 6000 <= len(run.audio) < pcm_bytes("Hello world")
    run = await with_faults(Faults(drop_before_audio=True), typed(), *SAY_TYPED)
    assert run.close_code == 1006 and run.audio == b""


@bounded(5)
async def test_fault_hangs() -> None:
    for faults, expect_audio in ((Faults(hang_after_init=True), False),
                                 (Faults(hang_after_bytes=1), True)):  # fmt: skip
        async with LocalLMNTServer(engine=TONE, faults=faults) as srv:
            async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
                await ws.send_str(json.dumps(typed()))
                for command in SAY_TYPED:
                    await ws.send_str(json.dumps(command))
                run = Run()
                with pytest.raises(TimeoutError):
                    while True:
                        async with asyncio.timeout(0.4):
                            await read_one(ws, run)
                assert not ws.closed
                if expect_audio:  # ready and some audio, then silence
                    assert run.messages("ready") and 0 < len(run.audio) < pcm_bytes("Hello world")
                else:
                    assert run.events == []  # not even ready
                assert srv.sessions[0].closed_by is None  # the server never closed


@bounded(5)
async def test_fault_framing() -> None:
    run = await with_faults(Faults(odd_frames=True), LEGACY, *SAY)
    sizes = [len(b) for b in run.binaries]  # each 4096-byte frame cut into 333s and 1001s
    assert max(sizes) == 1001 and {333, 1001} <= set(sizes)
    assert len(run.audio) == pcm_bytes("Hello world")
    run = await with_faults(Faults(empty_frames=True), LEGACY, *SAY)
    assert sum(1 for b in run.binaries if b == b"") == sum(1 for b in run.binaries if b)
    run = await with_faults(Faults(oversized_frame_bytes=100_000), LEGACY, *SAY)
    assert len(run.binaries[0]) == 100_000 and run.binaries[0] == bytes(100_000)
    run = await with_faults(
        Faults(slow_drip=0.002, drip_bytes=64), LEGACY, {"text": "a"}, {"eof": True}
    )
    assert all(len(b) <= 64 for b in run.binaries) and len(run.audio) == pcm_bytes("a")
    assert run.events[-1][2] - run.events[0][2] >= 0.002 * (len(run.binaries) - 1)


@pytest.mark.parametrize("version", [None, "1.2"])
@bounded(5)
async def test_fault_bad_messages_before_audio(version: str | None) -> None:
    init = typed(version) if version else LEGACY
    commands = SAY_TYPED if version else SAY
    run = await with_faults(Faults(malformed_json=True, unknown_message=True), init, *commands)
    first_binary = run.kinds.index("binary")
    texts = [d for k, d, _ in run.events[:first_binary] if k == "text"]
    jsons = [d for k, d, _ in run.events[:first_binary] if k == "json"]
    assert texts == ["{not json"]
    assert ({"type": "surprise"} if version else {"surprise": 1}) in jsons
    assert run.close_code == 1000


@bounded(5)
async def test_fault_close_code_and_composition() -> None:
    faults = Faults(close_code=4000, latency=0.05, odd_frames=True, empty_frames=True)
    run = await with_faults(faults, LEGACY, *SAY)
    assert run.close_code == 4000
    assert len(run.audio) == pcm_bytes("Hello world")
    assert b"" in run.binaries and 1001 in [len(b) for b in run.binaries]


@bounded(5)
async def test_faults_apply_to_new_connections_only(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws_url) as ws:
        await ws.send_str(json.dumps(LEGACY))
        server.faults = Faults(error_before_audio="nope")
        for command in SAY:
            await ws.send_str(json.dumps(command))
        run = await read_all(ws, Run())
    assert run.close_code == 1000 and len(run.audio) == pcm_bytes("Hello world")
    later = await converse(server.ws_url, LEGACY, *SAY)
    assert later.close_code == 1011


# -- formats ------------------------------------------------------------------------------


@bounded(8)
async def test_ulaw_header_once_and_compressed_formats(server: LocalLMNTServer) -> None:
    text = "First one. Second one."
    run = await converse(server.ws_url, {**LEGACY, "format": "ulaw", "sample_rate": 8000},
                         {"text": text}, {"eof": True})  # fmt: skip
    assert run.audio[:4] == b"RIFF" and run.audio.count(b"RIFF") == 1
    assert len(run.audio) == 44 + len(text) * 400
    for fmt in ("mp3", "webm", "pcm_f32le", "raw"):
        run = await converse(
            server.ws_url, {**LEGACY, "format": fmt}, {"text": text}, {"eof": True}
        )
        assert run.close_code == 1000 and len(run.audio) > 1000, fmt


# -- HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@bounded(5)
async def test_http_bytes_pcm_length_matches_tone(server: LocalLMNTServer, rate: int) -> None:
    body = {"text": "Hello world", "voice": "ava", "format": "pcm_s16le", "sample_rate": rate}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.http_url + "/v1/ai/speech/bytes", json=body, headers={"X-API-Key": "k"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/vnd.lmnt.audio-int16"
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert resp.headers["request-id"].startswith("req_")
            audio = await resp.read()
    assert len(audio) == pcm_bytes("Hello world", rate)


@bounded(5)
async def test_http_bytes_form_formats_and_errors() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={"sesame"}) as srv:
        url = srv.http_url + "/v1/ai/speech/bytes"
        ok = {"X-API-Key": "sesame"}
        async with aiohttp.ClientSession() as http:
            form = {"text": "Hi", "voice": "ava", "format": "wav", "sample_rate": "16000"}
            async with http.post(url, data=form, headers=ok) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
                wav = await resp.read()
            assert wav[:4] == b"RIFF" and len(wav) == 44 + pcm_bytes("Hi", 16000)
            body = {"text": "Hi", "voice": "ava", "format": "aac"}
            async with http.post(url, json=body, headers=ok) as resp:
                assert resp.status == 200 and len(await resp.read()) > 0
            body = {"text": "x" * 5001, "voice": "ava"}
            async with http.post(url, json=body, headers=ok) as resp:
                assert resp.status == 422
                assert (await resp.json())["detail"][0]["loc"] == ["body", "text"]
            body = {"text": "x" * 5000, "voice": "ava", "format": "pcm_s16le"}
            async with http.post(url, json=body, headers=ok) as resp:
                assert resp.status == 200 and len(await resp.read()) == pcm_bytes("x" * 5000)
            for bad in ({"text": "Hi", "voice": "ava", "model": None},
                        {"text": "Hi", "voice": "ava", "format": "flac"},
                        {"voice": "ava"}):  # fmt: skip
                async with http.post(url, json=bad, headers=ok) as resp:
                    assert resp.status == 422, bad
            body = {"text": "Hi", "voice": "ava"}
            async with http.post(url, json=body, headers={"X-API-Key": "wrong"}) as resp:
                assert resp.status == 403
                assert await resp.json() == {"error": "Invalid API key"}
            async with http.post(url, json=body) as resp:
                assert resp.status == 401
                assert await resp.json() == {"error": "Invalid API key"}


@bounded(5)
async def test_http_voice_list_and_health(server: LocalLMNTServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.http_url + "/v1/ai/voice/list") as resp:
            assert resp.status == 401  # LMNT's REST API wants a key here too
        async with http.get(
            server.http_url + "/v1/ai/voice/list", headers={"X-API-Key": "any"}
        ) as resp:
            voices = await resp.json()
        async with http.get(server.http_url + "/health_check") as resp:
            assert resp.status == 200
    assert isinstance(voices, list)
    assert [v["id"] for v in voices] == [v.id for v in TONE.voices()]
    assert {"id", "name", "owner", "state", "type"} <= set(voices[0])


# -- lifecycle ----------------------------------------------------------------------------


@bounded(6)
async def test_stop_sends_1001_within_2_seconds() -> None:
    srv = await start_local_server(faults=Faults(hang_after_init=True))
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(srv.ws_url) for _ in range(3)]
        for ws in sockets:
            await ws.send_str(json.dumps(LEGACY))
        idle = await http.ws_connect(srv.ws_url)  # never sent init
        readers = [asyncio.create_task(read_all(ws, Run())) for ws in [*sockets, idle]]
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        await srv.stop()
        assert time.monotonic() - t0 < 2.0
        runs = await asyncio.gather(*readers)
    assert [r.close_code for r in runs] == [1001] * 4
    assert all(r.events[-1][2] - t0 < 2.0 for r in runs if r.events)
    assert [r.close_code for r in srv.sessions] == [1001] * 4


@bounded(6)
async def test_concurrent_sessions_are_independent(server: LocalLMNTServer) -> None:
    texts = [f"session number {n}" for n in "one two three four five six seven eight".split()]
    runs = await asyncio.gather(
        *(converse(server.ws_url, LEGACY, {"text": t}, {"eof": True}) for t in texts)
    )
    assert [len(r.audio) for r in runs] == [pcm_bytes(t) for t in texts]
    assert sorted(r.text for r in server.sessions) == sorted(texts)


@bounded(5)
async def test_fixtures_plain_and_tls(
    lmnt_server: LocalLMNTServer,  # noqa: F811
    lmnt_tls_server: LocalLMNTServer,  # noqa: F811
) -> None:
    assert lmnt_server.ws_url.startswith("ws://127.0.0.1:")
    assert lmnt_tls_server.ws_url.startswith("wss://127.0.0.1:")
    assert lmnt_tls_server.http_url == f"https://127.0.0.1:{lmnt_tls_server.port}"
    run = await converse(lmnt_server.ws_url, typed(), *SAY_TYPED)
    assert len(run.audio) == pcm_bytes("Hello world")
    ctx = lmnt_tls_server.client_ssl_context
    assert ctx is not None
    run = await converse(lmnt_tls_server.ws_url, typed(), *SAY_TYPED, ssl=ctx)
    assert run.close_code == 1000 and len(run.audio) == pcm_bytes("Hello world")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorError):  # untrusted without the context
            await http.ws_connect(lmnt_tls_server.ws_url)
