"""Client-side audio decoding: any LMNT output format -> mono s16le PCM at the track's rate.

The plugin asks an LMNT-compatible server for some format at some rate, but what actually arrives
is a byte stream cut into WebSocket frames of arbitrary length: PCM frames may split a sample,
a WAV header may straddle two frames, compressed formats carry their real sample rate inside the
stream.  :class:`AudioPipeline` hides all of that behind ``feed``/``flush``: whatever goes in,
what comes out is always a whole number of mono 16-bit samples at the rate the audio track plays.

Everything here is free of sockets so it can be tested byte-exactly.  ``feed``/``flush`` are
synchronous; ``afeed``/``aflush`` are what an event loop calls: for WebM, whose demuxer runs in
a thread of its own (PyAV cannot demux a pushed stream any other way), they wait for that
thread without blocking the loop.  The other formats decode in microseconds and run inline.
The decoders themselves are in :mod:`.decoders` and :mod:`.webm`; this module picks one and
resamples what it gives to the track's rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

from lmnt_local.protocol.audio_timing import WebmTimer

from .decoders import (
    _I16,
    AudioDecodeError,
    _Chunk,
    _Decoder,
    _Mp3Decoder,
    _PcmF32Decoder,
    _PcmS16Decoder,
    _UlawDecoder,
)
from .webm import _WebmDecoder

__all__ = ["FORMATS", "AudioDecodeError", "AudioPipeline"]

FORMATS: tuple[str, ...] = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
"""Formats the plugin constructor accepts.  ``"raw"`` is decodable too (legacy alias of s16le)."""

_DECODABLE: Final = frozenset((*FORMATS, "raw"))


def _make_decoder(fmt: str, rate: int) -> _Decoder:
    if fmt in ("pcm_s16le", "raw"):
        return _PcmS16Decoder(rate)
    if fmt == "pcm_f32le":
        return _PcmF32Decoder(rate)
    if fmt == "ulaw":
        return _UlawDecoder(rate)
    if fmt == "mp3":
        return _Mp3Decoder()
    return _WebmDecoder()


class AudioPipeline:
    """fmt -> decoder -> (soxr streaming resampler if rates differ) -> s16le mono bytes at out_rate.

    ``in_rate`` is what was requested from the server; where the stream itself states a rate
    (WAV header, MP3 frame header, Opus always decodes at 48 kHz) that rate wins, and the
    resampler is rebuilt if it changes mid-stream.  soxr runs in float32 and the result is
    rounded here: its own int16 output is dithered, which would make the output depend on how
    the input was chunked (and differ from run to run).

    After ``flush`` or ``close`` the pipeline is finished: ``feed`` raises ``RuntimeError`` and
    ``flush`` returns ``b""``.  A decode error closes the pipeline and is raised again by any
    later ``feed``/``flush``.  Not thread-safe; use one pipeline per stream.
    """

    def __init__(self, fmt: str, in_rate: int, out_rate: int) -> None:
        if fmt not in _DECODABLE:
            raise ValueError(f"unknown audio format {fmt!r}; expected one of {sorted(_DECODABLE)}")
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
                raise ValueError(f"{name} must be a positive integer, got {rate!r}")
        self._fmt = fmt
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._decoder: _Decoder | None = _make_decoder(fmt, in_rate)
        self._src_rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._samples_out = 0
        self._seconds_decoded = 0.0
        self._finished = False
        self._failure: AudioDecodeError | None = None
        self._mp3: tuple[int, int] | None = None  # (bit rate, sample rate) of the stream
        self._mp3_bytes = 0  # MPEG bytes received from the first frame header on
        # WebM: the audio its blocks carry, read as the server times its frames.
        self._webm: WebmTimer | None = WebmTimer() if fmt == "webm" else None
        self._webm_seconds = 0.0

    @property
    def fmt(self) -> str:
        return self._fmt

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    @property
    def samples_out(self) -> int:
        return self._samples_out

    @property
    def seconds_decoded(self) -> float:
        """Seconds of the stream decoded so far, before resampling.

        Where the stream is even while the resampler still holds some output back: what word
        timings, which are in stream time, must be placed against.
        """
        return self._seconds_decoded

    @property
    def seconds_received(self) -> float | None:
        """Stream seconds of the encoded bytes received so far, where the format tells it
        without decoding (constant-rate MP3, what LMNT and the local server send; WebM by its
        Opus blocks), else None.

        The decoder holds audio back (a frame, its own delay; the WebM demuxer a block), so
        the seconds decoded lag the stream the server's word timings describe; this does not.
        """
        if self._webm is not None:
            return self._webm_seconds + self._webm.partial
        if self._mp3 is None:
            return None
        return self._mp3_bytes * 8 / self._mp3[0]

    @property
    def codec_delay(self) -> float:
        """Seconds of codec delay before stream time 0 is heard: MP3 decoders output LAME's
        576-sample encoder delay plus their own 529 as leading audio; PCM, µ-law and Opus
        (its pre-skip is trimmed by the decoder) have none."""
        if self._fmt != "mp3":
            return 0.0
        rate = self._mp3[1] if self._mp3 is not None else self._in_rate
        return _MP3_DELAY_SAMPLES / rate

    def _count(self, data: bytes) -> None:
        if self._webm is not None:
            try:
                self._webm_seconds += sum(s for _, s in self._webm.feed(data))
            except ValueError:  # not what the server's muxer writes: time by decoding
                self._webm = None
            return
        if self._fmt != "mp3":
            return
        if self._mp3 is None:
            found = _mp3_header(data)
            if found is None:
                return
            at, self._mp3 = found
            data = data[at:]
        self._mp3_bytes += len(data)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Decode what can be decoded now; always an even number of bytes, possibly ``b""``."""
        decoder = self._live_decoder()
        if decoder is None:
            raise RuntimeError("AudioPipeline is finished (flushed or closed)")
        if not isinstance(data, bytes):
            data = bytes(data)
        self._count(data)
        chunks = self._guard(decoder.decode, data)
        return self._emit(chunks, last=False)

    async def afeed(self, data: bytes | bytearray | memoryview) -> bytes:
        """``feed`` for an event loop: never blocks it waiting for a decoder thread."""
        decoder = self._live_decoder()
        if decoder is None:
            raise RuntimeError("AudioPipeline is finished (flushed or closed)")
        if not isinstance(decoder, _WebmDecoder):
            return self.feed(data)
        data = bytes(data)
        self._count(data)
        try:
            chunks = await decoder.adecode(data)
        except AudioDecodeError as exc:
            self._failure = exc
            self.close(wait=False)
            raise
        return self._emit(chunks, last=False)

    async def aflush(self) -> bytes:
        """``flush`` for an event loop: waits for the decoder thread without blocking it."""
        decoder = self._live_decoder()
        if decoder is None:
            return b""
        if not isinstance(decoder, _WebmDecoder):
            return self.flush()
        try:
            chunks = await decoder.afinish()
            return self._emit(chunks, last=True)
        except AudioDecodeError as exc:
            self._failure = exc
            raise
        finally:
            self.close(wait=False)

    def flush(self) -> bytes:
        """End of stream: drain decoder and resampler; the pipeline is finished afterwards."""
        decoder = self._live_decoder()
        if decoder is None:
            return b""
        try:
            chunks = self._guard(decoder.finish)
            return self._emit(chunks, last=True)
        finally:
            self.close()

    def close(self, *, wait: bool = True) -> None:
        """Release the decoder (and its thread) without draining; idempotent.

        ``wait=False`` (an event loop's choice) does not join the WebM thread: it is told to
        stop and ends on its own.
        """
        self._finished = True
        decoder, self._decoder = self._decoder, None
        self._resampler = None
        if isinstance(decoder, _WebmDecoder):
            decoder.close(wait=wait)
        elif decoder is not None:
            decoder.close()

    def _live_decoder(self) -> _Decoder | None:
        if self._failure is not None:
            raise AudioDecodeError(str(self._failure))
        return None if self._finished else self._decoder

    def _guard(self, fn: Callable[..., list[_Chunk]], *args: bytes) -> list[_Chunk]:
        try:
            return fn(*args)
        except AudioDecodeError as exc:
            self._failure = exc
            self.close()
            raise

    @staticmethod
    def _merge(chunks: list[_Chunk]) -> list[_Chunk]:
        """Join consecutive chunks of one rate: a WebM frame brings ~20 Opus frames, and one
        resampler call per 20 ms frame cost the event loop more than the resampling itself."""
        if len(chunks) < 2:
            return chunks
        merged: list[_Chunk] = []
        run: list[bytes] = []
        for rate, pcm in chunks:
            if merged and run and rate != merged[-1][0]:
                merged[-1] = (merged[-1][0], b"".join(run))
                run = []
            if not run:
                merged.append((rate, b""))
            run.append(pcm)
        merged[-1] = (merged[-1][0], b"".join(run))
        return merged

    def _emit(self, chunks: list[_Chunk], *, last: bool) -> bytes:
        parts: list[bytes] = []
        for rate, pcm in self._merge(chunks):
            self._seconds_decoded += len(pcm) / 2 / rate
            if rate != self._src_rate:
                parts.append(self._drain())
                self._start(rate)
            if self._resampler is None:
                parts.append(pcm)
            else:
                parts.append(self._resample(np.frombuffer(pcm, _I16), last=False))
        if last:
            parts.append(self._drain())
        parts = [p for p in parts if p]
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._samples_out += len(out) // 2
        return out

    def _start(self, rate: int) -> None:
        self._src_rate = rate
        self._resampler = (
            None
            if rate == self._out_rate
            else soxr.ResampleStream(rate, self._out_rate, 1, dtype="float32", quality="HQ")
        )

    def _drain(self) -> bytes:
        if self._resampler is None:
            return b""
        return self._resample(np.zeros(0, _I16), last=True)

    def _resample(self, pcm: npt.NDArray[np.int16], *, last: bool) -> bytes:
        assert self._resampler is not None
        y = self._resampler.resample_chunk(pcm.astype(np.float32), last=last)
        y = np.rint(y, out=y)
        np.clip(y, -32768.0, 32767.0, out=y)
        return bytes(y.astype(_I16).tobytes())


# LAME's encoder delay (576) plus the MP3 decoder's (529), in samples at the stream's rate.
_MP3_DELAY_SAMPLES = 1105
_MP3_KBPS = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2
    0: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2.5
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_header(data: bytes) -> tuple[int, tuple[int, int]] | None:
    """Where the first MPEG-audio Layer III frame header is in ``data``, with the stream's
    bit rate (bit/s) and sample rate; None if there is none."""
    at = data.find(b"\xff")
    while 0 <= at <= len(data) - 4:
        b2, b3 = data[at + 1], data[at + 2]
        version, layer = (b2 >> 3) & 3, (b2 >> 1) & 3
        kbps_index, rate_index = b3 >> 4, (b3 >> 2) & 3
        if b2 & 0xE0 == 0xE0 and version != 1 and layer == 1 and 0 < kbps_index < 15:
            if rate_index < 3:
                kbps = _MP3_KBPS[version][kbps_index]
                return at, (kbps * 1000, _MP3_RATES[version][rate_index])
        at = data.find(b"\xff", at + 1)
    return None
