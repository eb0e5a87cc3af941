"""The synthesis half of a speech session: the worker task that runs the reader's work items.

Apart from the reader (:mod:`.session`): the worker consumes the queue in order, asks the
engine for audio, encodes it and hands frames with their timestamps to the wire, while the
reader only validates and enqueues.  :class:`SessionWorker` is the base of
:class:`.session.Session`, which owns the state both halves share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmnt_local.protocol import (
    InitRequest,
    WordSpan,
    encode_extras,
    encode_flush_complete,
    encode_interim_complete,
    encode_reset_complete,
    encode_timestamps,
)
from lmnt_local.server.api.intake import TextBuffer
from lmnt_local.server.encoding.stream import AudioStream, Frame
from lmnt_local.server.engines import PLAYBACK_LEAD, SpeechEngine
from lmnt_local.server.faults import Wire
from lmnt_local.server.ops.observe import SessionHooks
from lmnt_local.server.record import SessionRecord

__all__ = ["SessionWorker"]

log = logging.getLogger("lmnt_local.server")


@dataclass(frozen=True, slots=True)
class _Speak:
    text: str
    gen: int


@dataclass(frozen=True, slots=True)
class _FlushMark:
    nonce: int | None
    gen: int
    typed: bool


@dataclass(frozen=True, slots=True)
class _ResetMark:
    nonce: int
    gen: int


@dataclass(frozen=True, slots=True)
class _Finish:
    pass


_Work = _Speak | _FlushMark | _ResetMark | _Finish


class SessionWorker:
    """The worker's methods of a session; the attributes are set by :class:`.session.Session`."""

    wire: Wire
    _init: InitRequest | None
    _stream: AudioStream | None
    _queue: asyncio.Queue[_Work]
    _engine: SpeechEngine
    _record: SessionRecord
    _hooks: SessionHooks
    _buffer: TextBuffer
    _dropped: set[int]
    _gen: int
    _busy_item: bool
    _pending_units: int
    _origin: float
    _plays_until: float
    _send_wait: float
    _worked_at: float

    async def _work(self) -> None:
        try:
            await self._work_items()
        except Exception:  # an engine or encoder failure ends the session, not the server
            log.exception("session %s: synthesis failed", self._record.request_id)
            self._hooks.error("internal_server_error")
            await self.wire.fail("internal server error", "internal_server_error", 1011)

    async def _work_items(self) -> None:
        assert self._init is not None and self._stream is not None
        init, stream, wire = self._init, self._stream, self.wire
        while True:
            self._busy_item = False
            self._worked_at = time.monotonic()
            item = await self._queue.get()
            self._busy_item = True
            if isinstance(item, _Speak):
                self._pending_units -= 1
                self._hooks.queued(-1)
                if item.gen not in self._dropped:
                    await self._synthesize(item)
            elif isinstance(item, _FlushMark):
                # The codec's held-back tail goes out now, so the acknowledgement really
                # follows the end of the flushed audio (mp3 and webm hold some back).
                for frame in await stream.drain():
                    await self._send(frame, last=True, gen=item.gen, first=False)
                self._origin = stream.sent_until
                if item.nonce is not None:
                    await wire.text(
                        encode_flush_complete(item.nonce)
                        if item.typed
                        else encode_interim_complete("flush", item.nonce)
                    )
            elif isinstance(item, _ResetMark):
                stream.drop()
                self._origin = stream.sent_until
                await wire.text(
                    encode_reset_complete(item.nonce)
                    if init.typed
                    else encode_interim_complete("reset", item.nonce)
                )
            else:
                for frame in await stream.finish():
                    await self._send(frame, last=True, gen=self._gen, first=False)
                await wire.close()
                return

    async def _synthesize(self, item: _Speak) -> None:
        assert self._init is not None and self._stream is not None
        init, stream = self._init, self._stream
        offset = stream.fed
        held: Frame | None = None
        first = True
        # How long the client can play what it has: the engine's scheduling hint.
        lead = max(0.0, self._plays_until - time.monotonic())
        lead_token = PLAYBACK_LEAD.set(lead)
        started = time.perf_counter()
        self._send_wait = 0.0
        chunks = self._engine.synthesize(
            item.text,
            voice=init.voice,
            language=init.language,
            sample_rate=init.sample_rate,
            speed=init.speed,
            seed=init.seed,
        )
        try:
            async for chunk in chunks:
                if item.gen in self._dropped:
                    return  # reset: stop synthesizing what nobody wants
                for frame in await stream.feed(chunk.pcm, chunk.words, offset):
                    if held is not None:
                        await self._send(held, last=False, gen=item.gen, first=first)
                        first = False
                    held = frame
        finally:
            PLAYBACK_LEAD.reset(lead_token)
            aclose: Callable[[], Any] | None = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        for frame in stream.end_unit():
            if held is not None:
                await self._send(held, last=False, gen=item.gen, first=first)
                first = False
            held = frame
        if held is not None:
            await self._send(held, last=True, gen=item.gen, first=first)
        engine_seconds = time.perf_counter() - started - self._send_wait
        self._hooks.synthesized(stream.fed - offset, engine_seconds)

    async def _send(self, frame: Frame, *, last: bool, gen: int, first: bool) -> None:
        """One frame with its metadata: extras before it (legacy), timestamps after (typed)."""
        assert self._init is not None
        init = self._init
        before = after = None
        if init.typed and init.return_timestamps:
            origin = self._origin if init.version == "1.2" else frame.start
            after = encode_timestamps(_relative(frame.words, origin))
        elif not init.typed and init.return_extras:
            empty = last and self._buffer.blank and self._pending_units == 0
            before = encode_extras(_relative(frame.words, frame.start), empty)
        self._plays_until = max(self._plays_until, time.monotonic()) + frame.seconds
        self._hooks.audio()
        waited = time.perf_counter()
        await self.wire.audio(
            frame.data, frame.seconds, before=before, after=after, gen=gen, unit_first=first
        )
        self._send_wait += time.perf_counter() - waited


def _relative(words: tuple[WordSpan, ...], origin: float) -> list[WordSpan]:
    return [WordSpan(w.text, max(0.0, w.start - origin), w.duration) for w in words]
