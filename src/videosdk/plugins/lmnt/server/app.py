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

from ..protocol import STREAM_PATH
from .account import AccountBook
from .config import ServerConfig
from .encode_pool import EncoderPool
from .engines import SpeechEngine, best_engine, load_engine
from .faults import Faults
from .http import HttpRoutes, json_errors
from .playground import add_playground
from .record import SessionRecord
from .session import Session

__all__ = ["LocalLMNTServer", "default_engine"]

log = logging.getLogger("videosdk.plugins.lmnt.server")


def default_engine() -> SpeechEngine:
    """The best installed engine: Piper (neural), else espeak-ng, else the test tone."""
    engine = best_engine()
    log.info("local LMNT server: using the %s engine", engine.name)
    return engine


class LocalLMNTServer:
    """An LMNT-compatible speech server on a local port (``port=0`` picks a free one).

    Use as ``async with LocalLMNTServer(...) as srv`` or ``await srv.start()`` /
    ``await srv.stop()``.  ``api_keys``: when non-empty, only these keys are accepted; when
    empty or None, any non-empty key is.  ``sessions`` lists one :class:`SessionRecord` per
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
    ) -> None:
        self.engine: SpeechEngine = engine if engine is not None else default_engine()
        self.host = host
        self.ssl_context = ssl_context
        self.api_keys = frozenset(api_keys) if api_keys else None
        self.config = config or ServerConfig()
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
        if self._runner is not None:
            return
        # The model loads before the port opens (off the loop: it takes ~0.6 s for Piper), so
        # "started" means ready to speak at full speed, and a load failure stops start().
        await asyncio.to_thread(load_engine, self.engine)
        app = web.Application(middlewares=[json_errors])
        app.router.add_get(STREAM_PATH, self._stream)
        HttpRoutes(
            self.engine, self.config, self.api_keys, encoders=self._encoders, accounts=self.accounts
        ).add_to(app)
        add_playground(app, key_required=self.api_keys is not None)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        sock = _listen(self.host, self._requested_port)
        try:
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]
        self._encoders.warm()
        log.info("local LMNT server on %s (engine %s)", self.http_url, self.engine.name)

    async def stop(self) -> None:
        """Close open sessions with 1001 (going away) and stop, within ``shutdown_timeout``."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        budget = self.config.shutdown_timeout
        live = list(self._live)
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

    # -- the WebSocket route ---------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults  # read once: a change applies to later connections only
        rejection = await faults.handshake()
        if rejection is not None:
            return rejection
        ws = web.WebSocketResponse(
            max_msg_size=16 * self.config.max_frame_bytes,
            timeout=self.config.close_timeout,
            compress=False,
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"detail": "WebSocket upgrade expected"}, status=400)
        await ws.prepare(request)
        record = SessionRecord(request_id=f"req_{uuid.uuid4().hex}")
        self.sessions.append(record)
        excess = len(self.sessions) - self.config.max_session_records
        if excess > 0:
            del self.sessions[:excess]
        session = Session(
            ws,
            request,
            record,
            engine=self.engine,
            config=self.config,
            faults=faults,
            api_keys=self.api_keys,
            encoders=self._encoders,
            usage=self.accounts.add_usage,
        )
        self._live.add(session)
        try:
            await session.run()
        finally:
            self._live.discard(session)
        return ws


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so the real port is known without aiohttp internals."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
