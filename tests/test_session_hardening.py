"""Issue 21 items 2, 4 and 13: WebSocket sessions that go idle, flood, or end.

Real server, real aiohttp client over loopback.  Assertions compare sessions with each other
(orderings, counts), never a wall-clock figure a busy machine could miss.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from lmnt_local.server import LocalLMNTServer, ServerConfig, ToneEngine

pytestmark = pytest.mark.asyncio

INIT = {"X-API-Key": "k", "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[str, int | None]:
    """The error text (if any) and close code of a session the server ends."""
    error = ""
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            error = json.loads(msg.data).get("error", error)
    return error, ws.close_code


async def test_idle_means_no_client_message_not_no_pong_or_no_flush() -> None:
    """Pongs (every 0.3 s here) and unflushed text never keep a silent client's session open,
    while a client that keeps talking stays; with the old per-receive timer all three stayed."""
    config = ServerConfig(idle_timeout=1.5, heartbeat=0.3)
    async with (
        LocalLMNTServer(ToneEngine(), config=config) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(srv.ws_url) as silent,  # autoping: answers the heartbeat
        http.ws_connect(srv.ws_url) as unflushed,
        http.ws_connect(srv.ws_url) as talking,
    ):
        for ws in (silent, unflushed, talking):
            await ws.send_str(json.dumps(INIT))
        await unflushed.send_str(json.dumps({"text": "Hello there, this has no end"}))
        ends = {
            "silent": asyncio.ensure_future(_closed_with(silent)),
            "unflushed": asyncio.ensure_future(_closed_with(unflushed)),
        }
        for _ in range(200):  # bounded: 200 messages, 0.2 s apart, at most
            if all(task.done() for task in ends.values()):
                break
            await talking.send_str(json.dumps({"text": " "}))
            await asyncio.sleep(0.2)
        still_talking = not talking.closed
        results = {name: task.result() for name, task in ends.items() if task.done()}
        for task in ends.values():
            task.cancel()
    assert set(results) == {"silent", "unflushed"}, "an idle session was never closed"
    for error, code in results.values():
        assert code == 1008 and "idle" in error
    assert still_talking, "the session of a client that kept talking was closed"


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")  # the module's asyncio mark
def test_text_buffer_splits_as_rescanning_the_whole_buffer_would() -> None:
    """Piece by piece, the buffer finds exactly the sentences that rescanning all the unflushed
    text after every piece (the old way, O(buffer) a message) found."""
    import random

    from lmnt_local.protocol import split_complete_sentences
    from lmnt_local.server.api.intake import TextBuffer

    rng = random.Random(21)
    alphabet = ["a", "b", " ", "  ", ".", "!", "?", '"', ")", "\n", "Dr.", "e.g. ", "\u3002"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 400)))
        buffer = TextBuffer()
        got: list[str] = []
        expected: list[str] = []
        rest = ""
        at = 0
        while at < len(text):
            piece = text[at : at + rng.randrange(1, 12)]
            at += len(piece)
            got += buffer.append(piece)
            sentences, rest = split_complete_sentences(rest + piece, keep_whitespace=True)
            expected += sentences
        assert got == expected
        assert buffer.blank == (not rest.strip())
        assert buffer.take() == rest
        assert buffer.blank and len(buffer) == 0


@pytest.mark.timeout(240)
async def test_appending_text_costs_the_new_text_not_the_whole_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """90,000 unflushed characters in 2,000 messages: the sentence scan sees each character a
    bounded number of times (the old code rescanned the whole buffer each time: ~90 million)."""
    from lmnt_local.server.api import intake

    scanned = 0
    real = intake.split_complete_sentences

    def counting(buffer: str, *, keep_whitespace: bool = False) -> tuple[list[str], str]:
        nonlocal scanned
        scanned += len(buffer)
        return real(buffer, keep_whitespace=keep_whitespace)

    monkeypatch.setattr(intake, "split_complete_sentences", counting)
    config = ServerConfig(max_messages_per_second=100_000)
    piece = "word " * 9  # 45 characters, no sentence end
    messages = 2000
    async with (
        LocalLMNTServer(ToneEngine(), config=config) as srv,
        aiohttp.ClientSession() as http,
        http.ws_connect(srv.ws_url) as ws,
    ):
        await ws.send_str(json.dumps(INIT))
        for i in range(messages):
            text = piece if i != messages // 2 else "End here. " + piece[10:]
            await ws.send_str(json.dumps({"text": text}))
        record = srv.sessions[0]
        for _ in range(6000):  # bounded: until the server has read every message
            if record.commands.count("text") == messages:
                break
            await asyncio.sleep(0.02)
        assert record.commands.count("text") == messages
    total = len(piece) * messages
    # Linear: a bounded tail per message, not O(buffer).
    assert scanned < 10 * total, scanned


def _flood(url: str, count: int, per_second: float, started: list[float]) -> tuple[int, str]:
    """A client in its own thread (the server's loop may be stalled): ``count`` text messages
    at ``per_second``; returns (close code, error text)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    error = ""
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps(INIT))
        started.append(1.0)
        try:
            for _ in range(count):
                ws.send(json.dumps({"text": "a"}))
                if per_second:
                    time.sleep(1 / per_second)
            ws.send(json.dumps({"eof": True}))
            for _ in range(100_000):
                message = ws.recv(timeout=60)
                if isinstance(message, str):
                    error = json.loads(message).get("error", error)
        except ConnectionClosed:
            pass
        code = ws.close_code
    return code if code is not None else 1006, error


@pytest.mark.timeout(240)
async def test_messages_queued_behind_a_late_loop_are_not_a_burst() -> None:
    """150 messages/s (under the 200/s limit) while the server's loop stalls for 1.5 s: the
    messages read at once afterwards arrived at 150/s, so the session lives; a real burst of
    3,000 at once (more than even the widest window, 6 s, allows) is still cut."""
    config = ServerConfig(max_messages_per_second=200)
    async with LocalLMNTServer(ToneEngine(), config=config) as srv:
        started: list[float] = []
        steady = asyncio.ensure_future(asyncio.to_thread(_flood, srv.ws_url, 450, 150, started))
        for _ in range(300):
            if started:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        time.sleep(1.5)  # noqa: ASYNC251 - the server's loop is late (a slow engine call, say)
        steady_code, steady_error = await steady
        burst_code, _ = await asyncio.to_thread(_flood, srv.ws_url, 3000, 0, [])
        burst = srv.sessions[-1]
    assert steady_code == 1000, (steady_code, steady_error)
    assert burst_code == 1008 and burst.error is not None and "rate limit" in burst.error


async def test_an_ended_session_is_freed_without_a_garbage_collection() -> None:
    """With the collector off, reference counting alone frees everything the server held for
    a finished session: the session, its WebSocket response, request and socket transport
    (the old code left cycles: about 7 KB a session until a full GC)."""
    import gc
    import weakref

    async with (
        LocalLMNTServer(ToneEngine()) as srv,
        aiohttp.ClientSession() as http,
    ):

        async def one() -> list[weakref.ref[object]]:
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_str(json.dumps(INIT))
                for _ in range(500):
                    if srv._live:
                        break
                    await asyncio.sleep(0.01)
                session = next(iter(srv._live))
                request = session._ws._req
                assert request is not None
                held: list[object] = [
                    session,
                    session._ws,
                    request,
                    request.transport,
                ]
                refs = [weakref.ref(o) for o in held]
                del session, request, held
                await ws.send_str(json.dumps({"text": "Hi."}))
                await ws.send_str(json.dumps({"eof": True}))
                async for _ in ws:
                    pass
            return refs

        await one()  # warm up (first-use caches)
        gc.collect()
        gc.disable()
        try:
            refs = await one()
            for _ in range(100):  # bounded: the server finishes closing on its side
                if all(r() is None for r in refs):
                    break
                await asyncio.sleep(0.02)
            alive = [type(r()).__name__ for r in refs if r() is not None]
        finally:
            gc.enable()
    assert alive == [], f"kept until a full GC: {alive}"
