"""The HTTP speech endpoints: ``POST /v1/ai/speech/bytes`` (streamed audio) and
``POST /v1/ai/speech`` (one JSON body: base64 audio and word timings).

Parameters are validated with the same codec as WebSocket init frames (``parse_init``), so the
two doors of the server accept and refuse exactly the same voices, models, languages and rates.
Codec work runs on the shared :class:`.encode_pool.EncoderPool`, never on the event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lmnt_local.protocol import InitError, InitRequest, has_lone_surrogate, is_typed, parse_init
from lmnt_local.server.api.errors import (
    ApiError,
    api_version,
    error_response,
    refusal,
    request_id,
)
from lmnt_local.server.api.voice_ids import known_voice, unknown_voice_message
from lmnt_local.server.config import ServerConfig, speech_units
from lmnt_local.server.encoding.encoders import HTTP_FORMATS, content_type
from lmnt_local.server.encoding.pool import EncoderPool
from lmnt_local.server.encoding.stream import StreamEncoder
from lmnt_local.server.engines import (
    PLAYBACK_LEAD,
    EngineChunk,
    LanguageError,
    SpeechEngine,
    check_request,
)
from lmnt_local.server.ops.guard import CHARGE_KEY
from lmnt_local.server.ops.metrics import meter_of

__all__ = ["SpeechRoutes", "engine_pcm"]

log = logging.getLogger("lmnt_local.server")

#: On HTTP, LMNT answered ``format=raw`` with an MP3 stream (measured, protocol notes section 8),
#: and clients came to depend on it: LiveKit's plugin decodes ``raw`` replies as a container.
#: The bytes are MP3 here too, labelled honestly as ``audio/mpeg``.
_HTTP_CODEC = {"raw": "mp3"}
#: Body fields checked by the codec; everything else LMNT accepted (``debug``...) is ignored.
_CODEC_FIELDS = (
    "voice", "model", "language", "sample_rate", "temperature", "top_p", "seed", "speed",
)  # fmt: skip
_NUMERIC = {"temperature": float, "top_p": float, "seed": int, "speed": float}


class _Answered(Exception):
    """A finished answer to send instead of speech (a refusal by the key's limits)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(frozen=True, slots=True)
class _Request:
    text: str
    fmt: str
    params: InitRequest
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    start: float
    duration: float

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": round(self.start, 4),
            "duration": round(self.duration, 4),
        }


class SpeechRoutes:
    """Speech handlers bound to one engine, config, key set, encoder pool and usage counter."""

    def __init__(
        self,
        engine: SpeechEngine,
        config: ServerConfig,
        api_keys: Collection[str] | None,
        encoders: EncoderPool,
        usage: Callable[[str, int], None],
    ) -> None:
        self._engine = engine
        self._config = config
        self._api_keys = api_keys
        self._encoders = encoders
        self._usage = usage

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/ai/speech/bytes", self.speech_bytes)
        app.router.add_post("/v1/ai/speech", self.speech_detailed)

    async def _admit(
        self, request: web.Request
    ) -> tuple[_Request, StreamEncoder] | web.StreamResponse:
        """The checked request and its encoder, or the answer refusing it (counted by type in
        the metrics): the key, then the body, then the key's budget, in that order."""
        meter = meter_of(request)
        refused = refusal(request, self._api_keys)
        if refused is not None:
            meter.fail("permission_error" if refused.status == 403 else "authentication_error")
            return refused
        try:
            return await self._prepare(request)
        except ApiError as exc:
            meter.fail(exc.error_type)
            return exc.response(request)
        except _Answered as answered:
            meter.fail("rate_limit_error")
            return answered.response

    async def _prepare(self, request: web.Request) -> tuple[_Request, StreamEncoder]:
        key = request.headers.get("X-API-Key", "")
        parsed = await self._parse(request, key)
        charge = request.get(CHARGE_KEY)
        if charge is not None:  # the key's budget pays for valid requests only
            refused = charge(len(parsed.text))
            if refused is not None:
                raise _Answered(refused)
        try:
            codec = _HTTP_CODEC.get(parsed.fmt, parsed.fmt)
            encoder = await self._encoders.make(codec, parsed.params.sample_rate)
        except ValueError as exc:  # the encoder cannot do this format at this rate
            raise ApiError.invalid("sample_rate", str(exc)) from None
        self._usage(key, len(parsed.text))
        meter_of(request).characters(len(parsed.text))
        return parsed, encoder

    async def _audio(
        self, parsed: _Request, encoder: StreamEncoder, words: list[_Word] | None = None
    ) -> AsyncIterator[bytes]:
        """The encoded audio of the whole text, piece by piece; ``words`` collects timings."""
        params = parsed.params
        pieces = engine_pcm(
            self._engine,
            parsed.text,
            max_unit_chars=self._config.max_unit_chars,
            voice=params.voice,
            language=params.language,
            sample_rate=params.sample_rate,
            speed=params.speed,
            seed=params.seed,
        )
        async for chunk, offset in pieces:
            if words is not None:
                words.extend(_Word(w.text, offset + w.start, w.duration) for w in chunk.words)
            data = await self._encoders.encode(encoder, chunk.pcm)
            if data:
                yield data
        tail = await self._encoders.finish(encoder)
        if tail:
            yield tail

    async def speech_bytes(self, request: web.Request) -> web.StreamResponse:
        """Stream the whole text's audio with chunked transfer, as it is synthesized."""
        admitted = await self._admit(request)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        parsed, encoder = admitted
        meter = meter_of(request)
        codec = _HTTP_CODEC.get(parsed.fmt, parsed.fmt)
        response = web.StreamResponse(
            headers={"Content-Type": content_type(codec), "request-id": request_id(request)}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for data in self._audio(parsed, encoder):
                meter.first_byte()
                await response.write(data)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up mid-stream: stop synthesizing for nobody
        except Exception:
            # Headers are out: cut the connection so the client sees a broken transfer, not a
            # short file it would take for the whole answer.
            log.exception("synthesis failed (HTTP speech request)")
            meter.fail("internal_server_error")
            if request.transport is not None:
                request.transport.abort()
        # No encoder.close() here: a pool thread may still be inside the codec when the handler
        # is cancelled; the encoder's finalizer frees it once that thread lets go.
        return response

    async def speech_detailed(self, request: web.Request) -> web.StreamResponse:
        """All the audio in one JSON body, base64, with word timings when asked.

        API 1.1+ answers ``{"audio", "timestamps"}`` (``return_timestamps``); 1.0 answered
        ``{"audio", "seed", "durations"}`` (``return_durations``), and so does this server for
        requests without a typed ``lmnt-version``.

        The body is streamed as the audio is made (chunked): the ``audio`` string is written
        in base64 pieces and the timings after it, so a 5,000-character request holds a few
        encoder slices at a time instead of the whole audio several times over (raw, base64,
        JSON), which the allocator never gave back.  A failure before the first audio is a
        500 error answer; one mid-stream cuts the connection (a broken transfer, never a short
        body the client would take for the whole answer).
        """
        admitted = await self._admit(request)
        if isinstance(admitted, web.StreamResponse):
            return admitted
        parsed, encoder = admitted
        meter = meter_of(request)
        words: list[_Word] = []
        pieces = self._audio(parsed, encoder, words)
        try:
            held = await anext(pieces, b"")
        except Exception:
            log.exception("synthesis failed (HTTP speech request)")
            meter.fail("internal_server_error")
            return error_response(
                request, 500, "internal_server_error", "speech synthesis failed on the server"
            )
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "request-id": request_id(request)}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            meter.first_byte()
            await response.write(b'{"audio": "')
            async for data in pieces:  # base64 in multiples of 3 bytes: no padding mid-string
                held += data
                cut = len(held) - len(held) % 3
                if cut:
                    await response.write(base64.b64encode(held[:cut]))
                    held = held[cut:]
            await response.write(base64.b64encode(held) + b'"')
            rest: dict[str, Any] = {}
            spans = [w.to_json() for w in words]
            if is_typed(api_version(request)):
                if _truthy(parsed.body.get("return_timestamps")):
                    rest["timestamps"] = spans
            else:
                rest["seed"] = parsed.params.seed if parsed.params.seed is not None else 0
                if _truthy(parsed.body.get("return_durations")) or _truthy(
                    parsed.body.get("return_timestamps")
                ):
                    rest["durations"] = spans
            tail = json.dumps(rest)[1:]  # '"seed": 0, ...}' or '}'
            await response.write((", " + tail if rest else tail).encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up: stop synthesizing for nobody
        except Exception:
            log.exception("synthesis failed (HTTP speech request)")
            meter.fail("internal_server_error")
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _parse(self, request: web.Request, key: str) -> _Request:
        body = await _body(request)
        for name, value in body.items():
            if isinstance(value, str) and has_lone_surrogate(value):
                raise ApiError.invalid(
                    name, "Input should be a valid string without lone surrogates", "string_type"
                )
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError.invalid("text", "Field required", "missing")
        limit = self._config.max_http_text_chars
        if len(text) > limit:
            raise ApiError.invalid(
                "text", f"String should have at most {limit} characters", "string_too_long"
            )
        fmt = body.get("format", "mp3")
        if fmt not in HTTP_FORMATS:
            choices = ", ".join(repr(f) for f in HTTP_FORMATS)
            raise ApiError.invalid("format", f"Input should be one of {choices}", "literal_error")
        fields = {name: body[name] for name in _CODEC_FIELDS if name in body}
        fields.setdefault("sample_rate", 8000 if fmt == "ulaw" else 24000)
        try:
            params = parse_init(json.dumps({"X-API-Key": key, **fields}))
        except InitError as exc:
            raise ApiError.invalid(str(exc).split(":", 1)[0], str(exc)) from None
        if not known_voice(self._engine, params.voice):
            raise ApiError.invalid("voice", unknown_voice_message(self._engine, params.voice))
        try:
            check_request(self._engine, params.voice, params.language)
        except LanguageError as exc:
            raise ApiError.invalid("language", str(exc)) from None
        return _Request(text, fmt, params, body)


async def engine_pcm(
    engine: SpeechEngine,
    text: str,
    *,
    max_unit_chars: int,
    voice: str,
    language: str,
    sample_rate: int,
    speed: float,
    seed: int | None,
) -> AsyncIterator[tuple[EngineChunk, float]]:
    """The engine's audio for a whole text, unit by unit, with each unit's start in seconds.

    Shared by LMNT's and OpenAI's HTTP speech: the text is cut as on the WebSocket, and each
    engine call is told how much audio the client already holds (the engine's scheduling hint).
    """
    offset = 0.0
    first: float | None = None  # when the first audio went out
    for unit in speech_units(text, max_unit_chars):
        lead = 0.0 if first is None else max(0.0, offset - (time.monotonic() - first))
        PLAYBACK_LEAD.set(lead)
        chunks = engine.synthesize(
            unit,
            voice=voice,
            language=language,
            sample_rate=sample_rate,
            speed=speed,
            seed=seed,
        )
        samples = 0
        try:
            async for chunk in chunks:
                first = time.monotonic() if first is None else first
                samples += len(chunk.pcm) // 2
                yield chunk, offset
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        offset += samples / sample_rate


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON or form body as a dict (form numbers converted, as FastAPI would)."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        body: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        for name, kind in _NUMERIC.items():
            if name in body:
                try:
                    body[name] = kind(body[name])
                except ValueError:
                    raise ApiError.invalid(
                        name, f"Input should be a valid {kind.__name__}"
                    ) from None
        return body
    try:
        body = await request.json()
    except ValueError:
        raise ApiError.invalid("body", "JSON decode error", "json_invalid") from None
    if not isinstance(body, dict):
        raise ApiError.invalid("body", "Input should be a valid dictionary", "dict_type")
    return body
