"""Transport-level protection of the server: connection cap, header and body timeouts.

aiohttp accepts every connection and waits as long as a client likes for request headers
(slowloris) and bodies, so a few hundred idle sockets can hold a server's file descriptors
forever.  :class:`ConnectionGuard` wraps the protocol factory: beyond ``max_connections`` a new
connection gets a one-line 503 and is closed before it costs anything; a connection that has
not completed its request headers within ``header_timeout`` (or its next request within
``keepalive + header_timeout``) is answered 408 and closed.  :func:`guard_middleware` covers
what only the request layer sees: draining, the body timeout, per-key limits on the HTTP
speech endpoints, and the request id of log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from lmnt_local.server.api.errors import error_response, refusal
from lmnt_local.server.api.intake import FirstMessage
from lmnt_local.server.api.keys import key_allowed
from lmnt_local.server.ops.health import Health
from lmnt_local.server.ops.limits import KeyLimits
from lmnt_local.server.ops.logs import request_id
from lmnt_local.server.ops.metrics import ServerMetrics

__all__ = [
    "CHARGE_KEY",
    "STATE_SCOPE_HEADER",
    "ConnectionGuard",
    "guard_middleware",
    "request_key",
]

log = logging.getLogger("lmnt_local.server")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 46\r\n\r\n"
    b'{"error": "too many connections, retry later"}'
)
_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: 40\r\n\r\n"
    b'{"error": "request headers took too long"}'
)
#: A server close frame, code 1009 (message too big), unmasked as servers send it.
_CLOSE_1009 = b"\x88\x02\x03\xf1"
#: A client's own request id is logged only if it looks like one (no free text in logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Paths whose bodies carry text to synthesize (per-key character budget applies).
_SPEECH_PREFIX = "/v1/ai/speech"
_VOICE_UPLOAD = "/v1/ai/voice"
#: Answers built from per-process state (the account book) say so in this header.
STATE_SCOPE_HEADER = "x-lmnt-local-state-scope"
_PER_PROCESS = ("/v1/account", "/v1/ai/voice")
#: ``request[CHARGE_KEY](chars)``: how a speech handler spends the key's character budget once
#: the request is valid (None, or the refusal to answer with).
#: A typed ``web.RequestKey`` where aiohttp has one (3.14+: a plain str key warns there).
_REQUEST_KEY: Any = getattr(web, "RequestKey", None)
CHARGE_KEY: Any = _REQUEST_KEY("lmnt_charge", object) if _REQUEST_KEY else "lmnt_charge"


class _Guarded(asyncio.Protocol):
    """Forwards every callback to aiohttp's handler; watches the connection's first bytes."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._handshake: asyncio.Future[None] | None = None
        #: A WebSocket connection's first message, watched until complete (None: not watched).
        self.first_message: FirstMessage | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self._guard
        if len(guard.open) >= guard.max_connections:
            self._refused = True
            guard.metrics.error("connection_limit")
            if guard.ssl_context is None:
                transport.write(_BUSY)  # a TLS client could not read it: just close
            transport.close()
            return
        guard.open[transport] = self
        self.arm(guard.header_timeout)  # with TLS, the handshake counts against it too
        if guard.ssl_context is None:
            self._inner.connection_made(transport)
        else:
            self._handshake = asyncio.ensure_future(self._start_tls(transport, guard.ssl_context))

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """The TLS handshake, on a connection already counted and timed like any other.

        (``create_server(ssl=...)`` shows the protocol nothing until the handshake ends, so a
        client that never finishes one was neither counted nor cut before 60 s.)
        """
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._guard.header_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._guard.metrics.error("tls_handshake")
            log.debug("TLS handshake did not finish: %r", exc)
            self.disarm()
            self._guard.open.pop(raw, None)
            raw.abort()
            return
        if tls is None or tls.is_closing():
            self._guard.open.pop(raw, None)
            return
        self._guard.open.pop(raw, None)
        self._guard.open[tls] = self
        self.transport = tls
        self._inner.connection_made(tls)

    def arm(self, seconds: float) -> None:
        """(Re)start the clock for the next request's headers."""
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        handshaking = self._handshake is not None and not self._handshake.done()
        if handshaking:
            assert self._handshake is not None
            self._guard.metrics.error("header_timeout")
            self._handshake.cancel()  # start_tls ends; its cleanup drops the connection
            return
        if self.transport is not None and not self.transport.is_closing():
            self._guard.metrics.error("header_timeout")
            self.transport.write(_SLOW)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._refused:
            return
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()  # the peer left mid-handshake (start_tls cleans up)
            return
        self._guard.open.pop(self.transport, None)  # type: ignore[arg-type]
        self._inner.connection_lost(exc)
        _unlink(self._inner, self.transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        first = self.first_message
        if first is not None:
            seen = first.feed(data)
            if seen == "done":
                self.first_message = None
            elif seen == "over":
                # An init bigger than any init may be: close 1009 before buffering it (the
                # WebSocket reader would keep up to 16x more, without a key).
                self._refused = True
                self._guard.open.pop(self.transport, None)  # type: ignore[arg-type]
                self._guard.metrics.error("init_too_large")
                if self.transport is not None:
                    self.transport.write(_CLOSE_1009)
                    self.transport.close()
                self._inner.connection_lost(None)
                return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()


def _unlink(handler: Any, transport: Any) -> None:
    """Break the cycles a finished connection leaves, so reference counting frees it at once.

    aiohttp's handler keeps the WebSocket's heartbeat callback (a bound method of the
    response, which holds the request, which holds the handler) after the connection is
    gone, and asyncio's socket transport keeps its own read callback (a bound method of
    itself): each ended session then waited for a full garbage collection (about 7 KB each).
    Nothing reads these once the connection is lost.
    """
    for owner, name in (
        (handler, "_data_received_cb"),
        (handler, "_payload_parser"),
        (transport, "_read_ready_cb"),
    ):
        if getattr(owner, name, None) is not None:
            with contextlib.suppress(AttributeError):
                setattr(owner, name, None)


class ConnectionGuard:
    """A protocol factory around aiohttp's, for ``loop.create_server``."""

    def __init__(
        self,
        metrics: ServerMetrics,
        *,
        max_connections: int,
        header_timeout: float,
        keepalive_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        #: TLS is done here, after the connection is counted (see ``_Guarded._start_tls``).
        self.ssl_context = ssl_context
        #: aiohttp's protocol factory (``runner.server``), set once the runner is set up.
        self.factory: Callable[[], Any] | None = None
        self.metrics = metrics
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.open: dict[asyncio.Transport, _Guarded] = {}

    def __call__(self) -> _Guarded:
        assert self.factory is not None, "ConnectionGuard.factory is not set"
        return _Guarded(self, self.factory())

    def watch_first_message(self, transport: Any, limit: int) -> None:
        """Refuse (close 1009) a first WebSocket message over ``limit`` bytes unbuffered.

        The one place a client without a key can make the server hold data is a WebSocket
        before its init frame: aiohttp's reader keeps a partial message up to its cap.
        """
        guarded = self.open.get(transport)
        if guarded is not None:
            guarded.first_message = FirstMessage(limit)

    def request_started(self, transport: Any) -> None:
        guarded = self.open.get(transport)
        if guarded is not None:
            guarded.disarm()

    def request_ended(self, transport: Any) -> None:
        guarded = self.open.get(transport)
        if guarded is not None and not transport.is_closing():
            guarded.arm(self.keepalive_timeout + self.header_timeout)


def guard_middleware(
    guard: ConnectionGuard | None,
    health: Health,
    limits: KeyLimits,
    metrics: ServerMetrics,
    *,
    body_timeout: float,
    inflight: set[asyncio.Task[Any]],
    api_keys: Collection[str] | None = None,
) -> Any:
    """The request-level half of the guard (see the module docstring).

    A request with a body is refused (401/403) before one byte of that body is read when its
    key is missing or not allowed, so a client without a key cannot make the server hold
    bodies; ``POST /v1/ai/voice`` (answered 501 without reading the upload) is not read at all.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else f"req_{uuid.uuid4().hex}"
        request_id.set(rid)
        transport = request.transport
        if guard is not None:
            guard.request_started(transport)
        task = asyncio.current_task()
        speech = request.method == "POST" and request.path.startswith(_SPEECH_PREFIX)
        meter = metrics.meter(request)  # LMNT's and OpenAI's speech routes
        if (speech or meter is not None) and task is not None:
            inflight.add(task)  # a drain waits for it
        status = 500
        try:
            response = await _guarded(request, handler, speech, meter)
            if not response.prepared:
                if "request-id" not in response.headers:
                    response.headers["request-id"] = rid  # every answer names its request
                if request.path.startswith(_PER_PROCESS):
                    # Usage, stars and voice edits live in this process only: under
                    # ``--workers N`` or behind a balancer another request may see others.
                    response.headers[STATE_SCOPE_HEADER] = "process"
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it)
            raise
        finally:
            if meter is not None:
                meter.done(status)
            if task is not None:
                inflight.discard(task)
            if guard is not None:
                guard.request_ended(transport)

    async def _guarded(
        request: web.Request, handler: _Handler, speech: bool, meter: Any
    ) -> web.StreamResponse:
        if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
            if request.path.startswith("/v1/") and not key_allowed(request_key(request), api_keys):
                refused = _key_refusal(request, api_keys)
                refused.force_close()  # the body is never read: no reuse of the connection
                kind = "permission_error" if refused.status == 403 else "authentication_error"
                if meter is not None:
                    meter.fail(kind)  # counted as the handler would have
                else:
                    metrics.error(kind)
                return refused
            if request.method == "POST" and request.path == _VOICE_UPLOAD:
                return await handler(request)  # 501 without reading the upload
            if speech and not health.ready:
                return _unready(request, health, metrics)
            answered = await _read_body(request, body_timeout, metrics)
            if answered is not None:
                return answered
        if speech:
            return await _speech(request, handler, health, limits, metrics)
        return await handler(request)

    return middleware


def _key_refusal(request: web.Request, api_keys: Collection[str] | None) -> web.Response:
    """401/403 in the shape of the API the request is for (OpenAI's, or LMNT's version)."""
    from lmnt_local.server.api.openai import SPEECH_PATH, OpenAIError

    if request.path == SPEECH_PATH:
        if not request_key(request):
            message = "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
            return OpenAIError(401, message, kind="authentication_error").response()
        return OpenAIError(
            401, "Incorrect API key provided.", code="invalid_api_key", kind="authentication_error"
        ).response()
    return refusal(request, api_keys) or error_response(
        request, 401, "authentication_error", "Invalid API key"
    )


def request_key(request: web.Request) -> str:
    """The API key of a REST request: ``X-API-Key``, else an ``Authorization: Bearer`` token."""
    key = request.headers.get("X-API-Key", "")
    if not key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    return key


def _unready(request: web.Request, health: Health, metrics: ServerMetrics) -> web.Response:
    """503 while the engine loads or the server drains (``/readyz`` says the same)."""
    metrics.error("draining" if health.draining else "loading")
    what = "shutting down" if health.draining else "still loading its engine"
    response = error_response(
        request,
        503,
        "internal_server_error",
        f"server is {what}, retry on another replica",
        headers={"Retry-After": "1"},
    )
    response.force_close()
    return response


async def _read_body(
    request: web.Request, seconds: float, metrics: ServerMetrics
) -> web.Response | None:
    """Read (and cache) the body within ``seconds``: a stalled body is answered 408."""
    try:
        async with asyncio.timeout(seconds):
            if request.content_type == "multipart/form-data":
                await request.post()  # cached: the handler's post() returns the same
            else:
                await request.read()  # cached: json(), text() and post() reuse it
    except TimeoutError:
        metrics.error("body_timeout")
        response = error_response(
            request,
            408,
            "invalid_request_error",
            f"request body not received within {seconds:g} s",
            headers={"Connection": "close"},
        )
        await response.prepare(request)
        await response.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()  # no lingering read of a body that never comes
        return response
    except web.HTTPRequestEntityTooLarge as exc:
        metrics.error("body_too_large")
        response = error_response(request, 413, "invalid_request_error", exc.text or "too large")
        response.force_close()
        return response
    return None


async def _speech(
    request: web.Request,
    handler: _Handler,
    health: Health,
    limits: KeyLimits,
    metrics: ServerMetrics,
) -> web.StreamResponse:
    if not health.ready:
        return _unready(request, health, metrics)
    key = request_key(request)
    if not key:
        return await handler(request)  # the handler answers the missing key
    name = limits.name_of(key)
    refusal_text = limits.open_session(key)
    if refusal_text is not None:
        metrics.error("rate_limit_error")
        return _too_many(request, refusal_text, 1.0)
    charged = 0

    def charge(chars: int) -> web.Response | None:
        """Spend the key's budget; called by the handler once the request is valid."""
        nonlocal charged
        refused = limits.take_chars(key, chars)
        if refused is None:
            charged = chars
            return None
        metrics.error("rate_limit_error")
        if refused.retry_after is None:  # no wait would ever make it fit
            return error_response(
                request,
                429,
                "rate_limit_error",
                refused.message,
                headers={"x-should-retry": "false"},
            )
        return _too_many(request, refused.message, refused.retry_after)

    request[CHARGE_KEY] = charge
    try:
        response = await handler(request)
        if response.status < 400 and charged:
            metrics.characters.labels(name).inc(charged)
        return response
    finally:
        limits.close_session(key)


def _too_many(request: web.Request, message: str, retry_after: float) -> web.Response:
    return error_response(
        request,
        429,
        "rate_limit_error",
        message,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )
