"""Fault matrix: every failure a server or network can produce, each bounded, typed and clean.

Each row runs one turn of a real ``LMNTTTS`` against the local server (real TCP, the
framework's real audio track) with one fault injected and checks that:

* the turn ends within its bound;
* before audio it raises (and emits ``"error"``), after audio it emits and returns, always a
  typed :class:`LMNTError` whose message says what happened and never contains the key;
* no byte pushed to the track is odd-length, and a turn that played audio ends on a whole frame;
* the turn made the expected number of connection attempts (retries of transient failures);
* the next turn on the same instance speaks in full once the fault is gone;
* after ``tts.aclose()`` nothing is left: no open connection, no ``lmnt-*`` task, every server
  session ended.

Measured times land in a table printed by the last test (run with ``-s``) and written as
markdown to ``$LMNT_FAULT_TABLE`` when that is set, which is how ``docs/reliability.md`` gets
its table.  Timeouts are shortened for the matrix (connect 0.5 s, receive 0.5 s, backoff
0.02 s); the defaults are 10 s, 5 s and 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from videosdk.agents.room.output_stream import CustomAudioStreamTrack
from videosdk.agents.tts.fallback_tts import FallbackTTS

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import (
    LMNTTTS,
    LMNTAuthError,
    LMNTConnectionError,
    LMNTError,
    LMNTProtocolError,
    LMNTRateLimitError,
    LMNTServerError,
    LMNTTimeoutError,
)
from videosdk.plugins.lmnt.testing import make_tls_contexts, start_local_server

from audio_helpers import active_span
from track_helpers import TRACK_RATE, FlushMarker, free_port, make_track, speak

KEY = "sk-fault-matrix-0123456789abcdef"
SHORT = "Hello there."
LONG = ("This sentence keeps the server busy for a good while. " * 2).strip()
NEXT = "Next turn."
TONE = ToneEngine()
FRAME = 960  # 20 ms of s16 mono at the track's 24 kHz
LOG = "videosdk.plugins.lmnt"


# -- results table ---------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    outcome: str  # "raised", "emitted after audio", "returned", "CancelledError", "HUNG"
    error: str  # exception type name, or "-"
    retryable: str
    attempts: str
    seconds: float
    note: str = ""


RESULTS: dict[str, Row] = {}


def _record(row: Row) -> None:
    RESULTS[row.fault] = row


def _table() -> str:
    head = (
        "| fault | outcome | error type | retryable | attempts | time to error (s) | note |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.fault} | {r.outcome} | {r.error} | {r.retryable} | {r.attempts} "
        f"| {r.seconds:.3f} | {r.note} |"
        for r in RESULTS.values()
    ]
    return head + "\n".join(lines) + "\n"


# -- helpers -----------------------------------------------------------------------------------


class RecordingTrack(CustomAudioStreamTrack):  # type: ignore[misc]
    """The framework's real track, noting every ``add_new_bytes`` call (observation only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pushes: list[bytes] = []

    async def add_new_bytes(self, audio_data: bytes) -> None:
        self.pushes.append(audio_data)
        await super().add_new_bytes(audio_data)


def _lmnt_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith("lmnt-") and not t.done()
    )


def _attempts(caplog: pytest.LogCaptureFixture, since: int) -> int:
    """Connection attempts of a turn: one, plus one per logged retry."""
    return 1 + sum(
        1 for r in caplog.records[since:] if r.name == LOG and "retrying (" in r.getMessage()
    )


def _after_audio_error(caplog: pytest.LogCaptureFixture, since: int) -> LMNTError | None:
    """The exception behind an error emitted after audio (the adapter logs it as an argument)."""
    for r in caplog.records[since:]:
        if r.name == LOG and r.msg.startswith("LMNT: turn ended early") and r.args:
            arg = r.args[0] if isinstance(r.args, tuple) else None
            if isinstance(arg, LMNTError):
                return arg
    return None


def _tts(url: str, **kw: Any) -> LMNTTTS:
    kw.setdefault("api_key", KEY)
    kw.setdefault("connect_timeout", 0.5)
    kw.setdefault("receive_timeout", 0.5)
    kw.setdefault("retry_backoff", 0.02)
    kw.setdefault("warm_connection", False)
    return LMNTTTS(ws_url=url, **kw)


def _errors(tts: LMNTTTS) -> list[tuple[float, str]]:
    seen: list[tuple[float, str]] = []
    tts.on("error", lambda msg: seen.append((time.monotonic(), str(msg))))
    return seen


def _assert_clean_pushes(track: RecordingTrack) -> None:
    odd = [len(p) for p in track.pushes if not isinstance(p, bytes) or len(p) % 2]
    assert not odd, f"odd-length or non-bytes pushes: {odd[:5]}"


def _assert_tone(pcm: bytes, text: str) -> None:
    start, end = active_span(pcm, TRACK_RATE)
    want = TONE.duration_of(text)
    assert abs((end - start) - want) < 0.03, (end - start, want)


async def _next_turn_works(tts: LMNTTTS) -> None:
    pcm = await speak(tts, NEXT, timeout=4)
    _assert_tone(pcm, NEXT)


async def _assert_no_leak(tts: LMNTTTS, servers: list[LocalLMNTServer]) -> None:
    await tts.aclose()
    assert tts._pool.open_connections == 0
    async with asyncio.timeout(3):
        for server in servers:
            for rec in server.sessions:
                await rec.done.wait()
        while _lmnt_tasks():
            await asyncio.sleep(0.01)


async def _slow_text(first: str, pause: float) -> AsyncIterator[Any]:
    """A text stream that stalls before its end: the turn cannot send eof for ``pause`` s."""
    yield first
    await asyncio.sleep(pause)
    yield FlushMarker()


# -- the matrix --------------------------------------------------------------------------------


Endpoint = Literal["server", "refused", "blackhole", "tls", "badkey"]


@dataclass(frozen=True)
class Case:
    fault: str
    faults: Faults = field(default_factory=Faults)
    outcome: Literal["raised", "emitted after audio", "returned"] = "raised"
    error: type[LMNTError] | None = None
    match: str = ""
    attempts: int = 1
    text: str = SHORT
    slow_text: bool = False  # the text stream stalls before eof
    version: str = "1.0"
    endpoint: Endpoint = "server"
    bound: float = 1.5


def _c(*args: Any, xfail: str | None = None, **kw: Any) -> Any:
    case = Case(*args, **kw)
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(case, id=case.fault, marks=marks)


_BEFORE_AUDIO_CLOSES = (1001, 1002, 1003, 1008, 1009, 1011, 4000)
_AFTER_EOF_CLOSES = (1001, 1002, 1003, 1008, 1009, 1011, 4000)
_REFUSING = (1002, 1003, 1008, 1009)  # the request itself was refused: not retried

CASES = [
    _c("no fault (baseline)", outcome="returned"),
    _c("connection refused", error=LMNTConnectionError, match="could not connect",
       attempts=3, endpoint="refused"),
    _c("connect timeout (upgrade never answered)", error=LMNTTimeoutError, match="within 0.5 s",
       endpoint="blackhole"),
    _c("TLS: untrusted certificate", error=LMNTConnectionError, match="certificate",
       endpoint="tls"),
    _c("handshake 401", Faults(reject_handshake_status=401), error=LMNTAuthError, match="401"),
    _c("handshake 403", Faults(reject_handshake_status=403), error=LMNTAuthError, match="403"),
    # Retried after the server's ``retry-after: 1``, twice: about 2 s.
    _c("handshake 429", Faults(reject_handshake_status=429), error=LMNTRateLimitError,
       match="rate limited", attempts=3, bound=3.5),
    _c("handshake 500", Faults(reject_handshake_status=500), error=LMNTServerError,
       match="500", attempts=3),
    _c("handshake 503", Faults(reject_handshake_status=503), error=LMNTServerError,
       match="503", attempts=3),
    _c("handshake 400", Faults(reject_handshake_status=400), error=LMNTConnectionError,
       match="400"),
    _c("handshake 404", Faults(reject_handshake_status=404), error=LMNTConnectionError,
       match="no LMNT endpoint"),
    _c("invalid key (error frame, close 1002)", error=LMNTAuthError, match="Invalid API key",
       endpoint="badkey"),
    _c("invalid key, typed 1.2", error=LMNTAuthError, match="Invalid API key", version="1.2",
       endpoint="badkey"),
    _c("error frame before audio", Faults(error_before_audio="model overloaded"),
       error=LMNTServerError, match="model overloaded"),
    _c("error frame before audio, typed 1.2 (internal_server_error)",
       Faults(error_before_audio="model overloaded"), error=LMNTServerError,
       match="model overloaded", attempts=3, version="1.2"),
    _c("error frame after audio", Faults(error_after_bytes=(4000, "synthesis exploded")),
       outcome="emitted after audio", error=LMNTServerError, match="synthesis exploded",
       text=LONG),
    _c("dropped before audio", Faults(drop_before_audio=True), error=LMNTConnectionError,
       match="before any audio", attempts=3),
    _c("dropped before audio, typed 1.2", Faults(drop_before_audio=True),
       error=LMNTConnectionError, match="before any audio", attempts=3, version="1.2"),
    _c("dropped mid-audio", Faults(drop_after_bytes=4000), outcome="emitted after audio",
       error=LMNTConnectionError, match="mid-stream", text=LONG),
    _c("silent after init (no audio)", Faults(hang_after_init=True), error=LMNTTimeoutError,
       match="sent nothing for 0.5 s"),
    _c("silent mid-stream", Faults(hang_after_bytes=4000), outcome="emitted after audio",
       error=LMNTTimeoutError, match="sent nothing for 0.5 s", text=LONG),
    _c("slow drip (2 B every 50 ms)", Faults(slow_drip=0.05, drip_bytes=2),
       outcome="emitted after audio", error=LMNTTimeoutError, match="slower than real time"),
    # Audio is owed only once the text has ended: a drip that starts while the caller's text
    # still streams (1 s here) is caught receive_timeout after the end of the text.
    _c("slow drip while the text still streams for 1 s", Faults(slow_drip=0.05, drip_bytes=2),
       outcome="emitted after audio", error=LMNTTimeoutError, match="slower than real time",
       text="One. Two. Three. Four.", slow_text=True, bound=2.5),
    _c("malformed JSON", Faults(malformed_json=True), error=LMNTProtocolError,
       match="invalid JSON"),
    _c("unknown message type", Faults(unknown_message=True), error=LMNTProtocolError,
       match="unexpected message"),
    _c("unknown message type, typed 1.2", Faults(unknown_message=True),
       error=LMNTProtocolError, match="surprise", version="1.2"),
    _c("odd-length binary frames", Faults(odd_frames=True), outcome="returned", text=LONG),
    _c("empty binary frames", Faults(empty_frames=True), outcome="returned"),
    _c("frame over the 4 MiB client limit", Faults(oversized_frame_bytes=5 * 1024 * 1024),
       error=LMNTProtocolError, match="exceeds limit"),
    _c("server closes 1000 before eof", Faults(script=(), script_after="text"),
       error=LMNTConnectionError, match="code 1000", attempts=3, slow_text=True),
    _c("server closes 1000 after eof, no audio", Faults(script=(), script_after="eof"),
       error=LMNTProtocolError, match="without any audio"),
    *(
        _c(f"server closes {code} before audio", Faults(script=(), close_code=code,
           script_after="text"), error=LMNTConnectionError, match=f"code {code}",
           attempts=1 if code in _REFUSING else 3)
        for code in _BEFORE_AUDIO_CLOSES
    ),
    *(
        _c(f"server closes {code} after all audio", Faults(close_code=code),
           outcome="emitted after audio", error=LMNTConnectionError, match=f"code {code}")
        for code in _AFTER_EOF_CLOSES
    ),
]  # fmt: skip


@contextlib.asynccontextmanager
async def _endpoint(case: Case) -> AsyncIterator[tuple[str, dict[str, Any], Any, list[Any]]]:
    """(url, extra tts options, heal() for the next turn or None, servers to check)."""
    servers: list[LocalLMNTServer] = []
    listener: socket.socket | None = None
    try:
        if case.endpoint in ("refused", "blackhole"):
            port = free_port()
            if case.endpoint == "blackhole":
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", port))
                listener.listen(0)

            async def heal_port() -> None:
                nonlocal listener
                if listener is not None:
                    listener.close()
                    listener = None
                servers.append(await start_local_server(port=port))

            url = f"ws://127.0.0.1:{port}/v1/ai/speech/stream"
            yield url, {}, heal_port, servers
        elif case.endpoint == "tls":
            server_ctx, _ = make_tls_contexts()
            server = await start_local_server(ssl_context=server_ctx)
            servers.append(server)
            yield server.ws_url, {}, None, servers
        else:
            keys = {"the-only-good-key"} if case.endpoint == "badkey" else None
            server = await start_local_server(api_keys=keys, faults=case.faults)
            servers.append(server)

            async def heal() -> None:
                server.faults = Faults()
                server.api_keys = None

            yield server.ws_url, {}, heal, servers
    finally:
        if listener is not None:
            listener.close()
        for server in servers:
            await server.stop()


@pytest.mark.parametrize("case", CASES)
async def test_fault(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    async with _endpoint(case) as (url, extra, heal, servers):
        tts = _tts(url, protocol_version=case.version, **extra)
        try:
            await _fault_turn(case, caplog, tts, heal, servers)
        finally:
            await tts.aclose()


async def _fault_turn(
    case: Case, caplog: pytest.LogCaptureFixture, tts: LMNTTTS, heal: Any, servers: list[Any]
) -> None:
    if True:
        track = make_track(RecordingTrack)
        tts.audio_track = track
        errors = _errors(tts)
        mark = len(caplog.records)
        text: Any = _slow_text(case.text, 1.0) if case.slow_text else case.text
        raised: BaseException | None = None
        outcome = "returned"
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(case.bound):
                await tts.synthesize(text)
        except LMNTError as exc:
            raised, outcome = exc, "raised"
        except TimeoutError:
            outcome = "HUNG"
        elapsed = time.monotonic() - t0
        emitted = _after_audio_error(caplog, mark)
        if outcome == "returned" and errors:
            outcome = "emitted after audio"
            elapsed = errors[0][0] - t0
        err = raised if raised is not None else emitted
        attempts = _attempts(caplog, mark)
        _record(
            Row(
                case.fault,
                outcome if outcome != "HUNG" else f"no end within {case.bound:g} s",
                type(err).__name__ if err is not None else "-",
                str(err.retryable) if isinstance(err, LMNTError) else "-",
                str(attempts),
                elapsed,
            )
        )

        assert outcome == case.outcome, (outcome, raised, errors)
        if case.error is not None:
            assert isinstance(err, case.error), repr(err)
            message = str(err)
            assert case.match in message, message
            assert KEY not in message and KEY not in repr(err)
            assert len(errors) == 1 and errors[0][1] == message, errors
        else:
            assert errors == [] and raised is None
        assert attempts == case.attempts
        _assert_clean_pushes(track)
        if case.outcome != "raised":
            assert track.pushes, "audio was expected to reach the track"
            assert len(track.audio_data_buffer) == 0, "the turn did not end on a whole frame"
        else:
            assert not track.pushes, "a turn that raised must not have played audio"
        if case.outcome == "returned":
            pcm = b"".join(track.pushes)
            start, end = active_span(pcm, TRACK_RATE)
            assert abs((end - start) - TONE.duration_of(case.text)) < 0.03
        assert elapsed < case.bound

        if heal is not None:
            await heal()
            await _next_turn_works(tts)
        await _assert_no_leak(tts, servers)


# -- cancellation, interrupt and aclose at each stage ----------------------------------------


Stage = Literal["connect", "before audio", "mid-audio"]

_STAGE_FAULTS: dict[str, Faults] = {
    "connect": Faults(latency=1.0),  # the upgrade answer is 1 s late
    "before audio": Faults(processing_delay=1.5),  # text received, audio 1.5 s away
    "mid-audio": Faults(pace=1.0),  # audio trickles in real time
}


async def _reach(stage: str, tts: LMNTTTS, server: LocalLMNTServer, track: Any) -> None:
    """Wait until the running turn is at ``stage``."""
    async with asyncio.timeout(3):
        if stage == "connect":
            await asyncio.sleep(0.1)
            assert not server.sessions  # still in the (delayed) handshake
        elif stage == "before audio":
            while not any(s.texts for s in server.sessions):
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            assert not track.pushes
        else:
            while sum(map(len, track.pushes)) < TRACK_RATE // 2:
                await asyncio.sleep(0.005)


async def _stage_setup(stage: str) -> tuple[LocalLMNTServer, LMNTTTS, RecordingTrack]:
    server = await start_local_server(faults=_STAGE_FAULTS[stage])
    tts = _tts(server.ws_url, warm_connection=True, receive_timeout=5.0, connect_timeout=5.0)
    track = make_track(RecordingTrack)
    tts.audio_track = track
    return server, tts, track


async def _finish_stage_test(
    server: LocalLMNTServer, tts: LMNTTTS, track: RecordingTrack, pushed: int
) -> None:
    await asyncio.sleep(0.2)  # late audio would show up now
    assert sum(map(len, track.pushes)) == pushed, "audio reached the track after the turn ended"
    _assert_clean_pushes(track)
    server.faults = Faults()
    await _next_turn_works(tts)
    await _assert_no_leak(tts, [server])


@pytest.mark.parametrize("stage", ["connect", "before audio", "mid-audio"])
async def test_cancel_synthesize(stage: str) -> None:
    server, tts, track = await _stage_setup(stage)
    try:
        errors = _errors(tts)
        task = asyncio.create_task(tts.synthesize(LONG))
        await _reach(stage, tts, server, track)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(30):  # bounded
                await task
        elapsed = time.monotonic() - t0
        pushed = sum(map(len, track.pushes))
        _record(Row(f"synthesize() cancelled during {stage}", "CancelledError", "-", "-",
                    "1", elapsed, "time from cancel() to return"))  # fmt: skip
        assert elapsed < TONE.duration_of(LONG) / 4, elapsed  # a fraction of the turn's length
        assert errors == []
        await _finish_stage_test(server, tts, track, pushed)
    finally:
        await tts.aclose()
        await server.stop()


@pytest.mark.parametrize("stage", ["connect", "before audio", "mid-audio"])
async def test_interrupt(stage: str) -> None:
    server, tts, track = await _stage_setup(stage)
    errors = _errors(tts)
    task = asyncio.create_task(tts.synthesize(LONG))
    try:
        await _reach(stage, tts, server, track)
        t0 = time.monotonic()
        await tts.interrupt()
        pushed = sum(map(len, track.pushes))
        returned_in: float | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await task
            returned_in = time.monotonic() - t0
        _record(Row(f"interrupt() during {stage}",
                    "returned" if returned_in is not None else "no return within 2 s", "-", "-",
                    "1", returned_in if returned_in is not None else 2.0,
                    "time from interrupt() to synthesize() returning"))  # fmt: skip
        assert returned_in is not None and returned_in < 0.3, returned_in
        assert errors == []
        await _finish_stage_test(server, tts, track, pushed)
    finally:
        task.cancel()
        await tts.aclose()
        await server.stop()


async def test_interrupt_twice_then_next_turn() -> None:
    server, tts, track = await _stage_setup("mid-audio")
    try:
        task = asyncio.create_task(tts.synthesize(LONG))
        await _reach("mid-audio", tts, server, track)
        t0 = time.monotonic()
        await tts.interrupt()
        await tts.interrupt()  # the framework calls it twice (cancel handler)
        async with asyncio.timeout(1):
            await task
        pushed = sum(map(len, track.pushes))
        _record(Row("interrupt() twice mid-audio", "returned", "-", "-", "1",
                    time.monotonic() - t0))  # fmt: skip
        await _finish_stage_test(server, tts, track, pushed)
    finally:
        await tts.aclose()
        await server.stop()


async def test_interrupt_concurrent_with_new_turn() -> None:
    """interrupt() and the next synthesize() race (a barge-in followed at once by a reply): the
    old turn stops, the new one is spoken whole, and nothing of the old one follows it."""
    server, tts, track = await _stage_setup("mid-audio")
    try:
        old = asyncio.create_task(tts.synthesize(LONG))
        await _reach("mid-audio", tts, server, track)
        server.faults = Faults()  # the new turn's connection is healthy and fast
        before = len(track.pushes)
        t0 = time.monotonic()
        async with asyncio.timeout(3):
            await asyncio.gather(tts.interrupt(), tts.synthesize(NEXT))
            await old
        _record(Row("interrupt() concurrent with a new turn", "returned", "-", "-", "1",
                    time.monotonic() - t0, "time until the new turn was fully pushed"))  # fmt: skip
        new_pcm = b"".join(track.pushes[before:])
        _assert_tone(new_pcm, NEXT)
        pushed = sum(map(len, track.pushes))
        await _finish_stage_test(server, tts, track, pushed)
        old_session = next(s for s in server.sessions if s.text.startswith("This sentence"))
        assert old_session.client_closed_early
    finally:
        await tts.aclose()
        await server.stop()


@pytest.mark.parametrize("stage", ["connect", "before audio", "mid-audio"])
async def test_aclose_during_turn(stage: str) -> None:
    server, tts, track = await _stage_setup(stage)
    errors = _errors(tts)
    task = asyncio.create_task(tts.synthesize(LONG))
    try:
        await _reach(stage, tts, server, track)
        t0 = time.monotonic()
        async with asyncio.timeout(30):  # bounded
            await tts.aclose()
            with contextlib.suppress(LMNTError):  # a connect cut short may report it
                await task
        elapsed = time.monotonic() - t0
        _record(Row(f"aclose() during {stage}", "returned", "-", "-", "1", elapsed,
                    "time from aclose() until synthesize() returned"))  # fmt: skip
        # A ratio, not a figure a loaded machine can miss: the turn ends in a fraction of the
        # time it would have taken by itself.
        assert elapsed < TONE.duration_of(LONG) / 4, elapsed
        assert errors == []
        pushed = sum(map(len, track.pushes))
        await asyncio.sleep(0.2)
        assert sum(map(len, track.pushes)) == pushed
        await _assert_no_leak(tts, [server])
        # Usable again afterwards, as 1.0.30 was: tests/test_lifecycle.py (change_pipeline).
    finally:
        task.cancel()
        await tts.aclose()
        await server.stop()


async def test_cancel_while_waiting_for_a_spare_leaves_no_orphan() -> None:
    """A turn cancelled while it waits for the warm spare still being opened must leave that
    spare to the pool: otherwise it stays open, idle, unreachable, until aclose()."""
    server = await start_local_server(faults=Faults(latency=0.4))
    tts = _tts(server.ws_url, warm_connection=True, connect_timeout=5.0)
    tts.audio_track = make_track(RecordingTrack)
    try:
        prewarm = asyncio.create_task(tts.prewarm())
        await asyncio.sleep(0.05)  # the spare's handshake is under way
        task = asyncio.create_task(tts.synthesize(SHORT))
        await asyncio.sleep(0.1)  # the turn waits for that spare
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(2):
            await prewarm
            await asyncio.sleep(0.6)  # the spare's handshake has completed
        server.faults = Faults()
        for _ in range(3):
            await _next_turn_works(tts)
        idle = [s for s in server.sessions if not s.texts and not s.done.is_set()]
        # At most one idle connection may remain: the pool's current spare.
        assert len(idle) <= 1, f"{len(idle)} idle connections held open"
        assert tts._pool.open_connections <= 1
        await _assert_no_leak(tts, [server])
    finally:
        await tts.aclose()
        await server.stop()


# -- retries -----------------------------------------------------------------------------------


class CountingFaults(Faults):
    """``Faults`` that count upgrade requests and reject only the first ``reject_first``."""

    def __init__(self, status: int | None = None, reject_first: int = 0, **kw: Any) -> None:
        super().__init__(reject_handshake_status=status, **kw)
        object.__setattr__(self, "_calls", [0])
        object.__setattr__(self, "_reject_first", reject_first)

    @property
    def calls(self) -> int:
        return int(self._calls[0])  # type: ignore[attr-defined]

    async def handshake(self) -> Any:
        self._calls[0] += 1  # type: ignore[attr-defined]
        if self._reject_first and self.calls > self._reject_first:  # type: ignore[attr-defined]
            return None  # healed: the upgrade goes ahead
        return await super().handshake()


def _spoken(server: LocalLMNTServer) -> list[str]:
    return [s.text for s in server.sessions if s.audio_bytes_sent]


async def test_refused_then_server_up_is_retried_and_spoken_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    retried = asyncio.Event()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying (" in record.getMessage():
                retried.set()

    handler = OnRetry()
    logging.getLogger(LOG).addHandler(handler)
    servers: list[LocalLMNTServer] = []
    tts = _tts(f"ws://127.0.0.1:{port}/v1/ai/speech/stream", retry_backoff=0.3)

    async def come_up() -> None:
        await retried.wait()  # the first attempt was refused; the server starts in the backoff
        servers.append(await start_local_server(port=port))

    starter = asyncio.create_task(come_up())
    try:
        pcm = await speak(tts, SHORT, timeout=4)
        _assert_tone(pcm, SHORT)
        assert _spoken(servers[0]) == [SHORT + " "]  # a sentence ends with its space
        await _assert_no_leak(tts, servers)
    finally:
        logging.getLogger(LOG).removeHandler(handler)
        starter.cancel()
        await tts.aclose()
        for server in servers:
            await server.stop()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_handshake_failures_are_retried_then_spoken_once(status: int) -> None:
    faults = CountingFaults(status, reject_first=2)
    server = await start_local_server(faults=faults)
    tts = _tts(server.ws_url, max_retries=2)
    try:
        pcm = await speak(tts, SHORT, timeout=4)
        assert faults.calls == 3  # two refusals, then the connection that spoke
        _assert_tone(pcm, SHORT)
        assert _spoken(server) == [SHORT + " "]  # a sentence ends with its space
        await _assert_no_leak(tts, [server])
    finally:
        await tts.aclose()
        await server.stop()


async def test_retries_are_bounded_by_max_retries() -> None:
    faults = CountingFaults(500)
    server = await start_local_server(faults=faults)
    tts = _tts(server.ws_url, max_retries=4)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTServerError, match="500"):
            async with asyncio.timeout(3):
                await tts.synthesize(SHORT)
        assert faults.calls == 5
    finally:
        await tts.aclose()
        await server.stop()


async def test_drops_before_audio_are_retried_and_pulled_text_resent() -> None:
    """Two connections die before audio while the text is still streaming in; the third speaks
    everything pulled so far plus the rest, once, with the right duration."""
    server = await start_local_server(faults=Faults(drop_before_audio=True))
    tts = _tts(server.ws_url, max_retries=2, retry_backoff=0.3)
    drops = 0

    async def text() -> AsyncIterator[Any]:
        nonlocal drops
        yield "First sentence. "  # complete: the server speaks (drops) it before the rest
        async with asyncio.timeout(2):
            while sum(1 for s in server.sessions if s.close_code == 1006) < 2:
                await asyncio.sleep(0.005)
        drops = sum(1 for s in server.sessions if s.close_code == 1006)
        server.faults = Faults()  # heal after two dropped attempts
        yield "Second one."
        yield FlushMarker()

    try:
        pcm = await speak(tts, text(), timeout=4)
        assert drops == 2
        spoken = _spoken(server)
        assert spoken == ["First sentence. Second one. "], spoken
        assert [s.texts for s in server.sessions[:2]] == [["First sentence. "]] * 2
        _assert_tone(pcm, "First sentence. Second one.")
        await _assert_no_leak(tts, [server])
    finally:
        await tts.aclose()
        await server.stop()


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, LMNTAuthError), (403, LMNTAuthError), (400, LMNTConnectionError)],
)
async def test_permanent_handshake_failures_are_not_retried(status: int, error: type) -> None:
    faults = CountingFaults(status)
    server = await start_local_server(faults=faults)
    tts = _tts(server.ws_url, retry_backoff=0.2)
    tts.audio_track = make_track()
    try:
        with pytest.raises(error, match=str(status)) as info:
            async with asyncio.timeout(2):
                await tts.synthesize(SHORT)
        assert not info.value.retryable
        assert faults.calls == 1
    finally:
        await tts.aclose()
        await server.stop()


async def test_permanent_error_frames_are_not_retried() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={"good-key"}) as server:
        for version in ("1.0", "1.2"):
            before = len(server.sessions)
            tts = _tts(server.ws_url, protocol_version=version, retry_backoff=0.2)
            tts.audio_track = make_track()
            with pytest.raises(LMNTAuthError):
                async with asyncio.timeout(2):
                    await tts.synthesize(SHORT)
            await tts.aclose()
            assert len(server.sessions) - before == 1, version  # one session only
        # A rejected request (legacy error frame, no type) is not retried either.
        server.api_keys = None
        server.faults = Faults(error_before_audio="voice: not found")
        before = len(server.sessions)
        tts = _tts(server.ws_url, retry_backoff=0.2)
        tts.audio_track = make_track()
        with pytest.raises(LMNTServerError, match="voice: not found") as info:
            async with asyncio.timeout(2):
                await tts.synthesize(SHORT)
        assert not info.value.retryable
        await tts.aclose()
        assert len(server.sessions) - before == 1


@pytest.mark.parametrize("what", ["tls", "404"])
async def test_permanent_connect_failures_are_not_retried(
    what: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    if what == "tls":
        server = await start_local_server(ssl_context=make_tls_contexts()[0])
    else:
        server = await start_local_server(faults=Faults(reject_handshake_status=404))
    tts = _tts(server.ws_url, retry_backoff=0.2)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTConnectionError) as info:
            async with asyncio.timeout(2):
                await tts.synthesize(SHORT)
        assert not info.value.retryable
        assert _attempts(caplog, 0) == 1
    finally:
        await tts.aclose()
        await server.stop()


async def test_oversized_frame_is_a_clear_permanent_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    server = await start_local_server(faults=Faults(oversized_frame_bytes=5 * 1024 * 1024))
    tts = _tts(server.ws_url)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTProtocolError, match="too big|too large|exceeds") as info:
            async with asyncio.timeout(2):
                await tts.synthesize(SHORT)
        assert not info.value.retryable
        assert _attempts(caplog, 0) == 1
    finally:
        await tts.aclose()
        await server.stop()


@pytest.mark.parametrize("code", [1002, 1003, 1008, 1009])
async def test_refusing_close_codes_are_not_retried(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    server = await start_local_server(
        faults=Faults(script=(), script_after="text", close_code=code)
    )
    tts = _tts(server.ws_url)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTError, match=f"code {code}") as info:
            async with asyncio.timeout(2):
                await tts.synthesize(_slow_text(SHORT, 1.0))
        assert not info.value.retryable
        assert len(server.sessions) == 1
    finally:
        await tts.aclose()
        await server.stop()


# -- FallbackTTS -------------------------------------------------------------------------------


async def _stream(items: list[Any], gap: float) -> AsyncIterator[Any]:
    """An LLM-like stream: items arrive ``gap`` seconds apart."""
    for i, item in enumerate(items):
        if i:
            await asyncio.sleep(gap)
        yield item


SENTENCES = ["First one.", "Second one.", "Third one.", FlushMarker()]
ALL = "First one. Second one. Third one."
ALL_SENT = ALL + " "  # as the server gets it: each sentence ends with its space


async def _fallback_turn(
    bad: LMNTTTS, good_server: LocalLMNTServer, text: Any, *, timeout: float = 4.0
) -> bytes:
    good = _tts(good_server.ws_url, api_key="the-only-good-key")
    fallback = FallbackTTS([bad, good], temporary_disable_sec=60)
    try:
        return await speak(fallback, text, timeout=timeout)
    finally:
        await fallback.aclose()
        await bad.aclose()
        await good.aclose()


def _texts_by_key(server: LocalLMNTServer) -> tuple[list[str], list[str]]:
    """(texts the bad provider's sessions got, texts the good one's got)."""
    bad, good = [], []
    for s in server.sessions:
        (good if s.error is None else bad).append(s.text)
    return bad, good


@pytest.mark.parametrize("status", [403, 500])
async def test_fallback_gets_the_whole_turn_when_lmnt_fails_before_reading(status: int) -> None:
    """A handshake refusal (permanent 403, or 500 after its retries) happens before any text is
    pulled: the next provider speaks the whole turn, once."""
    async with (
        LocalLMNTServer(engine=TONE) as server,
        LocalLMNTServer(engine=TONE, faults=Faults(reject_handshake_status=status)) as dead,
    ):
        pcm = await _fallback_turn(_tts(dead.ws_url), server, _stream(SENTENCES, 0.05))
        assert [s.text for s in server.sessions] == [ALL_SENT]
        _assert_tone(pcm, ALL)


async def test_fallback_invalid_key_with_prewarm_loses_nothing() -> None:
    """With prewarm the legacy server rejects the key on the idle spare, before the turn pulls
    any text: the next provider speaks the whole turn, once."""
    async with LocalLMNTServer(engine=TONE, api_keys={"the-only-good-key"}) as server:
        bad = _tts(server.ws_url, api_key="bad-key-not-accepted", warm_connection=True)
        await bad.prewarm()
        async with asyncio.timeout(2):
            while not server.sessions or not server.sessions[0].done.is_set():
                await asyncio.sleep(0.005)  # the rejection has reached the idle spare
        pcm = await _fallback_turn(bad, server, _stream(SENTENCES, 0.05))
        bad_texts, good_texts = _texts_by_key(server)
        # Every rejected session (the prewarmed spare, and any spare opened after it died)
        # received no text; the next provider got all of it.
        assert bad_texts and set(bad_texts) == {""} and good_texts == [ALL_SENT], (
            bad_texts,
            good_texts,
        )
        _assert_tone(pcm, ALL)


@pytest.mark.parametrize("delay", [0.3, 0.0])
async def test_fallback_invalid_key_cold_legacy_next_provider_gets_the_whole_turn(
    delay: float,
) -> None:
    """Without a warm connection the legacy protocol says nothing on a good key and rejects a
    bad one only after init.  A cold legacy turn therefore gives the server a round trip to
    refuse before it reads any text (issue 10, item 5): the next provider speaks the whole
    turn, whether the stream trickles (0.3 s apart) or is complete at once; before, the first
    sentence (or, complete at once, everything) was lost and the turn was silent."""
    async with LocalLMNTServer(engine=TONE, api_keys={"the-only-good-key"}) as server:
        bad = _tts(server.ws_url, api_key="bad-key-not-accepted")
        pcm = await _fallback_turn(bad, server, _stream(SENTENCES, delay), timeout=4)
        bad_texts, good_texts = _texts_by_key(server)
        assert bad_texts and set(bad_texts) == {""}, bad_texts  # rejected before any text
        assert good_texts == [ALL_SENT], good_texts
        _assert_tone(pcm, ALL)


_STREAM_FAILURES = {
    "error frame": Faults(script=('{"error":"boom"}',), script_after="text", close_code=1011),
    "malformed JSON": Faults(script=("{not json",), script_after="text"),
    "dropped before audio": Faults(script=(), script_after="text", script_end="drop"),
    "silent after a flush": Faults(hang_after_init=True),
}


@pytest.mark.parametrize("failure", list(_STREAM_FAILURES))
async def test_text_stream_survives_a_failed_turn(failure: str) -> None:
    """The root of the FallbackTTS cases, without FallbackTTS: when LMNT fails while the
    caller's generator is still producing, the generator must stay usable by whoever reads it
    next (cancelling its pending ``__anext__`` would end it): at most the item being read when
    the turn failed is lost."""
    async with LocalLMNTServer(engine=TONE, faults=_STREAM_FAILURES[failure]) as server:
        tts = _tts(server.ws_url, receive_timeout=0.3, max_retries=0)
        tts.audio_track = make_track()
        items = ["One.", FlushMarker(), "Two.", "Three.", "Four.", "Five."]
        # 0.2 s apart: shorter than the 0.3 s LMNT grants a read in progress after a failure.
        stream = _stream(items, 0.2)
        with pytest.raises(LMNTError):
            async with asyncio.timeout(2):
                await tts.synthesize(stream)
        await tts.aclose()
        async with asyncio.timeout(2):
            rest = [item async for item in stream]
        assert rest and rest[-1] == "Five.", rest
        assert rest == items[-len(rest) :] and len(rest) < len(items) - 1, rest


async def test_interrupt_during_the_failure_grace_returns_at_once() -> None:
    """After a failure LMNT lets the caller's pending read finish (up to receive_timeout) so
    the stream stays usable; an interrupt() meanwhile must still end synthesize() at once."""
    faults = Faults(script=('{"error":"boom"}',), script_after="text", close_code=1011)
    async with LocalLMNTServer(engine=TONE, faults=faults) as server:
        tts = _tts(server.ws_url, receive_timeout=2.0)
        tts.audio_track = make_track()
        task = asyncio.create_task(tts.synthesize(_stream(["One.", "Two."], 3.0)))
        try:
            async with asyncio.timeout(2):
                while not any(s.closed_by for s in server.sessions):
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)  # the turn has failed and waits for the pending read
            assert not task.done()
            t0 = time.monotonic()
            await tts.interrupt()
            with contextlib.suppress(LMNTError):
                async with asyncio.timeout(3):
                    await task
            returned_in = time.monotonic() - t0
            _record(Row("interrupt() while a failed turn waits for the text stream",
                        "returned", "-", "-", "1", returned_in,
                        "time from interrupt() to synthesize() ending"))  # fmt: skip
            assert returned_in < 0.3, returned_in
        finally:
            task.cancel()
            await tts.aclose()


@pytest.mark.parametrize(
    ("pace", "delay"), [(1.0, 0.2), (0.8, 0.0)], ids=["real time + 0.2 s a sentence", "0.8x"]
)
async def test_a_server_a_little_slower_than_real_time_is_not_cut_off(
    pace: float, delay: float
) -> None:
    """A server that paces audio at real time with some latency per sentence, or at 0.8x, makes
    gaps the listener hears, but it is alive: the turn must be spoken to the end, not cut off as
    if it were a drip (which is 1000x slower)."""
    text = " ".join(f"Say {w}." for w in ["one", "two", "six", "ten", "red", "sun"])
    async with LocalLMNTServer(
        engine=TONE, faults=Faults(pace=pace, processing_delay=delay)
    ) as srv:
        tts = _tts(srv.ws_url, receive_timeout=0.5)
        track = make_track(RecordingTrack)
        tts.audio_track = track
        errors = _errors(tts)
        try:
            async with asyncio.timeout(4.5):
                await tts.synthesize(text)
        finally:
            await tts.aclose()
        assert errors == [], errors
        _assert_tone(b"".join(track.pushes), text)


# -- the table -----------------------------------------------------------------------------


def test_zz_fault_table() -> None:
    """Print the measured table (``-s``); write it to ``$LMNT_FAULT_TABLE`` when set."""
    if not RESULTS:
        pytest.skip("no fault rows ran in this session")
    table = _table()
    print("\n" + table)
    target = os.environ.get("LMNT_FAULT_TABLE")
    if target:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(table)
