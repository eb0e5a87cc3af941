"""One utterance: text in, audio to the track, with retries before audio and clean interrupts.

The framework hands ``synthesize()`` an async iterator it owns, so text can be read only once.
``TextFeed`` (in ``feed``) reads it exactly once and remembers every item, which lets a retry on
a fresh connection resend what was already pulled instead of losing it.  This module starts,
retries and feeds a turn; the receive side (``receiving``) decides, in one place, what ends it:
the server's close after end-of-stream, an error frame, a dropped socket, silence past the
deadline, or ``interrupt()``; ``playout`` puts its audio on the track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from lmnt_local.protocol import (
    SessionOptions,
    encode_client_eof,
    encode_client_flush,
    encode_client_text,
)

from .audio import AudioPipeline
from .connection import ConnectionPool, LMNTConnection
from .errors import LMNTError, LMNTRateLimitError, LMNTTimeoutError
from .feed import FLUSH, settle
from .feed import FeedRelease as FeedRelease  # re-exported: turn.py was their home
from .feed import TextFeed as TextFeed
from .feed import join_chunk as join_chunk
from .playout import TurnSink as TurnSink  # re-exported: turn.py was its home
from .receiving import _INTERRUPTED, _NOTHING_TO_SAY, _WAKE, _Receiving
from .receiving import _REFUSING_CLOSE_CODES as _REFUSING_CLOSE_CODES
from .receiving import _AfterAudio as _AfterAudio
from .sending import (
    MAX_MESSAGE_CHARS,
    MESSAGES_PER_SECOND,
    SESSION_TEXT_BUDGET,
    SendPacer,
    TextCursor,
)
from .words import WordTimeline

logger = logging.getLogger("videosdk.plugins.lmnt")


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


@dataclass(eq=False)  # identity: the adapter keeps its running turns in a dict
class Turn(_Receiving):
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

    # When the listener would run out of audio, had it been playing since the first push at
    # real time: what the deadline uses when the track cannot say what it still holds.
    _model_dry_at: float = 0.0

    _track_dry_at: float = 0.0  # when the track last said it would run dry
