"""Security: the key stays secret, TLS is verified, and one client cannot hurt another.

* The API key never appears in any log record (root logger at DEBUG: aiohttp, asyncio,
  videosdk and this plugin), ``repr``, exception text or ``"error"`` event, on the success
  path and on every failure path, including a server that echoes the key back.
* TLS is verified by default; ``ssl=`` and ``ca_file=`` trust a private CA; a certificate for
  another host is refused even from a trusted CA.
* Plain ``ws://`` to a public host is refused at construction unless ``allow_insecure=True``
  or ``LMNT_ALLOW_INSECURE=1``; private and cluster hosts are allowed (nothing is sent anywhere
  by those tests, and no name is resolved).
* The local server binds loopback by default, compares keys in constant time and accepts only
  the configured ones.
* A flood of oversized, malformed and abusive frames on some connections does not disturb a
  session that keeps getting correct audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from videosdk.agents.tts.fallback_tts import FallbackTTS

from lmnt_local.protocol import SessionOptions
from lmnt_local.server import Faults, LocalLMNTServer, ServerConfig, ToneEngine
from lmnt_local.server.api import keys as server_keys
from videosdk.plugins.lmnt import (
    LMNTTTS,
    LMNTConnectionError,
    LMNTError,
)

from audio_helpers import active_span, estimate_pitch
from track_helpers import TRACK_RATE, FlushMarker, aiter_of, make_track, speak

KEY = "sk-SECRET-7f3a9c1e5b2d4f6a8c0e"
TONE = ToneEngine()


def _leaks(text: object) -> bool:
    s = str(text)
    return KEY in s or KEY[3:] in s or KEY[-12:] in s


# -- log capture ---------------------------------------------------------------------------


class _Everything(logging.Handler):
    """Keeps every record, formatted as a log file would have it, traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception as exc:  # a record that cannot be formatted is a failure of its own
            self.lines.append(f"UNFORMATTABLE {record.name}: {exc!r}")


@pytest.fixture
def all_logs() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    names = ["", "aiohttp", "aiohttp.client", "aiohttp.server", "aiohttp.websocket",
             "aiohttp.access", "asyncio", "videosdk", "videosdk.agents", "videosdk.plugins",
             "videosdk.plugins.lmnt", "lmnt_local.server"]  # fmt: skip
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def test_the_log_check_can_fail(all_logs: _Everything) -> None:
    """The detector sees a key logged anywhere, even deep in a traceback."""
    try:
        raise RuntimeError(f"oops {KEY}")
    except RuntimeError:
        logging.getLogger("somewhere.else").debug("failed", exc_info=True)
    assert any(_leaks(line) for line in all_logs.lines)


# -- every path, once, with everything observed ---------------------------------------------


class Observed:
    """What a scenario exposed: exceptions, error events, reprs."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def exc(self, exc: BaseException) -> None:
        self.texts += [str(exc), repr(exc), repr(exc.args)]
        if isinstance(exc, LMNTError):
            self.texts += [str(exc.server_message), str(exc.request_id), str(exc.error_type)]

    def tts(self, tts: LMNTTTS) -> list[str]:
        self.texts += [repr(tts), str(tts), repr(tts._options())]
        events: list[str] = []
        tts.on("error", lambda msg: events.append(str(msg)))
        return events


def _free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/v1/ai/speech/stream"


def _echo_faults(where: str) -> Faults:
    """A server that repeats the key back in ``where`` of an error it sends before audio."""
    if where == "legacy error":
        frame = json.dumps({"error": f"Invalid API key: {KEY}"})
    elif where == "typed error message":
        frame = json.dumps({"type": "error", "error": {"type": "authentication_error",
                            "message": f"bad key {KEY}"}})  # fmt: skip
    elif where == "typed error type":
        frame = json.dumps({"type": "error", "error": {"type": KEY, "message": "no"}})
    elif where == "typed request_id":
        frame = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                            "message": "no"}, "request_id": f"req_{KEY}"})  # fmt: skip
    elif where == "ready request_id":
        return Faults(script=(json.dumps({"type": "ready", "request_id": KEY}),
                              '{"error":"later"}'), close_code=1011)  # fmt: skip
    elif where == "close reason":
        return Faults(script=(), close_code=1011, close_reason=f"bye {KEY}")
    elif where == "unknown message":
        frame = json.dumps({"type": KEY})
    else:
        raise AssertionError(where)
    return Faults(script=(frame,), close_code=1011)


Scenario = Callable[[LocalLMNTServer, Observed], Awaitable[None]]


def _tts(url: str, **kw: Any) -> LMNTTTS:
    kw.setdefault("api_key", KEY)
    kw.setdefault("receive_timeout", 0.4)
    kw.setdefault("connect_timeout", 1.0)
    kw.setdefault("retry_backoff", 0.01)
    return LMNTTTS(ws_url=url, **kw)


async def _turn(obs: Observed, tts: LMNTTTS, text: Any = "Hello there.", bound: float = 3) -> None:
    tts.audio_track = tts.audio_track or make_track()
    events = obs.tts(tts)
    try:
        async with asyncio.timeout(bound):
            await tts.synthesize(text)
    except LMNTError as exc:
        obs.exc(exc)
    finally:
        obs.texts += events
        await tts.aclose()


def _fault(faults: Faults, **kw: Any) -> Scenario:
    async def run(server: LocalLMNTServer, obs: Observed) -> None:
        server.faults = faults
        await _turn(obs, _tts(server.ws_url, **kw))

    return run


async def _success(server: LocalLMNTServer, obs: Observed) -> None:
    for version in ("1.0", "1.2"):
        tts = _tts(server.ws_url, protocol_version=version, word_timestamps=True)
        await tts.prewarm()
        obs.tts(tts)
        pcm = await speak(tts, aiter_of(["Hello.", "World.", FlushMarker()]))
        assert pcm
        await tts.aclose()


async def _refused(server: LocalLMNTServer, obs: Observed) -> None:
    await _turn(obs, _tts(_free_url()))


async def _bad_key(server: LocalLMNTServer, obs: Observed) -> None:
    server.api_keys = frozenset({"the-good-key"})
    try:
        for version in ("1.0", "1.2"):
            await _turn(obs, _tts(server.ws_url, protocol_version=version))
            tts = _tts(server.ws_url, protocol_version=version)
            await tts.prewarm()
            await asyncio.sleep(0.05)
            await _turn(obs, tts)
    finally:
        server.api_keys = None


async def _tls_untrusted(server: LocalLMNTServer, obs: Observed) -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    async with LocalLMNTServer(engine=TONE, ssl_context=ctx) as tls:
        await _turn(obs, _tts(tls.ws_url))


async def _interrupt_cancel_aclose(server: LocalLMNTServer, obs: Observed) -> None:
    server.faults = Faults(pace=2.0)
    for action in ("interrupt", "cancel", "aclose"):
        tts = _tts(server.ws_url)
        tts.audio_track = make_track()
        obs.tts(tts)
        task = asyncio.create_task(tts.synthesize("A sentence that takes a while to say."))
        await asyncio.sleep(0.3)
        if action == "interrupt":
            await tts.interrupt()
        elif action == "cancel":
            task.cancel()
        else:
            await tts.aclose()
        with contextlib.suppress(asyncio.CancelledError, LMNTError):
            async with asyncio.timeout(2):
                await task
        await tts.aclose()


async def _fallback(server: LocalLMNTServer, obs: Observed) -> None:
    server.faults = Faults()
    bad = _tts(server.ws_url, api_key=KEY)
    server.api_keys = frozenset({"the-good-key"})
    good = _tts(server.ws_url, api_key="the-good-key")
    fallback = FallbackTTS([bad, good], temporary_disable_sec=60)
    fallback.audio_track = make_track()
    errors: list[str] = []
    fallback.on("error", lambda msg: errors.append(str(msg)))
    try:
        async with asyncio.timeout(3):
            await fallback.synthesize("Hello there.")  # a str: the next provider gets it whole
    finally:
        server.api_keys = None
        await fallback.aclose()
        await bad.aclose()
        await good.aclose()
    assert errors
    obs.texts += errors


SCENARIOS: dict[str, Scenario] = {
    "success (legacy and typed, prewarm, word timestamps)": _success,
    "connection refused": _refused,
    "TLS untrusted": _tls_untrusted,
    "handshake 401": _fault(Faults(reject_handshake_status=401)),
    "handshake 500": _fault(Faults(reject_handshake_status=500)),
    "invalid key (cold and prewarmed, legacy and typed)": _bad_key,
    "error before audio": _fault(Faults(error_before_audio="model overloaded")),
    "error after audio": _fault(Faults(error_after_bytes=(4000, "exploded"))),
    "drop before audio": _fault(Faults(drop_before_audio=True)),
    "drop mid-audio": _fault(Faults(drop_after_bytes=4000)),
    "silent server": _fault(Faults(hang_after_init=True)),
    "malformed JSON": _fault(Faults(malformed_json=True)),
    "server echoes the key in a legacy error": _fault(_echo_faults("legacy error")),
    "server echoes the key in a typed error": _fault(
        _echo_faults("typed error message"), protocol_version="1.2"
    ),
    "interrupt, cancel, aclose mid-turn": _interrupt_cancel_aclose,
    "FallbackTTS after a rejected key": _fallback,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_key_never_leaks(
    name: str, all_logs: _Everything, lmnt_server: LocalLMNTServer
) -> None:
    obs = Observed()
    await SCENARIOS[name](lmnt_server, obs)
    await asyncio.sleep(0.05)  # let background closes log what they log
    leaked_logs = [line for line in all_logs.lines if _leaks(line)]
    leaked = [t for t in obs.texts if _leaks(t)]
    assert not leaked_logs, leaked_logs[:3]
    assert not leaked, leaked[:3]
    assert all_logs.lines, "nothing was logged: the capture is not working"
    for rec in lmnt_server.sessions:  # the server's own record masks the key too
        assert not _leaks(rec) and not _leaks(rec.init)


@pytest.mark.parametrize(
    "where",
    [
        "legacy error",
        "typed error message",
        "typed error type",
        "typed request_id",
        "ready request_id",
        "close reason",
        "unknown message",
    ],
)
async def test_key_echoed_by_the_server_is_scrubbed(
    where: str, all_logs: _Everything, lmnt_server: LocalLMNTServer
) -> None:
    """Whatever part of a frame a server echoes the key in, it reaches no log or error."""
    obs = Observed()
    lmnt_server.faults = _echo_faults(where)
    await _turn(obs, _tts(lmnt_server.ws_url, protocol_version="1.2", max_retries=0))
    assert any("LMNT" in t for t in obs.texts), obs.texts  # the turn did fail
    leaked = [t for t in obs.texts if _leaks(t)] + [ln for ln in all_logs.lines if _leaks(ln)]
    assert not leaked, leaked[:3]


def test_reprs_and_options_hide_the_key() -> None:
    tts = LMNTTTS(api_key=KEY, ws_url="ws://127.0.0.1:9/x")
    options = SessionOptions(api_key=KEY, voice="ava")
    for text in (repr(tts), str(tts), repr(options), str(options), repr(tts._pool.settings)):
        assert not _leaks(text), text
    assert tts.api_key == KEY  # 1.0.30's public attribute still works
    assert json.loads(options.encode_init())["X-API-Key"] == KEY  # only on the wire


def test_missing_key_error_does_not_echo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMNT_API_KEY", raising=False)
    with pytest.raises(ValueError, match="API key must be provided"):
        LMNTTTS(ws_url="ws://127.0.0.1:9/x")


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


def _server_ctx(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


async def test_tls_is_verified_by_default(lmnt_tls_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_tls_server.ws_url, max_retries=0)
    tts.audio_track = make_track()
    t0 = time.monotonic()
    with pytest.raises(LMNTConnectionError, match="certificate") as info:
        async with asyncio.timeout(2):
            await tts.synthesize("Hello.")
    assert time.monotonic() - t0 < 1.0
    assert "ssl=" in str(info.value)  # tells the user how to trust a private CA
    assert lmnt_tls_server.sessions == []  # nothing, not even the init frame, got through
    await tts.aclose()


async def test_ssl_context_trusts_a_private_ca(lmnt_tls_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_tls_server.ws_url, ssl=lmnt_tls_server.client_ssl_context)
    try:
        pcm = await speak(tts, "Hello there.", timeout=4)
    finally:
        await tts.aclose()
    start, end = active_span(pcm, TRACK_RATE)
    assert abs((end - start) - TONE.duration_of("Hello there.")) < 0.03


async def test_ca_file_trusts_a_private_ca(private_ca: tuple[trustme.CA, Path]) -> None:
    ca, path = private_ca
    async with LocalLMNTServer(engine=TONE, ssl_context=_server_ctx(ca, "127.0.0.1")) as srv:
        tts = _tts(srv.ws_url, ca_file=str(path))
        try:
            pcm = await speak(tts, "Hello there.", timeout=4)
        finally:
            await tts.aclose()
        assert abs(estimate_pitch(pcm, TRACK_RATE) - 440) < 4.4
        assert srv.sessions[0].texts == ["Hello there. "]  # the space: the sentence is complete


async def test_trusted_ca_but_wrong_host_is_refused(private_ca: tuple[trustme.CA, Path]) -> None:
    ca, path = private_ca
    ctx = _server_ctx(ca, "lmnt.example.org")  # valid chain, not this host's name
    async with LocalLMNTServer(engine=TONE, ssl_context=ctx) as srv:
        tts = _tts(srv.ws_url, ca_file=str(path), max_retries=0)
        tts.audio_track = make_track()
        with pytest.raises(LMNTConnectionError, match="certificate"):
            async with asyncio.timeout(2):
                await tts.synthesize("Hello.")
        await tts.aclose()
        assert srv.sessions == []


def test_unreadable_ca_file_fails_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match="ca_file"):
        LMNTTTS(api_key=KEY, ca_file=str(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="ca_file"):
        LMNTTTS(api_key=KEY, ca_file=str(garbage))


# -- plain ws:// ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ws://api.lmnt.com/v1/ai/speech/stream",
        "WS://api.lmnt.com/v1/ai/speech/stream",
        "ws://127.0.0.1.nip.io/x",
        "ws://10.0.0.7.nip.io/x",
        "ws://localhost.evil.example/x",
        "ws://tts.example.com:8765/x",
        "ws://local.example.com/x",
        "ws://0.0.0.0:8765/x",
        "ws://8.8.8.8/x",
        "ws://100.64.0.1/x",
        "ws://172.32.0.1/x",
        "ws://[2001:db8::1]/x",
        "ws://[::ffff:8.8.8.8]/x",
        "ws://user:pw@api.example.com/x",
    ],
)
def test_plain_ws_to_a_public_host_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMNT_ALLOW_INSECURE", raising=False)
    with pytest.raises(ValueError, match="allow_insecure") as info:
        LMNTTTS(api_key=KEY, ws_url=url)
    assert "LMNT_ALLOW_INSECURE=1" in str(info.value)  # both ways out are named
    assert "pw@" not in str(info.value)
    monkeypatch.setenv("LMNT_WS_URL", url)
    with pytest.raises(ValueError, match="allow_insecure"):
        LMNTTTS(api_key=KEY)
    assert LMNTTTS(api_key=KEY, ws_url=url, allow_insecure=True).ws_url == url
    for value in ("1", "true", "YES", "on"):
        monkeypatch.setenv("LMNT_ALLOW_INSECURE", value)
        assert LMNTTTS(api_key=KEY).ws_url == url
    monkeypatch.setenv("LMNT_ALLOW_INSECURE", "0")
    with pytest.raises(ValueError, match="allow_insecure"):
        LMNTTTS(api_key=KEY)


@pytest.mark.parametrize(
    "url",
    ["ws://127.0.0.1:8765/x", "ws://localhost:8765/x", "ws://[::1]:8765/x", "ws://127.8.9.10/x",
     "wss://api.lmnt.com/v1/ai/speech/stream", "wss://10.0.0.7/x",
     # private networks and cluster names: the self-hosted case (issue 10, item 18)
     "ws://10.0.0.7/v1/ai/speech/stream", "ws://172.16.5.4:8765/x", "ws://172.31.255.1/x",
     "ws://192.168.1.20:8765/x", "ws://169.254.10.1/x", "ws://[fd12:3456::1]:8765/x",
     "ws://[fe80::1%25eth0]:8765/x", "ws://[::ffff:10.0.0.1]/x", "ws://tts:8765/v1/ai/speech/stream",
     "ws://TTS./x", "ws://lmnt.voice.svc.cluster.local:8765/x", "ws://lmnt.voice.svc/x",
     "ws://tts.internal/x", "ws://speech-box.local/x", "ws://user:pw@tts:8765/x"],
)  # fmt: skip
def test_loopback_private_cluster_and_wss_are_allowed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LMNT_ALLOW_INSECURE", raising=False)
    assert LMNTTTS(api_key=KEY, ws_url=url).ws_url == url


def test_ws_url_decision_uses_no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allowed or refused from the literal host: a name is never resolved to decide."""

    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"DNS lookup {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    LMNTTTS(api_key=KEY, ws_url="ws://tts:8765/x")
    with pytest.raises(ValueError, match="allow_insecure"):
        LMNTTTS(api_key=KEY, ws_url="ws://speech.example.com/x")


def test_the_error_does_not_echo_the_key() -> None:
    with pytest.raises(ValueError) as info:
        LMNTTTS(api_key=KEY, ws_url="ws://api.example.com/x")
    assert not _leaks(info.value)


# -- the local server ------------------------------------------------------------------------


def _listening_addresses(port: int) -> list[str]:
    """Local addresses listening on ``port``, from the kernel's socket tables."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                addr, hexport = fields[1].split(":")
                if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                    found.append(addr)
    return found


async def test_local_server_binds_loopback_by_default() -> None:
    server = LocalLMNTServer(engine=TONE)
    assert server.host == "127.0.0.1"
    await server.start()
    try:
        assert _listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, nothing else
        assert server.ws_url.startswith("ws://127.0.0.1:")
    finally:
        await server.stop()


def test_cli_serves_on_loopback_by_default() -> None:
    from lmnt_local.cli import app as cli

    args = cli._build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


def test_key_check_is_constant_time_and_compares_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = inspect.getsource(server_keys.key_allowed)
    assert "hmac.compare_digest" in source
    assert "==" not in source.replace("hmac.compare_digest", "")
    calls: list[tuple[bytes, bytes]] = []
    real = server_keys.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_keys.hmac, "compare_digest", spy)
    keys = ["key-one", "key-two", "key-three"]
    assert server_keys.key_allowed("key-one", keys)
    assert len(calls) == 3  # no early exit on the first match: timing does not tell which
    calls.clear()
    assert not server_keys.key_allowed("key-on", keys)
    assert len(calls) == 3
    assert not server_keys.key_allowed("", keys)
    assert not server_keys.key_allowed("", None)
    assert server_keys.key_allowed("anything", None)


@pytest.mark.parametrize(
    ("key", "accepted"),
    [("key-one", True), ("key-two", True), ("key-three", False), ("key-on", False),
     ("key-one ", False), ("KEY-ONE", False), ("key-one\u0000", False), ("", False)],
)  # fmt: skip
async def test_server_accepts_only_configured_keys(key: str, accepted: bool) -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={"key-one", "key-two"}) as srv:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(srv.ws_url) as ws:
                await ws.send_str(json.dumps({"X-API-Key": key, "voice": "ava"}))
                await ws.send_str(json.dumps({"text": "Hi."}))
                await ws.send_str(json.dumps({"eof": True}))
                got_audio = False
                async with asyncio.timeout(3):
                    async for msg in ws:
                        got_audio |= msg.type is aiohttp.WSMsgType.BINARY
            assert got_audio is accepted
            assert ws.close_code == (1000 if accepted else 1002)
            if key != key.strip() or not key.isprintable():
                return  # HTTP trims header whitespace and forbids control characters
            # The HTTP endpoint applies the same rule.
            async with session.post(
                f"{srv.http_url}/v1/ai/speech/bytes",
                headers={"X-API-Key": key},
                data={"text": "Hi.", "voice": "ava", "format": "raw"},
            ) as resp:
                assert (resp.status == 200) is accepted, resp.status


# -- abuse on other connections does not disturb a good session ------------------------------


async def _abuser(url: str, kind: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Opens connection after connection and misbehaves on each, until told to stop."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            try:
                async with session.ws_connect(url, max_msg_size=0) as ws:
                    if kind != "bad init":
                        await ws.send_str(json.dumps({"X-API-Key": "k", "voice": "ava"}))
                    if kind == "oversized text":
                        await ws.send_str("x" * 40_000)  # over max_frame_bytes: error + 1009
                    elif kind == "huge frame":
                        await ws.send_bytes(bytes(600_000))  # over the reader's hard cap
                    elif kind == "malformed":
                        await ws.send_str("{not json")
                    elif kind == "binary":
                        await ws.send_bytes(b"\x00\x01")
                    elif kind == "bad init":
                        await ws.send_str(json.dumps({"voice": None, "X-API-Key": "k"}))
                    elif kind == "rate flood":
                        for _ in range(300):
                            await ws.send_str('{"text":"a"}')
                    elif kind == "text limit":
                        for _ in range(30):
                            await ws.send_str(json.dumps({"text": "word " * 1000}))
                    async with asyncio.timeout(2):
                        async for _msg in ws:
                            pass
                    counts[kind] = counts.get(kind, 0) + 1
                    counts[f"{kind} close {ws.close_code}"] = (
                        counts.get(f"{kind} close {ws.close_code}", 0) + 1
                    )
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                counts[f"{kind} transport error"] = counts.get(f"{kind} transport error", 0) + 1


ABUSE = ["oversized text", "huge frame", "malformed", "binary", "bad init", "rate flood",
         "text limit"]  # fmt: skip


async def test_flood_of_bad_frames_does_not_disturb_a_good_session() -> None:
    config = ServerConfig(max_frame_bytes=32 * 1024, max_text_chars=20_000)
    async with LocalLMNTServer(engine=TONE, config=config) as srv:
        stop = asyncio.Event()
        counts: dict[str, int] = {}
        abusers = [asyncio.create_task(_abuser(srv.ws_url, kind, stop, counts)) for kind in ABUSE]
        tts = _tts(srv.ws_url, receive_timeout=2.0)
        try:
            await asyncio.sleep(0.2)  # the flood is on
            for i, number in enumerate(("zero", "one", "two", "three")):
                # words, not digits: the text front-end would say "0" as "zero" (and the tone
                # engine's duration is its character count)
                text = f"Turn number {number} is clean."
                pcm = await speak(tts, text, timeout=4)
                start, end = active_span(pcm, TRACK_RATE)
                assert abs((end - start) - TONE.duration_of(text)) < 0.03, i
                assert abs(estimate_pitch(pcm, TRACK_RATE) - 440) < 4.4, i
        finally:
            stop.set()
            async with asyncio.timeout(4):
                await asyncio.gather(*abusers, return_exceptions=True)
            await tts.aclose()
        for kind in ABUSE:
            assert counts.get(kind, 0) >= 1, (kind, counts)  # every kind of abuse happened
        assert counts.get("oversized text close 1009", 0) >= 1, counts
        assert counts.get("huge frame close 1009", 0) >= 1, counts
        assert counts.get("malformed close 1002", 0) >= 1, counts
        assert counts.get("binary close 1003", 0) >= 1, counts
        assert counts.get("rate flood close 1008", 0) >= 1, counts
        assert counts.get("text limit close 1008", 0) >= 1, counts
        async with asyncio.timeout(3):  # and the server let every abusive session go
            for rec in srv.sessions:
                await rec.done.wait()
