"""Codec work (mp3, webm, aac, ogg, flac) off the event loop, in worker processes, shared fairly.

An mp3 frame costs LAME far more than a WebSocket write, and with tens of sessions encoding on
the loop thread, health checks and new sessions waited seconds.  Threads do not fix that:
PyAV holds the GIL while LAME, Opus or AAC encode, so an encoding thread stalls the loop just
the same (measured: two encoding threads left the loop thread gaps of ~90 ms).  The encoders
therefore live in worker processes: each session's encoder is created in one worker (the one
with the fewest live encoders) and every call for it goes there, as a small job.

Fairness: a job is at most ``slice_seconds`` of audio (longer chunks are cut), a stream never
has more than one job queued (its owner awaits each before the next), and each worker's queue
is FIFO, so N busy sessions on a worker get a slice each in turn and none can starve another.

The workers are shared by every server in the process (started with the first server as
fresh ``python -c`` processes, so no event-loop state is forked and the main script is never
re-run in them: a script without a ``__main__`` guard works; they never delay an exit, and they
end when their server process ends, however it ends).  Where processes cannot be started,
encoders run on one thread instead.  Light
encoders (PCM, µ-law, WAV) always run inline, where a hop would cost more than the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Final

from lmnt_local.server.encoding.encoders import Encoder, make_encoder
from lmnt_local.server.encoding.stream import StreamEncoder

__all__ = ["HEAVY_FORMATS", "EncoderPool", "RemoteEncoder", "terminate_workers"]

log = logging.getLogger("lmnt_local.server")

#: Formats whose encoders run in the worker processes.
HEAVY_FORMATS: Final = frozenset(("mp3", "webm", "aac", "ogg_opus", "flac"))
_SLICE_SECONDS: Final = 0.2

# -- the worker side: encoders by key, one dict per worker process -----------------------------

_ENCODERS: dict[int, Encoder] = {}


def _w_create(key: int, fmt: str, sample_rate: int) -> None:
    _ENCODERS[key] = make_encoder(fmt, sample_rate)


def _w_encode(key: int, pcm: bytes) -> bytes:
    return _ENCODERS[key].encode(pcm)


def _w_drain(key: int) -> tuple[bytes, int]:
    return _ENCODERS[key].drain()


def _w_finish(key: int) -> bytes:
    return _ENCODERS[key].finish()


def _w_release(key: int) -> None:
    encoder = _ENCODERS.pop(key, None)
    if encoder is not None:
        encoder.close()


def _w_ready() -> int:
    return os.getpid()


def _w_main(conn: Connection) -> None:
    """A worker process: run jobs from the pipe until it closes (the server ended, even by
    SIGKILL: the pipe's other end is gone then, so no worker outlives its server).

    It lets go of the stdout it inherited at once: a supervisor (or a script) reading the
    server's stdout waits for end-of-file, and a worker still tearing its interpreter down
    after its server exited held that pipe open for a second or two (``serve --workers N``
    took that long to stop).  Its stderr stays, for tracebacks.
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    for _ in itertools.count():
        try:
            fn, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            reply: tuple[bool, object] = (True, fn(*args))
        except Exception as exc:
            reply = (False, exc)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def _child_main() -> None:
    """Entry point of a worker process started by :class:`_ProcessExecutor`."""
    if sys.platform.startswith("linux"):  # end with the server even if the pipe lingers
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the server's to handle
    _w_main(Connection(int(sys.argv[1])))


#: What a worker process runs: the parent's import path, then :func:`_child_main`.  Not
#: ``multiprocessing``'s spawn: that re-runs the parent's main script in the child, so a script
#: without an ``if __name__ == "__main__":`` guard started a second server there and hung.
_CHILD_CODE = (
    "import json, os, sys; sys.path[:0] = json.loads(os.environ.pop('_LMNT_ENCODE_PATH'));"
    "from lmnt_local.server.encoding.pool import _child_main; _child_main()"
)


class _ProcessExecutor(Executor):
    """One worker process running jobs one at a time, in submission order.

    Not a ``ProcessPoolExecutor`` (joined at interpreter exit, so a server asked to stop
    waited for its workers) and not ``multiprocessing`` (whose spawn re-imports the main
    script): a plain ``python -c`` child with one end of a socket pair.  It ends when that
    pipe closes (the server process ended, however), or with the server on Linux
    (``PR_SET_PDEATHSIG``); the pump thread is a daemon thread.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ, _LMNT_ENCODE_PATH=json.dumps([p for p in sys.path if p]))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._jobs = queue.SimpleQueue()
        self._broken: BaseException | None = None
        threading.Thread(target=self._pump, name="lmnt-encode-pump", daemon=True).start()

    def terminate(self) -> None:
        self._proc.terminate()

    @property
    def broken(self) -> bool:
        """True once the process has ended (killed, crashed): every later job fails."""
        return self._broken is not None or self._proc.poll() is not None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _pump(self) -> None:
        for _ in itertools.count():
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            if self._broken is None:
                try:
                    self._conn.send((fn, args))
                    ok, value = self._conn.recv()
                except (EOFError, OSError) as exc:
                    self._broken = RuntimeError(f"encoding worker process ended: {exc!r}")
                else:
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                    continue
            future.set_exception(self._broken)


# -- the server side ---------------------------------------------------------------------------


class _Worker:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.live = 0


class RemoteEncoder:
    """A handle on an encoder living in a worker; freed there when the handle is collected."""

    heavy = True

    def __init__(self, worker: _Worker, key: int, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.key = key
        self.worker = worker
        worker.live += 1
        weakref.finalize(self, _release, worker, key)

    def encode(self, pcm: bytes) -> bytes:
        raise RuntimeError("a RemoteEncoder is used through its EncoderPool")

    def drain(self) -> tuple[bytes, int]:
        raise RuntimeError("a RemoteEncoder is used through its EncoderPool")

    def finish(self) -> bytes:
        raise RuntimeError("a RemoteEncoder is used through its EncoderPool")


def _release(worker: _Worker, key: int) -> None:
    worker.live -= 1
    try:
        worker.executor.submit(_w_release, key)
    except RuntimeError:  # the pool is shut down (interpreter exit): nothing left to free
        pass


class _Workers:
    """The process-wide set of worker processes (or the thread fallback)."""

    _lock = threading.Lock()
    _shared: _Workers | None = None
    _owner = 0  # pid that started _shared: a forked child must start its own workers

    def __init__(self, count: int) -> None:
        self.workers: list[_Worker] = []
        try:
            for _ in range(count):
                self.workers.append(_Worker(_ProcessExecutor()))
            self.processes = True
        except (OSError, RuntimeError, ValueError) as exc:
            for worker in self.workers:
                worker.executor.shutdown(wait=False)
            log.info("local LMNT server: encoding on a thread (%s)", exc)
            # One thread: an encoder's release can then never overlap a call still running
            # for it (a cancelled session's last job), whatever order they were queued in.
            self.workers = [_Worker(ThreadPoolExecutor(1, thread_name_prefix="lmnt-encode"))]
            self.processes = False

    @classmethod
    def shared(cls) -> _Workers:
        with cls._lock:
            if cls._shared is None or cls._owner != os.getpid():
                cls._owner = os.getpid()
                # One core stays with the event loop (and the engine's thread).
                cls._shared = cls(max(1, min(4, (os.cpu_count() or 1) - 1)))
            return cls._shared

    def pick(self) -> _Worker:
        """The least busy worker; one whose process has died is replaced first, so a killed
        worker costs the sessions it held, not every session after it."""
        for i, worker in enumerate(self.workers):
            executor = worker.executor
            if isinstance(executor, _ProcessExecutor) and executor.broken:
                log.warning("local LMNT server: an encoding worker process ended; restarting it")
                self.workers[i] = _Worker(_ProcessExecutor())
        return min(self.workers, key=lambda w: w.live)

    def warm(self) -> None:
        """Start the worker processes now, in the background, so the first mp3 session does
        not wait for a Python interpreter to start."""
        for worker in self.workers:
            try:
                worker.executor.submit(_w_ready)
            except RuntimeError:
                pass


def terminate_workers() -> None:
    """End this process's encoding processes now, for a server exiting with ``os._exit``.

    That skips multiprocessing's exit handler, which would have terminated them; left alone
    they end when their pipe closes, but only after tearing their own interpreter down while
    still holding the stdout they inherited, which a supervisor reading it waits for.
    """
    shared = _Workers._shared
    if shared is None or _Workers._owner != os.getpid():
        return
    for worker in shared.workers:
        if isinstance(worker.executor, _ProcessExecutor):
            with contextlib.suppress(Exception):
                worker.executor.terminate()


class EncoderPool:
    """Makes encoders and runs their calls: heavy ones in the shared workers, others inline."""

    _keys = itertools.count(1)

    def __init__(self, slice_seconds: float = _SLICE_SECONDS) -> None:
        if slice_seconds <= 0:
            raise ValueError("EncoderPool.slice_seconds must be > 0")
        self._slice_seconds = slice_seconds

    def warm(self) -> None:
        _Workers.shared().warm()

    async def make(self, fmt: str, sample_rate: int) -> StreamEncoder:
        """An encoder for ``fmt``; ``ValueError`` as :func:`.encoding.make_encoder` raises."""
        if fmt not in HEAVY_FORMATS:
            return make_encoder(fmt, sample_rate)
        worker = _Workers.shared().pick()
        key = next(self._keys)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(worker.executor, _w_create, key, fmt, sample_rate)
        return RemoteEncoder(worker, key, fmt, sample_rate)

    async def encode(self, encoder: StreamEncoder, pcm: bytes) -> bytes:
        if not isinstance(encoder, RemoteEncoder):
            return encoder.encode(pcm)
        loop = asyncio.get_running_loop()
        step = max(2, 2 * int(self._slice_seconds * encoder.sample_rate))
        out = bytearray()
        for start in range(0, len(pcm), step):
            out += await loop.run_in_executor(
                encoder.worker.executor, _w_encode, encoder.key, pcm[start : start + step]
            )
        return bytes(out)

    async def drain(self, encoder: StreamEncoder) -> tuple[bytes, int]:
        if not isinstance(encoder, RemoteEncoder):
            return encoder.drain()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(encoder.worker.executor, _w_drain, encoder.key)

    async def finish(self, encoder: StreamEncoder) -> bytes:
        if not isinstance(encoder, RemoteEncoder):
            return encoder.finish()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(encoder.worker.executor, _w_finish, encoder.key)

    def close(self) -> None:
        """Nothing to stop: the workers are shared by the process and end with it."""
