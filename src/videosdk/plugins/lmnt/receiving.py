"""The receive side of a turn: what each server event means, and which of them ends the turn.

One loop decides every way a turn ends (the server's close after end-of-stream, an error frame,
a dropped socket, silence past the deadline, or ``interrupt()``), so it is kept whole and apart
from what starts, retries and feeds a turn (``turn``).  The silence deadline lives here because
only this loop waits on it; the sender starts its clock (``_owe``) when audio becomes owed.
``Turn`` declares this state, with its defaults, as dataclass fields; the mixin only uses it.
"""

from __future__ import annotations

import asyncio
import time
from typing import NoReturn

from lmnt_local.protocol import (
    Audio,
    ErrorFrame,
    Extras,
    FlushComplete,
    ProtocolViolation,
    ResetComplete,
    Timestamps,
)

from .audio import AudioDecodeError, AudioPipeline
from .connection import Closed, LMNTConnection, error_from_frame
from .errors import LMNTConnectionError, LMNTError, LMNTProtocolError, LMNTTimeoutError
from .feed import TextFeed
from .playout import _Playout
from .words import WordTimeline

_INTERRUPTED = object()  # put in a connection's queue to wake the receiver
_NOTHING_TO_SAY = object()  # the text held no words: the connection was never used
_WAKE = object()  # audio became owed: the receiver must start its silence deadline
# Close codes that reject the request itself (protocol error, unsupported or invalid data,
# policy, too big, missing extension): retrying the same request cannot help.
_REFUSING_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})


class _Receiving(_Playout):
    """The receive half of ``Turn`` (a mixin: ``Turn`` holds the fields)."""

    feed: TextFeed
    receive_timeout: float
    conn: LMNTConnection | None
    request_id: str | None
    _eof_sent: bool
    _resume_at: tuple[int, int] | None
    _final_nonce: int | None
    _completed_nonce: int
    _owed_since: float | None
    _timeline: WordTimeline | None
    _flow_anchor: float | None
    _flow_audio: float

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


class _AfterAudio(Exception):
    """A failure after audio reached the track: reported, not raised to the framework."""

    def __init__(self, error: LMNTError) -> None:
        super().__init__(str(error))
        self.error = error
