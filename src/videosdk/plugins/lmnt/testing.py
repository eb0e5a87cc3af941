"""Test helpers for code that speaks through the plugin, and pytest fixtures for the local server.

Helpers (plain asyncio; importable without pytest or pytest-asyncio):

* ``await start_local_server(**kwargs)`` returns a started
  :class:`~lmnt_local.server.LocalLMNTServer` (stop it with ``await server.stop()``).
* ``make_tls_contexts()`` returns (server, client) SSL contexts from a throwaway CA.
* ``await drain_track(track)`` pulls the framework's audio track as a room would, fast or in
  real time, and returns the audio that played; ``TrackRecorder`` is the same as a background
  task you stop yourself.

Fixtures, enabled with ``pytest_plugins = ["videosdk.plugins.lmnt.testing"]`` in your root
``conftest.py`` (declared with ``pytest_asyncio.fixture`` so they work in pytest-asyncio's strict
and auto modes alike; they exist only when pytest-asyncio is installed):

* ``lmnt_server``: a local server on 127.0.0.1 with the deterministic tone engine; point your
  client at ``lmnt_server.ws_url`` / ``lmnt_server.http_url``, inspect ``lmnt_server.sessions``,
  set ``lmnt_server.faults``.
* ``lmnt_tls_server``: the same over TLS with a throwaway CA (needs ``trustme``);
  ``lmnt_tls_server.client_ssl_context`` trusts it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from lmnt_local.server import LocalLMNTServer, ToneEngine

__all__ = [
    "TrackRecorder",
    "drain_track",
    "make_tls_contexts",
    "start_local_server",
]


async def start_local_server(**kwargs: Any) -> LocalLMNTServer:
    """Start a :class:`LocalLMNTServer` (tone engine unless ``engine=`` is given)."""
    kwargs.setdefault("engine", ToneEngine())
    server = LocalLMNTServer(**kwargs)
    await server.start()
    return server


def make_tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) SSL contexts from a fresh throwaway CA, valid for the loopback names.

    ``trustme`` is imported here, not at module import, so only TLS users need it.
    """
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


# -- draining the framework's audio track ------------------------------------------------------


class TrackRecorder:
    """Pulls frames from a ``CustomAudioStreamTrack`` as the room's sender would, in a task.

    Keeps only frames that carried the agent's audio (the track's played counter moved), so
    ``pcm`` is what a listener heard, minus the silences between turns.  Real-time mode lets
    the track pace itself (one 20 ms frame per 20 ms).  Fast mode hands out a frame as soon as
    its audio is queued, by moving the track's clock back before each ``recv()``; while nothing
    is queued it still calls ``recv()`` (that is what ends the track's grace period and fires
    its last-audio callback), but only every ``poll`` seconds, so an idle track costs no CPU.
    Every wait is bounded: nothing here can spin or hang.
    """

    def __init__(self, track: Any, *, realtime: bool = False, poll: float = 0.005) -> None:
        if not hasattr(track, "recv") or not hasattr(track, "_samples_played"):
            raise TypeError("TrackRecorder needs the framework's CustomAudioStreamTrack")
        if not 0.0005 <= poll <= 0.1:
            raise ValueError(f"poll must be between 0.0005 and 0.1 s, got {poll!r}")
        self.track = track
        self.realtime = realtime
        self.poll = poll
        self.pcm = bytearray()
        self.last_audio_at: float | None = None  # monotonic time of the last audio frame
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> TrackRecorder:
        if self._task is None:
            self.started_at = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lmnt-drain")
        return self

    def queued(self) -> bool:
        """Whether the track holds a whole frame of audio not yet played."""
        t = self.track
        if getattr(t, "_is_paused", False):
            return False
        frames = getattr(t, "frame_buffer", None)
        buf = getattr(t, "audio_data_buffer", b"")
        return bool(frames) or len(buf) >= int(getattr(t, "chunk_size", 960))

    async def _run(self) -> None:
        track = self.track
        rate = int(getattr(track, "sample_rate", 24000))
        samples = int(getattr(track, "samples", rate // 50))
        while not self._stop.is_set():
            queued = self.queued()
            if not self.realtime:
                if not queued:
                    # Nothing to play: wait a little (or until stopped), then let recv() run
                    # its silence bookkeeping.
                    try:
                        async with asyncio.timeout(self.poll):
                            await self._stop.wait()
                        return
                    except TimeoutError:
                        pass
                if track._start is not None:
                    # The frame recv() is about to time is due now: no sleep inside it.
                    track._start = time.time() - (track._timestamp + samples) / rate
            played = track._samples_played
            frame = await track.recv()
            if track._samples_played > played and frame is not None:
                self.pcm += frame.to_ndarray().astype("<i2").tobytes()
                self.last_audio_at = time.monotonic()
            await asyncio.sleep(0)  # let the producer run between frames

    async def stop(self, wait: float = 5.0) -> bytes:
        """Stop pulling and return the audio collected (mono s16le at the track's rate)."""
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, wait)
            except TimeoutError:
                pass  # wait_for cancelled it
        return bytes(self.pcm)


async def drain_track(
    track: Any,
    *,
    realtime: bool = False,
    first_audio_timeout: float = 10.0,
    idle: float = 0.5,
    limit: float = 120.0,
    stop: asyncio.Event | None = None,
) -> bytes:
    """Play ``track`` out as a room would and return the audio that played (mono s16le).

    Start it before (or while) the agent speaks, e.g. ``task = asyncio.create_task(
    drain_track(tts.audio_track))``, then ``pcm = await task``.  It returns when:

    * ``stop`` is set and nothing is left queued on the track; or
    * audio has played and then none has been queued for ``idle`` seconds; or
    * no audio at all arrived within ``first_audio_timeout`` seconds (returns ``b""``).

    It raises ``TimeoutError`` if the track is still busy after ``limit`` seconds, which means
    the producer never stops.  ``realtime=True`` plays at the track's own pace (a 3 s reply
    takes 3 s); the default drains as fast as audio is ready.  Either way an idle track costs
    no CPU: the waits are sleeps, never a spin.
    """
    for name, value in (("first_audio_timeout", first_audio_timeout), ("idle", idle),
                        ("limit", limit)):  # fmt: skip
        if not 0 < value <= 86400:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    recorder = TrackRecorder(track, realtime=realtime).start()
    check = 0.01
    try:
        async with asyncio.timeout(limit):
            while True:
                now = time.monotonic()
                busy = recorder.queued()
                if stop is not None and stop.is_set() and not busy:
                    break
                if recorder.last_audio_at is None:
                    if now - recorder.started_at >= first_audio_timeout and not busy:
                        break
                elif not busy and now - recorder.last_audio_at >= idle:
                    break
                await asyncio.sleep(check)
    except TimeoutError:
        await recorder.stop()
        raise TimeoutError(
            f"the track was still playing after {limit:g} s (collected "
            f"{len(recorder.pcm) / 2 / int(getattr(track, 'sample_rate', 24000)):.1f} s of audio)"
        ) from None
    return await recorder.stop()


# -- pytest fixtures (only with pytest-asyncio) ------------------------------------------------

try:
    import pytest_asyncio
except ImportError:  # the helpers above work without it; only the fixtures need it
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True

if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def lmnt_server() -> AsyncIterator[LocalLMNTServer]:
        """A local LMNT server with the tone engine, on a free port, for one test."""
        server = await start_local_server()
        try:
            yield server
        finally:
            await server.stop()

    @pytest_asyncio.fixture
    async def lmnt_tls_server() -> AsyncIterator[LocalLMNTServer]:
        """A local LMNT server over TLS; ``client_ssl_context`` trusts its certificate."""
        server_ctx, client_ctx = make_tls_contexts()
        server = await start_local_server(ssl_context=server_ctx)
        server.client_ssl_context = client_ctx
        try:
            yield server
        finally:
            await server.stop()

    __all__ += ["lmnt_server", "lmnt_tls_server"]
