"""The server inside an application that is not asyncio: its own thread and event loop.

A Flask or Django app, a desktop tool, a synchronous test suite or a notebook wants speech on a
local port without running an event loop itself.  :class:`ThreadedLMNTServer` starts a
:class:`~.app.LocalLMNTServer` on a daemon thread with its own loop and hands back its URL once
it is ready; ``stop()`` stops it from any thread.  Async applications use ``LocalLMNTServer``
directly (``async with``, ``start()``, ``stop()``, ``ready``, ``http_url``/``ws_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from lmnt_local.server.app import LocalLMNTServer

__all__ = ["ThreadedLMNTServer"]


class ThreadedLMNTServer:
    """A :class:`LocalLMNTServer` on a background thread: ``start()``, ``stop()``, ``ready``, URLs.

    Takes ``LocalLMNTServer``'s arguments.  ``start()`` returns once the server listens and its
    engine is loaded (or raises what stopped it: a port in use, an engine that failed to
    load); ``stop()`` closes open sessions with 1001, or drains first with ``drain=SECONDS``.
    Usable as ``with ThreadedLMNTServer(...) as server:``.  The thread is a daemon: a program
    that forgets ``stop()`` still exits.  ``server`` is the running ``LocalLMNTServer``; its
    attributes (``sessions``, ``faults``, ``metrics``) are owned by the server's loop, so read
    them, and replace ``faults``, rather than mutate them from another thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: LocalLMNTServer | None = None
        self._lock = threading.Lock()

    @property
    def server(self) -> LocalLMNTServer:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server

    @property
    def ready(self) -> bool:
        """True from a completed ``start()`` until ``stop()`` begins (``/readyz`` agrees)."""
        return self._server is not None and self._server.ready

    @property
    def url(self) -> str:
        """The base URL of the HTTP APIs (LMNT's, OpenAI's at ``url + "/v1"``)."""
        return self.server.http_url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def ws_url(self) -> str:
        """The streaming endpoint, for ``LMNTTTS(ws_url=...)`` or ``LMNT_WS_URL``."""
        return self.server.ws_url

    @property
    def port(self) -> int:
        return self.server.port

    def start(self, timeout: float = 120.0) -> ThreadedLMNTServer:
        """Start the thread and the server; return once it is ready (``timeout`` seconds)."""
        with self._lock:
            if self._thread is not None:
                return self
            started: Future[LocalLMNTServer] = Future()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run, args=(loop, started), name="lmnt-local-server", daemon=True
            )
            thread.start()
            try:
                self._server = started.result(timeout)
            except BaseException:
                with contextlib.suppress(RuntimeError):  # closed already: start() failed
                    loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                raise
            self._loop, self._thread = loop, thread
        return self

    def stop(self, timeout: float = 10.0, *, drain: float | None = None) -> None:
        """Stop the server (from any thread but the server's own) and end its thread.

        ``drain``: first let turns in flight finish for up to that many seconds, as SIGTERM
        does for ``lmnt-local serve``.  Idempotent.
        """
        with self._lock:
            loop, thread, server = self._loop, self._thread, self._server
            self._loop = self._thread = None
            if loop is None or thread is None or server is None:
                return
            if thread is threading.current_thread():
                raise RuntimeError("stop() called from the server's own thread; await stop()")
            ending = server.drain(drain) if drain is not None else server.stop()
            try:
                asyncio.run_coroutine_threadsafe(ending, loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)

    def __enter__(self) -> ThreadedLMNTServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, loop: asyncio.AbstractEventLoop, started: Future[LocalLMNTServer]) -> None:
        asyncio.set_event_loop(loop)
        try:
            server = LocalLMNTServer(*self._args, **self._kwargs)
            loop.run_until_complete(server.start())
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(server)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(server.stop())  # no-op after stop(); else a last stop
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
