"""One utterance: text in, audio to the track, with retries before audio and clean interrupts.

The framework hands ``synthesize()`` an async iterator it owns, so text can be read only once.
``TextFeed`` (in ``feed``) reads it exactly once and remembers every item, which lets a retry on
a fresh connection resend what was already pulled instead of losing it.  The receive side
decides, in one place, what ends a turn: the server's close after end-of-stream, an error frame,
a dropped socket, silence past the deadline, or ``interrupt()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn

from lmnt_local.protocol import (
    Audio,
    ErrorFrame,
    Extras,
    FlushComplete,
    ProtocolViolation,
    ResetComplete,
    SessionOptions,
    Timestamps,
    encode_client_eof,
    encode_client_flush,
    encode_client_text,
)

from .audio import AudioDecodeError, AudioPipeline
from .connection import Closed, ConnectionPool, LMNTConnection, error_from_frame
from .errors import (
    LMNTConnectionError,
    LMNTError,
    LMNTProtocolError,
    LMNTRateLimitError,
    LMNTTimeoutError,
)
from .feed import FLUSH, settle
from .feed import FeedRelease as FeedRelease  # re-exported: turn.py was their home
from .feed import TextFeed as TextFeed
from .feed import join_chunk as join_chunk
from .sending import (
    MAX_MESSAGE_CHARS,
    MESSAGES_PER_SECOND,
    SESSION_TEXT_BUDGET,
    SendPacer,
    TextCursor,
)
from .words import TimedWord, WordTimeline

logger = logging.getLogger("videosdk.plugins.lmnt")

_INTERRUPTED = object()  # put in a connection's queue to wake the receiver
_NOTHING_TO_SAY = object()  # the text held no words: the connection was never used
_WAKE = object()  # audio became owed: the receiver must start its silence deadline
# Close codes that reject the request itself (protocol error, unsupported or invalid data,
# policy, too big, missing extension): retrying the same request cannot help.
_REFUSING_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})


# Formats whose stream can be cut at any flush: a reused typed session hands the next turn a
# stream with no container state to carry over (µ-law's WAV header only opens the session).
# MP3 and WebM encoders hold back their tail until ``finish``, so they end the session per turn.
REUSABLE_FORMATS = frozenset({"pcm_s16le", "pcm_f32le", "ulaw"})


@dataclass
class RetryPolicy:
    max_retries: int = 2
    backoff: float = 0.2
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return float(base * (0.5 + random.random() / 2))


@dataclass
class TurnSink:
    """Where a turn's audio goes, and what it calls on the way (the framework adapter)."""

    push: Callable[[bytes], Awaitable[None]]
    on_first_audio: Callable[[], Awaitable[None]]
    out_rate: int
    frame_bytes: int
    pending_bytes: Callable[[], int | None] = lambda: None
    #: Seconds of audio queued on the track, not yet played (None: the track cannot tell).
    queued_seconds: Callable[[], float | None] = lambda: None
    on_words: Callable[[list[TimedWord]], None] | None = None


@dataclass(eq=False)  # identity: the adapter keeps its running turns in a dict
class Turn:
    """State of one ``synthesize()`` call."""

    options: SessionOptions
    feed: TextFeed
    sink: TurnSink
    pool: ConnectionPool
    retry: RetryPolicy
    receive_timeout: float
    warm: bool
    reuse_session: bool = False
    # Wait for the server to accept a fresh connection before reading the caller's text: only
    # worth its round trip when someone else (FallbackTTS) can speak the text on a refusal.
    await_acceptance: bool = True
    interrupted: bool = False
    audio_started: bool = False
    pushed_bytes: int = 0
    conn: LMNTConnection | None = None
    request_id: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    _interrupt_event: asyncio.Event = field(default_factory=asyncio.Event)

    def interrupt(self) -> None:
        """Stop the turn now: no byte of it reaches the track after this returns."""
        if self.interrupted:
            return
        self.interrupted = True
        self._interrupt_event.set()
        conn = self.conn
        if conn is not None:
            conn.events.put_nowait(_INTERRUPTED)  # type: ignore[arg-type]
            conn.abort()

    # How the caller's stream is let go after a failure (``FeedRelease``); the adapter sets
    # these from who called it (FallbackTTS able to retry, the framework, or user code).
    release_on_error: FeedRelease = "release"
    release_after_audio: FeedRelease = "detach"

    async def run(self) -> None:
        attempt = 0
        how: FeedRelease = "cancel"  # success (the stream ended), interrupt or cancellation
        try:
            while True:
                try:
                    await self._attempt()
                    if self._resume_at is None or self.interrupted:
                        return
                    # The session's text budget was spent: go on in a fresh session (not a
                    # retry; its audio follows on the same track).
                    self._start_at, self._resume_at = self._resume_at, None
                    self._continuing = True
                    attempt = 0
                    continue
                except _AfterAudio:
                    how = self.release_after_audio
                    raise
                except LMNTError as exc:
                    exc.scrub(self.options.api_key)
                    if self.interrupted:
                        return
                    # A connect or silence timeout already cost its whole budget: retrying would
                    # multiply the stall the user hears, so timeouts are not retried.
                    final = self.audio_started or not exc.retryable
                    final = final or isinstance(exc, LMNTTimeoutError)
                    if final or attempt >= self.retry.max_retries:
                        how = (
                            self.release_after_audio
                            if self.audio_started
                            else self.release_on_error
                        )
                        raise
                    delay = self.retry.delay(attempt)
                    if isinstance(exc, LMNTRateLimitError):
                        delay = max(delay, exc.retry_after)  # sooner would be refused again
                        self._rate_limited += 1
                    attempt += 1
                    logger.warning(
                        "LMNT: %s; retrying (%d/%d) in %.2f s",
                        exc,
                        attempt,
                        self.retry.max_retries,
                        delay,
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._interrupt_event.wait()
                    if self.interrupted:
                        return
        finally:
            await self.feed.aclose("cancel" if self.interrupted else how, self._interrupt_event)

    async def _acquire(self) -> LMNTConnection | None:
        """A connection, or None if ``interrupt()`` came first (it must not wait for a handshake
        that may take the whole connect timeout)."""
        task = asyncio.get_running_loop().create_task(
            self.pool.acquire(self.options), name="lmnt-acquire"
        )
        stop = asyncio.get_running_loop().create_task(self._interrupt_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Cancelled just as the connection arrived: hand it back rather than strand it.
            if task.done() and not task.cancelled() and task.exception() is None:
                await asyncio.shield(self.pool.release(task.result(), reusable=False))
            raise
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
            await settle(task)
        if task.cancelled():
            return None
        exc = task.exception()
        if exc is not None:
            if self.interrupted:
                return None
            raise exc
        conn = task.result()
        if self.interrupted:
            await self.pool.release(conn, reusable=True)
            return None
        return conn

    async def _attempt(self) -> None:
        self._resume_at = None
        conn = await self._acquire()
        if conn is None:
            return
        self.conn = conn
        conn.turns += 1
        if self._rate_limited:
            # This server counts stricter than our pacing: no burst, and half the rate for
            # every refusal so far (the text already pulled is resent coalesced, not as sent).
            # Two messages a second still carry 4 000 characters: far ahead of any speech.
            rate = max(2.0, MESSAGES_PER_SECOND / 2**self._rate_limited)
            conn.pacer = SendPacer(rate, burst=1)
        await self._await_acceptance(conn)
        if conn.error is None and conn.closed is None and not self.interrupted:
            # Only now: a refused connection must leave the caller's text unread, so that
            # FallbackTTS hands the next provider the whole of it.  (Anything else the server
            # sent unasked, e.g. early audio, is the receiver's business.)
            self.feed.start()
        pipeline = AudioPipeline(self.options.format, self.options.sample_rate, self.sink.out_rate)
        if self._continuing and self._timeline is not None:
            self._timeline.segment_boundary()  # a new session's timings restart from 0
        else:
            self._timeline = WordTimeline(self.options.version) if self.sink.on_words else None
        if self._timeline is not None:
            self._timeline.delay = pipeline.codec_delay
        sender = asyncio.get_running_loop().create_task(self._send(conn), name="lmnt-send")
        reusable = False
        try:
            reusable = await self._receive(conn, pipeline, sender)
        finally:
            try:
                if not sender.done():
                    sender.cancel()
                await settle(sender)
            finally:
                pipeline.close(wait=False)  # never join a decoder thread on the loop
                self.conn = None
                keep = reusable and not self.interrupted
                try:
                    await self.pool.release(conn, reusable=keep)
                except asyncio.CancelledError:
                    conn.abort()  # cancelled while closing: finish closing in the background
                    raise
                if self.reuse_session and self.warm and not keep:
                    self.pool.prepare_spare(self.options)  # the session died: warm a new one
                self._warm_next()  # a turn that ended before audio (error, interrupt, no words)

    # A refusal of the init (a bad key) comes as an error frame about one round trip after it;
    # the typed API also confirms acceptance with ``ready``, legacy says nothing.  A connection
    # opened by this turn waits that long (twice its handshake time, within these bounds, less
    # on ``ready``) before the caller's text is read.  A server that stays quiet longer is
    # taken as accepting: the turn must not stall on a server that never says ``ready``.
    ACCEPT_WAIT_MIN = 0.02
    ACCEPT_WAIT_MAX = 0.25

    async def _await_acceptance(self, conn: LMNTConnection) -> None:
        """Until the server has accepted the session (typed: ``ready``), refused it, or had a
        round trip's time to refuse it; a warm spare is usually past all that."""
        if not self.await_acceptance:
            return  # a cold turn costs its handshakes, no more (as 1.0.30's did)
        if self.feed.started or conn.error is not None or conn.closed is not None:
            return
        if conn.ready.is_set():
            return
        age = time.monotonic() - conn.opened_at
        wait = min(self.ACCEPT_WAIT_MAX, max(self.ACCEPT_WAIT_MIN, 2 * conn.handshake_seconds))
        budget = wait - age
        if budget <= 0:
            return
        loop = asyncio.get_running_loop()
        waits = {
            loop.create_task(conn.ready.wait()),
            loop.create_task(conn.answered.wait()),
            loop.create_task(self._interrupt_event.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _send(self, conn: LMNTConnection) -> None:
        """Send the feed from ``_start_at``: coalesced, paced, and within the session's text
        budget (see ``sending``); past the budget, end the session and note where to resume."""
        version = self.options.version
        cursor = TextCursor(self.feed.items, FLUSH, self._start_at)
        try:
            while self._resume_at is None:
                while cursor.pending():
                    # A token first: what arrives while waiting joins this message.
                    await conn.pacer.take()
                    mark = cursor.position
                    item = cursor.take(MAX_MESSAGE_CHARS)
                    if item is FLUSH:
                        conn.nonce += 1
                        await conn.send(encode_client_flush(version, conn.nonce))
                        self._owe(conn)
                        continue
                    assert isinstance(item, str)
                    if conn.text_chars and conn.text_chars + len(item) > SESSION_TEXT_BUDGET:
                        cursor.position = self._resume_at = mark
                        break
                    conn.text_chars += len(item)
                    await conn.send(encode_client_text(item, version))
                if self._resume_at is not None or (self.feed.done and not cursor.pending()):
                    break
                await self.feed.wait()
            if not self.feed.has_words:
                conn.events.put_nowait(_NOTHING_TO_SAY)  # type: ignore[arg-type]
                return
            await conn.pacer.take()
            if self._resume_at is not None:
                await conn.send(encode_client_eof(version))  # ends the session, not the turn
            elif self.reuse_session:
                # End the turn with a flush, not ``finish``: the session stays open for the next.
                if not self.feed.items or self.feed.items[-1] is not FLUSH:
                    conn.nonce += 1
                    await conn.send(encode_client_flush(version, conn.nonce))
                self._final_nonce = conn.nonce
            else:
                await conn.send(encode_client_eof(version))
            self._eof_sent = True
            self._owe(conn)
            conn.events.put_nowait(_WAKE)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError, OSError) as exc:
            # The receiver sees the close and reports it; nothing more to do here.
            logger.debug("LMNT: send stopped: %s", type(exc).__name__)

    _eof_sent: bool = False
    # Where in the feed (item, offset) this session starts, and where the next one must start
    # when this one ran out of text budget (None: it did not).
    _start_at: tuple[int, int] = (0, 0)
    _resume_at: tuple[int, int] | None = None
    _continuing: bool = False  # a later session of the same turn: audio and words go on
    _rate_limited: int = 0  # rate-limit refusals this turn has had (each slows its pacing)
    _final_nonce: int | None = None
    _completed_nonce: int = 0
    _owed_since: float | None = None
    _timeline: WordTimeline | None = None

    # Since audio became owed, it must arrive at a sensible fraction of the speed it plays, with
    # ``receive_timeout`` of slack: a server that drips a few bytes at a time renews "something
    # arrived" forever, but never gets anywhere.
    _flow_anchor: float | None = None  # when the flow clock started
    _flow_audio: float = 0.0  # seconds of audio received since then
    # A server slower than real time is choppy but still speaking; one below this fraction of
    # real time is dripping, not speaking.
    MIN_FLOW_RATE = 0.25

    def _owe(self, conn: LMNTConnection) -> None:
        if self._owed_since is None:
            self._owed_since = time.monotonic()
            conn.events.put_nowait(_WAKE)  # type: ignore[arg-type]
        if self._flow_anchor is None:
            # Audio the listener still holds counts as flow already made: a server that
            # renders the next sentence just in time is not dripping.
            now = time.monotonic()
            self._flow_anchor, self._flow_audio = now, max(0.0, self._dry_at() - now)

    # When the listener would run out of audio, had it been playing since the first push at
    # real time: what the deadline uses when the track cannot say what it still holds.
    _model_dry_at: float = 0.0

    _track_dry_at: float = 0.0  # when the track last said it would run dry

    def _dry_at(self) -> float:
        """When the listener runs (or ran) out of the audio it was given (monotonic time)."""
        queued = self.sink.queued_seconds()
        if queued is None:
            return self._model_dry_at
        if queued > 0:
            self._track_dry_at = time.monotonic() + queued
        # A track nobody plays (or a paused one) would hold its audio forever: never later
        # than real-time playback from each push, so the time to an error stays bounded.
        return min(self._track_dry_at, self._model_dry_at)

    def _deadline(self) -> float | None:
        """Silence is only a failure once the listener has run dry: a server that renders the
        next sentence just in time (the neural engine under load does, on purpose) is on time
        as long as audio is still playing.  From then on ``receive_timeout`` bounds the wait."""
        if self._owed_since is None:
            return None
        silence = max(self._owed_since, self._dry_at()) + self.receive_timeout
        if self._flow_anchor is None:
            return silence
        # A server dripping a few bytes at a time renews "something arrived" forever.
        flow = self._flow_anchor + self._flow_audio / self.MIN_FLOW_RATE + self.receive_timeout
        return min(silence, flow)

    def _fail(self, exc: LMNTError) -> NoReturn:
        """Before audio: raise (the caller or FallbackTTS can retry). After: report and stop."""
        conn = self.conn
        if self.request_id is None and conn is not None:
            self.request_id = conn.request_id
        if exc.request_id is None and self.request_id is not None:
            exc.request_id = self.request_id
        exc.scrub(self.options.api_key)
        if not self.audio_started:
            raise exc
        raise _AfterAudio(exc)

    async def _receive(
        self, conn: LMNTConnection, pipeline: AudioPipeline, sender: asyncio.Task[None]
    ) -> bool:
        """Returns True if the connection can serve another turn (unused, or a typed session
        whose every flush was answered)."""
        self._eof_sent = False
        self._final_nonce = None
        self._completed_nonce = conn.nonce
        self._owed_since = None
        self._flow_anchor = None
        while True:
            if self._final_nonce is not None and self._completed_nonce >= self._final_nonce:
                await self._finish_audio(pipeline)
                return True  # every flush answered: the session can serve the next turn
            deadline = self._deadline()
            try:
                if deadline is None:
                    ev = await conn.events.get()
                else:
                    async with asyncio.timeout_at(
                        asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())
                    ):
                        ev = await conn.events.get()
            except TimeoutError:
                later = self._deadline()
                if later is not None and later > time.monotonic() + 0.001:
                    continue  # the track played slower than thought: the deadline moved on
                if self._owed_since is not None and time.monotonic() < (
                    self._owed_since + self.receive_timeout - 0.001
                ):
                    self._fail(
                        LMNTTimeoutError(
                            f"LMNT audio arrives far slower than real time: "
                            f"{self._flow_audio:.2f} s "
                            f"of audio in {time.monotonic() - (self._flow_anchor or 0):.2f} s "
                            f"(receive_timeout {self.receive_timeout:g} s)"
                        )
                    )
                what = "audio" if not self.audio_started else "the rest of the audio"
                self._fail(
                    LMNTTimeoutError(
                        f"LMNT server sent nothing for {self.receive_timeout:g} s while {what} "
                        "was expected"
                    )
                )
            if self.interrupted or ev is _INTERRUPTED:
                return False
            if ev is _NOTHING_TO_SAY:
                return True
            if ev is _WAKE:
                continue
            if isinstance(ev, Audio):
                if self._eof_sent:
                    self._owed_since = time.monotonic()
                elif self._owed_since is not None:
                    self._owed_since = self._flow_anchor = None  # the flush was answered
                decoded = pipeline.seconds_decoded
                received = pipeline.seconds_received
                try:
                    pcm = await pipeline.afeed(ev.data)
                except AudioDecodeError as exc:
                    self._fail(LMNTProtocolError(f"LMNT audio could not be decoded: {exc}"))
                seconds = len(pcm) / 2 / self.sink.out_rate
                if self._flow_anchor is not None:
                    self._flow_audio += seconds
                if self._timeline is not None:
                    # Stream time, not output length: the resampler holds output back; and
                    # where the format tells, the bytes received, not decoded: so does the
                    # decoder.
                    self._timeline.delay = pipeline.codec_delay  # the stream's own rate now
                    now_received = pipeline.seconds_received
                    if now_received is not None:
                        if received is None:  # the stream's first frame header: from 0
                            received = 0.0
                        self._timeline.audio_span(received, now_received)
                    else:
                        self._timeline.audio(pipeline.seconds_decoded - decoded)
                await self._push(pcm)
            elif isinstance(ev, Closed):
                if self._eof_sent and ev.code == 1000 and self._resume_at is not None:
                    await self._finish_audio(pipeline, pad=False)  # the turn goes on
                    return False
                if self._eof_sent and ev.code == 1000:
                    await self._finish_audio(pipeline)
                    if not self.audio_started and self.feed.has_words:
                        # Without this the framework would wait 10 s for a first byte.
                        self._fail(
                            LMNTProtocolError("LMNT server ended the stream without any audio")
                        )
                    return False
                self._fail(self._closed_error(ev))
            elif isinstance(ev, ErrorFrame):
                self._fail(error_from_frame(ev, self.options.api_key))
            elif isinstance(ev, ProtocolViolation):
                self._fail(LMNTProtocolError(f"LMNT protocol error: {ev.reason}"))
            elif isinstance(ev, Extras | Timestamps):
                if self._timeline is not None and self.sink.on_words is not None:
                    words = (
                        self._timeline.extras(list(ev.durations))
                        if isinstance(ev, Extras)
                        else self._timeline.timestamps(list(ev.items))
                    )
                    if words:
                        self.sink.on_words(words)
            elif isinstance(ev, FlushComplete | ResetComplete):
                if self._timeline is not None:
                    self._timeline.segment_boundary()
                if isinstance(ev, FlushComplete):
                    self._completed_nonce = max(self._completed_nonce, ev.nonce)
                    if not self._eof_sent:
                        self._owed_since = self._flow_anchor = None

    def _closed_error(self, ev: Closed) -> LMNTError:
        when = "before any audio" if not self.audio_started else "mid-stream"
        detail = f"code {ev.code}" + (f": {ev.reason}" if ev.reason else "")
        if ev.local:
            return LMNTProtocolError(f"LMNT server broke the WebSocket protocol {when} ({detail})")
        err = LMNTConnectionError(f"LMNT connection closed {when} ({detail})")
        if ev.code in _REFUSING_CLOSE_CODES:
            err.retryable = False  # the server refused this request; it would refuse it again
        return err

    async def _finish_audio(self, pipeline: AudioPipeline, pad: bool = True) -> None:
        try:
            await self._push(await pipeline.aflush())
        except AudioDecodeError as exc:
            self._fail(LMNTProtocolError(f"LMNT audio could not be decoded: {exc}"))
        if pad:
            await self._pad()

    async def _push(self, pcm: bytes) -> None:
        if not pcm or self.interrupted:
            return
        first = not self.audio_started
        if first:
            self.audio_started = True
            await self.sink.on_first_audio()
            if self.interrupted:
                return
        if first:  # what the track still held from before this turn plays first
            self._model_dry_at = time.monotonic() + (self.sink.queued_seconds() or 0.0)
        await self.sink.push(pcm)
        self.pushed_bytes += len(pcm)
        now = time.monotonic()
        self._model_dry_at = max(self._model_dry_at, now) + len(pcm) / 2 / self.sink.out_rate
        if first:
            self._warm_next()

    def _warm_next(self) -> None:
        """Open the next turn's connection, but only once this turn's first audio is out: its
        handshake would otherwise compete with this turn's text and first audio."""
        if self.warm and not self.reuse_session:
            self.pool.prepare_spare(self.options)

    async def _pad(self) -> None:
        """End on a whole 20 ms frame, so no stray bytes stall the track or shift the next turn."""
        if self.interrupted or not self.audio_started:
            return
        pending = self.sink.pending_bytes()
        basis = pending if pending is not None else self.pushed_bytes
        missing = (-basis) % self.sink.frame_bytes
        if missing:
            await self.sink.push(bytes(missing))
            self.pushed_bytes += missing


class _AfterAudio(Exception):
    """A failure after audio reached the track: reported, not raised to the framework."""

    def __init__(self, error: LMNTError) -> None:
        super().__init__(str(error))
        self.error = error
