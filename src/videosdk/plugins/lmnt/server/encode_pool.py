"""Codec work (mp3, webm, aac) off the event loop, shared fairly between sessions.

An mp3 frame costs LAME far more than a WebSocket write, and with tens of sessions encoding on
the loop thread, health checks and new sessions waited seconds.  Heavy encoders therefore run
on a small thread pool.  Fairness comes from two rules: a job is at most ``slice_seconds`` of
audio (longer chunks are cut), and a stream never has more than one job queued, because its
owner awaits each one before submitting the next; the pool's queue is FIFO, so with N busy
sessions each one gets a slice in turn (round robin) and none can starve another.  Light
encoders (PCM, µ-law, WAV) stay on the loop, where a thread hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from .stream import StreamEncoder

__all__ = ["EncoderPool"]

_SLICE_SECONDS: Final = 0.2


class EncoderPool:
    """Runs :class:`~.encoding.Encoder` calls on worker threads (created on first use)."""

    def __init__(self, workers: int | None = None, slice_seconds: float = _SLICE_SECONDS) -> None:
        if workers is not None and workers <= 0:
            raise ValueError("EncoderPool.workers must be > 0")
        if slice_seconds <= 0:
            raise ValueError("EncoderPool.slice_seconds must be > 0")
        self._workers = workers or min(4, os.cpu_count() or 1)
        self._slice_seconds = slice_seconds
        self._executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="lmnt-encode")
        return self._executor

    async def encode(self, encoder: StreamEncoder, pcm: bytes) -> bytes:
        if not encoder.heavy:
            return encoder.encode(pcm)
        loop = asyncio.get_running_loop()
        step = max(2, 2 * int(self._slice_seconds * encoder.sample_rate))
        out = bytearray()
        for start in range(0, len(pcm), step):
            out += await loop.run_in_executor(
                self._pool(), encoder.encode, pcm[start : start + step]
            )
        return bytes(out)

    async def drain(self, encoder: StreamEncoder) -> tuple[bytes, int]:
        if not encoder.heavy:
            return encoder.drain()
        return await asyncio.get_running_loop().run_in_executor(self._pool(), encoder.drain)

    async def finish(self, encoder: StreamEncoder) -> bytes:
        if not encoder.heavy:
            return encoder.finish()
        return await asyncio.get_running_loop().run_in_executor(self._pool(), encoder.finish)

    def close(self) -> None:
        """Stop the threads once their current job is done (queued jobs are cancelled)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
