"""One WebSocket speech session: init, the command reader, and the synthesis worker.

Three tasks cooperate per connection.  The reader (the aiohttp handler task) validates every
client frame with the codec in :mod:`..protocol`, enforces the limits and turns commands into
work items; the worker runs them in order (synthesis is serialized per session, so audio,
acks and timestamps come out in the order the commands came in); the :class:`.faults.Wire`
sends.  A client close frame cancels everything at once: LMNT treats it as "abandon".

The worker's half of :class:`Session` is its base, :class:`.session_worker.SessionWorker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web

from lmnt_local.protocol import (
    Eof,
    Flush,
    InitError,
    InitRequest,
    Reset,
    Text,
    decode_client_message,
    encode_ready,
    has_lone_surrogate,
    parse_init,
)
from lmnt_local.server.api.intake import LoopLag, MessageRate, TextBuffer
from lmnt_local.server.api.keys import key_allowed
from lmnt_local.server.api.session_worker import (
    SessionWorker,
    _Finish,
    _FlushMark,
    _ResetMark,
    _Speak,
    _Work,
)
from lmnt_local.server.api.voice_ids import known_voice, unknown_voice_message
from lmnt_local.server.config import ServerConfig, speech_units
from lmnt_local.server.encoding.stream import AudioStream, EncodeRunner, InlineEncoding
from lmnt_local.server.engines import LanguageError, SpeechEngine, check_request
from lmnt_local.server.faults import Faults, Wire
from lmnt_local.server.ops.observe import SessionHooks
from lmnt_local.server.record import SessionRecord

__all__ = ["Session", "key_allowed"]

log = logging.getLogger("lmnt_local.server")


class _Violation(Exception):
    """A client frame the protocol does not allow: answered with an error and a close."""

    def __init__(self, message: str, code: int, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.code = code
        self.error_type = error_type


class Session(SessionWorker):
    """Runs one connection from the init frame to the close; see the module docstring."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: SessionRecord,
        *,
        engine: SpeechEngine,
        config: ServerConfig,
        faults: Faults,
        api_keys: Collection[str] | None,
        encoders: EncodeRunner | None = None,
        usage: Callable[[str, int], None] | None = None,
        hooks: SessionHooks | None = None,
        lag: LoopLag | None = None,
    ) -> None:
        self._ws = ws
        self._encoders: EncodeRunner = encoders if encoders is not None else InlineEncoding()
        self._usage = usage
        self._hooks = hooks or SessionHooks()
        self._busy_item = False  # the worker is running an item
        self._record = record
        self._engine = engine
        self._config = config
        self._api_keys = api_keys
        # Text since the last flush or reset is one "segment" (``_gen``).  A flush commits its
        # segment (it will be spoken whatever comes next); a reset drops it, audio included.
        self._gen = 0
        self._dropped: set[int] = set()
        self.wire = Wire(
            ws,
            _aborter(request),
            record,
            faults,
            dropped=self._dropped.__contains__,
            outbox_size=config.outbox_size,
        )
        self._init: InitRequest | None = None
        self._stream: AudioStream | None = None
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._buffer = TextBuffer()
        self._pending_units = 0
        self._chars = 0
        self._eof = False
        self._rate = MessageRate(config.max_messages_per_second, lag)
        self._origin = 0.0  # 1.2: stream time timestamps count from (last flush/reset)
        # When the client would run out of the audio sent so far, playing it in real time from
        # its arrival (it waits when it has none): the engine's scheduling lead is what is
        # still unplayed, so the idle time between turns of a reused session is not playback.
        self._plays_until = 0.0
        self._send_wait = 0.0  # seconds the current unit waited for the outbox (not engine time)
        self._worked_at = 0.0  # monotonic time the worker last finished an item (idleness)

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends, whoever ends it; never raises on client data."""
        try:
            if await self._handshake():
                await self._read_loop()
        except _Violation as exc:
            await self._violation(exc)
        except Exception:
            log.exception("session %s: internal error", self._record.request_id)
            self._hooks.error("internal_server_error")
            await self._stop_worker()
            await self.wire.fail("internal server error", "internal_server_error", 1011)
        finally:
            try:
                await self._settle()
            finally:  # even if the handler is cancelled (server shutdown): never leave tasks
                if self._worker is not None:
                    self._worker.cancel()
                self.wire.cancel()
                self._hooks.closed(self._pending_units)
                self._pending_units = 0
                self._record.ended_at = time.monotonic()
                self._record.done.set()

    async def _settle(self) -> None:
        """Let a close the server started finish its handshake (bounded), then stop tasks."""
        if self.wire.closing:
            grace = self._config.close_timeout + 0.5
            if self._worker is not None:  # it may be the one closing (engine failure)
                await asyncio.wait({self._worker}, timeout=grace)
            await self.wire.join(grace)
        await self._stop_worker()
        await self.wire.halt()

    @property
    def done(self) -> bool:
        return self._record.done.is_set()

    @property
    def busy(self) -> bool:
        """Mid-turn: a drain waits for this session; an idle one is closed (1001) at once.

        A legacy session is one turn, so it is busy from its first text to its end; a typed
        session is busy while it holds unflushed text, queued work or unsent messages.
        """
        if self.done or self._init is None or self.wire.closing:
            return False
        if self._eof or (not self._init.typed and self._chars):
            return True
        return bool(
            not self._buffer.blank
            or self._busy_item
            or not self._queue.empty()
            or self.wire.backlog
        )

    async def shutdown(self, code: int = 1001) -> None:
        """Server stop: end synthesis and close with ``code`` (1001, going away)."""
        await self._stop_worker()
        await self.wire.shutdown(code)

    def abandon(self) -> None:
        """Cancel synthesis and sending without waiting (server stop: close frames follow)."""
        if self._worker is not None:
            self._worker.cancel()
        self.wire.cancel()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and worker is not asyncio.current_task():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _violation(self, exc: _Violation) -> None:
        self._hooks.error(exc.error_type)
        log.info(
            "session %s: protocol error (close %d): %s", self._record.request_id, exc.code, exc
        )
        await self._stop_worker()
        await self.wire.fail(str(exc), exc.error_type, exc.code)

    # -- init ------------------------------------------------------------------------------

    async def _handshake(self) -> bool:
        """Read and check the init frame; False when the connection ended instead."""
        try:
            msg = await self._ws.receive(timeout=self._config.init_timeout)
        except TimeoutError:
            raise _Violation("no init message received", 1008) from None
        if msg.type is WSMsgType.BINARY:
            raise _Violation("the first message must be a JSON text frame", 1002)
        if msg.type is not WSMsgType.TEXT:
            self._on_ended(msg.type, msg.data)
            return False
        self._admit_size(msg.data)  # before parsing: a huge init is never decoded or kept
        try:
            init = parse_init(msg.data)
        except InitError as exc:
            self.wire.version = exc.version
            raise _Violation(str(exc), 1002, exc.error_type) from None
        self.wire.version = self._record.version = init.version
        if not key_allowed(init.api_key, self._api_keys):
            raise _Violation("Invalid API key", 1002, "authentication_error")
        self._record.init = _masked(msg.data)  # only an accepted key's frame is kept
        if not known_voice(self._engine, init.voice):
            raise _Violation(unknown_voice_message(self._engine, init.voice), 1002)
        refusal = self._hooks.opened(init.api_key)
        if refusal is not None:
            raise _Violation(refusal, 1008, "rate_limit_error")
        try:
            encoder = await self._encoders.make(init.format, init.sample_rate)
        except ValueError as exc:
            raise _Violation(f"format: {exc}", 1002) from None
        try:
            check_request(self._engine, init.voice, init.language)
        except LanguageError as exc:
            raise _Violation(str(exc), 1002) from None
        self._init = init
        self._stream = AudioStream(
            encoder, init.sample_rate, self._config.frame_bytes, self._encoders
        )
        self.wire.start()
        if init.typed:
            await self.wire.text(encode_ready(self._record.request_id))
        if self.wire.scripted:  # Faults.script: the wire plays it; nothing is synthesized
            self.wire.script_event("init")
        else:
            self._worker = asyncio.create_task(self._work(), name="lmnt-synthesis")
        log.info(
            "session %s: version %s, voice %r, %s @ %d Hz",
            self._record.request_id,
            init.version,
            init.voice,
            init.format,
            init.sample_rate,
        )
        return True

    # -- the reader ------------------------------------------------------------------------

    @property
    def _working(self) -> bool:
        """The server owes the client audio or acks: a silent client is waiting, not idle.

        Unflushed text alone is not work (nothing will happen until the client sends more).
        """
        return bool(self._eof or self._busy_item or not self._queue.empty() or self.wire.backlog)

    async def _read_loop(self) -> None:
        """Read client messages; close 1008 after ``idle_timeout`` with none and no work.

        Idleness is counted from the client's last message (or the end of the server's last
        work for it), not from the last frame of any kind: the heartbeat's pongs arrive every
        ``heartbeat`` seconds and would restart a per-receive timeout forever.
        """
        idle = self._config.idle_timeout
        last = time.monotonic()
        while True:
            left = last + idle - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                # Not receive(timeout=): aiohttp restarts that timer for every frame it
                # handles itself, pongs included.
                async with asyncio.timeout(left):
                    msg = await self._ws.receive()
            except TimeoutError:
                now = time.monotonic()
                if self._working:
                    last = now  # the client waits for audio: that is not idleness
                    continue
                last = max(last, self._worked_at)
                if now - last < idle:
                    continue
                raise _Violation(f"session idle for {idle:g} s", 1008) from None
            last = time.monotonic()
            if msg.type is WSMsgType.TEXT:
                self._admit(msg.data)
                if not self._eof:
                    self._command(msg.data)
            elif msg.type is WSMsgType.BINARY:
                raise _Violation("binary messages are not accepted; send JSON text", 1003)
            else:
                self._on_ended(msg.type, msg.data)
                if not self.wire.closing:  # the client closed: abandon everything
                    await self._stop_worker()
                    await self.wire.halt()
                return

    def _admit_size(self, data: str) -> None:
        limit = self._config.max_frame_bytes
        if len(data) > limit or (
            4 * len(data) > limit and len(data.encode("utf-8", "surrogatepass")) > limit
        ):
            raise _Violation(f"message too large: at most {limit} bytes", 1009)

    def _admit(self, data: str) -> None:
        """Per-message limits: frame size and message rate."""
        self._admit_size(data)
        if not self._rate.admit():
            raise _Violation("rate limit exceeded", 1008, "rate_limit_error")

    def _command(self, data: str) -> None:
        assert self._init is not None
        try:
            command = decode_client_message(data, self._init.version)
        except InitError as exc:
            raise _Violation(str(exc), 1002, exc.error_type) from None
        record = self._record
        if self.wire.scripted:
            self.wire.script_event("text")
            if isinstance(command, Eof):
                self.wire.script_event("eof")
        if isinstance(command, Text):
            if has_lone_surrogate(command.text):
                raise _Violation(
                    "text: Input should be a valid string without lone surrogates", 1007
                )
            self._chars += len(command.text)
            if self._chars > self._config.max_text_chars:
                limit = self._config.max_text_chars
                raise _Violation(f"text limit exceeded: at most {limit} characters", 1008)
            refused = self._hooks.text(len(command.text))
            if refused is not None:
                raise _Violation(refused, 1008, "rate_limit_error")
            if self._usage is not None:
                self._usage(self._init.api_key, len(command.text))
            record.note_text(command.text, self._config.max_record_chars)
            record.commands.append("text")
            for sentence in self._buffer.append(command.text):
                self._speak(sentence)
        elif isinstance(command, Flush):
            self._hooks.turn_end()
            record.commands.append("flush")
            self._speak(self._take_buffer())
            self._queue.put_nowait(_FlushMark(command.nonce, self._gen, self._init.typed))
            self._gen += 1  # committed: a later reset no longer touches this text
        elif isinstance(command, Reset):
            self._hooks.turn_end()
            record.commands.append("reset")
            # Only what was not flushed is dropped, queued or being spoken; the bound keeps
            # the set small (entries that old have no audio left anywhere in the session).
            self._dropped.add(self._gen)
            if len(self._dropped) > 4096:
                self._dropped.discard(min(self._dropped))
            self._buffer.clear()
            self._queue.put_nowait(_ResetMark(command.nonce, self._gen))
            self._gen += 1
        elif isinstance(command, Eof):
            self._hooks.turn_end()
            record.commands.append("eof")
            self._eof = True
            self._speak(self._take_buffer())
            self._queue.put_nowait(_Finish())

    def _take_buffer(self) -> str:
        return self._buffer.take()

    def _speak(self, text: str) -> None:
        for unit in speech_units(text, self._config.max_unit_chars):
            self._pending_units += 1
            self._hooks.queued(1)
            self._queue.put_nowait(_Speak(unit, self._gen))

    def _on_ended(self, kind: WSMsgType, data: Any) -> None:
        """Record how the connection ended when the reader sees it end."""
        record = self._record
        if self.wire.closing:
            return
        if kind is WSMsgType.CLOSE:
            record.closed("client", int(data) if isinstance(data, int) else None)
        elif kind is WSMsgType.ERROR and isinstance(data, WebSocketError):
            # aiohttp's reader refused the frame (beyond the hard size cap: 1009; invalid
            # UTF-8: 1007; bad framing: 1002) and already closed with that code itself.
            record.error = str(data) or "invalid frame"
            record.closed("server", data.code)
            log.info("session %s: closed %d by the frame reader", record.request_id, data.code)
            return
        else:
            record.closed("client", 1006)
        record.client_closed_early = not self.wire.finished
        log.info("session %s: client closed (%s)", record.request_id, record.close_code)


def _masked(data: str) -> dict[str, Any] | None:
    """The init frame for the record, key masked; None if it is not a JSON object."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    if "X-API-Key" in msg:
        msg["X-API-Key"] = "***"
    return msg


def _aborter(request: web.Request) -> Callable[[], None]:
    def abort() -> None:
        if request.transport is not None:
            request.transport.abort()

    return abort
