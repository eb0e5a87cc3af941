"""Fault injection, in one place: the :class:`Faults` knobs and the :class:`Wire` that obeys them.

Every server->client message of a WebSocket session goes through one :class:`Wire` (a queue
and a sender task), so a fault is a change to what the wire does with the stream of messages,
never a branch inside the protocol logic, and faults compose: latency, pacing, odd framing and
an error after N bytes can all act on the same session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

from aiohttp import web

from lmnt_local.protocol import LEGACY_VERSION, encode_error, is_typed
from lmnt_local.server.record import SessionRecord

__all__ = ["Faults", "Wire"]

log = logging.getLogger("lmnt_local.server")

_ODD_SIZES = (333, 1001)
_HANDSHAKE_MESSAGES = {
    401: "Unauthorized",
    403: "Invalid API key",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


@dataclass(frozen=True, slots=True)
class Faults:
    """Misbehaviours to inject, for client tests and benchmarks; all off by default.

    A server reads its ``faults`` when a connection arrives, so changing them affects only new
    connections.  Client-visible behaviour of each (WebSocket unless said otherwise):

    * ``reject_handshake_status``: the upgrade is answered with this HTTP status and a JSON body
      ``{"error": "..."}`` (429 also carries ``retry-after: 1``); no WebSocket.
    * ``latency``: seconds of one-way delay: each message leaves ``latency`` after it was
      produced (pipelined: delays do not add up), and the handshake answer is delayed too.
    * ``processing_delay``: seconds added before the first audio frame of every synthesis unit
      (a sentence, or the text a flush/eof released).
    * ``pace``: audio frames leave at ``pace`` x real time (1.0 = real time); None = at once.
    * ``error_before_audio``: instead of the first audio frame, an error frame with this message
      (typed: ``internal_server_error``) and close 1011.
    * ``error_after_bytes``: ``(n, message)``: once >= n audio bytes are out, that error and
      close 1011.
    * ``drop_after_bytes`` / ``drop_before_audio``: the TCP connection is aborted (no close
      frame; the client sees 1006) once >= n audio bytes are out / instead of the first audio.
    * ``hang_after_init``: a valid init is accepted, then nothing is ever sent (no ``ready``)
      and the server never closes; the client must time out.  Protocol violations are still
      answered, and server shutdown still closes with 1001.
    * ``hang_after_bytes``: the same silence once >= n audio bytes are out.
    * ``odd_frames``: audio goes out in frames of 333 and 1001 bytes alternately (pcm frames
      then split samples).
    * ``empty_frames``: an empty binary frame before every audio frame.
    * ``malformed_json``: the text frame ``{not json`` before the first audio frame.
    * ``unknown_message``: ``{"type":"surprise"}`` (legacy: ``{"surprise":1}``) before the first
      audio frame.
    * ``close_code``: the close after eof/finish uses this code instead of 1000.
    * ``close_reason``: the reason text of every close frame the server sends (e.g. to check
      that a client never repeats what it should not).
    * ``oversized_frame_bytes``: one extra binary frame of this many zero bytes right before the
      first audio frame (counts as audio sent).
    * ``slow_drip``: audio goes out in frames of ``drip_bytes`` bytes with this many seconds
      between frames.
    * ``script``: a scripted session: the server does no synthesis and sends exactly these
      frames (``str`` as text frames, ``bytes`` as binary frames, verbatim, valid or not) once
      ``script_after`` happened: ``"init"`` (a valid init was accepted; a typed ``ready`` goes
      first), ``"text"`` (the first command after init) or ``"eof"`` (eof/finish).  Then it
      ends as ``script_end`` says: ``"close"`` (close ``close_code``, default 1000), ``"drop"``
      (abort the TCP connection: 1006) or ``"hang"`` (send nothing more, never close).  Client
      commands are still validated and recorded; ``latency`` and ``slow_drip`` (seconds between
      frames) apply, the other faults do not.

    Extras (legacy) stay before, and timestamps (typed) after, the pieces of the frame they
    describe when a fault splits it.
    """

    reject_handshake_status: int | None = None
    latency: float = 0.0
    processing_delay: float = 0.0
    pace: float | None = None
    error_before_audio: str | None = None
    error_after_bytes: tuple[int, str] | None = None
    drop_after_bytes: int | None = None
    drop_before_audio: bool = False
    hang_after_init: bool = False
    hang_after_bytes: int | None = None
    odd_frames: bool = False
    empty_frames: bool = False
    malformed_json: bool = False
    unknown_message: bool = False
    close_code: int | None = None
    close_reason: str = ""
    oversized_frame_bytes: int | None = None
    slow_drip: float | None = None
    drip_bytes: int = 2
    script: tuple[str | bytes, ...] | None = None
    script_after: Literal["init", "text", "eof"] = "init"
    script_end: Literal["close", "drop", "hang"] = "close"

    def __post_init__(self) -> None:
        status = self.reject_handshake_status
        if status is not None and not 300 <= status <= 599:
            raise ValueError("Faults.reject_handshake_status must be an HTTP status 300-599")
        if self.latency < 0 or self.processing_delay < 0:
            raise ValueError("Faults.latency and processing_delay must be >= 0")
        if self.pace is not None and self.pace <= 0:
            raise ValueError("Faults.pace must be > 0 (or None)")
        if self.slow_drip is not None and self.slow_drip < 0:
            raise ValueError("Faults.slow_drip must be >= 0 (or None)")
        if self.drip_bytes <= 0:
            raise ValueError("Faults.drip_bytes must be > 0")
        if self.close_code is not None and not 1000 <= self.close_code <= 4999:
            raise ValueError("Faults.close_code must be a WebSocket close code (1000-4999)")
        if len(self.close_reason.encode()) > 123:
            raise ValueError("Faults.close_reason must fit a close frame (123 bytes of UTF-8)")
        if self.script is not None:
            if not all(isinstance(frame, str | bytes) for frame in self.script):
                raise ValueError("Faults.script must be a tuple of str (text) / bytes (binary)")
            if self.script_after not in ("init", "text", "eof"):
                raise ValueError("Faults.script_after must be 'init', 'text' or 'eof'")
            if self.script_end not in ("close", "drop", "hang"):
                raise ValueError("Faults.script_end must be 'close', 'drop' or 'hang'")

    async def handshake(self) -> web.Response | None:
        """Delay the upgrade answer by ``latency``; the rejection response, if one is set."""
        if self.latency:
            await asyncio.sleep(self.latency)
        status = self.reject_handshake_status
        if status is None:
            return None
        message = _HANDSHAKE_MESSAGES.get(status) or _phrase(status)
        headers = {"retry-after": "1"} if status == 429 else None
        return web.json_response({"error": message}, status=status, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Stop(Exception):
    """The wire will send nothing more (closed, dropped, hung)."""


@dataclass(slots=True)
class _Item:
    kind: Literal["text", "audio", "close"]
    at: float
    text: str = ""
    audio: bytes = b""
    seconds: float = 0.0
    before: str | None = None
    after: str | None = None
    gen: int | None = None
    unit_first: bool = False
    code: int = 1000


class Wire:
    """The single way out of a session: an ordered outbox drained by one sender task.

    Producers (the synthesis worker) enqueue; the sender applies :class:`Faults` and writes to
    the socket.  Messages tagged with a generation are dropped unsent once ``dropped`` says that
    generation was reset, which is how "drop audio not yet sent" is implemented.
    ``fail`` and ``shutdown`` bypass the queue: an error or a shutdown must not wait behind
    audio.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        abort: Callable[[], None],
        record: SessionRecord,
        faults: Faults,
        *,
        dropped: Callable[[int], bool],
        outbox_size: int,
    ) -> None:
        self._ws = ws
        self._abort = abort
        self._record = record
        self._faults = faults
        self._dropped = dropped
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(outbox_size)
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._audio_started = False
        self._pace_due = 0.0
        self._odd = 0
        self._script_go = asyncio.Event()
        self.version = LEGACY_VERSION
        #: Set once the normal end-of-session close (after eof/finish) has been sent.
        self.finished = False

    @property
    def closing(self) -> bool:
        """True once the server has begun closing (or dropped) the connection."""
        return self._closing

    @property
    def backlog(self) -> int:
        """Messages queued and not yet sent."""
        return self._queue.qsize()

    @property
    def scripted(self) -> bool:
        """True when the session plays ``Faults.script`` instead of synthesizing."""
        return self._faults.script is not None

    def start(self) -> None:
        """Begin sending; with ``hang_after_init`` the outbox is simply never drained."""
        if self._task is None and not self._faults.hang_after_init:
            run = self._run_script() if self.scripted else self._run()
            self._task = asyncio.create_task(run, name="lmnt-wire")

    def script_event(self, event: Literal["init", "text", "eof"]) -> None:
        """The session reached ``event``: a scripted wire starts playing if it waits for it."""
        if self.scripted and event == self._faults.script_after:
            self._script_go.set()

    async def text(self, data: str, gen: int | None = None) -> None:
        await self._queue.put(_Item("text", self._loop.time(), text=data, gen=gen))

    async def audio(
        self,
        data: bytes,
        seconds: float,
        *,
        before: str | None,
        after: str | None,
        gen: int,
        unit_first: bool,
    ) -> None:
        """One audio frame; ``before``/``after`` are the text frames that must bracket it."""
        item = _Item("audio", self._loop.time(), audio=data, seconds=seconds, gen=gen)
        item.before, item.after, item.unit_first = before, after, unit_first
        await self._queue.put(item)

    async def close(self) -> None:
        """The normal end: close 1000 (or the fault's code) after everything queued."""
        await self._queue.put(_Item("close", self._loop.time(), code=1000))

    async def fail(self, message: str, error_type: str, code: int) -> None:
        """Send an error frame now (dropping anything queued) and close with ``code``."""
        await self.halt()
        if self._faults.latency:
            await asyncio.sleep(self._faults.latency)
        await self._error_close(message, error_type, code)

    async def shutdown(self, code: int) -> None:
        """Close now, without an error frame, whatever the faults (server stop)."""
        await self.halt()
        await self._close(code)

    async def halt(self) -> None:
        """Stop the sender where it is (client gone, or an immediate close follows)."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel(self) -> None:
        """Stop the sender without waiting (last-resort cleanup)."""
        if self._task is not None:
            self._task.cancel()

    def abort(self) -> None:
        """Cut the TCP connection (last resort of a bounded shutdown)."""
        self._closing = True
        self._abort()

    async def join(self, seconds: float) -> None:
        """Wait (bounded) for the sender to finish, e.g. the close handshake it started."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), seconds)

    # -- the sender ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if self._stale(item):
                    continue
                await self._until(item.at + self._faults.latency)
                if self._stale(item):
                    continue
                if item.kind == "text":
                    await self._ws.send_str(item.text)
                elif item.kind == "audio":
                    await self._send_audio(item)
                else:
                    self.finished = True
                    code = self._faults.close_code or item.code
                    await self._close(code)
                    return
        except _Stop:
            return
        except ConnectionError:
            return  # the client went away; the reader notices and records it

    async def _run_script(self) -> None:
        f = self._faults
        assert f.script is not None
        try:
            await self._script_go.wait()
            while not self._queue.empty():  # what the session queued first (typed ``ready``)
                item = self._queue.get_nowait()
                if item.kind == "text":
                    await self._until(item.at + f.latency)
                    await self._ws.send_str(item.text)
            for frame in f.script:
                await self._until(self._loop.time() + f.latency)
                if isinstance(frame, bytes):
                    await self._send_binary(frame)
                else:
                    await self._ws.send_str(frame)
                if f.slow_drip:
                    await asyncio.sleep(f.slow_drip)
            if f.script_end == "close":
                self.finished = True
                await self._close(f.close_code or 1000)
            elif f.script_end == "drop":
                self._drop()
            else:
                log.info("session %s: script played, hanging (fault)", self._record.request_id)
        except _Stop:
            return
        except ConnectionError:
            return

    def _stale(self, item: _Item) -> bool:
        return item.gen is not None and self._dropped(item.gen)

    async def _until(self, when: float) -> None:
        delay = when - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _send_audio(self, item: _Item) -> None:
        f = self._faults
        if not self._audio_started:
            self._audio_started = True
            await self._before_first_audio()
        if item.unit_first and f.processing_delay:
            await asyncio.sleep(f.processing_delay)
        if item.before is not None:
            await self._ws.send_str(item.before)
        data = item.audio
        for piece in self._pieces(data):
            if f.empty_frames:
                await self._send_binary(b"")
            await self._pace(item.seconds * len(piece) / len(data) if data else 0.0)
            await self._send_binary(piece)
            await self._after_bytes()
            if f.slow_drip:
                await asyncio.sleep(f.slow_drip)
        if item.after is not None:
            await self._ws.send_str(item.after)

    async def _before_first_audio(self) -> None:
        f = self._faults
        if f.drop_before_audio:
            self._drop()
        if f.error_before_audio is not None:
            await self._error_close(f.error_before_audio, "internal_server_error", 1011)
            raise _Stop
        if f.malformed_json:
            await self._ws.send_str("{not json")
        if f.unknown_message:
            await self._ws.send_str(
                '{"type":"surprise"}' if is_typed(self.version) else '{"surprise":1}'
            )
        if f.oversized_frame_bytes:
            await self._send_binary(bytes(f.oversized_frame_bytes))

    async def _after_bytes(self) -> None:
        f, sent = self._faults, self._record.audio_bytes_sent
        if f.error_after_bytes is not None and sent >= f.error_after_bytes[0]:
            await self._error_close(f.error_after_bytes[1], "internal_server_error", 1011)
            raise _Stop
        if f.drop_after_bytes is not None and sent >= f.drop_after_bytes:
            self._drop()
        if f.hang_after_bytes is not None and sent >= f.hang_after_bytes:
            log.info("session %s: hanging after %d bytes (fault)", self._record.request_id, sent)
            raise _Stop

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        f = self._faults
        if f.slow_drip is None and not f.odd_frames:
            yield data
            return
        i = 0
        while i < len(data):
            if f.slow_drip is not None:
                n = f.drip_bytes
            else:
                n = _ODD_SIZES[self._odd % len(_ODD_SIZES)]
                self._odd += 1
            yield data[i : i + n]
            i += n

    async def _pace(self, seconds: float) -> None:
        if self._faults.pace is None:
            return
        now = self._loop.time()
        if self._pace_due > now:
            await asyncio.sleep(self._pace_due - now)
        else:
            self._pace_due = now
        self._pace_due += seconds / self._faults.pace

    async def _send_binary(self, data: bytes) -> None:
        await self._ws.send_bytes(data)
        self._record.audio_bytes_sent += len(data)
        self._record.frames_sent += 1

    # -- ending ----------------------------------------------------------------------------

    async def _error_close(self, message: str, error_type: str, code: int) -> None:
        if self._closing:
            return
        self._record.error = message
        frame = encode_error(self.version, message, error_type, self._record.request_id)
        with contextlib.suppress(ConnectionError):
            await self._ws.send_str(frame)
        await self._close(code)

    async def _close(self, code: int) -> None:
        if self._closing:
            return
        self._closing = True
        self._record.closed("server", code)
        with contextlib.suppress(ConnectionError):
            await self._ws.close(code=code, message=self._faults.close_reason.encode())

    def _drop(self) -> None:
        self._closing = True
        self._record.closed("server", 1006)
        self._record.error = "connection dropped (fault)"
        log.info("session %s: dropping the connection (fault)", self._record.request_id)
        self._abort()
        raise _Stop
