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
"""

from __future__ import annotations

import asyncio
import logging
import queue
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final, NoReturn, Protocol

import av
import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["FORMATS", "AudioDecodeError", "AudioPipeline"]

FORMATS: tuple[str, ...] = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
"""Formats the plugin constructor accepts.  ``"raw"`` is decodable too (legacy alias of s16le)."""

_DECODABLE: Final = frozenset((*FORMATS, "raw"))

_Chunk = tuple[int, bytes]
"""A piece of decoded audio: (sample rate it is at, mono s16le bytes)."""

_I16: Final[np.dtype[np.int16]] = np.dtype(np.int16).newbyteorder("<")
_MAX_ERROR_SAMPLE: Final = 8
_WEBM_FLUSH_TIMEOUT: Final = 5.0


class AudioDecodeError(ValueError):
    """The byte stream cannot be decoded as the format it was announced as.

    The message names the format and the problem, and quotes at most a few bytes of the input,
    so it is safe to log even when a server sends megabytes of garbage.
    """


def _describe(exc: BaseException) -> str:
    """FFmpeg's reason plus its last log line, without PyAV's file-name noise."""
    if isinstance(exc, av.error.FFmpegError):
        text = str(exc.strerror or exc)
        log = exc.log
        if log and len(log) == 3 and log[2]:
            text += f" ({str(log[2]).strip()})"
        return text
    return f"{type(exc).__name__}: {exc}"


def _error(fmt: str, problem: str, sample: bytes | bytearray = b"") -> AudioDecodeError:
    text = f"{fmt}: {problem}"
    if sample:
        text += f" (bytes: {bytes(sample[:_MAX_ERROR_SAMPLE]).hex(' ')})"
    return AudioDecodeError(text)


class _Decoder(Protocol):
    def decode(self, data: bytes) -> list[_Chunk]: ...

    def finish(self) -> list[_Chunk]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- sample conversions


def _float_to_s16(x: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Full scale is 32768 (not 32767) so that s16 -> f32 -> s16 is exact, as in FFmpeg."""
    y = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(y, -1.0, 1.0, out=y)
    y *= 32768.0
    np.rint(y, out=y)
    np.clip(y, -32768.0, 32767.0, out=y)
    return y.astype(_I16)


def _mono_s16(planes: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    """(channels, samples) in any sample type -> one s16 channel, averaging channels."""
    kind, size = planes.dtype.kind, planes.dtype.itemsize
    if kind == "f":
        mixed_f: npt.NDArray[np.floating] = planes.mean(axis=0)
        return _float_to_s16(mixed_f)
    if kind == "i" and size == 2 and planes.shape[0] == 1:
        return planes.reshape(-1).astype(_I16, copy=False)
    if kind == "u" and size == 1:
        wide = (planes.astype(np.int32) - 128) << 8
    elif kind == "i" and size == 4:
        wide = planes.astype(np.int64) >> 16
    elif kind == "i" and size == 2:
        wide = planes.astype(np.int32)
    else:
        raise TypeError(f"unsupported sample type {planes.dtype}")
    mixed: npt.NDArray[np.float64] = np.rint(wide.mean(axis=0))
    return np.clip(mixed, -32768, 32767).astype(_I16)


def _frame_to_s16(frame: av.AudioFrame) -> bytes:
    channels = int(frame.layout.nb_channels)
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        # Packed frames come back as one row of interleaved samples.
        arr = arr.reshape(-1, channels).T
    return _mono_s16(arr[:channels]).tobytes()


# --------------------------------------------------------------------------- PCM


class _PcmS16Decoder:
    """Passes bytes through untouched except for a carried odd byte, so the common case is free."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._carry = b""

    def decode(self, data: bytes) -> list[_Chunk]:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        return [(self._rate, data)] if data else []

    def finish(self) -> list[_Chunk]:
        # Half a sample at the very end cannot be played; dropping it keeps the output aligned.
        self._carry = b""
        return []

    def close(self) -> None:
        self._carry = b""


class _PcmF32Decoder:
    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._carry = b""

    def decode(self, data: bytes) -> list[_Chunk]:
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % 4
        self._carry = data[whole:]
        if not whole:
            return []
        samples = np.frombuffer(data, dtype="<f4", count=whole // 4)
        return [(self._rate, _float_to_s16(samples).tobytes())]

    def finish(self) -> list[_Chunk]:
        self._carry = b""
        return []

    def close(self) -> None:
        self._carry = b""


# --------------------------------------------------------------------------- G.711 µ-law in WAV


def _ulaw_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(_I16)


_ULAW_TO_S16: Final = _ulaw_table()

_WAVE_FORMAT_MULAW: Final = 0x0007
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
_MAX_FMT_CHUNK: Final = 1024
_OPEN_ENDED_SIZES: Final = (0, 0xFFFFFFFF)

_SNIFF, _CHUNK_HEADER, _FMT_BODY, _SKIP, _DATA, _BARE = range(6)


class _UlawDecoder:
    """Incremental RIFF/WAVE parser in front of a µ-law lookup table.

    LMNT wraps µ-law in a WAV header even on a live stream, where the size fields cannot be
    known; sizes of 0 or 0xFFFFFFFF therefore mean "until the end".  A stream that does not
    start with ``RIFF`` is taken to be bare G.711 at the requested rate, which is what telephony
    style servers send.  A fresh ``RIFF....WAVE`` at the start of a feed while inside an
    open-ended data chunk is taken as a new WAV stream rather than decoded as audio, since a
    server that restarts its encoder per utterance would otherwise inject a 44-byte click.
    """

    def __init__(self, rate: int) -> None:
        self._default_rate = rate
        self._rate = rate
        self._channels = 1
        self._buf = bytearray()
        self._state = _SNIFF
        self._need = 0
        self._skip = 0
        self._remaining: int | None = None
        self._pad = 0
        self._have_fmt = False
        self._saw_data = False
        self._fed = False

    def decode(self, data: bytes) -> list[_Chunk]:
        if not data:
            return []
        self._fed = True
        if (
            self._state == _DATA
            and self._remaining is None
            and data[:4] == b"RIFF"
            and data[8:12] == b"WAVE"
        ):
            self._buf.clear()  # at most a partial multichannel frame
            self._state = _SNIFF
        self._buf += data
        out: list[_Chunk] = []
        self._run(out)
        return out

    def finish(self) -> list[_Chunk]:
        if self._fed and not self._saw_data and self._state != _BARE:
            raise _error("ulaw", "stream ended inside the WAV header (no data chunk)")
        self._buf.clear()
        return []

    def close(self) -> None:
        self._buf.clear()

    def _run(self, out: list[_Chunk]) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _SNIFF:
                if not b"RIFF".startswith(bytes(buf[:4])):
                    self._state = _BARE
                    self._rate, self._channels = self._default_rate, 1
                    self._saw_data = True
                    continue
                if len(buf) < 12:
                    return
                if buf[8:12] != b"WAVE":
                    raise _error("ulaw", "RIFF stream is not WAVE", buf[8:12])
                del buf[:12]
                self._have_fmt = False
                self._state = _CHUNK_HEADER
            elif state == _CHUNK_HEADER:
                if len(buf) < 8:
                    return
                chunk_id = bytes(buf[:4])
                if chunk_id == b"RIFF":  # a second WAV file concatenated after a sized one
                    self._state = _SNIFF
                    continue
                (size,) = struct.unpack_from("<I", buf, 4)
                del buf[:8]
                self._open_chunk(chunk_id, size)
            elif state == _FMT_BODY:
                if len(buf) < self._need:
                    return
                self._parse_fmt(bytes(buf[: self._need]))
                del buf[: self._need]
                self._state = _CHUNK_HEADER
            elif state == _SKIP:
                step = min(self._skip, len(buf))
                del buf[:step]
                self._skip -= step
                if self._skip:
                    return
                self._state = _CHUNK_HEADER
            elif state == _DATA:
                if not self._take_data(out):
                    return
            else:  # _BARE
                if buf:
                    out.append(
                        (self._rate, _ULAW_TO_S16[np.frombuffer(bytes(buf), np.uint8)].tobytes())
                    )
                    buf.clear()
                return

    def _open_chunk(self, chunk_id: bytes, size: int) -> None:
        if chunk_id == b"fmt ":
            if not 16 <= size <= _MAX_FMT_CHUNK:
                raise _error("ulaw", f"fmt chunk of {size} bytes")
            self._need = size + (size & 1)
            self._state = _FMT_BODY
        elif chunk_id == b"data":
            if not self._have_fmt:
                raise _error("ulaw", "data chunk before fmt chunk")
            self._remaining = None if size in _OPEN_ENDED_SIZES else size
            self._pad = size & 1 if self._remaining is not None else 0
            self._saw_data = True
            self._state = _DATA
        else:  # LIST, fact, cue, ... carry nothing we need
            self._skip = size + (size & 1)
            self._state = _SKIP

    def _parse_fmt(self, body: bytes) -> None:
        tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
        if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
            (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
        if tag != _WAVE_FORMAT_MULAW:
            raise _error("ulaw", f"WAV format tag {tag:#06x} is not G.711 mu-law (7)")
        if bits != 8:
            raise _error("ulaw", f"{bits} bits per sample, mu-law needs 8")
        if not 1 <= channels <= 32:
            raise _error("ulaw", f"{channels} channels in fmt chunk")
        if rate <= 0:
            raise _error("ulaw", "sample rate 0 in fmt chunk")
        self._rate, self._channels, self._have_fmt = rate, channels, True

    def _take_data(self, out: list[_Chunk]) -> bool:
        """Decode what is buffered of the data chunk; False when more input is needed."""
        buf, ch = self._buf, self._channels
        avail = len(buf) if self._remaining is None else min(len(buf), self._remaining)
        take = avail - avail % ch
        if take:
            codes = np.frombuffer(bytes(buf[:take]), np.uint8)
            del buf[:take]
            pcm = _ULAW_TO_S16[codes]
            if ch > 1:
                mixed = np.rint(pcm.reshape(-1, ch).astype(np.int32).mean(axis=1))
                pcm = mixed.astype(_I16)
            out.append((self._rate, pcm.tobytes()))
            if self._remaining is not None:
                self._remaining -= take
        if self._remaining is not None and self._remaining < ch:
            # End of a sized data chunk: drop a torn last frame and the pad byte, then look for
            # more chunks (LIST after data is common in files).
            self._skip = self._remaining + self._pad
            self._remaining = None
            self._state = _SKIP
            return True
        return False


# --------------------------------------------------------------------------- MP3


class _Mp3Decoder:
    """PyAV's MP3 parser + decoder; the frame header, not the request, decides the rate.

    A leading ID3v2 tag (what FFmpeg's MP3 muxer writes, so a file served over HTTP may have
    one) is skipped because the bare parser would feed it to the decoder as a corrupt frame.
    Any FFmpeg error mid-stream is fatal: a stream that stops being MP3 halfway is not worth
    guessing at.  The one exception is a torn last frame at ``finish`` after audio was decoded
    (a cut connection), which is dropped.  If bytes were fed but not a single frame came out by
    ``finish``, that is an error too, so a server sending the wrong format fails loudly
    instead of producing silence.
    """

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("mp3", "r")
        self._fed = 0
        self._frames = 0
        self._head: bytearray | None = bytearray()  # None once past any ID3v2 tag
        self._skip = 0

    def decode(self, data: bytes) -> list[_Chunk]:
        if not data:
            return []  # never hand b"" to the parser: that means "flush"
        self._fed += len(data)
        data = self._strip_id3(data)
        return self._run(data) if data else []

    def finish(self) -> list[_Chunk]:
        out: list[_Chunk] = []
        if self._head:  # a stream shorter than an ID3 header
            out += self._run(bytes(self._head))
        self._head = None
        try:
            out += self._run(None)
        except AudioDecodeError:
            # The parser hands over whatever trails the last whole frame; after real audio
            # that is a stream cut mid-frame (torn frame dropped), not a wrong format.
            if not self._frames:
                raise
        if self._fed and not self._frames:
            raise _error("mp3", f"no MPEG audio frame found in {self._fed} bytes")
        return out

    def close(self) -> None:
        self._head = None

    def _strip_id3(self, data: bytes) -> bytes:
        if self._skip:
            step = min(self._skip, len(data))
            self._skip -= step
            data = data[step:]
            if self._skip or not data:
                return b""
        head = self._head
        if head is None:
            return data
        head += data
        if not b"ID3".startswith(bytes(head[:3])):
            self._head = None
            return bytes(head)
        if len(head) < 10:
            return b""
        size = (
            (head[6] & 0x7F) << 21
            | (head[7] & 0x7F) << 14
            | (head[8] & 0x7F) << 7
            | (head[9] & 0x7F)
        )
        total = 10 + size + (10 if head[5] & 0x10 else 0)
        rest = bytes(head[total:])
        self._skip = max(0, total - len(head))
        head.clear()  # another tag may follow; sniff again
        return self._strip_id3(rest) if rest else b""

    def _run(self, data: bytes | None) -> list[_Chunk]:
        out: list[_Chunk] = []
        try:
            for packet in self._ctx.parse(data):
                for frame in self._ctx.decode(packet):
                    out.append((int(frame.sample_rate), _frame_to_s16(frame)))
            if data is None:
                for frame in self._ctx.decode(None):
                    out.append((int(frame.sample_rate), _frame_to_s16(frame)))
        except av.error.FFmpegError as exc:
            raise _error("mp3", f"decoder error: {_describe(exc)}") from exc
        self._frames += len(out)
        return out


# --------------------------------------------------------------------------- WebM / Opus


class _BlockingSource:
    """File-like read side for the demuxer thread: ``read`` waits for bytes, EOF or abort.

    It deliberately has no ``seek``, so FFmpeg treats it as a live, non-seekable stream.  It
    also records when the reader is starved (waiting with nothing buffered), which is exactly
    the moment everything fed so far has been demuxed and decoded.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._aborted = False
        self._starved = False
        self._worker_done = False
        # An event loop waiting for the worker to catch up or finish (``wait_idle_async``).
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def _wake_waiter(self) -> None:
        """Called with the lock held, from the worker thread."""
        if self._waiter is not None:
            loop, event = self._waiter
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _idle(self) -> bool:
        return (self._starved and not self._chunks) or self._worker_done

    def push(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._starved = False
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._cond.notify_all()

    @property
    def aborted(self) -> bool:
        return self._aborted

    def worker_finished(self) -> None:
        with self._cond:
            self._worker_done = True
            self._cond.notify_all()
            self._wake_waiter()

    async def wait_idle_async(self, limit: float) -> bool:
        """``wait_idle`` for an event loop: the loop runs on while the worker decodes."""
        return await self._wait_async(self._idle, limit)

    async def wait_finished_async(self, limit: float) -> bool:
        """Until the worker has ended (after ``end``), at most ``limit`` seconds."""
        return await self._wait_async(lambda: self._worker_done, limit)

    async def _wait_async(self, done: Callable[[], bool], limit: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            event = asyncio.Event()
            with self._cond:
                if done():
                    return True
                self._waiter = (loop, event)
            try:
                async with asyncio.timeout_at(deadline):
                    await event.wait()
            except TimeoutError:
                with self._cond:
                    return done()
            finally:
                with self._cond:
                    self._waiter = None

    def wait_idle(self, timeout: float) -> None:
        """Wait until the worker has consumed every pushed byte (or ended), at most timeout."""
        with self._cond:
            self._cond.wait_for(self._idle, timeout)

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._starved = True
                self._cond.notify_all()
                self._wake_waiter()
                self._cond.wait()
            self._starved = False
            if self._aborted or not self._chunks:
                return b""
            if size < 0:
                size = sum(len(c) for c in self._chunks)
            parts: list[bytes] = []
            while self._chunks and size > 0:
                chunk = self._chunks.popleft()
                if len(chunk) > size:
                    self._chunks.appendleft(chunk[size:])
                    chunk = chunk[:size]
                parts.append(chunk)
                size -= len(chunk)
            return b"".join(parts)


_Item = tuple[int, bytes] | BaseException | None


class _WebmDecoder:
    """Opus-in-WebM via a demuxer thread, since PyAV can only demux by pulling from a file.

    ``decode`` hands the bytes over and then waits (bounded, normally well under a
    millisecond) until the thread has consumed them, so the PCM for a WebSocket frame comes out
    of the same ``feed`` call instead of one frame late; it never waits for more input.
    ``adecode``/``afinish`` do the same waits as awaits, so an event loop running many streams
    is never held up by one of them (with 30 streams, blocking waits held the loop for 16 ms
    at p99).  The thread holds no reference to the decoder, so a pipeline dropped without
    ``close`` is still collected, and its finalizer releases the thread.
    """

    CATCH_UP_TIMEOUT: Final = 0.05

    def __init__(self) -> None:
        self._source = _BlockingSource()
        self._results: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._release = weakref.finalize(self, self._source.abort)

    def _hand_over(self, data: bytes) -> None:
        if self._thread is None:
            _quiet_ffmpeg()
            self._thread = threading.Thread(
                target=_demux_webm,
                args=(self._source, self._results),
                name=_DECODER_THREAD,
                daemon=True,
            )
            self._thread.start()
        self._source.push(data)

    def decode(self, data: bytes) -> list[_Chunk]:
        if data:
            self._hand_over(data)
            self._source.wait_idle(self.CATCH_UP_TIMEOUT)
        return self._collect()

    async def adecode(self, data: bytes) -> list[_Chunk]:
        if data:
            self._hand_over(data)
            await self._source.wait_idle_async(self.CATCH_UP_TIMEOUT)
        return self._collect()

    def finish(self) -> list[_Chunk]:
        if self._thread is None:
            return []
        self._source.end()
        self._thread.join(_WEBM_FLUSH_TIMEOUT)
        if self._thread.is_alive():
            self._abandon()
        return self._collect()

    async def afinish(self) -> list[_Chunk]:
        if self._thread is None:
            return []
        self._source.end()
        # Every result is queued before the worker reports it is done: no join needed.
        if not await self._source.wait_finished_async(_WEBM_FLUSH_TIMEOUT):
            self._abandon()
        return self._collect()

    def _abandon(self) -> NoReturn:
        self._release()  # already waited long enough: abandon it, do not join again
        self._thread = None
        raise _error("webm", f"demuxer did not finish within {_WEBM_FLUSH_TIMEOUT:g} s")

    def close(self, wait: bool = True) -> None:
        """Stop the worker; with ``wait``, join it briefly (it only has to notice the abort).

        An event loop passes ``wait=False``: the daemon thread ends on its own.
        """
        self._release()
        thread, self._thread = self._thread, None
        if thread is not None and wait:
            thread.join(0.5)  # bounded in case FFmpeg is busy

    def _collect(self) -> list[_Chunk]:
        out: list[_Chunk] = []
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return out
            if isinstance(item, BaseException):
                self.close(wait=False)  # the worker is ending: it raised
                if isinstance(item, AudioDecodeError):
                    raise item
                raise _error("webm", f"demuxer error: {_describe(item)}") from item
            if item is not None:
                out.append(item)


_DECODER_THREAD: Final = "lmnt-webm-decoder"
_OPUS_FLUSH_NOISE: Final = "Error parsing Opus packet header"


class _OpusFlushNoise(logging.Filter):
    """Drops the one FFmpeg log line every WebM stream of ours ends with, and nothing else.

    FFmpeg's Matroska demuxer flushes its Opus parser with an empty buffer at the end of every
    stream and logs "Error parsing Opus packet header." for it.  The framework turns FFmpeg's
    logs into Python ERROR records (``av.logging.set_level(ERROR)`` in ``videosdk.agents``),
    so without this every turn printed that line (to stderr through logging's last resort
    when the application configured no logging).  Only that message, only from our decoder
    threads, is dropped: the application's own PyAV logs and any other FFmpeg error stay, and
    a stream that really is corrupt still fails with ``AudioDecodeError``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName != _DECODER_THREAD:
            return True
        return not str(record.msg).startswith(_OPUS_FLUSH_NOISE)


_NOISE_FILTER: Final = _OpusFlushNoise()


def _quiet_ffmpeg() -> None:
    logger = logging.getLogger("libav.opus")  # where PyAV logs FFmpeg's Opus parser
    if _NOISE_FILTER not in logger.filters:
        logger.addFilter(_NOISE_FILTER)


def _demux_webm(src: _BlockingSource, results: queue.SimpleQueue[_Item]) -> None:
    """Worker thread body: pull from ``src`` until EOF/abort, push PCM chunks or the error."""
    try:
        container = av.open(src, mode="r", format="webm")
        try:
            if not container.streams.audio:
                raise _error("webm", "container has no audio track")
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if src.aborted:
                    return
                for frame in packet.decode():
                    results.put((int(frame.sample_rate), _frame_to_s16(frame)))
        finally:
            container.close()
    except BaseException as exc:  # surfaces on the caller's thread at the next feed/flush
        if not src.aborted:
            results.put(exc)
    finally:
        results.put(None)
        src.worker_finished()


# --------------------------------------------------------------------------- pipeline


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

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Decode what can be decoded now; always an even number of bytes, possibly ``b""``."""
        decoder = self._live_decoder()
        if decoder is None:
            raise RuntimeError("AudioPipeline is finished (flushed or closed)")
        if not isinstance(data, bytes):
            data = bytes(data)
        chunks = self._guard(decoder.decode, data)
        return self._emit(chunks, last=False)

    async def afeed(self, data: bytes | bytearray | memoryview) -> bytes:
        """``feed`` for an event loop: never blocks it waiting for a decoder thread."""
        decoder = self._live_decoder()
        if decoder is None:
            raise RuntimeError("AudioPipeline is finished (flushed or closed)")
        if not isinstance(decoder, _WebmDecoder):
            return self.feed(data)
        try:
            chunks = await decoder.adecode(bytes(data))
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

    def _emit(self, chunks: list[_Chunk], *, last: bool) -> bytes:
        parts: list[bytes] = []
        for rate, pcm in chunks:
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
