"""OpenAI's official Python SDK, unmodified, against the server's OpenAI-compatible speech API.

The SDK is used as its users use it (``AsyncOpenAI(base_url=.../v1)``): ``audio.speech.create``
and ``audio.speech.with_streaming_response.create`` in every format, decoded with FFmpeg (PyAV)
and measured against the tone engine's exact durations; speeds up to 4.0; voices by OpenAI's
names (female and male told apart by pitch with espeak-ng); the SDK's typed errors for bad
input, bad keys and per-key limits; the model list.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import pytest_asyncio

from lmnt_local.server import LocalLMNTServer, ToneEngine
from lmnt_local.server.api.openai import FORMATS, MODELS, VOICES
from lmnt_local.server.engines import EngineChunk
from lmnt_local.server.ops.limits import KeyLimit, LimitsConfig

from audio_helpers import estimate_pitch, pitch_track

openai = pytest.importorskip("openai")


TONE = ToneEngine()
KEY = "sesame-openai"
TEXT = "Hello there, world."  # 19 characters: 0.95 s of tone
RATE = 24000


@pytest_asyncio.fixture
async def server() -> AsyncIterator[LocalLMNTServer]:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        yield srv


def client(server: LocalLMNTServer, key: str = KEY) -> Any:
    return openai.AsyncOpenAI(
        api_key=key, base_url=server.http_url + "/v1", max_retries=0, timeout=20
    )


def decode(data: bytes, fmt: str) -> tuple[bytes, int]:
    """Mono s16le PCM and its rate, whatever the container (``pcm`` is raw 24 kHz s16le)."""
    if fmt == "pcm":
        return data, RATE
    container = av.open(io.BytesIO(data))
    stream = container.streams.audio[0]
    pcm = bytearray()
    rate = stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            pcm += out.to_ndarray().tobytes()
    container.close()
    return bytes(pcm), rate


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


async def test_create_every_format_is_real_audio_of_the_right_length(
    server: LocalLMNTServer,
) -> None:
    expected = TONE.duration_of(TEXT)
    async with asyncio.timeout(30):
        c = client(server)
        for fmt in FORMATS:
            resp = await c.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format=fmt
            )
            pcm, rate = decode(resp.content, fmt)
            # Codecs add at most a few frames of priming/padding (AAC, MP3: ~50 ms).
            assert expected - 0.001 <= seconds(pcm, rate) <= expected + 0.1, fmt
            assert abs(estimate_pitch(pcm, rate) - TONE.frequency) < 5, fmt
    # pcm is OpenAI's: bare s16le at 24 kHz, exactly the engine's samples.
    resp = await client(server).audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
    )
    assert len(resp.content) == round(expected * RATE) * 2


async def test_default_format_is_mp3(server: LocalLMNTServer) -> None:
    resp = await client(server).audio.speech.create(model="tts-1-hd", voice="nova", input=TEXT)
    assert resp.response.headers["content-type"] == "audio/mpeg"
    data = resp.content
    assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # an MPEG frame sync, no ID3


async def test_streaming_response_every_format(server: LocalLMNTServer) -> None:
    text = "One two three. " * 6
    expected = TONE.duration_of(text)
    async with asyncio.timeout(30):
        c = client(server)
        for fmt in FORMATS:
            async with c.audio.speech.with_streaming_response.create(
                model="gpt-4o-mini-tts", voice="coral", input=text, response_format=fmt
            ) as resp:
                assert resp.headers.get("transfer-encoding") == "chunked", fmt
                pieces = [piece async for piece in resp.iter_bytes()]
            pcm, rate = decode(b"".join(pieces), fmt)
            assert expected - 0.001 <= seconds(pcm, rate) <= expected + 0.1, fmt


class _GatedTone(ToneEngine):
    """The tone engine, holding its second sentence until the test has heard the first."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls = 0

    async def synthesize(self, text: str, **kwargs: Any) -> AsyncIterator[EngineChunk]:
        self.calls += 1
        if self.calls > 1:
            await asyncio.wait_for(self.gate.wait(), 10)
        async for chunk in super().synthesize(text, **kwargs):
            yield chunk


async def test_audio_is_streamed_as_it_is_made() -> None:
    """The first sentence's audio reaches the client before the second is synthesized."""
    engine = _GatedTone()
    async with LocalLMNTServer(engine=engine, api_keys={KEY}) as srv, asyncio.timeout(20):
        async with client(srv).audio.speech.with_streaming_response.create(
            model="tts-1", voice="echo", input="First sentence. Second one.", response_format="pcm"
        ) as resp:
            chunks = resp.iter_bytes()
            first = await anext(chunks)
            assert first and engine.calls == 1  # audio before the second unit began
            engine.gate.set()
            rest = b"".join([piece async for piece in chunks])
    assert len(first + rest) == round(TONE.duration_of("First sentence. Second one.") * RATE) * 2


async def test_speed_from_quarter_to_four(server: LocalLMNTServer) -> None:
    """0.25-2.0 is the engine's pace; above 2.0 a time-stretch keeps the pitch."""
    c = client(server)
    lengths = {}
    async with asyncio.timeout(30):
        for speed in (0.25, 1.0, 2.0, 3.0, 4.0):
            resp = await c.audio.speech.create(
                model="tts-1", voice="alloy", input=TEXT, response_format="pcm", speed=speed
            )
            lengths[speed] = seconds(resp.content, RATE)
            assert abs(estimate_pitch(resp.content, RATE) - TONE.frequency) < 5, speed
    base = lengths[1.0]
    for speed, length in lengths.items():
        assert length == pytest.approx(base / speed, rel=0.06), (speed, lengths)


async def test_instructions_and_voice_forms_are_accepted(server: LocalLMNTServer) -> None:
    c = client(server)
    for voice in ("shimmer", "leah", {"id": "morgan"}):
        resp = await c.audio.speech.create(
            model="gpt-4o-mini-tts",
            voice=voice,
            input=TEXT,
            instructions="Speak like a pirate.",  # accepted, documented as ignored
            response_format="pcm",
        )
        assert len(resp.content) == round(TONE.duration_of(TEXT) * RATE) * 2


async def test_openai_voices_keep_their_gender_with_espeak() -> None:
    espeak = pytest.importorskip("lmnt_local.server.engines.espeak")
    if not espeak.EspeakEngine.available():
        pytest.skip("no libespeak-ng on this machine")
    text = "The quick brown fox jumps over the lazy dog."
    async with (
        LocalLMNTServer(engine=espeak.EspeakEngine(), api_keys={KEY}) as srv,
        asyncio.timeout(30),
    ):
        c = client(srv)
        pitch = {}
        for voice in ("nova", "shimmer", "onyx", "echo"):
            resp = await c.audio.speech.create(
                model="tts-1", voice=voice, input=text, response_format="pcm"
            )
            samples = np.frombuffer(resp.content, "<i2")
            pitch[voice] = float(np.median(pitch_track(samples, RATE)))
    assert min(pitch["nova"], pitch["shimmer"]) > 1.4 * max(pitch["onyx"], pitch["echo"]), pitch


async def test_sse_stream_format(server: LocalLMNTServer) -> None:
    async with client(server).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input=TEXT,
        response_format="pcm",
        stream_format="sse",
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = await resp.text()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) == round(TONE.duration_of(TEXT) * RATE) * 2


# -- errors, as the SDK's typed exceptions -----------------------------------------------------


async def test_bad_requests_are_openai_400s(server: LocalLMNTServer) -> None:
    c = client(server)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"voice": "nobody"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"model": "tts-9"}, "model"),
        ({"speed": 5.0}, "speed"),
        ({"speed": 0.1}, "speed"),
        ({"input": "  "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"model": "tts-1", "stream_format": "sse"}, "stream_format"),
    ]
    for change, param in cases:
        args = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": TEXT, **change}
        with pytest.raises(openai.BadRequestError) as caught:
            await c.audio.speech.create(**args)
        error = caught.value.body
        assert caught.value.status_code == 400
        assert error["type"] == "invalid_request_error" and error["param"] == param, change
        assert param in error["message"] or param == "input", error


async def test_wrong_and_missing_keys(server: LocalLMNTServer) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await client(server, "wrong-key").audio.speech.create(
            model="tts-1", voice="alloy", input=TEXT
        )
    assert caught.value.body["code"] == "invalid_api_key"
    assert "wrong-key" not in str(caught.value)
    with pytest.raises(openai.AuthenticationError):
        await client(server, "wrong-key").models.list()
    async with aiohttp.ClientSession() as http:
        body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm"}
        url = server.http_url + "/v1/audio/speech"
        async with http.post(url, json=body) as resp:
            assert resp.status == 401
            assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}
        async with http.post(url, json=body, headers={"X-API-Key": KEY}) as resp:
            assert resp.status == 200  # LMNT's header works too
            assert len(await resp.read()) == round(TONE.duration_of(TEXT) * RATE) * 2


async def test_per_key_limits_apply_as_rate_limit_errors() -> None:
    limits = LimitsConfig(KeyLimit(chars_per_minute=30))
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}, limits=limits) as srv:
        c = client(srv)
        await c.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)  # 19 of 30
        with pytest.raises(openai.RateLimitError) as caught:
            await c.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.body["code"] == "rate_limit_exceeded"


async def test_models(server: LocalLMNTServer) -> None:
    c = client(server)
    listed = [m.id async for m in c.models.list()]
    assert listed == list(MODELS)
    model = await c.models.retrieve("tts-1")
    assert (model.id, model.object) == ("tts-1", "model")
    with pytest.raises(openai.NotFoundError) as caught:
        await c.models.retrieve("gpt-9")
    assert caught.value.body["code"] == "model_not_found"


async def test_a_wrong_method_or_path_is_answered_in_openais_shape(server: LocalLMNTServer) -> None:
    """The SDK's own request helpers, on a path or method the server does not route: OpenAI's
    error envelope (the SDK reads ``error.message``), not LMNT's ``{"detail": ...}``."""
    c = client(server)
    with pytest.raises(openai.APIStatusError) as wrong_method:
        await c.get("/audio/speech", cast_to=object)
    assert wrong_method.value.status_code == 405
    assert wrong_method.value.body["message"] == "GET is not allowed on /v1/audio/speech (use POST)"
    assert wrong_method.value.response.headers["Allow"] == "POST"
    with pytest.raises(openai.NotFoundError) as unknown:
        await c.post("/audio/transcriptions", cast_to=object, body={})
    assert unknown.value.body["type"] == "invalid_request_error"
    assert "/v1/audio/transcriptions" in unknown.value.body["message"]


def test_every_openai_voice_maps_to_an_lmnt_voice() -> None:
    lmnt = {v.id: v.gender for v in TONE.voices()}
    female = {"alloy", "coral", "nova", "sage", "shimmer", "marin"}
    for name, target in VOICES.items():
        assert lmnt[target] == ("female" if name in female else "male"), name
