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
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from lmnt_local.server.ops.health import Health
from lmnt_local.server.ops.limits import KeyLimits
from lmnt_local.server.ops.logs import request_id
from lmnt_local.server.ops.metrics import ServerMetrics

__all__ = ["ConnectionGuard", "guard_middleware"]

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
#: A client's own request id is logged only if it looks like one (no free text in logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Paths whose bodies carry text to synthesize (per-key character budget applies).
_SPEECH_PREFIX = "/v1/ai/speech"


class _Guarded(asyncio.Protocol):
    """Forwards every callback to aiohttp's handler; watches the connection's first bytes."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self._guard
        if len(guard.open) >= guard.max_connections:
            self._refused = True
            guard.metrics.error("connection_limit")
            transport.write(_BUSY)
            transport.close()
            return
        guard.open[transport] = self
        self.arm(guard.header_timeout)
        self._inner.connection_made(transport)

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
        if self.transport is not None and not self.transport.is_closing():
            self._guard.metrics.error("header_timeout")
            self.transport.write(_SLOW)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._refused:
            return
        self._guard.open.pop(self.transport, None)  # type: ignore[arg-type]
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
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


class ConnectionGuard:
    """A protocol factory around aiohttp's, for ``loop.create_server``."""

    def __init__(
        self,
        metrics: ServerMetrics,
        *,
        max_connections: int,
        header_timeout: float,
        keepalive_timeout: float,
    ) -> None:
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
) -> Any:
    """The request-level half of the guard (see the module docstring)."""

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
            if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
                refused = await _read_body(request, body_timeout, metrics)
                if refused is not None:
                    status = refused.status
                    return refused
            if speech:
                response = await _speech(request, handler, health, limits, metrics)
            else:
                response = await handler(request)
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

    return middleware


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
        response = web.json_response(
            {"error": f"request body not received within {seconds:g} s"},
            status=408,
            headers={"Connection": "close"},
        )
        await response.prepare(request)
        await response.write_eof()
        if request.protocol is not None:
            request.protocol.force_close()  # no lingering read of a body that never comes
        return response
    except web.HTTPException:
        raise  # body too large: aiohttp's 413
    return None


async def _speech(
    request: web.Request,
    handler: _Handler,
    health: Health,
    limits: KeyLimits,
    metrics: ServerMetrics,
) -> web.StreamResponse:
    if health.draining:
        metrics.error("draining")
        return web.json_response(
            {"error": "server is shutting down, retry on another replica"},
            status=503,
            headers={"Retry-After": "1", "Connection": "close"},
        )
    key = request.headers.get("X-API-Key", "")
    if not key:
        return await handler(request)  # the handler answers the missing key
    chars = _text_length(request)
    name = limits.name_of(key)
    wait = limits.take_chars(key, chars)
    if wait is not None:
        metrics.error("rate_limit_error")
        return _too_many("character rate limit exceeded for this API key", wait)
    refusal = limits.open_session(key)
    if refusal is not None:
        metrics.error("rate_limit_error")
        return _too_many(refusal, 1.0)
    try:
        response = await handler(request)
        if response.status < 400 and chars:
            metrics.characters.labels(name).inc(chars)
        return response
    finally:
        limits.close_session(key)


def _text_length(request: web.Request) -> int:
    """Characters of ``text`` in the (already read) body; 0 when there is none to count."""
    raw: Any = getattr(request, "_read_bytes", None)
    if not raw:
        form: Any = getattr(request, "_post", None)
        text = form.get("text") if form is not None else None
        return len(text) if isinstance(text, str) else 0
    if request.content_type == "application/x-www-form-urlencoded":
        values = parse_qs(raw.decode("utf-8", "replace")).get("text", [""])
        return len(values[0])
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return 0
    text = body.get("text") if isinstance(body, dict) else None
    return len(text) if isinstance(text, str) else 0


def _too_many(message: str, retry_after: float) -> web.Response:
    return web.json_response(
        {"error": message}, status=429, headers={"Retry-After": str(int(retry_after))}
    )
