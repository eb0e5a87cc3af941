"""WebM/Opus decoding: PyAV can only demux by pulling from a file, so each stream gets a thread.

The thread reads from a :class:`_BlockingSource` that the caller pushes WebSocket frames into,
and hands decoded chunks back through a queue.  Callers on an event loop use ``adecode`` /
``afinish``, which wait for the thread as awaits; synchronous callers use ``decode``/``finish``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final, NoReturn

import av

from .decoders import AudioDecodeError, _Chunk, _describe, _error, _frame_to_s16

_WEBM_FLUSH_TIMEOUT: Final = 5.0


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
