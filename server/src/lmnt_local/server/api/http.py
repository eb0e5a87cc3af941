"""The HTTP side of the local server: the router, the error middleware and the health check.

Each family of endpoints lives in its own module: speech (:mod:`.speech`), voices
(:mod:`.voices`), the account (:mod:`.account`).  Errors are shaped per API version by
:mod:`.errors`: FastAPI's bodies for 1.0 clients (404 ``{"detail": "Not Found"}``, 422
``{"detail": [{"loc", "msg", "type"}]}``, 401/403 ``{"error": "Invalid API key"}``), and the
``{"error": {"type", "message"}}`` envelope for clients sending ``lmnt-version: 1.1``/``1.2``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from lmnt_local.server.api.account import AccountBook, AccountRoutes
from lmnt_local.server.api.errors import error_response
from lmnt_local.server.api.speech import SpeechRoutes
from lmnt_local.server.api.voices import VoiceRoutes
from lmnt_local.server.config import ServerConfig
from lmnt_local.server.encoding.pool import EncoderPool
from lmnt_local.server.engines import SpeechEngine

__all__ = ["HttpRoutes", "json_errors"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Paths of the OpenAI-compatible API: their clients parse OpenAI's error envelope.
_OPENAI_PATHS = ("/v1/audio/", "/v1/models")


@web.middleware
async def json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """aiohttp's plain-text 404/405 as JSON bodies: LMNT's, in the request's API version, or
    OpenAI's under the OpenAI-compatible paths (its SDKs read ``error.message``)."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.path.startswith(_OPENAI_PATHS):
            return _openai(404, f"Unknown request URL: {request.method} {request.path}")
        return error_response(request, 404, "not_found_error", "Not Found")
    except web.HTTPMethodNotAllowed as exc:
        if request.path.startswith(_OPENAI_PATHS):
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _openai(
                405,
                f"{request.method} is not allowed on {request.path} (use {allowed})",
                headers={"Allow": allowed},
            )
        return error_response(request, 405, "invalid_request_error", "Method Not Allowed")


def _openai(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    from lmnt_local.server.api.openai import OpenAIError

    return OpenAIError(status, message, headers=headers).response()


class HttpRoutes:
    """All HTTP handlers, bound to one engine, config, key set, encoder pool and account book."""

    def __init__(
        self,
        engine: SpeechEngine,
        config: ServerConfig,
        api_keys: Collection[str] | None,
        *,
        encoders: EncoderPool | None = None,
        accounts: AccountBook | None = None,
    ) -> None:
        self.accounts = AccountBook(config.max_tracked_keys) if accounts is None else accounts
        self._encoders = EncoderPool() if encoders is None else encoders
        self._speech = SpeechRoutes(
            engine, config, api_keys, self._encoders, self.accounts.add_usage
        )
        self._voices = VoiceRoutes(engine, api_keys, self.accounts)
        self._account = AccountRoutes(self.accounts, api_keys)

    def add_to(self, app: web.Application) -> None:
        self._speech.add_to(app)
        self._voices.add_to(app)
        self._account.add_to(app)
        app.router.add_get("/health_check", self.health_check)

    async def health_check(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})
