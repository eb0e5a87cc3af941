"""HTTP side of the local server: ``/v1/ai/speech/bytes``, the voice list, the health check.

Parameters are validated with the same codec as WebSocket init frames (``parse_init``), so the
two doors of the server accept and refuse exactly the same voices, models, languages and
rates.  Errors are FastAPI-shaped like LMNT's: 404 ``{"detail": "Not Found"}``, 422
``{"detail": [{"loc", "msg", "type"}]}``, and 401/403 ``{"error": "Invalid API key"}``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from ..protocol import InitError, InitRequest, parse_init
from .config import ServerConfig, speech_units
from .encoding import HTTP_FORMATS, content_type, make_encoder
from .engines import PLAYBACK_LEAD, LanguageError, SpeechEngine, check_request
from .session import key_allowed

__all__ = ["HttpRoutes", "json_errors"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Body fields checked by the codec; everything else LMNT accepted (``debug``...) is ignored.
_CODEC_FIELDS = (
    "voice", "model", "language", "sample_rate", "temperature", "top_p", "seed", "speed",
)  # fmt: skip
_NUMERIC = {"temperature": float, "top_p": float, "seed": int, "speed": float}


@web.middleware
async def json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """aiohttp's plain-text 404/405 as LMNT's (FastAPI's) JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.json_response({"detail": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed:
        return web.json_response({"detail": "Method Not Allowed"}, status=405)


class _Invalid(Exception):
    def __init__(self, field: str, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind

    def response(self) -> web.Response:
        detail = [{"loc": ["body", self.field], "msg": str(self), "type": self.kind}]
        return web.json_response({"detail": detail}, status=422)


class HttpRoutes:
    """The HTTP handlers, bound to one engine, config and key set."""

    def __init__(
        self, engine: SpeechEngine, config: ServerConfig, api_keys: Collection[str] | None
    ) -> None:
        self._engine = engine
        self._config = config
        self._api_keys = api_keys

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/ai/speech/bytes", self.speech_bytes)
        app.router.add_get("/v1/ai/voice/list", self.voice_list)
        app.router.add_get("/health_check", self.health_check)

    async def health_check(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def _refusal(self, request: web.Request) -> web.Response | None:
        """LMNT's answer to a missing (401) or wrong (403) key on its REST endpoints."""
        key = request.headers.get("X-API-Key", "")
        if key_allowed(key, self._api_keys):
            return None
        return web.json_response({"error": "Invalid API key"}, status=401 if not key else 403)

    async def voice_list(self, request: web.Request) -> web.Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        owner = request.query.get("owner", "all")
        voices = [v.to_json() for v in self._engine.voices()]
        if owner != "all":
            voices = [v for v in voices if v.get("owner") == owner]
        return web.json_response(voices)

    async def speech_bytes(self, request: web.Request) -> web.StreamResponse:
        """Stream the whole text's audio with chunked transfer, as it is synthesized."""
        refused = self._refusal(request)
        if refused is not None:
            return refused
        key = request.headers.get("X-API-Key", "")
        try:
            text, fmt, params = await self._parse(request, key)
            encoder = make_encoder(fmt, params.sample_rate)
        except _Invalid as exc:
            return exc.response()
        except ValueError as exc:  # the encoder cannot do this format at this rate
            return _Invalid("sample_rate", str(exc)).response()
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type(fmt),
                "request-id": f"req_{uuid.uuid4().hex}",
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        audio = 0.0  # seconds of audio written, and when the first was: the engine's
        first: float | None = None  # scheduling hint (PLAYBACK_LEAD), as on the WebSocket
        try:
            for unit in speech_units(text, self._config.max_unit_chars):
                lead = 0.0 if first is None else max(0.0, audio - (time.monotonic() - first))
                PLAYBACK_LEAD.set(lead)
                chunks = self._engine.synthesize(
                    unit,
                    voice=params.voice,
                    language=params.language,
                    sample_rate=params.sample_rate,
                    speed=params.speed,
                    seed=params.seed,
                )
                try:
                    async for chunk in chunks:
                        audio += len(chunk.pcm) / (2 * params.sample_rate)
                        first = time.monotonic() if first is None else first
                        data = encoder.encode(chunk.pcm)
                        if data:
                            await response.write(data)
                finally:
                    aclose = getattr(chunks, "aclose", None)
                    if aclose is not None:
                        await aclose()
            tail = encoder.finish()
            if tail:
                await response.write(tail)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up mid-stream: stop synthesizing for nobody
        return response

    async def _parse(self, request: web.Request, key: str) -> tuple[str, str, InitRequest]:
        body = await _body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Invalid("text", "Field required", "missing")
        limit = self._config.max_http_text_chars
        if len(text) > limit:
            raise _Invalid(
                "text", f"String should have at most {limit} characters", "string_too_long"
            )
        fmt = body.get("format", "mp3")
        if fmt not in HTTP_FORMATS:
            choices = ", ".join(repr(f) for f in HTTP_FORMATS)
            raise _Invalid("format", f"Input should be one of {choices}", "literal_error")
        fields = {name: body[name] for name in _CODEC_FIELDS if name in body}
        fields.setdefault("sample_rate", 8000 if fmt == "ulaw" else 24000)
        try:
            params = parse_init(json.dumps({"X-API-Key": key, **fields}))
        except InitError as exc:
            raise _Invalid(str(exc).split(":", 1)[0], str(exc)) from None
        try:
            check_request(self._engine, params.voice, params.language)
        except LanguageError as exc:
            raise _Invalid("language", str(exc)) from None
        return text, fmt, params


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
                    raise _Invalid(name, f"Input should be a valid {kind.__name__}") from None
        return body
    try:
        body = await request.json()
    except ValueError:
        raise _Invalid("body", "JSON decode error", "json_invalid") from None
    if not isinstance(body, dict):
        raise _Invalid("body", "Input should be a valid dictionary", "dict_type")
    return body
