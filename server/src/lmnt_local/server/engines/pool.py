"""The inference pool every neural engine shares: a few threads, earliest deadline first.

Each neural engine renders a piece of text at a time in onnxruntime (which releases the GIL),
never on the event loop.  One pool per size for the whole process: engines (a server's, a
CLI's, a test's; Piper and hibari side by side) share the cores instead of each adding threads
that would outlive them.  Each thread runs onnxruntime with one intra-op thread (measured best
for many sessions), and the pool serves the piece whose listener would run out of audio first
(the server tells how much each session holds,
:data:`lmnt_local.server.engines.base.PLAYBACK_LEAD`), so a long text, already seconds ahead,
cannot starve a new session's first sentence.
"""

from __future__ import annotations

import asyncio
import atexit
import heapq
import itertools
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lmnt_local.server.engines.base import (
    INFERENCE_THREADS_ENV,
    PLAYBACK_LEAD,
    EngineChunk,
    WordTiming,
)
from lmnt_local.server.text.segment import CONTROL_CHARS, speech_pieces

__all__ = [
    "InferencePool",
    "Rendered",
    "default_threads",
    "shared_pool",
    "speak_pieces",
    "text_pieces",
]


class InferencePool:
    """A fixed set of inference threads taking the job with the earliest deadline first: the
    monotonic time at which its session's listener would run out of audio.  A new session
    (nothing to play: deadline now) goes ahead of sessions that hold seconds of audio, and a
    session that fell behind (deadline past) ahead of everyone."""

    def __init__(self, workers: int) -> None:
        self._heap: list[tuple[float, int, Callable[[], Any], Future[Any]]] = []
        self._ready = threading.Condition()
        self._order = itertools.count()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"inference-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, deadline: float, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                future.cancel()
                return future
            heapq.heappush(self._heap, (deadline, next(self._order), job, future))
            self._ready.notify()
        return future

    def close(self, timeout: float) -> None:
        """Drop queued jobs and wait (bounded) for running ones.

        Called at interpreter exit: a thread still inside onnxruntime while the interpreter
        tears down aborts the process ("terminate called without an active exception", exit
        134), e.g. ``lmnt-local serve`` stopped by SIGTERM mid-sentence.
        """
        with self._ready:
            self._closed = True
            for _, _, _, future in self._heap:
                future.cancel()
            self._heap.clear()
            self._ready.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._heap and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                _, _, job, future = heapq.heappop(self._heap)
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (reset, hang-up)
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)


_POOLS: dict[int, InferencePool] = {}
_POOLS_LOCK = threading.Lock()


@atexit.register
def _close_pools() -> None:
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
    for pool in pools:
        pool.close(timeout=5.0)  # one piece is well under a second of CPU


def shared_pool(workers: int) -> InferencePool:
    """The process's pool of ``workers`` threads, started on first use."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = InferencePool(workers)
        return pool


def default_threads() -> int:
    """``$LMNT_INFERENCE_THREADS``, else one per core (at most 8)."""
    value = os.environ.get(INFERENCE_THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{INFERENCE_THREADS_ENV} must be a whole number >= 1, got {value!r}")
        return threads
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One piece of text made into sound by a neural engine."""

    pcm: npt.NDArray[np.int16]  # at the requested rate
    words: list[WordTiming]  # seconds from the piece's first sample
    gain: float | None = None  # the scale the pieces of one call share, where the engine sets it
    #: The rest of the same piece, where the engine made it in two steps: run in the pool next.
    rest: Callable[[], Rendered] | None = None


def text_pieces(text: str, *, first_clause: bool = True) -> list[str]:
    """What a neural engine renders at a time (it renders a whole piece before any of its
    audio exists): sentences, the first one cut after its first phrase only when the
    listener has nothing left to play (:func:`~lmnt_local.server.text.segment.speech_pieces`,
    the lead the server sets for this call) and ``first_clause`` (an engine that makes a
    sentence's first second early by itself does not need the cut)."""
    lead = PLAYBACK_LEAD.get() if first_clause else float("inf")
    return speech_pieces(CONTROL_CHARS.sub(" ", text), lead)


async def speak_pieces(
    pieces: list[str], render: Callable[[int, str], Rendered], pool: InferencePool, rate: int
) -> AsyncIterator[EngineChunk]:
    """Render ``pieces`` in ``pool`` one ahead of the listener: ``render(index, piece)`` runs
    in a pool thread while the piece before is on its way to the client.  A piece rendered in
    two steps (:attr:`Rendered.rest`) has its rest run next, before the next piece."""
    if not pieces:
        return
    # When the listener runs dry: the audio it holds, plus what this call has made so far.
    runs_dry = time.monotonic() + PLAYBACK_LEAD.get()
    pending: Future[Rendered] | None = pool.submit(runs_dry, lambda: render(0, pieces[0]))
    offset = 0.0
    index = 0
    try:
        while pending is not None:
            rendered: Rendered = await asyncio.wrap_future(pending)
            seconds = rendered.pcm.size / rate
            deadline = runs_dry + offset + seconds
            if rendered.rest is not None:
                pending = pool.submit(deadline, rendered.rest)
            else:
                index += 1
                pending = (
                    pool.submit(deadline, lambda i=index: render(i, pieces[i]))  # type: ignore[misc]
                    if index < len(pieces)
                    else None
                )
            if rendered.pcm.size:
                words = tuple(
                    WordTiming(w.text, offset + w.start, w.duration) for w in rendered.words
                )
                yield EngineChunk(rendered.pcm.tobytes(), words)
                offset += seconds
    finally:
        if pending is not None:
            pending.cancel()
