"""Run a server until SIGTERM/SIGINT, and always stop: gracefully within a deadline, then hard.

Signals are caught with ``signal.signal`` rather than the event loop's handlers: the handler
runs in the main thread at the next bytecode whatever the loop is doing, where a loop-driven
handler waits in the loop's queue behind every ready callback (under heavy load that queue,
and the wakeup pipe feeding it, is exactly what fills up).  The first signal starts a drain
(:meth:`LocalLMNTServer.drain`) and arms a watchdog *thread* that ends the process with
``os._exit`` if the drain and stop have not finished ``hard_grace`` seconds after the drain
deadline, so no state of the event loop can keep the process alive.  A second signal skips the
rest of the drain (open sessions get 1001 now); a third exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmnt_local.server.app import LocalLMNTServer

__all__ = ["EXIT_HARD", "serve_until_signalled"]

log = logging.getLogger("lmnt_local.server")

#: Exit status when the watchdog (or a third signal) had to end the process.
EXIT_HARD = 70
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _hard_exit(why: str) -> None:
    with contextlib.suppress(Exception):
        line = f"lmnt-local: {why}; exiting now"
        for handler in logging.getLogger().handlers:
            if getattr(handler.formatter, "json_lines", False) and handler.formatter:
                record = logging.LogRecord(log.name, logging.ERROR, __file__, 0, line, (), None)
                line = handler.formatter.format(record)  # JSON lines only on that stream
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    os._exit(EXIT_HARD)


class _Stopper:
    """The signal side: counts signals, wakes the loop, arms the watchdog."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, drain_timeout: float, hard_grace: float
    ) -> None:
        self._loop = loop
        self._drain_timeout = drain_timeout
        self._hard_grace = hard_grace
        self.stop = asyncio.Event()
        self.urgent = asyncio.Event()
        self.count = 0
        #: When the first signal arrived (monotonic, the loop's clock): the drain deadline
        #: counts from here, not from when an overloaded loop gets round to noticing.
        self.at = 0.0
        self._watchdog: threading.Timer | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            self.at = time.monotonic()
            self._arm(self._drain_timeout + self._hard_grace, f"drain did not end after {name}")
            self._loop.call_soon_threadsafe(self.stop.set)
        elif self.count == 2:
            self._arm(self._hard_grace, f"stop did not end after a second {name}")
            self._loop.call_soon_threadsafe(self.stop.set)
            self._loop.call_soon_threadsafe(self.urgent.set)
        else:
            _hard_exit(f"third {name}")

    def _arm(self, seconds: float, why: str) -> None:
        self.disarm()
        timer = threading.Timer(seconds, _hard_exit, args=(why,))
        timer.daemon = True
        timer.start()
        self._watchdog = timer

    def disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


async def serve_until_signalled(
    server: LocalLMNTServer,
    *,
    drain_timeout: float,
    hard_grace: float = 10.0,
    on_stopping: Callable[[], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Wait for SIGINT/SIGTERM, then drain and stop ``server`` (see the module docstring).

    ``server`` is already started; it is stopped when this returns, however it returns.
    ``on_ready`` runs once the signal handlers are in place: what it announces (the URL a
    script waits for) is safe to answer with SIGTERM at once.
    """
    loop = asyncio.get_running_loop()
    stopper = _Stopper(loop, drain_timeout, hard_grace)
    previous: dict[signal.Signals, object] = {}
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:  # signal.signal only works there; embedded callers stop the server themselves
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, stopper)
    try:
        if on_ready is not None:
            on_ready()
        await stopper.stop.wait()
        if on_stopping is not None:
            on_stopping()
        if not stopper.urgent.is_set():
            left = max(0.0, drain_timeout - (time.monotonic() - stopper.at))
            drain = asyncio.ensure_future(server.drain(left))
            urgent = asyncio.ensure_future(stopper.urgent.wait())
            await asyncio.wait({drain, urgent}, return_when=asyncio.FIRST_COMPLETED)
            urgent.cancel()
            if not drain.done():
                server.cut_drain()
                await drain
    finally:
        try:
            await server.stop()
        finally:
            stopper.disarm()
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
