"""The voice endpoints: list (``owner``/``starred`` filters), info, edit, star, delete, create.

The installed voices are the engine's; they are system voices, so each key may star them and
edit how they are described to it (LMNT's ``PUT`` semantics: only given fields change), but not
delete them.  Creating a voice needs a cloning engine, which the local server does not have:
``POST /v1/ai/voice`` is answered with an error that says so (501, ``x-should-retry: false`` so
the SDKs do not retry) without reading the upload.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from aiohttp import web

from lmnt_local.server.api.account import AccountBook, validate_update
from lmnt_local.server.api.errors import ApiError, error_response, refusal
from lmnt_local.server.engines import SpeechEngine, VoiceInfo

__all__ = ["VoiceRoutes"]

_OWNERS = ("all", "system", "me", "other")


class VoiceRoutes:
    """Voice handlers bound to one engine, key set and account book."""

    def __init__(
        self, engine: SpeechEngine, api_keys: Collection[str] | None, book: AccountBook
    ) -> None:
        self._engine = engine
        self._api_keys = api_keys
        self._book = book

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/ai/voice/list", self.voice_list)
        app.router.add_post("/v1/ai/voice", self.create)
        app.router.add_get("/v1/ai/voice/{id}", self.retrieve)
        app.router.add_put("/v1/ai/voice/{id}", self.update)
        app.router.add_delete("/v1/ai/voice/{id}", self.delete)

    def _voice_json(self, key: str, voice: VoiceInfo) -> dict[str, Any]:
        body = voice.to_json()
        body.update(self._book.edits(key, voice.id))
        body["starred"] = voice.id in self._book.starred(key)
        return body

    def _find(self, request: web.Request) -> VoiceInfo:
        wanted = request.match_info["id"]
        for voice in self._engine.voices():
            if voice.id == wanted:
                return voice
        shown = wanted if len(wanted) <= 40 else wanted[:40] + "..."
        raise ApiError(404, "not_found_error", f"voice {shown!r} not found")

    async def voice_list(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        key = request.headers["X-API-Key"]
        owner = request.query.get("owner", "all")
        if owner not in _OWNERS:
            choices = ", ".join(repr(o) for o in _OWNERS)
            return ApiError.invalid("owner", f"Input should be one of {choices}").response(request)
        starred = request.query.get("starred", "false").strip().lower()
        if starred not in ("true", "false", "1", "0"):
            return ApiError.invalid("starred", "Input should be a valid boolean").response(request)
        voices = [self._voice_json(key, v) for v in self._engine.voices()]
        if owner != "all":
            voices = [v for v in voices if v.get("owner") == owner]
        if starred in ("true", "1"):
            voices = [v for v in voices if v["starred"]]
        return web.json_response(voices)

    async def retrieve(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        try:
            voice = self._find(request)
        except ApiError as exc:
            return exc.response(request)
        return web.json_response(self._voice_json(request.headers["X-API-Key"], voice))

    async def update(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        key = request.headers["X-API-Key"]
        try:
            voice = self._find(request)
            try:
                body = await request.json()
            except ValueError:
                raise ApiError.invalid("body", "JSON decode error", "json_invalid") from None
            try:
                fields = validate_update(body)
            except ValueError as exc:
                name, _, message = str(exc).partition(": ")
                raise ApiError.invalid(name, message or str(exc)) from None
        except ApiError as exc:
            return exc.response(request)
        self._book.update(key, voice.id, fields)
        return web.json_response({"voice": self._voice_json(key, voice)})

    async def delete(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        try:
            voice = self._find(request)
        except ApiError as exc:
            return exc.response(request)
        return error_response(
            request,
            403,
            "permission_error",
            f"voice {voice.id!r} is a system voice of this local server and cannot be deleted",
        )

    async def create(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        response = error_response(
            request,
            501,
            "invalid_request_error",
            "voice cloning is not available on this local LMNT server: it has no cloning "
            "engine; use one of the installed voices (GET /v1/ai/voice/list)",
            headers={"x-should-retry": "false"},
        )
        response.force_close()  # the upload is never read; do not reuse the connection
        return response
