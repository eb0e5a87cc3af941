"""The local LMNT-compatible server: one aiohttp application for the WebSocket and HTTP API.

It is what ``lmnt-local`` runs for people who want to hear speech with no key and no network,
what the plugin's tests and benchmarks talk to, and what users point their own tests at
(see :mod:`videosdk.plugins.lmnt.testing`).  Protocol details live in the codec
(:mod:`..protocol`), sessions in :mod:`.session`, injected misbehaviour in :mod:`.faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import uuid
from collections.abc import Collection
from types import TracebackType

from aiohttp import web

from lmnt_local.protocol import STREAM_PATH
from lmnt_local.server.api.account import AccountBook
from lmnt_local.server.api.errors import error_response
from lmnt_local.server.api.http import HttpRoutes, json_errors
from lmnt_local.server.api.intake import LoopLag
from lmnt_local.server.api.openai import OpenAIRoutes
from lmnt_local.server.api.playground import add_playground
from lmnt_local.server.api.session import Session
from lmnt_local.server.config import ServerConfig
from lmnt_local.server.encoding.pool import EncoderPool
from lmnt_local.server.engines import SpeechEngine, best_engine, load_engine
from lmnt_local.server.faults import Faults
from lmnt_local.server.ops.guard import ConnectionGuard, guard_middleware
from lmnt_local.server.ops.health import Health
from lmnt_local.server.ops.limits import KeyLimits, LimitsConfig
from lmnt_local.server.ops.logs import request_id
from lmnt_local.server.ops.metrics import ServerMetrics, metrics_exposure
from lmnt_local.server.ops.observe import ServerHooks
from lmnt_local.server.ops.workers import bound_socket
from lmnt_local.server.record import SessionRecord
from lmnt_local.server.text.frontend import TextFrontEnd
from lmnt_local.server.text.lexicon import Lexicon

__all__ = ["LocalLMNTServer", "default_engine"]

log = logging.getLogger("lmnt_local.server")


def default_engine() -> SpeechEngine:
    """The best installed engine: Piper (neural), else espeak-ng, else the test tone."""
    engine = best_engine()
    log.info("local LMNT server: using the %s engine", engine.name)
    return engine


class LocalLMNTServer:
    """An LMNT-compatible speech server on a local port (``port=0`` picks a free one).

    Use as ``async with LocalLMNTServer(...) as srv`` or ``await srv.start()`` /
    ``await srv.stop()``.  ``api_keys``: when non-empty, only these keys are accepted; when
    empty or None, any non-empty key is (an allow-list in ``limits`` adds its keys and makes
    the set closed, see :mod:`.limits`).  ``sessions`` lists one :class:`SessionRecord` per
    WebSocket connection in order of arrival (the latest ``config.max_session_records``);
    ``faults`` may be replaced at any time and applies to connections made afterwards.
    ``accounts`` holds what the server counts per key (usage, starred voices, voice edits).
    """

    def __init__(
        self,
        engine: SpeechEngine | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        api_keys: Collection[str] | None = None,
        config: ServerConfig | None = None,
        faults: Faults | None = None,
        limits: LimitsConfig | None = None,
        reuse_port: bool = False,
        metrics_key: str | None = None,
    ) -> None:
        self.engine: SpeechEngine = engine if engine is not None else default_engine()
        self.config = config or ServerConfig()
        #: What sessions and HTTP requests speak through: the engine behind the text front-end
        #: (markup, lexicon, normaliser, word mapping), unless the config turns it off.
        self.speaker: SpeechEngine = self.engine
        if self.config.text_frontend:
            lexicon = Lexicon.load(self.config.lexicon) if self.config.lexicon else Lexicon()
            self.speaker = TextFrontEnd(self.engine, lexicon=lexicon)
        self.host = host
        self.ssl_context = ssl_context
        #: Per-key session and character limits (none unless configured).
        self.limits = KeyLimits(limits)
        listed = self.limits.config.allowed_keys  # an allow-list: its keys and api_keys only
        accepted = set(api_keys or ()) | set(listed or ())
        self.api_keys = frozenset(accepted) if accepted else None
        self.faults = faults or Faults()
        self.sessions: list[SessionRecord] = []
        #: For TLS servers started by the test fixtures: a client context trusting the cert.
        self.client_ssl_context: ssl.SSLContext | None = None
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._live: set[Session] = set()
        self.accounts = AccountBook(self.config.max_tracked_keys)
        self._encoders = EncoderPool()
        self._reuse_port = reuse_port
        #: Prometheus instruments, served on ``/metrics`` (``metrics_key``: only with
        #: ``Authorization: Bearer <metrics_key>``; the default comes from ``LMNT_METRICS_KEY``
        #: and ``LMNT_METRICS=off``, see :func:`.metrics.metrics_exposure`).
        env_key, exposed = metrics_exposure()
        self.metrics = ServerMetrics(key=metrics_key or env_key, exposed=exposed)
        #: Readiness (``/readyz``): false until the engine is loaded and from a drain on.
        self.health = Health()
        self._inflight: set[asyncio.Task[object]] = set()  # HTTP speech requests running
        self._guard: ConnectionGuard | None = None
        self._drain_cut = False
        #: How late the event loop has lately been (sessions' message rate allows for it).
        self._lag = LoopLag()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS): the SDKs' base URL.

        A wildcard bind (``0.0.0.0``, ``::``) is reachable on loopback, and a URL to the wildcard
        address is no address at all, so the URL names loopback then.
        """
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    @property
    def ready(self) -> bool:
        """True once ``start()`` has loaded the engine, until a drain or stop begins: what
        ``GET /readyz`` answers, for an application embedding the server."""
        return self._runner is not None and self.health.ready

    @property
    def ws_url(self) -> str:
        """The streaming endpoint, ``ws://`` or ``wss://``."""
        return "ws" + self.http_url.removeprefix("http") + STREAM_PATH

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> LocalLMNTServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen, then load the engine (off the loop): readiness turns true once it has.

        Health checks are answered while a slow engine loads, so an orchestrator sees a live
        process that is not ready yet rather than a refused connection.
        """
        if self._runner is not None:
            return
        cfg = self.config
        guard = ConnectionGuard(
            self.metrics,
            max_connections=cfg.max_connections,
            header_timeout=cfg.header_timeout,
            keepalive_timeout=cfg.keepalive_timeout,
            ssl_context=self.ssl_context,
        )
        middleware = guard_middleware(
            guard,
            self.health,
            self.limits,
            self.metrics,
            body_timeout=cfg.body_timeout,
            inflight=self._inflight,
            api_keys=self.api_keys,
        )
        app = web.Application(middlewares=[middleware, json_errors])
        app.router.add_get(STREAM_PATH, self._stream)
        HttpRoutes(
            self.speaker,
            self.config,
            self.api_keys,
            encoders=self._encoders,
            accounts=self.accounts,
        ).add_to(app)
        OpenAIRoutes(
            self.speaker,
            self.config,
            self.api_keys,
            encoders=self._encoders,
            usage=self.accounts.add_usage,
            limits=self.limits,
            metrics=self.metrics,
            health=self.health,
        ).add_to(app)
        add_playground(app, key_required=self.api_keys is not None)
        self.health.add_to(app)
        self.metrics.add_to(app)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=0.25,
            keepalive_timeout=cfg.keepalive_timeout,
        )
        await runner.setup()
        assert runner.server is not None
        guard.factory = runner.server
        sock = _listen(self.host, self._requested_port, reuse_port=self._reuse_port)
        try:
            await _GuardedSite(runner, sock, guard, ssl_context=self.ssl_context).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._guard = guard
        self._port = sock.getsockname()[1]
        self._encoders.warm()
        self._lag.start()
        self.health.draining = False
        try:
            # The model (Piper: ~0.6 s) loads off the loop while health checks are answered;
            # start() returns once it is loaded, so the first session does not pay for it.
            await asyncio.to_thread(load_engine, self.engine)
        except BaseException:
            await self.stop()
            raise
        self.health.loaded = True
        log.info("local LMNT server on %s (engine %s)", self.http_url, self.engine.name)

    async def drain(self, deadline: float | None = None) -> None:
        """Stop taking work and let in-flight turns finish, then :meth:`stop` (close 1001).

        Readiness turns false at once and new sessions and speech requests get 503 (HAProxy
        retries them on another replica); the listener stays open so health checks keep
        getting answers.  Idle sessions (warm spares, typed sessions between turns) are closed
        with 1001 as soon as they are idle; busy ones get up to ``deadline`` seconds (default
        ``config.drain_timeout``) to finish.
        """
        if self._runner is None:
            return
        self.health.draining = True
        budget = self.config.drain_timeout if deadline is None else deadline
        loop = asyncio.get_running_loop()
        until = loop.time() + budget
        closing: set[asyncio.Task[None]] = set()
        self._drain_cut = False
        while loop.time() < until and not self._drain_cut:
            for session in list(self._live):
                if not session.busy and not session.done and not session.wire.closing:
                    closing.add(asyncio.ensure_future(session.shutdown(1001)))
            if not self._live and not self._inflight:
                break
            await asyncio.sleep(0.05)
        busy = sum(1 for s in self._live if s.busy)
        log.info(
            "local LMNT server: drained (%d session(s) still busy, %d HTTP request(s))",
            busy,
            len(self._inflight),
        )
        if closing:
            await asyncio.wait(closing, timeout=self.config.close_timeout + 0.5)
        await self.stop()

    def cut_drain(self) -> None:
        """End a running :meth:`drain` now: busy sessions are closed with 1001 as on stop."""
        self._drain_cut = True

    async def stop(self) -> None:
        """Close open sessions with 1001 (going away) and stop, within ``shutdown_timeout``."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.health.draining = True
        budget = self.config.shutdown_timeout
        live = list(self._live)
        for session in live:  # all synthesis stops now, in one step, before any close is sent:
            session.abandon()  # on an overloaded loop every await below is slow
        if live:
            closing = [asyncio.ensure_future(s.shutdown(1001)) for s in live]
            _, pending = await asyncio.wait(closing, timeout=budget * 0.6)
            for task in pending:
                task.cancel()
            for session in live:
                if not session.done:
                    session.wire.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.cleanup(), budget * 0.35)
        self._encoders.close()
        self._lag.stop()

    # -- the WebSocket route ---------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults  # read once: a change applies to later connections only
        rejection = await faults.handshake()
        if rejection is not None:
            return rejection
        if not self.health.ready:
            self.metrics.error("draining" if self.health.draining else "loading")
            return error_response(
                request,
                503,
                "internal_server_error",
                f"server is {self.health.reason}, retry on another replica",
                headers={"Retry-After": "1"},
            )
        if len(self._live) >= self.config.max_sessions:
            self.metrics.error("session_limit")
            return error_response(
                request,
                429,
                "rate_limit_error",
                "too many sessions on this server, retry later",
                headers={"Retry-After": "1"},
            )
        ws = web.WebSocketResponse(
            max_msg_size=16 * self.config.max_frame_bytes,
            timeout=self.config.close_timeout,
            heartbeat=self.config.heartbeat,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"detail": "WebSocket upgrade expected"}, status=400)
        await ws.prepare(request)
        if self._guard is not None:  # an init frame is at most max_frame_bytes
            self._guard.watch_first_message(request.transport, self.config.max_frame_bytes + 64)
        record = SessionRecord(request_id=f"req_{uuid.uuid4().hex}")
        request_id.set(record.request_id)
        self.sessions.append(record)
        excess = len(self.sessions) - self.config.max_session_records
        if excess > 0:
            del self.sessions[:excess]
        session = Session(
            ws,
            request,
            record,
            engine=self.speaker,
            config=self.config,
            faults=faults,
            api_keys=self.api_keys,
            encoders=self._encoders,
            usage=self.accounts.add_usage,
            hooks=ServerHooks(self.metrics, self.limits),
            lag=self._lag,
        )
        self._live.add(session)
        try:
            await session.run()
        finally:
            self._live.discard(session)
        return ws


class _GuardedSite(web.SockSite):
    """aiohttp's socket site with :class:`.guard.ConnectionGuard` around its protocol factory."""

    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.AppRunner,
        sock: socket.socket,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context, backlog=1024)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner (cleanup stops it)
        loop = asyncio.get_running_loop()
        # No ssl= here: the guard does the TLS handshake itself, on a counted connection.
        self._server = await loop.create_server(self._guard, sock=self._sock, backlog=self._backlog)


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening socket, so the real port is known without aiohttp internals.

    ``reuse_port``: several worker processes listen on the same port (``SO_REUSEPORT``) and
    the kernel spreads new connections over them.
    """
    sock = bound_socket(host, port, reuse_port=reuse_port)
    try:
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
