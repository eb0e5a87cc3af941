"""One session's audio stream: engine PCM -> encoded bytes -> frames that know their time.

Clients need word timings relative to the frame they arrive with (legacy extras, 1.1
timestamps) or to the last flush (1.2), so every frame carries the stream time it covers.
For PCM formats that time is exact.  Codecs hold audio back (lookahead, a frame, a muxer's
open cluster), so their frames are timed by the audio their bytes carry
(:mod:`lmnt_local.protocol.audio_timing`: MP3 by its constant bit rate, WebM by its Opus
blocks), which is where a client reading the same bytes places each frame; MP3's own delay
(LAME's priming plus the decoder's) is the client's to add, the same for every frame.
Crediting each output with all the audio fed since the previous one instead put every frame
after the first 30-60 ms late, so per-frame word timings (legacy extras, 1.1) came out that
much early.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from lmnt_local.protocol import WordSpan
from lmnt_local.protocol.audio_timing import timer_for
from lmnt_local.server.engines import WordTiming

__all__ = ["AudioStream", "EncodeRunner", "Frame", "InlineEncoding", "StreamEncoder"]


class StreamEncoder(Protocol):
    """What :mod:`.encoders`'s encoders offer; one per session so a container header (ulaw's
    WAV header, webm's EBML) goes out once at the start of the stream."""

    sample_rate: int
    heavy: bool
    fmt: str

    def encode(self, pcm: bytes) -> bytes: ...

    def drain(self) -> tuple[bytes, int]: ...

    def finish(self) -> bytes: ...


class EncodeRunner(Protocol):
    """Where encoders are made and their calls run (:class:`.encode_pool.EncoderPool`: off
    the event loop for the heavy codecs)."""

    async def make(self, fmt: str, sample_rate: int) -> StreamEncoder: ...

    async def encode(self, encoder: StreamEncoder, pcm: bytes) -> bytes: ...

    async def drain(self, encoder: StreamEncoder) -> tuple[bytes, int]: ...

    async def finish(self, encoder: StreamEncoder) -> bytes: ...


class InlineEncoding:
    """Runs encoder calls right here, on the caller's thread."""

    async def make(self, fmt: str, sample_rate: int) -> StreamEncoder:
        from lmnt_local.server.encoding.encoders import make_encoder

        return make_encoder(fmt, sample_rate)

    async def encode(self, encoder: StreamEncoder, pcm: bytes) -> bytes:
        return encoder.encode(pcm)

    async def drain(self, encoder: StreamEncoder) -> tuple[bytes, int]:
        return encoder.drain()

    async def finish(self, encoder: StreamEncoder) -> bytes:
        return encoder.finish()


@dataclass(frozen=True, slots=True)
class Frame:
    """One binary frame: its bytes, the stream seconds it covers and the words starting in it
    (``WordSpan.start`` in stream seconds)."""

    data: bytes
    start: float
    end: float
    words: tuple[WordSpan, ...]

    @property
    def seconds(self) -> float:
        return self.end - self.start


class AudioStream:
    """Encodes engine chunks and cuts the output into frames of ``frame_bytes``.

    ``feed`` returns only full frames; ``end_unit`` also returns the short remainder, so a
    frame never mixes two synthesis units (sentences) and the end of a sentence is not held
    back waiting for the next one.
    """

    def __init__(
        self,
        encoder: StreamEncoder,
        sample_rate: int,
        frame_bytes: int,
        runner: EncodeRunner | None = None,
    ) -> None:
        self._encoder = encoder
        self._runner: EncodeRunner = runner or InlineEncoding()
        self._bytes_per_second = 2.0 * sample_rate
        self._frame_bytes = frame_bytes
        self._buf = bytearray()
        #: Pending output as [bytes left, stream time of its first byte, seconds per byte].
        self._segments: deque[list[float]] = deque()
        self._words: list[WordSpan] = []
        self._head = 0.0  # stream time of the first byte in _buf
        self._credited = 0.0  # stream time up to which output bytes account for the audio
        self.fed = 0.0  # stream seconds of PCM handed to the encoder
        #: Reads what audio the codec's output carries (mp3, webm); None: the audio fed.
        self._timer = timer_for(encoder.fmt)
        self._out_seconds = 0.0  # with a timer: stream seconds of all the bytes given out

    @property
    def sent_until(self) -> float:
        """Stream time the output so far accounts for: where the next frame starts once
        everything pending is cut (after a flush's drain: where the next segment's audio
        starts, as a client counting the audio it received places it)."""
        if self._timer is not None:
            return self._out_seconds
        return self._credited

    async def feed(self, pcm: bytes, words: Iterable[WordTiming], offset: float) -> list[Frame]:
        """Encode ``pcm``; ``words`` are timed from ``offset`` (the stream time of its unit)."""
        self._words.extend(WordSpan(w.text, offset + w.start, w.duration) for w in words)
        data = await self._runner.encode(self._encoder, pcm)
        self.fed += len(pcm) / self._bytes_per_second
        self._push(data)
        return self._cut(final=False)

    def end_unit(self) -> list[Frame]:
        """Everything encoded so far, the last frame possibly short."""
        return self._cut(final=True)

    async def drain(self) -> list[Frame]:
        """A flush: everything fed so far, including what the codec held back.

        The silence a codec needs to let go of its lookahead is counted as stream time, so
        timings of later audio stay true to what the client hears.
        """
        data, padded = await self._runner.drain(self._encoder)
        self.fed += 2 * padded / self._bytes_per_second
        self._push(data)
        return self._words_to_last(self._cut(final=True))

    async def finish(self) -> list[Frame]:
        """End of the stream: the codec's tail, and any words not yet given to a frame."""
        self._push(await self._runner.finish(self._encoder))
        return self._words_to_last(self._cut(final=True))

    def _words_to_last(self, frames: list[Frame]) -> list[Frame]:
        if self._words and frames:
            last = frames[-1]
            frames[-1] = Frame(last.data, last.start, last.end, (*last.words, *self._words))
            self._words.clear()
        return frames

    def drop(self) -> None:
        """Forget audio not yet cut into frames (reset): it must never be sent."""
        self._buf.clear()
        self._segments.clear()
        self._words.clear()
        if self._timer is not None:
            # The dropped bytes were encoded all the same: later audio's byte time counts them.
            self._credited = self._head = self._out_seconds
        else:
            self._credited = self.fed
            self._head = self.fed

    def _push(self, data: bytes) -> None:
        if not data:
            return
        if self._timer is not None:
            for n, seconds in self._timer.feed(data):
                self._segments.append([float(n), self._out_seconds, seconds / n])
                self._out_seconds += seconds
            self._credited = self._out_seconds
            self._buf += data
            return
        span = self.fed - self._credited
        self._segments.append([float(len(data)), self._credited, span / len(data)])
        self._credited = self.fed
        self._buf += data

    def _advance(self, n: int) -> float:
        """Consume ``n`` bytes of segment bookkeeping; returns the stream time after them."""
        t = self._head
        while n > 0 and self._segments:
            seg = self._segments[0]
            take = min(n, int(seg[0]))
            t = seg[1] + take * seg[2]
            seg[0] -= take
            seg[1] = t
            n -= take
            if seg[0] <= 0:
                self._segments.popleft()
        return t

    def _cut(self, *, final: bool) -> list[Frame]:
        frames: list[Frame] = []
        while len(self._buf) >= self._frame_bytes or (final and self._buf):
            n = min(self._frame_bytes, len(self._buf))
            start = self._head
            end = self._advance(n)
            data = bytes(self._buf[:n])
            del self._buf[:n]
            last = final and not self._buf
            inside = [w for w in self._words if last or w.start < end]
            if inside:
                self._words = [w for w in self._words if not (last or w.start < end)]
            frames.append(Frame(data, start, end, tuple(inside)))
            self._head = end
        return frames
