"""WebSocket lifecycle: connect with time limits, TLS, a warm spare, and closing that never hangs.

The legacy protocol ends a connection with every utterance (``eof`` makes the server close), so
latency comes from how soon the *next* connection is ready.  ``ConnectionPool`` keeps one spare
that has already done TCP, TLS, the WebSocket upgrade and sent its init frame; a turn that finds
a matching, healthy spare only has to send text.

Each connection has one reader task that turns socket messages into protocol events in a queue.
A single reader means a spare can be watched while idle (an auth error or a server close arrives
there, not in the next turn's face) and a turn can wait on the queue with its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lmnt_local.protocol import ClientDecoder, ClientEvent, ErrorFrame, Ready, SessionOptions
from lmnt_local.protocol.hosts import connect_failure_reason as connect_failure_reason
from lmnt_local.protocol.hosts import is_loopback

from .errors import (
    LMNTAuthError,
    LMNTConnectionError,
    LMNTError,
    LMNTRateLimitError,
    LMNTServerError,
    LMNTTimeoutError,
    redact,
    redact_url,
)
from .sending import SendPacer

__all__ = [
    "Closed",
    "ConnectionPool",
    "ConnectionSettings",
    "LMNTConnection",
    "connect_failure_reason",
    "is_loopback",
]

logger = logging.getLogger("videosdk.plugins.lmnt")


@dataclass(frozen=True, slots=True)
class Closed:
    """The socket is gone: ``code`` is the WebSocket close code (1006 when it was just dropped)."""

    code: int
    reason: str = ""
    local: bool = False  # we closed it because the server broke the WebSocket protocol


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    url: str
    connect_timeout: float = 10.0
    close_timeout: float = 1.0
    ssl: ssl.SSLContext | bool = True
    max_message_bytes: int = 4 * 1024 * 1024
    # A spare older than this is not trusted with a turn.  WebSocket pings (``heartbeat``) find
    # a dead spare long before that, so in practice this only bounds very long idle periods.
    spare_max_age: float = 290.0
    heartbeat: float | None = 20.0

    def __repr__(self) -> str:
        # The URL may carry credentials (userinfo, ``?token=``): never in a repr.
        return (
            f"ConnectionSettings(url={redact_url(self.url)!r}, "
            f"connect_timeout={self.connect_timeout:g}, close_timeout={self.close_timeout:g})"
        )


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (the HTTP-date form is not worth a parser here)."""
    try:
        value = float(headers.get("Retry-After", "")) if headers else None
    except (TypeError, ValueError):
        return None
    # A turn waiting more than a few seconds is a failed turn anyway: cap what a server asks.
    return min(value, 5.0) if value is not None and value >= 0 else None


def _describe_handshake_error(exc: aiohttp.WSServerHandshakeError, url_host: str) -> LMNTError:
    status = exc.status
    text = f"LMNT handshake with {url_host} was refused with HTTP {status}"
    if status in (401, 403):
        return LMNTAuthError(f"{text}: the API key was rejected", status=status)
    if status == 429:
        return LMNTRateLimitError(
            f"{text}: rate limited", status=status, retry_after=_retry_after(exc.headers)
        )
    if status >= 500:
        return LMNTServerError(f"{text}: server error", status=status, retryable=True)
    if status == 404:
        text += ": no LMNT endpoint at that path"
    err = LMNTConnectionError(text, status=status)
    err.retryable = False  # the same request will be refused the same way
    return err


def error_from_frame(frame: ErrorFrame, api_key: str) -> LMNTError:
    """Map a server error frame to the exception type a caller can act on."""
    message = redact(frame.message, api_key)
    text = f"LMNT server error: {message}"
    kw: dict[str, Any] = {
        "request_id": frame.request_id,
        "server_message": message,
        "error_type": frame.type,
    }
    lowered = message.lower()
    if frame.type in ("authentication_error", "permission_error") or "api key" in lowered:
        return LMNTAuthError(text, **kw)
    # Legacy error frames are bare strings, so the condition is recognised by its words too.
    said = "rate limit" in lowered or "too many requests" in lowered
    if frame.type == "rate_limit_error" or said:
        return LMNTRateLimitError(text, **kw)
    retryable = frame.type in ("internal_server_error", "rate_limit_error")
    return LMNTServerError(text, retryable=retryable, **kw)


class LMNTConnection:
    """One open, initialised WebSocket and the queue its reader fills."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        options: SessionOptions,
        settings: ConnectionSettings,
    ) -> None:
        self.ws = ws
        self.options = options
        self.settings = settings
        self.decoder = ClientDecoder(options.version)
        self.events: asyncio.Queue[ClientEvent | Closed] = asyncio.Queue()
        self.opened_at = time.monotonic()
        self.used = False
        self.closed: Closed | None = None
        self.error: ErrorFrame | None = None  # the first error frame the server sent
        self.request_id: str | None = None  # from the typed API's ``ready``
        self.ready = asyncio.Event()  # the typed API's ``ready`` arrived: the init was accepted
        self.answered = asyncio.Event()  # an error frame or the close arrived
        self._closing: asyncio.Task[None] | None = None
        self.handshake_seconds = 0.0  # TCP+TLS+upgrade time: a measure of the round trip
        self.turns = 0  # turns served: more than one when a typed session is reused
        self.nonce = 0  # the typed API's flush/reset counter: one per session, not per turn
        self.generation = 0  # the pool settings it was opened under
        self.pacer = SendPacer()  # one per session: servers count messages per session
        self.text_chars = 0  # characters of text sent on this session (``SESSION_TEXT_BUDGET``)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="lmnt-reader")

    async def _read(self) -> None:
        code, reason, local = 1006, "connection lost", False
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    for ev in self.decoder.binary(msg.data):
                        self.events.put_nowait(ev)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    for ev in self.decoder.text(msg.data):
                        if isinstance(ev, Ready):
                            # Kept on the connection, not queued: a typed spare that said
                            # hello is still an idle, healthy spare.
                            self.request_id = ev.request_id
                            self.ready.set()
                            continue
                        if isinstance(ev, ErrorFrame):
                            self.answered.set()
                            if self.error is None:
                                self.error = ev
                        self.events.put_nowait(ev)
                elif msg.type is aiohttp.WSMsgType.CLOSE:
                    code, reason = int(msg.data or 1005), str(msg.extra or "")
                    break
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    # aiohttp reports protocol failures (e.g. a frame over max_msg_size, 1009)
                    # as an error carrying the close code it sent.
                    code = getattr(msg.data, "code", None) or 1006
                    reason = str(msg.data) or type(msg.data).__name__
                    local = code != 1006
                    break
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    code = self.ws.close_code or 1006
                    break
        except asyncio.CancelledError:
            code, reason = 1006, "cancelled"
            raise
        except Exception as exc:  # the reader must never die silently
            code, reason = 1006, type(exc).__name__
        finally:
            self.closed = Closed(code, reason, local)
            self.events.put_nowait(self.closed)
            self.answered.set()

    @property
    def healthy(self) -> bool:
        """Fit to serve a new turn: open, never used, not too old, and nothing arrived unasked."""
        return (
            self.closed is None
            and not self.ws.closed
            and not self.used
            and self.events.empty()
            and time.monotonic() - self.opened_at < self.settings.spare_max_age
        )

    def pending_error(self) -> ErrorFrame | None:
        """An error frame that arrived while the connection sat idle (e.g. a rejected key)."""
        return self.error

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def close(self) -> None:
        """Close within ``close_timeout`` whatever the peer does, and stop the reader.

        One close runs per connection, whoever asks (an interrupt's ``abort()``, the turn, the
        pool): aiohttp's second concurrent ``close()`` waits out the whole timeout.  A caller
        cancelled meanwhile sees its ``CancelledError`` while the close finishes on its own.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(), name="lmnt-close")
        try:
            await asyncio.shield(self._closing)
        except BaseException:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _close(self) -> None:
        try:
            if not self.ws.closed:
                try:
                    async with asyncio.timeout(self.settings.close_timeout):
                        await self.ws.close()
                except Exception:
                    pass
        finally:
            if not self._reader.done():
                self._reader.cancel()
        if not self._reader.done():
            try:
                async with asyncio.timeout(self.settings.close_timeout):
                    await self._reader
            except BaseException:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def abort(self) -> None:
        """Close without waiting: for ``interrupt()``, which must return at once."""
        task = asyncio.get_running_loop().create_task(self.close(), name="lmnt-close")
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[Any]] = set()


class ConnectionPool:
    """Opens connections and keeps at most one warm spare for the next turn."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._spare: LMNTConnection | None = None
        self._spare_task: asyncio.Task[LMNTConnection | None] | None = None
        self._open: set[LMNTConnection] = set()
        self._closed = False
        self.opened = 0  # connections opened over the pool's life (tests and benchmarks read it)
        self._generation = 0  # bumped when settings change
        parts = urlsplit(settings.url)
        self._host = parts.hostname or "?"
        self._display = redact_url(f"{parts.scheme}://{parts.netloc}")

    @property
    def settings(self) -> ConnectionSettings:
        return self._settings

    @settings.setter
    def settings(self, value: ConnectionSettings) -> None:
        """New settings (e.g. another URL) apply to connections opened from now on; a spare
        opened under the old ones is dropped at the next ``acquire``."""
        self._settings = value
        self._generation += 1
        parts = urlsplit(value.url)
        self._host = parts.hostname or "?"
        self._display = redact_url(f"{parts.scheme}://{parts.netloc}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self.settings.ssl),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def open(self, options: SessionOptions, deadline: float | None = None) -> LMNTConnection:
        """Connect, upgrade and send the init frame, all within ``connect_timeout`` (or by
        ``deadline``, a loop time, when a turn has already spent part of its budget)."""
        if self._closed:
            raise LMNTConnectionError("the LMNT plugin is closed")
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.settings.connect_timeout
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline):
                ws = await self._client().ws_connect(
                    self.settings.url,
                    ssl=self.settings.ssl,
                    max_msg_size=self.settings.max_message_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.settings.close_timeout),
                    heartbeat=self.settings.heartbeat,
                    autoclose=True,
                )
                conn = LMNTConnection(ws, options, self.settings)
                conn.handshake_seconds = conn.opened_at - started
                conn.generation = self._generation
                self._open.add(conn)
                self.opened += 1
                try:
                    await conn.send(options.encode_init())
                except BaseException:
                    await self._discard(conn)
                    raise
                return conn
        except TimeoutError:
            raise self._timeout_error() from None
        except aiohttp.WSServerHandshakeError as exc:
            raise _describe_handshake_error(exc, self._display) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            err = LMNTConnectionError(
                f"TLS certificate of {self._display} could not be verified "
                f"({redact(str(exc.certificate_error), options.api_key)}); pass ssl= or a CA bundle"
            )
            err.retryable = False  # retrying will not make the certificate trusted
            raise err from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = redact(connect_failure_reason(exc), options.api_key)
            raise LMNTConnectionError(
                f"could not connect to LMNT at {self._display}: {detail}"
            ) from None

    def _timeout_error(self) -> LMNTTimeoutError:
        return LMNTTimeoutError(
            f"could not connect to LMNT at {self._display} within "
            f"{self.settings.connect_timeout:g} s"
        )

    async def acquire(self, options: SessionOptions) -> LMNTConnection:
        """A connection initialised with ``options``: the spare if it fits and is alive.

        One ``connect_timeout`` bounds it all: waiting for a spare still on its way and, if that
        spare fails, a fresh connect in what is left (never a second full budget).  A spare that
        died while idle is thrown away; one that holds an auth rejection turns into
        ``LMNTAuthError``, so the turn fails before pulling any text.  Any other error frame on
        an idle spare (e.g. an idle-timeout notice) concerns that connection only: it is
        replaced without the turn noticing.
        """
        deadline = asyncio.get_running_loop().time() + self.settings.connect_timeout
        spare = await self._take_spare(deadline)
        if spare is not None:
            fits = spare.generation == self._generation
            if fits and spare.options.fingerprint() == options.fingerprint() and spare.healthy:
                spare.used = True
                return spare
            frame = spare.pending_error()
            await self._discard(spare)
            if frame is not None and spare.options.fingerprint() == options.fingerprint():
                err = error_from_frame(frame, options.api_key)
                if isinstance(err, LMNTAuthError):
                    raise err
                logger.info("LMNT: replacing a warm connection the server closed: %s", err)
        conn = await self.open(options, deadline)
        conn.used = True
        return conn

    async def _take_spare(self, deadline: float) -> LMNTConnection | None:
        task, self._spare_task = self._spare_task, None
        if task is not None:
            if not task.done():
                # A spare is on its way: waiting for it beats starting a second handshake.
                try:
                    async with asyncio.timeout_at(deadline):
                        await asyncio.shield(task)
                except (asyncio.CancelledError, TimeoutError) as exc:
                    if not task.done() and self._spare_task is None and not self._closed:
                        self._spare_task = task  # still the pool's: not orphaned by our wait
                    if isinstance(exc, TimeoutError):
                        raise self._timeout_error() from None
                    raise
                except Exception:
                    pass
            if task.done() and not task.cancelled() and task.exception() is None:
                self._spare = self._spare or task.result()
        spare, self._spare = self._spare, None
        return spare

    def prepare_spare(self, options: SessionOptions) -> None:
        """Start opening a spare in the background (no-op if one is ready or on its way)."""
        if self._closed or self._spare_task is not None:
            return
        if self._spare is not None and self._spare.healthy:
            if self._spare.options.fingerprint() == options.fingerprint():
                return
        self._spare_task = asyncio.get_running_loop().create_task(
            self._open_spare(options), name="lmnt-spare"
        )

    async def _open_spare(self, options: SessionOptions) -> LMNTConnection | None:
        old, self._spare = self._spare, None
        if old is not None:
            await self._discard(old)
        try:
            conn = await self.open(options)
        except LMNTError as exc:
            logger.warning("LMNT: could not open a warm connection: %s", exc)
            return None
        if self._closed:
            await self._discard(conn)
            return None
        return conn

    async def warm(self, options: SessionOptions, wait: float) -> bool:
        """Make sure a spare is ready or on its way (``prewarm``); returns whether it is ready.

        Waits at most ``wait`` seconds: the framework awaits ``prewarm()`` before the agent's
        greeting, so an unreachable server must not hold the session up for a full connect
        timeout.  A spare still connecting after that is picked up by the first turn.
        """
        self.prepare_spare(options)
        task = self._spare_task
        if task is not None:
            # ``asyncio.wait`` neither raises when ``aclose()`` cancels the spare under us (a
            # hang-up during session start: prewarm must not raise) nor cancels the spare
            # when it times out; a cancellation of our caller still propagates.
            await asyncio.wait({task}, timeout=wait)
            if task.done() and not task.cancelled() and task.exception() is None:
                if self._spare_task is task:
                    self._spare_task = None
                    self._spare = task.result()
        return self._spare is not None and self._spare.healthy

    async def release(self, conn: LMNTConnection, *, reusable: bool = False) -> None:
        """Give back a connection: an untouched one becomes the spare, anything else is closed."""
        if reusable and not self._closed and self._spare is None and self._spare_task is None:
            if conn.closed is None and conn.events.empty():
                conn.used = False
                self._spare = conn
                return
        await self._discard(conn)

    async def _discard(self, conn: LMNTConnection) -> None:
        self._open.discard(conn)
        await conn.close()

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self._open if c.closed is None)

    def reopen(self) -> None:
        """Serve turns again after ``aclose()`` (a fresh client session is made on first use)."""
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        task, self._spare_task = self._spare_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._spare = None
        for conn in list(self._open):
            await self._discard(conn)
        if self._session is not None:
            await self._session.close()
            self._session = None
