"""OpenAI's speech API on the same port: ``POST /v1/audio/speech`` and ``GET /v1/models``.

Many tools speak only OpenAI's text-to-speech API (the ``openai`` SDKs, Open WebUI, Home
Assistant bridges); pointed at ``http://host:port/v1`` they get speech from the local engine.
The request, the answer and the errors follow OpenAI's API reference; what differs is written
in ``docs/local-server.md`` ("OpenAI-compatible speech"):

- ``voice``: OpenAI's names speak with an installed voice of the same gender (:data:`VOICES`),
  and any voice id the server lists is accepted too;
- ``speed`` 0.25-2.0 is the engine's own pace; above 2.0 the audio spoken at 2.0 is
  time-stretched by the rest (FFmpeg's ``atempo``: faster, same pitch);
- ``instructions`` is accepted and ignored (no engine here can follow prose directions);
- ``response_format`` is 24 kHz mono whatever the format (``pcm``: s16le, as OpenAI's).

Keys, per-key limits and metrics are the LMNT endpoints': a key comes as
``Authorization: Bearer KEY`` (or ``X-API-Key``), and refusals are OpenAI's status codes and
``{"error": {"message", "type", "param", "code"}}`` bodies, so the SDK raises its usual typed
errors (``AuthenticationError``, ``RateLimitError`` ...).
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
import numpy as np
from aiohttp import web

from lmnt_local.protocol import has_lone_surrogate
from lmnt_local.server.api.keys import key_allowed
from lmnt_local.server.api.speech import engine_pcm
from lmnt_local.server.api.voice_ids import known_voice
from lmnt_local.server.config import ServerConfig
from lmnt_local.server.encoding.encoders import content_type
from lmnt_local.server.encoding.pool import EncoderPool
from lmnt_local.server.encoding.stream import StreamEncoder
from lmnt_local.server.engines import LanguageError, SpeechEngine, check_request
from lmnt_local.server.ops.health import Health
from lmnt_local.server.ops.limits import KeyLimits
from lmnt_local.server.ops.logs import request_id
from lmnt_local.server.ops.metrics import ServerMetrics, SpeechMeter, meter_of

__all__ = ["FORMATS", "MODELS", "VOICES", "OpenAIRoutes"]

log = logging.getLogger("lmnt_local.server")

SPEECH_PATH: Final = "/v1/audio/speech"
#: OpenAI's speech models, all spoken by the local engine the same way.
MODELS: Final = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
#: OpenAI's voices -> the LMNT system voice of the same gender (as OpenAI's voice previews
#: sound; alloy, OpenAI's "neutral" voice, is heard as female), spread over LMNT's voices so
#: different names sound different where the engine has several voices of that gender.  Each
#: engine then speaks the LMNT name with its own voice of that gender (Piper: the installed
#: voice closest to it, see ``docs/local-server.md``).
VOICES: Final[dict[str, str]] = {
    "alloy": "ava",
    "coral": "leah",
    "nova": "lily",
    "sage": "amy",
    "shimmer": "elowen",
    "marin": "ava",
    "ash": "ansel",
    "ballad": "morgan",
    "echo": "ansel",
    "fable": "ansel",
    "onyx": "morgan",
    "verse": "morgan",
    "cedar": "morgan",
}
#: OpenAI's ``response_format`` -> the server's encoder for it.
FORMATS: Final[dict[str, str]] = {
    "mp3": "mp3",
    "opus": "ogg_opus",
    "aac": "aac",
    "flac": "flac",
    "wav": "wav_stream",
    "pcm": "pcm_s16le",
}
RATE: Final = 24000
MAX_INPUT_CHARS: Final = 4096  # OpenAI's limit
_ENGINE_MAX_SPEED: Final = 2.0
_CREATED: Final = 1_699_053_241  # a fixed "created" for the model list (OpenAI's tts-1 date)


class OpenAIError(Exception):
    """An error answered in OpenAI's shape; ``kind`` is the ``lmnt_errors`` metric's type."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {
            "error": {
                "message": str(self),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        headers = {"x-request-id": request_id.get() or "", **self.headers}
        return web.json_response(body, status=self.status, headers=headers)


def _invalid(param: str, message: str, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class _Job:
    text: str
    voice: str
    fmt: str
    speed: float
    sse: bool


class _Tempo:
    """Streams s16le PCM through FFmpeg's ``atempo`` (faster, same pitch) for speeds above
    what the engine does itself.  Light work (no codec), so it runs inline."""

    def __init__(self, factor: float, rate: int) -> None:
        graph = av.filter.Graph()
        source = graph.add_abuffer(
            format="s16", sample_rate=rate, layout="mono", time_base=Fraction(1, rate)
        )
        tempo = graph.add("atempo", f"{factor:.6f}")
        sink = graph.add("abuffersink")
        source.link_to(tempo)
        tempo.link_to(sink)
        graph.configure()
        self._graph = graph
        self._rate = rate
        self._pts = 0

    def push(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, "<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._pts
        self._pts += samples.shape[1]
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> bytes:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> bytes:
        out = bytearray()
        for _ in range(10_000):  # bounded: a push yields a few frames at most
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            out += frame.to_ndarray().astype("<i2").tobytes()
        return bytes(out)


def presented_key(request: web.Request) -> str:
    """``Authorization: Bearer KEY`` (what OpenAI clients send), else ``X-API-Key``."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key", "")


class OpenAIRoutes:
    """OpenAI's speech and model endpoints, bound to the server's engine, keys and limits."""

    def __init__(
        self,
        engine: SpeechEngine,
        config: ServerConfig,
        api_keys: Collection[str] | None,
        *,
        encoders: EncoderPool,
        usage: Callable[[str, int], None],
        limits: KeyLimits,
        metrics: ServerMetrics,
        health: Health,
    ) -> None:
        self._engine = engine
        self._config = config
        self._api_keys = api_keys
        self._encoders = encoders
        self._usage = usage
        self._limits = limits
        self._metrics = metrics
        self._health = health

    def add_to(self, app: web.Application) -> None:
        app.router.add_post(SPEECH_PATH, self.speech)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)

    # -- models ----------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except OpenAIError as exc:
            return exc.response()
        return web.json_response({"object": "list", "data": [_model(m) for m in MODELS]})

    async def model(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
            name = request.match_info["model"]
            if name not in MODELS:
                shown = name if len(name) <= 64 else name[:64] + "..."
                raise OpenAIError(
                    404,
                    f"The model '{shown}' does not exist; this server offers {', '.join(MODELS)}",
                    param="model",
                    code="model_not_found",
                    kind="not_found_error",
                )
        except OpenAIError as exc:
            return exc.response()
        return web.json_response(_model(name))

    # -- speech ----------------------------------------------------------------------------

    async def speech(self, request: web.Request) -> web.StreamResponse:
        """Stream the audio of ``input`` with chunked transfer, as the engine makes it."""
        meter = meter_of(request)
        try:
            key = self._authorize(request)
            if not self._health.ready:
                raise OpenAIError(
                    503,
                    f"the server is {self._health.reason}; retry (on another replica)",
                    type="server_error",
                    code="server_unavailable",
                    kind="draining" if self._health.draining else "loading",
                    headers={"Retry-After": "1", "Connection": "close"},
                )
            job = await self._parse(request)
            self._admit(key, len(job.text))
        except OpenAIError as exc:
            meter.fail(exc.kind)
            return exc.response()
        try:
            return await self._stream(request, job, key, meter)
        finally:
            self._limits.close_session(key)

    def _authorize(self, request: web.Request) -> str:
        key = presented_key(request)
        if not key:
            raise OpenAIError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                kind="authentication_error",
            )
        if not key_allowed(key, self._api_keys):
            raise OpenAIError(
                401,
                "Incorrect API key provided.",
                code="invalid_api_key",
                kind="authentication_error",
            )
        return key

    def _admit(self, key: str, chars: int) -> None:
        """The key's character budget and concurrency cap (opens a session: close it)."""
        refused = self._limits.take_chars(key, chars)
        if refused is not None:  # no Retry-After for a request no wait would make fit
            wait = refused.retry_after
            raise OpenAIError(
                429,
                f"Rate limit reached: {refused.message}",
                type="requests",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
                headers=(
                    {"Retry-After": str(math.ceil(wait))}
                    if wait is not None
                    else {"x-should-retry": "false"}
                ),
            )
        refusal = self._limits.open_session(key)
        if refusal is not None:
            raise OpenAIError(
                429,
                f"Rate limit reached: {refusal}",
                type="requests",
                code="rate_limit_exceeded",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            )

    async def _parse(self, request: web.Request) -> _Job:
        try:
            body = await request.json()
        except ValueError:
            raise _invalid("body", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _invalid("body", "The request body must be a JSON object.")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise _invalid("input", "'input' is required: a non-empty string.", "missing")
        if has_lone_surrogate(text):
            raise _invalid("input", "'input' contains a lone surrogate; send valid Unicode.")
        limit = min(MAX_INPUT_CHARS, self._config.max_http_text_chars)
        if len(text) > limit:
            raise _invalid(
                "input",
                f"'input' is {len(text)} characters; the maximum is {limit}.",
                "string_above_max_length",
            )
        model = body.get("model")
        if model not in MODELS:
            shown = repr(model)[:64]
            raise _invalid(
                "model",
                f"Invalid value for 'model': {shown}; expected one of {', '.join(MODELS)}.",
                "model_not_found",
            )
        voice = self._voice(body.get("voice"))
        fmt = body.get("response_format", "mp3")
        if fmt not in FORMATS:
            raise _invalid(
                "response_format",
                f"Invalid value for 'response_format': {repr(fmt)[:40]}; "
                f"expected one of {', '.join(FORMATS)}.",
                "invalid_value",
            )
        speed = body.get("speed", 1.0)
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
            raise _invalid(
                "speed", "Invalid value for 'speed': expected a number from 0.25 to 4.0."
            )
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _invalid("instructions", "'instructions' must be a string.")
        stream_format = body.get("stream_format", "audio")
        if stream_format not in ("audio", "sse"):
            raise _invalid("stream_format", "Invalid value for 'stream_format': audio or sse.")
        if stream_format == "sse" and model in ("tts-1", "tts-1-hd"):
            raise _invalid("stream_format", f"stream_format 'sse' is not supported for {model}.")
        try:
            check_request(self._engine, voice, "auto")
        except LanguageError as exc:
            raise _invalid("voice", str(exc)) from None
        return _Job(text, voice, fmt, float(speed), stream_format == "sse")

    def _voice(self, value: Any) -> str:
        """The engine voice id for OpenAI's ``voice`` (a name, an id, or ``{"id": ...}``)."""
        if isinstance(value, dict):
            value = value.get("id")
        if not isinstance(value, str) or not value.strip():
            raise _invalid("voice", "'voice' is required: a voice name or id.", "missing")
        if known_voice(self._engine, value):
            return value
        mapped = VOICES.get(value.strip().lower())
        if mapped is not None and known_voice(self._engine, mapped):
            return mapped
        ids = [v.id for v in self._engine.voices()]
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise _invalid(
            "voice",
            f"Unknown voice {shown!r}; use one of OpenAI's ({', '.join(VOICES)}) "
            f"or an installed voice ({', '.join(ids) or 'none'}).",
            "invalid_value",
        )

    async def _stream(
        self, request: web.Request, job: _Job, key: str, meter: SpeechMeter
    ) -> web.StreamResponse:
        codec = FORMATS[job.fmt]
        self._usage(key, len(job.text))
        meter.characters(len(job.text))
        self._metrics.characters.labels(self._limits.name_of(key)).inc(len(job.text))
        try:
            encoder = await self._encoders.make(codec, RATE)
            pieces = self._encoded(job, encoder)
            first = await anext(pieces, b"")  # nothing sent yet: a failure is still a 500
        except Exception:
            log.exception("synthesis failed (OpenAI speech request)")
            meter.fail("internal_server_error")
            return OpenAIError(
                500, "Speech synthesis failed on the server.", type="server_error"
            ).response()
        kind = "text/event-stream" if job.sse else ("audio/pcm" if job.fmt == "pcm" else None)
        response = web.StreamResponse(
            headers={
                "Content-Type": kind or content_type(codec),
                "x-request-id": request_id.get() or "",
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = len(first)
        try:
            meter.first_byte()
            await response.write(_event(first) if job.sse else first)
            async for data in pieces:
                sent += len(data)
                await response.write(_event(data) if job.sse else data)
            if job.sse:
                done = {"type": "speech.audio.done", "usage": _usage(job.text, sent)}
                await response.write(f"data: {json.dumps(done)}\n\n".encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up: stop synthesizing for nobody
        except Exception:
            # Headers are out: cut the connection so the client sees a broken transfer, not
            # a short file it would take for the whole answer.
            log.exception("synthesis failed mid-stream (OpenAI speech request)")
            meter.fail("internal_server_error")
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _encoded(self, job: _Job, encoder: StreamEncoder) -> AsyncIterator[bytes]:
        stretch = job.speed / _ENGINE_MAX_SPEED if job.speed > _ENGINE_MAX_SPEED else 1.0
        tempo = _Tempo(stretch, RATE) if stretch != 1.0 else None
        pieces = engine_pcm(
            self._engine,
            job.text,
            max_unit_chars=self._config.max_unit_chars,
            voice=job.voice,
            language="auto",
            sample_rate=RATE,
            speed=min(job.speed, _ENGINE_MAX_SPEED),
            seed=None,
        )
        async for chunk, _ in pieces:
            pcm = chunk.pcm if tempo is None else tempo.push(chunk.pcm)
            data = await self._encoders.encode(encoder, pcm) if pcm else b""
            if data:
                yield data
        if tempo is not None:
            tail = tempo.flush()
            data = await self._encoders.encode(encoder, tail) if tail else b""
            if data:
                yield data
        tail = await self._encoders.finish(encoder)
        if tail:
            yield tail


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": "lmnt-local"}


def _event(audio: bytes) -> bytes:
    delta = {"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")}
    return f"data: {json.dumps(delta)}\n\n".encode()


def _usage(text: str, audio_bytes: int) -> dict[str, int]:
    """Token counts for the ``sse`` done event: OpenAI bills tokens, this server counts
    characters in and kilobytes out, so the figures are indicative only."""
    out = audio_bytes // 1024
    return {"input_tokens": len(text), "output_tokens": out, "total_tokens": len(text) + out}
