"""Fuzzing the wire, bounded: nothing a server (or client) sends may crash the other side.

* ``ClientDecoder`` turns any sequence of server frames into events and never raises;
* the server-side ``parse_init`` / ``decode_client_message`` only ever raise ``ValueError``;
* the real receive path: a scripted local server (``Faults.script``) sends arbitrary frame
  sequences to a real ``LMNTTTS`` over TCP; the turn always ends within a bound, raises nothing
  but ``LMNTError``, pushes only even-length ``bytes`` to the framework's real track, and leaves
  no connection or task behind.

Example counts are small so the whole file runs in well under 30 s; run with
``--hypothesis-show-statistics`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.protocol import (
    FORMATS,
    LANGUAGES,
    SAMPLE_RATES,
    SERVER_FORMATS,
    VERSIONS,
    Audio,
    ClientDecoder,
    ErrorFrame,
    Extras,
    FlushComplete,
    InitError,
    InitRequest,
    ProtocolViolation,
    Ready,
    ResetComplete,
    SessionOptions,
    Timestamps,
    decode_client_message,
    parse_init,
)
from lmnt_local.server import Faults, LocalLMNTServer
from videosdk.plugins.lmnt import LMNTTTS, LMNTError
from videosdk.plugins.lmnt.testing import start_local_server

from audio_helpers import sine_s16
from track_helpers import make_track

KEY = "sk-fuzz-0123456789abcdef"
EVENT_TYPES = (
    Audio, Extras, Ready, Timestamps, FlushComplete, ResetComplete, ErrorFrame, ProtocolViolation
)  # fmt: skip

# -- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
span = st.fixed_dictionaries(
    {"text": scalars, "start": scalars, "duration": scalars}
) | st.fixed_dictionaries(
    {
        "text": st.text(max_size=8),
        "start": st.floats(0, 10),
        "duration": st.floats(0, 2),
    }
)
_TYPES = st.sampled_from(
    ["ready", "timestamps", "flush_complete", "reset_complete", "error", "surprise", ""]
)
server_message = st.one_of(
    st.fixed_dictionaries(
        {"durations": st.lists(span, max_size=3) | json_values},
        optional={"buffer_empty": json_values, "warning": json_values},
    ),
    st.fixed_dictionaries(
        {"type": _TYPES | json_values},
        optional={
            "request_id": json_values,
            "nonce": st.integers(-2, 5) | json_values,
            "timestamps": st.lists(span, max_size=3) | json_values,
            "error": json_values
            | st.fixed_dictionaries({"type": json_values, "message": json_values}),
        },
    ),
    st.fixed_dictionaries({"error": json_values}),
    st.dictionaries(
        st.sampled_from(["type", "error", "durations", "warning", "buffer_empty", "x"])
        | st.text(max_size=6),
        json_values,
        max_size=4,
    ),
)


def _dumps(value: Any) -> str:
    return json.dumps(value)  # allow_nan: "NaN"/"Infinity" are what a sloppy server sends


text_frames = st.one_of(
    server_message.map(_dumps),
    json_values.map(_dumps),
    st.text(max_size=40),
    st.sampled_from(["{not json", "", "[]", "null", '"str"', "{", "[" * 3000, '{"a":' * 3000]),
)
binary_frames = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 300).map(lambda n: sine_s16(440, n / 24000, 24000)),  # valid PCM
    st.integers(1, 600).map(lambda n: bytes(2 * n + 1)),  # odd length
    st.just(b""),
)
frames = st.lists(st.one_of(text_frames, binary_frames), max_size=8)


# -- the codec ---------------------------------------------------------------------------------


def _check_event(event: object, frame: str | bytes) -> None:
    assert isinstance(event, EVENT_TYPES), event
    if isinstance(event, Audio):
        assert isinstance(frame, bytes) and event.data == frame and event.data
    if isinstance(event, Extras | Timestamps):
        spans = event.durations if isinstance(event, Extras) else event.items
        for s in spans:
            assert isinstance(s.text, str)
            assert math.isfinite(s.start) and s.start >= 0
            assert math.isfinite(s.duration) and s.duration >= 0
    if isinstance(event, ErrorFrame):
        assert isinstance(event.message, str)
        assert event.type is None or isinstance(event.type, str)
    if isinstance(event, FlushComplete | ResetComplete):
        assert isinstance(event.nonce, int) and not isinstance(event.nonce, bool)
    if isinstance(event, ProtocolViolation):  # our words quoting the server: bounded
        assert len(event.reason) <= 200, len(event.reason)


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from(["1.0", "1.1", "1.2", "2", ""]), frames=frames)
@example(version="1.0", frames=['{"type": "ready", "request_id": Infinity}'])
@example(version="1.2", frames=['{"type": "' + "x" * 5000 + '"}'])
@example(version="1.0", frames=["[" * 100_000, "{" * 50_000, '"' + "\\" * 999])
@example(version="1.2", frames=[_dumps({"type": "timestamps", "timestamps": [{"text": "a",
         "start": float("nan"), "duration": 1}]}), _dumps({"type": "flush_complete",
         "nonce": True})])  # fmt: skip
def test_client_decoder_never_raises(version: str, frames: list[str | bytes]) -> None:
    decoder = ClientDecoder(version)
    for frame in frames:
        events = decoder.binary(frame) if isinstance(frame, bytes) else decoder.text(frame)
        assert isinstance(events, list)
        if isinstance(frame, bytes):
            assert len(events) == (1 if frame else 0)
        else:
            assert len(events) == 1
        for event in events:
            _check_event(event, frame)


init_keys = st.sampled_from(
    ["X-API-Key", "lmnt-version", "type", "voice", "model", "language", "format",
     "sample_rate", "return_extras", "send_extras", "return_timestamps", "seed",
     "temperature", "top_p", "speed"]
)  # fmt: skip
plausible = {
    "X-API-Key": st.text(max_size=8),
    "lmnt-version": st.sampled_from([*VERSIONS, "9", ""]),
    "voice": st.sampled_from(["ava", "", " "]),
    "model": st.sampled_from(["blizzard", "aurora", "nope"]),
    "language": st.sampled_from([*LANGUAGES[:3], "xx"]),
    "format": st.sampled_from([*SERVER_FORMATS, "wav"]),
    "sample_rate": st.sampled_from([*SAMPLE_RATES, "16000", 44100, 16000.0, True]),
    "seed": st.integers(-5, 5) | st.booleans(),
    "temperature": st.floats(allow_nan=True),
    "top_p": st.floats(-1, 2),
    "speed": st.floats(0, 3),
}
init_dicts = st.dictionaries(init_keys, json_values, max_size=8) | st.fixed_dictionaries(
    {}, optional=plausible
)
client_messages = st.one_of(
    init_dicts.map(_dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["text", "flush", "reset", "finish", "eof", "x"]) | json_values,
            "text": st.text(max_size=10) | json_values,
            "nonce": st.integers(-3, 3) | json_values,
            "command": st.sampled_from(["flush", "reset", "eof", "x"]) | json_values,
            "flush": json_values,
            "eof": json_values,
        },
    ).map(_dumps),
    json_values.map(_dumps),
    st.text(max_size=30),
    st.sampled_from(["[" * 100_000, "{not json", ""]),
)


@settings(max_examples=400, deadline=None)
@given(data=client_messages | st.binary(max_size=30))
@example(data='{"X-API-Key": "k", "voice": "ava", "top_p": NaN, "x": Infinity}')
def test_parse_init_raises_only_init_errors(data: str | bytes) -> None:
    """``InitError`` (a ``ValueError``) is what the server catches to answer 1002."""
    try:
        init = parse_init(data)
    except InitError:
        return
    assert isinstance(init, InitRequest)
    assert init.version in VERSIONS and init.format in SERVER_FORMATS
    assert init.sample_rate in SAMPLE_RATES and init.api_key and init.voice.strip()


@settings(max_examples=400, deadline=None)
@given(data=client_messages, version=st.sampled_from(VERSIONS))
@example(data='{"x": NaN}', version="1.0")
def test_decode_client_message_raises_only_init_errors(data: str, version: str) -> None:
    """Only ``InitError`` (a ``ValueError``): the server catches exactly that to answer 1002."""
    try:
        decode_client_message(data, version)
    except InitError as exc:
        assert len(str(exc)) <= 200  # quoting the client is bounded


@settings(max_examples=100, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    rate=st.sampled_from(SAMPLE_RATES),
    version=st.sampled_from(VERSIONS),
    seed=st.none() | st.integers(0, 2**31),
    temperature=st.floats(0, 5),
    top_p=st.floats(0, 1),
    key=st.text(min_size=1, max_size=20).filter(lambda k: k.strip() != ""),
)
def test_every_plugin_init_is_accepted_by_the_server_codec(
    fmt: str, rate: int, version: str, seed: int | None, temperature: float, top_p: float,
    key: str,
) -> None:  # fmt: skip
    options = SessionOptions(
        api_key=key, voice="ava", format=fmt, sample_rate=rate, version=version, seed=seed,
        temperature=temperature, top_p=top_p,
    )  # fmt: skip
    init = parse_init(options.encode_init())
    assert (init.api_key, init.format, init.sample_rate, init.version, init.seed) == (
        key, fmt, rate, version, seed
    )  # fmt: skip


# -- the real receive path -------------------------------------------------------------------


class RecordingTrack(CustomAudioStreamTrack):  # type: ignore[misc]
    """The framework's real track, noting every ``add_new_bytes`` argument (observation only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pushes: list[Any] = []

    async def add_new_bytes(self, audio_data: bytes) -> None:
        self.pushes.append(audio_data)
        await super().add_new_bytes(audio_data)


class _Rig:
    """One loop and one scripted server shared by every example (a server per example would
    spend the time budget on startup)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: LocalLMNTServer = self.loop.run_until_complete(start_local_server())
        self.outcomes: dict[str, int] = {}

    def close(self) -> None:
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[_Rig]:
    r = _Rig()
    try:
        yield r
    finally:
        print("\nreceive-path fuzz outcomes:", dict(sorted(r.outcomes.items())))
        r.close()


RECEIVE_TIMEOUT = 0.3
BOUND = 2.0  # receive timeout, retries and closing, with room to spare on a loaded machine


async def _one_turn(rig: _Rig, faults: Faults, fmt: str, rate: int, version: str) -> str:
    server = rig.server
    server.faults = faults
    first = len(server.sessions)
    tts = LMNTTTS(
        api_key=KEY, ws_url=server.ws_url, format=fmt, sample_rate=rate,  # type: ignore[arg-type]
        protocol_version=version, receive_timeout=RECEIVE_TIMEOUT, connect_timeout=1.0,
        retry_backoff=0.0, max_retries=1, warm_connection=False,
    )  # fmt: skip
    track = make_track(RecordingTrack)
    tts.audio_track = track
    outcome = "returned"
    t0 = time.monotonic()
    try:
        try:
            async with asyncio.timeout(BOUND):
                await tts.synthesize("Hello there.")
        except LMNTError as exc:
            outcome = type(exc).__name__
            assert KEY not in str(exc)
        except TimeoutError:
            pytest.fail(f"the turn did not end within {BOUND} s")
        # anything else propagates and fails the example
        assert time.monotonic() - t0 < BOUND
        bad = [
            (type(p).__name__, len(p)) for p in track.pushes if type(p) is not bytes or len(p) % 2
        ]
        assert not bad, f"non-bytes or odd-length pushes: {bad[:5]}"
        if fmt == "pcm_s16le" and rate == 24000:
            sent = sum(s.audio_bytes_sent for s in server.sessions[first:])
            pushed = sum(map(len, track.pushes))
            assert pushed <= sent + 960, (pushed, sent)  # at most one frame of padding
    finally:
        await tts.aclose()
    assert tts._pool.open_connections == 0
    async with asyncio.timeout(3):
        for rec in server.sessions[first:]:
            await rec.done.wait()
    return outcome


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    script=st.lists(st.one_of(text_frames, binary_frames), max_size=8).map(tuple),
    after=st.sampled_from(["init", "text", "eof"]),
    end=st.sampled_from(["close", "close", "drop", "hang"]),
    code=st.sampled_from([None, 1000, 1001, 1002, 1003, 1008, 1009, 1011, 3000, 4000, 4999]),
    fmt=st.sampled_from(["pcm_s16le"] * 4 + ["pcm_f32le", "ulaw", "mp3"]),
    rate=st.sampled_from(SAMPLE_RATES),
    version=st.sampled_from(["1.0", "1.0", "1.2"]),
)
@example(script=(b"\x01", b"\x02\x03", b""), after="eof", end="close", code=None,
         fmt="pcm_s16le", rate=24000, version="1.0")  # fmt: skip
@example(script=(b"\xff" * 64, '{"durations":[{"text":"a","start":0,"duration":1}]}'),
         after="init", end="hang", code=None, fmt="pcm_f32le", rate=16000,
         version="1.0")  # fmt: skip
@example(script=('{"type":"flush_complete","nonce":1}',), after="eof", end="hang", code=None,
         fmt="pcm_s16le", rate=24000, version="1.2")  # fmt: skip
def test_receive_path_survives_any_frame_sequence(
    rig: _Rig,
    script: tuple[str | bytes, ...],
    after: Any,
    end: Any,
    code: int | None,
    fmt: str,
    rate: int,
    version: str,
) -> None:
    faults = Faults(script=script, script_after=after, script_end=end, close_code=code)
    outcome = rig.loop.run_until_complete(_one_turn(rig, faults, fmt, rate, version))
    rig.outcomes[outcome] = rig.outcomes.get(outcome, 0) + 1


def test_scripted_server_plays_exactly_the_script(rig: _Rig) -> None:
    """The fault the fuzzing relies on: frames verbatim, in order, then the chosen ending."""
    import aiohttp

    async def run() -> tuple[list[tuple[str, Any]], int | None]:
        rig.server.faults = Faults(
            script=("{bad", b"\x01\x02\x03", b""), script_after="text", close_code=4001
        )
        got: list[tuple[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(rig.server.ws_url) as ws:
                await ws.send_str(json.dumps({"X-API-Key": "k", "voice": "ava"}))
                await ws.send_str(json.dumps({"text": "hi"}))
                async with asyncio.timeout(2):
                    async for msg in ws:
                        got.append((msg.type.name, msg.data))
                return got, ws.close_code

    got, code = rig.loop.run_until_complete(run())
    assert got == [("TEXT", "{bad"), ("BINARY", b"\x01\x02\x03"), ("BINARY", b"")]
    assert code == 4001
    rec = rig.server.sessions[-1]
    assert rec.texts == ["hi"] and rec.audio_bytes_sent == 3 and rec.frames_sent == 2


def test_server_answers_a_bad_command_as_a_bad_request(rig: _Rig) -> None:
    """Any client garbage is the client's error (1002 + invalid_request), never the server's."""
    import aiohttp

    async def run() -> tuple[list[str], int | None]:
        rig.server.faults = Faults()
        got: list[str] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(rig.server.ws_url) as ws:
                await ws.send_str(json.dumps({"X-API-Key": "k", "voice": "ava"}))
                await ws.send_str('{"x": NaN}')
                async with asyncio.timeout(2):
                    async for msg in ws:
                        got.append(msg.data)
                return got, ws.close_code

    got, code = rig.loop.run_until_complete(run())
    assert code == 1002, (code, got)
    assert got and "internal" not in got[0], got
