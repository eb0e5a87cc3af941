"""A turn's audio on its way out: into the framework's track, and when the listener runs dry.

Apart from the receive loop (``receiving``) because it answers to the track, not the server:
what the track still holds decides when the server's silence becomes a failure, and a turn must
leave the track on a whole frame however it ended (the adapter pads after a late failure too).
``Turn`` declares this state, with its defaults, as dataclass fields; the mixin only uses it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lmnt_local.protocol import SessionOptions

from .connection import ConnectionPool
from .words import TimedWord


@dataclass
class TurnSink:
    """Where a turn's audio goes, and what it calls on the way (the framework adapter)."""

    push: Callable[[bytes], Awaitable[None]]
    on_first_audio: Callable[[], Awaitable[None]]
    out_rate: int
    frame_bytes: int
    pending_bytes: Callable[[], int | None] = lambda: None
    #: Seconds of audio queued on the track, not yet played (None: the track cannot tell).
    queued_seconds: Callable[[], float | None] = lambda: None
    on_words: Callable[[list[TimedWord]], None] | None = None


class _Playout:
    """The audio-out half of ``Turn`` (a mixin: ``Turn`` holds the fields)."""

    options: SessionOptions
    sink: TurnSink
    pool: ConnectionPool
    warm: bool
    reuse_session: bool
    interrupted: bool
    audio_started: bool
    pushed_bytes: int
    _model_dry_at: float
    _track_dry_at: float

    def _dry_at(self) -> float:
        """When the listener runs (or ran) out of the audio it was given (monotonic time)."""
        queued = self.sink.queued_seconds()
        if queued is None:
            return self._model_dry_at
        if queued > 0:
            self._track_dry_at = time.monotonic() + queued
        # A track nobody plays (or a paused one) would hold its audio forever: never later
        # than real-time playback from each push, so the time to an error stays bounded.
        return min(self._track_dry_at, self._model_dry_at)

    async def _push(self, pcm: bytes) -> None:
        if not pcm or self.interrupted:
            return
        first = not self.audio_started
        if first:
            self.audio_started = True
            await self.sink.on_first_audio()
            if self.interrupted:
                return
        if first:  # what the track still held from before this turn plays first
            self._model_dry_at = time.monotonic() + (self.sink.queued_seconds() or 0.0)
        await self.sink.push(pcm)
        self.pushed_bytes += len(pcm)
        now = time.monotonic()
        self._model_dry_at = max(self._model_dry_at, now) + len(pcm) / 2 / self.sink.out_rate
        if first:
            self._warm_next()

    def _warm_next(self) -> None:
        """Open the next turn's connection, but only once this turn's first audio is out: its
        handshake would otherwise compete with this turn's text and first audio."""
        if self.warm and not self.reuse_session:
            self.pool.prepare_spare(self.options)

    async def _pad(self) -> None:
        """End on a whole 20 ms frame, so no stray bytes stall the track or shift the next turn."""
        if self.interrupted or not self.audio_started:
            return
        pending = self.sink.pending_bytes()
        basis = pending if pending is not None else self.pushed_bytes
        missing = (-basis) % self.sink.frame_bytes
        if missing:
            await self.sink.push(bytes(missing))
            self.pushed_bytes += missing
