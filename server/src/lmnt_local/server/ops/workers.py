"""``lmnt-local serve --workers N``: N server processes on one port, one per core.

An engine is CPU-bound Python/C work under one GIL, so one process uses one core.  Each worker
is a full ``lmnt-local serve`` process that binds the port with ``SO_REUSEPORT``; the kernel
spreads new connections over the workers' listening sockets, with no proxy hop in between.
This supervisor only starts them, restarts one that dies, and forwards SIGTERM/SIGINT.

Workers run in their own process group, so a terminal's Ctrl-C reaches the supervisor alone and
is forwarded once (a second Ctrl-C is then a deliberate "stop now").  Before starting them the
supervisor binds the port itself (``SO_REUSEPORT``, never listening): that makes ``--port 0``
pick one port for all, reports "address in use" before any worker starts, and keeps the port
while a worker is being restarted.  That bind is exclusive at first, so a port still held by
anyone, orphaned workers included, is "in use"; and workers end (SIGTERM) when their
supervisor dies, however it dies (:func:`die_with_supervisor`).  With
``PROMETHEUS_MULTIPROC_DIR`` set (the supervisor makes a temporary one if it is not), every
worker's ``/metrics`` reports the sum over all workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from lmnt_local.server.ops.metrics import mark_process_dead
from lmnt_local.server.ops.runner import EXIT_HARD

__all__ = [
    "SUPERVISOR_ENV",
    "WORKER_INDEX_ENV",
    "Supervisor",
    "bound_socket",
    "default_workers",
    "die_with_supervisor",
    "reserve_port",
]

log = logging.getLogger("lmnt_local.server")

#: A worker that dies this many times within ``_CRASH_WINDOW`` seconds is not restarted again.
_MAX_CRASHES = 5
_CRASH_WINDOW = 60.0
#: The supervisor's pid, as its workers are told it (they end when it does).
SUPERVISOR_ENV = "_LMNT_SUPERVISOR_PID"
#: Each worker's index (0 reports the engine and its voice notes for all of them).
WORKER_INDEX_ENV = "_LMNT_WORKER_INDEX"
_PR_SET_PDEATHSIG = 1
_WATCH_INTERVAL = 0.5


def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound (not listening) to ``host:port``; raises ``OSError`` if taken.

    ``reuse_port``: several processes may bind the same port (``SO_REUSEPORT``) and the kernel
    spreads new connections over those that listen.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) ``host:port`` for the workers to share; ``OSError`` if anyone holds it.

    The bind itself is exclusive (no ``SO_REUSEPORT`` yet), so it fails while any socket is
    bound there, including orphaned workers of a supervisor that was killed: with
    ``SO_REUSEPORT`` from the start, a new server would silently share the port with them (and
    with their old API keys).  Only once the port is ours is ``SO_REUSEPORT`` set, which lets
    our own workers bind beside it (Linux checks both sockets' flag at the later bind).
    """
    sock = bound_socket(host, port, reuse_port=False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def die_with_supervisor() -> None:
    """In a worker: end (SIGTERM, so a drain) as soon as the supervisor that started it dies.

    A worker outliving a SIGKILLed supervisor would keep serving the port with the old
    settings and keys, unsupervised.  On Linux the kernel sends the signal
    (``PR_SET_PDEATHSIG``); a watchdog thread polling the parent pid covers other systems and
    the case the kernel cannot (the parent died before the request was made).
    """
    raw = os.environ.pop(SUPERVISOR_ENV, "")
    if not raw.isdigit():
        return
    supervisor = int(raw)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor:  # already orphaned before the kernel could be told
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        for _ in itertools.count():
            time.sleep(_WATCH_INTERVAL)
            if os.getppid() != supervisor:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="lmnt-supervisor-watch", daemon=True).start()


class Supervisor:
    """Starts ``count`` workers with ``argv`` and keeps them running until a signal."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        drain_timeout: float,
        hard_grace: float = 10.0,
        ready_timeout: float = 120.0,
    ) -> None:
        self.count = count
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_ENV] = str(os.getpid())
        self.drain_timeout = drain_timeout
        self.hard_grace = hard_grace
        self.ready_timeout = ready_timeout
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._stopping = False
        self._crashes: list[float] = []
        self._metrics_dir: str | None = None
        self._signals = 0
        self._stop = asyncio.Event()
        self._readers: set[asyncio.Future[None]] = set()
        #: Workers a stop signal was forwarded to (one restarted meanwhile was not).
        self._told: set[int] = set()

    async def start(self) -> list[str]:
        """Start every worker; returns each one's first stdout line (its URL) once it is ready."""
        if not self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            self._metrics_dir = tempfile.mkdtemp(prefix="lmnt-metrics-")
            self.env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        try:
            return list(await asyncio.gather(*(self._spawn(i) for i in range(self.count))))
        except BaseException:
            await self._terminate_all(signal.SIGKILL)
            self._cleanup()
            raise

    async def _spawn(self, index: int) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            env={**self.env, WORKER_INDEX_ENV: str(index)},
            start_new_session=True,
        )
        self.procs[index] = proc
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ready_timeout)
        except TimeoutError:
            limit = self.ready_timeout
            raise RuntimeError(f"worker {index} was not ready in {limit:g} s") from None
        if not line:
            code = await proc.wait()
            raise RuntimeError(f"worker {index} exited with {code} before it was ready")
        stdout = proc.stdout
        reader = asyncio.ensure_future(_discard(stdout))  # a full pipe must never block a worker
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return line.decode(errors="replace").strip()

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Supervise until SIGINT/SIGTERM (forwarded to the workers); the exit status.

        ``on_ready`` runs once the signal handlers are in place (it announces the server: a
        signal sent as soon as that is read must drain, not kill).
        """
        loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal(loop))
        if on_ready is not None:
            on_ready()
        status = 0
        try:
            while not self._stop.is_set():
                waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self.procs) if p}
                stop = asyncio.ensure_future(self._stop.wait())
                done, _ = await asyncio.wait({*waits, stop}, return_when=asyncio.FIRST_COMPLETED)
                for task in (*waits, stop):
                    if task not in done:
                        task.cancel()
                if self._stop.is_set():
                    break
                for task in done:
                    if task in waits and not await self._restart(waits[task]):
                        status = 1
                        self._stop.set()
            await self._wait_stopped()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._cleanup()
        return status

    def _on_signal(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals >= 3:
                self._kill_all_now()
                os._exit(EXIT_HARD)
            self._stopping = True
            for proc in self.procs:
                if proc is not None and proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signum)
                    self._told.add(proc.pid)
            loop.call_soon_threadsafe(self._stop.set)

        return handler

    async def _restart(self, index: int) -> bool:
        proc = self.procs[index]
        assert proc is not None
        mark_process_dead(proc.pid)
        if self._stopping:
            return True
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < _CRASH_WINDOW] + [now]
        if len(self._crashes) > _MAX_CRASHES:
            _say(f"workers keep dying ({len(self._crashes)} in a minute); stopping")
            return False
        _say(f"worker {index} (pid {proc.pid}) exited with {proc.returncode}; restarting it")
        await asyncio.sleep(0.5)
        if self._stopping:  # a stop signal came while we waited: start nothing new
            return True
        try:
            await self._spawn(index)
        except (RuntimeError, OSError) as exc:
            if self._stopping:  # a stop signal reached it while it was starting: fine
                return True
            _say(f"worker {index} could not be restarted: {exc}")
            return False
        return True

    async def _wait_stopped(self) -> None:
        """Forward a stop if none was (a crash loop), then wait, bounded, and kill the rest."""
        if not self._stopping:
            self._stopping = True
            await self._terminate_all(signal.SIGTERM, wait=False)
        for proc in self.procs:  # a worker started after the signal was forwarded (a restart
            if proc is not None and proc.returncode is None and proc.pid not in self._told:
                with contextlib.suppress(ProcessLookupError):  # in flight) gets it now
                    proc.send_signal(signal.SIGTERM)
                self._told.add(proc.pid)
        live = [p for p in self.procs if p is not None and p.returncode is None]
        if live:
            budget = self.drain_timeout + self.hard_grace + 2.0
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in live], timeout=budget
            )
            if pending:
                await self._terminate_all(signal.SIGKILL)
        for proc in self.procs:
            if proc is not None and proc.returncode is not None:
                mark_process_dead(proc.pid)

    async def _terminate_all(self, sig: signal.Signals, *, wait: bool = True) -> None:
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                self._told.add(proc.pid)
        if wait:
            for proc in self.procs:
                if proc is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 5)

    def _kill_all_now(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = None


def _say(message: str) -> None:
    """The supervisor's messages go to stderr like the CLI's (its logger may have no handler)."""
    log.warning("lmnt-local: %s", message)
    if not logging.getLogger().handlers:
        print(f"lmnt-local: {message}", file=sys.stderr, flush=True)


async def _discard(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


def worker_command() -> list[str]:
    """How to start ``lmnt-local`` again with the same interpreter."""
    return [sys.executable, "-m", "lmnt_local.cli.app"]
